//! Logging: tracing-subscriber, JSON in production, pretty on a terminal, level by
//! `RUST_LOG` (default `info`). Logs go to stderr (or a file, for the demo); command output
//! to stdout.

use std::io::IsTerminal as _;

use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub(crate) fn init(format: LogFormat, file: Option<&std::path::Path>) {
    // PostgreSQL's notices ("relation ... already exists, skipping" at each migrate) are
    // noise at info; RUST_LOG can still ask for them.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let writer = match file.map(std::fs::File::create) {
        Some(Ok(file)) => BoxMakeWriter::new(std::sync::Mutex::new(file)),
        Some(Err(err)) => {
            eprintln!("warning: cannot write the log file ({err}); logging to stderr");
            BoxMakeWriter::new(std::io::stderr)
        }
        None => BoxMakeWriter::new(std::io::stderr),
    };
    // A file is read later, not on a terminal: JSON lines.
    let format = if file.is_some() {
        LogFormat::Json
    } else {
        format
    };
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
        LogFormat::Pretty => builder
            .compact()
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    if let Err(err) = result {
        eprintln!("warning: logging not set up: {err}");
    }
}
