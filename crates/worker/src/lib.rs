//! # docket-worker
//!
//! The runtime that turns job rows into running code: application handlers, a producer
//! per queue woken by `LISTEN/NOTIFY` (with polling as the fallback), executors with
//! per-queue concurrency, batched and fenced completion, heartbeats as leases, and the
//! rescuer and pruner, with a bounded graceful shutdown.
//!
//! ```no_run
//! use docket_worker::{Registry, Runtime, RuntimeConfig, JobContext, JobError};
//! # #[derive(serde::Serialize, serde::Deserialize)] struct SendWelcome { user_id: i64 }
//! # impl docket_queue::JobArgs for SendWelcome { const KIND: &'static str = "send_welcome"; }
//! # async fn example(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = Registry::new();
//! registry.register(|args: SendWelcome, ctx: JobContext| async move {
//!     println!("welcome {} (attempt {})", args.user_id, ctx.attempt());
//!     Ok::<(), JobError>(())
//! });
//! let runtime = Runtime::new(pool, registry, RuntimeConfig::default())?;
//! runtime.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`handler`]: `JobContext`, `JobError`: what a handler gets and returns.
//! - [`registry`]: kind → handler, per-kind timeout and backoff.
//! - [`builtin`]: `docket.noop`, `docket.sleep`, `docket.fail`.
//! - [`config`]: `RuntimeConfig` with named defaults and `validate`.
//! - [`cron`]: cron schedules: parsing and tick arithmetic, catch-up (pure), and
//!   `cron::scheduler`, which enqueues each due tick, exactly once over all processes.
//! - [`runtime`]: `Runtime::run`: start-up and ordered shutdown.
//! - `producer`: claims `min(free slots + look-ahead, batch)` per queue when woken.
//! - `executor`: runs one job: decode, timeout, panic capture, cancellation → `Outcome`.
//! - `completer`: the only writer of outcomes; batched, retried, drained at shutdown.
//! - `listener`: LISTEN on a dedicated connection, reconnecting with backoff.
//! - `controls`: the paused queues, read once per poll interval; producers of paused
//!   queues claim nothing.
//! - `lease`: what this worker holds: its lease, claims in flight, held jobs and their
//!   stop switches.
//! - `service`: the periodic-service trait and loop.
//! - `pace`: sizes an auto prefetch from the jobs' run times and the claims' round trips.
//! - `heartbeat`: renews the lease; stops and hands back jobs when it cannot.
//! - `reconciler`: stops cancelled jobs; hands back jobs held in the database but unknown here.
//! - `rescuer`, `expirer`, `parker`, `pruner`: shared maintenance, one worker at a time.
//! - `batcher`: finishes batches whose jobs are all final; enqueues their callbacks once.
//! - [`events`], [`metrics`]: log event names and metric names.
//!
//! It does not own SQL (that is `docket-queue`) or the process (signals and
//! configuration belong to the binary that embeds it).
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod batcher;
pub mod builtin;
mod completer;
pub mod config;
mod controls;
pub mod cron;
pub mod events;
mod executor;
mod expirer;
pub mod handler;
mod heartbeat;
mod lease;
mod listener;
pub mod metrics;
mod pace;
mod parker;
mod producer;
mod pruner;
mod reconciler;
pub mod registry;
mod rescuer;
mod retry;
pub mod runtime;
mod service;
mod settings;
pub mod testing;

pub use config::{ConfigError, Prefetch, QueueConfig, RuntimeConfig};
pub use handler::{BoxError, JobContext, JobError};
pub use listener::CHANNEL;
pub use registry::{KindOptions, Registry};
pub use runtime::Runtime;
