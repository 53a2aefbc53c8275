//! The built-in kinds every `docket worker` runs, for drills and demos: `docket.noop`,
//! `docket.sleep` and `docket.fail`.

use std::time::Duration;

use docket_queue::JobArgs;
use serde::{Deserialize, Serialize};

use crate::handler::{JobContext, JobError};
use crate::registry::Registry;

/// `docket.sleep`: sleeps `ms` milliseconds, stopping early when cancelled.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sleep {
    /// How long to sleep.
    pub ms: u64,
}

impl JobArgs for Sleep {
    const KIND: &'static str = "docket.sleep";
}

/// `docket.fail`: fails its first `times` attempts, then succeeds; with `permanent`, fails
/// permanently at once.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fail {
    /// Attempts that fail before one succeeds.
    #[serde(default)]
    pub times: i32,
    /// Fail permanently (straight to `dead_letter`).
    #[serde(default)]
    pub permanent: bool,
}

impl JobArgs for Fail {
    const KIND: &'static str = "docket.fail";
}

/// The kind name of the job that does nothing.
pub const NOOP: &str = "docket.noop";

/// Registers `docket.noop`, `docket.sleep` and `docket.fail`.
pub fn register(registry: &mut Registry) {
    registry.register_raw(NOOP, |_payload, _ctx| async { Ok(()) });
    registry.register(|args: Sleep, ctx: JobContext| async move {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(args.ms)) => Ok(()),
            () = ctx.cancelled() => Err(JobError::from("docket.sleep: cancelled")),
        }
    });
    registry.register(|args: Fail, ctx: JobContext| async move {
        if args.permanent {
            return Err(JobError::permanent(
                "docket.fail: permanent failure on purpose",
            ));
        }
        if ctx.attempt() <= args.times {
            return Err(JobError::from(format!(
                "docket.fail: attempt {} of {} failing on purpose",
                ctx.attempt(),
                args.times
            )));
        }
        Ok(())
    });
}
