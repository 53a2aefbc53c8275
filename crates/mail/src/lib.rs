//! # docket-mail
//!
//! Email jobs on lettre: recovery emails (password resets, sign-in links) that overtake
//! everything, operator notifications, and campaigns fanned out as batches. Every email is a
//! recorded delivery, reserved in the database before the SMTP exchange and recorded right
//! after, so a retried, rescued or `kill -9`ed job never sends twice what was recorded as
//! sent; an exchange under way outlives a stopped job and records its outcome, and one a
//! crash cut off is `unknown`, never sent again unasked.
//!
//! # Layout
//!
//! - [`model`]: the domain types (`Delivery`, `Status`, `Source`, `CampaignStatus`, …),
//!   at the bottom: they import nothing of the crate but the error.
//! - [`config`]: `MailConfig` (the `SMTP_*` and `MAIL_*` settings) with named defaults.
//! - [`template`]: the catalog (minijinja), parsed whole at start-up; locale fallback.
//! - [`message`]: addresses, the message itself (RFC 2047 headers, multipart/alternative).
//! - [`transport`]: lettre's pooled SMTP transport, or stub mode.
//! - [`outcome`]: the one classifier of SMTP replies and failures. Pure.
//! - [`sender`]: `Mailer`, the one path every email takes: prepare (suppression, expiry,
//!   render, build), rate limit, send (reserve, SMTP), settle the reply (record).
//! - [`kinds`]: the job kinds and their payloads (`mail.recovery`, `mail.admin`,
//!   `mail.campaign_batch`, `mail.campaign_finished`, `mail.dead_letter_digest`), their
//!   queues, the dead-letter schedule. Data only.
//! - [`jobs`]: their handlers and `register`; re-exports [`kinds`].
//! - [`campaign`]: recipient files, `NewCampaign::validate`, create, show, list, pause,
//!   resume, cancel.
//! - [`delivery`]: listing deliveries, the suppression list.
//! - `db`: every SQL statement, one function per statement, one file per table (private).
//! - [`health`]: the `mail` health check (the relay's recorded fault), contributed to
//!   the one health judgement as a probe.
//! - [`token`]: signed tokens naming a delivery (the unsubscribe link, the bounce
//!   address). Pure.
//! - [`dsn`]: reading what comes back to a bounce address (RFC 3464 reports, auto-replies)
//!   with `mail-parser`. Pure.
//! - [`bounce`]: the envelope sender per delivery (VERP) and bounce ingestion: `bounced`,
//!   suppressions, the record of every message.
//! - [`unsubscribe`]: one-click unsubscribe: the token checked, the address suppressed.
//! - [`error`]: the error type, `MailError`.
//!
//! Each module imports only modules below it: `model` and `kinds` at the bottom (with
//! `config`, `template`, `outcome`, `error`), `db` on `model`; `campaign`, `delivery`,
//! `message`, `transport` and `sender` above; `jobs` at the top, reaching the database only
//! through `campaign`, `delivery` and the `Mailer`.
//!
//! It owns no process: the binary reads the settings, builds the [`Mailer`] at start-up
//! (so a broken template stops it before it listens) and registers the kinds.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod bounce;
pub mod campaign;
pub mod config;
mod db;
pub mod delivery;
pub mod dsn;
pub mod error;
pub mod health;
pub mod jobs;
pub mod kinds;
pub mod message;
pub mod model;
pub mod outcome;
pub mod sender;
pub mod template;
pub mod token;
pub mod transport;
pub mod unsubscribe;

pub use config::MailConfig;
pub use error::{MailError, Result};
pub use sender::Mailer;
