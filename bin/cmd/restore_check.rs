//! `docket restore-check [FILE] [--keep]`: proves a backup restores. It creates a scratch
//! database (`docket_restore_check_<uuid>`, on the live database's server), restores the
//! backup (the newest in [`BACKUP_DIR`](docket_settings::BACKUP_DIR) by default) with `pg_restore`, runs the
//! checks `docket check` runs on the copy, compares its rows with the manifest's, and
//! records the verdict (when, which file, ok or why not, the counts, how long, who) in
//! the live database and beside the backup. The scratch database is dropped whatever
//! happens, also on Ctrl-C; `--keep` leaves it for a look and says its name. It drops no
//! database whose name is not a scratch database's.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use docket_http::backup::{self as layout, Backup, Manifest};
use docket_queue::backup::{Contents, NewRestoreCheck, Scope};
use docket_queue::health::{Finding, Verdict};
use docket_queue::telemetry::event;
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgPool};

use super::backup::{interrupted, pg_tool, tail};
use crate::cli::RestoreCheckArgs;
use crate::config::Config;

/// Every scratch database's name starts so, followed by 32 hex digits.
const SCRATCH_PREFIX: &str = "docket_restore_check_";

/// Whether `name` is a scratch database's: the only kind this command creates or drops.
fn is_scratch(name: &str) -> bool {
    name.strip_prefix(SCRATCH_PREFIX).is_some_and(|id| {
        id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A fresh scratch database name.
fn scratch_name() -> String {
    format!("{SCRATCH_PREFIX}{}", uuid::Uuid::now_v7().simple())
}

/// A scratch database older than this was left by a restore check that was killed (kill -9,
/// a systemd timeout, the OOM killer: nothing could drop it) and is dropped by the next.
/// One kept with `--keep` is marked so and left alone.
const LEFTOVER_AFTER: chrono::Duration = chrono::Duration::hours(24);

/// What `--keep` writes on the scratch database it leaves.
const KEPT_COMMENT: &str = "kept by docket restore-check --keep";

/// Drops the scratch databases a killed restore check left behind (older than
/// [`LEFTOVER_AFTER`], by the time in their name, and not kept on purpose); returns their
/// names.
async fn sweep_leftovers(live: &PgPool) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = sqlx::query_scalar(
        r#"
        select d.datname from pg_database d
        where d.datname like 'docket\_restore\_check\_%'
          and shobj_description(d.oid, 'pg_database') is distinct from $1
        "#,
    )
    .bind(KEPT_COMMENT)
    .fetch_all(live)
    .await
    .context("listing leftover scratch databases")?;
    let mut dropped = Vec::new();
    for name in names.into_iter().filter(|name| is_scratch(name)) {
        let made_at = name
            .strip_prefix(SCRATCH_PREFIX)
            .and_then(|hex| uuid::Uuid::parse_str(hex).ok())
            .and_then(|id| id.get_timestamp())
            .and_then(|ts| {
                let (secs, nanos) = ts.to_unix();
                chrono::DateTime::from_timestamp(secs as i64, nanos)
            });
        if made_at.is_some_and(|at| chrono::Utc::now() - at > LEFTOVER_AFTER) {
            drop_scratch(live, &name).await?;
            dropped.push(name);
        }
    }
    Ok(dropped)
}

/// Drops the scratch database `name`; refuses any other name.
async fn drop_scratch(live: &PgPool, name: &str) -> anyhow::Result<()> {
    if !is_scratch(name) {
        bail!("refusing to drop {name:?}: not a scratch database of docket restore-check");
    }
    live.execute(format!(r#"drop database if exists "{name}" with (force)"#).as_str())
        .await
        .with_context(|| format!("dropping the scratch database {name}"))?;
    Ok(())
}

/// Of a backup's table of contents (`pg_restore --list`), the entries that are Docket's:
/// the `docket` schema and what is in it, and the migrations table. A dump of Docket's
/// own also holds `public`'s schema entry and any functions the application keeps there
/// (pg_dump cannot leave them out); they are not restored. The same selection as
/// `grep -E '^[0-9]+; [0-9]+ [0-9]+ ([A-Z]+ )+(docket |- docket |public _sqlx_migrations )'`.
fn docket_entries(toc: &str) -> String {
    let mut kept = String::new();
    for line in toc.lines() {
        let Some((_, rest)) = line.split_once("; ") else {
            continue;
        };
        let mut words = rest
            .split(' ')
            .skip(2)
            .skip_while(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_uppercase()));
        let keep = match (words.next(), words.next()) {
            (Some("docket"), Some(_)) => true,
            (Some("-"), Some("docket")) => rest.split(' ').nth(2) == Some("SCHEMA"),
            (Some("public"), Some("_sqlx_migrations")) => true,
            _ => false,
        };
        if keep && !line.starts_with(';') {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

/// What the command prints and records beside the backup.
#[derive(Serialize)]
struct Outcome {
    /// The check as recorded.
    #[serde(flatten)]
    check: NewRestoreCheck,
    /// The scratch database, when it was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    scratch_database: Option<String>,
    /// Each check run on the restored copy.
    checks: Vec<Finding>,
}

/// Who runs the check: the setting, else the OS user.
fn owner(config: &Config) -> String {
    if let Some(owner) = &config.backup.owner {
        return owner.clone();
    }
    for var in ["USER", "LOGNAME"] {
        if let Some(user) = std::env::var(var).ok().filter(|u| !u.is_empty()) {
            return user;
        }
    }
    std::process::Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// What the restore and the checks found, before it is recorded.
#[derive(Default)]
struct Found {
    failure: Option<String>,
    restored: Contents,
    checks: Vec<Finding>,
}

pub(crate) async fn run(config: &Config, args: RestoreCheckArgs) -> anyhow::Result<ExitCode> {
    crate::cmd::refuse_through_pooler("restore-check")?;
    let file = match &args.file {
        Some(file) => file.clone(),
        None => {
            let dir = super::backup::backup_dir(config)?;
            layout::newest(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .with_context(|| format!("no backup in {} (run `docket backup`)", dir.display()))?
                .path
        }
    };
    if !file.is_file() {
        bail!("{} is not a file", file.display());
    }
    let backup = Backup::at(&file);
    let manifest = backup.as_ref().and_then(Backup::manifest);
    let pg_restore = pg_tool("pg_restore")?;
    let url = config.require_database()?;
    let live = crate::cmd::connect(url).await?;
    // Creating and dropping a database, counting a big table: slow by design, not worth a
    // warning each.
    live.set_connect_options(url.options().disable_statement_logging());

    for name in sweep_leftovers(&live).await? {
        eprintln!("dropped {name}, left by a restore check that was killed");
    }
    let scratch = scratch_name();
    let started = Instant::now();
    // A server that will not make the scratch database (no CREATEDB, no room) is a failed
    // check too: the panel then says why the weekly check cannot run.
    let created = live
        .execute(format!(r#"create database "{scratch}""#).as_str())
        .await
        .map_err(|err| match err {
            sqlx::Error::Database(db) => db.message().to_owned(),
            other => other.to_string(),
        });
    let checked = match &created {
        Err(why) => Some(Found {
            failure: Some(format!(
                "cannot create the scratch database {scratch}: {why}"
            )),
            ..Found::default()
        }),
        Ok(_) => {
            if !args.output.json {
                println!(
                    "restoring {} into scratch database {scratch}",
                    file.display()
                );
            }
            let scratch_url = url.for_client(Some(&scratch))?;
            let scratch_options = url.options().database(&scratch).disable_statement_logging();
            tokio::select! {
                found = check(config, &pg_restore, &file, manifest.as_ref(), &scratch_url, scratch_options) => Some(found),
                () = interrupted() => None,
            }
        }
    };
    let kept = args.keep && checked.is_some() && created.is_ok();
    if created.is_ok() && !kept {
        drop_scratch(&live, &scratch).await?;
    }
    if kept {
        live.execute(format!(r#"comment on database "{scratch}" is '{KEPT_COMMENT}'"#).as_str())
            .await
            .context("marking the kept scratch database")?;
    }
    let Some(found) = checked else {
        eprintln!("interrupted: the scratch database {scratch} was dropped; nothing recorded");
        return Ok(ExitCode::from(130));
    };

    let check = NewRestoreCheck {
        backup_file: file.display().to_string(),
        backup_taken_at: backup.as_ref().map(|b| b.taken_at),
        failure: found.failure,
        tables: found.restored.tables.len() as i32,
        jobs: found.restored.job_total(),
        table_rows: found.restored.tables,
        job_states: found.restored.jobs,
        duration_ms: started.elapsed().as_millis() as i64,
        owner: owner(config),
    };
    let recorded = docket_queue::backup::record(&live, &check)
        .await
        .context("recording the restore check in the live database");
    live.close().await;
    let outcome = Outcome {
        check,
        scratch_database: kept.then(|| scratch.clone()),
        checks: found.checks,
    };
    let beside = match &backup {
        Some(backup) => backup.restore_check_path(),
        None => PathBuf::from(format!("{}.restore-check.json", file.display())),
    };
    let written = std::fs::write(&beside, serde_json::to_vec_pretty(&outcome)?);
    recorded?;
    if let Err(err) = written {
        tracing::warn!(
            event = event::RESTORE_CHECKED,
            error.message = %err,
            "the restore check is recorded in the database but not beside the backup ({})",
            beside.display()
        );
    }

    let ok = outcome.check.failure.is_none();
    match &outcome.check.failure {
        None => {
            tracing::info!(event = event::RESTORE_CHECKED, file = %file.display(), ok, tables = outcome.check.tables, jobs = outcome.check.jobs, duration_ms = outcome.check.duration_ms, "restore check passed")
        }
        Some(failure) => {
            tracing::warn!(event = event::RESTORE_CHECKED, file = %file.display(), ok, failure = %failure, duration_ms = outcome.check.duration_ms, "restore check failed")
        }
    }
    if args.output.json {
        crate::cmd::print_json(&outcome)?;
    } else {
        match &outcome.check.failure {
            None => println!(
                "restore check ok: {}, {} restored and checked in {:.1} s (owner {})",
                docket_queue::counted(outcome.check.tables, "table", "tables"),
                docket_queue::counted(outcome.check.jobs, "job", "jobs"),
                outcome.check.duration_ms as f64 / 1000.0,
                outcome.check.owner
            ),
            Some(failure) => println!("restore check FAILED: {failure}"),
        }
        if kept {
            println!(
                "kept the scratch database {scratch} ({}); drop it with: dropdb {scratch}",
                url.for_client(Some(&scratch))?.url
            );
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Restores and checks; every failure is a finding of the check, not an error of the
/// command.
async fn check(
    config: &Config,
    pg_restore: &Path,
    file: &Path,
    manifest: Option<&Manifest>,
    scratch: &crate::config::ClientUrl,
    scratch_options: sqlx::postgres::PgConnectOptions,
) -> Found {
    if let Err(failure) = restore(pg_restore, file, manifest, scratch).await {
        return Found {
            failure: Some(failure),
            ..Found::default()
        };
    }
    let pool = match PgPoolOptions::new()
        .max_connections(2)
        .connect_with(scratch_options)
        .await
    {
        Ok(pool) => pool,
        Err(err) => {
            return Found {
                failure: Some(format!("cannot connect to the restored copy: {err}")),
                ..Found::default()
            }
        }
    };
    let found = inspect(config, &pool, manifest).await;
    pool.close().await;
    found
}

/// `pg_restore` into the scratch database: Docket's entries only for a backup of Docket's
/// own (see [`docket_entries`]), everything for one of the whole database or without a
/// manifest.
async fn restore(
    pg_restore: &Path,
    file: &Path,
    manifest: Option<&Manifest>,
    scratch: &crate::config::ClientUrl,
) -> Result<(), String> {
    let listed = tokio::process::Command::new(pg_restore)
        .arg("--list")
        .arg(file)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|err| format!("cannot run {}: {err}", pg_restore.display()))?;
    if !listed.status.success() {
        return Err(format!(
            "pg_restore cannot read the backup: {}",
            tail(&listed.stderr)
        ));
    }
    let toc = String::from_utf8_lossy(&listed.stdout);
    let entries = match manifest.map(|m| m.scope) {
        Some(Scope::Docket) => Some(docket_entries(&toc)),
        // Without a manifest the scope is unknown: everything but `public`'s own schema
        // entry, which every scratch database already has.
        None => Some(
            toc.lines()
                .filter(|line| !line.contains(" SCHEMA - public "))
                .map(|line| format!("{line}\n"))
                .collect(),
        ),
        Some(_) => None,
    };
    let list = match entries {
        Some(entries) => {
            let path = std::env::temp_dir().join(format!(
                "docket-restore-list-{}",
                uuid::Uuid::now_v7().simple()
            ));
            std::fs::write(&path, entries)
                .map_err(|err| format!("writing {}: {err}", path.display()))?;
            Some(path)
        }
        None => None,
    };
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let mut command = scratch.command(pg_restore);
    command
        .args(["--no-owner", "--no-acl", "--exit-on-error", "--no-password"])
        .arg(format!("--jobs={jobs}"));
    if let Some(list) = &list {
        command.arg(format!("--use-list={}", list.display()));
    }
    let restored = command
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await;
    if let Some(list) = &list {
        let _ = std::fs::remove_file(list);
    }
    let restored = restored.map_err(|err| format!("cannot run {}: {err}", pg_restore.display()))?;
    if !restored.status.success() {
        return Err(format!("pg_restore failed: {}", tail(&restored.stderr)));
    }
    Ok(())
}

/// How long each part of the checks may take on the copy: a restored copy of a big queue
/// is cold, and nothing waits on this answer as a monitor does.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// The checks `docket check` runs, and the counts against the manifest's.
async fn inspect(config: &Config, pool: &PgPool, manifest: Option<&Manifest>) -> Found {
    let health = docket_queue::health::HealthConfig {
        check_timeout: CHECK_TIMEOUT.max(config.health.check_timeout),
        ..config.health.clone()
    };
    let mut checks = vec![super::check::migrations(pool).await];
    checks.extend(
        docket_queue::health::evaluate(pool, &health, &docket_http::health::database_probes(None))
            .await
            .findings,
    );
    let scope = manifest.map_or(Scope::Docket, |m| m.scope);
    let restored = match pool.acquire().await {
        Ok(mut conn) => {
            let read = async {
                let mut tx = conn.begin().await?;
                let contents = docket_queue::backup::contents(&mut tx, scope).await?;
                tx.rollback().await?;
                anyhow::Ok(contents)
            };
            read.await
        }
        Err(err) => Err(err.into()),
    };
    let restored = match restored {
        Ok(restored) => restored,
        Err(err) => {
            return Found {
                failure: Some(format!("cannot count the restored rows: {err:#}")),
                checks,
                ..Found::default()
            }
        }
    };
    // A restored copy has no live worker, and its backlog and dead letters are the
    // backup's: only a check that could not be read, or is down, says the restore is bad.
    let mut failures: Vec<String> = checks
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Down | Verdict::Unknown))
        .map(|c| format!("check {} is {}: {}", c.name, c.verdict, c.detail))
        .collect();
    match manifest {
        Some(manifest) => failures.extend(manifest.contents.differences(&restored)),
        None => failures.push(
            "no readable manifest beside the backup: the restored counts could not be compared"
                .to_owned(),
        ),
    }
    Found {
        failure: (!failures.is_empty()).then(|| failures.join("; ")),
        restored,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scratch_names_are_dropped() {
        assert!(is_scratch(&scratch_name()));
        for name in [
            "postgres",
            "docket",
            "docket_restore_check_",
            "docket_restore_check_x",
            "docket_restore_check_0192f1c2a3b47c8d9e0f1a2b3c4d5e6f; drop database app",
            "app_docket_restore_check_0192f1c2a3b47c8d9e0f1a2b3c4d5e6f",
            "docket_restore_check_0192F1C2A3B47C8D9E0F1A2B3C4D5E6F",
        ] {
            assert!(!is_scratch(name), "{name}");
        }
    }

    #[tokio::test]
    async fn dropping_anything_but_a_scratch_database_is_refused_before_the_server_is_asked() {
        // A pool that could reach nothing: the refusal comes first.
        let pool = PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let err = drop_scratch(&pool, "app").await.unwrap_err();
        assert!(
            err.to_string().contains("refusing to drop \"app\""),
            "{err}"
        );
    }

    #[test]
    fn the_docket_entries_of_a_table_of_contents_are_its_schema_and_the_migrations_table() {
        let toc = "\
;
; Archive created at 2026-12-08 03:15:00 UTC
6; 2615 17707 SCHEMA - docket postgres
4; 2615 2200 SCHEMA - public pg_database_owner
3367; 0 0 COMMENT - SCHEMA public pg_database_owner
843; 1247 17709 TYPE docket job_state postgres
219; 1255 17720 FUNCTION docket uuid_v7() postgres
220; 1255 17731 FUNCTION public appf() docket
216; 1259 17714 TABLE docket jobs postgres
3368; 0 0 SEQUENCE OWNED BY docket jobs_id_seq postgres
217; 1259 17721 TABLE public _sqlx_migrations postgres
3359; 0 17714 TABLE DATA docket jobs postgres
3360; 0 17721 TABLE DATA public _sqlx_migrations postgres
3215; 2606 17727 CONSTRAINT public _sqlx_migrations _sqlx_migrations_pkey postgres
3216; 2606 17728 CONSTRAINT public docket docket_pkey postgres
";
        let entries = docket_entries(toc);
        let kept: Vec<&str> = entries
            .lines()
            .map(|l| l.split(';').next().unwrap())
            .collect();
        assert_eq!(
            kept,
            ["6", "843", "219", "216", "3368", "217", "3359", "3360", "3215"]
        );
    }
}
