//! Building one message: sender, recipient (with display name), subject, text and HTML as
//! `multipart/alternative`, and a deterministic Message-ID. lettre encodes non-ASCII
//! headers (RFC 2047) and picks quoted-printable or base64 for the bodies.

use lettre::address::Envelope;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::Message;

use crate::error::{MailError, Result};
use crate::template::Rendered;

/// An address or `Name <address>`.
///
/// # Errors
///
/// [`MailError::Invalid`] saying why it is not one.
pub fn parse_address(text: &str) -> Result<lettre::Address> {
    parse_mailbox(text, None).map(|mailbox| mailbox.email)
}

/// A mailbox from an address or `Name <address>`, with `name` used when the text has none.
///
/// # Errors
///
/// [`MailError::Invalid`] saying why it is not one.
pub fn parse_mailbox(text: &str, name: Option<&str>) -> Result<Mailbox> {
    let mut mailbox: Mailbox = text
        .trim()
        .parse()
        .map_err(|err| MailError::Invalid(format!("{text:?} is not an email address: {err}")))?;
    if mailbox.name.is_none() {
        mailbox.name = name.filter(|n| !n.trim().is_empty()).map(str::to_owned);
    }
    Ok(mailbox)
}

/// The Message-ID of a delivery: the same on every attempt, so a relay or a mailbox that
/// sees a message twice (an operator resending an `unknown` delivery the relay had taken)
/// can tell, and the relay's log can say whether an `unknown` one arrived.
pub fn message_id(delivery: uuid::Uuid, from: &Mailbox) -> String {
    format!("<{delivery}@{}>", from.email.domain())
}

/// A campaign email's `List-Unsubscribe` (RFC 2369): the one-click link, and a mailto
/// when one is configured. With it goes `List-Unsubscribe-Post` (RFC 8058).
#[derive(Clone, Debug, PartialEq)]
pub struct ListUnsubscribe {
    /// The https link, answered by `docket serve`.
    pub url: String,
    /// `mailto:address?subject=…`, if any.
    pub mailto: Option<String>,
}

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }

    fn parse(_: &str) -> std::result::Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Err("List-Unsubscribe is only written".into())
    }

    fn display(&self) -> HeaderValue {
        let mut value = format!("<{}>", self.url);
        if let Some(mailto) = &self.mailto {
            value.push_str(&format!(", <{mailto}>"));
        }
        HeaderValue::new(Self::name(), value)
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058): the link unsubscribes
/// with one POST, no page to visit.
#[derive(Clone, Copy, Debug)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }

    fn parse(_: &str) -> std::result::Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribePost)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_owned())
    }
}

/// The envelope and the formatted message; `list` adds the unsubscribe headers (campaign
/// emails only: recovery and admin emails are transactional).
///
/// # Errors
///
/// [`MailError::Invalid`] when lettre refuses the parts.
pub(crate) fn build(
    from: &Mailbox,
    to: Mailbox,
    rendered: &Rendered,
    message_id: &str,
    list: Option<ListUnsubscribe>,
) -> Result<(Envelope, Vec<u8>)> {
    let mut builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(rendered.subject.clone())
        .message_id(Some(message_id.to_owned()));
    if let Some(list) = list {
        builder = builder.header(list).header(ListUnsubscribePost);
    }
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(rendered.text.clone());
    let message = match &rendered.html {
        Some(html) => builder.multipart(
            MultiPart::alternative().singlepart(text).singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(html.clone()),
            ),
        ),
        None => builder.singlepart(text),
    }
    .map_err(|err| MailError::Invalid(format!("the message cannot be built: {err}")))?;
    Ok((message.envelope().clone(), message.formatted()))
}
