//! One module per subcommand; `run` dispatches.

mod backup;
mod batches;
mod check;
mod cron;
pub(crate) mod demo;
mod enqueue;
mod jobs;
pub(crate) mod mail;
mod migrate;
mod queues;
mod restore_check;
mod serve;
mod snapshot;
mod worker;

use std::process::ExitCode;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

use crate::cli::Command;
use crate::config::{Config, DatabaseUrl};

/// How long a command waits for the database before it gives up with a clear error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    // Before any pool opens: every statement from here on is sent as the route allows.
    docket_queue::pooler::set_mode(config.pooler);
    match command {
        Command::Check(output) => return check::run(&config, output).await,
        Command::Backup(args) => return backup::run(&config, args).await,
        Command::RestoreCheck(args) => return restore_check::run(&config, args).await,
        Command::Migrate(output) => {
            migrate::run(&connect(config.require_database()?).await?, output.json).await
        }
        Command::Enqueue(args) => {
            enqueue::run(&connect(config.require_database()?).await?, args).await
        }
        Command::Batches(command) => {
            batches::run(&connect(config.require_database()?).await?, command).await
        }
        Command::Cron(command) => cron::run(&config, command).await,
        Command::Mail(crate::cli::MailCommand::Bounce(output)) => {
            return Ok(mail::bounce(&config, output).await)
        }
        Command::Mail(command) => mail::run(&config, command).await,
        Command::Queues(command) => {
            queues::run(
                &connect(config.require_database()?).await?,
                &config,
                command,
            )
            .await
        }
        Command::Jobs(command) => {
            jobs::run(&connect(config.require_database()?).await?, command).await
        }
        Command::Snapshot(args) => {
            snapshot::run(&connect(config.require_database()?).await?, args).await
        }
        Command::Worker(args) => {
            let runtime = config.runtime_with(args.queues.as_deref(), args.concurrency)?;
            worker::run(
                config.require_database()?,
                runtime,
                config.pool_size,
                &config.mail,
            )
            .await
        }
        Command::Serve(args) => serve::run(&config, args.queues.as_deref(), args.concurrency).await,
        Command::Demo(args) => demo::run(config.database_url.as_ref(), &args).await,
    }?;
    Ok(ExitCode::SUCCESS)
}

/// Refuses what a transaction-mode pooler cannot carry: applying migrations (sqlx's
/// migrator takes a session advisory lock and prepares named statements), and `backup` and
/// `restore-check` (`pg_dump` and `pg_restore` set session state and read an exported
/// snapshot). They need PostgreSQL itself or a session-mode pool; `command` says which.
pub(crate) fn refuse_through_pooler(command: &str) -> anyhow::Result<()> {
    if docket_queue::pooler::mode() == docket_queue::Pooler::Transaction {
        anyhow::bail!(
            "{}=transaction: {command} holds a session (advisory locks, prepared statements, \
             session settings) that a transaction-mode pooler cannot keep. Run `docket {command}` \
             with {} pointing at PostgreSQL itself (or a session-mode pool) and {} unset",
            docket_settings::POOLER,
            docket_settings::DATABASE_URL,
            docket_settings::POOLER
        );
    }
    Ok(())
}

/// Logs, once at start, what a transaction-mode pooler costs a worker: no LISTEN, so pickup
/// waits for the next poll.
pub(crate) fn log_pooler(runtime: &docket_worker::RuntimeConfig) {
    if docket_queue::pooler::mode() == docket_queue::Pooler::Transaction {
        tracing::info!(
            event = docket_queue::telemetry::event::POOLER_TRANSACTION,
            poll_interval_s = runtime.poll_interval.as_secs_f64(),
            "behind a transaction-mode pooler: LISTEN is off, so a job enqueued into an idle \
             queue waits up to the poll interval ({} s) for pickup",
            runtime.poll_interval.as_secs_f64()
        );
    }
}

/// A small pool to the database for a command.
pub(crate) async fn connect(url: &DatabaseUrl) -> anyhow::Result<PgPool> {
    open_pool(
        url,
        PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(CONNECT_TIMEOUT),
    )
    .await
}

/// A pool with `options`, after one connection made by hand: a wrong URL or a server that
/// is down fails here at once, with the URL (password redacted) and the real cause said
/// once (a pool's first connection would wait out its acquire timeout and then say only
/// that it timed out, hiding "connection refused").
pub(crate) async fn open_pool(url: &DatabaseUrl, options: PgPoolOptions) -> anyhow::Result<PgPool> {
    let cause =
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&url.options()))
            .await
        {
            Ok(Ok(connection)) => {
                connection.close().await.ok();
                return Ok(options.connect_lazy_with(url.options()));
            }
            Ok(Err(err)) => connection_error(&err),
            Err(_) => format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        };
    anyhow::bail!("cannot connect to PostgreSQL at {url}: {cause}")
}

/// A connection error's cause, once: sqlx's own text repeats the server's message after
/// its own prefix ("error returned from database: X: X" with the error chain).
fn connection_error(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// How long closing the pool may take at exit.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Closes a pool at exit without waiting on connections stuck mid-statement (a lock, a
/// hung server): `PgPool::close` waits for every connection to come back, and one that
/// shutdown abandoned may never come back. The process exits; the server drops them.
pub(crate) async fn close_pool(pool: PgPool) {
    if tokio::time::timeout(CLOSE_TIMEOUT, pool.close())
        .await
        .is_err()
    {
        tracing::warn!(
            event = docket_queue::telemetry::event::SHUTDOWN_POOL_ABANDONED,
            "connections still busy at exit were abandoned"
        );
    }
}

/// Prints a value as pretty JSON.
pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
