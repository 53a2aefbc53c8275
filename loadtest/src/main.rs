//! # docket-loadtest
//!
//! Benchmarks of Docket against a real PostgreSQL. Each run works in a fresh database of
//! its own (cloned from the migrated template) and drops it at the end. Point
//! `DATABASE_URL` at the server to measure (without it, a throwaway cluster with fsync
//! off is used, whose figures are not comparable). Figures go to stdout; the commands and
//! results we keep are in `docs/benchmarks.md`.

mod queue_bench;
mod stats;

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

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if std::env::var_os("DATABASE_URL").is_none() {
        eprintln!("note: DATABASE_URL is unset; measuring a throwaway cluster with fsync off");
    }
    match cli.bench {
        Bench::Enqueue { jobs } => queue_bench::enqueue(jobs).await,
        Bench::Bulk { jobs, batch } => queue_bench::bulk(jobs, batch).await,
        Bench::Cycle {
            jobs,
            batch,
            claimers,
            finished_rows,
        } => queue_bench::cycle(jobs, batch, claimers, finished_rows).await,
        Bench::Snapshot {
            rows,
            live_share,
            samples,
        } => queue_bench::snapshot(rows, live_share, samples).await,
    }
}
