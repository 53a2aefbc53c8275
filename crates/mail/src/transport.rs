//! How messages leave: a pool of SMTP connections built on lettre's connection (plain,
//! STARTTLS or implicit TLS on rustls; AUTH PLAIN/LOGIN from the URL), or stub mode.
//!
//! # Why a pool of our own
//!
//! lettre's pooled transport leaves Nagle's algorithm on and writes a message's final
//! `\r\n.\r\n` as a write of its own, so every message waits for the relay's delayed ACK:
//! 40 ms on Linux, at most 22 messages a second per connection (measured, see
//! `docs/benchmarks.md`). It also bounds only the connect, not the exchange, so a relay that
//! stalls after DATA holds a sender forever. Here each plain or STARTTLS connection is made
//! with `TCP_NODELAY`, and each exchange is bounded by [`SMTP_TIMEOUT`](docket_settings::SMTP_TIMEOUT). (Implicit TLS,
//! `smtps://`, goes through lettre's own connect and keeps the 40 ms until lettre sets
//! `TCP_NODELAY` itself; prefer STARTTLS on 587 for throughput.)
//!
//! # Urgent messages
//!
//! Recovery emails go first on the rate limit and have their own queue; here they also
//! never wait for a connection behind a campaign: with every pooled connection in use, an
//! urgent message opens one of [`URGENT_EXTRA`] more.
//!
//! # Idle connections
//!
//! A connection idle for more than [`IDLE_MAX`] is closed rather than reused, and one that
//! has idled less is checked with NOOP first: a connection the relay closed while idle is
//! replaced by a fresh one before the message is sent, so it costs no attempt. A connection
//! that saw any error is closed (lettre marks it broken).

use docket_settings as settings;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::config::{MailConfig, MailConfigError, Mode, SmtpUrl};
use crate::outcome::Failure;

/// Idle connections older than this are closed instead of reused (lettre's pool uses the
/// same figure).
pub const IDLE_MAX: Duration = Duration::from_secs(60);

/// How long a reply to the message may still be read once the exchange's deadline passed:
/// long enough for a reply already in the socket, far below any relay's think time.
const REPLY_GRACE: Duration = Duration::from_millis(250);

/// Connections beyond the pool's size that urgent messages may open while bulk mail holds
/// every pooled one.
pub const URGENT_EXTRA: usize = 2;

/// The relay's positive reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Accepted {
    /// Its code (250).
    pub code: u16,
    /// Its text (often the relay's queue id).
    pub reply: String,
}

/// Where messages go.
#[derive(Clone, Debug)]
pub enum Transport {
    /// A relay over SMTP.
    Smtp(Arc<SmtpPool>),
    /// Nowhere: rendered and recorded only.
    Stub,
}

impl Transport {
    /// Builds the transport the settings ask for. Nothing connects yet.
    ///
    /// # Errors
    ///
    /// [`MailConfigError`] for a URL that does not name a relay, or a CA file that cannot
    /// be read (the message never contains the password).
    pub fn from_config(config: &MailConfig) -> Result<Transport, MailConfigError> {
        match &config.mode {
            Mode::Stub => Ok(Transport::Stub),
            Mode::Smtp(url) => Ok(Transport::Smtp(Arc::new(SmtpPool::new(url, config)?))),
        }
    }

    /// Sends one formatted message: [`Transport::connect`], then [`Connection::send`].
    ///
    /// # Errors
    ///
    /// [`Failure`] with what the relay said or why it could not be reached; stub mode
    /// never fails.
    pub async fn send(
        &self,
        envelope: &Envelope,
        message: &[u8],
        urgent: bool,
    ) -> Result<Accepted, Failure> {
        self.connect(urgent)
            .await?
            .send(envelope, message, None)
            .await
    }

    /// A connection ready for one message: a permit of the pool and a live connection
    /// (reused or made, within the timeout). Nothing of a message has been sent yet, so
    /// the exchange that follows is bounded by [`docket_settings::SMTP_TIMEOUT`] alone.
    /// An `urgent` message (a recovery email) never waits for a connection behind bulk
    /// mail: when the pool is all in use, it takes one of [`URGENT_EXTRA`] more.
    ///
    /// # Errors
    ///
    /// [`Failure`] when the relay cannot be reached or refuses the session.
    pub async fn connect(&self, urgent: bool) -> Result<Connection<'_>, Failure> {
        match self {
            Transport::Stub => Ok(Connection::Stub),
            Transport::Smtp(pool) => Ok(Connection::Smtp(Box::new(pool.checkout(urgent).await?))),
        }
    }

    /// Whether nothing leaves.
    pub fn is_stub(&self) -> bool {
        matches!(self, Transport::Stub)
    }

    /// The relay's host and port; `None` in stub mode.
    pub fn relay_address(&self) -> Option<(&str, u16)> {
        match self {
            Transport::Stub => None,
            Transport::Smtp(pool) => Some((&pool.host, pool.port)),
        }
    }

    /// The relay's `host:port` (never its credentials); `None` in stub mode.
    pub fn relay(&self) -> Option<String> {
        match self {
            Transport::Stub => None,
            Transport::Smtp(pool) if pool.host.contains(':') => {
                Some(format!("[{}]:{}", pool.host, pool.port))
            }
            Transport::Smtp(pool) => Some(format!("{}:{}", pool.host, pool.port)),
        }
    }
}

/// One message's way out, from [`Transport::connect`].
pub enum Connection<'a> {
    /// Stub mode.
    Stub,
    /// A pooled SMTP connection and its permit.
    Smtp(Box<Checkout<'a>>),
}

impl Connection<'_> {
    /// Sends the message: one exchange, bounded by [`docket_settings::SMTP_TIMEOUT`]. The connection
    /// goes back to the pool when it is still good. `hand_over_by` (a job's expiry) bounds
    /// the commands before the message only: once the message is being handed over, the
    /// exchange runs to its end, so that what the relay did is known.
    ///
    /// # Errors
    ///
    /// [`Failure`] with what the relay said, [`Failure::Timeout`] (nothing was handed over),
    /// or [`Failure::AfterData`] (the message was handed over, then the exchange broke: the
    /// relay may have it).
    pub async fn send(
        self,
        envelope: &Envelope,
        message: &[u8],
        hand_over_by: Option<Duration>,
    ) -> Result<Accepted, Failure> {
        match self {
            Connection::Stub => Ok(Accepted {
                code: 250,
                reply: "stub".to_owned(),
            }),
            Connection::Smtp(checkout) => checkout.send(envelope, message, hand_over_by).await,
        }
    }
}

/// A connection out of the pool with the permit it holds.
pub struct Checkout<'a> {
    pool: &'a SmtpPool,
    connection: AsyncSmtpConnection,
    _permit: SemaphorePermit<'a>,
}

impl Checkout<'_> {
    /// The exchange in two parts, because they fail differently: up to DATA's 354 the relay
    /// has no message, so any failure may be retried; after it, a cut-off or broken
    /// connection leaves the relay maybe holding the message (it may have answered 250 into
    /// a socket we no longer read), and retrying would send it twice.
    async fn send(
        mut self: Box<Self>,
        envelope: &Envelope,
        message: &[u8],
        hand_over_by: Option<Duration>,
    ) -> Result<Accepted, Failure> {
        let deadline = tokio::time::Instant::now() + self.pool.timeout;
        let before_data = hand_over_by.map_or(deadline, |left| {
            deadline.min(tokio::time::Instant::now() + left)
        });
        match tokio::time::timeout_at(before_data, self.envelope(envelope, message)).await {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => {
                self.connection.abort().await;
                return Err(failure);
            }
            // Cut off before the message: the connection's state is unknown, so it is dropped.
            Err(_) => return Err(Failure::Timeout),
        }
        let replied = {
            let reply = self.connection.message(message);
            tokio::pin!(reply);
            match tokio::time::timeout_at(deadline, &mut reply).await {
                Ok(replied) => Some(replied),
                // A process stopped past the deadline (SIGSTOP, a paused VM) wakes with its
                // timer fired before it looked at the socket, where the reply may wait.
                Err(_) => tokio::time::timeout(REPLY_GRACE, &mut reply).await.ok(),
            }
        };
        match replied {
            Some(Ok(response)) => {
                self.pool.put_back(self.connection);
                Ok(Accepted {
                    code: response.code().to_string().parse().unwrap_or(250),
                    reply: response.message().collect::<Vec<_>>().join(" "),
                })
            }
            Some(Err(err)) => {
                self.connection.abort().await;
                match Failure::from_lettre(&err) {
                    // The relay answered the message: a refusal is as certain as a 250.
                    reply @ Failure::Reply { .. } => Err(reply),
                    broken => Err(Failure::AfterData(broken.to_string())),
                }
            }
            None => Err(Failure::AfterData(
                "no reply to the message in time".to_owned(),
            )),
        }
    }

    /// MAIL FROM, RCPT TO and DATA, as lettre's own `send` does them (SMTPUTF8 and
    /// 8BITMIME when the envelope or message need them, refused when the relay lacks them).
    async fn envelope(&mut self, envelope: &Envelope, message: &[u8]) -> Result<(), Failure> {
        let lettre_failure = |err: lettre::transport::smtp::Error| Failure::from_lettre(&err);
        let info = self.connection.server_info();
        let mut options = Vec::new();
        let non_ascii_address = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .any(|address| !AsRef::<str>::as_ref(address).is_ascii());
        if non_ascii_address {
            if !info.supports_feature(Extension::SmtpUtfEight) {
                return Err(Failure::Client(
                    "the envelope has non-ASCII addresses and the relay does not offer SMTPUTF8"
                        .to_owned(),
                ));
            }
            options.push(MailParameter::SmtpUtfEight);
        }
        if !message.is_ascii() {
            if !info.supports_feature(Extension::EightBitMime) {
                return Err(Failure::Client(
                    "the message has non-ASCII bytes and the relay does not offer 8BITMIME"
                        .to_owned(),
                ));
            }
            options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        self.connection
            .command(Mail::new(envelope.from().cloned(), options))
            .await
            .map_err(lettre_failure)?;
        for to in envelope.to() {
            self.connection
                .command(Rcpt::new(to.clone(), Vec::new()))
                .await
                .map_err(lettre_failure)?;
        }
        self.connection
            .command(Data)
            .await
            .map_err(lettre_failure)?;
        Ok(())
    }
}

/// How a connection is secured.
#[derive(Clone)]
enum Security {
    /// Plain text (local relays).
    Plain,
    /// STARTTLS after the greeting; `required` refuses a relay that does not offer it.
    StartTls {
        parameters: TlsParameters,
        required: bool,
    },
    /// TLS from the first byte (`smtps://`).
    Implicit(TlsParameters),
}

/// SMTP connections to one relay: at most `size` at once, idle ones kept for reuse.
pub struct SmtpPool {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
    /// Idle connections and since when, newest last.
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    /// One permit per connection in use.
    permits: Semaphore,
    /// Permits urgent messages take when `permits` has none free.
    urgent_permits: Semaphore,
}

impl std::fmt::Debug for SmtpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpPool")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl SmtpPool {
    fn new(url: &SmtpUrl, config: &MailConfig) -> Result<SmtpPool, MailConfigError> {
        let parsed = url::Url::parse(url.expose())
            .map_err(|err| MailConfigError::new(format!("{} {url}: {err}", settings::SMTP_URL)))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| MailConfigError::new(format!("{} names no host", settings::SMTP_URL)))?
            .trim_matches(['[', ']'])
            .to_owned();
        let tls_query = url.tls_query();
        let parameters = || -> Result<TlsParameters, MailConfigError> {
            let mut builder = TlsParameters::builder(host.clone());
            if let Some(ca_file) = &config.ca_file {
                let pem = std::fs::read(ca_file).map_err(|err| {
                    MailConfigError::new(format!(
                        "{} {}: {err}",
                        settings::SMTP_CA_FILE,
                        ca_file.display()
                    ))
                })?;
                let certificate = Certificate::from_pem(&pem).map_err(|err| {
                    MailConfigError::new(format!(
                        "{} {} is not a PEM certificate: {err}",
                        settings::SMTP_CA_FILE,
                        ca_file.display()
                    ))
                })?;
                builder = builder.add_root_certificate(certificate);
            }
            builder
                .build_rustls()
                .map_err(|err| MailConfigError::new(format!("TLS settings: {err}")))
        };
        let (security, default_port) = match (url.implicit_tls(), tls_query) {
            (true, _) => (Security::Implicit(parameters()?), 465),
            (false, Some("required")) => (
                Security::StartTls {
                    parameters: parameters()?,
                    required: true,
                },
                587,
            ),
            (false, Some("opportunistic")) => (
                Security::StartTls {
                    parameters: parameters()?,
                    required: false,
                },
                587,
            ),
            (false, None) => (Security::Plain, 25),
            (false, Some(other)) => {
                return Err(MailConfigError::new(format!(
                    "{}: tls={other} is not known (required or opportunistic)",
                    settings::SMTP_URL
                )))
            }
        };
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8_lossy()
                .into_owned()
        };
        let credentials = (!parsed.username().is_empty()).then(|| {
            Credentials::new(
                decode(parsed.username()),
                decode(parsed.password().unwrap_or("")),
            )
        });
        let pool_size = usize::try_from(config.pool_size).unwrap_or(1);
        Ok(SmtpPool {
            host,
            port: parsed.port().unwrap_or(default_port),
            security,
            credentials,
            hello: ClientId::default(),
            timeout: config.timeout,
            idle: Mutex::new(Vec::with_capacity(pool_size)),
            permits: Semaphore::new(pool_size),
            urgent_permits: Semaphore::new(URGENT_EXTRA),
        })
    }

    async fn checkout(&self, urgent: bool) -> Result<Checkout<'_>, Failure> {
        // The semaphores are never closed, so acquiring only waits.
        let free = self.permits.try_acquire().ok();
        let permit = match (free, urgent) {
            (Some(permit), _) => permit,
            (None, true) => self
                .urgent_permits
                .acquire()
                .await
                .map_err(|_| Failure::Timeout)?,
            (None, false) => self.permits.acquire().await.map_err(|_| Failure::Timeout)?,
        };
        let connection = match self.reuse().await {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        Ok(Checkout {
            pool: self,
            connection,
            _permit: permit,
        })
    }

    /// The newest idle connection that still answers, closing stale ones on the way.
    async fn reuse(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let (mut connection, since) = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()?;
            let fresh = since.elapsed() < IDLE_MAX;
            if fresh
                && tokio::time::timeout(self.timeout, connection.test_connected())
                    .await
                    .unwrap_or(false)
            {
                return Some(connection);
            }
            let _ = tokio::time::timeout(self.timeout, connection.abort()).await;
        }
    }

    fn put_back(&self, connection: AsyncSmtpConnection) {
        if !connection.has_broken() {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((connection, Instant::now()));
        }
    }

    /// A new connection: TCP (with `TCP_NODELAY`), greeting and EHLO, TLS, AUTH; all of it
    /// within the timeout.
    async fn connect(&self) -> Result<AsyncSmtpConnection, Failure> {
        tokio::time::timeout(self.timeout, self.connect_unbounded())
            .await
            .map_err(|_| Failure::Timeout)?
    }

    async fn connect_unbounded(&self) -> Result<AsyncSmtpConnection, Failure> {
        let lettre_failure = |err: lettre::transport::smtp::Error| Failure::from_lettre(&err);
        let mut connection = match &self.security {
            Security::Implicit(parameters) => AsyncSmtpConnection::connect_tokio1(
                (self.host.as_str(), self.port),
                Some(self.timeout),
                &self.hello,
                Some(parameters.clone()),
                None,
            )
            .await
            .map_err(lettre_failure)?,
            Security::Plain | Security::StartTls { .. } => {
                let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                    .await
                    .map_err(|err| Failure::Connection(err.to_string()))?;
                stream
                    .set_nodelay(true)
                    .map_err(|err| Failure::Connection(err.to_string()))?;
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                    .await
                    .map_err(lettre_failure)?
            }
        };
        if let Security::StartTls {
            parameters,
            required,
        } = &self.security
        {
            if *required || connection.can_starttls() {
                connection
                    .starttls(parameters.clone(), &self.hello)
                    .await
                    .map_err(lettre_failure)?;
            }
        }
        if let Some(credentials) = &self.credentials {
            connection
                .auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(lettre_failure)?;
        }
        Ok(connection)
    }
}
