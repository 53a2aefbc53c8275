//! Every setting Docket reads, once: the variable, its default, which commands read it and
//! what it means. The file's keys and the did-you-mean list of [`Source`](crate::Source)
//! are derived from this table, each crate reads its own settings through these constants,
//! and a test keeps `docs/configuration.md` showing the same rows.

use std::fmt;

/// One setting: an environment variable, or its key in `docket.toml`.
#[derive(Debug, PartialEq, Eq)]
pub struct Setting {
    /// The environment variable.
    pub var: &'static str,
    /// The default, as the docs say it.
    pub default: &'static str,
    /// The commands that read it.
    pub applies: &'static str,
    /// What it means, as the docs say it.
    pub help: &'static str,
}

impl Setting {
    /// Its key in `docket.toml`: the variable in lower case without its `DOCKET_` prefix
    /// (`DOCKET_SHUTDOWN_TIMEOUT` is `shutdown_timeout`, `DATABASE_URL` is `database_url`).
    pub fn file_key(&self) -> String {
        self.var
            .strip_prefix("DOCKET_")
            .unwrap_or(self.var)
            .to_ascii_lowercase()
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.var)
    }
}

/// Declares each setting as a constant and lists them all in [`ALL`], so that a setting
/// the loader reads is always one the table (and so the docs) know.
macro_rules! settings {
    ($($name:ident: $var:literal, default $default:literal, applies $applies:literal, help $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $name: Setting = Setting {
                var: $var,
                default: $default,
                applies: $applies,
                help: $help,
            };
        )*
        /// Every setting, in the order the docs list them.
        pub const ALL: &[Setting] = &[$($name),*];
    };
}

settings! {
    DATABASE_URL: "DATABASE_URL",
        default "required by every command but `demo`, which starts a throwaway cluster without it",
        applies "every command",
        help "PostgreSQL URL, `postgres://user:password@host:port/database` (a Unix socket: `?host=/path/to/dir`). Shown in messages with its password redacted.";
    CONFIG: "DOCKET_CONFIG",
        default "`./docket.toml` when it exists",
        applies "every command",
        help "the configuration file to read (a file named here must exist); the environment wins over it";
    CRON_SECRET: "CRON_SECRET",
        default "unset: guarded routes answer 401",
        applies "`serve`",
        help "bearer token of the snapshot, metrics and job API; at least 16 characters (`serve` refuses a shorter one); never printed or logged";
    OPS_SECRET: "DOCKET_OPS_SECRET",
        default "unset: `CRON_SECRET` signs in",
        applies "`serve`",
        help "the operations page's sign-in secret (its sessions are signed with a key derived from it); at least 16 characters; never printed or logged";
    LOG_FORMAT: "DOCKET_LOG_FORMAT",
        default "`pretty` when stderr is a terminal, else `json`",
        applies "every command",
        help "`json` (one object per line) or `pretty`";
    HTTP_ADDR: "DOCKET_HTTP_ADDR",
        default "`127.0.0.1:8080`",
        applies "`serve`",
        help "where `docket serve` listens";
    HTTP_HEADER_TIMEOUT: "DOCKET_HTTP_HEADER_TIMEOUT",
        default "5",
        applies "`serve`",
        help "seconds a client has to send a request's headers, from the connection's start or the end of the previous answer (so also how long an idle keep-alive connection stays open)";
    HTTP_IDLE_TIMEOUT: "DOCKET_HTTP_IDLE_TIMEOUT",
        default "30",
        applies "`serve`",
        help "seconds a connection may go without a byte read or written (a stalled upload, a client that stops reading the answer) before it is closed";
    HTTP_MAX_CONNECTIONS: "DOCKET_HTTP_MAX_CONNECTIONS",
        default "512",
        applies "`serve`",
        help "connections served at once; when all are taken, a new one closes the connection that has gone longest without a byte and has no request in flight (so a health probe still gets in), or is closed itself. Keep it well below the open-file limit (`LimitNOFILE`)";
    DB_POOL_SIZE: "DOCKET_DB_POOL_SIZE",
        default "total concurrency + 4, at most 50",
        applies "`serve`, `worker`",
        help "connections for claims, outcomes and handlers";
    QUEUES: "DOCKET_QUEUES",
        default "`default,mail,recovery` (the mail kinds' queues next to `default`)",
        applies "`serve`, `worker`",
        help "queues a worker serves, `name[:concurrency]` comma-separated (also `--queues`)";
    CONCURRENCY: "DOCKET_CONCURRENCY",
        default "10",
        applies "`serve`, `worker`",
        help "jobs at once per queue without its own figure (also `--concurrency`)";
    GLOBAL_CONCURRENCY: "DOCKET_GLOBAL_CONCURRENCY",
        default "the sum of the queues'",
        applies "`serve`, `worker`",
        help "cap on jobs at once over all queues";
    CLAIM_BATCH: "DOCKET_CLAIM_BATCH",
        default "100",
        applies "`serve`, `worker`",
        help "most jobs one claim takes";
    LISTEN: "DOCKET_LISTEN",
        default "`true` (`false` with `DOCKET_POOLER=transaction`)",
        applies "`serve`, `worker`",
        help "`true`/`false`: wake on LISTEN/NOTIFY; `false` polls only (behind a pooler that cannot hold a LISTEN; see [scaling](scaling.md#pgbouncer))";
    POOLER: "DOCKET_POOLER",
        default "`session`",
        applies "every command",
        help "`session`/`transaction`: how `DATABASE_URL` reaches PostgreSQL. `transaction` (behind PgBouncer's `pool_mode = transaction` or a hosted pooler): every statement unnamed and inside a transaction, no LISTEN (pickup waits up to `DOCKET_POLL_INTERVAL`), no session advisory locks; `migrate` then needs a direct URL ([scaling](scaling.md#pgbouncer))";
    CRON: "DOCKET_CRON",
        default "`true`",
        applies "`serve`, `worker`",
        help "`true`/`false`: run the scheduler for the `[[schedule]]` tables in this process (each tick is enqueued once however many run it)";
    POLL_INTERVAL: "DOCKET_POLL_INTERVAL",
        default "1",
        applies "`serve`, `worker`",
        help "seconds between polls without a notification";
    HEARTBEAT_INTERVAL: "DOCKET_HEARTBEAT_INTERVAL",
        default "5",
        applies "`serve`, `worker`",
        help "seconds between heartbeats";
    LEASE_TIMEOUT: "DOCKET_LEASE_TIMEOUT",
        default "30",
        applies "`serve`, `worker`",
        help "this worker's lease: seconds after its last heartbeat until its jobs may be rescued (stored with each heartbeat, so every worker is judged by its own; more than twice the heartbeat). A worker that was stopped or starved for this long (SIGSTOP, a paused VM) stops and hands back every job when it wakes, before it claims again";
    SHUTDOWN_TIMEOUT: "DOCKET_SHUTDOWN_TIMEOUT",
        default "30",
        applies "`serve`, `worker`",
        help "seconds running jobs get to finish at shutdown";
    RESCUER_INTERVAL: "DOCKET_RESCUER_INTERVAL",
        default "15",
        applies "`serve`, `worker`",
        help "seconds between rescuer runs";
    PRUNER_INTERVAL: "DOCKET_PRUNER_INTERVAL",
        default "60",
        applies "`serve`, `worker`",
        help "seconds between pruner runs";
    PARK_AFTER: "DOCKET_PARK_AFTER",
        default "60",
        applies "`serve`, `worker`",
        help "seconds a ready job may wait with no live worker for its queue and kind before it is parked out of the claim's way (and listed as unhandled)";
    COMPLETED_RETENTION: "DOCKET_COMPLETED_RETENTION",
        default "86400 (24 h)",
        applies "`serve`, `worker`",
        help "seconds completed jobs are kept";
    CANCELLED_RETENTION: "DOCKET_CANCELLED_RETENTION",
        default "604800 (7 d)",
        applies "`serve`, `worker`",
        help "seconds cancelled jobs are kept";
    DEAD_LETTER_RETENTION: "DOCKET_DEAD_LETTER_RETENTION",
        default "2592000 (30 d)",
        applies "`serve`, `worker`",
        help "seconds dead letters are kept";
    HEALTH_BACKLOG_THRESHOLD: "DOCKET_HEALTH_BACKLOG_THRESHOLD",
        default "300",
        applies "`serve`, `check`",
        help "seconds the oldest ready job may wait before `backlog` is degraded";
    HEALTH_CHECK_TIMEOUT: "DOCKET_HEALTH_CHECK_TIMEOUT",
        default "2",
        applies "`serve`, `check`",
        help "seconds each part of the health evaluation may take: `select 1` past it is `down`; the snapshot, workers or unhandled kinds past it are `unknown` (status `degraded`)";
    HEALTH_CACHE_TTL: "DOCKET_HEALTH_CACHE_TTL",
        default "1",
        applies "`serve`, `check`",
        help "seconds a health evaluation is reused";
    HEALTH_DEAD_LETTER_DEGRADES: "DOCKET_HEALTH_DEAD_LETTER_DEGRADES",
        default "`false`",
        applies "`serve`, `check`",
        help "`true`: dead letters make the status degraded, not just `warn`";
    CHECK_DISK_PATH: "DOCKET_CHECK_DISK_PATH",
        default "`/`",
        applies "`serve`, `check`",
        help "filesystem `docket check` watches";
    CHECK_DISK_MIN_FREE_PERCENT: "DOCKET_CHECK_DISK_MIN_FREE_PERCENT",
        default "10",
        applies "`serve`, `check`",
        help "below this free share, `docket check` warns";
    BACKUP_DIR: "DOCKET_BACKUP_DIR",
        default "unset: no backup or restore check; `backup` refuses to run",
        applies "`serve`, `check`, `backup`, `restore-check`",
        help "where `docket backup` writes its dumps and manifests (and `restore-check` finds the newest); `docket check` ages the newest backup (another tool's file when none is Docket's) and shows the last restore check";
    BACKUP_MAX_AGE: "DOCKET_BACKUP_MAX_AGE",
        default "93600 (26 h)",
        applies "`serve`, `check`",
        help "seconds the newest backup may age before a warning";
    BACKUP_KEEP: "DOCKET_BACKUP_KEEP",
        default "14",
        applies "`backup`",
        help "how many of Docket's backups `docket backup` keeps (the oldest beyond are removed with their manifests; other files are never touched)";
    RESTORE_OWNER: "DOCKET_RESTORE_OWNER",
        default "the OS user running it",
        applies "`restore-check`",
        help "who is recorded as having run a restore check (the drill's owner)";
    RESTORE_CHECK_MAX_AGE: "DOCKET_RESTORE_CHECK_MAX_AGE",
        default "7948800 (92 d)",
        applies "`serve`, `check`",
        help "seconds the last passing restore check may age before a warning (quarterly by default)";
    CHECK_SERVICES: "DOCKET_CHECK_SERVICES",
        default "unset: no service check",
        applies "`serve`, `check`",
        help "systemd units to check with `systemctl is-active`, comma-separated (e.g. `docket-serve,docket-worker,postfix`): a stopped one is `degraded`, `unknown` where systemd is not running";
    RELAY_QUEUE_COMMAND: "DOCKET_RELAY_QUEUE_COMMAND",
        default "unset: no relay queue check",
        applies "`serve`, `check`",
        help "a command (run by `sh -c`, 2 s at most) that prints the relay's queue as Postfix's `postqueue -j` does, one JSON object per message (e.g. `postqueue -j`, or `sudo -n postqueue -j`): the `relay_queue` check counts them and ages the oldest; a command that fails or hangs is `unknown`, never `down`";
    RELAY_QUEUE_WARN: "DOCKET_RELAY_QUEUE_WARN",
        default "100",
        applies "`serve`, `check`",
        help "above this many messages held by the relay, `relay_queue` is `warn`";
    SMTP_MODE: "DOCKET_SMTP_MODE",
        default "`smtp` when `DOCKET_SMTP_URL` is set, else `stub`",
        applies "`serve`, `worker`, `mail`",
        help "`smtp` (send through the relay) or `stub` (render and record as `suppressed`, reason `stub`; nothing leaves)";
    SMTP_URL: "DOCKET_SMTP_URL",
        default "unset",
        applies "`serve`, `worker`, `mail`",
        help "the relay, in lettre's URL form: `smtp://host:25` (plain, local relays), `smtp://host:587?tls=required` (STARTTLS), `smtps://host:465` (TLS from the first byte); `smtp://user:password@host:587?tls=required` for AUTH (PLAIN or LOGIN). The user and password must be percent-encoded (`/` as `%2F`, `?` `%3F`, `#` `%23`, `@` `%40`, `%` `%25`); a URL with one of these unencoded is refused without being echoed. The password is a secret: it never reaches a log line, an error or a JSON document";
    SMTP_TIMEOUT: "DOCKET_SMTP_TIMEOUT",
        default "30",
        applies "`serve`, `worker`, `mail`",
        help "seconds for the connection and for each SMTP command; also bounds how long an exchange under way outlives a stopped job (it finishes and records its outcome)";
    SMTP_POOL_SIZE: "DOCKET_SMTP_POOL_SIZE",
        default "4",
        applies "`serve`, `worker`, `mail`",
        help "pooled SMTP connections per process (idle ones are checked with NOOP before reuse)";
    SMTP_CA_FILE: "DOCKET_SMTP_CA_FILE",
        default "unset",
        applies "`serve`, `worker`, `mail`",
        help "a PEM certificate to trust besides the public roots (a relay with a private or self-signed certificate)";
    MAIL_FROM: "DOCKET_MAIL_FROM",
        default "required in `smtp` mode",
        applies "`serve`, `worker`, `mail`",
        help "the sender, `Name <address>`; its domain also names every Message-ID";
    TEMPLATE_DIR: "DOCKET_TEMPLATE_DIR",
        default "`./templates`",
        applies "`serve`, `worker`, `mail`",
        help "the template catalog (`<name>/subject.txt`, `body.txt`, optional `body.html`, locales in `<name>/<locale>/`), parsed whole when `serve` or `worker` starts";
    MAIL_RATE: "DOCKET_MAIL_RATE",
        default "unset: no limit",
        applies "`serve`, `worker`, `mail`",
        help "messages through the relay over all processes together, e.g. `10/s`, `600/m`, `20000/h` (a token bucket in PostgreSQL; recovery emails go first)";
    MAIL_RETRY_LADDER: "DOCKET_MAIL_RETRY_LADDER",
        default "`1m,5m,15m,1h,6h`",
        applies "`serve`, `worker`, `mail`",
        help "delays after each temporary failure of one recipient (4xx other than 421/454, timeouts, lost connections); one failure more than it has steps dead-letters the delivery";
    TRACE_RECIPIENTS: "DOCKET_TRACE_RECIPIENTS",
        default "`false`",
        applies "`serve`, `worker`",
        help "`true` puts the recipients' addresses on each SMTP exchange's trace span (`docket.smtp.recipients`) when tracing is on; by default no address leaves for the trace collector";
    ADMIN_EMAIL: "DOCKET_ADMIN_EMAIL",
        default "unset",
        applies "`serve`, `worker`, `mail`",
        help "where `mail.admin` goes when its payload names nobody";
    MAIL_NOTIFY: "DOCKET_MAIL_NOTIFY",
        default "unset: nothing",
        applies "`serve`, `worker`, `mail`",
        help "what Docket tells `DOCKET_ADMIN_EMAIL` by itself, comma-separated: `campaign_finished` (a campaign's last recipient is final), `dead_letters` (jobs were dead-lettered in the past minute; one email a minute at most)";
    PUBLIC_URL: "DOCKET_PUBLIC_URL",
        default "required in `smtp` mode",
        applies "`serve`, `worker`, `mail`",
        help "where `docket serve` is reached from the internet, e.g. `https://docket.example.com` (https for mailbox providers); every campaign email's one-click unsubscribe link is `<this>/unsubscribe/<token>`, so where an application nests Docket's router under a prefix, the prefix is part of it (`https://app.example.com/docket`)";
    MAIL_UNSUBSCRIBE_MAILTO: "DOCKET_MAIL_UNSUBSCRIBE_MAILTO",
        default "unset: the link only",
        applies "`serve`, `worker`, `mail`",
        help "an address that also takes unsubscribe requests, listed in `List-Unsubscribe` as `mailto:<address>?subject=unsubscribe%20<token>` (reading that mailbox is the operator's)";
    MAIL_TOKEN_SECRET: "DOCKET_MAIL_TOKEN_SECRET",
        default "required in `smtp` mode",
        applies "`serve`, `worker`, `mail`",
        help "signs the unsubscribe links (HMAC-SHA256 under a key derived from it); at least 32 characters; the same in every process; never printed or logged. Changing it breaks the links in mail already sent unless the old one is kept in `DOCKET_MAIL_TOKEN_SECRET_PREVIOUS`";
    MAIL_BOUNCE_DOMAIN: "DOCKET_MAIL_BOUNCE_DOMAIN",
        default "unset: the envelope sender is `DOCKET_MAIL_FROM`'s address and bounces are not matched",
        applies "`serve`, `worker`, `mail`",
        help "each delivery's envelope sender (Return-Path) is `bounce+<token>@<this domain>` (VERP; the visible From is unchanged), so a delivery status notification names its delivery; route the domain's mail to `docket mail bounce` or `POST /api/mail/bounces`. Needs `DOCKET_MAIL_TOKEN_SECRET`";
    MAIL_TOKEN_SECRET_PREVIOUS: "DOCKET_MAIL_TOKEN_SECRET_PREVIOUS",
        default "unset",
        applies "`serve`, `worker`, `mail`",
        help "the token secret before a rotation: links it signed still work until it is removed (links are signed with `DOCKET_MAIL_TOKEN_SECRET` only)";
}

/// The test suite's switch that turns a test skipped for a missing tool into a failure
/// (`required`; CI sets it).
pub const TEST_TOOLS: &str = "DOCKET_TEST_TOOLS";

/// `DOCKET_*` variables that are not settings of a process: the test suite's own switches
/// (which its child processes inherit).
pub const TEST_SWITCHES: &[&str] = &[
    TEST_TOOLS,
    "DOCKET_SCREENSHOTS_DIR",
    "DOCKET_WRITE_SCHEMA",
    // The protocol replay's number and length of walks (crates/protocol).
    "DOCKET_PROTOCOL_WALKS",
];

/// The first `DOCKET_*` name among `names` that is no setting (a misspelling would
/// otherwise be ignored, and its default used without a word), with the nearest setting.
pub fn unknown_variable<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Option<(&'a str, Option<&'static str>)> {
    let name = names.into_iter().find(|name| {
        name.starts_with("DOCKET_")
            && !TEST_SWITCHES.contains(name)
            && !ALL.iter().any(|setting| setting.var == *name)
    })?;
    let nearest = ALL
        .iter()
        .map(|setting| setting.var)
        .min_by_key(|var| strsim::levenshtein(var, name))
        .filter(|var| strsim::levenshtein(var, name) <= 3);
    Some((name, nearest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/configuration.md` shows each setting as a row `| var | meaning | default | read
    /// by |` with the table's words, and documents no variable the table lacks.
    #[test]
    fn docs_configuration_md_shows_the_settings_table() {
        let doc = include_str!("../../../docs/configuration.md");
        for setting in ALL {
            let row = format!(
                "| `{}` | {} | {} | {} |",
                setting.var, setting.help, setting.default, setting.applies
            );
            assert!(
                doc.lines().any(|line| line == row),
                "docs/configuration.md lacks (or words differently) the row\n{row}"
            );
        }
        for line in doc.lines().filter(|line| line.starts_with("| `")) {
            let var = line
                .trim_start_matches("| `")
                .split('`')
                .next()
                .unwrap_or_default();
            if var.starts_with("DOCKET_") || var == "DATABASE_URL" || var == "CRON_SECRET" {
                assert!(
                    ALL.iter().any(|setting| setting.var == var),
                    "{var} is documented but not in the settings table"
                );
            }
        }
    }

    #[test]
    fn a_misspelled_variable_is_found_with_the_nearest_setting() {
        assert_eq!(
            unknown_variable(["PATH", "DOCKET_SMTP_ULR", "DOCKET_QUEUES"]),
            Some(("DOCKET_SMTP_ULR", Some("DOCKET_SMTP_URL")))
        );
        assert_eq!(
            unknown_variable(["DOCKET_CONCURENCY"]),
            Some(("DOCKET_CONCURENCY", Some("DOCKET_CONCURRENCY")))
        );
        assert_eq!(
            unknown_variable(["DOCKET_WHATEVER_ELSE_ENTIRELY"]),
            Some(("DOCKET_WHATEVER_ELSE_ENTIRELY", None))
        );
        assert_eq!(
            unknown_variable(["DOCKET_CONFIG", "DOCKET_QUEUES", "HOME", "RUST_LOG"]),
            None
        );
    }

    /// Outside this table, production code names a setting through its constant, never by
    /// spelling the variable (tests may spell it: they check what a user reads). The part of
    /// a file from its first `#[cfg(test)]` on is its tests.
    #[test]
    fn no_other_production_code_spells_a_variable() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut dirs = vec![root.join("bin"), root.join("loadtest/src")];
        for entry in std::fs::read_dir(root.join("crates")).unwrap() {
            let crate_dir = entry.unwrap().path();
            if !crate_dir.ends_with("settings") {
                dirs.push(crate_dir.join("src"));
            }
        }
        let mut spelled = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|ext| ext != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let production = text.split("#[cfg(test)]").next().unwrap_or_default();
                for (number, line) in production.lines().enumerate() {
                    let mut rest = line;
                    while let Some(at) = rest.find("DOCKET_") {
                        rest = &rest[at + "DOCKET_".len()..];
                        if rest.starts_with(|c: char| c.is_ascii_uppercase()) {
                            spelled.push(format!("{}:{}: {line}", path.display(), number + 1));
                            break;
                        }
                    }
                }
            }
        }
        assert!(
            spelled.is_empty(),
            "name these through the settings table's constants:\n{}",
            spelled.join("\n")
        );
    }

    #[test]
    fn file_keys_are_unique() {
        let mut keys: Vec<String> = ALL.iter().map(Setting::file_key).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), ALL.len());
    }
}
