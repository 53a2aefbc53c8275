//! Tests of the HTTP layer: the router against a real PostgreSQL, without a socket (but
//! `mount`: the router nested in an application's, served on a real port).

mod backup;
mod health;
mod jobs;
mod mail;
mod metrics;
mod mount;
mod ops;
mod queues;

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use docket_http::{AppState, HealthConfig, Secret};
use http_body_util::BodyExt;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::Value;
use sqlx::PgPool;
use tower::ServiceExt;

pub(crate) const SECRET: &str = "s3cret-token-for-tests";

/// The process's Prometheus recorder, installed once.
pub(crate) fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("install the recorder")
        })
        .clone()
}

pub(crate) fn app(pool: &PgPool) -> Router {
    app_with(
        pool,
        Secret::new(SECRET),
        HealthConfig {
            cache_ttl: std::time::Duration::ZERO,
            ..HealthConfig::default()
        },
    )
}

pub(crate) fn app_with(pool: &PgPool, secret: Option<Secret>, health: HealthConfig) -> Router {
    docket_http::router(AppState::new(
        pool.clone(),
        secret,
        Some(recorder()),
        health,
    ))
}

/// Sends a request; returns the status and the body (JSON when it parses, else a string).
pub(crate) async fn call(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

pub(crate) fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub(crate) fn authed(method: &str, uri: &str, body: Option<&str>) -> Request<Body> {
    let builder = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {SECRET}"));
    match body {
        Some(body) => builder
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}
