//! The host's own checks: free disk space and the age of the newest backup, contributed to
//! the one health judgement as probes. They read this machine, not the database.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use docket_queue::health::{Finding, Probe, ProbeFuture, Verdict};
use sqlx::PgPool;

/// What the host checks inspect.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The filesystem whose free space is checked.
    pub disk_path: PathBuf,
    /// Below this percentage of free space, a warning.
    pub disk_min_free_percent: f64,
    /// Where backups land; `None` skips the backup check.
    pub backup_dir: Option<PathBuf>,
    /// How old the newest backup may be before a warning.
    pub backup_max_age: Duration,
}

impl Default for HostConfig {
    /// `/`, 10 % free, no backup directory, 26 h (a daily backup with slack).
    fn default() -> Self {
        HostConfig {
            disk_path: "/".into(),
            disk_min_free_percent: 10.0,
            backup_dir: None,
            backup_max_age: Duration::from_secs(26 * 3600),
        }
    }
}

/// The disk check, and the backup check when a backup directory is configured.
pub fn probes(config: &HostConfig) -> Vec<Arc<dyn Probe>> {
    let mut probes: Vec<Arc<dyn Probe>> = vec![Arc::new(HostProbe {
        name: "disk",
        config: config.clone(),
    })];
    if config.backup_dir.is_some() {
        probes.push(Arc::new(HostProbe {
            name: "backup",
            config: config.clone(),
        }));
    }
    probes
}

/// One host check, run off the async threads (it spawns `df` or walks a directory).
struct HostProbe {
    name: &'static str,
    config: HostConfig,
}

impl Probe for HostProbe {
    fn name(&self) -> &'static str {
        self.name
    }

    fn probe<'a>(&'a self, _db: Option<&'a PgPool>) -> ProbeFuture<'a> {
        let (name, config) = (self.name, self.config.clone());
        Box::pin(async move {
            let checked = tokio::task::spawn_blocking(move || match (name, &config.backup_dir) {
                ("backup", Some(dir)) => backup(dir, config.backup_max_age),
                _ => disk(&config),
            })
            .await;
            checked.unwrap_or_else(|err| Finding::unknown(name, err.to_string()))
        })
    }
}

const DISK_ADVICE: &str =
    "free space is low: prune old jobs sooner (DOCKET_RETENTION_*), or grow the disk.";
const BACKUP_ADVICE: &str = "the newest backup is missing or old: check the backup job (the runbook's \"Backup and restore\").";

/// Free space of the configured path's filesystem, from `df -Pk`.
pub fn disk(config: &HostConfig) -> Finding {
    let output = std::process::Command::new("df")
        .arg("-Pk")
        .arg(&config.disk_path)
        .output();
    let parsed = output.ok().and_then(|out| {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let fields: Vec<u64> = text
            .lines()
            .nth(1)?
            .split_whitespace()
            .skip(1)
            .take(3)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        Some((fields[0], fields[2]))
    });
    let Some((total_kib, free_kib)) = parsed.filter(|(total, _)| *total > 0) else {
        return Finding::new(
            "disk",
            Verdict::Warn,
            format!("cannot read free space of {}", config.disk_path.display()),
            DISK_ADVICE,
        );
    };
    let percent = free_kib as f64 * 100.0 / total_kib as f64;
    Finding::new(
        "disk",
        if percent < config.disk_min_free_percent {
            Verdict::Warn
        } else {
            Verdict::Ok
        },
        format!(
            "{:.1} GiB free ({percent:.0}%) on {} (minimum {}%)",
            free_kib as f64 / 1024.0 / 1024.0,
            config.disk_path.display(),
            config.disk_min_free_percent
        ),
        DISK_ADVICE,
    )
}

/// Age of the newest file in the backup directory.
pub fn backup(dir: &Path, max_age: Duration) -> Finding {
    let newest = std::fs::read_dir(dir).ok().and_then(|entries| {
        entries
            .flatten()
            .filter_map(|entry| {
                entry
                    .metadata()
                    .ok()
                    .filter(|m| m.is_file())?
                    .modified()
                    .ok()
            })
            .max()
    });
    let Some(newest) = newest else {
        return Finding::new(
            "backup",
            Verdict::Warn,
            format!("no backup file in {}", dir.display()),
            BACKUP_ADVICE,
        );
    };
    let age = SystemTime::now().duration_since(newest).unwrap_or_default();
    let hours = age.as_secs_f64() / 3600.0;
    Finding::new(
        "backup",
        if age > max_age {
            Verdict::Warn
        } else {
            Verdict::Ok
        },
        format!(
            "newest backup {hours:.1} h old in {} (maximum {:.1} h)",
            dir.display(),
            max_age.as_secs_f64() / 3600.0
        ),
        BACKUP_ADVICE,
    )
}
