//! Integration tests of docket-queue against a real PostgreSQL: a fresh database each.

mod admin;
mod claim;
mod cursor;
mod enqueue;
mod groups;
mod maintenance;
mod outcome;
mod queues;
mod rate_limit;
mod schedule;
mod snapshot;

use chrono::{DateTime, Utc};
use docket_queue::{ClaimRequest, Job};
use sqlx::PgPool;
use uuid::Uuid;

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
