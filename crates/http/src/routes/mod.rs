//! One module per route family.

pub(crate) mod batches;
pub(crate) mod cron;
pub(crate) mod health;
pub(crate) mod jobs;
pub(crate) mod mail;
pub(crate) mod metrics;
pub(crate) mod openapi;
pub(crate) mod queues;
pub(crate) mod unsubscribe;
