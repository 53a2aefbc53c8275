//! End-to-end tests of the `docket` binary against a real PostgreSQL.

mod adv_mail;
mod backup;
mod bounce;
mod cli;
mod cron;
mod demo;
mod deploy;
mod embedding;
mod example;
mod http;
mod mail;
mod openapi;
mod ops;
mod pgbouncer;
mod traces;
mod unsubscribe;
mod worker;
