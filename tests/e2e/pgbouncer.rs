//! Docket through a real PgBouncer (Debian's), as `docs/scaling.md` says it works: session
//! pooling, with LISTEN off, enqueues, claims and completes; transaction pooling with
//! `DOCKET_POOLER=transaction`, with fewer server connections than clients, runs every path.

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

impl Bouncer {
    /// `db` through this PgBouncer.
    fn url(&self, db: &TestDb) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, db.name)
    }

    /// The client connections it holds to `db` (its admin console, through `psql`).
    fn clients(&self, db: &TestDb) -> usize {
        let output = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-At", "-F", "|", "-c", "show clients", "pgbouncer"])
            .output()
            .expect("run psql");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            // type|user|database|...
            .filter(|line| line.split('|').nth(2) == Some(db.name.as_str()))
            .count()
    }
}

/// A PgBouncer in front of `db` in pool `mode`, with at most `servers` server connections to
/// the database.
fn start_bouncer(db: &TestDb, mode: &str, servers: u32) -> Bouncer {
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
             max_client_conn = 200\ndefault_pool_size = {servers}\nmax_db_connections = {servers}\n\
             admin_users = {user}\nignore_startup_parameters = extra_float_digits,options,statement_timeout\n\
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
    let bouncer = start_bouncer(&db, "session", 50);
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

/// Server connections PgBouncer may open to the test's database: far fewer than the clients
/// below, so every client's transactions share them.
const SHARED_SERVERS: u32 = 3;

const EVERY_SECOND: &str = r#"
[[schedule]]
name = "pooled-tick"
cron = "* * * * * *"
kind = "docket.noop"
payload = { source = "cron" }
"#;

/// `docket` with `args` through the pooler in transaction mode.
fn docket_pooled(url: &str, dir: &std::path::Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_docket"));
    command
        .args(args)
        .env("DATABASE_URL", url)
        .env("DOCKET_POOLER", "transaction")
        .env("DOCKET_LOG_FORMAT", "json")
        .env("DOCKET_CONFIG", dir.join("docket.toml"))
        .env("DOCKET_TEMPLATE_DIR", dir.join("templates"))
        .env("DOCKET_MAIL_FROM", "Docket <docket@example.com>")
        .env("DOCKET_POLL_INTERVAL", "0.2")
        .env("DOCKET_HEARTBEAT_INTERVAL", "0.5")
        .env("DOCKET_LEASE_TIMEOUT", "2")
        .env("DOCKET_RESCUER_INTERVAL", "0.5");
    command
}

fn succeeds(mut command: Command) -> String {
    let output = command.output().expect("run docket");
    assert!(
        output.status.success(),
        "docket failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// `GET /api/health` with the bearer: the status and the body.
fn health(port: u16, secret: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET /api/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Authorization: Bearer {secret}\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some((status, body.to_owned()))
}

fn kill(mut child: Child, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgbouncer_in_transaction_mode_with_shared_server_connections_every_path_works() {
    if !docket_testkit::tools::require_program("pgbouncer") {
        return;
    }
    let db = TestDb::new().await;
    let bouncer = start_bouncer(&db, "transaction", SHARED_SERVERS);
    let url = bouncer.url(&db);
    eventually(Duration::from_secs(10), "pgbouncer listens", || async {
        std::net::TcpStream::connect(("127.0.0.1", bouncer.port)).is_ok()
    })
    .await;
    let sink = docket_testkit::SmtpSink::start().await;
    let dir = std::env::temp_dir().join(format!("docket-pooled-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(dir.join("templates/news")).unwrap();
    std::fs::write(
        dir.join("templates/news/subject.txt"),
        "News for {{ name }}",
    )
    .unwrap();
    std::fs::write(dir.join("templates/news/body.txt"), "Hello {{ name }}.").unwrap();
    std::fs::write(dir.join("docket.toml"), EVERY_SECOND).unwrap();
    let recipients = dir.join("recipients.csv");
    let mut csv = String::from("email,name\n");
    for i in 0..20 {
        csv.push_str(&format!("user{i}@example.com,User {i}\n"));
    }
    std::fs::write(&recipients, csv).unwrap();

    // Migrations need a session: refused through the pooler, with the way out said.
    let output = docket_pooled(&url, &dir, &["migrate"]).output().unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Run `docket migrate` with DATABASE_URL"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // A worker on its own queue takes a long job, and is killed with SIGKILL holding it.
    succeeds(docket_pooled(
        &url,
        &dir,
        &[
            "enqueue",
            "docket.sleep",
            "--queue",
            "slow",
            "--payload",
            r#"{"ms": 3000}"#,
        ],
    ));
    let doomed = docket_pooled(&url, &dir, &["worker", "--queues", "slow"])
        .env("DOCKET_CRON", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the long job is claimed",
        || async {
            count(
                &db,
                "select count(*) from docket.jobs where queue = 'slow' and state = 'processing'",
            )
            .await
                == 1
        },
    )
    .await;
    kill(doomed, "-KILL");

    // Enqueues from many processes at once, a job that fails once, and a campaign.
    let enqueues: Vec<Child> = (0..12)
        .map(|n| {
            docket_pooled(
                &url,
                &dir,
                &[
                    "enqueue",
                    "docket.noop",
                    "--payload",
                    &format!(r#"{{"n": {n}}}"#),
                ],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for enqueue in enqueues {
        let output = enqueue.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    succeeds(docket_pooled(
        &url,
        &dir,
        &["enqueue", "docket.fail", "--payload", r#"{"times": 1}"#],
    ));
    let campaign = succeeds(docket_pooled(
        &url,
        &dir,
        &[
            "mail",
            "campaign",
            "create",
            "--name",
            "pooled",
            "--template",
            "news",
            "--recipients",
            recipients.to_str().unwrap(),
            "--batch-size",
            "5",
        ],
    ));

    // Two workers and a `serve`, each with a pool of its own: many more clients than the
    // server connections they share.
    // Logs go to files: a pipe nobody reads until the end could fill and stall a process.
    let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
    let workers: Vec<Child> = (0..2)
        .map(|n| {
            docket_pooled(&url, &dir, &["worker", "--queues", "default,mail,slow"])
                .env("DOCKET_SMTP_URL", sink.url())
                .env("DOCKET_PUBLIC_URL", "https://docket.example.com")
                .env(
                    "DOCKET_MAIL_TOKEN_SECRET",
                    "pooled-token-secret-0123456789abcdef",
                )
                .stdout(Stdio::null())
                .stderr(log(&format!("worker-{n}.log")))
                .spawn()
                .unwrap()
        })
        .collect();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret = "pooled-secret-0123456789";
    let serve = docket_pooled(&url, &dir, &["serve", "--queues", "default"])
        .env("DOCKET_SMTP_URL", sink.url())
        .env("DOCKET_PUBLIC_URL", "https://docket.example.com")
        .env(
            "DOCKET_MAIL_TOKEN_SECRET",
            "pooled-token-secret-0123456789abcdef",
        )
        .env("DOCKET_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("CRON_SECRET", secret)
        .stdout(Stdio::null())
        .stderr(log("serve.log"))
        .spawn()
        .unwrap();

    eventually(Duration::from_secs(60), "every path has run", || async {
        count(&db, "select count(*) from docket.jobs where kind = 'docket.noop' and payload ? 'n' and state = 'completed'").await == 12
            && count(&db, "select count(*) from docket.jobs where kind = 'docket.fail' and state = 'completed' and attempt = 2").await == 1
            && count(&db, "select count(*) from docket.jobs where queue = 'slow' and state = 'completed' and attempt = 2").await == 1
            && count(&db, "select count(*) from docket.jobs where payload->>'source' = 'cron' and state = 'completed'").await >= 3
            && sink.messages().len() == 20
    })
    .await;
    let shown: serde_json::Value = serde_json::from_str(&succeeds(docket_pooled(
        &url,
        &dir,
        &["mail", "campaign", "show", &campaign, "--json"],
    )))
    .unwrap();
    assert_eq!(shown["sent"], 20, "{shown}");
    eventually(Duration::from_secs(30), "the campaign finishes", || async {
        count(&db, "select count(*) from docket.jobs where kind = 'mail.campaign_finished' and state = 'completed'").await == 1
    })
    .await;
    let (status, body) = health(port, secret).expect("serve answers");
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["checks"]["database"], "ok", "{health}");
    assert!(health["queue"]["queues"].is_object(), "{health}");

    // The connections really were shared: more clients than server connections.
    let clients = bouncer.clients(&db);
    let servers = count(
        &db,
        "select count(*) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()",
    )
    .await
        - i64::from(db.pool.size())
        + 1;
    assert!(
        clients > 3 * SHARED_SERVERS as usize && servers <= i64::from(SHARED_SERVERS),
        "{clients} clients on {servers} server connections"
    );

    for child in workers.into_iter().chain([serve]) {
        kill(child, "-TERM");
    }
    let logs: String = ["worker-0.log", "worker-1.log", "serve.log"]
        .iter()
        .map(|name| std::fs::read_to_string(dir.join(name)).unwrap())
        .collect();
    assert!(
        logs.contains("worker.pooler_transaction"),
        "each process says what polling costs: {logs}"
    );
    let errors: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(
        errors.is_empty(),
        "no errors through the pooler: {errors:#?}"
    );
    drop(bouncer);
}
