use docket_protocol::explore::check;
use docket_protocol::jobs::{Jobs, Rules};

#[test]
fn leases_hold_over_every_interleaving_within_the_bounds() {
    let report = check(&Jobs::leases(Rules::TODAY), 5_000_000);
    println!("{report}");
    assert!(report.violation.is_none(), "{report}");
}

#[test]
fn the_queue_rules_hold_over_every_interleaving_within_the_bounds() {
    let report = check(&Jobs::queue(Rules::TODAY), 5_000_000);
    println!("{report}");
    assert!(report.violation.is_none(), "{report}");
}
