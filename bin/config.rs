//! Configuration from the environment: the only place that reads it.

use std::fmt;

use anyhow::{bail, Context};
use sqlx::postgres::PgConnectOptions;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable lines (a terminal).
    Pretty,
}

/// Everything the binary reads from its environment.
pub(crate) struct Config {
    /// `DATABASE_URL`; `None` lets `demo` start a throwaway cluster.
    pub(crate) database_url: Option<DatabaseUrl>,
    /// `DOCKET_LOG_FORMAT`: `json` or `pretty`; default `pretty` on a terminal, else `json`.
    pub(crate) log_format: LogFormat,
}

impl Config {
    /// Reads and validates the environment.
    pub(crate) fn from_env() -> anyhow::Result<Config> {
        let database_url = match std::env::var("DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => Some(DatabaseUrl::parse(&url)?),
            _ => None,
        };
        let log_format = match std::env::var("DOCKET_LOG_FORMAT").as_deref() {
            Ok("json") => LogFormat::Json,
            Ok("pretty") => LogFormat::Pretty,
            Ok(other) => bail!("DOCKET_LOG_FORMAT must be `json` or `pretty`, not {other:?}"),
            Err(_) if std::io::IsTerminal::is_terminal(&std::io::stderr()) => LogFormat::Pretty,
            Err(_) => LogFormat::Json,
        };
        Ok(Config {
            database_url,
            log_format,
        })
    }

    /// The database URL, or a clear error naming the variable.
    pub(crate) fn require_database(&self) -> anyhow::Result<&DatabaseUrl> {
        self.database_url.as_ref().context(
            "DATABASE_URL is not set: point it at PostgreSQL, e.g. postgres://user@localhost/app",
        )
    }
}

/// A validated database URL. Displays with its password redacted, so it can be logged.
pub(crate) struct DatabaseUrl {
    raw: String,
    options: PgConnectOptions,
}

impl DatabaseUrl {
    pub(crate) fn parse(raw: &str) -> anyhow::Result<DatabaseUrl> {
        // sqlx parses any scheme as PostgreSQL; a MySQL URL here is a mistake to name.
        if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
            bail!("DATABASE_URL is not a valid PostgreSQL URL: it must start with postgres:// or postgresql://");
        }
        let options = raw
            .parse::<PgConnectOptions>()
            .map_err(|err| anyhow::anyhow!("DATABASE_URL is not a valid PostgreSQL URL: {err}"))?;
        Ok(DatabaseUrl {
            raw: raw.to_owned(),
            options,
        })
    }

    pub(crate) fn options(&self) -> PgConnectOptions {
        self.options.clone()
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(&self.raw) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("***"));
                write!(f, "{url}")
            }
            _ => f.write_str(&self.raw),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_displays_without_its_password() {
        let url = DatabaseUrl::parse("postgres://app:s3cret@db.internal:5432/app").unwrap();
        assert_eq!(url.to_string(), "postgres://app:***@db.internal:5432/app");
    }

    #[test]
    fn a_url_that_is_not_postgres_is_refused() {
        let err = DatabaseUrl::parse("mysql://x@y/z").err().unwrap();
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
    }
}
