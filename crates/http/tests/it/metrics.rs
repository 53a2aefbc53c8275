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

/// An anonymous client sending made-up methods gets its 405 and adds no series: the method
/// label takes the methods HTTP defines, then `other`.
#[tokio::test]
async fn made_up_methods_add_no_series_to_the_metrics() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let tag = &db.name[db.name.len() - 8..];
    for n in 0..40 {
        let method = format!("X{}{n}{}", tag.to_ascii_uppercase(), "M".repeat(2000));
        let request = axum::http::Request::builder()
            .method(method.as_str())
            .uri("/api/health")
            .body(axum::body::Body::empty())
            .unwrap();
        let (status, _) = call(&app, request).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }
    let (_, body) = call(&app, authed("GET", "/metrics", None)).await;
    let text = body.as_str().unwrap();
    assert!(
        !text.contains(&tag.to_ascii_uppercase()),
        "a client's method became a label"
    );
    let samples = parse(text);
    assert!(
        samples.contains_key(
            "docket_http_requests_total{method=\"other\",route=\"/api/health\",status=\"405\"}"
        ),
        "{text}"
    );
    for line in text.lines().filter(|l| l.contains("method=\"")) {
        let method = line
            .split("method=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert!(
            [
                "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
                "other"
            ]
            .contains(&method),
            "{line}"
        );
    }
}

/// A bearer holder enqueueing jobs of ever new kinds and queues adds a bounded number of
/// series: each label keeps its first values and counts the rest as `other`.
#[tokio::test]
async fn enqueue_labels_take_a_bounded_number_of_values() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let tag = &db.name[db.name.len() - 8..];
    let limit = docket_queue::telemetry::metric::LABEL_VALUES;
    for n in 0..limit + 20 {
        let body = format!(r#"{{"kind": "k-{tag}-{n}", "queue": "q-{tag}-{n}"}}"#);
        let (status, job) = call(&app, authed("POST", "/api/jobs", Some(&body))).await;
        assert_eq!(status, StatusCode::CREATED, "{job}");
    }
    let (_, body) = call(&app, authed("GET", "/metrics", None)).await;
    let text = body.as_str().unwrap();
    let values = |label: &str| {
        let mut values: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("docket_jobs_enqueued_total{"))
            .map(|l| {
                l.split(&format!("{label}=\""))
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
            })
            .collect();
        values.sort_unstable();
        values.dedup();
        values
    };
    for label in ["kind", "queue"] {
        let values = values(label);
        assert!(
            values.len() <= limit + 1,
            "{label}: {} values",
            values.len()
        );
        assert!(values.contains(&"other"), "{label}: {values:?}");
    }
}

/// Each label bounded on its own still let queue × kind pairs multiply (101 × 101 series):
/// the pairs are bounded together.
#[tokio::test]
async fn enqueue_pairs_stay_bounded() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let tag = &db.name[db.name.len() - 8..];
    let limit = docket_queue::telemetry::metric::LABEL_VALUES;
    for (q, k) in (0..11).flat_map(|q| (0..11).map(move |k| (q, k))) {
        let body = format!(r#"{{"kind": "k-{tag}-{k}", "queue": "q-{tag}-{q}"}}"#);
        let (status, job) = call(&app, authed("POST", "/api/jobs", Some(&body))).await;
        assert_eq!(status, StatusCode::CREATED, "{job}");
    }
    let (_, body) = call(&app, authed("GET", "/metrics", None)).await;
    let series = body
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("docket_jobs_enqueued_total{") && l.contains(tag))
        .count();
    assert!(series <= limit, "{series} enqueue series");
}
