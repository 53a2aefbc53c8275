//! Where configuration values come from: the environment first, then `docket.toml` (the
//! file named by [`CONFIG`](crate::CONFIG), else `./docket.toml` when it exists). What each
//! setting is, and its key in the file, is in the [table](crate::table).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use docket_queue::cron::Schedule;

use crate::table::{self as settings, Setting};
use crate::{bail, Error, Result};

/// The environment over the file; [`Source::default`] is the environment alone.
#[derive(Clone, Debug, Default)]
pub struct Source {
    /// The file's values by variable name, as text.
    file: BTreeMap<String, String>,
    /// The file, for messages.
    path: Option<PathBuf>,
    /// The file's `[[schedule]]` tables.
    pub schedules: Vec<Schedule>,
    /// The file's `[queues.NAME]` tables, in the file's order.
    pub queues: Vec<QueueTable>,
}

/// One `[queues.NAME]` table: a queue this worker serves, with its own settings.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueTable {
    /// The queue.
    pub name: String,
    /// `concurrency`: jobs at once in this process; `None`: `DOCKET_CONCURRENCY`.
    pub concurrency: Option<usize>,
    /// `rate`: jobs started per second, minute or hour over every process (`"50/s"`).
    pub rate: Option<docket_queue::rate_limit::Rate>,
    /// `prefetch`: jobs claimed ahead of free slots (`"auto"` or a number); `None`: unset
    /// ([`Prefetch::Auto`]).
    pub prefetch: Option<Prefetch>,
}

/// How many jobs a queue claims ahead of its free slots, to wait in the worker for one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Prefetch {
    /// As many as slots free up during one claim's round trip, by what the worker observes
    /// (its jobs' run times and its claims' round trips), so that none waits more than a
    /// few milliseconds: none for jobs that run longer than a few round trips. The default.
    #[default]
    Auto,
    /// At most this many, whatever the jobs take; 0: none (a job is claimed only for a free
    /// slot).
    Fixed(usize),
}

impl fmt::Display for Prefetch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prefetch::Auto => f.write_str("auto"),
            Prefetch::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for Prefetch {
    type Err = String;

    /// `auto`, or a whole number (0: none).
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("auto") {
            return Ok(Prefetch::Auto);
        }
        text.parse()
            .map(Prefetch::Fixed)
            .map_err(|_| format!("{text:?} is neither `auto` nor a whole number of jobs"))
    }
}

/// `[queues.NAME]` tables: `queues` as a table (the list form, `queues = [...]`, is the
/// plain variable).
fn queue_tables(table: &toml::Table, path: &Path) -> Result<Vec<QueueTable>> {
    let mut queues = Vec::new();
    for (name, value) in table {
        let at = |what: String| Error::new(format!("{}: [queues.{name}]: {what}", path.display()));
        let toml::Value::Table(settings) = value else {
            return Err(at(
                "must be a table (concurrency, rate, prefetch)".to_owned()
            ));
        };
        let mut queue = QueueTable {
            name: name.clone(),
            concurrency: None,
            rate: None,
            prefetch: None,
        };
        for (key, value) in settings {
            match (key.as_str(), value) {
                ("concurrency", toml::Value::Integer(n)) => {
                    queue.concurrency = Some(
                        usize::try_from(*n)
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| at("`concurrency` must be at least 1".to_owned()))?,
                    );
                }
                ("rate", toml::Value::String(rate)) => {
                    queue.rate = Some(rate.parse().map_err(|err| at(format!("`rate`: {err}")))?);
                }
                ("prefetch", toml::Value::Integer(n)) => {
                    queue.prefetch =
                        Some(Prefetch::Fixed(usize::try_from(*n).map_err(|_| {
                            at("`prefetch` must be 0 or more".to_owned())
                        })?));
                }
                ("prefetch", toml::Value::String(text)) if text == "auto" => {
                    queue.prefetch = Some(Prefetch::Auto);
                }
                ("prefetch", toml::Value::String(text)) => {
                    return Err(at(format!(
                        "`prefetch` must be \"auto\" or a number of jobs, not {text:?}"
                    )))
                }
                ("concurrency" | "rate" | "prefetch", other) => {
                    return Err(at(format!(
                        "`{key}` has the wrong type ({})",
                        other.type_str()
                    )))
                }
                _ => {
                    return Err(at(format!(
                        "unknown key `{key}` (known: concurrency, rate, prefetch)"
                    )))
                }
            }
        }
        queues.push(queue);
    }
    Ok(queues)
}

/// The keys of a `[[schedule]]` table.
const SCHEDULE_KEYS: &[&str] = &[
    "name",
    "cron",
    "kind",
    "payload",
    "queue",
    "priority",
    "max_attempts",
    "timezone",
    "catch_up",
    "catch_up_max",
    "overlap",
];

/// One `[[schedule]]` table; an unknown key or a value of the wrong type is an error that
/// names the schedule (or its position, when it has no name yet).
fn schedule_from(table: &toml::Table, index: usize, path: &Path) -> Result<Schedule> {
    let label = match table.get("name").and_then(toml::Value::as_str) {
        Some(name) => format!("schedule {name:?}"),
        None => format!("schedule #{}", index + 1),
    };
    let at = |what: String| Error::new(format!("{}: {label}: {what}", path.display()));
    for key in table.keys() {
        if !SCHEDULE_KEYS.contains(&key.as_str()) {
            let nearest = SCHEDULE_KEYS
                .iter()
                .min_by_key(|known| strsim::levenshtein(known, key))
                .filter(|known| strsim::levenshtein(known, key) <= 3);
            return Err(at(match nearest {
                Some(known) => format!("unknown key `{key}`; did you mean `{known}`?"),
                None => format!("unknown key `{key}`"),
            }));
        }
    }
    let text = |key: &str| -> Result<Option<String>> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(at(format!(
                "`{key}` must be a string, not {}",
                other.type_str()
            ))),
        }
    };
    let number = |key: &str| -> Result<Option<i64>> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) => Ok(Some(*n)),
            Some(other) => Err(at(format!(
                "`{key}` must be a whole number, not {}",
                other.type_str()
            ))),
        }
    };
    let required = |key: &str| -> Result<String> {
        text(key)?.ok_or_else(|| at(format!("`{key}` is required")))
    };
    let mut schedule = Schedule::new(required("name")?, required("cron")?, required("kind")?);
    if let Some(payload) = table.get("payload") {
        schedule.payload =
            serde_json::to_value(payload).map_err(|err| at(format!("`payload`: {err}")))?;
    }
    if let Some(queue) = text("queue")? {
        schedule.queue = queue;
    }
    if let Some(zone) = text("timezone")? {
        schedule.timezone = zone;
    }
    if let Some(overlap) = text("overlap")? {
        schedule.overlap = overlap.parse().map_err(at)?;
    }
    if let Some(catch_up) = text("catch_up")? {
        schedule.catch_up = catch_up.parse().map_err(at)?;
    }
    if let Some(priority) = number("priority")? {
        schedule.priority =
            i16::try_from(priority).map_err(|_| at("`priority` is out of range".into()))?;
    }
    if let Some(max) = number("max_attempts")? {
        schedule.max_attempts =
            i32::try_from(max).map_err(|_| at("`max_attempts` is out of range".into()))?;
    }
    if let Some(max) = number("catch_up_max")? {
        schedule.catch_up_max =
            u32::try_from(max).map_err(|_| at("`catch_up_max` is out of range".into()))?;
    }
    Ok(schedule)
}

impl Source {
    /// Reads [`CONFIG`](crate::CONFIG)'s file, or `./docket.toml` if it exists, or none; a
    /// `DOCKET_*` variable that is no setting (a misspelling) is an error naming the nearest.
    pub fn load() -> Result<Source> {
        let names: Vec<String> = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .collect();
        if let Some((name, nearest)) = settings::unknown_variable(names.iter().map(String::as_str))
        {
            match nearest {
                Some(known) => bail!("{name} is not a Docket setting; did you mean {known}?"),
                None => bail!(
                    "{name} is not a Docket setting (docs/configuration.md lists them); \
                     unset it"
                ),
            }
        }
        let (path, required) = match std::env::var_os(settings::CONFIG.var) {
            Some(path) => (PathBuf::from(path), true),
            None => (PathBuf::from("docket.toml"), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Source::from_toml(&text, &path),
            Err(err) if !required && err.kind() == std::io::ErrorKind::NotFound => {
                Ok(Source::default())
            }
            Err(err) => {
                bail!(
                    "cannot read {} ({}): {err}",
                    path.display(),
                    settings::CONFIG
                )
            }
        }
    }

    /// Parses a file's text; an unknown key is an error that suggests the nearest known one.
    pub fn from_toml(text: &str, path: &Path) -> Result<Source> {
        let table: toml::Table = text
            .parse()
            .map_err(|err| Error::new(format!("{} is not valid TOML: {err}", path.display())))?;
        let mut file = BTreeMap::new();
        let mut schedules = Vec::new();
        let mut queues = Vec::new();
        for (key, value) in table {
            if let ("queues", toml::Value::Table(tables)) = (key.as_str(), &value) {
                queues = queue_tables(tables, path)?;
                continue;
            }
            if key == "schedule" {
                let toml::Value::Array(items) = value else {
                    bail!("{}: `schedule` must be [[schedule]] tables", path.display());
                };
                for (index, item) in items.iter().enumerate() {
                    let toml::Value::Table(table) = item else {
                        bail!("{}: `schedule` must be [[schedule]] tables", path.display());
                    };
                    schedules.push(schedule_from(table, index, path)?);
                }
                continue;
            }
            if key == settings::CONFIG.file_key() {
                bail!(
                    "{}: `{key}` cannot be set in the file it names (set {} instead)",
                    path.display(),
                    settings::CONFIG
                );
            }
            let Some(setting) = settings::ALL.iter().find(|s| s.file_key() == key) else {
                let nearest = settings::ALL
                    .iter()
                    .map(Setting::file_key)
                    .min_by_key(|known| strsim::levenshtein(known, &key))
                    .filter(|known| strsim::levenshtein(known, &key) <= 3);
                match nearest {
                    Some(known) => bail!(
                        "{}: unknown key `{key}`; did you mean `{known}`?",
                        path.display()
                    ),
                    None => bail!("{}: unknown key `{key}`", path.display()),
                }
            };
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(x) => x.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => items
                    .iter()
                    .map(|item| match item {
                        toml::Value::String(s) => Ok(s.clone()),
                        toml::Value::Integer(n) => Ok(n.to_string()),
                        other => bail!("{}: `{key}` lists a {}", path.display(), other.type_str()),
                    })
                    .collect::<Result<Vec<_>>>()?
                    .join(","),
                other => bail!(
                    "{}: `{key}` must be a string, number or boolean, not {}",
                    path.display(),
                    other.type_str()
                ),
            };
            file.insert(setting.var.to_owned(), text);
        }
        Ok(Source {
            file,
            schedules,
            queues,
            path: Some(path.to_owned()),
        })
    }

    /// A setting's value and where it came from; unset or empty is `None`.
    fn lookup(&self, setting: &Setting) -> Option<(String, String)> {
        if let Ok(value) = std::env::var(setting.var) {
            if !value.trim().is_empty() {
                return Some((value, setting.var.to_owned()));
            }
        }
        let value = self.file.get(setting.var)?;
        let path = self.path.as_deref().unwrap_or(Path::new("docket.toml"));
        Some((
            value.clone(),
            format!("{}: {}", path.display(), setting.file_key()),
        ))
    }

    /// A setting's text.
    pub fn text(&self, setting: &Setting) -> Option<String> {
        self.lookup(setting).map(|(value, _)| value)
    }

    /// A setting parsed; unparsable is an error naming the variable (or the file's key).
    pub fn parse<T: FromStr>(&self, setting: &Setting) -> Result<Option<T>>
    where
        T::Err: fmt::Display,
    {
        let Some((value, origin)) = self.lookup(setting) else {
            return Ok(None);
        };
        value
            .trim()
            .parse()
            .map(Some)
            .map_err(|err| Error::new(format!("{origin}={value:?} is not valid: {err}")))
    }

    /// A setting holding a number of seconds.
    pub fn seconds(&self, setting: &Setting) -> Result<Option<Duration>> {
        self.parse::<f64>(setting)?
            .map(|value| {
                Duration::try_from_secs_f64(value).map_err(|_| {
                    Error::new(format!(
                        "{setting} must be a number of seconds, not {value}"
                    ))
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn queue_tables_give_each_queue_its_concurrency_rate_and_prefetch() {
        let path = Path::new("docket.toml");
        let source = Source::from_toml(
            "[queues.default]\n[queues.reports]\nconcurrency = 4\nrate = \"50/s\"\nprefetch = 20\n",
            path,
        )
        .unwrap();
        assert_eq!(source.queues.len(), 2);
        let reports = source.queues.iter().find(|q| q.name == "reports").unwrap();
        assert_eq!(reports.concurrency, Some(4));
        assert_eq!(reports.rate.unwrap().per_second, 50.0);
        assert_eq!(reports.prefetch, Some(Prefetch::Fixed(20)));
        let auto = Source::from_toml("[queues.reports]\nprefetch = \"auto\"\n", path).unwrap();
        assert_eq!(auto.queues[0].prefetch, Some(Prefetch::Auto));
        for (bad, message) in [
            (
                "[queues.reports]\nprefetch = -1\n",
                "`prefetch` must be 0 or more",
            ),
            (
                "[queues.reports]\nprefetch = \"20\"\n",
                "`prefetch` must be \"auto\" or a number of jobs",
            ),
            (
                "[queues.reports]\nprefetch = true\n",
                "`prefetch` has the wrong type",
            ),
            (
                "[queues.reports]\nrate = \"fast\"\n",
                "[queues.reports]: `rate`",
            ),
            (
                "[queues.reports]\nconcurency = 4\n",
                "unknown key `concurency`",
            ),
            ("[queues.reports]\nconcurrency = 0\n", "at least 1"),
        ] {
            let err = Source::from_toml(bad, path).err().unwrap().to_string();
            assert!(err.contains(message), "{bad}: {err}");
        }
    }

    use super::*;

    #[test]
    fn file_keys_are_the_variables_without_their_prefix() {
        let source = Source::from_toml(
            "shutdown_timeout = 12\nqueues = [\"default\", \"mail:4\"]\nlisten = false\n",
            Path::new("docket.toml"),
        )
        .unwrap();
        assert_eq!(source.file["DOCKET_SHUTDOWN_TIMEOUT"], "12");
        assert_eq!(source.file["DOCKET_QUEUES"], "default,mail:4");
        assert_eq!(source.file["DOCKET_LISTEN"], "false");
    }

    #[test]
    fn an_unknown_key_suggests_the_nearest() {
        let err = Source::from_toml("concurency = 4", Path::new("docket.toml"))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "docket.toml: unknown key `concurency`; did you mean `concurrency`?"
        );
        let err = Source::from_toml("[section]\nx = 1", Path::new("docket.toml"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("unknown key `section`"), "{err}");
    }

    #[test]
    fn a_bad_file_value_names_the_file_and_key() {
        let source =
            Source::from_toml("backup_max_age = \"soon\"", Path::new("/etc/docket.toml")).unwrap();
        let err = source.seconds(&settings::BACKUP_MAX_AGE).err().unwrap();
        assert!(
            err.to_string()
                .starts_with("/etc/docket.toml: backup_max_age=\"soon\" is not valid"),
            "{err}"
        );
    }
}
