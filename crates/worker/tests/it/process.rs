//! A worker in a process of its own, for the tests that stop one for real (SIGSTOP,
//! SIGKILL): this test binary started again, running the one ignored test that runs a
//! worker (`entry`), configured through environment variables.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use docket_testkit::{eventually, TestDb};

/// A worker process, killed when dropped (also when the test fails while it is stopped).
pub(crate) struct WorkerProcess(Child);

impl WorkerProcess {
    /// Starts the ignored test `entry` (`module::name`) with `env` set.
    pub(crate) fn start(entry: &str, env: &[(&str, String)]) -> WorkerProcess {
        let child = Command::new(std::env::current_exe().expect("this test binary"))
            .args([entry, "--exact", "--ignored", "--nocapture"])
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a worker process");
        WorkerProcess(child)
    }

    pub(crate) fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).expect("a pid")
    }

    /// Sends `kill -NAME` (`STOP`, `CONT`, `KILL`).
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    }

    /// Waits until the worker process has registered.
    pub(crate) async fn registered(&self, db: &TestDb) {
        eventually(
            Duration::from_secs(60),
            "the worker process registered",
            || async {
                sqlx::query_scalar::<_, bool>(
                    "select exists (select 1 from docket.workers where pid = $1)",
                )
                .bind(self.pid())
                .fetch_one(&db.pool)
                .await
                .unwrap()
            },
        )
        .await;
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
