//! Sign-in to the operations page: a signed session cookie, the CSRF token of its forms,
//! and the slow lane that wrong secrets wait in.
//!
//! The cookie is `expires.nonce.mac`, the MAC an HMAC-SHA256 under a key derived from the
//! sign-in secret: every `serve` process that shares the secret accepts it, a restart keeps
//! it, and changing the secret ends every session. Signing out stores the nonce in
//! `docket.revoked_sessions` (until the session would have expired), so every `serve`
//! refuses it from then on, restarts included; "sign out everywhere" stores the moment, and
//! every session issued up to it is over. The CSRF token is an HMAC of the session's nonce,
//! so it needs no storage; the sign-in form has its own, bound to a short-lived cookie.

use std::time::Duration;

use axum::http::header::COOKIE;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::PgPool;

use crate::auth::{Secret, SlowLane};

/// How long a session lasts.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "docket_ops";

/// The sign-in form's cookie: binds the form's token to this browser.
pub(crate) const SIGN_IN_COOKIE: &str = "docket_ops_sign_in";

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks sessions for one sign-in secret.
pub(crate) struct Sessions {
    secret: Option<Secret>,
    key: Option<Vec<u8>>,
}

/// A valid session.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    nonce: String,
    expires: i64,
    /// The token every form of this session carries.
    pub(crate) csrf: String,
}

impl Sessions {
    /// Sessions signed with a key derived from `secret`; `None` disables sign-in.
    pub(crate) fn new(secret: Option<Secret>) -> Sessions {
        let key = secret.as_ref().map(|secret| {
            let mut mac = mac(secret.expose());
            mac.update(b"docket ops session key v1");
            mac.finalize().into_bytes().to_vec()
        });
        Sessions { secret, key }
    }

    /// Whether sign-in is possible at all.
    pub(crate) fn enabled(&self) -> bool {
        self.key.is_some()
    }

    fn sign(&self, parts: &[&str]) -> Option<String> {
        let mut mac = mac(self.key.as_deref()?);
        mac.update(parts.join(".").as_bytes());
        Some(hex(&mac.finalize().into_bytes()))
    }

    fn verify(&self, parts: &[&str], tag: &str) -> bool {
        let (Some(key), Some(tag)) = (self.key.as_deref(), docket_mail::token::decode_hex(tag))
        else {
            return false;
        };
        let mut mac = mac(key);
        mac.update(parts.join(".").as_bytes());
        mac.verify_slice(&tag).is_ok()
    }

    /// Checks `attempt` against the secret in a place of `lane` (a wrong one is logged,
    /// counted and answered after its penalty). `None` when the lane is full (nothing was
    /// compared).
    pub(crate) async fn check_secret(&self, lane: &SlowLane, attempt: &str) -> Option<bool> {
        let place = lane.enter()?;
        let right = || self.secret.as_ref().is_some_and(|s| s.matches(attempt));
        Some(place.compare(right, "/ops/login").await)
    }

    /// A new session's cookie value, valid from `now` (unix seconds).
    pub(crate) fn open(&self, now: i64) -> Option<String> {
        let expires = (now + SESSION_TTL.as_secs() as i64).to_string();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let tag = self.sign(&["session", &expires, &nonce])?;
        Some(format!("{expires}.{nonce}.{tag}"))
    }

    /// The session a request's cookie carries, when it is signed, unexpired and not
    /// signed out (in any process: a revocation that cannot be read counts as one).
    pub(crate) async fn session(
        &self,
        pool: &PgPool,
        headers: &HeaderMap,
        now: i64,
    ) -> Option<Session> {
        let session = self.signed_session(headers, now)?;
        match is_revoked(pool, &session).await {
            Ok(false) => Some(session),
            Ok(true) => None,
            Err(err) => {
                tracing::warn!(event = docket_queue::telemetry::event::HTTP_ERROR, error.message = %err, "cannot read the signed-out sessions; treating the session as signed out");
                None
            }
        }
    }

    /// The session a cookie carries when it is signed and unexpired (revocations unread).
    fn signed_session(&self, headers: &HeaderMap, now: i64) -> Option<Session> {
        let value = cookie(headers, SESSION_COOKIE)?;
        let mut parts = value.splitn(3, '.');
        let (expires, nonce, tag) = (parts.next()?, parts.next()?, parts.next()?);
        if !self.verify(&["session", expires, nonce], tag) {
            return None;
        }
        let expires: i64 = expires.parse().ok()?;
        if expires <= now {
            return None;
        }
        Some(Session {
            nonce: nonce.to_owned(),
            expires,
            csrf: self.sign(&["csrf", nonce])?,
        })
    }

    /// Whether `token` is `session`'s CSRF token (compared in constant time).
    pub(crate) fn csrf_ok(&self, session: &Session, token: &str) -> bool {
        self.verify(&["csrf", &session.nonce], token)
    }

    /// Ends `session` for every process (the caller also clears the cookie); with
    /// `everywhere`, every session issued until now. Revocations past their session's
    /// expiry are pruned on the way.
    ///
    /// # Errors
    ///
    /// When the database does not take the revocation.
    pub(crate) async fn revoke(
        &self,
        pool: &PgPool,
        session: &Session,
        everywhere: bool,
    ) -> sqlx::Result<()> {
        let (nonce, expires) = if everywhere {
            // Every session issued until now has expired by now + its lifetime.
            (
                "*",
                chrono::Utc::now().timestamp() + SESSION_TTL.as_secs() as i64,
            )
        } else {
            (session.nonce.as_str(), session.expires)
        };
        sqlx::query(
            "insert into docket.revoked_sessions (nonce, expires_at) values ($1, to_timestamp($2)) \
             on conflict (nonce) do update set revoked_at = now(), \
               expires_at = greatest(docket.revoked_sessions.expires_at, excluded.expires_at)",
        )
        .bind(nonce)
        .bind(expires as f64)
        .execute(docket_queue::pooled(pool))
        .await?;
        sqlx::query("delete from docket.revoked_sessions where expires_at < now()")
            .execute(docket_queue::pooled(pool))
            .await?;
        Ok(())
    }

    /// The sign-in form's nonce (the browser's, or a new one) and its token.
    pub(crate) fn sign_in_token(&self, headers: &HeaderMap) -> Option<(String, String)> {
        let nonce = cookie(headers, SIGN_IN_COOKIE)
            .filter(|n| n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
        let token = self.sign(&["sign-in", &nonce])?;
        Some((nonce, token))
    }

    /// Whether `token` is the sign-in form's token for the browser's nonce.
    pub(crate) fn sign_in_token_ok(&self, headers: &HeaderMap, token: &str) -> bool {
        cookie(headers, SIGN_IN_COOKIE).is_some_and(|nonce| self.verify(&["sign-in", nonce], token))
    }
}

/// Whether `session` was signed out, by itself or by a "sign out everywhere" after it was
/// issued.
async fn is_revoked(pool: &PgPool, session: &Session) -> sqlx::Result<bool> {
    let issued = session.expires - SESSION_TTL.as_secs() as i64;
    sqlx::query_scalar(
        "select exists (select 1 from docket.revoked_sessions \
           where nonce = $1 or (nonce = '*' and revoked_at >= to_timestamp($2)))",
    )
    .bind(&session.nonce)
    .bind(issued as f64)
    .fetch_one(docket_queue::pooled(pool))
    .await
}

fn mac(key: &[u8]) -> HmacSha256 {
    // An HMAC takes a key of any length.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"))
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with_cookie(name: &str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("other=1; {name}={value}")).unwrap(),
        );
        headers
    }

    #[test]
    fn a_session_is_valid_until_it_expires_or_is_tampered_with() {
        let sessions = Sessions::new(Secret::new("s3cret"));
        let cookie = sessions.open(1_000).unwrap();
        let headers = with_cookie(SESSION_COOKIE, &cookie);
        let session = sessions.signed_session(&headers, 1_001).expect("valid");
        assert!(sessions.csrf_ok(&session, &session.csrf));
        assert!(!sessions.csrf_ok(&session, "00"));
        assert!(sessions
            .signed_session(&headers, 1_000 + SESSION_TTL.as_secs() as i64)
            .is_none());

        let (_, rest) = cookie.split_once('.').unwrap();
        let longer = with_cookie(SESSION_COOKIE, &format!("9999999999.{rest}"));
        assert!(
            sessions.signed_session(&longer, 1_001).is_none(),
            "expiry is signed"
        );

        let other = Sessions::new(Secret::new("another"));
        assert!(
            other.signed_session(&headers, 1_001).is_none(),
            "key from the secret"
        );
    }

    #[test]
    fn no_secret_no_sessions() {
        let sessions = Sessions::new(None);
        assert!(!sessions.enabled());
        assert!(sessions.open(1).is_none());
    }
}
