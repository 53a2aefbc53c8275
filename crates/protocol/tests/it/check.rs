use docket_protocol::cron::{CronModel, Rules as CronRules};
use docket_protocol::explore::check;
use docket_protocol::jobs::{Jobs, Rules};
use docket_worker::cron::CatchUp;

fn holds(model: Jobs) {
    let report = check(&model, 8_000_000);
    println!("{report}");
    assert!(report.violation.is_none(), "{report}");
}

#[test]
fn leases_hold_over_every_interleaving_within_the_bounds() {
    holds(Jobs::leases(Rules::TODAY));
}

#[test]
fn lost_replies_hold() {
    holds(Jobs::replies(Rules::TODAY));
}

#[test]
fn the_queue_rules_hold_over_every_interleaving_within_the_bounds() {
    holds(Jobs::queue(Rules::TODAY));
}

fn cron_holds(catch_up: CatchUp) {
    let report = check(&CronModel::new(2, 3, catch_up, CronRules::TODAY), 5_000_000);
    println!("{catch_up:?}: {report}");
    assert!(report.violation.is_none(), "{report}");
}

#[test]
fn cron_ticks_are_enqueued_at_most_once_and_never_while_paused() {
    cron_holds(CatchUp::Skip);
    cron_holds(CatchUp::Latest);
}

#[test]
fn with_catch_up_all_every_tick_is_enqueued_exactly_once() {
    cron_holds(CatchUp::All);
}

/// Larger bounds, for a change to the protocol:
/// `cargo test --release -p docket-protocol --test it -- --ignored --nocapture`.
#[test]
#[ignore = "minutes: larger bounds, run by hand"]
fn larger_bounds() {
    holds(Jobs::large(Rules::TODAY));
    for catch_up in [CatchUp::Skip, CatchUp::Latest, CatchUp::All] {
        let report = check(
            &CronModel::new(3, 4, catch_up, CronRules::TODAY),
            50_000_000,
        );
        println!("{catch_up:?}, three schedulers: {report}");
        assert!(report.violation.is_none(), "{report}");
    }
}
