//! Integration tests of the mail jobs, in process, against a real PostgreSQL and the
//! testkit's SMTP sink (a real SMTP server on loopback).

mod adversarial;
mod bounce;
mod campaign;
mod in_flight;
mod notify;
mod operator_word;
mod recovery;
mod transport;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use docket_mail::config::{Mode, SmtpUrl};
use docket_mail::token::TokenSecret;
use docket_mail::{MailConfig, Mailer};
use docket_testkit::SmtpSink;
use docket_worker::{builtin, QueueConfig, Registry, Runtime, RuntimeConfig};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A runtime running in the background, stopped by `shutdown`.
pub(crate) struct Running {
    stop: CancellationToken,
    handle: JoinHandle<docket_queue::Result<()>>,
}

impl Running {
    pub(crate) async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("runtime stops")
            .expect("runtime task")
            .expect("runtime result");
    }
}

/// A template catalog of the test's own: `(path, text)` pairs under a fresh folder.
pub(crate) fn templates(files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("docket-mail-it-{}", uuid::Uuid::now_v7()));
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// The base of the unsubscribe links in the tests' emails (nothing listens there).
pub(crate) const PUBLIC_URL: &str = "https://docket.example.com";

/// The tests' token secret.
pub(crate) const TOKEN_SECRET: &str = "test-token-secret-0123456789abcdef";

/// Settings that send to `sink` with a ladder of seconds.
pub(crate) fn config_for(sink: &SmtpSink, template_dir: PathBuf) -> MailConfig {
    config_for_url(&sink.url(), template_dir)
}

/// Settings that send to the sink at `url` (in another process) with a ladder of seconds.
pub(crate) fn config_for_url(url: &str, template_dir: PathBuf) -> MailConfig {
    MailConfig {
        mode: Mode::Smtp(SmtpUrl::parse(url).unwrap()),
        from: Some("Docket <docket@example.com>".to_owned()),
        template_dir,
        timeout: Duration::from_secs(5),
        retry_ladder: vec![Duration::from_secs(1); 4],
        public_url: Some(PUBLIC_URL.to_owned()),
        token_secret: Some(TokenSecret::new(TOKEN_SECRET).unwrap()),
        ..MailConfig::default()
    }
}

/// Runs the mail kinds (and the built-in ones) on `mail` and `recovery`.
pub(crate) fn start(pool: &PgPool, config: MailConfig) -> Running {
    start_tuned(pool, config, |_| {})
}

/// Like [`start`], with the runtime's settings adjusted by `tune`.
pub(crate) fn start_tuned(
    pool: &PgPool,
    config: MailConfig,
    tune: impl FnOnce(&mut RuntimeConfig),
) -> Running {
    let mailer = Mailer::new(pool.clone(), config).expect("valid mail settings");
    let mut registry = Registry::new();
    builtin::register(&mut registry);
    docket_mail::jobs::register(&mut registry, Arc::new(mailer));
    let mut runtime_config = RuntimeConfig {
        queues: vec![
            QueueConfig::new("mail").concurrency(4),
            QueueConfig::new("recovery").concurrency(2),
        ],
        poll_interval: Duration::from_millis(200),
        shutdown_timeout: Duration::from_secs(5),
        ..RuntimeConfig::default()
    };
    tune(&mut runtime_config);
    let runtime = Runtime::new(pool.clone(), registry, runtime_config).expect("valid runtime");
    let stop = CancellationToken::new();
    let handle = tokio::spawn(runtime.run(stop.clone().cancelled_owned()));
    Running { stop, handle }
}

/// The recorded deliveries, newest first: all of them, or one campaign's.
pub(crate) async fn deliveries(
    pool: &PgPool,
    campaign_id: Option<uuid::Uuid>,
) -> Vec<docket_mail::delivery::Delivery> {
    let filter = docket_mail::delivery::DeliveryFilter {
        campaign_id,
        limit: 1000,
        ..Default::default()
    };
    docket_mail::delivery::list(pool, &filter).await.unwrap()
}

/// The bounce domain of the tests' envelope senders.
pub(crate) const BOUNCE_DOMAIN: &str = "bounces.example.com";

/// A checked-in delivery status notification (`tests/fixtures/dsn/`) for `delivery`: its
/// bounce address (the token of `envelope_from`) and its recipient filled in.
pub(crate) fn fixture(name: &str, envelope_from: &str, recipient: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/dsn/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let token = envelope_from
        .strip_prefix("bounce+")
        .and_then(|rest| rest.split('@').next())
        .unwrap_or_else(|| panic!("not a bounce address: {envelope_from}"));
    text.replace("{TOKEN}", token)
        .replace("{RECIPIENT}", recipient)
        .into_bytes()
}

/// A message as a mail client reads it.
pub(crate) fn parse(data: &[u8]) -> mail_parser::Message<'_> {
    mail_parser::MessageParser::default()
        .parse(data)
        .expect("the sink received a parsable message")
}

#[tokio::test]
async fn a_template_folder_that_is_not_there_stops_start_up_naming_the_setting() {
    let sink = SmtpSink::start().await;
    let missing = std::env::temp_dir().join(format!("docket-no-such-{}", uuid::Uuid::now_v7()));
    let pool = PgPool::connect_lazy("postgres://localhost/unused").unwrap();
    let err = Mailer::new(pool, config_for(&sink, missing.clone())).expect_err("refused");
    assert!(
        err.contains("DOCKET_TEMPLATE_DIR") && err.contains(&missing.display().to_string()),
        "{err}"
    );
}
