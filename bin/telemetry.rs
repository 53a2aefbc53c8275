//! Logging: tracing-subscriber, JSON in production, pretty on a terminal, level by
//! `RUST_LOG` (default `info`; `warn` for one-shot commands). Logs go to stderr (or a file, for the demo); command output
//! to stdout.

use std::fmt::{self, Write as _};
use std::io::IsTerminal as _;

use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// `quiet`: a one-shot command whose output is its answer (a table, an id): it logs
/// warnings and errors only, so that no info line lands among what it prints (RUST_LOG
/// can still ask for more). Services (`serve`, `worker`, the demo) and the commands timers
/// run (`backup`, `restore-check`) log from info up.
pub(crate) fn init(format: LogFormat, file: Option<std::fs::File>, quiet: bool) {
    // PostgreSQL's notices ("relation ... already exists, skipping" at each migrate) are
    // noise at info; RUST_LOG can still ask for them.
    let default = if quiet {
        "warn"
    } else {
        "info,sqlx::postgres::notice=warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A file is read later, not on a terminal: JSON lines.
    let to_file = file.is_some();
    let writer = match file {
        Some(file) => BoxMakeWriter::new(std::sync::Mutex::new(file)),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let format = if to_file { LogFormat::Json } else { format };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        // Colours only for a terminal: redirected to a file, no escape codes.
        // Field values are written with control characters escaped, as the JSON format
        // does: a job kind or an error text cannot start a line or colour the terminal.
        LogFormat::Pretty => builder
            .compact()
            .with_ansi(std::io::stderr().is_terminal())
            .fmt_fields(
                tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
                    let mut out = Escaped(writer);
                    if field.name() == "message" {
                        write!(out, "{value:?}")
                    } else {
                        write!(out, "{field}={value:?}")
                    }
                })
                .delimited(" "),
            )
            .try_init(),
    };
    if let Err(err) = result {
        eprintln!("warning: logging not set up: {err}");
    }
}

/// Writes through to `W`, each control character (a newline, an escape) as its Rust escape
/// (`\n`, `\u{1b}`).
struct Escaped<W>(W);

impl<W: fmt::Write> fmt::Write for Escaped<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for part in text.split_inclusive(char::is_control) {
            match part.char_indices().last() {
                Some((at, c)) if c.is_control() => {
                    self.0.write_str(&part[..at])?;
                    write!(self.0, "{}", c.escape_default())?;
                }
                _ => self.0.write_str(part)?,
            }
        }
        Ok(())
    }
}
