//! How messages leave: lettre's pooled async SMTP transport (plain, STARTTLS or implicit
//! TLS on rustls; AUTH from the URL; connect and command timeouts), or stub mode.
//!
//! lettre's pool checks a connection with NOOP before reusing it, so a connection the relay
//! closed while idle is replaced by a fresh one before the message is sent: it costs no
//! attempt.

use lettre::address::Envelope;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::config::{MailConfig, MailConfigError, Mode};
use crate::outcome::Failure;

/// The relay's positive reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Accepted {
    /// Its code (250).
    pub code: u16,
    /// Its text (often the relay's queue id).
    pub reply: String,
}

/// Where messages go.
#[derive(Clone)]
pub enum Transport {
    /// A relay over SMTP.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// Nowhere: rendered and recorded only.
    Stub,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Smtp(_) => f.write_str("Transport::Smtp"),
            Transport::Stub => f.write_str("Transport::Stub"),
        }
    }
}

impl Transport {
    /// Builds the transport the settings ask for. Nothing connects yet.
    ///
    /// # Errors
    ///
    /// [`MailConfigError`] for a URL lettre refuses or a CA file that cannot be read (the
    /// message never contains the password).
    pub fn from_config(config: &MailConfig) -> Result<Transport, MailConfigError> {
        let url = match &config.mode {
            Mode::Stub => return Ok(Transport::Stub),
            Mode::Smtp(url) => url,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            .map_err(|err| {
                MailConfigError::new(format!("DOCKET_SMTP_URL {url} is not usable: {err}"))
            })?
            .timeout(Some(config.timeout))
            .pool_config(PoolConfig::new().max_size(config.pool_size));
        if let Some(ca_file) = &config.ca_file {
            let pem = std::fs::read(ca_file).map_err(|err| {
                MailConfigError::new(format!("DOCKET_SMTP_CA_FILE {}: {err}", ca_file.display()))
            })?;
            let certificate = Certificate::from_pem(&pem).map_err(|err| {
                MailConfigError::new(format!(
                    "DOCKET_SMTP_CA_FILE {} is not a PEM certificate: {err}",
                    ca_file.display()
                ))
            })?;
            let parameters = TlsParameters::builder(url.host().to_owned())
                .add_root_certificate(certificate)
                .build_rustls()
                .map_err(|err| MailConfigError::new(format!("TLS settings: {err}")))?;
            let tls = if url.implicit_tls() {
                Tls::Wrapper(parameters)
            } else if url.tls_query() == Some("required") {
                Tls::Required(parameters)
            } else {
                Tls::Opportunistic(parameters)
            };
            builder = builder.tls(tls);
        }
        Ok(Transport::Smtp(builder.build()))
    }

    /// Sends one formatted message.
    ///
    /// # Errors
    ///
    /// [`Failure`] with what the relay said or why it could not be reached; stub mode
    /// never fails.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<Accepted, Failure> {
        match self {
            Transport::Stub => Ok(Accepted {
                code: 250,
                reply: "stub".to_owned(),
            }),
            Transport::Smtp(smtp) => match smtp.send_raw(envelope, message).await {
                Ok(response) => Ok(Accepted {
                    code: response.code().to_string().parse().unwrap_or(250),
                    reply: response.message().collect::<Vec<_>>().join(" "),
                }),
                Err(err) => Err(Failure::from_lettre(&err)),
            },
        }
    }

    /// Whether nothing leaves.
    pub fn is_stub(&self) -> bool {
        matches!(self, Transport::Stub)
    }
}
