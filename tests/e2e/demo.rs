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
    let tmp = temp_dir(&db);
    let tmp_dir = tmp.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_docket"))
            .args(["demo", "--quick"])
            .env("DATABASE_URL", url)
            .env("TMPDIR", tmp_dir)
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
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "the demo left {left:?} behind");
    std::fs::remove_dir(&tmp).unwrap();
}

/// A temporary directory of the test's own, to run the demo under (`TMPDIR`).
fn temp_dir(db: &TestDb) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{}-tmp", db.name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A demo that fails keeps its log for a look, in a directory of its own that only its
/// owner can read, and says where.
#[tokio::test]
async fn a_failed_demo_keeps_its_log_private_and_says_where() {
    use std::os::unix::fs::PermissionsExt as _;
    let db = TestDb::new().await;
    let tmp = temp_dir(&db);
    let output = Command::new(env!("CARGO_BIN_EXE_docket"))
        .args(["demo", "--quick"])
        // The database's name, not the URL's end: a URL may carry `?host=…&port=…`.
        .env(
            "DATABASE_URL",
            db.url
                .replacen(&db.name, &format!("{}_no_such_database", db.name), 1),
        )
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let mut logs = Vec::new();
    for entry in walk(&tmp) {
        let meta = std::fs::symlink_metadata(&entry).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}", entry.display());
        } else {
            assert_eq!(mode, 0o600, "{}", entry.display());
            logs.push(entry);
        }
    }
    assert_eq!(logs.len(), 1, "one log file: {logs:?}");
    assert_ne!(logs[0].parent().unwrap(), tmp, "in a directory of its own");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&logs[0].display().to_string()), "{stderr}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}
