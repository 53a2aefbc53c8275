//! Backups as the health checks see them, and the backup directory's layout that
//! `docket backup` and `docket restore-check` write and read.
//!
//! In [`BACKUP_DIR`](docket_settings::BACKUP_DIR), a backup is `docket-<UTC time>.dump` (pg_dump's custom format)
//! with its manifest `docket-<UTC time>.json` (size, rows per table, jobs per state) and,
//! once checked, `docket-<UTC time>.restore-check.json`. A dump is written under a hidden
//! name (`.docket-<UTC time>.dump.partial`) and renamed only when complete, so a
//! half-written dump is never the newest backup. Pruning touches these names only.
//!
//! Two checks join the health judgement: `backup` (the newest backup's age and size) and
//! `restore_check` (the last restore check recorded in the live database: its age, verdict,
//! counts and owner), each also a gauge.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, NaiveDateTime, Utc};
use docket_queue::backup::{Contents, RestoreCheck, Scope};
use docket_queue::health::{Finding, Probe, ProbeFuture, Verdict};
use docket_queue::telemetry::metric::{
    BACKUP_AGE, BACKUP_SIZE, RESTORE_CHECK_AGE, RESTORE_CHECK_OK,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::host::HostConfig;

/// Every backup file's name starts so.
const PREFIX: &str = "docket-";
/// The dump's extension.
const DUMP: &str = ".dump";
/// The manifest's.
const MANIFEST: &str = ".json";
/// The restore check's record beside the backup.
const RESTORE_CHECK: &str = ".restore-check.json";
/// A dump being written.
const PARTIAL: &str = ".partial";
/// The time in a name: sortable, UTC, milliseconds (two backups a second apart differ).
const TIME_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";

/// One complete backup in the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    /// The dump.
    pub path: PathBuf,
    /// When it was taken (from its name).
    pub taken_at: DateTime<Utc>,
    /// Its size in bytes.
    pub size: u64,
}

impl Backup {
    /// The file name of a backup taken at `at`.
    pub fn file_name(at: DateTime<Utc>) -> String {
        format!("{PREFIX}{}{DUMP}", at.format(TIME_FORMAT))
    }

    /// The hidden name the dump taken at `at` is written under until it is complete.
    pub fn partial_name(at: DateTime<Utc>) -> String {
        format!(".{}{PARTIAL}", Backup::file_name(at))
    }

    /// When the backup named `name` was taken; `None` for any other name.
    pub fn taken_at(name: &str) -> Option<DateTime<Utc>> {
        let time = name.strip_prefix(PREFIX)?.strip_suffix(DUMP)?;
        NaiveDateTime::parse_from_str(time, TIME_FORMAT)
            .ok()
            .map(|t| t.and_utc())
    }

    /// The backup at `path`, when its name is a backup's and it is a file.
    pub fn at(path: &Path) -> Option<Backup> {
        let taken_at = Backup::taken_at(path.file_name()?.to_str()?)?;
        let metadata = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
        Some(Backup {
            path: path.to_owned(),
            taken_at,
            size: metadata.len(),
        })
    }

    fn sibling(&self, extension: &str) -> PathBuf {
        let name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(DUMP))
            .unwrap_or_default();
        self.path.with_file_name(format!("{name}{extension}"))
    }

    /// Where its manifest is.
    pub fn manifest_path(&self) -> PathBuf {
        self.sibling(MANIFEST)
    }

    /// Where its restore check is recorded.
    pub fn restore_check_path(&self) -> PathBuf {
        self.sibling(RESTORE_CHECK)
    }

    /// Its manifest, when it has a readable one.
    pub fn manifest(&self) -> Option<Manifest> {
        let text = std::fs::read(self.manifest_path()).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Its file name.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// What `docket backup` writes beside each dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The dump's file name.
    pub file: String,
    /// When the dump's snapshot was taken.
    pub taken_at: DateTime<Utc>,
    /// What it holds.
    pub scope: Scope,
    /// The database dumped.
    pub database: String,
    /// The dump's size in bytes.
    pub size_bytes: u64,
    /// How long the dump took, in milliseconds.
    pub duration_ms: u64,
    /// The `pg_dump --version` that wrote it.
    pub pg_dump: String,
    /// Rows per table and jobs per state, read in the dump's snapshot.
    #[serde(flatten)]
    pub contents: Contents,
}

/// Every complete backup in `dir`, oldest first (hidden and partial files, and files of
/// other names, are not backups).
///
/// # Errors
///
/// When the directory cannot be read.
pub fn list(dir: &Path) -> std::io::Result<Vec<Backup>> {
    let mut backups: Vec<Backup> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|entry| Backup::at(&entry.path()))
        .collect();
    backups.sort_by(|a, b| a.taken_at.cmp(&b.taken_at).then(a.path.cmp(&b.path)));
    Ok(backups)
}

/// The newest complete backup in `dir`.
///
/// # Errors
///
/// When the directory cannot be read.
pub fn newest(dir: &Path) -> std::io::Result<Option<Backup>> {
    Ok(list(dir)?.pop())
}

/// A partial dump left by a process that was killed is removed after this long (one that
/// is younger may be a backup still being written).
const PARTIAL_STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What a prune did: the paths it removed, and those it could not (each with why). One
/// entry it cannot remove never fails the backup that was just taken.
#[derive(Debug, Default)]
pub struct Pruned {
    /// Removed.
    pub removed: Vec<PathBuf>,
    /// Left in place, and why.
    pub left: Vec<(PathBuf, String)>,
}

impl Pruned {
    fn remove(&mut self, path: PathBuf) {
        // Only files (or links, removed as links): a directory that happens to carry a
        // backup's name is not ours to touch.
        match std::fs::symlink_metadata(&path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Ok(meta) if meta.is_dir() => self
                .left
                .push((path, "a directory, not a backup file".to_owned())),
            _ => match std::fs::remove_file(&path) {
                Ok(()) => self.removed.push(path),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => self.left.push((path, err.to_string())),
            },
        }
    }
}

/// Removes the backups older than the newest `keep` (each with its manifest and restore
/// check record), and partial dumps older than a day. Touches Docket's own file names only.
///
/// # Errors
///
/// When the directory cannot be read; an entry that cannot be removed is reported in
/// [`Pruned::left`] instead.
pub fn prune(dir: &Path, keep: usize) -> std::io::Result<Pruned> {
    let backups = list(dir)?;
    let excess = backups.len().saturating_sub(keep);
    let mut pruned = Pruned::default();
    for backup in &backups[..excess] {
        for path in [
            backup.path.clone(),
            backup.manifest_path(),
            backup.restore_check_path(),
        ] {
            pruned.remove(path);
        }
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let partial = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(PARTIAL))
            .and_then(Backup::taken_at)
            .is_some();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .is_some_and(|age| age > PARTIAL_STALE_AFTER);
        if partial && old {
            pruned.remove(entry.path());
        }
    }
    Ok(pruned)
}

/// The two checks, when a backup directory is configured.
pub(crate) fn probes(config: &HostConfig) -> Vec<Arc<dyn Probe>> {
    let Some(dir) = &config.backup_dir else {
        return Vec::new();
    };
    vec![
        Arc::new(BackupProbe {
            dir: dir.clone(),
            max_age: config.backup_max_age,
        }),
        Arc::new(RestoreCheckProbe {
            max_age: config.restore_check_max_age,
        }),
    ]
}

const BACKUP_ADVICE: &str = "the newest backup is missing or old: check the backup timer (`systemctl status docket-backup.timer`) or run `docket backup`; the runbook's \"Backup and restore\".";
const RESTORE_CHECK_ADVICE: &str = "no recent passing restore check: run `docket restore-check` (the docket-restore-check.timer runs it weekly) and read its failure; the runbook's \"Backup and restore\".";

/// `1.3 GiB`, `512.0 KiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `40 s`, `5.2 h`, `3.1 d`.
fn human_age(age: Duration) -> String {
    let seconds = age.as_secs_f64();
    if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else if seconds < 7200.0 {
        format!("{:.0} min", seconds / 60.0)
    } else if seconds < 2.0 * 86400.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else {
        format!("{:.1} d", seconds / 86400.0)
    }
}

/// The newest backup's age and size.
struct BackupProbe {
    dir: PathBuf,
    max_age: Duration,
}

impl Probe for BackupProbe {
    fn name(&self) -> &'static str {
        "backup"
    }

    fn probe<'a>(&'a self, _db: Option<&'a PgPool>) -> ProbeFuture<'a> {
        let (dir, max_age) = (self.dir.clone(), self.max_age);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || backup(&dir, max_age, SystemTime::now()))
                .await
                .unwrap_or_else(|err| Finding::unknown("backup", err.to_string()))
        })
    }
}

/// The newest file that is no backup of Docket's (another tool's dump), for directories
/// that `docket backup` does not write: its age and size.
fn newest_other_file(dir: &Path) -> Option<(SystemTime, u64, String)> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|entry| {
            let metadata = entry.metadata().ok().filter(|m| m.is_file())?;
            Some((
                metadata.modified().ok()?,
                metadata.len(),
                entry.file_name().to_string_lossy().into_owned(),
            ))
        })
        .max()
}

/// The newest backup in `dir`: one of `docket backup`'s, else the newest other file (a
/// dump another tool writes there). Hidden files (a dump being written) never count.
pub fn backup(dir: &Path, max_age: Duration, now: SystemTime) -> Finding {
    let newest = match newest(dir) {
        Err(err) => {
            metrics::gauge!(BACKUP_AGE).set(f64::INFINITY);
            return Finding::new(
                "backup",
                Verdict::Warn,
                format!("cannot read {}: {err}", dir.display()),
                BACKUP_ADVICE,
            );
        }
        Ok(Some(backup)) => {
            let taken: SystemTime = backup.taken_at.into();
            let jobs = backup
                .manifest()
                .map(|m| {
                    format!(
                        ", {}",
                        docket_queue::counted(m.contents.job_total(), "job", "jobs")
                    )
                })
                .unwrap_or_default();
            Some((taken, backup.size, format!("{}{jobs}", backup.name())))
        }
        Ok(None) => newest_other_file(dir),
    };
    let Some((taken, size, what)) = newest else {
        metrics::gauge!(BACKUP_AGE).set(f64::INFINITY);
        return Finding::new(
            "backup",
            Verdict::Warn,
            format!("no backup in {}", dir.display()),
            BACKUP_ADVICE,
        );
    };
    let age = now.duration_since(taken).unwrap_or_default();
    metrics::gauge!(BACKUP_AGE).set(age.as_secs_f64());
    metrics::gauge!(BACKUP_SIZE).set(size as f64);
    Finding::new(
        "backup",
        if age > max_age {
            Verdict::Warn
        } else {
            Verdict::Ok
        },
        format!(
            "newest backup {} old, {} ({what}) in {} (maximum {})",
            human_age(age),
            human_size(size),
            dir.display(),
            human_age(max_age)
        ),
        BACKUP_ADVICE,
    )
}

/// The last restore check recorded in the live database.
struct RestoreCheckProbe {
    max_age: Duration,
}

impl Probe for RestoreCheckProbe {
    fn name(&self) -> &'static str {
        "restore_check"
    }

    fn probe<'a>(&'a self, db: Option<&'a PgPool>) -> ProbeFuture<'a> {
        Box::pin(async move {
            let Some(pool) = db else {
                return Finding::unknown("restore_check", "the database does not answer");
            };
            match docket_queue::backup::latest(docket_queue::pooled(pool)).await {
                Ok(last) => restore_check(last.as_ref(), self.max_age, Utc::now()),
                Err(err) => Finding::unknown("restore_check", err.to_string()),
            }
        })
    }
}

/// Judges the last restore check: `warn` when there is none, it failed, or it is older
/// than `max_age`.
pub fn restore_check(
    last: Option<&RestoreCheck>,
    max_age: Duration,
    now: DateTime<Utc>,
) -> Finding {
    let Some(last) = last else {
        metrics::gauge!(RESTORE_CHECK_AGE).set(f64::INFINITY);
        return Finding::new(
            "restore_check",
            Verdict::Warn,
            "no restore check recorded",
            RESTORE_CHECK_ADVICE,
        );
    };
    let age = (now - last.checked_at).to_std().unwrap_or_default();
    metrics::gauge!(RESTORE_CHECK_AGE).set(age.as_secs_f64());
    metrics::gauge!(RESTORE_CHECK_OK).set(if last.ok { 1.0 } else { 0.0 });
    let file = Path::new(&last.backup_file).file_name().map_or_else(
        || last.backup_file.clone(),
        |n| n.to_string_lossy().into_owned(),
    );
    let old = age > max_age;
    let verdict = if last.ok && !old {
        Verdict::Ok
    } else {
        Verdict::Warn
    };
    let outcome = match &last.failure {
        None => format!(
            "ok {} ago by {}: {}, {} restored from {file} in {}",
            human_age(age),
            last.owner,
            docket_queue::counted(last.tables, "table", "tables"),
            docket_queue::counted(last.jobs, "job", "jobs"),
            human_age(Duration::from_millis(last.duration_ms.max(0) as u64))
        ),
        Some(failure) => format!(
            "failed {} ago by {} ({file}): {failure}",
            human_age(age),
            last.owner
        ),
    };
    Finding::new(
        "restore_check",
        verdict,
        format!("{outcome} (maximum age {})", human_age(max_age)),
        RESTORE_CHECK_ADVICE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ok: bool, days_ago: i64) -> RestoreCheck {
        RestoreCheck {
            checked_at: Utc::now() - chrono::Duration::days(days_ago),
            backup_file: "/var/backups/docket/docket-20261208T031500.000Z.dump".into(),
            backup_taken_at: None,
            ok,
            failure: (!ok).then(|| "pg_restore: error: could not read input file".into()),
            tables: 14,
            jobs: 1000,
            table_rows: Default::default(),
            job_states: Default::default(),
            duration_ms: 41_000,
            owner: "alice".into(),
        }
    }

    const QUARTER: Duration = Duration::from_secs(92 * 86400);

    #[test]
    fn a_missing_old_or_failed_restore_check_warns() {
        let now = Utc::now();
        let fresh = restore_check(Some(&check(true, 3)), QUARTER, now);
        assert_eq!(fresh.verdict, Verdict::Ok, "{fresh:?}");
        assert!(
            fresh.detail.starts_with("ok 3.0 d ago by alice: 14 tables, 1000 jobs restored from docket-20261208T031500.000Z.dump in 41 s"),
            "{}",
            fresh.detail
        );
        let missing = restore_check(None, QUARTER, now);
        assert_eq!(
            (missing.verdict, missing.detail.as_str()),
            (Verdict::Warn, "no restore check recorded")
        );
        assert_eq!(
            restore_check(Some(&check(true, 93)), QUARTER, now).verdict,
            Verdict::Warn
        );
        let failed = restore_check(Some(&check(false, 1)), QUARTER, now);
        assert_eq!(failed.verdict, Verdict::Warn);
        assert!(
            failed.detail.contains("could not read input file"),
            "{}",
            failed.detail
        );
        assert!(failed.advice.is_some());
    }

    #[test]
    fn names_round_trip_and_partial_dumps_are_no_backups() {
        let at = DateTime::parse_from_rfc3339("2026-12-08T03:15:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let name = Backup::file_name(at);
        assert_eq!(name, "docket-20261208T031500.123Z.dump");
        assert_eq!(Backup::taken_at(&name), Some(at));
        assert_eq!(Backup::taken_at(&Backup::partial_name(at)), None);
        assert_eq!(Backup::taken_at("docket-notes.dump"), None);
        assert_eq!(Backup::taken_at("app-20261208T031500.123Z.dump"), None);
    }

    #[test]
    fn sizes_read_as_people_say_them() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
