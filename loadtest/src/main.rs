//! # docket-loadtest
//!
//! Benchmarks of Docket against a real PostgreSQL. Each run works in a fresh database of
//! its own (cloned from the migrated template) and drops it at the end. Point
//! `DATABASE_URL` at the server to measure (without it, a throwaway cluster with fsync
//! off is used, whose figures are not comparable). Figures go to stdout; the commands and
//! results we keep are in `docs/benchmarks.md`.

mod chart;
mod drill;
mod mail_bench;
mod ops_bench;
mod queue_bench;
mod stats;
mod worker_bench;

use clap::{Parser, Subcommand};

/// Docket's benchmarks.
#[derive(Parser)]
#[command(name = "docket-loadtest")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Single-row enqueue from one client, each its own transaction.
    Enqueue {
        /// Jobs to enqueue.
        #[arg(long, default_value_t = 20_000)]
        jobs: usize,
        /// On tokio's default multi-threaded runtime, as most applications run (each round
        /// trip then pays a cross-thread wake-up), instead of a single-threaded one.
        #[arg(long)]
        multi_thread: bool,
    },
    /// Bulk enqueue, many jobs per round trip.
    Bulk {
        /// Jobs to enqueue.
        #[arg(long, default_value_t = 200_000)]
        jobs: usize,
        /// Jobs per call.
        #[arg(long, default_value_t = 5_000)]
        batch: usize,
    },
    /// Claim + complete cycles: claimers each claim `batch` jobs and complete them in one
    /// outcome statement, until the queue is empty.
    Cycle {
        /// Jobs queued before the clock starts.
        #[arg(long, default_value_t = 20_000)]
        jobs: usize,
        /// Jobs per claim (and per outcome batch).
        #[arg(long, default_value_t = 10)]
        batch: u32,
        /// Concurrent claimers.
        #[arg(long, default_value_t = 1)]
        claimers: usize,
        /// Finished jobs kept in the table while cycling (churn ballast).
        #[arg(long, default_value_t = 0)]
        finished_rows: usize,
    },
    /// One in-process worker runtime working queued no-op jobs.
    Throughput(worker_bench::ThroughputArgs),
    /// `GET /ops` latency over a big jobs table, the snapshot evaluated for every view.
    OpsPage {
        /// Rows in the jobs table.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// The share of them that is live (pending, retrying, dead-lettered).
        #[arg(long, default_value_t = 0.1)]
        live_share: f64,
        /// Views to time.
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// Pickup latency at idle, one job at a time.
    Latency {
        /// Jobs to time.
        #[arg(long, default_value_t = 500)]
        samples: usize,
        #[command(flatten)]
        route: worker_bench::Route,
    },
    /// `docket worker` processes on one database: throughput and memory.
    Scale {
        /// Path of the `docket` binary.
        #[arg(long, default_value = "target/release/docket")]
        docket: String,
        /// Worker processes.
        #[arg(long, default_value_t = 1)]
        processes: usize,
        /// Jobs queued before the workers start.
        #[arg(long, default_value_t = 20_000)]
        jobs: usize,
        /// Jobs at once per process.
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
        #[command(flatten)]
        route: worker_bench::Route,
    },
    /// Run a drill worker (the runtime embedded, with the `drill.ledger` kind) until
    /// SIGTERM; used by the crash drills.
    DrillWorker {
        /// Jobs at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Heartbeat interval, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        heartbeat_ms: u64,
        /// Lease timeout, in milliseconds.
        #[arg(long, default_value_t = 3000)]
        lease_ms: u64,
        /// The rate of the `drill-limited` queue over every drill worker (`100/s`).
        #[arg(long)]
        limited_rate: Option<docket_queue::rate_limit::Rate>,
    },
    /// The stress drill: `docket serve` and N drill workers under a mixed workload and
    /// the chosen faults, then the invariants; writes report.json, report.md, chart.svg.
    Drill {
        /// quick (a few thousand jobs), standard (100,000 jobs), soak (a steady rate for an hour).
        #[arg(long, value_enum, default_value = "quick")]
        profile: drill::Profile,
        /// Jobs (default: the profile's).
        #[arg(long)]
        jobs: Option<usize>,
        /// Drill worker processes (default: the profile's).
        #[arg(long)]
        workers: Option<usize>,
        /// Faults, comma-separated: kill, terminate, pg-restart, smtp, held-snapshot, stall, smtp-busy, not-due-group; or none.
        #[arg(long)]
        chaos: Option<String>,
        /// Where the report goes.
        #[arg(long, default_value = "drill-report")]
        out: std::path::PathBuf,
        /// The `docket` binary to run as `docket serve`.
        #[arg(long, default_value = "target/release/docket")]
        docket: std::path::PathBuf,
        /// The workload's seed: the same seed makes the same jobs.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Run on the database DATABASE_URL names even though it holds Docket data or
        /// tables the drill did not create (without, such a database is refused: the drill
        /// adds jobs, dead letters and workers, kills processes and terminates connections).
        #[arg(long = "i-know-this-is-not-production")]
        not_production: bool,
    },
    /// The drill's invariants alone, on the drill database DATABASE_URL names.
    DrillCheck,
    /// A campaign through the SMTP sink: messages a second by SMTP pool size.
    MailCampaign {
        /// Recipients.
        #[arg(long, default_value_t = 5_000)]
        recipients: usize,
        /// SMTP connections (and batch jobs at once).
        #[arg(long, default_value_t = 4)]
        pool_size: u32,
        /// Each delivery's envelope sender `bounce+<token>@<this>` (VERP); unset: the
        /// sender's address.
        #[arg(long)]
        bounce_domain: Option<String>,
    },
    /// Bounce ingestion: Postfix failure reports over `POST /api/mail/bounces` and
    /// through `docket mail bounce`.
    MailBounces {
        /// Reports (half over HTTP, half through the command).
        #[arg(long, default_value_t = 2_000)]
        messages: usize,
        /// HTTP clients at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// The `docket` binary, for the command's half; unset: HTTP only.
        #[arg(long)]
        docket: Option<std::path::PathBuf>,
    },
    /// Recovery email latency while a campaign runs.
    MailRecovery {
        /// The campaign's recipients.
        #[arg(long, default_value_t = 10_000)]
        recipients: usize,
        /// Recovery emails to time.
        #[arg(long, default_value_t = 100)]
        samples: usize,
        /// SMTP connections (and campaign batch jobs at once).
        #[arg(long, default_value_t = 4)]
        pool_size: u32,
    },
    /// Snapshot latency with a given number of rows in the table.
    Snapshot {
        /// Rows in the table.
        #[arg(long, default_value_t = 10_000)]
        rows: usize,
        /// Share of the rows that are live (pending); the rest completed.
        #[arg(long, default_value_t = 0.1)]
        live_share: f64,
        /// Snapshots to time.
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    if std::env::var_os("DATABASE_URL").is_none() {
        eprintln!("note: DATABASE_URL is unset; measuring a throwaway cluster with fsync off");
    }
    // Single-client benchmarks run on one thread, so that a sequential client pays no
    // cross-thread wake-up per round trip; worker benchmarks run as a worker process would.
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let multi = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let exit = match cli.bench {
        Bench::Drill {
            profile,
            jobs,
            workers,
            chaos,
            out,
            docket,
            seed,
            not_production,
        } => {
            let args = drill::DrillArgs {
                profile,
                jobs,
                workers,
                chaos,
                out,
                docket,
                seed,
                not_production,
            };
            return multi.block_on(drill::run(args));
        }
        Bench::DrillCheck => return multi.block_on(drill::check::run_alone()),
        Bench::Enqueue { jobs, multi_thread } => match multi_thread {
            true => multi.block_on(queue_bench::enqueue(jobs)),
            false => single.block_on(queue_bench::enqueue(jobs)),
        },
        Bench::Bulk { jobs, batch } => single.block_on(queue_bench::bulk(jobs, batch)),
        Bench::Cycle {
            jobs,
            batch,
            claimers,
            finished_rows,
        } => single.block_on(queue_bench::cycle(jobs, batch, claimers, finished_rows)),
        Bench::Snapshot {
            rows,
            live_share,
            samples,
        } => single.block_on(queue_bench::snapshot(rows, live_share, samples)),
        Bench::Throughput(args) => multi.block_on(worker_bench::throughput(args)),
        Bench::MailCampaign {
            recipients,
            pool_size,
            bounce_domain,
        } => multi.block_on(mail_bench::campaign(recipients, pool_size, bounce_domain)),
        Bench::MailBounces {
            messages,
            concurrency,
            docket,
        } => multi.block_on(mail_bench::bounces(messages, concurrency, docket)),
        Bench::MailRecovery {
            recipients,
            samples,
            pool_size,
        } => multi.block_on(mail_bench::recovery(recipients, samples, pool_size)),
        Bench::OpsPage {
            rows,
            live_share,
            samples,
        } => multi.block_on(ops_bench::page(rows, live_share, samples)),
        Bench::Latency { samples, route } => multi.block_on(worker_bench::latency(samples, &route)),
        Bench::Scale {
            docket,
            processes,
            jobs,
            concurrency,
            route,
        } => multi.block_on(worker_bench::scale(
            &docket,
            processes,
            jobs,
            concurrency,
            &route,
        )),
        Bench::DrillWorker {
            concurrency,
            heartbeat_ms,
            lease_ms,
            limited_rate,
        } => {
            // JSON lines on stderr, which the drill keeps as worker-N.log.
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .init();
            let url = std::env::var("DATABASE_URL")
                .map_err(|_| anyhow::anyhow!("the drill worker needs DATABASE_URL"))?;
            let options = drill::worker::DrillWorker {
                concurrency,
                heartbeat: std::time::Duration::from_millis(heartbeat_ms),
                lease: std::time::Duration::from_millis(lease_ms),
                limited_rate,
            };
            multi.block_on(drill::worker::run(&url, options))
        }
    };
    exit.map(|()| std::process::ExitCode::SUCCESS)
}
