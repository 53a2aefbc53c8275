//! The bearer check: `Authorization: Bearer $CRON_SECRET`, compared in constant time.

use std::fmt;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// A secret that never prints: `Debug` and `Display` show `***`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
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
/// token while no secret is configured) is answered 401 here, logged as
/// `health_check.auth_failed` and counted; the token itself is never logged.
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return Ok(Caller::Anonymous);
        };
        let authorized = match (
            &state.cron_secret,
            header.to_str().ok().and_then(|h| h.strip_prefix("Bearer ")),
        ) {
            (Some(secret), Some(token)) => secret.matches(token),
            _ => false,
        };
        if authorized {
            return Ok(Caller::Authorized);
        }
        let route = parts.uri.path().to_owned();
        tracing::warn!(
            event = docket_queue::telemetry::event::HEALTH_AUTH_FAILED,
            route,
            "request with a wrong bearer token refused"
        );
        metrics::counter!(crate::observe::AUTH_FAILURES).increment(1);
        Err(ApiError::Unauthorized)
    }
}

/// Only for holders of the secret: anonymous callers are refused too.
#[derive(Clone, Copy, Debug)]
pub struct Authorized;

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
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
