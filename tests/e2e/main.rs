//! End-to-end tests of the `docket` binary against a real PostgreSQL.

mod cli;
mod cron;
mod http;
mod mail;
mod openapi;
mod worker;
