//! Statements on `docket.jobs`.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::Column;
use crate::job::{Job, JobId, JobState};

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

/// Discards a dead letter: `cancelled`, its reason kept as the last entry of its error
/// history. Returns the job as it is now, or `None` when it is not a dead letter.
pub(crate) async fn job_discard(
    exec: impl PgExecutor<'_>,
    id: JobId,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<Option<Job>> {
    sqlx::query_as(
        r#"
        update docket.jobs set
            state = 'cancelled',
            finished_at = coalesce($2, now()),
            errors = docket.append_error(errors, attempt, coalesce($2, now()),
                                         'discarded by an operator (' || dead_letter_reason || ')'),
            dead_letter_reason = null
        where id = $1 and state = 'dead_letter'
        returning *
        "#,
    )
    .bind(id)
    .bind(now)
    .fetch_optional(exec)
    .await
}

/// Completions and dead letters per minute in `[since, until)`, from `jobs_finished`.
pub(crate) async fn job_finished_per_minute(
    exec: impl PgExecutor<'_>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> sqlx::Result<Vec<crate::admin::FinishedInMinute>> {
    sqlx::query_as(
        r#"
        select date_trunc('minute', finished_at) as minute,
               count(*) filter (where state = 'completed') as completed,
               count(*) filter (where state = 'dead_letter') as dead_lettered
        from docket.jobs
        where state in ('completed', 'dead_letter')
          and finished_at >= $1 and finished_at < $2
        group by 1
        order by 1
        "#,
    )
    .bind(since)
    .bind(until)
    .fetch_all(exec)
    .await
}

/// The second half of both claims: the rows of `locked` become `processing` under the
/// worker ($3) and the claim's token ($6), at $5 (or the database's clock).
macro_rules! mark_claimed {
    () => {
        r#"
        update docket.jobs j set
            state = 'processing',
            attempt = j.attempt + 1,
            locked_by = $3,
            lease_token = $6,
            attempted_at = coalesce($5, now()),
            cancel_requested_at = null
        from locked l
        where j.id = l.id
        returning j.*
        "#
    };
}

/// A job's place in its queue's claim order: (priority, run_at, id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClaimPosition {
    pub(crate) priority: i16,
    pub(crate) run_at: DateTime<Utc>,
    pub(crate) id: Uuid,
}

/// What `job_claim` needs.
pub(crate) struct ClaimParams<'a> {
    pub(crate) queue: &'a str,
    pub(crate) kinds: Option<&'a [String]>,
    pub(crate) worker_id: Uuid,
    /// Fresh for this claim: the fencing token every claimed job carries.
    pub(crate) token: Uuid,
    pub(crate) limit: i64,
    pub(crate) now: Option<DateTime<Utc>>,
}

/// Locks up to `limit` ready jobs without a group of one queue (skipping rows other claimers hold), in
/// priority, run_at, id order, and in the same statement marks them `processing` under
/// this worker and this claim's token, with `attempt + 1`. A claim that comes back short
/// raises the queue's wake-up flag. A job past its `expires_at` is
/// passed over (it does not count against the limit; the expiry sweep dead-letters it).
///
/// The row locks last only as long as this statement's transaction: callers run it in
/// autocommit (or commit at once), never while a job runs.
///
/// With `after`, only jobs after that position in the order: the index scan starts there,
/// so the entries before it (jobs claimed earlier, dead but perhaps not yet removable) are
/// not stepped over.
pub(crate) async fn job_claim(
    exec: impl PgExecutor<'_>,
    params: &ClaimParams<'_>,
    after: Option<&ClaimPosition>,
) -> sqlx::Result<Vec<Job>> {
    sqlx::query_as(concat!(
        r#"
        with locked as (
            select j.id
            from docket.jobs j
            where j.state in ('pending', 'retrying') and j.parked_at is null and j.group_key is null
              and j.queue = $1
              and (j.priority, j.run_at, j.id)
                  > (coalesce($7::smallint, (-32768)::smallint), coalesce($8, '-infinity'),
                     coalesce($9, '00000000-0000-0000-0000-000000000000'))
              and j.run_at <= coalesce($5, now())
              and ($2::text[] is null or j.kind = any($2))
              and (j.expires_at is null or j.expires_at > coalesce($5, now()))
            order by j.priority, j.run_at, j.id
            limit $4
            for update skip locked
        ), waiting as (
            -- A claim that comes back short means this worker is about to wait: the next
            -- enqueue on the queue notifies (docket.wake). Writes only when the flag is off.
            update docket.queue_wakeups w set wanted = true
            where w.queue = $1 and not w.wanted and (select count(*) from locked) < $4
        )
        "#,
        mark_claimed!()
    ))
    .bind(params.queue)
    .bind(params.kinds)
    .bind(params.worker_id)
    .bind(params.limit)
    .bind(params.now)
    .bind(params.token)
    .bind(after.map(|at| at.priority))
    .bind(after.map(|at| at.run_at))
    .bind(after.map(|at| at.id))
    .fetch_all(exec)
    .await
}

/// One group [`job_ready_groups`] walked past.
#[derive(sqlx::FromRow)]
pub(crate) struct WalkedGroup {
    pub(crate) group_key: String,
    /// Whether one of its jobs is due (`run_at` reached).
    pub(crate) due: bool,
}

/// The groups with ready-able jobs in `queue` whose key sorts before `before` (`None`: from
/// the last group), in descending key order, each with whether one of its jobs is due at
/// `now`: a loose scan of `jobs_claim_grouped` from its end, a probe or two per group
/// however many jobs each holds. Stops after `due` due groups or `most` groups walked.
pub(crate) async fn job_ready_groups(
    exec: impl PgExecutor<'_>,
    queue: &str,
    before: Option<&str>,
    due: i64,
    most: i64,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<Vec<WalkedGroup>> {
    // A function, so that its plan does not depend on statistics (see its migration).
    sqlx::query_as("select group_key, due from docket.ready_groups($1, $2, $3, $4, $5)")
        .bind(queue)
        .bind(before)
        .bind(due)
        .bind(most)
        .bind(now)
        .fetch_all(exec)
        .await
}

/// One group for [`job_claim_grouped`]: its key, and where in it to start (`None`: at its
/// head).
pub(crate) struct GroupStart<'a> {
    pub(crate) key: &'a str,
    pub(crate) after: Option<ClaimPosition>,
}

/// Like [`job_claim`], for grouped jobs: up to `per_group` from each group (each group's
/// own priority, run_at, id order, after its start), `limit` in all, in one statement.
pub(crate) async fn job_claim_grouped(
    exec: impl PgExecutor<'_>,
    params: &ClaimParams<'_>,
    groups: &[GroupStart<'_>],
    per_group: i64,
) -> sqlx::Result<Vec<Job>> {
    let keys: Vec<&str> = groups.iter().map(|g| g.key).collect();
    let priorities: Column<i16> = groups.iter().map(|g| g.after.map(|a| a.priority)).collect();
    let run_ats: Column<DateTime<Utc>> = groups.iter().map(|g| g.after.map(|a| a.run_at)).collect();
    let ids: Column<Uuid> = groups.iter().map(|g| g.after.map(|a| a.id)).collect();
    sqlx::query_as(concat!(
        r#"
        with locked as (
            -- A function, so that its plan does not depend on statistics (see its
            -- migration); it locks the rows, this statement marks them.
            select l.id from docket.lock_grouped($1, $2, $7, $8, $9, $10, $11, $4, $5) as l(id)
        )
        "#,
        mark_claimed!()
    ))
    .bind(params.queue)
    .bind(params.kinds)
    .bind(params.worker_id)
    .bind(params.limit)
    .bind(params.now)
    .bind(params.token)
    .bind(keys)
    .bind(priorities)
    .bind(run_ats)
    .bind(ids)
    .bind(per_group)
    .fetch_all(exec)
    .await
}

/// One row of the snapshot: a queue and one of its live states (or `dead_letter`).
#[derive(sqlx::FromRow)]
pub(crate) struct SnapshotRow {
    pub(crate) queue: String,
    pub(crate) state: JobState,
    pub(crate) count: i64,
    pub(crate) oldest_ready_at: Option<DateTime<Utc>>,
    /// The time the counts are for: `now`, or the database's clock.
    pub(crate) taken_at: DateTime<Utc>,
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
                                     and run_at <= coalesce($1, now())) as oldest_ready_at,
               coalesce($1, now()) as taken_at
        from docket.jobs
        where state in ('pending', 'retrying', 'processing', 'dead_letter')
        group by queue, state
        "#,
    )
    .bind(now)
    .fetch_all(exec)
    .await
}

/// Deletes up to `limit` jobs in `state` that finished more than `retention_secs` before
/// `now` (the database's clock by default: `finished_at` was written by it), oldest first.
/// Rows locked by someone else are skipped, so pruning never waits on the hot path.
pub(crate) async fn job_delete_finished_before(
    exec: impl PgExecutor<'_>,
    state: JobState,
    retention_secs: f64,
    limit: i64,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        r#"
        with doomed as (
            select id from docket.jobs
            where state = $1 and finished_at < coalesce($4, now()) - make_interval(secs => $2)
            order by finished_at
            limit $3
            for update skip locked
        )
        delete from docket.jobs j using doomed d where j.id = d.id
        "#,
    )
    .bind(state)
    .bind(retention_secs)
    .bind(limit)
    .bind(now)
    .execute(exec)
    .await?;
    Ok(done.rows_affected())
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
    pub(crate) group_key: Option<&'a str>,
    pub(crate) traceparent: Option<&'a str>,
    pub(crate) tracestate: Option<&'a str>,
}

pub(crate) async fn job_enqueue(
    exec: impl PgExecutor<'_>,
    params: &EnqueueParams<'_>,
) -> sqlx::Result<JobId> {
    sqlx::query_scalar(
        r#"
        select docket.enqueue($1, $2, $3, coalesce($4, now()), $5, $6, $7, $8, $9, $10, $11)
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
    .bind(params.group_key)
    .bind(params.traceparent)
    .bind(params.tracestate)
    .fetch_one(exec)
    .await
}

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
    pub(crate) group_keys: Column<&'a str>,
    /// The batch every job of the call joins.
    pub(crate) batch_id: Option<Uuid>,
    /// Each job's trace context; empty when no job has one (sent as null).
    pub(crate) traceparents: Vec<Option<&'a str>>,
    pub(crate) tracestates: Vec<Option<&'a str>>,
}

pub(crate) async fn job_enqueue_many(
    exec: impl PgExecutor<'_>,
    columns: &EnqueueColumns<'_>,
) -> sqlx::Result<Vec<JobId>> {
    sqlx::query_scalar(
        r#"
        select id from docket.enqueue_many($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                                           $12, $13) order by ord
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
    .bind(columns.batch_id)
    .bind(&columns.group_keys)
    .bind((!columns.traceparents.is_empty()).then_some(&columns.traceparents))
    .bind((!columns.tracestates.is_empty()).then_some(&columns.tracestates))
    .fetch_all(exec)
    .await
}

/// Dead-letters up to `limit` ready jobs past their `expires_at` (reason `expired`),
/// soonest expiry first, through `jobs_expiring`. Locked rows are skipped: a claim that
/// holds one passes it over anyway.
pub(crate) async fn job_expire_ready(
    exec: impl PgExecutor<'_>,
    limit: i64,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<Vec<Job>> {
    sqlx::query_as(
        r#"
        with doomed as (
            select id from docket.jobs
            where expires_at <= coalesce($2, now()) and state in ('pending', 'retrying')
            order by expires_at
            limit $1
            for update skip locked
        )
        update docket.jobs j set
            state = 'dead_letter',
            finished_at = coalesce($2, now()),
            dead_letter_reason = 'expired',
            cancel_requested_at = null
        from doomed d
        where j.id = d.id
        returning j.*
        "#,
    )
    .bind(limit)
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

/// One job the database says a worker holds.
#[derive(sqlx::FromRow)]
pub(crate) struct HeldRow {
    pub(crate) id: JobId,
    pub(crate) attempt: i32,
    pub(crate) lease_token: Uuid,
    pub(crate) cancel_requested: bool,
}

/// Every job this worker holds, with its claim token and whether an operator asked to
/// cancel it. Reads processing rows only (`jobs_processing`).
pub(crate) async fn job_held_by(
    exec: impl PgExecutor<'_>,
    worker_id: Uuid,
) -> sqlx::Result<Vec<HeldRow>> {
    sqlx::query_as(
        r#"
        select id, attempt, lease_token, cancel_requested_at is not null as cancel_requested
        from docket.jobs
        where state = 'processing' and locked_by = $1
        "#,
    )
    .bind(worker_id)
    .fetch_all(exec)
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

/// The listing statement, its state condition a literal (see [`job_list`]).
macro_rules! job_list_where {
    ($state:literal) => {
        concat!(
            "select * from docket.jobs where ",
            $state,
            r#"
              and ($1::text is null or queue = $1)
              and ($2::text is null or kind = $2)
              -- A bound on the id under any plan: the page starts at the cursor.
              and id < coalesce($3::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff')
            order by id desc
            limit $4
            "#
        )
    };
}

/// Jobs newest first (ids are UUID v7), a page at a time by keyset.
///
/// One statement per state, the state written into it: a statement that took the state as
/// a parameter (`$1 is null or state = $1`) could use no index of one state once PostgreSQL
/// planned it for any parameters (a generic plan, its choice after five runs on one
/// connection), and walked the primary key backwards past every completed job the table
/// keeps to find a few dead letters. With the state a literal, even a generic plan knows
/// how common the state is and can use the indexes whose predicate names it: dead letters
/// and cancelled jobs read their own entries of `jobs_listing (state, id)`, newest first from
/// the cursor; a live state reads that state's rows or walks the primary key, whichever
/// its statistics make cheaper; completed jobs, the bulk of the table, walk the primary key.
pub(crate) async fn job_list(
    exec: impl PgExecutor<'_>,
    params: &ListParams<'_>,
) -> sqlx::Result<Vec<Job>> {
    let sql = match params.state {
        None => job_list_where!("true"),
        Some(JobState::Pending) => job_list_where!("state = 'pending'"),
        Some(JobState::Retrying) => job_list_where!("state = 'retrying'"),
        Some(JobState::Processing) => job_list_where!("state = 'processing'"),
        Some(JobState::Completed) => job_list_where!("state = 'completed'"),
        Some(JobState::DeadLetter) => job_list_where!("state = 'dead_letter'"),
        Some(JobState::Cancelled) => job_list_where!("state = 'cancelled'"),
    };
    sqlx::query_as(sql)
        .bind(params.queue)
        .bind(params.kind)
        .bind(params.before)
        .bind(params.limit)
        .fetch_all(exec)
        .await
}

/// The newest dead letters, by when they were dead-lettered (through `jobs_finished`, so
/// however many completed rows the table keeps, it reads only these).
pub(crate) async fn job_list_newest_dead_letters(
    exec: impl PgExecutor<'_>,
    limit: i64,
) -> sqlx::Result<Vec<Job>> {
    sqlx::query_as(
        r#"
        select * from docket.jobs
        where state = 'dead_letter' and finished_at is not null
        order by finished_at desc, id desc
        limit $1
        "#,
    )
    .bind(limit)
    .fetch_all(exec)
    .await
}

/// Jobs dead-lettered in `(since, until]`, newest first, at most `limit`, each with the
/// count of all of them (through `jobs_finished`).
pub(crate) async fn job_list_dead_lettered_between(
    exec: impl PgExecutor<'_>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<JobCounted>> {
    sqlx::query_as(
        r#"
        select count(*) over () as total, j.* from docket.jobs j
        where j.state = 'dead_letter' and j.finished_at > $1 and j.finished_at <= $2
        order by j.finished_at desc, j.id desc
        limit $3
        "#,
    )
    .bind(since)
    .bind(until)
    .bind(limit)
    .fetch_all(exec)
    .await
}

/// A job with the count of the rows its statement matched.
#[derive(sqlx::FromRow)]
pub(crate) struct JobCounted {
    pub(crate) total: i64,
    #[sqlx(flatten)]
    pub(crate) job: Job,
}

/// Parks up to `limit` ready jobs that have been ready for `after_secs` with no live
/// worker for their queue and kind. Looks at the `scan` oldest ready jobs of each queue
/// (the head of `jobs_claim`, found by a skip scan over its queues) and of each group of
/// each queue (the heads in `jobs_claim_grouped`, found the same way), where such jobs
/// gather: nobody claims them. Returns the parked jobs' queue and kind.
pub(crate) async fn job_park_unhandled(
    exec: impl PgExecutor<'_>,
    after_secs: f64,
    scan: i64,
    limit: i64,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(
        r#"
        with recursive queues as (
            (select j.queue from docket.jobs j
             where j.state in ('pending', 'retrying') and j.parked_at is null and j.group_key is null
             order by j.queue limit 1)
            union all
            select (select j.queue from docket.jobs j
                    where j.state in ('pending', 'retrying') and j.parked_at is null and j.group_key is null
                      and j.queue > q.queue
                    order by j.queue limit 1)
            from queues q where q.queue is not null
        ), groups as (
            (select j.queue, j.group_key from docket.jobs j
             where j.state in ('pending', 'retrying') and j.parked_at is null and j.group_key is not null
             order by j.queue, j.group_key limit 1)
            union all
            select n.queue, n.group_key
            from groups g
            cross join lateral (
                select j.queue, j.group_key from docket.jobs j
                where j.state in ('pending', 'retrying') and j.parked_at is null and j.group_key is not null
                  and (j.queue, j.group_key) > (g.queue, g.group_key)
                order by j.queue, j.group_key limit 1
            ) n
        ), live as (
            select queues, kinds from docket.workers where lease_expires_at > coalesce($4, now())
        ), heads as (
            select c.id, c.queue, c.kind
            from queues q
            cross join lateral (
                select j.id, j.queue, j.kind from docket.jobs j
                where j.queue = q.queue and j.state in ('pending', 'retrying') and j.parked_at is null
                  and j.group_key is null
                  and j.run_at <= coalesce($4, now()) - make_interval(secs => $1)
                order by j.priority, j.run_at, j.id
                limit $2
            ) c
            where q.queue is not null
            union all
            select c.id, c.queue, c.kind
            from groups g
            cross join lateral (
                select j.id, j.queue, j.kind from docket.jobs j
                where j.queue = g.queue and j.group_key = g.group_key
                  and j.state in ('pending', 'retrying') and j.parked_at is null
                  and j.run_at <= coalesce($4, now()) - make_interval(secs => $1)
                order by j.priority, j.run_at, j.id
                limit $2
            ) c
        ), doomed as (
            select h.id from heads h
            where not exists (select 1 from live w where h.queue = any(w.queues) and h.kind = any(w.kinds))
            limit $3
        ), locked as (
            select j.id from docket.jobs j
            where j.id in (select id from doomed)
              and j.state in ('pending', 'retrying') and j.parked_at is null
            for update skip locked
        )
        update docket.jobs j set parked_at = coalesce($4, now())
        from locked l
        where j.id = l.id
        returning j.queue, j.kind
        "#,
    )
    .bind(after_secs)
    .bind(scan)
    .bind(limit)
    .bind(now)
    .fetch_all(exec)
    .await
}

/// Queues and kinds of parked jobs: ready, and no live worker runs them. A skip scan of
/// `jobs_parked` (one probe per pair, however many jobs are parked); at most `limit` pairs.
pub(crate) async fn job_parked_kinds(
    exec: impl PgExecutor<'_>,
    limit: i64,
) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(
        r#"
        with recursive pairs as (
            (select j.queue, j.kind from docket.jobs j
             where j.parked_at is not null and j.state in ('pending', 'retrying')
             order by j.queue, j.kind limit 1)
            union all
            select n.queue, n.kind
            from pairs p
            cross join lateral (
                select j.queue, j.kind from docket.jobs j
                where j.parked_at is not null and j.state in ('pending', 'retrying')
                  and (j.queue, j.kind) > (p.queue, p.kind)
                order by j.queue, j.kind limit 1
            ) n
        )
        select queue, kind from pairs limit $1
        "#,
    )
    .bind(limit)
    .fetch_all(exec)
    .await
}

/// Puts a finished job back to `pending` with a fresh attempt budget and counts the replay
/// (`replays`); its error history stays. Returns `None` when the job is not finished, or when its `expires_at` has passed
/// (replaying it would only expire it again: it must never run late).
pub(crate) async fn job_replay(
    exec: impl PgExecutor<'_>,
    id: JobId,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<Option<Job>> {
    sqlx::query_as(
        r#"
        update docket.jobs set
            state = 'pending', attempt = 0, run_at = coalesce($2, now()), finished_at = null,
            dead_letter_reason = null, cancel_requested_at = null, parked_at = null,
            replays = replays + 1
        where id = $1 and state in ('completed', 'dead_letter', 'cancelled')
          and (expires_at is null or expires_at > coalesce($2, now()))
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

/// Replays up to `limit` dead letters matching the filter, each counted in its `replays`
/// as [`job_replay`] does. A dead letter whose unique key
/// already has a live job is left where it is (replaying it would make a second live job),
/// of several dead letters sharing a key only the newest is replayed, and one whose
/// `expires_at` has passed stays (it must never run late).
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
              and (j.expires_at is null or j.expires_at > coalesce($6, now()))
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
            dead_letter_reason = null, parked_at = null, replays = j.replays + 1
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

/// Frees up to `limit` processing jobs whose worker's lease has lapsed: the worker's own
/// `lease_expires_at` (each worker stores its lease with its heartbeat) is past, or it has
/// no row at all. Such a job goes back to `retrying` (ready now), to `dead_letter` when its
/// attempts are spent, or to `cancelled` when an operator asked for that; the lapse is
/// recorded in its error history.
///
/// Only processing rows are read (`jobs_processing`). Rows locked by someone else (a
/// completion in flight) are skipped, and the lock re-checks `state = 'processing'`, so a
/// job completed meanwhile is never turned back.
pub(crate) async fn job_rescue_lapsed(
    exec: impl PgExecutor<'_>,
    limit: i64,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<Vec<Job>> {
    sqlx::query_as(
        r#"
        with lapsed as (
            select j.id,
                   case when j.cancel_requested_at is not null then 'cancelled'
                        when j.attempt >= j.max_attempts then 'dead_letter'
                        else 'retrying' end::docket.job_state as new_state
            from docket.jobs j
            where j.state = 'processing'
              and not exists (
                  select 1 from docket.workers w
                  where w.id = j.locked_by and w.lease_expires_at > coalesce($2, now()))
            order by j.lease_token
            limit $1
            for update of j skip locked
        )
        update docket.jobs j set
            state = l.new_state,
            run_at = coalesce($2, now()),
            locked_by = null,
            lease_token = null,
            finished_at = case when l.new_state <> 'retrying' then coalesce($2, now()) end,
            dead_letter_reason = case when l.new_state = 'dead_letter' then 'attempts_exhausted' end,
            last_error = 'worker lease lapsed',
            errors = docket.append_error(j.errors, j.attempt, coalesce($2, now()), 'worker lease lapsed'),
            cancel_requested_at = null
        from lapsed l
        where j.id = l.id
        returning j.*
        "#,
    )
    .bind(limit)
    .bind(now)
    .fetch_all(exec)
    .await
}

/// The columns of one `job_set_outcome_many` call, one element per job.
#[derive(Default)]
pub(crate) struct OutcomeColumns {
    pub(crate) ids: Vec<Uuid>,
    /// The token of the claim the outcome is for: with the worker id, the fence.
    pub(crate) tokens: Vec<Uuid>,
    /// `complete`, `retry`, `dead_letter`, `snooze` or `cancel`.
    pub(crate) outcomes: Vec<&'static str>,
    pub(crate) errors: Column<String>,
    /// Seconds until the job is ready again (`retry`, `snooze`).
    pub(crate) delays: Vec<f64>,
    /// The dead-letter reason (`dead_letter`).
    pub(crate) reasons: Column<String>,
}

/// Applies many outcomes in one statement. Fenced: a job changes only while it is still
/// `processing` under the same worker and the same claim token, so the outcome of a
/// worker that lost its lease (the job was rescued, perhaps re-claimed, even by this same
/// worker) changes nothing: tokens never repeat. Returns the jobs that changed with their
/// new state; the missing ones were fenced off.
///
/// The fence is checked under the row lock (`for update`): a rescue that commits first
/// makes the re-checked fence fail, so a late outcome never overwrites it. A job an
/// operator asked to cancel ends `cancelled` when its attempt ends in a retry or a
/// snooze (a hand-back included): the cancel is never lost.
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
            from unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::float8[], $7::text[])
                 as i(id, token, outcome, error, delay, reason)
        ), target as (
            select j.id, i.outcome, i.error, i.delay, i.reason,
                   case
                       when i.outcome = 'complete' then 'completed'
                       when i.outcome in ('retry', 'snooze') and j.cancel_requested_at is not null
                           then 'cancelled'
                       when i.outcome = 'cancel' then 'cancelled'
                       when i.outcome = 'dead_letter' then 'dead_letter'
                       when i.outcome = 'retry' and j.attempt >= j.max_attempts then 'dead_letter'
                       when i.outcome = 'retry' then 'retrying'
                       -- snooze: the attempt is given back; a job that never failed stays pending
                       when j.attempt > 1 then 'retrying'
                       else 'pending'
                   end::docket.job_state as new_state
            from (select * from input order by id) i
            -- Each job is found by its primary key and nothing else: `offset 0` keeps the
            -- fence's conditions out of the locking subquery, so no partial index
            -- (jobs_processing, whose statistics may say it is empty) can draw the plan
            -- into a walk over every job the worker holds. The fence is then checked on
            -- the row as locked.
            cross join lateral (
                select * from docket.jobs j where j.id = i.id offset 0 for update
            ) j
            where j.state = 'processing' and j.locked_by = $1 and j.lease_token = i.token
        )
        update docket.jobs j set
            state = t.new_state,
            attempt = case when t.outcome = 'snooze' then j.attempt - 1 else j.attempt end,
            run_at = case when t.new_state in ('pending', 'retrying')
                          then coalesce($8, now()) + make_interval(secs => t.delay)
                          else j.run_at end,
            locked_by = null,
            lease_token = null,
            finished_at = case when t.new_state in ('completed', 'dead_letter', 'cancelled')
                               then coalesce($8, now()) end,
            last_error = case when t.error is not null then left(t.error, 4000) else j.last_error end,
            errors = case when t.error is not null
                          then docket.append_error(j.errors, j.attempt, coalesce($8, now()), t.error)
                          else j.errors end,
            dead_letter_reason = case
                when t.new_state <> 'dead_letter' then null
                when t.outcome = 'retry' then 'attempts_exhausted'
                else coalesce(t.reason, 'permanent') end,
            cancel_requested_at = null
        from target t
        where j.id = t.id
        returning j.id, j.state
        "#,
    )
    .bind(worker_id)
    .bind(&columns.ids)
    .bind(&columns.tokens)
    .bind(&columns.outcomes)
    .bind(&columns.errors)
    .bind(&columns.delays)
    .bind(&columns.reasons)
    .bind(now)
    .fetch_all(exec)
    .await
}

/// Unparks up to `limit` parked jobs whose queue and kind a live worker runs, driven from
/// the live workers' pairs through `jobs_parked`. Returns how many.
pub(crate) async fn job_unpark_handled(
    exec: impl PgExecutor<'_>,
    limit: i64,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        r#"
        with pairs as (
            select distinct q.queue, k.kind
            from docket.workers w
            cross join unnest(w.queues) q(queue)
            cross join unnest(w.kinds) k(kind)
            where w.lease_expires_at > coalesce($2, now())
        ), freed as (
            select f.id
            from pairs p
            cross join lateral (
                select j.id from docket.jobs j
                where j.parked_at is not null and j.state in ('pending', 'retrying')
                  and j.queue = p.queue and j.kind = p.kind
                limit $1
                for update skip locked
            ) f
            limit $1
        )
        update docket.jobs j set parked_at = null
        from freed f
        where j.id = f.id
        "#,
    )
    .bind(limit)
    .bind(now)
    .execute(exec)
    .await?;
    Ok(done.rows_affected())
}
