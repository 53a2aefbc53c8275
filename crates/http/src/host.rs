//! The host's own checks: free disk space and the age of the newest backup. `docket check`
//! prints them and the operations page shows them; they read this machine, not the
//! database.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

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

/// One check's verdict, worst last so that `max` is the overall verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing to do.
    Ok,
    /// Needs a look.
    Warn,
    /// Failing.
    Fail,
}

/// One named check with what it saw.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    /// `disk`, `backup`, `database`, ...
    pub name: &'static str,
    /// Its verdict.
    pub status: Verdict,
    /// What it saw, for a person.
    pub detail: String,
}

/// The disk check, and the backup check when a backup directory is configured.
pub fn checks(config: &HostConfig) -> Vec<Item> {
    let mut items = vec![disk(config)];
    if let Some(dir) = &config.backup_dir {
        items.push(backup(dir, config.backup_max_age));
    }
    items
}

/// Free space of the configured path's filesystem, from `df -Pk`.
pub fn disk(config: &HostConfig) -> Item {
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
        return Item {
            name: "disk",
            status: Verdict::Warn,
            detail: format!("cannot read free space of {}", config.disk_path.display()),
        };
    };
    let percent = free_kib as f64 * 100.0 / total_kib as f64;
    Item {
        name: "disk",
        status: if percent < config.disk_min_free_percent {
            Verdict::Warn
        } else {
            Verdict::Ok
        },
        detail: format!(
            "{:.1} GiB free ({percent:.0}%) on {} (minimum {}%)",
            free_kib as f64 / 1024.0 / 1024.0,
            config.disk_path.display(),
            config.disk_min_free_percent
        ),
    }
}

/// Age of the newest file in the backup directory.
pub fn backup(dir: &Path, max_age: Duration) -> Item {
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
        return Item {
            name: "backup",
            status: Verdict::Warn,
            detail: format!("no backup file in {}", dir.display()),
        };
    };
    let age = SystemTime::now().duration_since(newest).unwrap_or_default();
    let hours = age.as_secs_f64() / 3600.0;
    Item {
        name: "backup",
        status: if age > max_age {
            Verdict::Warn
        } else {
            Verdict::Ok
        },
        detail: format!(
            "newest backup {hours:.1} h old in {} (maximum {:.1} h)",
            dir.display(),
            max_age.as_secs_f64() / 3600.0
        ),
    }
}
