//! `docket enqueue KIND --payload JSON [options]`.

use anyhow::Context;
use docket_queue::NewJob;
use sqlx::PgPool;

use crate::cli::EnqueueArgs;

pub(crate) async fn run(pool: &PgPool, args: EnqueueArgs) -> anyhow::Result<()> {
    let payload: serde_json::Value =
        serde_json::from_str(&args.payload).context("--payload is not valid JSON")?;
    let mut job = NewJob::new(args.kind, payload)
        .queue(args.queue)
        .priority(args.priority)
        .max_attempts(args.max_attempts);
    job.run_at = match (args.run_at, args.delay) {
        (Some(at), _) => Some(at),
        (None, Some(secs)) => {
            Some(chrono::Utc::now() + chrono::Duration::seconds(i64::try_from(secs)?))
        }
        (None, None) => None,
    };
    job.unique_key = args.unique_key;
    job.expires_at = args.expires_at;
    job.group_key = args.group;
    let id = docket_queue::enqueue(pool, &job).await?;
    if args.output.json {
        crate::cmd::print_json(&serde_json::json!({ "id": id }))
    } else {
        println!("{id}");
        Ok(())
    }
}
