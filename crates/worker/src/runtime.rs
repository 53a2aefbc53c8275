//! The runtime: registers the worker, starts a producer per queue, the completer, the
//! listener and the maintenance services, and shuts them down in order.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use docket_queue::maintenance::{self, WorkerInfo};
use docket_queue::JobState;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use uuid::Uuid;

use crate::completer::Completer;
use crate::config::{ConfigError, RuntimeConfig};
use crate::events;
use crate::executor::{Executor, Running};
use crate::heartbeat::{Heartbeat, Lease};
use crate::listener::Listener;
use crate::producer::Producer;
use crate::pruner::Pruner;
use crate::registry::Registry;
use crate::rescuer::Rescuer;
use crate::service::run_periodic;

/// A worker process's runtime. Build it with [`Runtime::new`], then [`Runtime::run`] it
/// with the future that says when to stop.
pub struct Runtime {
    pool: PgPool,
    registry: Arc<Registry>,
    config: RuntimeConfig,
    worker: WorkerInfo,
}

impl Runtime {
    /// A runtime that claims and completes on `pool` (give it room: the producers, the
    /// completer and the application's own handlers share it), runs the kinds in
    /// `registry`, and behaves as `config` says. Heartbeats, maintenance and LISTEN get
    /// small pools of their own, so a busy work pool never starves them.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the configuration cannot work or no kind is registered.
    pub fn new(
        pool: PgPool,
        registry: Registry,
        config: RuntimeConfig,
    ) -> Result<Runtime, ConfigError> {
        config.validate()?;
        if registry.is_empty() {
            return Err(ConfigError("no job kinds are registered".into()));
        }
        let worker = WorkerInfo {
            // Fresh per process start: a restarted process never inherits a dead one's jobs.
            id: Uuid::now_v7(),
            host: hostname(),
            pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
            queues: config.queues.iter().map(|q| q.name.clone()).collect(),
            kinds: registry.kinds(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        Ok(Runtime {
            pool,
            registry: Arc::new(registry),
            config,
            worker,
        })
    }

    /// This worker's id, as stored in `locked_by` and `docket.workers`.
    pub fn worker_id(&self) -> Uuid {
        self.worker.id
    }

    /// Runs until `shutdown` completes, then shuts down in order: stop claiming; give
    /// running jobs `shutdown_timeout` to finish; stop the rest and hand their jobs back
    /// without spending the attempt; write every outcome; stop the services; deregister.
    ///
    /// # Errors
    ///
    /// [`docket_queue::Error`] when the worker cannot register at start. Later database
    /// errors are logged and retried, never returned.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> docket_queue::Result<()> {
        let config = &self.config;
        let side_pool = |size: u32| {
            PgPoolOptions::new()
                .max_connections(size)
                .acquire_timeout(Duration::from_secs(10))
                .test_before_acquire(false)
                .connect_lazy_with((*self.pool.connect_options()).clone())
        };
        let maintenance_pool = side_pool(2);
        maintenance::heartbeat(&maintenance_pool, &self.worker, None).await?;
        info!(
            event = events::WORKER_STARTED, worker.id = %self.worker.id, queues = ?self.worker.queues,
            kinds = ?self.registry.kinds(), "worker started"
        );

        let running = Arc::new(Running::default());
        let lease = Arc::new(Lease::default());
        let hard_stop = CancellationToken::new();
        let stop_claiming = CancellationToken::new();
        let stop_services = CancellationToken::new();
        let services = TaskTracker::new();
        let producers = TaskTracker::new();
        let jobs = TaskTracker::new();

        // Outcomes that may wait for the completer before executors feel backpressure: one
        // batch. Jobs stay `processing` until their outcome is written, so a deeper buffer
        // would only let the producer claim ahead of a completer that is behind.
        let (completer_tx, completer_rx) = mpsc::channel(config.completer_batch);
        let completer = tokio::spawn(
            Completer {
                pool: self.pool.clone(),
                worker_id: self.worker.id,
                batch: config.completer_batch,
                flush_interval: config.completer_flush_interval,
                stopping: stop_claiming.clone(),
                flush_limit: config.shutdown_timeout,
            }
            .run(completer_rx),
        );

        let executor = Arc::new(Executor {
            registry: self.registry.clone(),
            running: running.clone(),
            hard_stop: hard_stop.clone(),
        });
        let total: usize = config.queues.iter().map(|q| q.concurrency).sum();
        let global = Arc::new(Semaphore::new(config.global_concurrency.unwrap_or(total)));
        let kinds: Arc<[String]> = self.registry.kinds().into();
        let mut wakes = HashMap::new();
        for queue in &config.queues {
            let wake = Arc::new(Notify::new());
            wakes.insert(queue.name.clone(), wake.clone());
            let producer = Producer {
                pool: self.pool.clone(),
                queue: queue.name.as_str().into(),
                kinds: kinds.clone(),
                worker_id: self.worker.id,
                claim_batch: config.claim_batch,
                poll_interval: config.poll_interval,
                concurrency: queue.concurrency,
                slots: Arc::new(Semaphore::new(queue.concurrency)),
                global: global.clone(),
                wake,
                executor: executor.clone(),
                completer: completer_tx.clone(),
                jobs: jobs.clone(),
                lease: lease.clone(),
            };
            producers.spawn(producer.run(stop_claiming.clone()));
        }
        drop(completer_tx);

        if config.listen {
            let listener = Listener {
                pool: side_pool(1),
                queues: wakes,
            };
            services.spawn(listener.run(stop_services.clone()));
        }
        let heartbeat = Heartbeat::new(
            maintenance_pool.clone(),
            lease,
            self.worker.clone(),
            running,
            config.heartbeat_interval,
            config.lease_timeout,
        );
        services.spawn(run_periodic(
            heartbeat,
            config.heartbeat_interval,
            stop_services.clone(),
        ));
        let rescuer = Rescuer {
            pool: maintenance_pool.clone(),
            lease_timeout: config.lease_timeout,
            batch: config.maintenance_batch,
        };
        services.spawn(run_periodic(
            rescuer,
            config.rescuer_interval,
            stop_services.clone(),
        ));
        let pruner = Pruner {
            pool: maintenance_pool.clone(),
            retention: [
                (JobState::Completed, config.completed_retention),
                (JobState::Cancelled, config.cancelled_retention),
                (JobState::DeadLetter, config.dead_letter_retention),
            ],
            batch: config.maintenance_batch,
        };
        services.spawn(run_periodic(
            pruner,
            config.pruner_interval,
            stop_services.clone(),
        ));

        shutdown.await;

        // 1. Stop claiming.
        info!(event = events::SHUTDOWN_STARTED, worker.id = %self.worker.id, running = jobs.len(), "shutting down: claiming stopped");
        stop_claiming.cancel();
        producers.close();
        producers.wait().await;
        // 2. Let running jobs finish within the timeout; 3. then stop and hand back the rest.
        jobs.close();
        if tokio::time::timeout(config.shutdown_timeout, jobs.wait())
            .await
            .is_ok()
        {
            info!(
                event = events::SHUTDOWN_DRAINED,
                "every running job finished"
            );
        } else {
            let left = jobs.len();
            hard_stop.cancel();
            jobs.wait().await;
            warn!(
                event = events::SHUTDOWN_RELEASED,
                jobs = left,
                timeout_s = config.shutdown_timeout.as_secs_f64(),
                "jobs still running at the shutdown timeout were stopped and handed back"
            );
        }
        // 4. Write every outcome (the executors dropped their senders; the channel closes).
        if completer.await.is_ok() {
            info!(event = events::SHUTDOWN_FLUSHED, "outcomes written");
        }
        // 5. Stop the services; 6. deregister.
        stop_services.cancel();
        services.close();
        services.wait().await;
        // On a connection of its own: the maintenance pool's may all be stuck behind
        // statements that shutdown cut short.
        let deregister = async {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(
                &self.pool.connect_options(),
            )
            .await?;
            maintenance::deregister(&mut conn, self.worker.id).await?;
            sqlx::Connection::close(conn).await?;
            Ok::<(), docket_queue::Error>(())
        };
        match tokio::time::timeout(config.shutdown_timeout, deregister).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(
                event = events::WORKER_ERROR, error.message = %err,
                "could not deregister; the registration goes stale and the rescuer frees what it held"
            ),
            Err(_) => warn!(
                event = events::WORKER_ERROR,
                "deregistering timed out; the registration goes stale and the rescuer frees what it held"
            ),
        }
        // Connections cut off mid-statement are closed, not returned; never wait on them.
        let _ = tokio::time::timeout(Duration::from_secs(1), maintenance_pool.close()).await;
        info!(event = events::SHUTDOWN_COMPLETED, worker.id = %self.worker.id, "worker stopped");
        Ok(())
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}
