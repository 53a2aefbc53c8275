//! `docket backup [--all]`: dumps what Docket owns (the `docket` schema and sqlx's
//! migrations table), or the whole database, with `pg_dump` in custom format into
//! [`BACKUP_DIR`](docket_settings::BACKUP_DIR), writes its manifest (size, rows per table, jobs per state, read in
//! the dump's own snapshot) beside it, and keeps the newest [`BACKUP_KEEP`](docket_settings::BACKUP_KEEP).
//!
//! The dump is written under a hidden name and renamed only once it and its manifest are
//! complete: a dump cut off (a crash, a full disk, Ctrl-C) is never the newest backup.
//! Before it starts, the command refuses a directory it cannot write and a disk without
//! room for the dump.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::Utc;
use docket_http::backup::{self as layout, human_size, Backup, Manifest};
use docket_queue::backup::Scope;
use docket_queue::telemetry::event;
use sqlx::{ConnectOptions, Executor};

use crate::cli::BackupArgs;
use crate::config::Config;
use docket_settings as settings;

/// A PostgreSQL client program (`pg_dump`, `pg_restore`): on `PATH`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian's layout, where only some are linked onto `PATH`).
pub(crate) fn pg_tool(program: &str) -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(program))
        .find(|path| path.is_file());
    if let Some(path) = on_path {
        return Ok(path);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let path = entry.path().join("bin").join(program);
            path.is_file().then_some((version, path))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, path)| path).with_context(|| {
        format!(
            "{program} not found on PATH or under /usr/lib/postgresql/*/bin: install \
             PostgreSQL's client programs (apt-get install postgresql-client)"
        )
    })
}

/// The version line of a client program (`pg_dump (PostgreSQL) 15.20`).
pub(crate) async fn tool_version(program: &Path) -> String {
    let output = tokio::process::Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await;
    output
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The last lines of a program's error output, for a message.
pub(crate) fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(3);
    lines[start..].join(" / ")
}

/// The backup directory, or why there is none to use.
pub(crate) fn backup_dir(config: &Config) -> anyhow::Result<&Path> {
    config.check.backup_dir.as_deref().with_context(|| {
        format!(
            "{} is not set: point it at the directory backups go to, e.g. /var/backups/docket",
            settings::BACKUP_DIR
        )
    })
}

/// Removes the partial dump unless it was completed (renamed away).
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub(crate) async fn run(config: &Config, args: BackupArgs) -> anyhow::Result<ExitCode> {
    crate::cmd::refuse_through_pooler("backup")?;
    match backup(config, &args).await {
        Ok(Some(manifest)) => {
            if args.output.json {
                crate::cmd::print_json(&manifest)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(None) => {
            eprintln!("interrupted: the partial dump was removed; no backup was taken");
            Ok(ExitCode::from(130))
        }
        Err(err) => {
            tracing::error!(event = event::BACKUP_FAILED, error.message = %format!("{err:#}"), "backup failed");
            Err(err)
        }
    }
}

/// Takes the backup; `None` when a signal interrupted it.
async fn backup(config: &Config, args: &BackupArgs) -> anyhow::Result<Option<Manifest>> {
    let dir = backup_dir(config)?;
    let metadata =
        std::fs::metadata(dir).with_context(|| format!("backup directory {}", dir.display()))?;
    if !metadata.is_dir() {
        bail!("backup directory {} is not a directory", dir.display());
    }
    let pg_dump = pg_tool("pg_dump")?;
    let url = config.require_database()?;
    let pool = crate::cmd::connect(url).await?;
    // Counting a big table takes seconds by design: no slow-statement warnings for it.
    pool.set_connect_options(url.options().disable_statement_logging());
    let scope = if args.all { Scope::All } else { Scope::Docket };

    // One snapshot for the dump and the manifest's counts: they are the dump's exactly.
    let mut snapshot = pool.begin().await?;
    snapshot
        .execute("set transaction isolation level repeatable read, read only")
        .await?;
    let snapshot_id: String = sqlx::query_scalar("select pg_export_snapshot()")
        .fetch_one(&mut *snapshot)
        .await?;
    let taken_at = Utc::now();

    // Room for it, before anything is written: the last backup's size (a dump of the same
    // data grows slowly), else the tables' size on disk (an upper bound: no indexes, and
    // the custom format compresses).
    let estimate = match layout::newest(dir).ok().flatten() {
        Some(last) => last.size,
        None => {
            let size: i64 = sqlx::query_scalar(
                r#"
                select coalesce(sum(pg_table_size(c.oid)), 0)::bigint
                from pg_class c join pg_namespace n on n.oid = c.relnamespace
                where c.relkind = 'r' and case when $1
                    then n.nspname not in ('pg_catalog', 'information_schema')
                    else n.nspname = 'docket' or (n.nspname = 'public' and c.relname = '_sqlx_migrations')
                end
                "#,
            )
            .bind(args.all)
            .fetch_one(&mut *snapshot)
            .await?;
            size.max(0) as u64
        }
    };
    if let Some((_, free)) = docket_http::host::free_space(dir) {
        let needed = estimate + estimate / 10;
        if free < needed {
            bail!(
                "not enough free space in {}: {} free, the dump needs about {}; free space there \
                 or keep fewer backups ({})",
                dir.display(),
                human_size(free),
                human_size(needed),
                settings::BACKUP_KEEP
            );
        }
    }

    let partial_path = dir.join(Backup::partial_name(taken_at));
    std::fs::File::create_new(&partial_path).with_context(|| {
        format!(
            "cannot write in the backup directory {} (as this user)",
            dir.display()
        )
    })?;
    let partial = Partial(partial_path);

    let client = url.for_client(None)?;
    let mut dump = client.command(&pg_dump);
    dump.args(["--format=custom", "--no-password"])
        .arg(format!("--snapshot={snapshot_id}"))
        .arg("--file")
        .arg(&partial.0);
    if scope == Scope::Docket {
        // `--table` would make pg_dump drop `--schema`: the two schemas, less every
        // relation of `public` but the migrations table.
        dump.args(["--schema=docket", "--schema=public"]);
        for relation in docket_queue::backup::excluded_public_relations(&mut *snapshot).await? {
            dump.arg(format!("--exclude-table={relation}"));
        }
    }
    dump.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let child = dump
        .spawn()
        .with_context(|| format!("cannot run {}", pg_dump.display()))?;
    let dumped = async {
        // The counts, in the same snapshot, while pg_dump writes.
        let (output, contents) = tokio::join!(
            child.wait_with_output(),
            docket_queue::backup::contents(&mut snapshot, scope)
        );
        anyhow::Ok((output?, contents?))
    };
    let (output, contents) = tokio::select! {
        dumped = dumped => dumped?,
        () = interrupted() => return Ok(None),
    };
    snapshot.rollback().await.ok();
    pool.close().await;
    if !output.status.success() {
        bail!(
            "pg_dump failed ({}): {}",
            output.status,
            tail(&output.stderr)
        );
    }
    let duration = started.elapsed();
    let size = std::fs::metadata(&partial.0)?.len();
    // The dump holds every job's payload: its owner's to read, nobody else's.
    std::fs::set_permissions(
        &partial.0,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .context("making the backup private")?;

    let file = Backup::file_name(taken_at);
    let manifest = Manifest {
        file: file.clone(),
        taken_at,
        scope,
        database: url.database(),
        size_bytes: size,
        duration_ms: duration.as_millis() as u64,
        pg_dump: tool_version(&pg_dump).await,
        contents,
    };
    let path = dir.join(&file);
    let backup = Backup {
        path: path.clone(),
        taken_at,
        size,
    };
    // The manifest first, then the dump's rename: a backup is complete once it has a name.
    let manifest_partial = dir.join(format!(".{file}.json{}", ".partial"));
    std::fs::write(&manifest_partial, serde_json::to_vec_pretty(&manifest)?)
        .context("writing the manifest")?;
    std::fs::rename(&manifest_partial, backup.manifest_path()).context("writing the manifest")?;
    std::fs::rename(&partial.0, &path).context("naming the backup")?;
    drop(partial);

    let pruned = layout::prune(dir, config.backup.keep)
        .with_context(|| format!("pruning {}", dir.display()))?;
    // The backup is taken: an entry that cannot be pruned is said, not a failure.
    for (path, why) in &pruned.left {
        eprintln!("warning: could not prune {}: {why}", path.display());
    }
    let pruned = pruned
        .removed
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dump"))
        .count();
    tracing::info!(
        event = event::BACKUP_TAKEN,
        file = %path.display(),
        size_bytes = size,
        duration_ms = manifest.duration_ms,
        jobs = manifest.contents.job_total(),
        pruned,
        "backup taken"
    );
    if !args.output.json {
        println!(
            "backup {} ({}, {}, {}) in {:.1} s; kept the newest {}, removed {pruned}",
            path.display(),
            human_size(size),
            docket_queue::counted(manifest.contents.tables.len(), "table", "tables"),
            docket_queue::counted(manifest.contents.job_total(), "job", "jobs"),
            duration.as_secs_f64(),
            config.backup.keep,
        );
    }
    Ok(Some(manifest))
}

/// Completes on SIGINT or SIGTERM (a one-shot command: no second-signal fast exit).
pub(crate) async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
