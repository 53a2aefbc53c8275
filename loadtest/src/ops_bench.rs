//! `GET /ops` with a big jobs table: the page's latency when the snapshot is evaluated for
//! every view (no health cache), through the real router.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use docket_http::{AppState, HealthConfig, Secret};
use docket_testkit::TestDb;
use tower::ServiceExt;

use crate::stats::{ms, percentiles};

const SECRET: &str = "bench";

pub(crate) async fn page(rows: usize, live_share: f64, samples: usize) -> anyhow::Result<()> {
    let db = TestDb::with_pool_size(4).await;
    let (live, _) = crate::queue_bench::fill(&db.pool, rows, live_share).await?;
    let health = HealthConfig {
        cache_ttl: Duration::ZERO,
        ..HealthConfig::default()
    };
    let app = docket_http::router(AppState::new(
        db.pool.clone(),
        Secret::new(SECRET),
        None,
        health,
    ));
    let view = || async {
        let request = Request::get("/ops")
            .header("authorization", format!("Bearer {SECRET}"))
            .body(Body::empty())?;
        let started = Instant::now();
        let response = app.clone().oneshot(request).await?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
        anyhow::ensure!(status == StatusCode::OK, "GET /ops answered {status}");
        Ok::<_, anyhow::Error>((started.elapsed(), bytes.len()))
    };
    // The first view reads the last hour's finished jobs for the chart; later ones read
    // only what finished since the one before.
    let (first, size) = view().await?;
    let mut timings = Vec::with_capacity(samples);
    for _ in 0..samples {
        timings.push(view().await?.0);
    }
    println!(
        "GET /ops with {rows} rows ({live} live), page {size} bytes: first view {:.1} ms; then {}",
        ms(first),
        percentiles(&mut timings)
    );
    Ok(())
}
