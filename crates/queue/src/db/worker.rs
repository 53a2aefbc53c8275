//! Statements on `docket.workers`.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::workers::Worker;

pub(crate) async fn worker_delete(exec: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<()> {
    // Its schedule declarations go with it.
    sqlx::query(
        "with gone as (delete from docket.workers where id = $1 returning id)
         delete from docket.schedule_declarations where worker_id in (select id from gone)",
    )
    .bind(id)
    .execute(exec)
    .await?;
    Ok(())
}

/// Deletes registrations whose lease lapsed more than `after_secs` ago and that hold no
/// job any more (the rescuer has freed them), so dead workers do not pile up.
pub(crate) async fn worker_delete_stale(
    exec: impl PgExecutor<'_>,
    after_secs: f64,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<u64> {
    let gone: i64 = sqlx::query_scalar(
        r#"
        with gone as (
            delete from docket.workers w
            where w.lease_expires_at < coalesce($2, now()) - make_interval(secs => $1)
              and not exists (select 1 from docket.jobs j
                              where j.state = 'processing' and j.locked_by = w.id)
            returning w.id
        ), declarations as (
            delete from docket.schedule_declarations
            where worker_id in (select id from gone)
        )
        select count(*) from gone
        "#,
    )
    .bind(after_secs)
    .bind(now)
    .fetch_one(exec)
    .await?;
    Ok(u64::try_from(gone).unwrap_or_default())
}

/// A worker process, as it announces itself.
pub(crate) struct WorkerParams<'a> {
    pub(crate) id: Uuid,
    pub(crate) host: &'a str,
    pub(crate) pid: i32,
    pub(crate) queues: &'a [String],
    pub(crate) kinds: &'a [String],
    pub(crate) version: &'a str,
    /// How long this heartbeat's lease lasts: the worker's own setting.
    pub(crate) lease_secs: f64,
    pub(crate) now: Option<DateTime<Utc>>,
}

/// Registers the worker on its first call, renews its heartbeat (and so its lease, until
/// `now + lease_secs`) after. Returns whether the lease had lapsed before this renewal:
/// the stored expiry was already past, or the registration was gone (deleted as stale).
/// Then a rescuer may have freed the worker's jobs meanwhile, whatever the worker thinks.
pub(crate) async fn worker_heartbeat(
    exec: impl PgExecutor<'_>,
    params: &WorkerParams<'_>,
) -> sqlx::Result<bool> {
    // `previous` reads the row as it was before this statement's own update.
    sqlx::query_scalar(
        r#"
        with previous as (select lease_expires_at from docket.workers where id = $1)
        insert into docket.workers (id, host, pid, queues, kinds, version, started_at, heartbeat_at,
                                    lease_expires_at)
        values ($1, $2, $3, $4, $5, $6, coalesce($7, now()), coalesce($7, now()),
                coalesce($7, now()) + make_interval(secs => $8))
        on conflict (id) do update set heartbeat_at = excluded.heartbeat_at,
                                       lease_expires_at = excluded.lease_expires_at
        returning coalesce((select lease_expires_at <= coalesce($7, now()) from previous), true)
        "#,
    )
    .bind(params.id)
    .bind(params.host)
    .bind(params.pid)
    .bind(params.queues)
    .bind(params.kinds)
    .bind(params.version)
    .bind(params.now)
    .bind(params.lease_secs)
    .fetch_one(exec)
    .await
}

/// Every registered worker, freshest heartbeat first.
pub(crate) async fn worker_list(
    exec: impl PgExecutor<'_>,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<Vec<Worker>> {
    sqlx::query_as(
        r#"
        select id, host, pid, queues, kinds, version, started_at, heartbeat_at, lease_expires_at,
               extract(epoch from coalesce($1, now()) - heartbeat_at)::float8 as heartbeat_age_seconds,
               lease_expires_at > coalesce($1, now()) as live
        from docket.workers
        order by heartbeat_at desc
        limit 1000
        "#,
    )
    .bind(now)
    .fetch_all(exec)
    .await
}
