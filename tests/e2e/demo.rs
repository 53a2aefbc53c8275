//! `docket demo --quick`: the whole story runs, checks itself against the database and the
//! relay, and cleans up after itself.

use std::process::Command;
use std::time::Duration;

use docket_testkit::TestDb;

/// The figure after `label` on the summary's line that starts with it.
fn figure(summary: &str, label: &str) -> i64 {
    let line = summary
        .lines()
        .find(|line| line.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{summary}"));
    line.trim_start()[label.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no figure on {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_demo_tells_the_story_checks_it_and_leaves_nothing_behind() {
    let db = TestDb::new().await;
    let databases = || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from pg_database where datname like 'docket_demo_%'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    let before = databases().await;
    let url = db.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_docket"))
            .args(["demo", "--quick"])
            .env("DATABASE_URL", url)
            .output()
            .unwrap()
    });
    let output = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .expect("the demo ends")
        .unwrap();
    let summary = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{summary}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        summary.contains("checked against the database and the relay: ok"),
        "{summary}"
    );
    // 400 recipients: 3 of them bounce (5.1.1), the rest are sent, some after a 451.
    assert_eq!(
        (figure(&summary, "sent"), figure(&summary, "failed")),
        (397, 3),
        "{summary}"
    );
    assert!(figure(&summary, "retried") > 0, "{summary}");
    assert!(summary.contains("recovery emails: 10 sent"), "{summary}");
    assert!(summary.contains("logs: "), "logs go to a file: {summary}");
    assert_eq!(databases().await, before, "the demo's database is dropped");
}
