//! A fresh database per test, cloned from a template that was migrated once.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, PgConnection, PgPool};
use tokio::sync::OnceCell;

use crate::postgres::server;

/// Test databases older than this are leftovers of failed runs and are dropped.
const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

/// Connections one test's pool may open, unless it asks for more.
const POOL_SIZE_DEFAULT: u32 = 10;

/// A database of one test's own, migrated, with a pool to it. Dropped when the test
/// passes; kept (and its name printed) when the test fails, for a look.
pub struct TestDb {
    /// A pool to the database.
    pub pool: PgPool,
    /// The database's name.
    pub name: String,
    /// A connection URL for it, for child processes.
    pub url: String,
}

impl TestDb {
    /// A fresh database with a pool of up to 10 connections.
    ///
    /// # Panics
    ///
    /// When the server cannot be reached or the database cannot be made.
    pub async fn new() -> TestDb {
        TestDb::with_pool_size(POOL_SIZE_DEFAULT).await
    }

    /// A fresh database with a pool of up to `size` connections.
    ///
    /// # Panics
    ///
    /// When the server cannot be reached or the database cannot be made.
    pub async fn with_pool_size(size: u32) -> TestDb {
        let template = template().await;
        let name = format!(
            "docket_test_{}_{}",
            unix_seconds(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut admin = admin_connection().await;
        admin
            .execute(format!(r#"create database "{name}" template "{template}""#).as_str())
            .await
            .unwrap_or_else(|err| panic!("cannot create test database {name}: {err}"));
        admin.close().await.ok();
        let url = server().url(&name);
        let pool = PgPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(Duration::from_secs(30))
            // A ping before every acquire doubles the round trips of short statements.
            .test_before_acquire(false)
            .connect_with(connect_options(&url))
            .await
            .unwrap_or_else(|err| panic!("cannot connect to test database {name}: {err}"));
        TestDb { pool, name, url }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: its database {} is kept for a look", self.name);
            return;
        }
        // Drop is not async: do the drop on a thread with a runtime of its own.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = admin_connection().await;
                admin
                    .execute(format!(r#"drop database if exists "{name}" with (force)"#).as_str())
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

fn connect_options(url: &str) -> PgConnectOptions {
    url.parse::<PgConnectOptions>()
        .unwrap_or_else(|err| panic!("bad database URL {url}: {err}"))
        // Tests log nothing per statement unless asked.
        .disable_statement_logging()
}

async fn admin_connection() -> PgConnection {
    let url = server().url("postgres");
    PgConnection::connect_with(&connect_options(&url))
        .await
        .unwrap_or_else(|err| panic!("cannot connect to PostgreSQL at {url}: {err}"))
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The migrated template's name; made on first use, once per migration history (the
/// name carries a hash of the migrations' checksums), shared by concurrent test processes
/// under an advisory lock.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE.get_or_init(make_template).await
}

async fn make_template() -> String {
    let mut hasher = DefaultHasher::new();
    for migration in docket_queue::MIGRATOR.iter() {
        migration.version.hash(&mut hasher);
        migration.checksum.hash(&mut hasher);
    }
    let digest = hasher.finish();
    let name = format!("docket_template_{digest:016x}");

    let mut admin = admin_connection().await;
    let lock_key = i64::from_ne_bytes(digest.to_ne_bytes());
    sqlx::query("select pg_advisory_lock($1)")
        .bind(lock_key)
        .execute(&mut admin)
        .await
        .expect("advisory lock");
    sweep_leftovers(&mut admin, &name).await;

    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .expect("look up the template database");
    if !exists {
        // Migrate under a temporary name and rename at the end, so that a run that dies
        // half-way never leaves a half-migrated template behind.
        let building = format!("{name}_building");
        admin
            .execute(format!(r#"drop database if exists "{building}" with (force)"#).as_str())
            .await
            .expect("drop a half-built template");
        admin
            .execute(format!(r#"create database "{building}""#).as_str())
            .await
            .expect("create the template database");
        let mut conn = PgConnection::connect_with(&connect_options(&server().url(&building)))
            .await
            .expect("connect to the template database");
        docket_queue::MIGRATOR
            .run(&mut conn)
            .await
            .unwrap_or_else(|err| panic!("migrations failed: {err}"));
        conn.close().await.ok();
        admin
            .execute(format!(r#"alter database "{building}" rename to "{name}""#).as_str())
            .await
            .expect("rename the template database");
    }
    // Stamped with its last use, so that a sweep by a run of another migration history (a
    // second checkout on the same server) leaves it alone while it is in use.
    admin
        .execute(
            format!(
                r#"comment on database "{name}" is '{TEMPLATE_STAMP}{}'"#,
                unix_seconds()
            )
            .as_str(),
        )
        .await
        .expect("stamp the template database");
    sqlx::query("select pg_advisory_unlock($1)")
        .bind(lock_key)
        .execute(&mut admin)
        .await
        .expect("advisory unlock");
    admin.close().await.ok();
    name
}

/// The start of a template database's comment, followed by when a run last used it.
const TEMPLATE_STAMP: &str = "docket test template, last used at unix second ";

/// Drops test databases left by runs that failed long enough ago, and templates of other
/// migration histories that no run has used for as long (best effort: one in use stays).
async fn sweep_leftovers(admin: &mut PgConnection, template: &str) {
    let cutoff = unix_seconds().saturating_sub(LEFTOVER_AGE.as_secs());
    let templates: Vec<(String, Option<String>)> = sqlx::query_as(
        "select datname::text, shobj_description(oid, 'pg_database') from pg_database
         where datname like 'docket_template_%' and datname <> $1",
    )
    .bind(template)
    .fetch_all(&mut *admin)
    .await
    .unwrap_or_default();
    for (name, comment) in templates {
        let last_used: Option<u64> = comment
            .as_deref()
            .and_then(|c| c.strip_prefix(TEMPLATE_STAMP))
            .and_then(|secs| secs.parse().ok());
        if last_used.is_some_and(|secs| secs >= cutoff) {
            continue;
        }
        let _ = admin
            .execute(format!(r#"drop database if exists "{name}""#).as_str())
            .await;
    }
    let names: Vec<String> =
        sqlx::query_scalar("select datname from pg_database where datname like 'docket_test_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    for name in names {
        let created: Option<u64> = name
            .strip_prefix("docket_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse().ok());
        if created.is_some_and(|secs| secs < cutoff) {
            let _ = admin
                .execute(format!(r#"drop database if exists "{name}" with (force)"#).as_str())
                .await;
        }
    }
}
