//! Docket through a real PgBouncer (Debian's), as `docs/scaling.md` says it works: session
//! pooling, with LISTEN off, enqueues, claims and completes.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use docket_queue::JobState;
use docket_testkit::{eventually, TestDb};
use sqlx::postgres::PgConnectOptions;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// A PgBouncer in front of the test server, on a free port; killed when dropped.
struct Bouncer {
    child: Child,
    port: u16,
    /// Its pid file: as root it runs under `runuser`, and killing `runuser` leaves it.
    pidfile: std::path::PathBuf,
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pidfile) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_bouncer(db: &TestDb, mode: &str) -> Bouncer {
    let options: PgConnectOptions = db.url.parse().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("docket-pgbouncer-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let user = options.get_username().to_owned();
    std::fs::write(dir.join("users.txt"), format!("\"{user}\" \"\"\n")).unwrap();
    std::fs::write(
        dir.join("pgbouncer.ini"),
        format!(
            "[databases]\n* = host={host} port={server_port}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {port}\nauth_type = trust\nauth_file = {dir}/users.txt\npool_mode = {mode}\n\
             max_client_conn = 200\ndefault_pool_size = 50\n\
             ignore_startup_parameters = extra_float_digits,options,statement_timeout\n\
             pidfile = {dir}/pgbouncer.pid\n",
            // The throwaway cluster listens on a Unix socket in a directory.
            host = options
                .get_socket()
                .map_or_else(|| options.get_host().to_owned(), |dir| dir.display().to_string()),
            server_port = options.get_port(),
            dir = dir.display(),
        ),
    )
    .unwrap();
    let ini = dir.join("pgbouncer.ini");
    // PgBouncer refuses to run as root: as root, run it as the postgres system user.
    let mut command = if is_root() {
        Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", "pgbouncer"]);
        command
    } else {
        Command::new("pgbouncer")
    };
    let child = command
        .arg(&ini)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pgbouncer");
    Bouncer {
        child,
        port,
        pidfile: dir.join("pgbouncer.pid"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgbouncer_in_session_mode_with_listen_off_jobs_are_enqueued_claimed_and_completed()
{
    if !docket_testkit::tools::require_program("pgbouncer") {
        return;
    }
    let db = TestDb::new().await;
    let bouncer = start_bouncer(&db, "session");
    let url = format!(
        "postgres://{}@127.0.0.1:{}/{}",
        "postgres", bouncer.port, db.name
    );
    eventually(Duration::from_secs(10), "pgbouncer listens", || async {
        std::net::TcpStream::connect(("127.0.0.1", bouncer.port)).is_ok()
    })
    .await;
    for n in 0..5 {
        let output = Command::new(env!("CARGO_BIN_EXE_docket"))
            .args([
                "enqueue",
                "docket.noop",
                "--payload",
                &format!(r#"{{"n": {n}}}"#),
            ])
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut worker = Command::new(env!("CARGO_BIN_EXE_docket"))
        .arg("worker")
        .env("DATABASE_URL", &url)
        .env("DOCKET_LISTEN", "false")
        .env("DOCKET_POLL_INTERVAL", "0.2")
        .env("DOCKET_QUEUES", "default")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the five jobs complete",
        || async {
            sqlx::query_scalar::<_, i64>("select count(*) from docket.jobs where state = $1")
                .bind(JobState::Completed)
                .fetch_one(&db.pool)
                .await
                .unwrap()
                == 5
        },
    )
    .await;
    let _ = worker.kill();
    let _ = worker.wait();
    drop(bouncer);
}
