//! Each rule the guarantees issue settled, removed from the model: the checker must find a
//! violation, with a trace a reader can follow.

use docket_protocol::cron::{CronModel, Rules as CronRules};
use docket_protocol::explore::{check, Report};
use docket_protocol::jobs::{Jobs, Rules};
use docket_worker::cron::CatchUp;

/// Checks `model` and returns its violation's text, failing when there is none.
fn caught(model: Jobs) -> String {
    let report: Report = check(&model, 5_000_000);
    println!("{report}");
    let violation = report
        .violation
        .unwrap_or_else(|| panic!("the mutation went unnoticed: {} states", report.states));
    violation.to_string()
}

#[test]
fn without_release_on_a_gap_a_stalled_workers_run_goes_on_beside_the_rescuers_run() {
    let trace = caught(Jobs::leases(Rules {
        release_on_gap: false,
        ..Rules::TODAY
    }));
    assert!(trace.contains("no two runs of one job overlap"), "{trace}");
}

#[test]
fn with_runs_known_by_job_alone_a_newer_run_is_handed_back_while_it_runs() {
    let trace = caught(Jobs::replies(Rules {
        run_is_job_and_token: false,
        ..Rules::TODAY
    }));
    assert!(trace.contains("no two runs of one job overlap"), "{trace}");
}

#[test]
fn without_the_token_in_the_fence_a_stale_runs_outcome_lands_on_the_next_run() {
    let trace = caught(Jobs::leases(Rules {
        token_fence: false,
        ..Rules::TODAY
    }));
    assert!(
        trace.contains("no outcome from a stale run is applied"),
        "{trace}"
    );
}

#[test]
fn without_cancel_sticking_a_hand_back_undoes_an_operators_cancel() {
    let trace = caught(Jobs::queue(Rules {
        cancel_sticks: false,
        ..Rules::TODAY
    }));
    assert!(
        trace.contains("an operator's cancel is never undone"),
        "{trace}"
    );
}

#[test]
fn without_the_rescuer_a_crashed_workers_job_is_stuck_for_ever() {
    let trace = caught(Jobs::leases(Rules {
        rescue: false,
        ..Rules::TODAY
    }));
    assert!(trace.contains("liveness: every job ends"), "{trace}");
}

fn cron_caught(rules: CronRules) -> String {
    let report = check(&CronModel::new(2, 3, CatchUp::Latest, rules), 5_000_000);
    println!("{report}");
    report
        .violation
        .expect("the mutation went unnoticed")
        .to_string()
}

#[test]
fn without_the_exactly_once_guard_two_schedulers_enqueue_one_tick_twice() {
    let trace = cron_caught(CronRules {
        tick_once: false,
        ..CronRules::TODAY
    });
    assert!(trace.contains("a tick is enqueued at most once"), "{trace}");
}

#[test]
fn without_the_pause_rechecked_a_pass_that_read_before_a_pause_enqueues_during_it() {
    let trace = cron_caught(CronRules {
        pause_rechecked: false,
        ..CronRules::TODAY
    });
    assert!(
        trace.contains("no tick is enqueued while its schedule is paused"),
        "{trace}"
    );
}
