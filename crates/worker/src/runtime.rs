//! The runtime: registers the worker, starts a producer per queue, the completer, the
//! listener and the maintenance services, and shuts them down in order.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use docket_queue::maintenance::{self, WorkerInfo};
use docket_queue::{ClaimCursor, GroupCursor, JobState};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use uuid::Uuid;

use crate::batcher::BatchTracker;
use crate::completer::Completer;
use crate::config::{ConfigError, RuntimeConfig};
use crate::controls::{ControlWatcher, GroupedQueues, PausedQueues};
use crate::cron::scheduler::{Scheduler, SCHEDULER_INTERVAL};
use crate::cron::{Cron, Schedule};
use crate::events;
use crate::executor::Executor;
use crate::expirer::Expirer;
use crate::heartbeat::Heartbeat;
use crate::lease::{Holdings, Lease};
use crate::listener::Listener;
use crate::parker::Parker;
use crate::producer::{Producer, QueueSlots};
use crate::pruner::Pruner;
use crate::reconciler::Reconciler;
use crate::registry::Registry;
use crate::rescuer::Rescuer;
use crate::service::{run_periodic, Service};

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
    /// [`ConfigError`] when the configuration cannot work, no kind is registered or a kind
    /// is registered twice.
    pub fn new(
        pool: PgPool,
        registry: Registry,
        config: RuntimeConfig,
    ) -> Result<Runtime, ConfigError> {
        config.validate()?;
        if config.listen && docket_queue::pooler::mode() == docket_queue::Pooler::Transaction {
            return Err(ConfigError(
                "listen must be off behind a transaction-mode pooler: the pooler hands the \
                 LISTEN's server connection to other clients after each transaction"
                    .into(),
            ));
        }
        if registry.is_empty() {
            return Err(ConfigError("no job kinds are registered".into()));
        }
        if let Some(kind) = registry.registered_twice().first() {
            return Err(ConfigError(format!(
                "kind {kind:?} is registered twice: one handler per kind (the second would \
                 silently replace the first)"
            )));
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
    /// without spending the attempt; write every outcome; hand back whatever the database
    /// still says this worker holds; stop the services; deregister. Every step is bounded,
    /// also when the database hangs.
    ///
    /// # Errors
    ///
    /// [`docket_queue::Error`] when the worker cannot register at start. Later database
    /// errors are logged and retried, never returned.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> docket_queue::Result<()> {
        let started = self.start().await?;
        shutdown.await;
        started.shutdown().await;
        Ok(())
    }

    /// Registers the worker and starts every part, in its wiring steps: register, the
    /// completer, a producer per queue (after the first read of the queue controls), the
    /// listener and the periodic services.
    async fn start(self) -> docket_queue::Result<Started> {
        let maintenance_pool = self.side_pool(3);
        let registered_at = Instant::now();
        let schedules = self.register(&maintenance_pool).await?;
        let parts = Parts::new(registered_at, &self.config);
        let (completer, completer_tx) = self.spawn_completer(&parts);
        let (producers, wakes) = self.producers(&parts, completer_tx);
        let watcher = ControlWatcher {
            pool: maintenance_pool.clone(),
            paused: producers.paused.clone(),
            grouped: producers.grouped.clone(),
            wakes: wakes.clone(),
        };
        // Before any producer claims: a queue paused before start stays untouched.
        watcher.refresh().await?;
        for producer in producers.ready {
            parts
                .producers
                .spawn(producer.run(parts.stop_claiming.clone()));
        }
        if self.config.listen {
            let listener = Listener {
                pool: self.side_pool(1),
                queues: wakes,
            };
            parts
                .services
                .spawn(listener.run(parts.stop_services.clone()));
        }
        let reconciler = self.spawn_services(&parts, &maintenance_pool, watcher, schedules);
        Ok(Started {
            pool: self.pool,
            maintenance_pool,
            worker_id: self.worker.id,
            shutdown_timeout: self.config.shutdown_timeout,
            parts,
            completer,
            reconciler,
        })
    }

    /// A small pool of its own on the same database (maintenance, LISTEN).
    fn side_pool(&self, size: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .connect_lazy_with((*self.pool.connect_options()).clone())
    }

    /// Step 1: the worker's first heartbeat (its lease), its schedules, and the wakeups it
    /// waits for from the start (the first enqueue on each queue notifies).
    async fn register(&self, pool: &PgPool) -> docket_queue::Result<Vec<(Schedule, Cron)>> {
        let config = &self.config;
        maintenance::heartbeat(
            docket_queue::pooled(pool),
            &self.worker,
            config.lease_timeout,
            None,
        )
        .await?;
        let schedules = if config.cron {
            register_schedules(pool, self.worker.id, &config.schedules).await?
        } else {
            Vec::new()
        };
        if config.listen {
            docket_queue::claim::want_wakeups(docket_queue::pooled(pool), &self.worker.queues)
                .await?;
        }
        info!(
            event = events::WORKER_STARTED, worker.id = %self.worker.id, queues = ?self.worker.queues,
            kinds = ?self.registry.kinds(), "worker started"
        );
        Ok(schedules)
    }

    /// Step 2: the completer, and the channel the executors send outcomes on. It may hold
    /// one batch before executors feel backpressure: jobs stay `processing` until their
    /// outcome is written, so a deeper buffer would only let the producer claim ahead of a
    /// completer that is behind.
    fn spawn_completer(
        &self,
        parts: &Parts,
    ) -> (
        tokio::task::JoinHandle<()>,
        mpsc::Sender<crate::executor::Finished>,
    ) {
        let config = &self.config;
        let (completer_tx, completer_rx) = mpsc::channel(config.completer_batch);
        let completer = tokio::spawn(
            Completer {
                pool: self.pool.clone(),
                worker_id: self.worker.id,
                batch: config.completer_batch,
                flush_interval: config.completer_flush_interval,
                bounded: parts.completer_bounded.clone(),
                flush_limit: config.shutdown_timeout,
            }
            .run(completer_rx),
        );
        (completer, completer_tx)
    }

    /// Step 3: a producer per queue, sharing the executor, the global slots and the queue
    /// controls, each with the wakeup its queue's NOTIFY rings. The producers and job tasks
    /// hold the executor's only references: once they are all done, the completer's channel
    /// closes.
    fn producers(
        &self,
        parts: &Parts,
        completer: mpsc::Sender<crate::executor::Finished>,
    ) -> (Producers, HashMap<String, Arc<Notify>>) {
        let config = &self.config;
        let executor = Arc::new(Executor {
            registry: self.registry.clone(),
            hard_stop: parts.hard_stop.clone(),
            completer,
            holdings: parts.holdings.clone(),
            jobs: parts.jobs.clone(),
            lease: parts.lease.clone(),
            worker_id: self.worker.id,
        });
        let total: usize = config.queues.iter().map(|q| q.concurrency).sum();
        let global = Arc::new(Semaphore::new(config.global_concurrency.unwrap_or(total)));
        let kinds: Arc<[String]> = self.registry.kinds().into();
        let paused = Arc::new(PausedQueues::default());
        let grouped = Arc::new(GroupedQueues::default());
        let mut wakes = HashMap::new();
        let mut ready = Vec::with_capacity(config.queues.len());
        for queue in &config.queues {
            let wake = Arc::new(Notify::new());
            wakes.insert(queue.name.clone(), wake.clone());
            ready.push(Producer {
                pool: self.pool.clone(),
                queue: queue.name.as_str().into(),
                kinds: kinds.clone(),
                worker_id: self.worker.id,
                claim_batch: config.claim_batch,
                poll_interval: config.poll_interval,
                slots: QueueSlots {
                    concurrency: queue.concurrency,
                    queue: Arc::new(Semaphore::new(queue.concurrency)),
                    global: global.clone(),
                },
                wake,
                executor: executor.clone(),
                lease: parts.lease.clone(),
                paused: paused.clone(),
                grouped: grouped.clone(),
                group_cursor: GroupCursor::default(),
                claim_cursor: ClaimCursor::default(),
                tokens: 0,
                rate: queue.rate_limit().map(Arc::new),
                prefetch: queue.prefetch,
                pace: Arc::default(),
                shown_ahead: None,
                draining: None,
                prefetched: VecDeque::new(),
            });
        }
        let producers = Producers {
            ready,
            paused,
            grouped,
        };
        (producers, wakes)
    }

    /// Step 4: the periodic services, each on the maintenance pool with its interval.
    /// Returns the reconciler, which shutdown runs once more.
    fn spawn_services(
        &self,
        parts: &Parts,
        pool: &PgPool,
        watcher: ControlWatcher,
        schedules: Vec<(Schedule, Cron)>,
    ) -> Arc<Reconciler> {
        let config = &self.config;
        let mut spawner = Spawner {
            tracker: &parts.services,
            stop: &parts.stop_services,
        };
        spawner.periodic(
            Heartbeat {
                pool: pool.clone(),
                lease: parts.lease.clone(),
                worker: self.worker.clone(),
                holdings: parts.holdings.clone(),
                interval: config.heartbeat_interval,
                lease_timeout: config.lease_timeout,
            },
            config.heartbeat_interval,
        );
        let reconciler = Arc::new(Reconciler {
            pool: pool.clone(),
            worker_id: self.worker.id,
            holdings: parts.holdings.clone(),
        });
        spawner.periodic(reconciler.clone(), config.heartbeat_interval);
        spawner.periodic(watcher, config.poll_interval);
        let batch = config.maintenance_batch;
        spawner.periodic(
            Rescuer {
                pool: pool.clone(),
                batch,
            },
            config.rescuer_interval,
        );
        spawner.periodic(
            Expirer {
                pool: pool.clone(),
                batch,
            },
            config.poll_interval,
        );
        spawner.periodic(
            Parker {
                pool: pool.clone(),
                park_after: config.park_after,
                batch,
            },
            config.parker_interval,
        );
        if !schedules.is_empty() {
            spawner.periodic(Scheduler::new(pool.clone(), schedules), SCHEDULER_INTERVAL);
        }
        spawner.periodic(
            BatchTracker {
                pool: pool.clone(),
                batch,
                progress_logged: std::sync::Mutex::new(None),
            },
            BATCH_TRACKER_INTERVAL,
        );
        spawner.periodic(
            Pruner {
                pool: pool.clone(),
                retention: [
                    (JobState::Completed, config.completed_retention),
                    (JobState::Cancelled, config.cancelled_retention),
                    (JobState::DeadLetter, config.dead_letter_retention),
                ],
                batch,
            },
            config.pruner_interval,
        );
        reconciler
    }
}

/// What the wiring steps share and shutdown uses: the lease and what is held under it,
/// the stop signals of shutdown's steps, and the task trackers it waits on.
struct Parts {
    holdings: Arc<Holdings>,
    lease: Arc<Lease>,
    /// Stops running jobs (handed back) at the shutdown deadline.
    hard_stop: CancellationToken,
    stop_claiming: CancellationToken,
    stop_services: CancellationToken,
    /// Bounds the completer's writes from the moment the jobs are done.
    completer_bounded: CancellationToken,
    services: TaskTracker,
    producers: TaskTracker,
    jobs: TaskTracker,
}

impl Parts {
    /// The lease counts from `registered_at`, the first heartbeat's send.
    fn new(registered_at: Instant, config: &RuntimeConfig) -> Parts {
        Parts {
            holdings: Arc::new(Holdings::default()),
            lease: Arc::new(Lease::new(registered_at, config.lease_timeout)),
            hard_stop: CancellationToken::new(),
            stop_claiming: CancellationToken::new(),
            stop_services: CancellationToken::new(),
            completer_bounded: CancellationToken::new(),
            services: TaskTracker::new(),
            producers: TaskTracker::new(),
            jobs: TaskTracker::new(),
        }
    }
}

/// The producers, built but not started, and the queue controls they read.
struct Producers {
    ready: Vec<Producer>,
    paused: Arc<PausedQueues>,
    grouped: Arc<GroupedQueues>,
}

/// How often finished batches are looked for: a batch's callback follows its last job by
/// at most this much. One probe of `batches_open` (and of `jobs_batch_live` per open
/// batch) a quarter second costs little; a longer wait showed in short batches' figures.
const BATCH_TRACKER_INTERVAL: Duration = Duration::from_millis(250);

/// Registers the schedules (their definitions; pause and last tick stay as stored) and
/// records that this worker declares them, and returns them parsed. Another live process
/// that declares a name differently is said out loud, both definitions named (this
/// process's is registered: the last to start wins, but not silently). `validate` has
/// parsed each already, so a parse failure here is a bug.
async fn register_schedules(
    pool: &PgPool,
    worker_id: uuid::Uuid,
    schedules: &[Schedule],
) -> docket_queue::Result<Vec<(Schedule, Cron)>> {
    let mut parsed = Vec::with_capacity(schedules.len());
    for schedule in schedules {
        let cron = Cron::of(schedule).map_err(docket_queue::Error::InvalidArgument)?;
        for other in
            docket_queue::cron::declare(docket_queue::pooled(pool), worker_id, schedule).await?
        {
            warn!(
                event = events::CRON_CONFLICT, schedule = %schedule.name,
                this = %schedule.summary(), other = %other.def.summary(),
                other.worker_id = %other.worker_id,
                "schedule {:?} is declared differently by another live process (worker {} on {}, pid {}): \
                 there {}; here {}. This process's definition is registered now; make the two agree",
                schedule.name, other.worker_id, other.host, other.pid,
                other.def.summary(), schedule.summary()
            );
        }
        docket_queue::cron::register(
            docket_queue::pooled(pool),
            schedule,
            cron.next_after(chrono::Utc::now()),
        )
        .await?;
        parsed.push((schedule.clone(), cron));
    }
    Ok(parsed)
}

/// [`register_schedules`] for the scheduler's tests (by a worker of no process).
#[cfg(test)]
pub(crate) async fn register_for_tests(
    pool: &PgPool,
    schedules: &[Schedule],
) -> Vec<(Schedule, Cron)> {
    register_schedules(pool, uuid::Uuid::now_v7(), schedules)
        .await
        .expect("register")
}

/// Spawns periodic services onto one tracker with one stop token: adding a service is
/// one call.
struct Spawner<'a> {
    tracker: &'a TaskTracker,
    stop: &'a CancellationToken,
}

impl Spawner<'_> {
    fn periodic<S: Service>(&mut self, service: S, interval: Duration) {
        self.tracker
            .spawn(run_periodic(service, interval, self.stop.clone()));
    }
}

/// A running worker: what its shutdown needs.
struct Started {
    pool: PgPool,
    maintenance_pool: PgPool,
    worker_id: Uuid,
    shutdown_timeout: Duration,
    parts: Parts,
    completer: tokio::task::JoinHandle<()>,
    reconciler: Arc<Reconciler>,
}

impl Started {
    async fn shutdown(mut self) {
        info!(event = events::SHUTDOWN_STARTED, worker.id = %self.worker_id, running = self.parts.holdings.len(), "shutting down: claiming stopped");
        self.stop_claiming().await;
        self.finish_or_stop_jobs().await;
        self.flush_outcomes().await;
        self.hand_back_leftovers().await;
        self.stop_services().await;
        self.deregister().await;
        // Connections cut off mid-statement are closed, not returned; never wait on them.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.maintenance_pool.close()).await;
        info!(event = events::SHUTDOWN_COMPLETED, worker.id = %self.worker_id, "worker stopped");
    }

    /// Step 1: producers stop; a claim in flight is cut off (step 4 hands back what it took).
    async fn stop_claiming(&self) {
        self.parts.stop_claiming.cancel();
        self.parts.producers.close();
        self.parts.producers.wait().await;
    }

    /// Steps 2 and 3: running jobs get the shutdown timeout; the rest are stopped and handed back.
    async fn finish_or_stop_jobs(&self) {
        self.parts.jobs.close();
        if tokio::time::timeout(self.shutdown_timeout, self.parts.jobs.wait())
            .await
            .is_ok()
        {
            info!(
                event = events::SHUTDOWN_DRAINED,
                "every running job finished"
            );
            return;
        }
        let left = self.parts.holdings.len();
        // From here on, the completer's writes are bounded; the hand-backs of the jobs
        // stopped now still get the whole flush limit.
        self.parts.completer_bounded.cancel();
        self.parts.hard_stop.cancel();
        self.parts.jobs.wait().await;
        warn!(
            event = events::SHUTDOWN_RELEASED,
            jobs = left,
            timeout_s = self.shutdown_timeout.as_secs_f64(),
            "jobs still running at the shutdown timeout were stopped and handed back"
        );
    }

    /// Step 4: every outcome is written (the executors are gone, so the channel closes),
    /// trying for at most the flush limit.
    async fn flush_outcomes(&mut self) {
        self.parts.completer_bounded.cancel();
        if (&mut self.completer).await.is_ok() {
            info!(event = events::SHUTDOWN_FLUSHED, "outcomes written");
        }
    }

    /// Step 5: whatever the database still says this worker holds is handed back: jobs of a
    /// claim cut off in step 1, outcomes the completer gave up on.
    async fn hand_back_leftovers(&self) {
        match tokio::time::timeout(self.shutdown_timeout, self.reconciler.reconcile(None)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(count)) => info!(
                event = events::JOB_HANDED_BACK,
                jobs = count,
                "jobs held but not running were handed back"
            ),
            Ok(Err(err)) => warn!(
                event = events::WORKER_ERROR, error.message = %err,
                "could not hand back what this worker still holds; the rescuer frees it"
            ),
            Err(_) => warn!(
                event = events::WORKER_ERROR,
                "handing back what this worker still holds timed out; the rescuer frees it"
            ),
        }
    }

    /// Step 6: the services stop.
    async fn stop_services(&self) {
        self.parts.stop_services.cancel();
        self.parts.services.close();
        self.parts.services.wait().await;
    }

    /// Step 7: the registration goes, on a connection of its own: the maintenance pool's may
    /// all be stuck behind statements that shutdown cut short.
    async fn deregister(&self) {
        let deregister = async {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(
                &self.pool.connect_options(),
            )
            .await?;
            maintenance::deregister(docket_queue::pooled_conn(&mut conn), self.worker_id).await?;
            sqlx::Connection::close(conn).await?;
            Ok::<(), docket_queue::Error>(())
        };
        match tokio::time::timeout(self.shutdown_timeout, deregister).await {
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
