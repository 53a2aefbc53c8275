use std::collections::HashMap;

use axum::http::StatusCode;
use chrono::Utc;
use docket_queue::JobState;
use docket_testkit::{insert_job, JobOpts, TestDb};

use crate::{app, authed, call};

/// Parses Prometheus text: `name{labels} value` lines, comments skipped. Panics on a line
/// that is not of that form.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
        let name_ok = series
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        assert!(name_ok, "bad metric name in {line:?}");
        if let Some(open) = series.find('{') {
            assert!(series.ends_with('}'), "unclosed labels in {line:?}");
            assert!(
                series[open..].contains('='),
                "labels without values in {line:?}"
            );
        }
        samples.insert(series.to_owned(), value);
    }
    samples
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_depths_match_the_snapshot() {
    let db = TestDb::new().await;
    // A queue name of this test's own: the recorder is shared by every test in the process.
    let queue = format!("metrics-{}", &db.name[db.name.len() - 8..]);
    for state in [
        JobState::Pending,
        JobState::Pending,
        JobState::Retrying,
        JobState::DeadLetter,
    ] {
        insert_job(
            &db.pool,
            JobOpts {
                state: Some(state),
                queue: Some(queue.clone()),
                run_at: Some(Utc::now()),
                ..Default::default()
            },
        )
        .await;
    }
    let app = app(&db.pool);
    let enqueue = format!(r#"{{"kind": "metrics.kind", "queue": "{queue}-api"}}"#);
    let (status, _) = call(&app, authed("POST", "/api/jobs", Some(&enqueue))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, health) = call(&app, authed("GET", "/api/health", None)).await;
    let (status, body) = call(&app, authed("GET", "/metrics", None)).await;
    assert_eq!(status, StatusCode::OK);
    let samples = parse(body.as_str().unwrap());
    let depth =
        |state: &str| samples[&format!("docket_queue_jobs{{queue=\"{queue}\",state=\"{state}\"}}")];
    let figures = &health["queue"]["queues"][&queue];
    for state in ["pending", "retrying", "processing", "dead_letter"] {
        assert_eq!(depth(state), figures[state].as_f64().unwrap(), "{state}");
    }
    assert_eq!(depth("pending"), 2.0);
    assert!(
        samples
            .keys()
            .any(|k| k.starts_with("docket_http_requests_total{")),
        "HTTP requests are counted"
    );
    assert!(samples.contains_key(&format!(
        "docket_queue_oldest_ready_age_seconds{{queue=\"{queue}\"}}"
    )));
}
