//! The backups on the panel: the health document, `/ops` and `/metrics` show the newest
//! backup and the last restore check, and warn when the check is missing, old or failed.

use std::time::Duration;

use docket_http::host::HostConfig;
use docket_http::{AppState, HealthConfig, Secret};
use docket_queue::backup::NewRestoreCheck;
use docket_testkit::TestDb;

use crate::{authed, call, recorder, SECRET};

fn check(failure: Option<&str>) -> NewRestoreCheck {
    NewRestoreCheck {
        backup_file: "/var/backups/docket/docket-20261208T031500.000Z.dump".into(),
        backup_taken_at: None,
        failure: failure.map(Into::into),
        tables: 14,
        jobs: 1200,
        table_rows: [("docket.jobs".to_owned(), 1200)].into(),
        job_states: [("pending".to_owned(), 1200)].into(),
        duration_ms: 4200,
        owner: "drill-owner".into(),
    }
}

/// The finding called `name` in the bearer health document, and the `/ops` page.
async fn panel(app: &axum::Router, name: &str) -> (serde_json::Value, String) {
    let (_, document) = call(app, authed("GET", "/api/health", None)).await;
    let finding = document["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} finding in {document}"));
    assert_eq!(document["checks"][name], finding["verdict"]);
    let (_, page) = call(app, authed("GET", "/ops", None)).await;
    (finding, page.as_str().unwrap().to_owned())
}

#[tokio::test]
async fn the_panel_warns_for_a_missing_old_or_failed_restore_check_and_shows_a_passing_one() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("docket-panel-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("docket-20261208T031500.000Z.dump"),
        vec![0u8; 2048],
    )
    .unwrap();
    let host = HostConfig {
        backup_dir: Some(dir.clone()),
        // The file's name says 2026-12-08: any age passes here; the age is another test's.
        backup_max_age: Duration::from_secs(u64::MAX / 4),
        disk_min_free_percent: 0.0,
        ..HostConfig::default()
    };
    let state = AppState::new(
        db.pool.clone(),
        Secret::new(SECRET),
        Some(recorder()),
        HealthConfig {
            cache_ttl: Duration::ZERO,
            ..HealthConfig::default()
        },
    )
    .with_ops(None, host);
    let app = docket_http::router(state);

    let (finding, page) = panel(&app, "restore_check").await;
    assert_eq!(finding["verdict"], "warn", "{finding}");
    assert_eq!(finding["detail"], "no restore check recorded");
    assert!(finding["advice"]
        .as_str()
        .unwrap()
        .contains("docket restore-check"));
    assert!(page.contains("no restore check recorded"), "{page}");
    let (backup, page) = panel(&app, "backup").await;
    assert!(
        backup["detail"]
            .as_str()
            .unwrap()
            .contains("2.0 KiB (docket-20261208T031500.000Z.dump)"),
        "{backup}"
    );
    assert!(page.contains("docket-20261208T031500.000Z.dump"));

    // An old passing check: past the quarter.
    docket_queue::backup::record(&db.pool, &check(None))
        .await
        .unwrap();
    sqlx::query("update docket.restore_checks set checked_at = now() - interval '100 days'")
        .execute(&db.pool)
        .await
        .unwrap();
    let (finding, _) = panel(&app, "restore_check").await;
    assert_eq!(finding["verdict"], "warn", "{finding}");
    assert!(
        finding["detail"]
            .as_str()
            .unwrap()
            .starts_with("ok 100.0 d ago by drill-owner"),
        "{finding}"
    );

    // A fresh failed one.
    docket_queue::backup::record(
        &db.pool,
        &check(Some(
            "pg_restore failed: could not read input file: end of file",
        )),
    )
    .await
    .unwrap();
    let (finding, page) = panel(&app, "restore_check").await;
    assert_eq!(finding["verdict"], "warn", "{finding}");
    assert!(
        finding["detail"].as_str().unwrap().contains("failed")
            && finding["detail"].as_str().unwrap().contains("end of file"),
        "{finding}"
    );
    assert!(page.contains("end of file"), "{page}");
    let (_, metrics) = call(&app, authed("GET", "/metrics", None)).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("docket_restore_check_ok 0"),
        "{metrics}"
    );

    // A fresh passing one: ok, with its counts and owner, on every surface.
    docket_queue::backup::record(&db.pool, &check(None))
        .await
        .unwrap();
    let (finding, page) = panel(&app, "restore_check").await;
    assert_eq!(finding["verdict"], "ok", "{finding}");
    let detail = finding["detail"].as_str().unwrap();
    assert!(
        detail.contains("by drill-owner: 14 tables, 1200 jobs restored"),
        "{detail}"
    );
    assert!(finding.get("advice").is_none());
    assert!(page.contains("14 tables, 1200 jobs restored"), "{page}");
    let (_, metrics) = call(&app, authed("GET", "/metrics", None)).await;
    let metrics = metrics.as_str().unwrap();
    assert!(metrics.contains("docket_restore_check_ok 1"), "{metrics}");
    assert!(
        metrics.contains("docket_restore_check_age_seconds "),
        "{metrics}"
    );
    assert!(
        metrics.contains("docket_backup_size_bytes 2048"),
        "{metrics}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
