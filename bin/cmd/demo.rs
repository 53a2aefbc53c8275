//! `docket demo`: a guided run of the main job on a throwaway PostgreSQL (or on
//! DATABASE_URL when set): migrate, enqueue a workload, work it, and show the snapshot,
//! a dead letter and its replay.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use docket_queue::{
    admin, maintenance, AttemptOutcome, Backoff, ClaimRequest, JobState, NewJob, Outcome,
};
use docket_testkit::ThrowawayCluster;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::cmd::snapshot::print_table;
use crate::config::DatabaseUrl;

/// Jobs in the demo's bulk enqueue.
const BULK_JOBS: usize = 5_000;

pub(crate) async fn run(database_url: Option<&DatabaseUrl>) -> anyhow::Result<()> {
    // Keep the cluster alive for the whole demo; dropping it removes it.
    let (_cluster, options) = match database_url {
        Some(url) => {
            println!("== Using DATABASE_URL {url}");
            (None, url.options())
        }
        None => {
            println!("== DATABASE_URL is not set: starting a throwaway PostgreSQL cluster");
            let cluster = tokio::task::spawn_blocking(ThrowawayCluster::start)
                .await?
                .context(
                    "cannot start a throwaway PostgreSQL (set DATABASE_URL to use a server)",
                )?;
            let options = cluster.url("postgres").parse()?;
            (Some(cluster), options)
        }
    };
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .context("cannot connect to PostgreSQL")?;

    println!("\n== 1. Migrate");
    docket_queue::migrate(&pool).await?;
    println!("schema `docket` is current");

    println!("\n== 2. Enqueue");
    let started = Instant::now();
    let bulk: Vec<NewJob> = (0..BULK_JOBS)
        .map(|n| NewJob::new("docket.noop", json!({ "n": n })))
        .collect();
    docket_queue::enqueue_many(&pool, &bulk).await?;
    println!(
        "{BULK_JOBS} docket.noop jobs in one round trip: {:?}",
        started.elapsed()
    );

    let mut tx = pool.begin().await?;
    for user in 1..=20 {
        let job = NewJob::new("recovery_email", json!({ "user_id": user }))
            .queue("mail")
            .priority(-10)
            .expires_at(Utc::now() + chrono::Duration::minutes(15));
        docket_queue::enqueue(&mut *tx, &job).await?;
    }
    tx.commit().await?;
    println!("20 recovery emails on queue `mail`, priority -10, in one transaction");

    let report =
        NewJob::new("report.build", json!({ "month": "2026-11" })).unique_key("report:2026-11");
    let first = docket_queue::enqueue(&pool, &report).await?;
    let second = docket_queue::enqueue(&pool, &report).await?;
    println!("unique key report:2026-11 enqueued twice: {first} and {second} (same job)");

    let late = NewJob::new("recovery_email", json!({ "user_id": 99 }))
        .queue("mail")
        .expires_at(Utc::now() - chrono::Duration::seconds(1));
    docket_queue::enqueue(&pool, &late).await?;
    println!("1 recovery email whose deadline already passed (it must never be sent)");

    let flaky = NewJob::new("docket.fail", json!({ "permanent": false })).max_attempts(3);
    let flaky_id = docket_queue::enqueue(&pool, &flaky).await?;
    let scheduled =
        NewJob::new("docket.noop", json!({})).run_at(Utc::now() + chrono::Duration::hours(1));
    docket_queue::enqueue(&pool, &scheduled).await?;
    println!("1 job that always fails (3 attempts), 1 job scheduled an hour from now");

    println!("\n== 3. Snapshot before work");
    print_table(&docket_queue::snapshot(&pool, None).await?);

    println!("\n== 4. Work: claim in batches, complete in batches (fenced by worker and attempt)");
    let worker = maintenance::WorkerInfo {
        id: Uuid::now_v7(),
        host: "demo".into(),
        pid: i32::try_from(std::process::id()).unwrap_or(0),
        queues: vec!["default".into(), "mail".into()],
        version: env!("CARGO_PKG_VERSION").into(),
    };
    maintenance::heartbeat(&pool, &worker, None).await?;
    let started = Instant::now();
    let (done, expired) = work(&pool, worker.id).await?;
    let elapsed = started.elapsed();
    println!(
        "{done} attempts in {elapsed:.2?} ({:.0} jobs/s); {expired} expired job dead-lettered unsent",
        done as f64 / elapsed.as_secs_f64()
    );
    maintenance::deregister(&pool, worker.id).await?;

    println!("\n== 5. Snapshot after work");
    print_table(&docket_queue::snapshot(&pool, None).await?);

    println!("\n== 6. Dead letters");
    let dead = admin::list(
        &pool,
        &docket_queue::ListFilter {
            state: Some(JobState::DeadLetter),
            limit: 10,
            ..Default::default()
        },
    )
    .await?;
    for job in &dead.jobs {
        let reason = job.dead_letter_reason.as_deref().unwrap_or("-");
        println!(
            "{} {} reason={reason} errors={}",
            job.id,
            job.kind,
            job.errors.len()
        );
    }
    let replayed = admin::replay(&pool, flaky_id).await?;
    println!(
        "replayed {}: now {} with attempt {}/{}",
        replayed.id, replayed.state, replayed.attempt, replayed.max_attempts
    );
    Ok(())
}

/// Works every ready job until none is left: the claim → run → outcome cycle that the
/// worker runtime runs, with the built-in kinds' behaviour inline.
async fn work(pool: &sqlx::PgPool, worker_id: Uuid) -> anyhow::Result<(usize, usize)> {
    let backoff = Backoff::Ladder(vec![Duration::ZERO]);
    let (mut done, mut expired) = (0, 0);
    loop {
        let mut idle = true;
        for queue in ["mail", "default"] {
            let claimed = docket_queue::claim(
                pool,
                &ClaimRequest {
                    queue,
                    kinds: None,
                    worker_id,
                    limit: 500,
                    now: None,
                },
            )
            .await?;
            expired += claimed.expired.len();
            if claimed.jobs.is_empty() {
                continue;
            }
            idle = false;
            let outcomes: Vec<AttemptOutcome> = claimed
                .jobs
                .iter()
                .map(|job| {
                    let outcome = if job.kind == "docket.fail" {
                        Outcome::Retry {
                            error: format!("docket.fail: attempt {} fails on purpose", job.attempt),
                            delay: backoff.delay(job.id, job.attempt),
                        }
                    } else {
                        Outcome::Complete
                    };
                    AttemptOutcome {
                        id: job.id,
                        attempt: job.attempt,
                        outcome,
                    }
                })
                .collect();
            done += outcomes.len();
            docket_queue::apply_outcomes(pool, worker_id, &outcomes, None).await?;
        }
        if idle {
            return Ok((done, expired));
        }
    }
}
