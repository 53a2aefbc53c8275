//! Enqueue: one job or many, typed or raw, on any executor (so inside the caller's
//! transaction). The logic lives once, in the `docket.enqueue` / `docket.enqueue_many` SQL
//! functions; this module validates and hands over.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use crate::db;
use crate::error::{Error, Result};
use crate::job::{check_text, check_time, JobId, Name};
use crate::telemetry::{event, metric};
use crate::trace::{self, TraceContext};

/// The queue a job runs on when none is given.
pub const DEFAULT_QUEUE: &str = "default";

/// The queue of campaign batches and admin emails (the mail crate's kinds).
pub const MAIL_QUEUE: &str = "mail";

/// The queue of recovery emails: their own, so a campaign never stands in their way.
pub const RECOVERY_QUEUE: &str = "recovery";

/// The queues a worker serves unless told otherwise: [`DEFAULT_QUEUE`] and the queues of
/// Docket's own mail kinds, so that a job enqueued by a built-in kind is never parked for
/// want of a worker that serves its queue (a worker claims only the kinds it has handlers
/// for, so serving a queue costs nothing when none of its kinds are registered).
pub const BUILT_IN_QUEUES: [&str; 3] = [DEFAULT_QUEUE, MAIL_QUEUE, RECOVERY_QUEUE];

/// The longest unique key, in characters. The database enforces it too
/// (`jobs_unique_key_length`): 256 characters are at most 1,024 bytes of UTF-8, well within
/// what the unique index can hold (about 2.7 kB).
pub const UNIQUE_KEY_MAX_CHARS: usize = 256;

/// The longest group key, in characters (`jobs_group_key_length` in the database).
pub const GROUP_KEY_MAX_CHARS: usize = 256;

/// Whether a NUL character hides anywhere in a JSON value, keys included.
fn json_has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(json_has_nul),
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains('\0') || json_has_nul(value)),
        _ => false,
    }
}

/// How many attempts a job gets when none is given.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 25;

/// A typed job: a serde payload with a kind name that selects its handler, and the options
/// every job of the kind is enqueued with unless the enqueue says otherwise (River's
/// `InsertOpts`, Oban's worker options), so that a caller never repeats `.queue("mail")`.
///
/// ```
/// # use serde::Serialize;
/// #[derive(Serialize)]
/// struct SendWelcome { user_id: i64 }
///
/// impl docket_queue::JobArgs for SendWelcome {
///     const KIND: &'static str = "send_welcome";
///     const QUEUE: &'static str = "mail";
///     const MAX_ATTEMPTS: i32 = 5;
///
///     // One live welcome per user: a second enqueue finds the first.
///     fn unique_key(&self) -> Option<String> {
///         Some(format!("welcome:{}", self.user_id))
///     }
/// }
///
/// let job = docket_queue::NewJob::typed(&SendWelcome { user_id: 7 }).unwrap();
/// assert_eq!((job.kind.as_str(), job.queue.as_str()), ("send_welcome", "mail"));
/// assert_eq!(job.unique_key.as_deref(), Some("welcome:7"));
/// let urgent = docket_queue::NewJob::typed(&SendWelcome { user_id: 8 }).unwrap().priority(-5);
/// assert_eq!((urgent.priority, urgent.max_attempts), (-5, 5));
/// ```
pub trait JobArgs: Serialize {
    /// The kind name, stored with the job.
    const KIND: &'static str;
    /// The queue its jobs run on. Default [`DEFAULT_QUEUE`].
    const QUEUE: &'static str = DEFAULT_QUEUE;
    /// Their priority (lower runs first). Default 0.
    const PRIORITY: i16 = 0;
    /// Attempts before a job is dead-lettered. Default [`DEFAULT_MAX_ATTEMPTS`].
    const MAX_ATTEMPTS: i32 = DEFAULT_MAX_ATTEMPTS;
    /// How long one attempt may run; `None`: the worker's default for a kind. The worker
    /// applies it when the kind's handler is registered.
    const TIMEOUT: Option<std::time::Duration> = None;

    /// The job's unique key, derived from its arguments: at most one live job per key (a
    /// second enqueue finds the first; see [`enqueue_or_find`]). Default none.
    fn unique_key(&self) -> Option<String> {
        None
    }
}

/// A job to enqueue, with its options. Build it with [`NewJob::new`] or [`NewJob::typed`]
/// and the setters.
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    /// The kind, which names the handler that runs it (1 to 127 characters).
    pub kind: String,
    /// The handler's input.
    pub payload: serde_json::Value,
    /// The queue to run on. Default [`DEFAULT_QUEUE`].
    pub queue: String,
    /// Lower runs first. Default 0.
    pub priority: i16,
    /// Not before this time. Default: now.
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts before the job is dead-lettered. Default [`DEFAULT_MAX_ATTEMPTS`].
    pub max_attempts: i32,
    /// At most one live job per key: a duplicate enqueue returns the live job's id.
    pub unique_key: Option<String>,
    /// Dead-lettered as `expired` instead of started after this time.
    pub expires_at: Option<DateTime<Utc>>,
    /// Its fair-share group within the queue (a tenant, a customer; 1 to 256 characters):
    /// the claim shares a queue's slots between the groups with ready work. Default none.
    pub group_key: Option<String>,
    /// The caller's own id for the job (a UUID v7, [`JobId::new`]), so that the caller can
    /// record it elsewhere in the same transaction. Default: a fresh one. With a unique
    /// key that already has a live job, the live job's id is returned instead.
    pub id: Option<JobId>,
    /// The trace context the enqueue continues (an incoming request's `traceparent`).
    /// Default: the caller's current span. See [`crate::trace`].
    pub trace_parent: Option<TraceContext>,
}

impl NewJob {
    /// A raw job: a kind and a JSON payload.
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        NewJob {
            kind: kind.into(),
            payload,
            queue: DEFAULT_QUEUE.to_owned(),
            priority: 0,
            run_at: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            unique_key: None,
            expires_at: None,
            group_key: None,
            id: None,
            trace_parent: None,
        }
    }

    /// A typed job: its kind from [`JobArgs::KIND`], its payload serialized, its queue,
    /// priority, attempts and unique key the kind's ([`JobArgs`]); the setters override them.
    ///
    /// # Errors
    ///
    /// [`Error::Payload`] when the arguments do not serialize to JSON.
    pub fn typed<A: JobArgs>(args: &A) -> Result<Self> {
        let payload = serde_json::to_value(args).map_err(|source| Error::Payload {
            kind: A::KIND.to_owned(),
            source,
        })?;
        Ok(NewJob {
            queue: A::QUEUE.to_owned(),
            priority: A::PRIORITY,
            max_attempts: A::MAX_ATTEMPTS,
            unique_key: args.unique_key(),
            ..NewJob::new(A::KIND, payload)
        })
    }

    /// Sets the queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Sets the priority (lower runs first).
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    /// Schedules the job for later.
    pub fn run_at(mut self, run_at: DateTime<Utc>) -> Self {
        self.run_at = Some(run_at);
        self
    }

    /// Sets how many attempts the job gets.
    pub fn max_attempts(mut self, max_attempts: i32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Makes the job unique among live jobs by this key.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Puts the job in a fair-share group of its queue (a tenant, a customer).
    pub fn group(mut self, key: impl Into<String>) -> Self {
        self.group_key = Some(key.into());
        self
    }

    /// Continues the trace of `parent` (an incoming request's `traceparent`) instead of the
    /// caller's current span.
    pub fn trace_parent(mut self, parent: TraceContext) -> Self {
        self.trace_parent = Some(parent);
        self
    }

    /// Sets the time after which the job is dead-lettered rather than started.
    pub fn expires_at(mut self, expires_at: DateTime<Utc>) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// Checks the rules the database also enforces, to give a clear message first: the
    /// lengths of kind, queue and unique key, no NUL character in them or anywhere in the
    /// payload (PostgreSQL's `text` and `jsonb` cannot store one), `max_attempts >= 1`,
    /// `run_at` and `expires_at` within the years [`crate::job::TIME_YEAR_MIN`] to
    /// [`crate::job::TIME_YEAR_MAX`] ([`crate::job::check_time`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJob`] naming the field and the broken rule.
    pub fn validate(&self) -> Result<()> {
        let rule = |ok: bool, message: &str| {
            if ok {
                Ok(())
            } else {
                Err(Error::InvalidJob(message.to_owned()))
            }
        };
        Name::check("kind", &self.kind).map_err(Error::InvalidJob)?;
        Name::check("queue", &self.queue).map_err(Error::InvalidJob)?;
        rule(self.max_attempts >= 1, "max_attempts must be at least 1")?;
        rule(
            self.unique_key.as_deref() != Some(""),
            "unique_key must not be empty",
        )?;
        rule(
            self.unique_key
                .as_ref()
                .is_none_or(|key| key.chars().count() <= UNIQUE_KEY_MAX_CHARS),
            "unique_key must be at most 256 characters",
        )?;
        rule(
            self.group_key
                .as_ref()
                .is_none_or(|key| (1..=GROUP_KEY_MAX_CHARS).contains(&key.chars().count())),
            "group_key must be 1 to 256 characters",
        )?;
        for (field, value) in [
            ("unique_key", self.unique_key.as_ref()),
            ("group_key", self.group_key.as_ref()),
        ] {
            if let Some(value) = value {
                check_text(field, value).map_err(Error::InvalidJob)?;
            }
        }
        for (field, at) in [("run_at", self.run_at), ("expires_at", self.expires_at)] {
            if let Some(at) = at {
                check_time(field, at).map_err(Error::InvalidJob)?;
            }
        }
        rule(
            !json_has_nul(&self.payload),
            "payload must not contain a NUL character (\\u0000), which PostgreSQL's jsonb cannot store",
        )
    }
}

/// Enqueues one job and returns its id. With a unique key that already has a live job,
/// returns that job's id and inserts nothing. Inside a transaction, the job exists only
/// if the transaction commits; workers are woken at commit.
///
/// # Errors
///
/// [`Error::InvalidJob`] for a job that breaks a rule (nothing is written),
/// [`Error::Database`] when the database fails.
pub async fn enqueue(exec: impl PgExecutor<'_>, job: &NewJob) -> Result<JobId> {
    if job.id.is_some() {
        // Only the bulk statement takes the caller's id.
        let ids = enqueue_many_in(exec, std::slice::from_ref(job), None).await?;
        return ids
            .into_iter()
            .next()
            .ok_or_else(|| Error::InvalidJob("the job was not enqueued".to_owned()));
    }
    job.validate()?;
    let span = enqueue_span(&job.queue, &job.kind, job.trace_parent.as_ref());
    let context = stored_context(&span, job.trace_parent.as_ref());
    let params = db::EnqueueParams {
        kind: &job.kind,
        payload: &job.payload,
        queue: &job.queue,
        run_at: job.run_at,
        priority: i32::from(job.priority),
        max_attempts: job.max_attempts,
        unique_key: job.unique_key.as_deref(),
        expires_at: job.expires_at,
        group_key: job.group_key.as_deref(),
        traceparent: context.as_ref().map(|c| c.traceparent.as_str()),
        tracestate: context.as_ref().and_then(|c| c.tracestate.as_deref()),
    };
    let id = {
        use tracing::Instrument as _;
        db::job_enqueue(exec, &params)
            .instrument(span.clone())
            .await?
    };
    span.record("messaging.message.id", tracing::field::display(id));
    record_enqueued(&job.queue, &job.kind, 1);
    tracing::debug!(
        event = event::JOB_ENQUEUED, job.id = %id, job.kind = %job.kind, job.queue = %job.queue,
        "job enqueued (visible once the transaction commits)"
    );
    Ok(id)
}

/// What [`enqueue_or_find`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's id: the new job's, or the live job's that holds the unique key.
    pub id: JobId,
    /// `true` when a live job with the unique key was found and nothing was inserted.
    pub existing: bool,
}

/// Enqueues one job as [`enqueue`] does, and says whether it found a live job with the
/// job's unique key instead of inserting one (River's `UniqueSkippedAsDuplicate`).
///
/// # Errors
///
/// As [`enqueue`].
pub async fn enqueue_or_find(exec: impl PgExecutor<'_>, job: &NewJob) -> Result<Enqueued> {
    // The job carries its own id, so the one returned tells which job holds the key.
    let id = job.id.unwrap_or_default();
    let job = NewJob {
        id: Some(id),
        ..job.clone()
    };
    let found = enqueue(exec, &job).await?;
    Ok(Enqueued {
        id: found,
        existing: found != id,
    })
}

/// The enqueue's span (OpenTelemetry messaging conventions: a `send` to the queue), a child
/// of `parent` when given, else of the caller's current span.
fn enqueue_span(queue: &str, kind: &str, parent: Option<&TraceContext>) -> tracing::Span {
    let span = tracing::info_span!(
        target: trace::TARGET,
        "docket.enqueue",
        otel.name = %format_args!("send {queue}"),
        otel.kind = "producer",
        messaging.system = "docket",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = %queue,
        messaging.message.id = tracing::field::Empty,
        messaging.batch.message_count = tracing::field::Empty,
        docket.job.kind = %kind,
    );
    if let Some(parent) = parent {
        trace::set_parent(&span, parent);
    }
    span
}

/// What is stored with the job: the enqueue span's context when OpenTelemetry is on; else
/// the explicit parent passed on as is (so a worker that traces still joins the caller's
/// trace); else nothing.
fn stored_context(span: &tracing::Span, parent: Option<&TraceContext>) -> Option<TraceContext> {
    TraceContext::of_span(span).or_else(|| parent.cloned())
}

/// Counts enqueued jobs. Queue and kind names come from callers: the first
/// [`metric::LABEL_VALUES`] (queue, kind) pairs are labelled as they are, the rest as
/// (`other`, `other`), so the series stay bounded by pairs, not by their product.
fn record_enqueued(queue: &str, kind: &str, count: u64) {
    static PAIRS: metric::BoundedLabel = metric::BoundedLabel::new();
    let (queue, kind) = if PAIRS.value(&format!("{queue}\0{kind}")) == "other" {
        ("other", "other")
    } else {
        (queue, kind)
    };
    metrics::counter!(metric::JOBS_ENQUEUED, "queue" => queue.to_owned(), "kind" => kind.to_owned())
        .increment(count);
}

/// Enqueues many jobs in one round trip and returns their ids in input order. Unique
/// keys behave as in [`enqueue`], also between jobs of the same call (the first wins).
///
/// # Errors
///
/// [`Error::InvalidJob`] naming the first job that breaks a rule (nothing is written),
/// [`Error::Database`] when the database fails.
pub async fn enqueue_many(exec: impl PgExecutor<'_>, jobs: &[NewJob]) -> Result<Vec<JobId>> {
    enqueue_many_in(exec, jobs, None).await
}

/// [`enqueue_many`], every job joining `batch` (see [`crate::batch`]).
pub(crate) async fn enqueue_many_in(
    exec: impl PgExecutor<'_>,
    jobs: &[NewJob],
    batch: Option<uuid::Uuid>,
) -> Result<Vec<JobId>> {
    let mut columns = db::EnqueueColumns {
        batch_id: batch,
        ..db::EnqueueColumns::default()
    };
    // One span for the call, in the first job's queue (bulk calls are one operation).
    let first = jobs.first();
    let span = first.map_or_else(tracing::Span::none, |job| {
        enqueue_span(&job.queue, &job.kind, job.trace_parent.as_ref())
    });
    let call_context = TraceContext::of_span(&span);
    columns.ids.reserve(jobs.len());
    for (index, job) in jobs.iter().enumerate() {
        job.validate()
            .map_err(|err| Error::InvalidJob(format!("job {index}: {err}")))?;
        columns
            .ids
            .push(job.id.map_or_else(uuid::Uuid::now_v7, |id| id.0));
        columns.kinds.push(&job.kind);
        columns.payloads.push(sqlx::types::Json(&job.payload));
        columns.queues.push(&job.queue);
        columns.run_ats.push(job.run_at);
        columns.priorities.push(i32::from(job.priority));
        columns.max_attempts.push(job.max_attempts);
        columns.unique_keys.push(job.unique_key.as_deref());
        columns.expires_ats.push(job.expires_at);
        columns.group_keys.push(job.group_key.as_deref());
        // The call's span when there is one; else the job's own parent, passed on as is.
        if let Some(context) = call_context.as_ref().or(job.trace_parent.as_ref()) {
            columns.traceparents.resize(index, None);
            columns.tracestates.resize(index, None);
            columns.traceparents.push(Some(&context.traceparent));
            columns.tracestates.push(context.tracestate.as_deref());
        }
    }
    if !columns.traceparents.is_empty() {
        columns.traceparents.resize(jobs.len(), None);
        columns.tracestates.resize(jobs.len(), None);
    }
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let ids = {
        use tracing::Instrument as _;
        db::job_enqueue_many(exec, &columns)
            .instrument(span.clone())
            .await?
    };
    match ids.as_slice() {
        [id] => span.record("messaging.message.id", tracing::field::display(id)),
        _ => span.record("messaging.batch.message_count", jobs.len()),
    };
    // One count per queue and kind, not per job: bulk calls carry thousands.
    let mut counts: std::collections::HashMap<(&str, &str), u64> = std::collections::HashMap::new();
    for job in jobs {
        *counts.entry((&job.queue, &job.kind)).or_default() += 1;
    }
    for ((queue, kind), count) in counts {
        record_enqueued(queue, kind, count);
        tracing::debug!(event = event::JOB_ENQUEUED, job.kind = %kind, job.queue = %queue, count, "jobs enqueued in bulk");
    }
    Ok(ids)
}
