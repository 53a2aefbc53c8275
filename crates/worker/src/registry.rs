//! Kind → handler. Handlers are registered typed (a serde payload) or raw (JSON); the
//! registry decodes the payload, and a payload that does not decode is reported as
//! malformed instead of being run.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use docket_queue::{Backoff, JobArgs};
use serde::de::DeserializeOwned;

use crate::handler::{JobContext, JobError};

/// A running handler's future.
pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>;

/// The default time one attempt may run before it is cancelled and retried.
pub const JOB_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30 * 60);

/// Per-kind settings.
#[derive(Clone, Debug)]
pub struct KindOptions {
    /// How long one attempt may run before it is cancelled and retried. Default
    /// [`JOB_TIMEOUT_DEFAULT`]; a job can extend it with [`JobContext::extend_timeout`].
    pub timeout: Duration,
    /// Delays between attempts. Default exponential (1 s base, 1 h cap, ±10%).
    pub backoff: Backoff,
}

impl Default for KindOptions {
    fn default() -> Self {
        KindOptions {
            timeout: JOB_TIMEOUT_DEFAULT,
            backoff: Backoff::default(),
        }
    }
}

type Decoder = dyn Fn(serde_json::Value, JobContext) -> Result<HandlerFuture, String> + Send + Sync;

/// One registered kind.
pub(crate) struct Entry {
    /// Decodes the payload and starts the handler, or says why the payload is malformed.
    pub(crate) start: Box<Decoder>,
    pub(crate) options: KindOptions,
}

/// The kinds a worker runs. A worker claims only these kinds, so a job of a kind no
/// running worker knows stays ready (and visible in the snapshot) instead of being burned.
#[derive(Default)]
pub struct Registry {
    entries: HashMap<String, Arc<Entry>>,
    /// Kinds registered more than once: [`crate::Runtime::start`] refuses them rather than
    /// let the last registration silently replace the first.
    registered_twice: Vec<String>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers a typed handler for `A::KIND`: the payload is deserialized into `A`, and
    /// the kind's timeout is [`JobArgs::TIMEOUT`] when it gives one. Returns the kind's
    /// options to adjust. A kind registered twice makes [`crate::Runtime::new`] fail.
    pub fn register<A, F, Fut>(&mut self, handler: F) -> &mut KindOptions
    where
        A: JobArgs + DeserializeOwned + Send + 'static,
        F: Fn(A, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        let options = self.insert(
            A::KIND,
            Box::new(move |payload, ctx| {
                let args: A = serde_json::from_value(payload).map_err(|err| err.to_string())?;
                Ok(Box::pin(handler(args, ctx)) as HandlerFuture)
            }),
        );
        if let Some(timeout) = A::TIMEOUT {
            options.timeout = timeout;
        }
        options
    }

    /// Registers a typed handler that is handed its own clone of `state` on each run (a
    /// pool, a client; axum's `State`), so that the closure needs no clone of its own:
    ///
    /// ```
    /// # use docket_queue::JobArgs;
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Welcome { user_id: i64 }
    /// # impl JobArgs for Welcome { const KIND: &'static str = "app.welcome"; }
    /// # fn example(pool: sqlx::PgPool) {
    /// let mut registry = docket_worker::Registry::new();
    /// registry.register_with(pool, |job: Welcome, _ctx, pool: sqlx::PgPool| async move {
    ///     sqlx::query("update users set welcomed = true where id = $1")
    ///         .bind(job.user_id)
    ///         .execute(&pool)
    ///         .await?;
    ///     Ok(())
    /// });
    /// # }
    /// ```
    pub fn register_with<A, S, F, Fut>(&mut self, state: S, handler: F) -> &mut KindOptions
    where
        A: JobArgs + DeserializeOwned + Send + 'static,
        S: Clone + Send + Sync + 'static,
        F: Fn(A, JobContext, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        self.register(move |args: A, ctx| handler(args, ctx, state.clone()))
    }

    /// Registers a handler that takes the payload as raw JSON.
    pub fn register_raw<F, Fut>(&mut self, kind: &str, handler: F) -> &mut KindOptions
    where
        F: Fn(serde_json::Value, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        self.insert(
            kind,
            Box::new(move |payload, ctx| Ok(Box::pin(handler(payload, ctx)) as HandlerFuture)),
        )
    }

    fn insert(&mut self, kind: &str, start: Box<Decoder>) -> &mut KindOptions {
        if self.entries.contains_key(kind) && !self.registered_twice.iter().any(|k| k == kind) {
            self.registered_twice.push(kind.to_owned());
        }
        let entry = Arc::new(Entry {
            start,
            options: KindOptions::default(),
        });
        self.entries.insert(kind.to_owned(), entry);
        let entry = self.entries.get_mut(kind).and_then(Arc::get_mut);
        // Just inserted and not yet shared, so the Arc is unique.
        &mut entry.expect("freshly inserted entry").options
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.entries.keys().cloned().collect();
        kinds.sort();
        kinds
    }

    pub(crate) fn get(&self, kind: &str) -> Option<&Arc<Entry>> {
        self.entries.get(kind)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Kinds given more than one handler, in the order of their second registration.
    pub fn registered_twice(&self) -> &[String] {
        &self.registered_twice
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Report;

    impl JobArgs for Report {
        const KIND: &'static str = "report";
        const TIMEOUT: Option<Duration> = Some(Duration::from_secs(600));
    }

    #[tokio::test]
    async fn a_kind_registered_twice_stops_the_runtime_from_being_built() {
        let mut registry = Registry::new();
        registry.register(|_: Report, _| async { Ok(()) });
        registry.register(|_: Report, _| async { Ok(()) });
        let pool = sqlx::PgPool::connect_lazy("postgres://localhost/unused").unwrap();
        let err = crate::Runtime::new(pool, registry, crate::RuntimeConfig::default())
            .err()
            .expect("refused");
        assert!(
            err.to_string().contains("\"report\" is registered twice"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_handler_registered_with_state_gets_its_own_clone_on_each_run() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let runs = Arc::new(AtomicUsize::new(0));
        let mut registry = Registry::new();
        registry.register_with(
            runs.clone(),
            |_: Report, _, runs: Arc<AtomicUsize>| async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        );
        let entry = registry.get("report").unwrap();
        for _ in 0..2 {
            let ctx = JobContext::for_test();
            let run = (entry.start)(serde_json::json!(null), ctx).unwrap();
            run.await.unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_kinds_own_timeout_is_its_handlers() {
        let mut registry = Registry::new();
        registry.register(|_: Report, _| async { Ok(()) });
        assert_eq!(
            registry.get("report").unwrap().options.timeout,
            Duration::from_secs(600)
        );
    }
}
