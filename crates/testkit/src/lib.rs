//! # docket-testkit
//!
//! What Docket's tests stand on: a real PostgreSQL, a fresh database per test, and a real
//! SMTP server.
//!
//! # Layout
//!
//! - [`postgres`]: `DATABASE_URL`, or a throwaway cluster from the installed binaries on a
//!   private Unix socket, removed when the process ends (also used by `docket demo`).
//! - [`db`]: `TestDb`, a database per test cloned from a template migrated once; dropped
//!   when the test passes, kept when it fails, leftovers swept.
//! - [`factory`]: `insert_job` with `JobOpts`, fixtures in any state.
//! - [`smtp`]: `SmtpSink`, a real SMTP server on loopback that records what it receives
//!   and answers 4xx/5xx per recipient, stalls, offers STARTTLS and AUTH on demand.
//! - [`otlp`]: `OtlpReceiver`, the crate's `docket-otlp-receiver` binary as a child
//!   process: a real OTLP/HTTP trace endpoint, and the spans it decoded.
//! - [`wait`]: `eventually`, a bounded wait for a real process to react.
//! - [`tools`]: `require_program`, a test's external tool: skipped when missing, failed
//!   when missing under [`tools::REQUIRE_VARIABLE`]`=required`.
//!
//! It is a dev-dependency everywhere but the `docket` binary, whose `demo` needs the
//! throwaway cluster and the SMTP sink.

pub mod db;
pub mod factory;
pub mod otlp;
pub mod postgres;
pub mod smtp;
pub mod tools;
pub mod wait;

pub use db::TestDb;
pub use factory::{insert_job, JobOpts};
pub use otlp::OtlpReceiver;
pub use postgres::{server, ThrowawayCluster};
pub use smtp::{SelfSigned, SmtpSink};
pub use wait::eventually;
