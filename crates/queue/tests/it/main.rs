//! Integration tests of docket-queue against a real PostgreSQL: a fresh database each.

mod admin;
mod batch;
mod claim;
mod cron;
mod cursor;
mod enqueue;
mod groups;
mod maintenance;
mod outcome;
mod queues;
mod rate_limit;
mod schema;
mod snapshot;
mod trace;

use chrono::{DateTime, Utc};
use docket_queue::{ClaimRequest, Job};
use sqlx::{Connection, PgPool};
use uuid::Uuid;

/// Index entries `index` (`docket.jobs_claim`, ...) returned to this backend's scans, as far
/// as they are not yet reported (since PostgreSQL 15 that spans transactions: take
/// differences).
async fn index_entries_read(pool: &PgPool, index: &str) -> i64 {
    sqlx::query_scalar("select pg_stat_get_xact_tuples_returned($1::regclass)")
        .bind(index)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A connection holding a REPEATABLE READ snapshot of the table (as a `pg_dump` or a long
/// report would), so that vacuum can remove nothing until it rolls back.
async fn hold_snapshot(url: &str) -> sqlx::PgConnection {
    let mut holder = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("begin isolation level repeatable read")
        .execute(&mut holder)
        .await
        .unwrap();
    sqlx::query("select count(*) from docket.jobs")
        .execute(&mut holder)
        .await
        .unwrap();
    holder
}

/// A claim of up to `limit` jobs of the default queue by a fresh worker, now.
fn claim_request(limit: u32) -> ClaimRequest<'static> {
    ClaimRequest {
        queue: "default",
        kinds: None,
        worker_id: Uuid::now_v7(),
        token: ClaimRequest::new_token(),
        limit,
        now: None,
    }
}

/// Claims up to `limit` jobs of the default queue for `worker` at `now`.
async fn claim_default(
    pool: &PgPool,
    worker: Uuid,
    limit: u32,
    now: Option<DateTime<Utc>>,
) -> Vec<Job> {
    docket_queue::claim(
        pool,
        &ClaimRequest {
            queue: "default",
            kinds: None,
            worker_id: worker,
            token: ClaimRequest::new_token(),
            limit,
            now,
        },
    )
    .await
    .expect("claim")
    .jobs
}
