//! An SMTP sink: a real SMTP server on a loopback port that keeps what it receives and can
//! be told to misbehave: a reply per recipient (`550 5.1.1`, `451 4.3.0`), a reply for every
//! recipient, a stall before every reply, a slow answer after DATA, STARTTLS with a self-signed certificate, AUTH
//! PLAIN/LOGIN with one account, and closing idle connections. The mail tests, the demo and
//! the drill all talk to this one.
//!
//! It speaks enough of RFC 5321 for a real client (EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA
//! with dot-unstuffing, RSET, NOOP, QUIT); a message counts as received once its DATA is
//! taken, right before the 250 (or, with [`SmtpSink::slow_data`], that long before it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

/// The longest command line or message line the sink reads (RFC 5321 allows 1000 octets).
const LINE_LIMIT: usize = 64 * 1024;

/// One message as the sink received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients accepted for it.
    pub to: Vec<String>,
    /// The message, headers and body, dot-unstuffed, as sent.
    pub data: Vec<u8>,
    /// When its DATA was answered 250.
    pub at: std::time::Instant,
}

/// A certificate and its key, as PEM files the sink serves and a client may trust.
#[derive(Clone, Debug)]
pub struct SelfSigned {
    /// The certificate (PEM), for `localhost` and `127.0.0.1`.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl SelfSigned {
    /// Makes a fresh self-signed certificate with the `openssl` command.
    ///
    /// # Panics
    ///
    /// When `openssl` is missing or fails.
    pub fn generate() -> SelfSigned {
        let dir = std::env::temp_dir().join(format!("docket-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let status = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            // A leaf, not a CA: webpki refuses a CA certificate as the server's own.
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "extendedKeyUsage=serverAuth"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl command (apt-get install openssl)");
        assert!(status.success(), "openssl could not make a certificate");
        SelfSigned { cert, key }
    }
}

#[derive(Default)]
struct Rules {
    /// Lower-cased address → the reply to its RCPT.
    per_recipient: HashMap<String, String>,
    /// The reply to every RCPT without a rule of its own.
    every_recipient: Option<String>,
    /// Every reply waits until then.
    stall_until: Option<Instant>,
    /// Lower-cased address → how long its RCPT waits for an answer (a slow mailbox).
    slow_recipients: HashMap<String, Duration>,
    /// How long the answer to a message's end waits once the message is taken.
    slow_data: Option<Duration>,
    /// The account AUTH accepts; `None`: AUTH is not offered nor required.
    account: Option<(String, String)>,
}

#[derive(Default)]
struct Shared {
    rules: Rules,
    received: Vec<Received>,
    /// RCPT commands seen per lower-cased address (accepted or not).
    attempts: HashMap<String, usize>,
    connections: usize,
}

/// A running sink; it stops when dropped.
pub struct SmtpSink {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    close_idle: watch::Sender<u64>,
    tls: Option<SelfSigned>,
    _accepting: AbortOnDrop,
}

/// Aborts the accept loop when the sink is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a sink starts.
#[derive(Default)]
pub struct SmtpSinkBuilder {
    tls: Option<SelfSigned>,
    account: Option<(String, String)>,
    addr: Option<SocketAddr>,
}

impl SmtpSinkBuilder {
    /// Offers STARTTLS with this certificate.
    pub fn starttls(mut self, cert: SelfSigned) -> Self {
        self.tls = Some(cert);
        self
    }

    /// Requires AUTH (PLAIN or LOGIN) with this account before MAIL.
    pub fn auth(mut self, user: &str, password: &str) -> Self {
        self.account = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Listens here instead of on a free loopback port.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    /// Binds and starts accepting.
    ///
    /// # Panics
    ///
    /// When the port cannot be bound or the certificate cannot be read.
    pub async fn start(self) -> SmtpSink {
        let listener = TcpListener::bind(self.addr.unwrap_or(([127, 0, 0, 1], 0).into()))
            .await
            .expect("bind the SMTP sink");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Mutex::new(Shared::default()));
        lock(&shared).rules.account = self.account;
        let acceptor = self.tls.as_ref().map(acceptor);
        let (close_idle, closes) = watch::channel(0);
        let accept_shared = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                lock(&accept_shared).connections += 1;
                let _ = stream.set_nodelay(true);
                let session = Session {
                    shared: accept_shared.clone(),
                    acceptor: acceptor.clone(),
                    closes: closes.clone(),
                };
                tokio::spawn(session.run(Box::new(stream)));
            }
        });
        SmtpSink {
            addr,
            shared,
            close_idle,
            tls: self.tls,
            _accepting: AbortOnDrop(task),
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

fn acceptor(cert: &SelfSigned) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&cert.cert)
        .expect("certificate file")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_file(&cert.key).expect("key PEM");
    // ring, the provider lettre is built with here: aws-lc-rs would need cmake and a long
    // C build for a test sink.
    #[allow(deprecated)]
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("certificate and key");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

impl SmtpSink {
    /// A plain sink on a free loopback port.
    pub async fn start() -> SmtpSink {
        SmtpSink::builder().start().await
    }

    /// A sink with options.
    pub fn builder() -> SmtpSinkBuilder {
        SmtpSinkBuilder::default()
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL for [`SMTP_URL`](docket_settings::SMTP_URL) (plain; with STARTTLS offered, `?tls=required` is
    /// added).
    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("smtp://localhost:{}?tls=required", self.addr.port()),
            None => format!("smtp://{}", self.addr),
        }
    }

    /// The certificate it serves, for the client to trust.
    pub fn certificate(&self) -> Option<&SelfSigned> {
        self.tls.as_ref()
    }

    /// Answers RCPT for `address` with `reply` (e.g. `"550 5.1.1 no such user"`);
    /// `None` accepts it again.
    pub fn reply_to(&self, address: &str, reply: Option<&str>) {
        let mut shared = lock(&self.shared);
        let key = address.to_ascii_lowercase();
        match reply {
            Some(reply) => shared.rules.per_recipient.insert(key, reply.to_owned()),
            None => shared.rules.per_recipient.remove(&key),
        };
    }

    /// Answers every RCPT without a rule of its own with `reply`; `None` accepts again.
    pub fn reply_to_all(&self, reply: Option<&str>) {
        lock(&self.shared).rules.every_recipient = reply.map(str::to_owned);
    }

    /// Answers RCPT for `address` only after `delay` (a slow destination), every time.
    pub fn slow_recipient(&self, address: &str, delay: Duration) {
        lock(&self.shared)
            .rules
            .slow_recipients
            .insert(address.to_ascii_lowercase(), delay);
    }

    /// Takes every message (it counts as received at once) but answers its end only
    /// `delay` later: a relay that queued the message and is slow to say so. A client cut
    /// off in that time has sent the message without hearing it.
    pub fn slow_data(&self, delay: Option<Duration>) {
        lock(&self.shared).rules.slow_data = delay;
    }

    /// Holds every reply (the greeting too) back for `duration` from now.
    pub fn stall_for(&self, duration: Duration) {
        lock(&self.shared).rules.stall_until = Some(Instant::now() + duration);
    }

    /// Closes every connection that waits for a command, as a server does with idle ones.
    pub fn close_idle_connections(&self) {
        self.close_idle.send_modify(|generation| *generation += 1);
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<Received> {
        lock(&self.shared).received.clone()
    }

    /// How many messages were received for `address`.
    pub fn count_for(&self, address: &str) -> usize {
        let address = address.to_ascii_lowercase();
        lock(&self.shared)
            .received
            .iter()
            .filter(|m| m.to.iter().any(|to| to.eq_ignore_ascii_case(&address)))
            .count()
    }

    /// How many RCPT commands named `address`, accepted or refused.
    pub fn attempts_for(&self, address: &str) -> usize {
        lock(&self.shared)
            .attempts
            .get(&address.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.shared).connections
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Session {
    shared: Arc<Mutex<Shared>>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    closes: watch::Receiver<u64>,
}

/// One transaction's envelope.
#[derive(Default)]
struct Envelope {
    from: Option<String>,
    to: Vec<String>,
}

impl Session {
    async fn run(mut self, stream: Box<dyn Io>) {
        let _ = self.serve(stream).await;
    }

    async fn reply(&self, io: &mut BufReader<Box<dyn Io>>, text: &str) -> std::io::Result<()> {
        loop {
            let until = lock(&self.shared).rules.stall_until;
            match until {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => break,
            }
        }
        // One write per reply: two small writes meet Nagle and delayed ACKs (40 ms each).
        io.get_mut()
            .write_all(format!("{text}\r\n").as_bytes())
            .await?;
        io.get_mut().flush().await
    }

    async fn serve(&mut self, stream: Box<dyn Io>) -> std::io::Result<()> {
        let mut io = BufReader::new(stream);
        let mut secure = false;
        let mut authed = false;
        let mut envelope = Envelope::default();
        self.closes.mark_unchanged();
        self.reply(&mut io, "220 localhost docket SMTP sink")
            .await?;
        loop {
            let line = tokio::select! {
                line = read_line(&mut io) => line?,
                _ = self.closes.changed() => {
                    let _ = self.reply(&mut io, "421 4.4.2 idle connection closed").await;
                    return Ok(());
                }
            };
            let Some(line) = line else { return Ok(()) };
            let upper = line.to_ascii_uppercase();
            let verb = upper.split_whitespace().next().unwrap_or("");
            let needs_auth = lock(&self.shared).rules.account.is_some();
            match verb {
                "EHLO" => {
                    let mut lines = vec!["250-localhost".to_owned(), "250-8BITMIME".to_owned()];
                    lines.push("250-SMTPUTF8".to_owned());
                    if self.acceptor.is_some() && !secure {
                        lines.push("250-STARTTLS".to_owned());
                    }
                    if needs_auth && (secure || self.acceptor.is_none()) {
                        lines.push("250-AUTH PLAIN LOGIN".to_owned());
                    }
                    lines.push("250 SIZE 20000000".to_owned());
                    self.reply(&mut io, &lines.join("\r\n")).await?;
                }
                "HELO" => self.reply(&mut io, "250 localhost").await?,
                "STARTTLS" if self.acceptor.is_some() && !secure => {
                    self.reply(&mut io, "220 2.0.0 ready to start TLS").await?;
                    let acceptor = self.acceptor.clone().expect("checked above");
                    let tls = acceptor.accept(io.into_inner()).await?;
                    io = BufReader::new(Box::new(tls));
                    secure = true;
                    envelope = Envelope::default();
                }
                "AUTH" => {
                    authed = self.auth(&mut io, &line).await?;
                }
                "MAIL" => {
                    if needs_auth && !authed {
                        self.reply(&mut io, "530 5.7.0 authentication required")
                            .await?;
                        continue;
                    }
                    envelope = Envelope {
                        from: Some(address_of(&line)),
                        to: Vec::new(),
                    };
                    self.reply(&mut io, "250 2.1.0 ok").await?;
                }
                "RCPT" => {
                    let address = address_of(&line);
                    let key = address.to_ascii_lowercase();
                    let (rule, delay) = {
                        let mut shared = lock(&self.shared);
                        *shared.attempts.entry(key.clone()).or_default() += 1;
                        let rule = shared
                            .rules
                            .per_recipient
                            .get(&key)
                            .or(shared.rules.every_recipient.as_ref())
                            .cloned();
                        (rule, shared.rules.slow_recipients.get(&key).copied())
                    };
                    if let Some(delay) = delay {
                        tokio::time::sleep(delay).await;
                    }
                    match rule {
                        Some(reply) => self.reply(&mut io, &reply).await?,
                        None if envelope.from.is_none() => {
                            self.reply(&mut io, "503 5.5.1 MAIL first").await?;
                        }
                        None => {
                            envelope.to.push(address);
                            self.reply(&mut io, "250 2.1.5 ok").await?;
                        }
                    }
                }
                "DATA" => {
                    if envelope.to.is_empty() {
                        self.reply(&mut io, "503 5.5.1 no valid recipients").await?;
                        continue;
                    }
                    self.reply(&mut io, "354 end data with <CR><LF>.<CR><LF>")
                        .await?;
                    let data = read_data(&mut io).await?;
                    let received = Received {
                        from: envelope.from.take().unwrap_or_default(),
                        to: std::mem::take(&mut envelope.to),
                        data,
                        at: std::time::Instant::now(),
                    };
                    let (number, slow) = {
                        let mut shared = lock(&self.shared);
                        shared.received.push(received);
                        (shared.received.len(), shared.rules.slow_data)
                    };
                    if let Some(slow) = slow {
                        tokio::time::sleep(slow).await;
                    }
                    self.reply(&mut io, &format!("250 2.0.0 ok: queued as {number}"))
                        .await?;
                }
                "RSET" => {
                    envelope = Envelope::default();
                    self.reply(&mut io, "250 2.0.0 ok").await?;
                }
                "NOOP" => self.reply(&mut io, "250 2.0.0 ok").await?,
                "QUIT" => {
                    self.reply(&mut io, "221 2.0.0 bye").await?;
                    return Ok(());
                }
                _ => {
                    self.reply(&mut io, "502 5.5.2 command not recognised")
                        .await?
                }
            }
        }
    }

    /// AUTH PLAIN (with or without an initial response) and AUTH LOGIN.
    async fn auth(&self, io: &mut BufReader<Box<dyn Io>>, line: &str) -> std::io::Result<bool> {
        let account = lock(&self.shared).rules.account.clone();
        let mut words = line.split_whitespace().skip(1);
        let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
        let initial = words.next().map(str::to_owned);
        let decode = |text: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .unwrap_or_default()
        };
        let (user, password) = match mechanism.as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(response) => response,
                    None => {
                        self.reply(io, "334 ").await?;
                        read_line(io).await?.unwrap_or_default()
                    }
                };
                let decoded = decode(&response);
                let mut parts = decoded.split('\0').skip(1);
                (
                    parts.next().unwrap_or("").to_owned(),
                    parts.next().unwrap_or("").to_owned(),
                )
            }
            "LOGIN" => {
                let user = match initial {
                    Some(user) => decode(&user),
                    None => {
                        self.reply(io, "334 VXNlcm5hbWU6").await?;
                        decode(&read_line(io).await?.unwrap_or_default())
                    }
                };
                self.reply(io, "334 UGFzc3dvcmQ6").await?;
                let password = decode(&read_line(io).await?.unwrap_or_default());
                (user, password)
            }
            _ => {
                self.reply(io, "504 5.5.4 unrecognised authentication type")
                    .await?;
                return Ok(false);
            }
        };
        if account.as_ref() == Some(&(user, password)) {
            self.reply(io, "235 2.7.0 authentication successful")
                .await?;
            Ok(true)
        } else {
            self.reply(io, "535 5.7.8 authentication credentials invalid")
                .await?;
            Ok(false)
        }
    }
}

/// `MAIL FROM:<a@b> SIZE=1` → `a@b`.
fn address_of(line: &str) -> String {
    let start = line.find('<').map_or(0, |i| i + 1);
    let end = line[start..].find('>').map_or(line.len(), |i| start + i);
    line[start..end].trim().to_owned()
}

/// One line without its CRLF; `None` at the end of the stream.
async fn read_line(io: &mut BufReader<Box<dyn Io>>) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = (&mut *io)
        .take(LINE_LIMIT as u64)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// The message up to the lone dot, dot-unstuffed, with CRLF line ends.
async fn read_data(io: &mut BufReader<Box<dyn Io>>) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = (&mut *io)
            .take(LINE_LIMIT as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(data);
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        data.extend_from_slice(line);
    }
}

/// Waits a little for a sink to have received `count` messages in all.
///
/// # Panics
///
/// When `timeout` passes first.
pub async fn wait_for_messages(sink: &SmtpSink, count: usize, timeout: Duration) {
    crate::eventually(
        timeout,
        &format!("{count} messages at the sink"),
        || async { sink.messages().len() >= count },
    )
    .await;
}
