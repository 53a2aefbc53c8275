//! The drill's processes: one `docket serve` and N drill workers, their logs in the
//! report's folder, and their peak memory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The token secret every drill process signs unsubscribe links with.
pub(crate) const TOKEN_SECRET: &str = "drill-token-secret-0123456789abcdef";

/// A child process, stopped (SIGTERM, then SIGKILL after 10 s) when dropped.
pub(crate) struct Process {
    pub(crate) child: Child,
    pub(crate) name: String,
}

impl Process {
    fn spawn(mut command: Command, name: String, log: &Path) -> anyhow::Result<Process> {
        let log = File::options().create(true).append(true).open(log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|err| anyhow::anyhow!("cannot start {name}: {err}"))?;
        Ok(Process { child, name })
    }

    /// `kill -9`: no shutdown, no cleanup, as when a machine dies.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub(crate) fn stop(&mut self, grace: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }

    /// Peak resident memory (VmHWM) in KiB, while it runs.
    pub(crate) fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    }

    /// Whether it has exited (a crash the drill did not cause).
    pub(crate) fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.exited() {
            self.stop(Duration::from_secs(10));
        }
    }
}

/// What the processes share.
pub(crate) struct Setup {
    pub(crate) database_url: String,
    pub(crate) out: PathBuf,
    pub(crate) docket: PathBuf,
    pub(crate) secret: String,
    pub(crate) http_port: u16,
    pub(crate) smtp_url: String,
    pub(crate) templates: PathBuf,
    pub(crate) worker_concurrency: usize,
    pub(crate) limited_rate: String,
}

/// `docket serve`: HTTP, maintenance, and the mail queues (the campaigns' emails, and the
/// recovery emails smtp-busy sends).
///
/// Every process signs links with the same secret.
pub(crate) fn serve(setup: &Setup) -> anyhow::Result<Process> {
    let mut command = Command::new(&setup.docket);
    command
        .arg("serve")
        .env("DATABASE_URL", &setup.database_url)
        .env("CRON_SECRET", &setup.secret)
        .env(
            docket_settings::HTTP_ADDR.var,
            format!("127.0.0.1:{}", setup.http_port),
        )
        .env(docket_settings::QUEUES.var, "mail,recovery")
        .env(docket_settings::SMTP_URL.var, &setup.smtp_url)
        .env(
            docket_settings::PUBLIC_URL.var,
            format!("http://127.0.0.1:{}", setup.http_port),
        )
        .env(docket_settings::MAIL_TOKEN_SECRET.var, TOKEN_SECRET)
        .env(
            docket_settings::MAIL_FROM.var,
            "Docket drill <drill@example.com>",
        )
        .env(docket_settings::TEMPLATE_DIR.var, &setup.templates)
        .env(docket_settings::LOG_FORMAT.var, "json")
        .env(docket_settings::POLL_INTERVAL.var, "0.2")
        .env(docket_settings::HEARTBEAT_INTERVAL.var, "0.5")
        .env(docket_settings::LEASE_TIMEOUT.var, "2")
        // A 451 is retried within seconds, so the relay's fault fits in the drill.
        .env(docket_settings::MAIL_RETRY_LADDER.var, "1s,2s,4s,8s");
    Process::spawn(command, "docket serve".into(), &setup.out.join("serve.log"))
}

/// A drill worker: this binary's `drill-worker`, the runtime embedded with the drill kinds.
pub(crate) fn worker(setup: &Setup, index: usize) -> anyhow::Result<Process> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args([
            "drill-worker",
            "--concurrency",
            &setup.worker_concurrency.to_string(),
            "--heartbeat-ms",
            "500",
            "--lease-ms",
            "2000",
            "--limited-rate",
            &setup.limited_rate,
        ])
        .env("DATABASE_URL", &setup.database_url)
        .env("RUST_LOG", "info");
    Process::spawn(
        command,
        format!("drill worker {index}"),
        &setup.out.join(format!("worker-{index}.log")),
    )
}
