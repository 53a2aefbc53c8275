//! # docket-protocol
//!
//! Docket's protocol written as a model and checked over every interleaving within small
//! bounds, in the test suite: the job protocol (claim, prefetch, heartbeat and lease,
//! stall, rescue, fenced outcomes, cancel, replay, expiry, shutdown hand-back, a lost
//! claim reply and the reconciler) in [`jobs`], and cron ticks (schedulers, pause,
//! resume, catch-up) in [`cron`]. [`explore`] is the exhaustive explorer both run on.
//! The tests also replay random walks of the job model against the real queue crate on a
//! real PostgreSQL. `docs/protocol.md` states the protocol, the bounds and what was found.
//!
//! Test-only: nothing in the product depends on it.

pub mod cron;
pub mod explore;
pub mod jobs;
pub mod walk;
