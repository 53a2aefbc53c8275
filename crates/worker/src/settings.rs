//! The runtime's settings as the binary reads them: the environment over `docket.toml`,
//! through the one settings table, with the same validation and the same messages in an
//! application that embeds the runtime.

use std::time::Duration;

use docket_settings::{self as settings, Error, QueueTable, Result, Setting, Source};

use crate::config::{QueueConfig, RuntimeConfig, CONCURRENCY_DEFAULT};

impl RuntimeConfig {
    /// The runtime's settings from the environment over `docket.toml` (the file named by
    /// [`settings::CONFIG`], else `./docket.toml` when it exists); unset ones keep their
    /// defaults. A misspelled `DOCKET_*` variable or file key is an error naming the nearest
    /// setting, and a value out of range names its variable.
    ///
    /// # Errors
    ///
    /// A setting that cannot be read, or a configuration [`RuntimeConfig::validate`] refuses.
    pub fn from_env() -> Result<RuntimeConfig> {
        RuntimeConfig::from_source(&Source::load()?)
    }

    /// The runtime's settings from `source`; unset ones keep their defaults.
    ///
    /// # Errors
    ///
    /// As [`RuntimeConfig::from_env`].
    pub fn from_source(source: &Source) -> Result<RuntimeConfig> {
        let mut config = RuntimeConfig::default();
        let concurrency = source
            .parse(&settings::CONCURRENCY)?
            .unwrap_or(CONCURRENCY_DEFAULT);
        config.queues = match source.text(&settings::QUEUES) {
            Some(queues) => parse_queues(&queues, concurrency)
                .map_err(|err| Error::new(format!("{}: {err}", settings::QUEUES)))?,
            // The built-in list, then each `[queues.NAME]` table's queue not in it: a table
            // adds a queue's settings to the served list, it never replaces the list (a
            // `[queues.mail]` alone must not leave `default` and `recovery` unserved).
            None => served_queues(&source.queues, concurrency),
        };
        apply_queue_tables(&mut config.queues, &source.queues);
        config.global_concurrency = source.parse(&settings::GLOBAL_CONCURRENCY)?;
        if let Some(batch) = source.parse(&settings::CLAIM_BATCH)? {
            config.claim_batch = batch;
        }
        if let Some(cron) = source.parse::<bool>(&settings::CRON)? {
            config.cron = cron;
        }
        config.schedules = source.schedules.clone();
        // A transaction-mode pooler cannot keep a LISTEN: polling does all the work there.
        let pooler: docket_queue::Pooler = source.parse(&settings::POOLER)?.unwrap_or_default();
        config.listen = pooler == docket_queue::Pooler::Session;
        match source.parse::<bool>(&settings::LISTEN)? {
            Some(true) if !config.listen => {
                return Err(Error::new(format!(
                    "{}=true cannot work with {}=transaction: the pooler hands the LISTEN's \
                     server connection to other clients after each transaction; leave {} unset",
                    settings::LISTEN,
                    settings::POOLER,
                    settings::LISTEN
                )))
            }
            Some(listen) => config.listen = listen,
            None => {}
        }
        let seconds = |setting: &Setting, field: &mut Duration| -> Result<()> {
            if let Some(value) = source.seconds(setting)? {
                *field = value;
            }
            Ok(())
        };
        seconds(&settings::POLL_INTERVAL, &mut config.poll_interval)?;
        seconds(
            &settings::HEARTBEAT_INTERVAL,
            &mut config.heartbeat_interval,
        )?;
        seconds(&settings::LEASE_TIMEOUT, &mut config.lease_timeout)?;
        seconds(&settings::SHUTDOWN_TIMEOUT, &mut config.shutdown_timeout)?;
        seconds(&settings::RESCUER_INTERVAL, &mut config.rescuer_interval)?;
        seconds(&settings::PRUNER_INTERVAL, &mut config.pruner_interval)?;
        seconds(&settings::PARK_AFTER, &mut config.park_after)?;
        seconds(
            &settings::COMPLETED_RETENTION,
            &mut config.completed_retention,
        )?;
        seconds(
            &settings::CANCELLED_RETENTION,
            &mut config.cancelled_retention,
        )?;
        seconds(
            &settings::DEAD_LETTER_RETENTION,
            &mut config.dead_letter_retention,
        )?;
        config.check_settings()?;
        Ok(config)
    }

    /// This configuration serving `list` (`name[:concurrency],...`, as `--queues` gives it)
    /// instead of its queues, each `[queues.NAME]` table's rate and prefetch applied.
    ///
    /// # Errors
    ///
    /// A list that names no queue or gives a concurrency that is not a whole number.
    pub fn serving(
        mut self,
        list: &str,
        concurrency: usize,
        tables: &[QueueTable],
    ) -> Result<RuntimeConfig> {
        self.queues = parse_queues(list, concurrency)?;
        apply_queue_tables(&mut self.queues, tables);
        Ok(self)
    }

    /// [`RuntimeConfig::validate`], its message in the user's terms: each field it names
    /// (`lease_timeout`) becomes the variable that sets it ([`settings::LEASE_TIMEOUT`]; its
    /// key in `docket.toml` is the same name in lower case without the prefix).
    ///
    /// # Errors
    ///
    /// What [`RuntimeConfig::validate`] refuses.
    pub fn check_settings(&self) -> Result<()> {
        self.validate()
            .map_err(|err| Error::new(name_variables(&err.to_string())))
    }
}

/// The queues a worker serves when [`settings::QUEUES`] is unset: the built-in ones
/// ([`docket_queue::enqueue::BUILT_IN_QUEUES`]), then every `[queues.NAME]` table's queue
/// not among them, in the file's order. A table's concurrency is its queue's; unset,
/// [`settings::CONCURRENCY`].
fn served_queues(tables: &[QueueTable], concurrency: usize) -> Vec<QueueConfig> {
    let mut queues: Vec<QueueConfig> = docket_queue::enqueue::BUILT_IN_QUEUES
        .into_iter()
        .map(|name| QueueConfig::new(name).concurrency(concurrency))
        .collect();
    for table in tables {
        let queue =
            QueueConfig::new(&table.name).concurrency(table.concurrency.unwrap_or(concurrency));
        match queues.iter_mut().find(|q| q.name == table.name) {
            Some(served) => *served = queue,
            None => queues.push(queue),
        }
    }
    queues
}

/// A queue's rate and prefetch hold whichever list names the queue (the file's tables,
/// [`settings::QUEUES`] or `--queues`).
fn apply_queue_tables(queues: &mut [QueueConfig], tables: &[QueueTable]) {
    for queue in queues {
        let table = tables.iter().find(|table| table.name == queue.name);
        queue.rate = table.and_then(|table| table.rate);
        queue.prefetch = table.and_then(|table| table.prefetch).unwrap_or_default();
    }
}

/// `name[:concurrency],...`, e.g. `default,mail:4`.
fn parse_queues(list: &str, concurrency: usize) -> Result<Vec<QueueConfig>> {
    let queues = list
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once(':') {
            Some((name, n)) => {
                let n = n.parse().map_err(|_| {
                    Error::new(format!("{item:?}: concurrency must be a whole number"))
                })?;
                Ok(QueueConfig::new(name.trim()).concurrency(n))
            }
            None => Ok(QueueConfig::new(item).concurrency(concurrency)),
        })
        .collect::<Result<Vec<_>>>()?;
    if queues.is_empty() {
        return Err(Error::new("names no queue"));
    }
    Ok(queues)
}

/// `message` with each settings key it names as a whole word replaced by its variable.
fn name_variables(message: &str) -> String {
    let mut out = message.to_owned();
    for setting in settings::ALL {
        let key = setting.file_key();
        if key == setting.var.to_ascii_lowercase() {
            continue; // DATABASE_URL and the like: the key is the variable
        }
        let mut replaced = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(at) = rest.find(&key) {
            let before = rest[..at].chars().next_back();
            let after = rest[at + key.len()..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            replaced.push_str(&rest[..at]);
            if word(before) || word(after) {
                replaced.push_str(&key);
            } else {
                replaced.push_str(setting.var);
            }
            rest = &rest[at + key.len()..];
        }
        replaced.push_str(rest);
        out = replaced;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_list_takes_per_queue_concurrency() {
        let queues = parse_queues("default, mail:4", 10).unwrap();
        assert_eq!(
            queues,
            [
                QueueConfig::new("default").concurrency(10),
                QueueConfig::new("mail").concurrency(4)
            ]
        );
        assert!(parse_queues("mail:four", 10).is_err());
        assert!(parse_queues(" , ", 10).is_err());
    }

    #[test]
    fn a_queue_table_adds_its_settings_and_never_drops_the_built_in_queues() {
        let source = Source::from_toml(
            "[queues.mail]\nconcurrency = 2\n[queues.reports]\nrate = \"5/s\"\n",
            std::path::Path::new("docket.toml"),
        )
        .unwrap();
        // The test's own environment sets neither DOCKET_QUEUES nor DOCKET_CONCURRENCY.
        let queues = RuntimeConfig::from_source(&source).unwrap().queues;
        let n = CONCURRENCY_DEFAULT;
        let served: Vec<(&str, usize)> = queues
            .iter()
            .map(|q| (q.name.as_str(), q.concurrency))
            .collect();
        assert_eq!(
            served,
            [("default", n), ("mail", 2), ("recovery", n), ("reports", n)]
        );
        assert_eq!(queues[3].rate.unwrap().per_second, 5.0);
    }

    #[test]
    fn a_refused_value_names_the_variable_that_sets_it() {
        let source = Source::from_toml(
            "lease_timeout = 8\nheartbeat_interval = 5\n",
            std::path::Path::new("docket.toml"),
        )
        .unwrap();
        let err = RuntimeConfig::from_source(&source).unwrap_err().to_string();
        assert!(
            err.contains(settings::LEASE_TIMEOUT.var)
                && err.contains(settings::HEARTBEAT_INTERVAL.var),
            "{err}"
        );
    }

    #[test]
    fn behind_a_transaction_mode_pooler_listen_is_off_and_cannot_be_turned_on() {
        let path = std::path::Path::new("docket.toml");
        let pooled =
            |text: &str| RuntimeConfig::from_source(&Source::from_toml(text, path).unwrap());
        assert!(pooled("").unwrap().listen);
        assert!(!pooled("pooler = \"transaction\"").unwrap().listen);
        assert!(
            !pooled("pooler = \"transaction\"\nlisten = false")
                .unwrap()
                .listen
        );
        let err = pooled("pooler = \"transaction\"\nlisten = true").unwrap_err();
        assert!(
            err.to_string()
                .contains("DOCKET_LISTEN=true cannot work with DOCKET_POOLER=transaction"),
            "{err}"
        );
        let err = pooled("pooler = \"statement\"").unwrap_err().to_string();
        assert!(err.contains("write session or transaction"), "{err}");
    }

    #[test]
    fn the_default_runtime_serves_the_queues_the_binary_serves() {
        let source = Source::default();
        let from_settings: Vec<String> = RuntimeConfig::from_source(&source)
            .unwrap()
            .queues
            .into_iter()
            .map(|q| q.name)
            .collect();
        let default: Vec<String> = RuntimeConfig::default()
            .queues
            .into_iter()
            .map(|q| q.name)
            .collect();
        assert_eq!(from_settings, ["default", "mail", "recovery"]);
        assert_eq!(default, from_settings);
    }
}
