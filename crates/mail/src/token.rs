//! Signed tokens that name a delivery: the one-click unsubscribe link's and the bounce
//! address's (VERP). Anyone holding a token can act on its delivery, so a token is the
//! delivery's id and an HMAC-SHA256 of it under a key derived from
//! [`docket_settings::MAIL_TOKEN_SECRET`]: nobody can make one for another delivery without the secret,
//! and checking one needs no database read.
//!
//! Each use has its own derived key, so that a bounce address is never an unsubscribe link.
//! Tokens are lower-case hex: they survive a mail server that folds the case of a local
//! part. A bounce token's MAC is cut to 80 bits so that `bounce+<token>` fits the 64
//! characters a local part may have; an unsubscribe link keeps 128.
//!
//! Rotation: tokens signed under [`docket_settings::MAIL_TOKEN_SECRET_PREVIOUS`] still verify, so links
//! in mail already sent keep working until the operator drops the previous secret.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// The shortest secret accepted: 32 characters.
pub const SECRET_MIN_LEN: usize = 32;

/// What a token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The `List-Unsubscribe` link.
    Unsubscribe,
    /// The envelope sender `bounce+<token>@…`.
    Bounce,
}

impl Purpose {
    /// The label the purpose's key is derived with.
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Unsubscribe => b"docket.mail.unsubscribe.v1",
            Purpose::Bounce => b"docket.mail.bounce.v1",
        }
    }

    /// Bytes of MAC the token keeps.
    fn mac_len(self) -> usize {
        match self {
            Purpose::Unsubscribe => 16,
            Purpose::Bounce => 10,
        }
    }
}

/// A secret that signs tokens: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

impl TokenSecret {
    /// Checks its length.
    ///
    /// # Errors
    ///
    /// A message naming the shortfall, never the secret.
    pub fn new(secret: &str) -> Result<TokenSecret, String> {
        if secret.chars().count() < SECRET_MIN_LEN {
            return Err(format!(
                "must be at least {SECRET_MIN_LEN} characters (it signs the links in every campaign email)"
            ));
        }
        Ok(TokenSecret(secret.to_owned()))
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(***)")
    }
}

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token at all (length, characters).
    #[error("not a token")]
    Malformed,
    /// Well formed, but no secret signed it: tampered with, or from before a rotation.
    #[error("the token's signature does not match")]
    BadSignature,
}

/// Signs and checks tokens with the current secret, and checks with the previous one.
#[derive(Clone)]
pub struct Signer {
    /// The current secret first.
    secrets: Vec<TokenSecret>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer with `current`, also accepting tokens of `previous`.
    pub fn new(current: TokenSecret, previous: Option<TokenSecret>) -> Signer {
        Signer {
            secrets: std::iter::once(current).chain(previous).collect(),
        }
    }

    /// The token naming `delivery` for `purpose`.
    pub fn sign(&self, purpose: Purpose, delivery: Uuid) -> String {
        let mac = mac(&self.secrets[0], purpose, delivery);
        let mut token = delivery.simple().to_string();
        for byte in &mac[..purpose.mac_len()] {
            token.push_str(&format!("{byte:02x}"));
        }
        token
    }

    /// The delivery a token names, when one of the secrets signed it for `purpose`.
    ///
    /// # Errors
    ///
    /// [`TokenError`]: malformed, or a signature that does not match.
    pub fn verify(&self, purpose: Purpose, token: &str) -> Result<Uuid, TokenError> {
        if token.len() != 32 + 2 * purpose.mac_len() {
            return Err(TokenError::Malformed);
        }
        let bytes = decode_hex(token).ok_or(TokenError::Malformed)?;
        let (id, given) = bytes.split_at(16);
        let delivery = Uuid::from_slice(id).map_err(|_| TokenError::Malformed)?;
        for secret in &self.secrets {
            let expected = mac(secret, purpose, delivery);
            if bool::from(expected[..purpose.mac_len()].ct_eq(given)) {
                return Ok(delivery);
            }
        }
        Err(TokenError::BadSignature)
    }
}

/// HMAC-SHA256 of the delivery's id under the purpose's key, itself an HMAC of the
/// purpose's label under the secret.
fn mac(secret: &TokenSecret, purpose: Purpose, delivery: Uuid) -> [u8; 32] {
    let key = hmac_sha256(secret.0.as_bytes(), purpose.label());
    hmac_sha256(&key, delivery.as_bytes())
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Lower- or upper-case hex to bytes; `None` for anything else (also the operations
/// page's session tags).
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> TokenSecret {
        TokenSecret::new(&text.repeat(32)).unwrap()
    }

    #[test]
    fn a_token_names_its_delivery_and_nothing_else() {
        let signer = Signer::new(secret("a"), None);
        let id = Uuid::now_v7();
        let token = signer.sign(Purpose::Unsubscribe, id);
        assert_eq!(token.len(), 64);
        assert_eq!(signer.verify(Purpose::Unsubscribe, &token), Ok(id));
        // Case folded by a mail server still verifies.
        assert_eq!(
            signer.verify(Purpose::Unsubscribe, &token.to_uppercase()),
            Ok(id)
        );
        // Another purpose's key refuses it.
        assert_eq!(
            signer.verify(Purpose::Bounce, &signer.sign(Purpose::Unsubscribe, id)),
            Err(TokenError::Malformed)
        );
        let bounce = signer.sign(Purpose::Bounce, id);
        assert!(format!("bounce+{bounce}").len() <= 64, "{bounce}");
        assert_eq!(signer.verify(Purpose::Bounce, &bounce), Ok(id));
    }

    #[test]
    fn a_tampered_or_foreign_token_is_refused() {
        let signer = Signer::new(secret("a"), None);
        let token = signer.sign(Purpose::Unsubscribe, Uuid::now_v7());
        // Another delivery's id with this signature.
        let other = format!("{}{}", Uuid::now_v7().simple(), &token[32..]);
        assert_eq!(
            signer.verify(Purpose::Unsubscribe, &other),
            Err(TokenError::BadSignature)
        );
        let mut flipped = token.clone().into_bytes();
        flipped[63] = if flipped[63] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            signer.verify(Purpose::Unsubscribe, std::str::from_utf8(&flipped).unwrap()),
            Err(TokenError::BadSignature)
        );
        for bad in [
            "",
            "zz",
            &token[..63],
            &format!("{token}0"),
            &"g".repeat(64),
        ] {
            assert_eq!(
                signer.verify(Purpose::Unsubscribe, bad),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
        let foreign = Signer::new(secret("b"), None);
        assert_eq!(
            foreign.verify(Purpose::Unsubscribe, &token),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn the_previous_secret_still_verifies_until_it_is_dropped() {
        let id = Uuid::now_v7();
        let old = Signer::new(secret("a"), None).sign(Purpose::Unsubscribe, id);
        let rotated = Signer::new(secret("b"), Some(secret("a")));
        assert_eq!(rotated.verify(Purpose::Unsubscribe, &old), Ok(id));
        let dropped = Signer::new(secret("b"), None);
        assert_eq!(
            dropped.verify(Purpose::Unsubscribe, &old),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_short_secret_is_refused_without_being_echoed() {
        let err = TokenSecret::new("short-LEAK").unwrap_err();
        assert!(!err.contains("LEAK"), "{err}");
        assert!(!format!("{:?}", secret("x")).contains("xxx"));
    }
}
