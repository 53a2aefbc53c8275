//! `docket demo`: a guided run of the main job on a throwaway PostgreSQL (or on
//! DATABASE_URL when set): migrate, enqueue a workload, work it with the worker runtime,
//! and show the snapshot, the dead letters and a replay.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use docket_queue::{admin, JobState, NewJob};
use docket_testkit::ThrowawayCluster;
use docket_worker::{builtin, QueueConfig, Registry, Runtime, RuntimeConfig};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

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
        .test_before_acquire(false)
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

    let flaky = NewJob::typed(&builtin::Fail {
        times: 2,
        permanent: false,
    })?
    .max_attempts(5);
    docket_queue::enqueue(&pool, &flaky).await?;
    let broken = NewJob::typed(&builtin::Fail {
        times: 0,
        permanent: true,
    })?;
    let broken_id = docket_queue::enqueue(&pool, &broken).await?;
    let malformed = NewJob::new("docket.sleep", json!({ "seconds": "ten" }));
    docket_queue::enqueue(&pool, &malformed).await?;
    let scheduled =
        NewJob::new("docket.noop", json!({})).run_at(Utc::now() + chrono::Duration::hours(1));
    docket_queue::enqueue(&pool, &scheduled).await?;
    println!("1 job that fails twice then succeeds, 1 that fails permanently, 1 with a malformed payload,");
    println!("1 job scheduled an hour from now");

    println!("\n== 3. Snapshot before work");
    print_table(&docket_queue::snapshot(&pool, None).await?);

    println!("\n== 4. Work: the worker runtime (LISTEN/NOTIFY, batched claims and outcomes)");
    let mut registry = Registry::new();
    builtin::register(&mut registry);
    registry.register_raw("recovery_email", |_payload, _ctx| async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(())
    });
    registry.register_raw("report.build", |_payload, _ctx| async { Ok(()) });
    let config = RuntimeConfig {
        queues: vec![
            QueueConfig::new("default").concurrency(50),
            QueueConfig::new("mail").concurrency(5),
        ],
        shutdown_timeout: Duration::from_secs(5),
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(pool.clone(), registry, config)?;
    let stop = CancellationToken::new();
    let started = Instant::now();
    let worker = tokio::spawn(runtime.run(stop.clone().cancelled_owned()));
    // Until nothing is ready or running (the retries come back after their backoff).
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let snapshot = docket_queue::snapshot(&pool, None).await?;
        if snapshot.total.oldest_ready_at.is_none()
            && snapshot.total.processing == 0
            && snapshot.total.retrying == 0
        {
            break;
        }
    }
    let elapsed = started.elapsed();
    stop.cancel();
    worker.await??;
    println!(
        "worked the queue in {elapsed:.2?}, including the failing job's retries (1 s, then 2 s)"
    );
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
    let replayed = admin::replay(&pool, broken_id).await?;
    println!(
        "replayed {}: now {} with attempt {}/{}",
        replayed.id, replayed.state, replayed.attempt, replayed.max_attempts
    );
    Ok(())
}
