//! Configuration: the environment over `docket.toml` (see `source`), validated and composed
//! into each crate's typed config. The only place that reads either.

use std::fmt;

use anyhow::{bail, Context};
use docket_http::host::HostConfig;
use docket_http::{HealthConfig, Secret};
use docket_mail::MailConfig;
use docket_worker::RuntimeConfig;

use docket_settings::{self as settings, QueueTable, Source};
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
    /// [`settings::DATABASE_URL`]; `None` lets `demo` start a throwaway cluster.
    pub(crate) database_url: Option<DatabaseUrl>,
    /// [`settings::LOG_FORMAT`]: `json` or `pretty`; default `pretty` on a terminal, else `json`.
    pub(crate) log_format: LogFormat,
    /// Whether spans are exported over OTLP ([`trace_export_wanted`]).
    pub(crate) trace_export: bool,
    /// The worker runtime's settings ([`settings::QUEUES`], [`settings::CONCURRENCY`], ...).
    pub(crate) runtime: RuntimeConfig,
    /// [`settings::DB_POOL_SIZE`]: connections for claims, outcomes and handlers; default: the
    /// total concurrency plus 4, at most 50.
    pub(crate) pool_size: Option<u32>,
    /// [`settings::POOLER`]: how the database is reached. Default session.
    pub(crate) pooler: docket_queue::Pooler,
    /// [`settings::CRON_SECRET`]: the bearer token of the guarded routes; never printed.
    pub(crate) cron_secret: Option<Secret>,
    /// [`settings::OPS_SECRET`]: signs in to the operations page instead of [`settings::CRON_SECRET`], so the
    /// people who read the page need not hold the monitors' token; never printed.
    pub(crate) ops_secret: Option<Secret>,
    /// [`settings::HTTP_ADDR`]: where `serve` listens. Default `127.0.0.1:8080`.
    pub(crate) http_addr: std::net::SocketAddr,
    /// The listener's limits ([`settings::HTTP_HEADER_TIMEOUT`], [`settings::HTTP_IDLE_TIMEOUT`],
    /// [`settings::HTTP_MAX_CONNECTIONS`]).
    pub(crate) http_limits: docket_http::Limits,
    /// Health thresholds (the `HEALTH_*` settings).
    pub(crate) health: HealthConfig,
    /// What `docket check` looks at beyond the database (the `CHECK_*` and `BACKUP_*` settings).
    pub(crate) check: HostConfig,
    /// `docket backup` and `restore-check` (the `BACKUP_KEEP` and `RESTORE_OWNER` settings).
    pub(crate) backup: BackupConfig,
    /// Email (the `SMTP_*` and `MAIL_*` settings, [`settings::TEMPLATE_DIR`], [`settings::ADMIN_EMAIL`]).
    pub(crate) mail: MailConfig,
    /// The `[queues.NAME]` tables' rates and prefetches, applied to whichever queue list
    /// is in force.
    pub(crate) queue_tables: Vec<QueueTable>,
}

/// [`settings::CHECK_DISK_PATH`] (default `/`), [`settings::CHECK_DISK_MIN_FREE_PERCENT`] (10),
/// [`settings::BACKUP_DIR`] (unset: no backup check), [`settings::BACKUP_MAX_AGE`] (seconds, 26 h).
fn host_config(source: &Source) -> anyhow::Result<HostConfig> {
    let defaults = HostConfig::default();
    Ok(HostConfig {
        disk_path: source
            .text(&settings::CHECK_DISK_PATH)
            .map_or(defaults.disk_path, Into::into),
        disk_min_free_percent: source
            .parse(&settings::CHECK_DISK_MIN_FREE_PERCENT)?
            .unwrap_or(defaults.disk_min_free_percent),
        backup_dir: source.text(&settings::BACKUP_DIR).map(Into::into),
        backup_max_age: source
            .seconds(&settings::BACKUP_MAX_AGE)?
            .unwrap_or(defaults.backup_max_age),
        restore_check_max_age: source
            .seconds(&settings::RESTORE_CHECK_MAX_AGE)?
            .unwrap_or(defaults.restore_check_max_age),
        services: match source.text(&settings::CHECK_SERVICES) {
            Some(list) => parse_services(&list)?,
            None => defaults.services,
        },
        relay_queue_command: source
            .text(&settings::RELAY_QUEUE_COMMAND)
            .filter(|command| !command.trim().is_empty()),
        relay_queue_warn: source
            .parse(&settings::RELAY_QUEUE_WARN)?
            .unwrap_or(defaults.relay_queue_warn),
    })
}

/// `docket-serve,docket-worker,postfix`: systemd unit names, comma-separated.
fn parse_services(list: &str) -> anyhow::Result<Vec<String>> {
    list.split(',')
        .map(str::trim)
        .filter(|unit| !unit.is_empty())
        .map(|unit| {
            let valid = unit.len() <= 255
                && !unit.starts_with('-')
                && unit
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ":-_.@\\".contains(c));
            if valid {
                Ok(unit.to_owned())
            } else {
                bail!(
                    "{}: {unit:?} is not a systemd unit name",
                    settings::CHECK_SERVICES
                )
            }
        })
        .collect()
}

/// What `docket backup` and `docket restore-check` read besides the database.
#[derive(Clone, Debug)]
pub(crate) struct BackupConfig {
    /// [`settings::BACKUP_KEEP`]: backups kept. Default 14.
    pub(crate) keep: usize,
    /// [`settings::RESTORE_OWNER`]: who runs restore checks. Default the OS user.
    pub(crate) owner: Option<String>,
}

fn backup_config(source: &Source) -> anyhow::Result<BackupConfig> {
    let keep = source.parse::<usize>(&settings::BACKUP_KEEP)?.unwrap_or(14);
    if keep == 0 {
        bail!(
            "{} must be at least 1 (the backup just taken is kept)",
            settings::BACKUP_KEEP
        );
    }
    Ok(BackupConfig {
        keep,
        owner: source
            .text(&settings::RESTORE_OWNER)
            .map(|owner| owner.trim().to_owned())
            .filter(|owner| !owner.is_empty()),
    })
}

/// Whether traces go out over OTLP: an endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, non-empty), the SDK is not disabled
/// (`OTEL_SDK_DISABLED=true`), and the traces exporter is not `none` (`OTEL_TRACES_EXPORTER`).
/// The standard variables are OpenTelemetry's, not Docket's settings: the SDK reads the rest
/// of them itself (service name, resource attributes, sampler, batch sizes, headers,
/// timeouts); these it does not decide on.
pub(crate) fn trace_export_wanted(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).is_some_and(|value| !value.trim().is_empty());
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let no_exporter =
        var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !disabled
        && !no_exporter
}

impl Config {
    /// Reads and validates the environment over `docket.toml`.
    pub(crate) fn load() -> anyhow::Result<Config> {
        let source = Source::load()?;
        let database_url = source
            .text(&settings::DATABASE_URL)
            .map(|url| DatabaseUrl::parse(&url))
            .transpose()?;
        let log_format = match source.text(&settings::LOG_FORMAT).as_deref() {
            Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => bail!(
                "{} must be `json` or `pretty`, not {other:?}",
                settings::LOG_FORMAT
            ),
            None if std::io::IsTerminal::is_terminal(&std::io::stderr()) => LogFormat::Pretty,
            None => LogFormat::Json,
        };
        let mail = MailConfig::from_source(&source)?;
        let pooler = source.parse(&settings::POOLER)?.unwrap_or_default();
        let mut runtime = RuntimeConfig::from_source(&source)?;
        if mail.notify.dead_letters {
            // Docket's own schedule: one digest a minute, when there is something to say.
            runtime
                .schedules
                .push(docket_mail::jobs::dead_letter_schedule());
            runtime.check_settings()?;
        }
        Ok(Config {
            database_url,
            log_format,
            trace_export: trace_export_wanted(|name| std::env::var(name).ok()),
            runtime,
            pool_size: source.parse(&settings::DB_POOL_SIZE)?,
            pooler,
            cron_secret: source.text(&settings::CRON_SECRET).and_then(Secret::new),
            ops_secret: source.text(&settings::OPS_SECRET).and_then(Secret::new),
            http_addr: match source.text(&settings::HTTP_ADDR) {
                Some(addr) => listen_address(&addr)?,
                None => ([127, 0, 0, 1], 8080).into(),
            },
            http_limits: http_limits(&source)?,
            health: health_config(&source)?,
            mail,
            queue_tables: source.queues.clone(),
            check: host_config(&source)?,
            backup: backup_config(&source)?,
        })
    }

    /// The runtime's settings with the command line's `--queues` / `--concurrency` over
    /// the environment's.
    pub(crate) fn runtime_with(
        &self,
        queues: Option<&str>,
        concurrency: Option<usize>,
    ) -> anyhow::Result<RuntimeConfig> {
        let mut runtime = self.runtime.clone();
        if let Some(concurrency) = concurrency {
            for queue in &mut runtime.queues {
                queue.concurrency = concurrency;
            }
        }
        if let Some(queues) = queues {
            let default = concurrency.unwrap_or(runtime.queues[0].concurrency);
            runtime = runtime
                .serving(queues, default, &self.queue_tables)
                .context("--queues")?;
        }
        runtime.check_settings()?;
        Ok(runtime)
    }

    /// `serve`'s secrets are long enough: a [`settings::CRON_SECRET`] or [`settings::OPS_SECRET`] shorter
    /// than [`docket_http::auth::MIN_SECRET_LEN`] characters is refused, with the reason.
    pub(crate) fn check_secrets(&self) -> anyhow::Result<()> {
        let min = docket_http::auth::MIN_SECRET_LEN;
        for (setting, secret) in [
            (&settings::CRON_SECRET, &self.cron_secret),
            (&settings::OPS_SECRET, &self.ops_secret),
        ] {
            if let Some(secret) = secret.as_ref().filter(|s| s.len() < min) {
                bail!(
                    "{setting} has {} characters; it needs at least {min} (anyone who can reach \
                     the port may guess it, one try a second): generate one with \
                     `openssl rand -hex 16`",
                    secret.len()
                );
            }
        }
        Ok(())
    }

    /// The database URL, or a clear error naming the variable.
    pub(crate) fn require_database(&self) -> anyhow::Result<&DatabaseUrl> {
        self.database_url.as_ref().with_context(|| {
            format!(
                "{} is not set: point it at PostgreSQL, e.g. postgres://user@localhost/app",
                settings::DATABASE_URL
            )
        })
    }
}

/// The listener's limits; unset ones keep their defaults, and none may be zero.
fn http_limits(source: &Source) -> anyhow::Result<docket_http::Limits> {
    let mut limits = docket_http::Limits::default();
    if let Some(value) = source.seconds(&settings::HTTP_HEADER_TIMEOUT)? {
        limits.header_timeout = value;
    }
    if let Some(value) = source.seconds(&settings::HTTP_IDLE_TIMEOUT)? {
        limits.idle_timeout = value;
    }
    if let Some(value) = source.parse(&settings::HTTP_MAX_CONNECTIONS)? {
        limits.max_connections = value;
    }
    for (setting, zero) in [
        (
            &settings::HTTP_HEADER_TIMEOUT,
            limits.header_timeout.is_zero(),
        ),
        (&settings::HTTP_IDLE_TIMEOUT, limits.idle_timeout.is_zero()),
        (&settings::HTTP_MAX_CONNECTIONS, limits.max_connections == 0),
    ] {
        if zero {
            bail!("{setting} must be more than 0");
        }
    }
    Ok(limits)
}

/// Health thresholds from the `HEALTH_*` settings (seconds); unset ones keep their defaults.
fn health_config(source: &Source) -> anyhow::Result<HealthConfig> {
    let mut config = HealthConfig::default();
    if let Some(value) = source.seconds(&settings::HEALTH_BACKLOG_THRESHOLD)? {
        config.backlog_threshold = value;
    }
    if let Some(value) = source.seconds(&settings::HEALTH_CHECK_TIMEOUT)? {
        config.check_timeout = value;
    }
    if let Some(value) = source.seconds(&settings::HEALTH_CACHE_TTL)? {
        config.cache_ttl = value;
    }
    if let Some(value) = source.parse(&settings::HEALTH_DEAD_LETTER_DEGRADES)? {
        config.dead_letter_degrades = value;
    }
    Ok(config)
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
            bail!(
                "{} is not a valid PostgreSQL URL: it must start with postgres:// or postgresql://",
                settings::DATABASE_URL
            );
        }
        let options = raw.parse::<PgConnectOptions>().map_err(|err| {
            anyhow::anyhow!(
                "{} is not a valid PostgreSQL URL: {err}",
                settings::DATABASE_URL
            )
        })?;
        Ok(DatabaseUrl {
            raw: raw.to_owned(),
            options,
        })
    }

    pub(crate) fn options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    /// The database's name.
    pub(crate) fn database(&self) -> String {
        self.options
            .get_database()
            .unwrap_or_else(|| self.options.get_username())
            .to_owned()
    }

    /// This URL as PostgreSQL's own client tools (`pg_dump`, `pg_restore`) take it, for
    /// `database` (this one's when `None`): without its password (given to them in
    /// `PGPASSWORD`, so that it never shows in a process list) and without the query
    /// parameters only sqlx knows (libpq refuses those).
    pub(crate) fn for_client(&self, database: Option<&str>) -> anyhow::Result<ClientUrl> {
        /// The URI parameters libpq knows, of those sqlx also reads.
        const LIBPQ: &[&str] = &[
            "host",
            "hostaddr",
            "port",
            "dbname",
            "user",
            "sslmode",
            "sslrootcert",
            "sslcert",
            "sslkey",
            "options",
            "application_name",
        ];
        let mut url = url::Url::parse(&self.raw)
            .with_context(|| format!("{} is not a valid URL", settings::DATABASE_URL))?;
        let mut password = url.password().map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        });
        let mut pairs = Vec::new();
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "password" => password = Some(value.into_owned()),
                "dbname" if database.is_some() => {}
                key if LIBPQ.contains(&key) => pairs.push((key.to_owned(), value.into_owned())),
                _ => {}
            }
        }
        let _ = url.set_password(None);
        url.set_query(None);
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        if let Some(database) = database {
            url.set_path(&format!(
                "/{}",
                percent_encoding::utf8_percent_encode(database, percent_encoding::NON_ALPHANUMERIC)
            ));
        }
        Ok(ClientUrl {
            url: url.to_string(),
            password,
        })
    }
}

/// A database as `pg_dump` and `pg_restore` are told it: a URL without a password, and the
/// password for `PGPASSWORD`.
pub(crate) struct ClientUrl {
    /// `postgres://user@host:port/database?sslmode=…`.
    pub(crate) url: String,
    /// The password, never on a command line.
    pub(crate) password: Option<String>,
}

impl ClientUrl {
    /// A command running `program` against this database: `--dbname` and `PGPASSWORD`.
    pub(crate) fn command(&self, program: &std::path::Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        command.arg(format!("--dbname={}", self.url));
        if let Some(password) = &self.password {
            command.env("PGPASSWORD", password);
        }
        command.kill_on_drop(true);
        command
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password may sit in the authority or in the query (`?password=`).
        let Ok(mut url) = url::Url::parse(&self.raw) else {
            return f.write_str("(an unparsable URL)");
        };
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        if url.query_pairs().any(|(key, _)| key == "password") {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(key, value)| {
                    let value = if key == "password" {
                        "***".into()
                    } else {
                        value.into_owned()
                    };
                    (key.into_owned(), value)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        write!(f, "{url}")
    }
}

/// Where `serve` listens: an address (`127.0.0.1:8080`, `[::1]:8080`) or a host name that
/// resolves here (`localhost:8080`: its first address, IPv4 first).
fn listen_address(text: &str) -> anyhow::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs as _;
    let text = text.trim();
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let resolved: Vec<std::net::SocketAddr> = text
        .to_socket_addrs()
        .map(Iterator::collect)
        .unwrap_or_default();
    resolved
        .iter()
        .find(|addr| addr.is_ipv4())
        .or(resolved.first())
        .copied()
        .with_context(|| {
            format!(
                "{}={text:?} is not an address to listen on: write HOST:PORT, e.g. \
                 127.0.0.1:8080 or 0.0.0.0:8080",
                settings::HTTP_ADDR
            )
        })
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
    fn a_password_in_the_query_is_redacted_too() {
        let url =
            DatabaseUrl::parse("postgres://app@db.internal/app?password=s3cret&sslmode=require")
                .unwrap();
        let shown = url.to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("sslmode=require"), "{shown}");
    }

    #[test]
    fn the_secret_never_prints() {
        let secret = Secret::new("hunter2").unwrap();
        assert_eq!(format!("{secret:?}"), "***");
    }

    #[test]
    fn the_listen_address_may_name_a_host() {
        assert_eq!(
            listen_address("localhost:8080").unwrap(),
            ([127, 0, 0, 1], 8080).into()
        );
        assert_eq!(
            listen_address("0.0.0.0:9000").unwrap(),
            ([0, 0, 0, 0], 9000).into()
        );
        let err = listen_address("localhost").unwrap_err().to_string();
        assert!(err.contains("write HOST:PORT"), "{err}");
    }

    #[test]
    fn a_url_that_is_not_postgres_is_refused() {
        let err = DatabaseUrl::parse("mysql://x@y/z").err().unwrap();
        assert!(
            err.to_string().contains(settings::DATABASE_URL.var),
            "{err}"
        );
    }
}
