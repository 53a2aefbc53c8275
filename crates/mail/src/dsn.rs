//! Reading what comes back to a bounce address: a delivery status notification
//! (RFC 3464, `multipart/report; report-type=delivery-status`), an auto-reply, or anything
//! else. Pure: [`read`] takes the raw message and says what it is and which token its
//! bounce address carries. The MIME structure, transfer encodings and header fields are
//! `mail-parser`'s; the report's per-recipient blocks are header fields too, read the same
//! way.

use mail_parser::{MessageParser, MimeHeaders};

/// What one message is.
#[derive(Clone, Debug, PartialEq)]
pub struct Read {
    /// The token of the `bounce+<token>@…` address it was sent to, if any.
    pub token: Option<String>,
    /// What it says.
    pub kind: Kind,
}

/// What a message says.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A delivery status notification: its first recipient's report.
    Report(RecipientReport),
    /// An automatic reply (out of office, vacation): nothing about delivery.
    AutoReply,
    /// Neither: not a report we can read, with why.
    Other(&'static str),
}

/// One recipient's block of a delivery status notification.
#[derive(Clone, Debug, PartialEq)]
pub struct RecipientReport {
    /// `Action`: `failed`, `delayed`, `delivered`, `relayed`, `expanded`, lower case.
    pub action: String,
    /// The enhanced status code (`5.1.1`): `Status`, or, when that is only a class
    /// (`5.0.0`, as Exim writes), the more precise one in the diagnostic.
    pub status: Option<String>,
    /// `Diagnostic-Code`, unfolded: what the remote server said.
    pub diagnostic: Option<String>,
}

impl RecipientReport {
    /// A permanent failure: the message will not be delivered.
    pub fn failed(&self) -> bool {
        self.action == "failed"
    }

    /// The address does not exist (5.1.x: bad mailbox, bad domain, …): never send again.
    pub fn no_such_address(&self) -> bool {
        self.status
            .as_deref()
            .is_some_and(|s| s.starts_with("5.1."))
    }
}

/// Reads a raw message (as a relay's pipe or the HTTP body hands it over). `domain`, when
/// set, is the only bounce domain whose addresses count.
pub fn read(raw: &[u8], domain: Option<&str>) -> Read {
    let Some(message) = MessageParser::default().parse(raw) else {
        return Read {
            token: None,
            kind: Kind::Other("not a message"),
        };
    };
    // Where relays put the address a message was delivered to, most precise first: the
    // envelope recipient as Postfix (`Delivered-To`, `X-Original-To`) and Exim
    // (`Envelope-To`) record it, then the header recipient.
    let token = ["Delivered-To", "X-Original-To", "Envelope-To", "To"]
        .into_iter()
        .filter_map(|name| message.header_raw(name))
        .find_map(|value| token_of(value, domain));
    let kind = match message.content_type() {
        Some(ct)
            if ct.ctype().eq_ignore_ascii_case("multipart")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("report"))
                && ct
                    .attribute("report-type")
                    .is_some_and(|t| t.eq_ignore_ascii_case("delivery-status")) =>
        {
            report_of(&message)
        }
        _ if is_auto_reply(&message) => Kind::AutoReply,
        _ => Kind::Other("not a delivery status notification"),
    };
    Read { token, kind }
}

/// The token of the first `bounce+<token>@domain` address in a header value.
fn token_of(value: &str, domain: Option<&str>) -> Option<String> {
    value
        .split([',', '<', '>', ' ', '\t', '\r', '\n', ';'])
        .filter_map(|word| word.split_once('@'))
        .find_map(|(local, at)| {
            let token = local
                .get(..7)
                .filter(|p| p.eq_ignore_ascii_case("bounce+"))
                .map(|_| &local[7..])?;
            let matches = domain.is_none_or(|d| d.eq_ignore_ascii_case(at.trim()));
            (matches && !token.is_empty()).then(|| token.to_ascii_lowercase())
        })
}

/// The report's first recipient block that says something (`Action` present).
fn report_of(message: &mail_parser::Message<'_>) -> Kind {
    let Some(part) = message.parts.iter().find(|part| {
        part.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("message")
                && ct.subtype().is_some_and(|s| {
                    s.eq_ignore_ascii_case("delivery-status")
                        || s.eq_ignore_ascii_case("global-delivery-status")
                })
        })
    }) else {
        return Kind::Other("a report without a delivery-status part");
    };
    let text = String::from_utf8_lossy(part.contents()).replace("\r\n", "\n");
    // Blocks of fields separated by blank lines: the message's, then one per recipient.
    for block in text.split("\n\n").skip(1) {
        let Some(fields) = MessageParser::default().parse_headers(block.as_bytes()) else {
            continue;
        };
        let field = |name: &str| fields.header_raw(name).map(unfold);
        let Some(action) = field("Action") else {
            continue;
        };
        let diagnostic = field("Diagnostic-Code");
        let status = field("Status").map(|s| {
            let code = s.split_whitespace().next().unwrap_or("").to_owned();
            match (
                code.ends_with(".0.0"),
                diagnostic.as_deref().and_then(enhanced_code),
            ) {
                (true, Some(precise)) if precise.starts_with(&code[..1]) => precise,
                _ => code,
            }
        });
        return Kind::Report(RecipientReport {
            action: action.to_ascii_lowercase(),
            status,
            diagnostic,
        });
    }
    Kind::Other("a delivery status notification with no recipient's action")
}

/// A field's value on one line.
fn unfold(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The first enhanced status code (`5.1.1`) in a diagnostic text.
fn enhanced_code(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|word| {
            let parts: Vec<&str> = word.split('.').collect();
            parts.len() == 3
                && matches!(parts[0], "2" | "4" | "5")
                && parts[1..]
                    .iter()
                    .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_owned)
}

/// An automatic reply (RFC 3834 `Auto-Submitted`, or the older `Precedence` and
/// vacation-program marks).
fn is_auto_reply(message: &mail_parser::Message<'_>) -> bool {
    let header = |name: &str| {
        message
            .header_raw(name)
            .map(|v| v.trim().to_ascii_lowercase())
    };
    header("Auto-Submitted").is_some_and(|v| v != "no")
        || header("X-Autoreply").is_some()
        || header("X-Autorespond").is_some()
        || header("Precedence").is_some_and(|v| v == "auto_reply")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_from_bounce_addresses_of_the_domain_only() {
        assert_eq!(
            token_of(
                " <Bounce+ABC123@Bounces.Example.com>",
                Some("bounces.example.com")
            ),
            Some("abc123".to_owned())
        );
        assert_eq!(
            token_of("bounce+abc@other.example", Some("bounces.example.com")),
            None
        );
        assert_eq!(
            token_of("ann@example.com, bounce+x@b.example", None),
            Some("x".into())
        );
        assert_eq!(token_of("bounce+@b.example", None), None);
    }

    #[test]
    fn the_precise_code_comes_from_the_diagnostic_when_the_status_is_a_class() {
        assert_eq!(
            enhanced_code("smtp; 550 5.1.1 <nobody@example.net>: User unknown"),
            Some("5.1.1".to_owned())
        );
        assert_eq!(enhanced_code("smtp; 550 User unknown 1.2"), None);
    }
}
