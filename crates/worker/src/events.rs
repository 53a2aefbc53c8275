//! The `event` field values of the runtime's log lines: DESIGN.md's families, spelled once
//! for every crate in [`docket_queue::telemetry::event`].

pub use docket_queue::telemetry::event::*;
