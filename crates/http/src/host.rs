//! The host's own checks, contributed to the one health judgement as probes: free disk
//! space, the backups (in [`crate::backup`]) and, when configured, the host's services
//! (`systemctl is-active`). They read this machine; the restore check also reads the
//! database.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use docket_queue::health::{Finding, Probe, ProbeFuture, Verdict};
use sqlx::PgPool;

/// What the host checks inspect.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The filesystem whose free space is checked.
    pub disk_path: PathBuf,
    /// Below this percentage of free space, a warning.
    pub disk_min_free_percent: f64,
    /// Where backups land; `None` skips the backup and restore checks.
    pub backup_dir: Option<PathBuf>,
    /// How old the newest backup may be before a warning.
    pub backup_max_age: Duration,
    /// How old the last passing restore check may be before a warning.
    pub restore_check_max_age: Duration,
    /// systemd units whose state is checked; empty skips the check.
    pub services: Vec<String>,
    /// The command that lists the relay's queue (`postqueue -j`); `None` skips the check.
    pub relay_queue_command: Option<String>,
    /// Above this many messages in the relay's queue, a warning.
    pub relay_queue_warn: usize,
}

impl Default for HostConfig {
    /// `/`, 10 % free, no backup directory, 26 h (a daily backup with slack), 92 days
    /// (a quarterly restore check), no services.
    fn default() -> Self {
        HostConfig {
            disk_path: "/".into(),
            disk_min_free_percent: 10.0,
            backup_dir: None,
            backup_max_age: Duration::from_secs(26 * 3600),
            restore_check_max_age: Duration::from_secs(92 * 86400),
            services: Vec::new(),
            relay_queue_command: None,
            relay_queue_warn: 100,
        }
    }
}

/// The disk check; the backup and restore checks when a backup directory is configured;
/// the services check when services are.
pub fn probes(config: &HostConfig) -> Vec<Arc<dyn Probe>> {
    let mut probes: Vec<Arc<dyn Probe>> = vec![Arc::new(DiskProbe {
        config: config.clone(),
    })];
    probes.extend(crate::backup::probes(config));
    if !config.services.is_empty() {
        probes.push(Arc::new(ServicesProbe {
            services: config.services.clone(),
        }));
    }
    if let Some(command) = &config.relay_queue_command {
        probes.push(Arc::new(crate::relay_queue::RelayQueueProbe {
            command: command.clone(),
            warn_above: config.relay_queue_warn,
        }));
    }
    probes
}

/// Free space, read off the async threads (it spawns `df`).
struct DiskProbe {
    config: HostConfig,
}

impl Probe for DiskProbe {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn probe<'a>(&'a self, _db: Option<&'a PgPool>) -> ProbeFuture<'a> {
        let config = self.config.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || disk(&config))
                .await
                .unwrap_or_else(|err| Finding::unknown("disk", err.to_string()))
        })
    }
}

/// What to do when free space is low (made once: a finding's advice lives as long as the
/// process).
static DISK_ADVICE: std::sync::LazyLock<&'static str> = std::sync::LazyLock::new(|| {
    format!(
        "free space is low: prune old jobs sooner ({}, {}, {}), or grow the disk.",
        docket_settings::COMPLETED_RETENTION,
        docket_settings::CANCELLED_RETENTION,
        docket_settings::DEAD_LETTER_RETENTION
    )
    .leak()
});

/// Total and free bytes of the filesystem holding `path`, from `df -Pk`.
pub fn free_space(path: &std::path::Path) -> Option<(u64, u64)> {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let fields: Vec<u64> = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .skip(1)
        .take(3)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    Some((fields[0] * 1024, fields[2] * 1024)).filter(|(total, _)| *total > 0)
}

/// Free space of the configured path's filesystem.
pub fn disk(config: &HostConfig) -> Finding {
    let parsed = free_space(&config.disk_path).map(|(total, free)| (total / 1024, free / 1024));
    let Some((total_kib, free_kib)) = parsed else {
        return Finding::new(
            "disk",
            Verdict::Warn,
            format!("cannot read free space of {}", config.disk_path.display()),
            *DISK_ADVICE,
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
        *DISK_ADVICE,
    )
}

/// How long one `systemctl is-active` may take.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(1);
/// Where a host booted with systemd has it running (`sd_booted`'s test).
const SYSTEMD_RUNNING: &str = "/run/systemd/system";
const SERVICES_ADVICE: &str = "a service is not running: `systemctl status <unit>` and `journalctl -u <unit>` say why; `unknown` means systemd could not be asked here.";

/// The host's services, each asked with `systemctl is-active`.
struct ServicesProbe {
    services: Vec<String>,
}

impl Probe for ServicesProbe {
    fn name(&self) -> &'static str {
        "services"
    }

    fn probe<'a>(&'a self, _db: Option<&'a PgPool>) -> ProbeFuture<'a> {
        Box::pin(services(
            &self.services,
            std::path::Path::new(SYSTEMD_RUNNING),
        ))
    }
}

/// One unit's state as `systemctl is-active` says it, or why it could not be asked.
async fn is_active(unit: &str) -> Result<String, String> {
    let output = tokio::process::Command::new("systemctl")
        .args(["is-active", "--", unit])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(SYSTEMCTL_TIMEOUT, output).await {
        Err(_) => Err(format!(
            "systemctl did not answer within {} s",
            SYSTEMCTL_TIMEOUT.as_secs()
        )),
        Ok(Err(err)) => Err(format!("cannot run systemctl: {err}")),
        Ok(Ok(out)) => Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
    }
}

/// Each unit's state: `active` is `ok`; `inactive`, `failed` and the like are `degraded`;
/// a host without systemd, a missing `systemctl` or one that does not answer is `unknown`
/// (never `down`: the services are then simply not known).
pub async fn services(units: &[String], systemd_running: &std::path::Path) -> Finding {
    if !systemd_running.exists() {
        return Finding::new(
            "services",
            Verdict::Unknown,
            format!(
                "systemd is not running on this host: {} not known",
                units.join(", ")
            ),
            SERVICES_ADVICE,
        );
    }
    let mut asked = tokio::task::JoinSet::new();
    for (index, unit) in units.iter().enumerate() {
        let unit = unit.clone();
        asked.spawn(async move { (index, is_active(&unit).await) });
    }
    let mut states: Vec<(usize, Result<String, String>)> = asked.join_all().await;
    states.sort_by_key(|(index, _)| *index);
    let mut verdict = Verdict::Ok;
    let mut parts = Vec::new();
    for ((_, state), unit) in states.into_iter().zip(units) {
        let (this, said) = match state {
            Ok(state) if state == "active" => (Verdict::Ok, state),
            Ok(state) if state.is_empty() || state == "unknown" => {
                (Verdict::Unknown, "unknown".to_owned())
            }
            Ok(state) => (Verdict::Degraded, state),
            Err(why) => (Verdict::Unknown, format!("unknown ({why})")),
        };
        verdict = verdict.max(this);
        parts.push(format!("{unit} {said}"));
    }
    Finding::new("services", verdict, parts.join(", "), SERVICES_ADVICE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn services_on_a_host_without_systemd_are_unknown_never_down() {
        let nowhere = std::env::temp_dir().join(format!("no-systemd-{}", uuid::Uuid::new_v4()));
        let finding = services(&["docket-serve".into(), "postfix".into()], &nowhere).await;
        assert_eq!(finding.verdict, Verdict::Unknown);
        assert_eq!(
            finding.detail,
            "systemd is not running on this host: docket-serve, postfix not known"
        );
    }
}
