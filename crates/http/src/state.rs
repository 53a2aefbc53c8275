//! What every handler shares.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::auth::Secret;
use crate::health::{HealthConfig, HealthMonitor};

/// The router's state.
#[derive(Clone)]
pub struct AppState {
    /// The pool for job admin requests.
    pub pool: PgPool,
    /// The bearer secret; `None` refuses every guarded request.
    pub cron_secret: Option<Secret>,
    /// Renders the process's metrics; `None` when no recorder is installed.
    pub metrics: Option<PrometheusHandle>,
    /// Health evaluation with its own small pool, timeout and cache.
    pub health: Arc<HealthMonitor>,
}

impl AppState {
    /// State for `pool`, with a health monitor on a pool of its own built from the same
    /// connection options.
    pub fn new(
        pool: PgPool,
        cron_secret: Option<Secret>,
        metrics: Option<PrometheusHandle>,
        health: HealthConfig,
    ) -> AppState {
        let monitor = HealthMonitor::new(&pool, health);
        AppState {
            pool,
            cron_secret,
            metrics,
            health: Arc::new(monitor),
        }
    }
}
