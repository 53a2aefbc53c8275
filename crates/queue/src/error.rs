//! The queue crate's error type.

use std::fmt;

use crate::job::{JobId, JobState};

/// What can go wrong in a queue operation. The variants are the cases a caller branches on;
/// everything else stays behind `Database`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No job has this id.
    #[error("job {0} not found")]
    JobNotFound(JobId),
    /// The job exists but its state does not allow the action.
    #[error("job {id} is {actual}, cannot {action}")]
    InvalidState {
        /// The job.
        id: JobId,
        /// The state it is in.
        actual: JobState,
        /// What was asked of it.
        action: &'static str,
    },
    /// Replaying the job would give its unique key a second live job.
    #[error("job {id} cannot be replayed: unique key {key:?} already has a live job")]
    UniqueKeyTaken {
        /// The job.
        id: JobId,
        /// Its unique key.
        key: String,
    },
    /// A batch's job has a unique key that another live job holds (one enqueued before, or
    /// an earlier job of the same batch): it would be folded into that job, which is not
    /// the batch's, and the batch would finish (and call back) without waiting for it. The
    /// batch is refused whole.
    #[error("batch job {index}: unique key {key:?} is held by live job {holder}; a batch takes only jobs of its own, so that its callback waits for each (enqueue it without the key, or leave it out)")]
    BatchKeyTaken {
        /// The job's position in the batch (0-based).
        index: usize,
        /// Its unique key.
        key: String,
        /// The live job that holds the key.
        holder: JobId,
    },
    /// Replaying the job would only expire it again: its `expires_at` has passed, and a job
    /// is never run late. Enqueue a new job instead.
    #[error("job {id} cannot be replayed: it expired at {expires_at}; enqueue a new job instead")]
    Expired {
        /// The job.
        id: JobId,
        /// When it expired.
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    /// An argument is out of its range (a page size, a retention, a state that cannot be
    /// pruned): the caller's input, not a job.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The schedule cannot be removed: a live process declares it (and would go on
    /// ticking it as it is).
    #[error("schedule {name:?} is declared by {by}: take it out of that process's configuration (docket.toml's [[schedule]], or the feature that adds it) and restart it, then remove the schedule")]
    ScheduleDeclared {
        /// The schedule.
        name: String,
        /// The live processes that declare it, described.
        by: String,
    },
    /// An operation did not finish in the time it was given.
    #[error("{what} timed out after {after:?}")]
    TimedOut {
        /// What was being done.
        what: &'static str,
        /// The bound it ran into.
        after: std::time::Duration,
    },
    /// The job or its options break a rule (empty kind, `max_attempts < 1`, ...).
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// A typed job's payload could not be serialized to JSON.
    #[error("payload of {kind} is not serializable to JSON")]
    Payload {
        /// The job kind.
        kind: String,
        /// Why serialization failed.
        #[source]
        source: serde_json::Error,
    },
    /// The database failed or could not be reached.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Applying the migrations failed.
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Error {
    /// Whether the connection the operation ran on is gone while the server may well be
    /// up: the server ended it (a terminated backend, a restart) or the socket broke. A pool
    /// then hands out its other connections, dead or alive, one failed query at a time, so
    /// the caller should retry at once rather than back off; a server that is really down
    /// refuses the new connection, which is not this.
    pub fn is_lost_connection(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            Error::Database(sqlx::Error::Io(io)) => matches!(
                io.kind(),
                ErrorKind::BrokenPipe
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::UnexpectedEof
            ),
            // admin_shutdown (pg_terminate_backend, a fast shutdown), crash_shutdown.
            Error::Database(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("57P01" | "57P02"))
            }
            _ => false,
        }
    }
}

/// The queue crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Displays an error followed by each of its causes, so that a log line carries the whole
/// chain (a derived `Debug` does not walk `source()`).
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(err) = cause {
            write!(f, ": {err}")?;
            cause = err.source();
        }
        Ok(())
    }
}
