//! `docket jobs list|show|replay|cancel|discard`.

use docket_queue::admin::{self, DeadLetterFilter, ListFilter};
use docket_queue::Job;
use sqlx::PgPool;

use crate::cli::{JobsCommand, ListArgs, ReplayArgs};
use crate::cmd::print_json;
use crate::table;

pub(crate) async fn run(pool: &PgPool, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List(args) => list(pool, args).await,
        JobsCommand::Show { id, output } => {
            let job = admin::show(docket_queue::pooled(pool), id).await?;
            if output.json {
                print_json(&job)
            } else {
                print_job(&job);
                Ok(())
            }
        }
        JobsCommand::Replay(args) => replay(pool, args).await,
        JobsCommand::Cancel { id, output } => {
            let job = admin::cancel(docket_queue::pooled(pool), id).await?;
            if output.json {
                return print_json(&job);
            }
            if job.cancel_requested_at.is_some() {
                println!("{id} is processing: its worker has been asked to stop it");
            } else {
                println!("{id} cancelled");
            }
            Ok(())
        }
        JobsCommand::Discard { id, output } => {
            let job = admin::discard(docket_queue::pooled(pool), id).await?;
            if output.json {
                return print_json(&job);
            }
            println!("{id} discarded (cancelled)");
            Ok(())
        }
    }
}

async fn list(pool: &PgPool, args: ListArgs) -> anyhow::Result<()> {
    let filter = ListFilter {
        state: args.state,
        queue: args.queue,
        kind: args.kind,
        before: args.before,
        limit: args.limit,
    };
    let page = admin::list(docket_queue::pooled(pool), &filter).await?;
    if args.output.json {
        return print_json(&serde_json::json!({ "jobs": page.jobs, "next": page.next }));
    }
    // Dead letters say why they died (`docket jobs show ID` has the whole history).
    let reasons = page.jobs.iter().any(|job| job.dead_letter_reason.is_some());
    let rows: Vec<Vec<String>> = page
        .jobs
        .iter()
        .map(|job| {
            let mut row = vec![
                job.id.to_string(),
                job.queue.clone(),
                job.kind.clone(),
                job.state.to_string(),
            ];
            if reasons {
                row.push(
                    job.dead_letter_reason
                        .clone()
                        .unwrap_or_else(|| "-".to_owned()),
                );
            }
            row.extend([
                format!("{}/{}", job.attempt, job.max_attempts),
                job.run_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                job.last_error
                    .clone()
                    .unwrap_or_default()
                    .chars()
                    .take(60)
                    .collect(),
            ]);
            row
        })
        .collect();
    let mut headers = vec!["ID", "QUEUE", "KIND", "STATE"];
    if reasons {
        headers.push("REASON");
    }
    headers.extend(["ATTEMPT", "RUN AT (UTC)", "LAST ERROR"]);
    table::print(&headers, &rows);
    if let Some(next) = page.next {
        println!("\nmore: --before {next}");
    }
    Ok(())
}

async fn replay(pool: &PgPool, args: ReplayArgs) -> anyhow::Result<()> {
    if let Some(id) = args.id {
        let job = admin::replay(docket_queue::pooled(pool), id).await?;
        return if args.output.json {
            print_json(&job)
        } else {
            println!(
                "{id} replayed: pending, attempt budget {}",
                job.max_attempts
            );
            Ok(())
        };
    }
    let filter = DeadLetterFilter {
        queue: args.queue,
        kind: args.kind,
        finished_after: args.since,
        finished_before: args.until,
    };
    let replayed = admin::replay_dead_letters(docket_queue::pooled(pool), &filter).await?;
    if args.output.json {
        print_json(&serde_json::json!({ "replayed": replayed }))
    } else {
        println!(
            "{} replayed",
            docket_queue::counted(replayed, "dead letter", "dead letters")
        );
        Ok(())
    }
}

fn print_job(job: &Job) {
    let time =
        |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or("-".to_owned(), |t| t.to_rfc3339());
    let fields = [
        ("id", job.id.to_string()),
        ("queue", job.queue.clone()),
        ("kind", job.kind.clone()),
        ("state", job.state.to_string()),
        ("priority", job.priority.to_string()),
        ("attempt", format!("{}/{}", job.attempt, job.max_attempts)),
        ("replays", job.replays.to_string()),
        ("run_at", job.run_at.to_rfc3339()),
        (
            "unique_key",
            job.unique_key.clone().unwrap_or_else(|| "-".into()),
        ),
        ("expires_at", time(job.expires_at)),
        (
            "dead_letter_reason",
            job.dead_letter_reason.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "last_error",
            job.last_error.clone().unwrap_or_else(|| "-".into()),
        ),
        ("created_at", job.created_at.to_rfc3339()),
        ("attempted_at", time(job.attempted_at)),
        ("finished_at", time(job.finished_at)),
        ("payload", job.payload.to_string()),
    ];
    for (name, value) in fields {
        println!("{name:<19} {value}");
    }
    if !job.errors.is_empty() {
        println!("errors:");
        for error in &job.errors {
            println!(
                "  attempt {} at {}: {}",
                error.attempt,
                error.at.to_rfc3339(),
                error.error
            );
        }
    }
}
