//! Statements of backups and their restore checks: what a dump holds (its tables and their
//! rows, the jobs per state) and `docket.restore_checks`.

use sqlx::PgExecutor;

use crate::backup::{NewRestoreCheck, RestoreCheck};

/// The tables of the scope, schema-qualified and quoted as SQL needs them, sorted: Docket's
/// own (the `docket` schema and sqlx's migrations table), or every user table.
pub(crate) async fn backup_tables(
    exec: impl PgExecutor<'_>,
    all: bool,
) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(
        r#"
        select n.nspname || '.' || c.relname, format('%I.%I', n.nspname, c.relname)
        from pg_class c
        join pg_namespace n on n.oid = c.relnamespace
        where c.relkind in ('r', 'p')
          and c.relpersistence <> 't'
          and case when $1
              then n.nspname not in ('pg_catalog', 'information_schema')
                   and n.nspname not like 'pg\_toast%' and n.nspname not like 'pg\_temp%'
              else n.nspname = 'docket' or (n.nspname = 'public' and c.relname = '_sqlx_migrations')
          end
        order by 1
        "#,
    )
    .bind(all)
    .fetch_all(exec)
    .await
}

/// The relations of `public` other than the migrations table, quoted as a pg_dump pattern
/// that matches exactly that name: what a dump of Docket's own leaves out.
pub(crate) async fn backup_public_relations_but_migrations(
    exec: impl PgExecutor<'_>,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        r#"
        select '"public"."' || replace(c.relname, '"', '""') || '"'
        from pg_class c
        join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'public' and c.relname <> '_sqlx_migrations'
          and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
        order by c.relname
        "#,
    )
    .fetch_all(exec)
    .await
}

/// Rows of one table, named as [`backup_tables`] quotes it.
pub(crate) async fn backup_table_rows(
    exec: impl PgExecutor<'_>,
    quoted: &str,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(&format!("select count(*) from {quoted}"))
        .fetch_one(exec)
        .await
}

/// Jobs per state, every state present (zero when none).
pub(crate) async fn backup_job_states(
    exec: impl PgExecutor<'_>,
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        r#"
        select s::text, count(j.state)
        from unnest(enum_range(null::docket.job_state)) s
        left join docket.jobs j on j.state = s
        group by s order by s
        "#,
    )
    .fetch_all(exec)
    .await
}

const RESTORE_CHECK_COLUMNS: &str = "checked_at, backup_file, backup_taken_at, ok, failure, \
    tables, jobs, table_rows, job_states, duration_ms, owner";

/// Records a restore check.
pub(crate) async fn restore_check_insert(
    exec: impl PgExecutor<'_>,
    check: &NewRestoreCheck,
) -> sqlx::Result<RestoreCheck> {
    sqlx::query_as(&format!(
        r#"
        insert into docket.restore_checks
            (backup_file, backup_taken_at, ok, failure, tables, jobs, table_rows, job_states,
             duration_ms, owner)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        returning {RESTORE_CHECK_COLUMNS}
        "#
    ))
    .bind(&check.backup_file)
    .bind(check.backup_taken_at)
    .bind(check.failure.is_none())
    .bind(&check.failure)
    .bind(check.tables)
    .bind(check.jobs)
    .bind(sqlx::types::Json(&check.table_rows))
    .bind(sqlx::types::Json(&check.job_states))
    .bind(check.duration_ms)
    .bind(&check.owner)
    .fetch_one(exec)
    .await
}

/// The newest restore check.
pub(crate) async fn restore_check_latest(
    exec: impl PgExecutor<'_>,
) -> sqlx::Result<Option<RestoreCheck>> {
    sqlx::query_as(&format!(
        "select {RESTORE_CHECK_COLUMNS} from docket.restore_checks order by checked_at desc, id desc limit 1"
    ))
    .fetch_optional(exec)
    .await
}
