//! Rate limits that hold over every process together: a token bucket per name in
//! `docket.rate_limits`, refilled and taken from in one statement under the row's lock.
//!
//! A taker that finds the bucket empty learns how long until the next token and waits
//! that long itself; nothing is held while it waits. A *borrower* (a recovery email ahead
//! of a campaign) may take while the bucket is up to `borrow` tokens below empty, so it
//! never queues behind bulk work, and the bulk work pays the debt back by waiting longer.
//! Over any window the bucket lets through at most `rate × window + burst + borrow`.

use std::time::Duration;

use sqlx::PgExecutor;

use crate::db;
use crate::error::{Error, Result};

/// A rate: `count` per `per`, e.g. `"50/s"`, `"1000/h"`, `"10/m"`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Tokens a second.
    pub per_second: f64,
}

impl std::str::FromStr for Rate {
    type Err = Error;

    /// Parses `N/s`, `N/m`, `N/h` or a plain `N` (per second).
    fn from_str(text: &str) -> Result<Rate> {
        let bad = || {
            Error::InvalidArgument(format!(
                "rate {text:?}: write a positive count per second, minute or hour, e.g. \"50/s\" or \"1000/h\""
            ))
        };
        let (count, unit) = text.trim().split_once('/').unwrap_or((text.trim(), "s"));
        let count: f64 = count.trim().parse().map_err(|_| bad())?;
        let seconds = match unit.trim() {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            "h" | "hour" => 3600.0,
            _ => return Err(bad()),
        };
        if !(count.is_finite() && count > 0.0) {
            return Err(bad());
        }
        Ok(Rate {
            per_second: count / seconds,
        })
    }
}

/// A named bucket.
#[derive(Clone, Debug)]
pub struct RateLimit {
    /// The bucket's name, shared by every process that limits the same thing.
    pub name: String,
    /// The refill rate.
    pub rate: Rate,
    /// Tokens the bucket holds when full: how many may go at once after a quiet spell.
    /// At least 1.
    pub burst: f64,
}

/// What one take found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Take {
    /// This many tokens were taken (at least one).
    Taken(u32),
    /// None was there: try again after this long.
    Wait(Duration),
}

impl RateLimit {
    /// A bucket of `rate` whose burst is one second's worth (at least 1).
    pub fn new(name: impl Into<String>, rate: Rate) -> RateLimit {
        RateLimit {
            name: name.into(),
            rate,
            burst: rate.per_second.max(1.0),
        }
    }

    /// Takes one token, or says how long until one is there. `borrow` lets the taker go
    /// ahead of everyone while the bucket is at most that many tokens in debt.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the database fails.
    pub async fn take(&self, exec: impl PgExecutor<'_>, borrow: f64) -> Result<Take> {
        self.take_up_to(exec, 1, borrow).await
    }

    /// Takes up to `wanted` tokens at once (a claim of that many jobs), or says how long
    /// until one is there.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the database fails.
    pub async fn take_up_to(
        &self,
        exec: impl PgExecutor<'_>,
        wanted: u32,
        borrow: f64,
    ) -> Result<Take> {
        let params = db::TakeParams {
            name: &self.name,
            rate: self.rate.per_second,
            burst: self.burst,
            wanted: i32::try_from(wanted).unwrap_or(i32::MAX),
            borrow,
        };
        let (granted, level) = db::rate_limit_take(exec, &params).await?;
        if let Ok(granted @ 1..) = u32::try_from(granted) {
            return Ok(Take::Taken(granted));
        }
        let missing = (1.0 - borrow - level).max(0.0);
        let seconds = (missing / self.rate.per_second).clamp(0.001, 3600.0);
        Ok(Take::Wait(Duration::from_secs_f64(seconds)))
    }

    /// Gives back tokens taken but not used (a claim found fewer jobs than it had tokens).
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the database fails.
    pub async fn give_back(&self, exec: impl PgExecutor<'_>, unused: u32) -> Result<()> {
        if unused == 0 {
            return Ok(());
        }
        let unused = i32::try_from(unused).unwrap_or(i32::MAX);
        Ok(db::rate_limit_give_back(exec, &self.name, unused).await?)
    }

    /// Holds every taker back for `pause` (after a "slow down" from whatever the bucket
    /// guards). Holds do not add up: two at once hold for the longer, not the sum.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the database fails.
    pub async fn hold(&self, exec: impl PgExecutor<'_>, pause: Duration) -> Result<()> {
        Ok(db::rate_limit_hold(exec, &self.name, pause.as_secs_f64()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_per_second_minute_and_hour() {
        assert_eq!("50/s".parse::<Rate>().unwrap().per_second, 50.0);
        assert_eq!("120/m".parse::<Rate>().unwrap().per_second, 2.0);
        assert_eq!("3600/h".parse::<Rate>().unwrap().per_second, 1.0);
        assert_eq!("7".parse::<Rate>().unwrap().per_second, 7.0);
        for bad in ["", "0/s", "-1/s", "ten/s", "5/week", "NaN/s"] {
            let err = bad.parse::<Rate>().unwrap_err().to_string();
            assert!(err.contains("per second, minute or hour"), "{bad}: {err}");
        }
    }
}
