//! Docket's worker runtime embedded in an application's own binary: a typed job, enqueued
//! in the application's transaction and run by the runtime in the same process.
//!
//! ```sh
//! DATABASE_URL=postgres://localhost/app cargo run -p docket-worker --example embedded
//! ```

use std::time::Duration;

use docket_queue::{JobArgs, NewJob};
use docket_worker::{JobContext, JobError, QueueConfig, Registry, Runtime, RuntimeConfig};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;

/// The application's job: its payload type and kind name.
#[derive(Serialize, Deserialize)]
struct SendWelcome {
    user_id: i64,
}

impl JobArgs for SendWelcome {
    const KIND: &'static str = "app.send_welcome";
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .test_before_acquire(false)
        .connect(&url)
        .await?;
    docket_queue::migrate(&pool).await?;

    // Enqueue inside the application's own transaction: the job exists only if it commits.
    let mut tx = pool.begin().await?;
    // ... the application's own writes go here ...
    let id = docket_queue::enqueue(
        &mut *tx,
        &NewJob::typed(&SendWelcome { user_id: 42 })?.queue("mail"),
    )
    .await?;
    tx.commit().await?;
    println!("enqueued {id}");

    let mut registry = Registry::new();
    registry
        .register(|job: SendWelcome, ctx: JobContext| async move {
            if ctx.is_cancelled() {
                return Err(JobError::Snooze(Duration::from_secs(10)));
            }
            println!("welcoming user {} (attempt {})", job.user_id, ctx.attempt());
            Ok(())
        })
        .timeout = Duration::from_secs(30);

    let config = RuntimeConfig {
        queues: vec![QueueConfig::new("mail").concurrency(4)],
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(pool, registry, config)?;
    // Stop after a few seconds here; an application would pass its shutdown signal.
    runtime
        .run(tokio::time::sleep(Duration::from_secs(3)))
        .await?;
    Ok(())
}
