//! Cron ticks as a model (to come).
