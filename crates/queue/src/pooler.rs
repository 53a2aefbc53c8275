//! Statements that stay correct behind a transaction-mode pooler (PgBouncer's `pool_mode =
//! transaction`, the managed poolers of hosted PostgreSQL), which lends a server connection
//! for one transaction at a time and then gives it to another client.
//!
//! sqlx names the statements it prepares (`sqlx_s_1`, ...) and keeps them per connection:
//! behind such a pooler the name lands on a server connection another client also uses, and
//! the second `sqlx_s_1` fails with "already exists". An unnamed statement takes two round
//! trips (parse and describe, then bind and execute), each ending in a sync, after which the
//! pooler may hand the server connection away: the second half can land on another server
//! connection, whose unnamed statement is someone else's. So in [`Pooler::Transaction`]
//! mode every statement is unnamed and runs inside a transaction: the caller's, or one of
//! its own around the single statement. A transaction keeps its server connection to the
//! end, so both halves reach the same one.
//!
//! In [`Pooler::Session`] mode (the default) [`pooled`] and [`pooled_conn`] are the pool and
//! the connection themselves: nothing changes and nothing is paid.
//!
//! The mode belongs to the process (the route it takes to the database): the binary sets
//! it once at start-up with [`set_mode`].

use std::sync::atomic::{AtomicBool, Ordering};

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use futures_util::{stream, FutureExt, StreamExt, TryStreamExt};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArguments, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Connection, Either, Execute, Executor, PgConnection, PgPool, Postgres};

/// How Docket's connections reach PostgreSQL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pooler {
    /// Directly, or through a pooler that gives each client a server connection for as long
    /// as it stays connected (PgBouncer's session mode): named statements, LISTEN and
    /// session advisory locks all work.
    #[default]
    Session,
    /// Through a pooler that lends a server connection per transaction: every statement is
    /// unnamed and inside a transaction; no LISTEN; no session state.
    Transaction,
}

impl Pooler {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Pooler::Session => "session",
            Pooler::Transaction => "transaction",
        }
    }
}

impl std::str::FromStr for Pooler {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "session" => Ok(Pooler::Session),
            "transaction" => Ok(Pooler::Transaction),
            other => Err(format!(
                "{other:?} is not a pooler mode: write session or transaction"
            )),
        }
    }
}

static TRANSACTION: AtomicBool = AtomicBool::new(false);

/// Sets the process's mode; the binary calls it once, before it opens a pool.
pub fn set_mode(mode: Pooler) {
    TRANSACTION.store(mode == Pooler::Transaction, Ordering::Relaxed);
}

/// The process's mode.
pub fn mode() -> Pooler {
    if TRANSACTION.load(Ordering::Relaxed) {
        Pooler::Transaction
    } else {
        Pooler::Session
    }
}

/// `pool` as an executor that is safe in the process's mode: the pool itself in session
/// mode; in transaction mode, each statement unnamed, in a transaction of its own.
pub fn pooled(pool: &PgPool) -> Pooled<'_> {
    Pooled(pool)
}

/// `conn` (or a transaction: `pooled_conn(&mut tx)`) as an executor that is safe in the
/// process's mode: the connection itself in session mode; in transaction mode, each
/// statement unnamed, and in a transaction of its own unless one is open on `conn`.
pub fn pooled_conn(conn: &mut PgConnection) -> PooledConn<'_> {
    PooledConn(conn)
}

/// See [`pooled`].
#[derive(Clone, Copy, Debug)]
pub struct Pooled<'p>(&'p PgPool);

/// See [`pooled_conn`].
#[derive(Debug)]
pub struct PooledConn<'c>(&'c mut PgConnection);

type Step = Either<PgQueryResult, PgRow>;

impl<'p> Executor<'p> for Pooled<'p> {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, sqlx::Result<Step>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if mode() == Pooler::Session {
            return self.0.fetch_many(query);
        }
        let pool = self.0.clone();
        let steps = async move {
            let mut conn = pool.acquire().await?;
            many_alone(&mut conn, query).await
        };
        flatten(steps.boxed())
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, sqlx::Result<Option<PgRow>>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if mode() == Pooler::Session {
            return self.0.fetch_optional(query);
        }
        let pool = self.0.clone();
        async move {
            let mut conn = pool.acquire().await?;
            optional_alone(&mut conn, query).await
        }
        .boxed()
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, sqlx::Result<PgStatement<'q>>>
    where
        'p: 'e,
    {
        self.0.prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, sqlx::Result<sqlx::Describe<Postgres>>>
    where
        'p: 'e,
    {
        self.0.describe(sql)
    }
}

impl<'c> Executor<'c> for PooledConn<'c> {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, sqlx::Result<Step>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        match mode() {
            Pooler::Session => self.0.fetch_many(query),
            Pooler::Transaction => flatten(many_alone(self.0, query).boxed()),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, sqlx::Result<Option<PgRow>>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        match mode() {
            Pooler::Session => self.0.fetch_optional(query),
            Pooler::Transaction => optional_alone(self.0, query).boxed(),
        }
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, sqlx::Result<PgStatement<'q>>>
    where
        'c: 'e,
    {
        self.0.prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, sqlx::Result<sqlx::Describe<Postgres>>>
    where
        'c: 'e,
    {
        self.0.describe(sql)
    }
}

/// Runs `query` unnamed on `conn`, inside the transaction open there or one of its own, and
/// collects its steps.
async fn many_alone<'q, E>(conn: &mut PgConnection, query: E) -> sqlx::Result<Vec<Step>>
where
    E: 'q + Execute<'q, Postgres>,
{
    if conn.is_in_transaction() {
        let steps = conn.fetch_many(Unnamed(query)).try_collect().await?;
        forget_named(conn).await?;
        return Ok(steps);
    }
    let mut tx = conn.begin().await?;
    let steps = tx.fetch_many(Unnamed(query)).try_collect().await?;
    forget_named(&mut tx).await?;
    tx.commit().await?;
    Ok(steps)
}

/// Runs `query` unnamed on `conn`, inside the transaction open there or one of its own.
async fn optional_alone<'q, E>(conn: &mut PgConnection, query: E) -> sqlx::Result<Option<PgRow>>
where
    E: 'q + Execute<'q, Postgres>,
{
    if conn.is_in_transaction() {
        let row = conn.fetch_optional(Unnamed(query)).await?;
        forget_named(conn).await?;
        return Ok(row);
    }
    let mut tx = conn.begin().await?;
    let row = tx.fetch_optional(Unnamed(query)).await?;
    forget_named(&mut tx).await?;
    tx.commit().await?;
    Ok(row)
}

/// Closes the statements sqlx named and kept on `conn`, while its transaction still holds
/// the server connection they live on. Its own lookups of a custom type's oid (the first
/// use of `docket.job_state` on a connection) are named statements that no caller can
/// make unnamed; left on the server connection, they would meet another client's
/// statement of the same name. Nothing is sent when sqlx keeps none: once a connection knows
/// a type by its oid it looks it up no more (a type bound by name, as the pruner binds a
/// state, is looked up again after each clearing: once a run).
async fn forget_named(conn: &mut PgConnection) -> sqlx::Result<()> {
    if conn.cached_statements_size() > 0 {
        conn.clear_cached_statements().await?;
    }
    Ok(())
}

/// The steps a future collected, as the stream `fetch_many` returns.
fn flatten<'e>(steps: BoxFuture<'e, sqlx::Result<Vec<Step>>>) -> BoxStream<'e, sqlx::Result<Step>> {
    stream::once(steps)
        .map_ok(|steps| stream::iter(steps.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
}

/// A statement sqlx sends unnamed: parsed for this one execution, never kept.
struct Unnamed<E>(E);

impl<'q, E: Execute<'q, Postgres>> Execute<'q, Postgres> for Unnamed<E> {
    fn sql(&self) -> &'q str {
        self.0.sql()
    }

    fn statement(&self) -> Option<&PgStatement<'q>> {
        self.0.statement()
    }

    fn take_arguments(&mut self) -> Result<Option<PgArguments>, BoxDynError> {
        self.0.take_arguments()
    }

    fn persistent(&self) -> bool {
        false
    }
}
