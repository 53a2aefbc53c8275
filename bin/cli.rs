//! The command line's shape (clap derive): one variant per subcommand.

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use docket_queue::{JobId, JobState};
use docket_settings as settings;

/// Docket: a background job queue engine on PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "docket", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Apply the database migrations.
    Migrate(OutputArgs),
    /// Enqueue one job.
    Enqueue(EnqueueArgs),
    /// Inspect and act on jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Print the queue snapshot: counts per state and the age of the oldest ready job.
    Snapshot(OutputArgs),
    /// Run the worker runtime: claim and run jobs until SIGTERM or SIGINT.
    Worker(WorkerArgs),
    /// Migrate, then serve HTTP (health, snapshot, metrics, job API) and run the workers in
    /// one process.
    Serve(WorkerArgs),
    /// The operator's health report: exit 0 ok, 1 warn, 2 fail.
    Check(OutputArgs),
    #[command(about = format!(
        "Dump Docket's schema and migrations table (or the whole database) into {} with a \
         manifest, and keep the newest {}",
        settings::BACKUP_DIR,
        settings::BACKUP_KEEP
    ))]
    Backup(BackupArgs),
    /// Restore a backup (the newest by default) into a scratch database, run the checks
    /// and compare its rows with the manifest; record the verdict; drop the scratch
    /// database. Exit 0 when it passed, 1 when it failed.
    RestoreCheck(RestoreCheckArgs),
    /// Batches: their progress and callbacks.
    #[command(subcommand)]
    Batches(BatchesCommand),
    /// Cron schedules: list, run one now, pause, resume (for every process), remove a
    /// retired one.
    #[command(subcommand)]
    Cron(CronCommand),
    /// Queue controls: list, pause, resume (for every process).
    #[command(subcommand)]
    Queues(QueuesCommand),
    /// Email: templates, deliveries, the suppression list, campaigns.
    #[command(subcommand)]
    Mail(MailCommand),
    /// A guided run of the main job: a campaign, recovery emails, cron, dead letters and a
    /// replay, on a throwaway database (or a database of its own on DATABASE_URL's server).
    Demo(DemoArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum BatchesCommand {
    /// The most recent batches, newest first.
    List(OutputArgs),
    /// One batch: total, completed, dead letters, cancelled, remaining, callback.
    Show {
        /// The batch's id.
        id: uuid::Uuid,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum QueuesCommand {
    /// Queues with stored controls, and their pause state.
    List(OutputArgs),
    /// Pause a queue: its jobs stay ready, no worker claims them (within one poll
    /// interval); running jobs finish; enqueueing goes on.
    Pause {
        /// The queue.
        name: String,
        /// Pause it even though no job, worker or configuration names it (without, such a
        /// name is refused as a likely misspelling).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Resume a paused queue.
    Resume {
        /// The queue.
        name: String,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum MailCommand {
    #[command(about = format!(
        "The template catalog ({}), parsed as `serve` parses it",
        settings::TEMPLATE_DIR
    ))]
    Templates(OutputArgs),
    /// Render a template without sending it.
    Render {
        /// The template's name.
        name: String,
        /// Its variables, as a JSON object.
        #[arg(long, default_value = "{}")]
        vars: String,
        /// The recipient's locale (`pt-BR` falls back to `pt`, then the base).
        #[arg(long)]
        locale: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Recorded deliveries, newest first.
    Deliveries {
        /// Only this status (queued, sending, sent, suppressed, failed, dead_letter, expired,
        /// unknown, cancelled, bounced).
        #[arg(long)]
        status: Option<String>,
        /// Only this campaign's.
        #[arg(long)]
        campaign: Option<uuid::Uuid>,
        /// Only to this address.
        #[arg(long)]
        to: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Put an address on the suppression list: it is never sent to.
    Suppress {
        /// The address.
        address: String,
        /// Why.
        #[arg(long, default_value = "manual")]
        reason: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Take an address off the suppression list.
    Unsuppress {
        /// The address.
        address: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// The suppression list.
    Suppressions(OutputArgs),
    /// Read one message sent to a bounce address (a delivery status notification) on
    /// standard input and record it, for a mail server's pipe: exit 0 done (bounced,
    /// delayed or ignored), 67 the bounce address names no delivery, 75 try again later.
    Bounce(OutputArgs),
    /// Campaigns: create, show, list, pause, resume, cancel.
    #[command(subcommand)]
    Campaign(CampaignCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum CampaignCommand {
    /// Create a campaign from a recipient file and start sending; prints its id.
    Create {
        /// Its name.
        #[arg(long)]
        name: String,
        /// The template every recipient gets.
        #[arg(long)]
        template: String,
        /// CSV with a header `email[,name][,locale][,var…]`, or JSON lines
        /// `{"to", "vars", "locale"}`. Every variable the template uses (in any locale)
        /// must be a column (a key of `vars`). Bad rows are named with their line and
        /// refuse the campaign, unless `--skip-bad-rows`.
        #[arg(long)]
        recipients: std::path::PathBuf,
        /// Recipients per batch job.
        #[arg(long, default_value_t = docket_mail::config::CAMPAIGN_BATCH_SIZE_DEFAULT)]
        batch_size: usize,
        /// Check everything and render the first recipients' messages; nothing is recorded
        /// or sent.
        #[arg(long)]
        dry_run: bool,
        /// Send to the good rows and skip the bad ones (each still named on stderr).
        #[arg(long)]
        skip_bad_rows: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// One campaign's progress.
    Show {
        /// The campaign's id.
        id: uuid::Uuid,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// The most recent campaigns.
    List(OutputArgs),
    /// Pause: batch jobs stop before their next recipient.
    Pause {
        /// The campaign's id.
        id: uuid::Uuid,
        /// `--json`: the campaign as `campaign show --json` prints it, after the action.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Resume a paused campaign.
    Resume {
        /// The campaign's id.
        id: uuid::Uuid,
        /// `--json`: the campaign as `campaign show --json` prints it, after the action.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Cancel: nobody more is sent to; the unsent recipients become `cancelled`.
    Cancel {
        /// The campaign's id.
        id: uuid::Uuid,
        /// `--json`: the campaign as `campaign show --json` prints it, after the action.
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CronCommand {
    /// Every registered schedule with its last and next tick, and its state: active,
    /// paused, retired (no live process declares it) or conflict (two live processes
    /// declare it differently).
    List {
        /// What this configuration (docket.toml, and the built-in schedules the settings
        /// turn on) declares, whether or not a process registered it yet.
        #[arg(long)]
        declared: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Enqueue one job of the schedule now (not a tick) and print its id.
    Run {
        /// The schedule's name.
        name: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Pause the schedule in every process; its missed ticks follow its catch-up policy on
    /// resume.
    Pause {
        /// The schedule's name.
        name: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Resume a paused schedule.
    Resume {
        /// The schedule's name.
        name: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Delete a retired schedule (one no live process declares), with its tick records.
    /// A schedule a live process declares is refused: take it out of that process's
    /// configuration and restart it first.
    Remove {
        /// The schedule's name.
        name: String,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// A small story that finishes in seconds.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Keep serving (HTTP and workers) after the story, until Ctrl-C.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Logs on stderr instead of a file.
    #[arg(short, long)]
    pub(crate) verbose: bool,
    /// The demo's own directory, owner-only (set by the binary, not on the command line):
    /// its templates, and its log file unless `--verbose`.
    #[arg(skip)]
    pub(crate) work_dir: Option<std::path::PathBuf>,
    /// Where the logs go (set by the binary, not on the command line).
    #[arg(skip)]
    pub(crate) log_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    #[arg(long, help = format!(
        "Queues to serve, `name[:concurrency]` comma-separated (overrides {})",
        settings::QUEUES
    ))]
    pub(crate) queues: Option<String>,
    #[arg(long, help = format!("Jobs at once per queue (overrides {})", settings::CONCURRENCY))]
    pub(crate) concurrency: Option<usize>,
}

#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    /// The whole database, not only Docket's schema and migrations table.
    #[arg(long)]
    pub(crate) all: bool,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RestoreCheckArgs {
    #[arg(help = format!(
        "The backup to check (default: the newest in {})",
        settings::BACKUP_DIR
    ))]
    pub(crate) file: Option<std::path::PathBuf>,
    /// Leave the scratch database for inspection (its name is printed).
    #[arg(long)]
    pub(crate) keep: bool,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Debug, Args)]
pub(crate) struct OutputArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct EnqueueArgs {
    /// The job kind, which names its handler.
    pub(crate) kind: String,
    /// The payload, as JSON.
    #[arg(long, default_value = "{}")]
    pub(crate) payload: String,
    /// The queue.
    #[arg(long, default_value = docket_queue::enqueue::DEFAULT_QUEUE)]
    pub(crate) queue: String,
    /// Lower runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub(crate) priority: i16,
    /// Not before this time (RFC 3339 with its offset, e.g. 2026-12-08T03:00:00Z; years 1
    /// to 9999 UTC).
    #[arg(long, conflicts_with = "delay", value_parser = parse_time)]
    pub(crate) run_at: Option<DateTime<Utc>>,
    /// Not before this long from now: seconds (`90`), or with a unit as the retry ladder
    /// takes it (`30s`, `5m`, `1h`, `2d`).
    #[arg(long, value_parser = parse_delay)]
    pub(crate) delay: Option<u64>,
    /// Attempts before the job is dead-lettered.
    #[arg(long, default_value_t = docket_queue::enqueue::DEFAULT_MAX_ATTEMPTS, allow_negative_numbers = true)]
    pub(crate) max_attempts: i32,
    /// At most one live job per key; a duplicate returns the live job's id.
    #[arg(long)]
    pub(crate) unique_key: Option<String>,
    /// Dead-letter the job as `expired` rather than start it after this time (RFC 3339;
    /// years 1 to 9999 UTC).
    #[arg(long, value_parser = parse_time)]
    pub(crate) expires_at: Option<DateTime<Utc>>,
    /// Its fair-share group in the queue (a tenant, a customer).
    #[arg(long)]
    pub(crate) group: Option<String>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum JobsCommand {
    /// List jobs, newest first.
    List(ListArgs),
    /// Show one job whole.
    Show {
        /// The job's id.
        id: JobId,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Replay a finished job, or with --dead-letters every dead letter matching filters.
    Replay(ReplayArgs),
    /// Cancel a job (a processing job is asked to stop).
    Cancel {
        /// The job's id.
        id: JobId,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Discard a dead letter that must never run: it becomes cancelled, its reason kept in
    /// its error history.
    Discard {
        /// The job's id.
        id: JobId,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only jobs in this state (pending, retrying, processing, completed, dead_letter, cancelled).
    #[arg(long)]
    pub(crate) state: Option<JobState>,
    /// Only jobs on this queue.
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Only jobs of this kind.
    #[arg(long)]
    pub(crate) kind: Option<String>,
    /// Page size.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: u32,
    /// The cursor from the previous page.
    #[arg(long)]
    pub(crate) before: Option<JobId>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The job to replay.
    #[arg(
        required_unless_present = "dead_letters",
        conflicts_with = "dead_letters"
    )]
    pub(crate) id: Option<JobId>,
    /// Replay every dead letter that matches the filters below.
    #[arg(long)]
    pub(crate) dead_letters: bool,
    /// With --dead-letters: only this queue.
    #[arg(long, requires = "dead_letters")]
    pub(crate) queue: Option<String>,
    /// With --dead-letters: only this kind.
    #[arg(long, requires = "dead_letters")]
    pub(crate) kind: Option<String>,
    /// With --dead-letters: only those dead-lettered at or after this time (RFC 3339).
    #[arg(long, requires = "dead_letters", value_parser = parse_time)]
    pub(crate) since: Option<DateTime<Utc>>,
    /// With --dead-letters: only those dead-lettered before this time (RFC 3339).
    #[arg(long, requires = "dead_letters", value_parser = parse_time)]
    pub(crate) until: Option<DateTime<Utc>>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// A time on the command line: RFC 3339 with its offset. A time without one (`2026-12-08
/// 03:00`) is refused saying how to write it: UTC or local is not guessed.
pub(crate) fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = text.parse::<DateTime<Utc>>() {
        return Ok(at);
    }
    let example = "2026-12-08T03:00:00Z (UTC) or 2026-12-08T03:00:00+01:00";
    let naive = [
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ]
    .iter()
    .any(|format| chrono::NaiveDateTime::parse_from_str(text, format).is_ok())
        || chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok();
    if naive {
        return Err(format!(
            "{text:?} has no time zone: write the time in RFC 3339 with its offset, e.g. {example}"
        ));
    }
    Err(format!(
        "{text:?} is not a time: write it in RFC 3339 with its offset, e.g. {example}"
    ))
}

/// A delay on the command line, in seconds: a bare number of seconds, or a number with a
/// unit as the retry ladder takes it (`30s`, `5m`, `1h`, `2d`).
pub(crate) fn parse_delay(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_seconds: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    let wanted = "write seconds (90) or a number with a unit: 30s, 5m, 1h, 2d";
    match number.trim().parse::<u64>() {
        Ok(n) if unit_seconds > 0 => n
            .checked_mul(unit_seconds)
            .ok_or_else(|| format!("{text:?} is longer than any delay a job can have")),
        Err(err) if unit_seconds > 0 && *err.kind() == std::num::IntErrorKind::PosOverflow => {
            Err(format!("{text:?} is longer than any delay a job can have"))
        }
        _ => Err(format!("{text:?} is not a delay: {wanted}")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Commands that print no answer of their own: the services run until a signal.
    const NO_ANSWER: &[&str] = &["worker", "serve", "demo"];

    /// Every command that answers accepts `--json`, as the README promises.
    #[test]
    fn every_command_that_answers_accepts_json() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let name = if path.is_empty() {
                command.get_name().to_owned()
            } else {
                format!("{path} {}", command.get_name())
            };
            let leaves: Vec<&clap::Command> = command.get_subcommands().collect();
            if leaves.is_empty() {
                let short = name.trim_start_matches("docket ").to_owned();
                let answers = !NO_ANSWER.contains(&short.as_str());
                if answers && !command.get_arguments().any(|arg| arg.get_id() == "json") {
                    missing.push(short);
                }
                return;
            }
            for sub in leaves {
                walk(sub, &name, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "no --json: {missing:?}");
    }
}
