//! What a backup holds and whether it restores: the rows of each table and the jobs per
//! state, read in the dump's own snapshot (so that they are the dump's figures exactly),
//! and the record of restore checks in `docket.restore_checks`, whose newest row the
//! health checks show. The commands that run `pg_dump` and `pg_restore` are the binary's
//! (`docket backup`, `docket restore-check`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor};

use crate::db;
use crate::error::Result;

/// What a dump takes: Docket's own (the `docket` schema and sqlx's migrations table
/// `public._sqlx_migrations`), or the whole database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The `docket` schema and `public._sqlx_migrations`.
    Docket,
    /// Every schema.
    All,
}

/// Rows per table (`schema.table`) and jobs per state: what a backup holds, and what a
/// restore must give back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contents {
    /// Rows of each table, by `schema.table`.
    pub tables: BTreeMap<String, i64>,
    /// Jobs in each state (every state, zero included).
    pub jobs: BTreeMap<String, i64>,
}

impl Contents {
    /// Every job, whatever its state.
    pub fn job_total(&self) -> i64 {
        self.jobs.values().sum()
    }

    /// How `restored` differs from these figures, one phrase per difference
    /// (`docket.jobs: 1000 rows in the backup, 998 restored`); empty when it does not.
    pub fn differences(&self, restored: &Contents) -> Vec<String> {
        let mut out = Vec::new();
        for (table, rows) in &self.tables {
            match restored.tables.get(table) {
                None => out.push(format!("{table}: missing from the restore")),
                Some(back) if back != rows => out.push(format!(
                    "{table}: {rows} rows in the backup, {back} restored"
                )),
                Some(_) => {}
            }
        }
        for (state, jobs) in &self.jobs {
            let back = restored.jobs.get(state).copied().unwrap_or(0);
            if back != *jobs {
                out.push(format!(
                    "{state} jobs: {jobs} in the backup, {back} restored"
                ));
            }
        }
        out
    }
}

/// Reads the contents of the scope on `conn` (run it in the transaction whose snapshot
/// `pg_dump --snapshot` dumps, and the figures are the dump's).
///
/// # Errors
///
/// [`crate::Error::Database`].
pub async fn contents(conn: &mut PgConnection, scope: Scope) -> Result<Contents> {
    let mut contents = Contents::default();
    for (name, quoted) in db::backup_tables(crate::pooled_conn(conn), scope == Scope::All).await? {
        let rows = db::backup_table_rows(crate::pooled_conn(conn), &quoted).await?;
        contents.tables.insert(name, rows);
    }
    contents.jobs = db::backup_job_states(crate::pooled_conn(conn))
        .await?
        .into_iter()
        .collect();
    Ok(contents)
}

/// The relations a dump of Docket's own leaves out with `--exclude-table` (those of
/// `public` other than the migrations table), as exact pg_dump patterns.
///
/// # Errors
///
/// [`crate::Error::Database`].
pub async fn excluded_public_relations(exec: impl PgExecutor<'_>) -> Result<Vec<String>> {
    Ok(db::backup_public_relations_but_migrations(exec).await?)
}

/// A restore check to record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewRestoreCheck {
    /// The backup file restored (its path).
    pub backup_file: String,
    /// When that backup was taken, when its manifest says.
    pub backup_taken_at: Option<DateTime<Utc>>,
    /// Why it failed; `None` when it passed.
    pub failure: Option<String>,
    /// Tables restored.
    pub tables: i32,
    /// Jobs restored.
    pub jobs: i64,
    /// Rows of each restored table.
    pub table_rows: BTreeMap<String, i64>,
    /// Restored jobs per state.
    pub job_states: BTreeMap<String, i64>,
    /// How long the check took, restore included, in milliseconds.
    pub duration_ms: i64,
    /// Who ran it.
    pub owner: String,
}

/// A recorded restore check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RestoreCheck {
    /// When it was recorded (the database's clock).
    pub checked_at: DateTime<Utc>,
    /// The backup file restored.
    pub backup_file: String,
    /// When that backup was taken, when known.
    pub backup_taken_at: Option<DateTime<Utc>>,
    /// Whether it passed.
    pub ok: bool,
    /// Why it failed.
    pub failure: Option<String>,
    /// Tables restored.
    pub tables: i32,
    /// Jobs restored.
    pub jobs: i64,
    /// Rows of each restored table.
    #[sqlx(json)]
    pub table_rows: BTreeMap<String, i64>,
    /// Restored jobs per state.
    #[sqlx(json)]
    pub job_states: BTreeMap<String, i64>,
    /// How long it took, in milliseconds.
    pub duration_ms: i64,
    /// Who ran it.
    pub owner: String,
}

/// Records a restore check in the live database.
///
/// # Errors
///
/// [`crate::Error::Database`] (also for an empty owner or negative counts).
pub async fn record(exec: impl PgExecutor<'_>, check: &NewRestoreCheck) -> Result<RestoreCheck> {
    Ok(db::restore_check_insert(exec, check).await?)
}

/// The newest restore check, if any was recorded.
///
/// # Errors
///
/// [`crate::Error::Database`].
pub async fn latest(exec: impl PgExecutor<'_>) -> Result<Option<RestoreCheck>> {
    Ok(db::restore_check_latest(exec).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_table_and_state_that_did_not_come_back() {
        let backup = Contents {
            tables: [("docket.jobs".into(), 10), ("docket.batches".into(), 2)].into(),
            jobs: [("pending".into(), 7), ("completed".into(), 3)].into(),
        };
        assert!(backup.differences(&backup).is_empty());
        let restored = Contents {
            tables: [("docket.jobs".into(), 9)].into(),
            jobs: [("pending".into(), 7), ("completed".into(), 2)].into(),
        };
        assert_eq!(
            backup.differences(&restored),
            [
                "docket.batches: missing from the restore",
                "docket.jobs: 10 rows in the backup, 9 restored",
                "completed jobs: 3 in the backup, 2 restored",
            ]
        );
        assert_eq!(backup.job_total(), 10);
    }
}
