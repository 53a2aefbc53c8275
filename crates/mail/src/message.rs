//! Building one message: sender, recipient (with display name), subject, text and HTML as
//! `multipart/alternative`, and a deterministic Message-ID. lettre encodes non-ASCII
//! headers (RFC 2047) and picks quoted-printable or base64 for the bodies.

use lettre::address::Envelope;
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
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

/// The envelope and the formatted message.
///
/// # Errors
///
/// [`MailError::Invalid`] when lettre refuses the parts.
pub(crate) fn build(
    from: &Mailbox,
    to: Mailbox,
    rendered: &Rendered,
    message_id: &str,
) -> Result<(Envelope, Vec<u8>)> {
    let builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(rendered.subject.clone())
        .message_id(Some(message_id.to_owned()));
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
