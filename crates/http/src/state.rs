//! What every handler shares.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use axum::body::Bytes;
use axum::extract::FromRef;
use std::time::Instant;

use crate::auth::{Gate, Secret, SlowLane};
use crate::health::{HealthConfig, HealthMonitor};
use crate::host::HostConfig;
use crate::ops::state::OpsState;

/// How long one job-admin statement may run. A filter no index serves (a kind with no
/// match over millions of rows) gives up here instead of holding a connection.
pub const ADMIN_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections of the job-admin pool.
const ADMIN_POOL_SIZE: u32 = 5;

/// The router's state.
#[derive(Clone)]
pub struct AppState {
    /// The pool for job admin requests: its own, each statement bounded by
    /// [`ADMIN_STATEMENT_TIMEOUT`].
    pub pool: PgPool,
    /// The bearer secret; `None` refuses every guarded request.
    pub cron_secret: Option<Secret>,
    /// Renders the process's metrics; `None` when no recorder is installed.
    pub metrics: Option<PrometheusHandle>,
    /// Health evaluation with its own small pool, timeout and cache.
    pub health: Arc<HealthMonitor>,
    /// The mail settings and catalog, for creating campaigns; `None`: `POST /api/campaigns`
    /// answers 503.
    pub mailer: Option<Arc<docket_mail::Mailer>>,
    /// The operations page: its sessions and chart.
    pub ops: Arc<OpsState>,
    /// The line wrong secrets wait in, bearer tokens and sign-ins alike.
    pub(crate) slow_lane: Arc<SlowLane>,
    /// The OpenAPI document, cached.
    pub(crate) openapi: Arc<OpenApiCache>,
}

impl AppState {
    /// State for `pool`'s database: job admin and health each get a small pool of their
    /// own, built from `pool`'s connection options, with their own statement timeouts.
    pub fn new(
        pool: PgPool,
        cron_secret: Option<Secret>,
        metrics: Option<PrometheusHandle>,
        health: HealthConfig,
    ) -> AppState {
        // The relay's check always; the host's once the operations page says which host.
        let monitor = HealthMonitor::new(
            &pool,
            health,
            vec![Arc::new(docket_mail::health::RelayProbe::default())],
        );
        let timeout_ms = ADMIN_STATEMENT_TIMEOUT.as_millis().to_string();
        let options: PgConnectOptions = (*pool.connect_options())
            .clone()
            .options([("statement_timeout", timeout_ms.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(ADMIN_POOL_SIZE)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .connect_lazy_with(options);
        AppState {
            pool,
            metrics,
            health: Arc::new(monitor),
            mailer: None,
            ops: Arc::new(OpsState::new(cron_secret.clone())),
            cron_secret,
            slow_lane: Arc::new(SlowLane::new()),
            openapi: Arc::default(),
        }
    }

    /// The same state, its operations page signed in to with `ops_secret` (or, when that
    /// is `None`, the cron secret) and showing `host`'s checks.
    pub fn with_ops(mut self, ops_secret: Option<Secret>, host: HostConfig) -> AppState {
        let secret = ops_secret.or_else(|| self.cron_secret.clone());
        let mode = self.mailer.as_ref().map(|mailer| &mailer.config().mode);
        self.health = Arc::new(self.health.with_probes(crate::health::probes(&host, mode)));
        self.ops = Arc::new(OpsState::new(secret));
        self
    }

    /// The same state, creating campaigns with `mailer`'s catalog and sender. Call it before
    /// [`AppState::with_ops`], whose health checks say how this mailer sends.
    pub fn with_mailer(mut self, mailer: Arc<docket_mail::Mailer>) -> AppState {
        self.mailer = Some(mailer);
        self
    }
}

impl FromRef<AppState> for Gate {
    fn from_ref(state: &AppState) -> Gate {
        Gate {
            secret: state.cron_secret.clone(),
            slow_lane: state.slow_lane.clone(),
        }
    }
}

/// The OpenAPI document, serialized: the public one built once per mount (the prefix the
/// router is nested at, a route pattern: a fixed set, one in practice), the bearer's (with
/// this server's names) with when it was read and for which mount.
#[derive(Default)]
pub(crate) struct OpenApiCache {
    pub(crate) public: std::sync::Mutex<HashMap<String, Bytes>>,
    pub(crate) named: tokio::sync::Mutex<Option<(Instant, String, Bytes)>>,
}
