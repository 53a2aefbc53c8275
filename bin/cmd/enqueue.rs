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
        (None, Some(secs)) => Some(
            i64::try_from(secs)
                .ok()
                .and_then(chrono::Duration::try_seconds)
                .and_then(|delay| chrono::Utc::now().checked_add_signed(delay))
                .with_context(|| format!("--delay {secs} is beyond any time a job can have"))?,
        ),
        (None, None) => None,
    };
    job.unique_key = args.unique_key;
    job.expires_at = args.expires_at;
    job.group_key = args.group;
    let id = docket_queue::enqueue(docket_queue::pooled(pool), &job).await?;
    if args.output.json {
        crate::cmd::print_json(&serde_json::json!({ "id": id }))
    } else {
        println!("{id}");
        Ok(())
    }
}
