//! SMTP outcome classes: one classifier from what the relay said (or did not say) to what
//! happens to the delivery. Pure, and tested against a table of real replies.
//!
//! lettre's `is_transient` and `is_permanent` are not each other's negation (a timeout, a
//! reset connection and a TLS failure are neither), so the classifier reads the reply code
//! and the error's kind itself.

use std::fmt;

/// What went wrong in one SMTP exchange.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// A negative reply: its code and text (with the enhanced status code, if any).
    Reply {
        /// The three-digit reply code.
        code: u16,
        /// The reply's text.
        text: String,
    },
    /// No reply in time (after DATA too).
    Timeout,
    /// The connection could not be made or broke (refused, reset, closed).
    Connection(String),
    /// The TLS handshake failed, or TLS was required and not offered.
    Tls(String),
    /// The client refused to go on: no matching AUTH mechanism, STARTTLS missing.
    Client(String),
    /// The message was handed over, then the exchange broke before the relay's reply to it
    /// was read (cut off, connection lost): the relay may have it.
    AfterData(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Reply { code, text } => write!(f, "{code} {text}"),
            Failure::Timeout => f.write_str("timed out waiting for the relay"),
            Failure::Connection(e) => write!(f, "connection failed: {e}"),
            Failure::Tls(e) => write!(f, "TLS failed: {e}"),
            Failure::Client(e) => write!(f, "the relay and our settings do not match: {e}"),
            Failure::AfterData(e) => write!(
                f,
                "the message was handed to the relay, then the exchange broke ({e}): it may have been sent"
            ),
        }
    }
}

impl Failure {
    /// Reads lettre's error.
    pub(crate) fn from_lettre(err: &lettre::transport::smtp::Error) -> Failure {
        use std::error::Error as _;
        let detail = err
            .source()
            .map_or_else(|| err.to_string(), ToString::to_string);
        if let Some(code) = err.status() {
            let code = code.to_string().parse().unwrap_or(0);
            return Failure::Reply { code, text: detail };
        }
        // lettre reports a refused certificate as a connection error; it is ours to fix.
        let tls_words = ["certificate", "tls", "handshake"];
        let lower = detail.to_ascii_lowercase();
        if err.is_timeout() {
            Failure::Timeout
        } else if err.is_tls() || tls_words.iter().any(|w| lower.contains(w)) {
            Failure::Tls(detail)
        } else if err.is_client() {
            Failure::Client(detail)
        } else {
            Failure::Connection(err.to_string())
        }
    }

    /// The reply code, when the relay answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            Failure::Reply { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What a failure means for the delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Try again on the retry ladder; dead-letter when it runs out.
    Temporary,
    /// The relay itself asks us to slow down or cannot serve now (421 service not
    /// available, too many connections; 454 TLS or authentication temporarily
    /// unavailable): hold the rate limiter briefly and retry without spending the
    /// recipient's attempt. A 4xx about one recipient (450 mailbox busy, 451, 452) is
    /// [`Class::Temporary`]: that recipient's ladder, nobody else's.
    Throttled,
    /// Never retried: the delivery is `failed`.
    Permanent {
        /// The address does not exist (5.1.x): add it to the suppression list too.
        suppress: bool,
    },
    /// Our side is wrong (authentication, TLS): log it, degrade `checks.mail`, and retry
    /// without spending the recipient's attempt.
    ConfigFault,
    /// The relay may or may not have the message: the delivery is `unknown`, never sent
    /// again unless an operator asks (a retry could send it twice).
    Unknown,
}

/// The one classifier.
pub fn classify(failure: &Failure) -> Class {
    match failure {
        Failure::Timeout | Failure::Connection(_) => Class::Temporary,
        Failure::AfterData(_) => Class::Unknown,
        Failure::Tls(_) | Failure::Client(_) => Class::ConfigFault,
        Failure::Reply { code, text } => match code {
            421 | 454 => Class::Throttled,
            // Authentication required, too weak, failed, or needs encryption.
            530 | 534 | 535 | 538 => Class::ConfigFault,
            400..=499 => Class::Temporary,
            500..=599 => Class::Permanent {
                suppress: no_such_user(text),
            },
            // A reply outside 4xx/5xx is not a failure a relay sends; treat it as
            // temporary rather than lose the message.
            _ => Class::Temporary,
        },
    }
}

/// An enhanced status of 5.1.x (bad destination mailbox, address or system), or the words
/// relays without enhanced codes use for it.
fn no_such_user(text: &str) -> bool {
    let enhanced = text
        .split_whitespace()
        .next()
        .is_some_and(|word| word.starts_with("5.1."));
    let lower = text.to_ascii_lowercase();
    enhanced
        || lower.contains("user unknown")
        || lower.contains("no such user")
        || lower.contains("mailbox unavailable")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, text: &str) -> Failure {
        Failure::Reply {
            code,
            text: text.to_owned(),
        }
    }

    #[test]
    fn real_replies_fall_into_their_classes() {
        use Class::*;
        let table = [
            (
                reply(421, "4.7.0 Try again later, closing connection. (Gmail)"),
                Throttled,
            ),
            (
                reply(
                    450,
                    "4.2.1 The user you are trying to contact is receiving mail too quickly",
                ),
                Temporary,
            ),
            (reply(450, "4.2.0 Mailbox busy, try later"), Temporary),
            (
                reply(421, "4.7.0 Too many concurrent SMTP connections"),
                Throttled,
            ),
            (reply(451, "4.3.0 Temporary lookup failure"), Temporary),
            (
                reply(451, "4.7.1 Greylisting in action, please come back later"),
                Temporary,
            ),
            (
                reply(
                    452,
                    "4.2.2 The email account that you tried to reach is over quota",
                ),
                Temporary,
            ),
            (
                reply(454, "4.7.0 Temporary authentication failure"),
                Throttled,
            ),
            (
                reply(535, "5.7.8 Username and Password not accepted"),
                ConfigFault,
            ),
            (reply(530, "5.7.0 Authentication required"), ConfigFault),
            (
                reply(
                    550,
                    "5.1.1 The email account that you tried to reach does not exist",
                ),
                Permanent { suppress: true },
            ),
            (
                reply(550, "Requested action not taken: mailbox unavailable"),
                Permanent { suppress: true },
            ),
            (
                reply(550, "5.7.1 Message rejected due to content restrictions"),
                Permanent { suppress: false },
            ),
            (
                reply(552, "5.2.2 Mailbox full"),
                Permanent { suppress: false },
            ),
            (
                reply(553, "5.1.3 Invalid address syntax"),
                Permanent { suppress: true },
            ),
            (
                reply(
                    553,
                    "Sorry, that domain isn't in my list of allowed rcpthosts",
                ),
                Permanent { suppress: false },
            ),
            (
                reply(
                    554,
                    "5.7.1 Service unavailable; client host blocked using Spamhaus",
                ),
                Permanent { suppress: false },
            ),
            (Failure::Timeout, Temporary),
            (
                Failure::Connection("Connection refused (os error 111)".into()),
                Temporary,
            ),
            (
                Failure::Connection("Connection reset by peer (os error 104)".into()),
                Temporary,
            ),
            (
                Failure::Tls("invalid peer certificate: UnknownIssuer".into()),
                ConfigFault,
            ),
            (
                Failure::Client("No compatible authentication mechanism was found".into()),
                ConfigFault,
            ),
        ];
        for (failure, class) in table {
            assert_eq!(classify(&failure), class, "{failure}");
        }
    }
}
