//! # docket-testkit
//!
//! What Docket's tests stand on: a real PostgreSQL and a fresh database per test.
//!
//! # Layout
//!
//! - [`postgres`]: `DATABASE_URL`, or a throwaway cluster from the installed binaries on a
//!   private Unix socket, removed when the process ends (also used by `docket demo`).
//! - [`db`]: `TestDb`, a database per test cloned from a template migrated once; dropped
//!   when the test passes, kept when it fails, leftovers swept.
//! - [`factory`]: `insert_job` with `JobOpts`, fixtures in any state.
//! - [`wait`]: `eventually`, a bounded wait for a real process to react.
//!
//! It is a dev-dependency everywhere but the `docket` binary, whose `demo` needs the
//! throwaway cluster.

pub mod db;
pub mod factory;
pub mod postgres;
pub mod wait;

pub use db::TestDb;
pub use factory::{insert_job, JobOpts};
pub use postgres::{server, ThrowawayCluster};
pub use wait::eventually;
