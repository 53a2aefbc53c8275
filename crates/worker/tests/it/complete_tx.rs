//! A handler that completes its job in its own transaction (`JobContext::complete_in`): the
//! job is completed exactly when the handler's writes commit, and a run that no longer
//! holds its job is refused.

use std::time::Duration;

use docket_queue::{enqueue, JobArgs, JobState, NewJob};
use docket_testkit::{eventually, TestDb};
use docket_worker::{JobContext, JobError, Registry};
use serde::{Deserialize, Serialize};

use crate::{quick_config, start, state_of};

#[derive(Serialize, Deserialize)]
struct Invoice {
    id: i64,
    /// What the handler does after completing in its transaction.
    then: Then,
}

#[derive(Serialize, Deserialize, PartialEq)]
enum Then {
    Commit,
    RollBack,
    /// The job's claim is taken away first (as a rescue and another worker's claim would).
    LoseTheClaim,
}

impl JobArgs for Invoice {
    const KIND: &'static str = "app.invoice";
    const MAX_ATTEMPTS: i32 = 1;
}

async fn sent(db: &TestDb, id: i64) -> bool {
    sqlx::query_scalar("select exists (select 1 from sent_invoices where id = $1)")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_job_completes_with_the_handlers_writes_and_only_while_its_run_holds_it() {
    let db = TestDb::new().await;
    sqlx::query("create table sent_invoices (id bigint primary key)")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut registry = Registry::new();
    let pool = db.pool.clone();
    registry.register(move |job: Invoice, ctx: JobContext| {
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await?;
            sqlx::query("insert into sent_invoices (id) values ($1)")
                .bind(job.id)
                .execute(&mut *tx)
                .await?;
            if job.then == Then::LoseTheClaim {
                sqlx::query("update docket.jobs set lease_token = gen_random_uuid() where id = $1")
                    .bind(ctx.id())
                    .execute(&pool)
                    .await?;
            }
            ctx.complete_in(&mut tx).await?;
            match job.then {
                Then::RollBack => Err(JobError::permanent("changed my mind")),
                _ => {
                    tx.commit().await?;
                    Ok(())
                }
            }
        }
    });
    let running = start(&db.pool, registry, quick_config());
    let job = |id, then| NewJob::typed(&Invoice { id, then }).unwrap();
    let committed = enqueue(&db.pool, &job(1, Then::Commit)).await.unwrap();
    let rolled_back = enqueue(&db.pool, &job(2, Then::RollBack)).await.unwrap();
    let lost = enqueue(&db.pool, &job(3, Then::LoseTheClaim))
        .await
        .unwrap();

    eventually(
        Duration::from_secs(30),
        "the first invoice's job completes",
        || async { state_of(&db.pool, committed).await == JobState::Completed },
    )
    .await;
    assert!(sent(&db, 1).await);

    eventually(
        Duration::from_secs(30),
        "the rolled-back run is a failed attempt",
        || async { state_of(&db.pool, rolled_back).await == JobState::DeadLetter },
    )
    .await;
    assert!(!sent(&db, 2).await, "the rolled-back write is not there");

    // The run whose claim was taken is refused: its writes never commit, and it does not
    // complete a job it no longer holds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!sent(&db, 3).await, "a fenced run's writes were committed");
    assert_ne!(state_of(&db.pool, lost).await, JobState::Completed);
    running.shutdown().await;
}
