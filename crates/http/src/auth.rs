//! The bearer check: `Authorization: Bearer $CRON_SECRET`, compared in constant time, and
//! the slow lane that every wrong secret (a bearer token or the sign-in form's) waits in.

use std::fmt;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;
use tokio::sync::{Semaphore, SemaphorePermit};

use std::sync::Arc;

use axum::extract::FromRef;

use crate::error::ApiError;

/// The fewest characters a secret may have: `serve` refuses a shorter
/// [`CRON_SECRET`](docket_settings::CRON_SECRET) or
/// [`OPS_SECRET`](docket_settings::OPS_SECRET) at start-up. At one guess a second (the slow lane), 16 random
/// characters are out of reach.
pub const MIN_SECRET_LEN: usize = 16;

/// How long a wrong secret's answer waits, one at a time: a guesser gets one try per this
/// interval per process however many requests it sends.
pub const WRONG_SECRET_DELAY: Duration = Duration::from_secs(1);

/// Wrong secrets that may wait their turn at once. When every place is taken, a request
/// with a secret is answered 429 at once, without comparing it (neither a wrong nor a
/// right one): the line holds at most this many connections, for at most this many
/// delays, and an instant answer never tells a guess apart.
pub const WRONG_SECRET_PLACES: usize = 4;

/// The line every secret is compared in (per process): one comparison at a time, and a
/// wrong one holds the line for [`WRONG_SECRET_DELAY`] in a task of its own, so a client
/// that hangs up as soon as no answer came (the sign of a wrong guess) cannot cut its
/// penalty short. Whatever a guesser does, this process compares at most one wrong secret
/// per delay.
pub(crate) struct SlowLane {
    places: Semaphore,
    line: Arc<tokio::sync::Mutex<()>>,
}

/// A place in the slow lane, taken before a secret is compared.
pub(crate) struct Place<'a> {
    lane: &'a SlowLane,
    _permit: SemaphorePermit<'a>,
}

impl SlowLane {
    pub(crate) fn new() -> SlowLane {
        SlowLane {
            places: Semaphore::new(WRONG_SECRET_PLACES),
            line: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// A place to compare a secret in; `None` when every place is taken (answer 429).
    pub(crate) fn enter(&self) -> Option<Place<'_>> {
        let permit = self.places.try_acquire().ok()?;
        Some(Place {
            lane: self,
            _permit: permit,
        })
    }
}

impl Place<'_> {
    /// Waits for the line, then compares. A wrong secret is logged and counted at once
    /// (`route` names where it came), its penalty starts holding the line, and only then
    /// is it answered `false`, after the penalty.
    pub(crate) async fn compare(self, right: impl FnOnce() -> bool, route: &str) -> bool {
        let turn = self.lane.line.clone().lock_owned().await;
        if right() {
            return true;
        }
        tracing::warn!(
            event = docket_queue::telemetry::event::HEALTH_AUTH_FAILED,
            route,
            "a wrong secret refused"
        );
        metrics::counter!(crate::observe::AUTH_FAILURES).increment(1);
        let penalty = tokio::spawn(async move {
            tokio::time::sleep(WRONG_SECRET_DELAY).await;
            drop(turn);
        });
        let _ = penalty.await;
        false
    }
}

/// A secret that never prints: `Debug` and `Display` show `***`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Its length in characters.
    pub fn len(&self) -> usize {
        self.0.chars().count()
    }

    /// Never: an empty string is no secret (see [`Secret::new`]).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Wraps a secret. An empty string is no secret at all: `None`.
    pub fn new(value: impl Into<String>) -> Option<Secret> {
        let value = value.into();
        (!value.is_empty()).then_some(Secret(value))
    }

    /// Compares in time that depends on the secret's length only, never on the token's
    /// content or length: every byte of the secret is compared with the token's byte at
    /// that place (or a zero past its end), and the lengths are compared in constant time
    /// too. A guess therefore learns nothing, not even whether its length is right.
    pub(crate) fn matches(&self, token: &str) -> bool {
        let (secret, token) = (self.0.as_bytes(), token.as_bytes());
        let mut same = (secret.len() as u64).ct_eq(&(token.len() as u64));
        for (index, byte) in secret.iter().enumerate() {
            same &= byte.ct_eq(token.get(index).unwrap_or(&0));
        }
        same.into()
    }
}

impl Secret {
    /// The secret itself, for deriving keys from it; never for printing.
    pub(crate) fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Who is asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No `Authorization` header.
    Anonymous,
    /// The right bearer token.
    Authorized,
}

/// Extracts the caller. A request with an `Authorization` header that is not exactly
/// `Bearer <the secret>` (a wrong or empty token, `Basic`, a lower-case `bearer`, or any
/// token while no secret is configured) waits its turn in the slow lane and is answered
/// 401, logged as `health_check.auth_failed` and counted; the token itself is never logged.
/// When the lane is full, any request with the header is answered 429 at once, uncompared,
/// and counted.
impl<S: Send + Sync> FromRequestParts<S> for Caller
where
    Gate: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return Ok(Caller::Anonymous);
        };
        let gate = Gate::from_ref(state);
        let Some(place) = gate.slow_lane.enter() else {
            metrics::counter!(crate::observe::AUTH_FAILURES).increment(1);
            return Err(ApiError::TooManyAttempts);
        };
        let token = header.to_str().ok().and_then(|h| h.strip_prefix("Bearer "));
        let right = || match (&gate.secret, token) {
            (Some(secret), Some(token)) => secret.matches(token),
            _ => false,
        };
        let route = crate::observe::route_label(parts);
        if place.compare(right, &route).await {
            Ok(Caller::Authorized)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

/// What the bearer check needs of the router's state: the secret and the slow lane.
#[derive(Clone)]
pub struct Gate {
    /// The bearer secret; `None` refuses every guarded request.
    pub(crate) secret: Option<Secret>,
    /// The line wrong secrets wait in.
    pub(crate) slow_lane: Arc<SlowLane>,
}

/// Only for holders of the secret: anonymous callers are refused too.
#[derive(Clone, Copy, Debug)]
pub struct Authorized;

impl<S: Send + Sync> FromRequestParts<S> for Authorized
where
    Gate: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Authorized => Ok(Authorized),
            Caller::Anonymous => Err(ApiError::Unauthorized),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_secret_matches() {
        let secret = Secret::new("s3cret-token").unwrap();
        assert!(secret.matches("s3cret-token"));
        for wrong in [
            "",
            "s3cret",
            "s3cret-token\0",
            "s3cret-tokenX",
            "S3cret-token",
        ] {
            assert!(!secret.matches(wrong), "{wrong:?}");
        }
    }
}
