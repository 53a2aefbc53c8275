//! End-to-end tests of the `docket` binary against a real PostgreSQL.

mod cli;
mod cron;
mod http;
mod openapi;
mod worker;
