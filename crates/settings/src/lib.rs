//! Docket's settings, for the binary and for an application that embeds Docket alike.
//!
//! - [`table`]: every setting once (the variable, its default, who reads it, what it
//!   means); `docs/configuration.md` shows the same rows, word for word.
//! - [`Source`]: where values come from, the environment over `docket.toml`; a misspelled
//!   variable or key is an error that names the nearest setting.
//!
//! Each crate reads its own settings from a [`Source`] through the table's constants
//! (`RuntimeConfig::from_source` in the worker, `MailConfig::from_source` in the mail
//! crate), so no other code spells a variable's name.

mod source;
pub mod table;

pub use source::{Prefetch, QueueTable, Source};
pub use table::*;

/// A setting that cannot be read: the message names the variable (or the file and its key)
/// and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Error {
        Error(message.into())
    }
}

/// A result whose error is a setting that cannot be read.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Returns early with an [`Error`] made from a format string.
#[macro_export]
#[doc(hidden)]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::Error::new(format!($($arg)*)))
    };
}
