//! Every SQL statement of the queue crate, one function per statement.
//!
//! Names put the table first, then the verb and a qualifier (`job_claim`,
//! `job_set_outcome_many`), so related statements sort together. Each takes any
//! `PgExecutor`, so a caller's transaction works. Statements that depend on time take
//! `now: Option<DateTime<Utc>>` and use `coalesce($n, now())`: tests fix time, production
//! passes `None`.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::job::{Job, JobId, JobState};

/// Bind a slice of optional values as a PostgreSQL array.
type Column<T> = Vec<Option<T>>;

/// The columns of one `docket.enqueue_many` call, one element per job. Borrowed from the
/// jobs, so that building a large call copies nothing.
#[derive(Default)]
pub(crate) struct EnqueueColumns<'a> {
    pub(crate) ids: Vec<Uuid>,
    pub(crate) kinds: Vec<&'a str>,
    pub(crate) payloads: Vec<Json<&'a serde_json::Value>>,
    pub(crate) queues: Vec<&'a str>,
    pub(crate) run_ats: Column<DateTime<Utc>>,
    pub(crate) priorities: Vec<i32>,
    pub(crate) max_attempts: Vec<i32>,
    pub(crate) unique_keys: Column<&'a str>,
    pub(crate) expires_ats: Column<DateTime<Utc>>,
}

pub(crate) async fn job_enqueue_many(
    exec: impl PgExecutor<'_>,
    columns: &EnqueueColumns<'_>,
) -> sqlx::Result<Vec<JobId>> {
    sqlx::query_scalar(
        r#"
        select id from docket.enqueue_many($1, $2, $3, $4, $5, $6, $7, $8, $9) order by ord
        "#,
    )
    .bind(&columns.kinds)
    .bind(&columns.payloads)
    .bind(&columns.queues)
    .bind(&columns.run_ats)
    .bind(&columns.priorities)
    .bind(&columns.max_attempts)
    .bind(&columns.unique_keys)
    .bind(&columns.expires_ats)
    .bind(&columns.ids)
    .fetch_all(exec)
    .await
}

/// One job for `docket.enqueue`.
pub(crate) struct EnqueueParams<'a> {
    pub(crate) kind: &'a str,
    pub(crate) payload: &'a serde_json::Value,
    pub(crate) queue: &'a str,
    pub(crate) run_at: Option<DateTime<Utc>>,
    pub(crate) priority: i32,
    pub(crate) max_attempts: i32,
    pub(crate) unique_key: Option<&'a str>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
}

pub(crate) async fn job_enqueue(
    exec: impl PgExecutor<'_>,
    params: &EnqueueParams<'_>,
) -> sqlx::Result<JobId> {
    sqlx::query_scalar(
        r#"
        select docket.enqueue($1, $2, $3, coalesce($4, now()), $5, $6, $7, $8)
        "#,
    )
    .bind(params.kind)
    .bind(params.payload)
    .bind(params.queue)
    .bind(params.run_at)
    .bind(params.priority)
    .bind(params.max_attempts)
    .bind(params.unique_key)
    .bind(params.expires_at)
    .fetch_one(exec)
    .await
}

/// What `job_claim` needs.
pub(crate) struct ClaimParams<'a> {
    pub(crate) queue: &'a str,
    pub(crate) kinds: Option<&'a [String]>,
    pub(crate) worker_id: Uuid,
    pub(crate) limit: i64,
    pub(crate) now: Option<DateTime<Utc>>,
}

/// Locks up to `limit` ready jobs of one queue (skipping rows other claimers hold), in
/// priority, run_at, id order, and in the same statement marks them `processing` under
/// this worker with `attempt + 1`. A locked job already past its `expires_at` goes to
/// `dead_letter` (reason `expired`) instead and is returned in that state.
///
/// The row locks last only as long as this statement's transaction: callers run it in
/// autocommit (or commit at once), never while a job runs.
pub(crate) async fn job_claim(
    exec: impl PgExecutor<'_>,
    params: &ClaimParams<'_>,
) -> sqlx::Result<Vec<Job>> {
    sqlx::query_as(
        r#"
        with locked as (
            select j.id, coalesce(j.expires_at <= coalesce($5, now()), false) as expired
            from docket.jobs j
            where j.state in ('pending', 'retrying')
              and j.queue = $1
              and j.run_at <= coalesce($5, now())
              and ($2::text[] is null or j.kind = any($2))
            order by j.priority, j.run_at, j.id
            limit $4
            for update skip locked
        )
        update docket.jobs j set
            state = case when l.expired then 'dead_letter' else 'processing' end::docket.job_state,
            attempt = case when l.expired then j.attempt else j.attempt + 1 end,
            locked_by = case when l.expired then null else $3 end,
            attempted_at = case when l.expired then j.attempted_at else coalesce($5, now()) end,
            finished_at = case when l.expired then coalesce($5, now()) end,
            dead_letter_reason = case when l.expired then 'expired' end,
            cancel_requested_at = null
        from locked l
        where j.id = l.id
        returning j.*
        "#,
    )
    .bind(params.queue)
    .bind(params.kinds)
    .bind(params.worker_id)
    .bind(params.limit)
    .bind(params.now)
    .fetch_all(exec)
    .await
}

/// The columns of one `job_set_outcome_many` call, one element per job.
#[derive(Default)]
pub(crate) struct OutcomeColumns {
    pub(crate) ids: Vec<Uuid>,
    /// The attempt the outcome is for: with the worker id, the lease token.
    pub(crate) attempts: Vec<i32>,
    /// `complete`, `retry`, `dead_letter`, `snooze` or `cancel`.
    pub(crate) outcomes: Vec<&'static str>,
    pub(crate) errors: Column<String>,
    /// Seconds until the job is ready again (`retry`, `snooze`).
    pub(crate) delays: Vec<f64>,
    /// The dead-letter reason (`dead_letter`).
    pub(crate) reasons: Column<String>,
}

/// Applies many outcomes in one statement. Fenced: a job changes only while it is still
/// `processing` under the same worker and attempt, so the outcome of a worker that lost
/// its lease (the job was rescued, perhaps re-claimed) changes nothing. Returns the jobs
/// that changed with their new state; the missing ones were fenced off.
///
/// The fence is checked under the row lock (`for update`): a rescue that commits first
/// makes the re-checked fence fail, so a late outcome never overwrites it.
pub(crate) async fn job_set_outcome_many(
    exec: impl PgExecutor<'_>,
    worker_id: Uuid,
    columns: &OutcomeColumns,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<Vec<(JobId, JobState)>> {
    sqlx::query_as(
        r#"
        with input as (
            select *
            from unnest($2::uuid[], $3::int[], $4::text[], $5::text[], $6::float8[], $7::text[])
                 as i(id, attempt, outcome, error, delay, reason)
        ), target as (
            select j.id, i.outcome, i.error, i.delay, i.reason,
                   case
                       when i.outcome = 'complete' then 'completed'
                       when i.outcome = 'cancel' then 'cancelled'
                       when i.outcome = 'dead_letter' then 'dead_letter'
                       when i.outcome = 'retry' and j.attempt >= j.max_attempts then 'dead_letter'
                       when i.outcome = 'retry' then 'retrying'
                       -- snooze: the attempt is given back; a job that never failed stays pending
                       when j.attempt > 1 then 'retrying'
                       else 'pending'
                   end::docket.job_state as new_state
            from input i
            join docket.jobs j on j.id = i.id
            where j.state = 'processing' and j.locked_by = $1 and j.attempt = i.attempt
            order by j.id
            for update of j
        )
        update docket.jobs j set
            state = t.new_state,
            attempt = case when t.outcome = 'snooze' then j.attempt - 1 else j.attempt end,
            run_at = case when t.outcome in ('retry', 'snooze')
                          then coalesce($8, now()) + make_interval(secs => t.delay)
                          else j.run_at end,
            locked_by = null,
            finished_at = case when t.new_state in ('completed', 'dead_letter', 'cancelled')
                               then coalesce($8, now()) end,
            last_error = case when t.error is not null then left(t.error, 4000) else j.last_error end,
            errors = case when t.error is not null
                          then docket.append_error(j.errors, j.attempt, coalesce($8, now()), t.error)
                          else j.errors end,
            dead_letter_reason = case
                when t.new_state <> 'dead_letter' then null
                when t.outcome = 'retry' then 'attempts_exhausted'
                else coalesce(t.reason, 'discarded') end,
            cancel_requested_at = null
        from target t
        where j.id = t.id
        returning j.id, j.state
        "#,
    )
    .bind(worker_id)
    .bind(&columns.ids)
    .bind(&columns.attempts)
    .bind(&columns.outcomes)
    .bind(&columns.errors)
    .bind(&columns.delays)
    .bind(&columns.reasons)
    .bind(now)
    .fetch_all(exec)
    .await
}

pub(crate) async fn job_get(exec: impl PgExecutor<'_>, id: JobId) -> sqlx::Result<Option<Job>> {
    sqlx::query_as("select * from docket.jobs where id = $1")
        .bind(id)
        .fetch_optional(exec)
        .await
}

/// What `job_list` filters on.
pub(crate) struct ListParams<'a> {
    pub(crate) state: Option<JobState>,
    pub(crate) queue: Option<&'a str>,
    pub(crate) kind: Option<&'a str>,
    /// Keyset cursor: only jobs with a smaller id (older) than this.
    pub(crate) before: Option<JobId>,
    pub(crate) limit: i64,
}

/// Jobs newest first (ids are UUID v7), a page at a time by keyset.
pub(crate) async fn job_list(
    exec: impl PgExecutor<'_>,
    params: &ListParams<'_>,
) -> sqlx::Result<Vec<Job>> {
    sqlx::query_as(
        r#"
        select * from docket.jobs
        where ($1::docket.job_state is null or state = $1)
          and ($2::text is null or queue = $2)
          and ($3::text is null or kind = $3)
          and ($4::uuid is null or id < $4)
        order by id desc
        limit $5
        "#,
    )
    .bind(params.state)
    .bind(params.queue)
    .bind(params.kind)
    .bind(params.before)
    .bind(params.limit)
    .fetch_all(exec)
    .await
}

/// Cancels a waiting job at once; marks a processing one so its worker stops it.
/// Returns the job as it is now, or `None` when it is not in a cancellable state.
pub(crate) async fn job_cancel(
    exec: impl PgExecutor<'_>,
    id: JobId,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<Option<Job>> {
    sqlx::query_as(
        r#"
        update docket.jobs set
            state = case when state = 'processing' then state else 'cancelled' end,
            finished_at = case when state = 'processing' then null else coalesce($2, now()) end,
            cancel_requested_at = case when state = 'processing'
                                       then coalesce(cancel_requested_at, $2, now()) end
        where id = $1 and state in ('pending', 'retrying', 'processing')
        returning *
        "#,
    )
    .bind(id)
    .bind(now)
    .fetch_optional(exec)
    .await
}

/// Puts a finished job back to `pending` with a fresh attempt budget; its error history
/// stays. Returns `None` when the job is not finished.
pub(crate) async fn job_replay(
    exec: impl PgExecutor<'_>,
    id: JobId,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<Option<Job>> {
    sqlx::query_as(
        r#"
        update docket.jobs set
            state = 'pending', attempt = 0, run_at = coalesce($2, now()), finished_at = null,
            dead_letter_reason = null, cancel_requested_at = null
        where id = $1 and state in ('completed', 'dead_letter', 'cancelled')
        returning *
        "#,
    )
    .bind(id)
    .bind(now)
    .fetch_optional(exec)
    .await
}

/// What `job_replay_dead_letters` filters on.
pub(crate) struct ReplayParams<'a> {
    pub(crate) queue: Option<&'a str>,
    pub(crate) kind: Option<&'a str>,
    pub(crate) finished_after: Option<DateTime<Utc>>,
    pub(crate) finished_before: Option<DateTime<Utc>>,
    pub(crate) limit: i64,
    pub(crate) now: Option<DateTime<Utc>>,
}

/// Replays up to `limit` dead letters matching the filter. A dead letter whose unique key
/// already has a live job is left where it is (replaying it would make a second live job),
/// and of several dead letters sharing a key only the newest is replayed.
pub(crate) async fn job_replay_dead_letters(
    exec: impl PgExecutor<'_>,
    params: &ReplayParams<'_>,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        r#"
        with candidates as (
            select distinct on (coalesce(j.unique_key, j.id::text)) j.id
            from docket.jobs j
            where j.state = 'dead_letter'
              and ($1::text is null or j.queue = $1)
              and ($2::text is null or j.kind = $2)
              and ($3::timestamptz is null or j.finished_at >= $3)
              and ($4::timestamptz is null or j.finished_at < $4)
              and (j.unique_key is null or not exists (
                  select 1 from docket.jobs live
                  where live.unique_key = j.unique_key
                    and live.state in ('pending', 'retrying', 'processing')))
            order by coalesce(j.unique_key, j.id::text), j.id desc
            limit $5
        ), locked as (
            select j.id from docket.jobs j
            where j.id in (select id from candidates) and j.state = 'dead_letter'
            for update skip locked
        )
        update docket.jobs j set
            state = 'pending', attempt = 0, run_at = coalesce($6, now()), finished_at = null,
            dead_letter_reason = null
        from locked l
        where j.id = l.id
        "#,
    )
    .bind(params.queue)
    .bind(params.kind)
    .bind(params.finished_after)
    .bind(params.finished_before)
    .bind(params.limit)
    .bind(params.now)
    .execute(exec)
    .await?;
    Ok(done.rows_affected())
}

/// One row of the snapshot: a queue and one of its live states (or `dead_letter`).
#[derive(sqlx::FromRow)]
pub(crate) struct SnapshotRow {
    pub(crate) queue: String,
    pub(crate) state: JobState,
    pub(crate) count: i64,
    pub(crate) oldest_ready_at: Option<DateTime<Utc>>,
}

/// Counts per queue and state, and the oldest ready `run_at`, from an index-only scan of
/// `jobs_snapshot` (completed and cancelled rows are not in it).
pub(crate) async fn job_count_by_queue_and_state(
    exec: impl PgExecutor<'_>,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<Vec<SnapshotRow>> {
    sqlx::query_as(
        r#"
        select queue, state, count(*) as count,
               min(run_at) filter (where state in ('pending', 'retrying')
                                     and run_at <= coalesce($1, now())) as oldest_ready_at
        from docket.jobs
        where state in ('pending', 'retrying', 'processing', 'dead_letter')
        group by queue, state
        "#,
    )
    .bind(now)
    .fetch_all(exec)
    .await
}

/// Deletes up to `limit` jobs in `state` that finished before `cutoff`, oldest first.
/// Rows locked by someone else are skipped, so pruning never waits on the hot path.
pub(crate) async fn job_delete_finished_before(
    exec: impl PgExecutor<'_>,
    state: JobState,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        r#"
        with doomed as (
            select id from docket.jobs
            where state = $1 and finished_at < $2
            order by finished_at
            limit $3
            for update skip locked
        )
        delete from docket.jobs j using doomed d where j.id = d.id
        "#,
    )
    .bind(state)
    .bind(cutoff)
    .bind(limit)
    .execute(exec)
    .await?;
    Ok(done.rows_affected())
}

/// Frees up to `limit` processing jobs whose worker's lease has lapsed: the worker has no
/// heartbeat newer than `lease_timeout`, or no row at all. Such a job goes back to
/// `retrying` (ready now), or to `dead_letter` when its attempts are spent; the lapse is
/// recorded in its error history.
///
/// Jobs whose row is locked (a completion in flight) are skipped, and the lock re-checks
/// `state = 'processing'`, so a job completed meanwhile is never turned back.
pub(crate) async fn job_rescue_lapsed(
    exec: impl PgExecutor<'_>,
    lease_timeout_secs: f64,
    limit: i64,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<Vec<Job>> {
    sqlx::query_as(
        r#"
        with lapsed as (
            select j.id from docket.jobs j
            where j.state = 'processing'
              and not exists (
                  select 1 from docket.workers w
                  where w.id = j.locked_by
                    and w.heartbeat_at > coalesce($3, now()) - make_interval(secs => $1))
            order by j.id
            limit $2
            for update skip locked
        )
        update docket.jobs j set
            state = case when j.attempt >= j.max_attempts then 'dead_letter'
                         else 'retrying' end::docket.job_state,
            run_at = coalesce($3, now()),
            locked_by = null,
            finished_at = case when j.attempt >= j.max_attempts then coalesce($3, now()) end,
            dead_letter_reason = case when j.attempt >= j.max_attempts then 'attempts_exhausted' end,
            last_error = 'worker lease lapsed',
            errors = docket.append_error(j.errors, j.attempt, coalesce($3, now()), 'worker lease lapsed'),
            cancel_requested_at = null
        from lapsed l
        where j.id = l.id
        returning j.*
        "#,
    )
    .bind(lease_timeout_secs)
    .bind(limit)
    .bind(now)
    .fetch_all(exec)
    .await
}

/// A worker process, as it announces itself.
pub(crate) struct WorkerParams<'a> {
    pub(crate) id: Uuid,
    pub(crate) host: &'a str,
    pub(crate) pid: i32,
    pub(crate) queues: &'a [String],
    pub(crate) kinds: &'a [String],
    pub(crate) version: &'a str,
    pub(crate) now: Option<DateTime<Utc>>,
}

/// Registers the worker on its first call, renews its heartbeat (and so its lease) after.
pub(crate) async fn worker_heartbeat(
    exec: impl PgExecutor<'_>,
    params: &WorkerParams<'_>,
) -> sqlx::Result<()> {
    sqlx::query(
        r#"
        insert into docket.workers (id, host, pid, queues, kinds, version, started_at, heartbeat_at)
        values ($1, $2, $3, $4, $5, $6, coalesce($7, now()), coalesce($7, now()))
        on conflict (id) do update set heartbeat_at = excluded.heartbeat_at
        "#,
    )
    .bind(params.id)
    .bind(params.host)
    .bind(params.pid)
    .bind(params.queues)
    .bind(params.kinds)
    .bind(params.version)
    .bind(params.now)
    .execute(exec)
    .await?;
    Ok(())
}

pub(crate) async fn worker_delete(exec: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<()> {
    sqlx::query("delete from docket.workers where id = $1")
        .bind(id)
        .execute(exec)
        .await?;
    Ok(())
}

/// Jobs this worker holds whose cancel an operator asked for.
pub(crate) async fn job_cancel_requested(
    exec: impl PgExecutor<'_>,
    worker_id: Uuid,
) -> sqlx::Result<Vec<JobId>> {
    sqlx::query_scalar(
        r#"
        select id from docket.jobs
        where state = 'processing' and locked_by = $1 and cancel_requested_at is not null
        "#,
    )
    .bind(worker_id)
    .fetch_all(exec)
    .await
}

/// Takes a session-level advisory lock if it is free; `false` when another session holds it.
pub(crate) async fn advisory_try_lock(exec: impl PgExecutor<'_>, key: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar("select pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(exec)
        .await
}

pub(crate) async fn advisory_unlock(exec: impl PgExecutor<'_>, key: i64) -> sqlx::Result<()> {
    sqlx::query("select pg_advisory_unlock($1)")
        .bind(key)
        .execute(exec)
        .await?;
    Ok(())
}

/// Every registered worker, freshest heartbeat first.
pub(crate) async fn worker_list(
    exec: impl PgExecutor<'_>,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<Vec<crate::workers::Worker>> {
    sqlx::query_as(
        r#"
        select id, host, pid, queues, kinds, version, started_at, heartbeat_at,
               extract(epoch from coalesce($1, now()) - heartbeat_at)::float8 as heartbeat_age_seconds
        from docket.workers
        order by heartbeat_at desc
        limit 1000
        "#,
    )
    .bind(now)
    .fetch_all(exec)
    .await
}

/// Kinds of jobs that have been ready for at least `min_age` on a queue where no live
/// worker (heartbeat within `lease_timeout_secs`) runs that kind. Reads the ready jobs
/// through `jobs_claim`; bounded by `limit` kinds.
pub(crate) async fn job_unhandled_kinds(
    exec: impl PgExecutor<'_>,
    lease_timeout_secs: f64,
    min_age_secs: f64,
    limit: i64,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(
        r#"
        with live as (
            select queues, kinds from docket.workers
            where heartbeat_at > coalesce($3, now()) - make_interval(secs => $1)
        )
        select distinct j.queue, j.kind
        from docket.jobs j
        where j.state in ('pending', 'retrying')
          and j.run_at <= coalesce($3, now()) - make_interval(secs => $2)
          and not exists (select 1 from live w where j.queue = any(w.queues) and j.kind = any(w.kinds))
        order by j.queue, j.kind
        limit $4
        "#,
    )
    .bind(lease_timeout_secs)
    .bind(min_age_secs)
    .bind(now)
    .bind(limit)
    .fetch_all(exec)
    .await
}

/// Versions of the migrations this database has applied successfully.
pub(crate) async fn migration_versions(exec: impl PgExecutor<'_>) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar("select version from _sqlx_migrations where success order by version")
        .fetch_all(exec)
        .await
}
