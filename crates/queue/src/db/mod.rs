//! Every SQL statement of the queue crate, one function per statement.
//!
//! Names put the table first, then the verb and a qualifier (`job_claim`,
//! `job_set_outcome_many`), so related statements sort together. Each takes any
//! `PgExecutor`, so a caller's transaction works. Statements that depend on time take
//! `now: Option<DateTime<Utc>>` and use `coalesce($n, now())`: tests fix time, production
//! passes `None`.
//!
//! One module per table, each sorted by function name: [`backup`] (what a dump holds, restore
//! checks), [`batch`], [`job`], [`worker`], [`queue`]
//! (wake-ups), [`rate_limit`] (token buckets), [`cron`] (schedules and their ticks), [`lock`] (advisory locks),
//! [`server`].

mod backup;
mod batch;
mod cron;
mod job;
mod lock;
mod queue;
mod rate_limit;
mod server;
mod worker;

pub(crate) use backup::*;
pub(crate) use batch::*;
pub(crate) use cron::*;
pub(crate) use job::*;
pub(crate) use lock::*;
pub(crate) use queue::*;
pub(crate) use rate_limit::*;
pub(crate) use server::*;
pub(crate) use worker::*;

/// Bind a slice of optional values as a PostgreSQL array.
type Column<T> = Vec<Option<T>>;
