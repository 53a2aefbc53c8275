//! Benchmarks of the mail jobs against the testkit's SMTP sink on loopback: campaign
//! throughput by SMTP pool size, and recovery email latency while a campaign runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use docket_mail::campaign::{self, NewCampaign, Recipient};
use docket_mail::config::{Mode, SmtpUrl};
use docket_mail::jobs::{Recovery, RECOVERY_PRIORITY, RECOVERY_QUEUE};
use docket_mail::{MailConfig, Mailer};
use docket_queue::NewJob;
use docket_testkit::{SmtpSink, TestDb};
use docket_worker::{QueueConfig, Registry, Runtime, RuntimeConfig};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::stats::percentiles;

fn catalog_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("docket-bench-mail-{}", uuid::Uuid::now_v7()));
    for (name, subject, body) in [
        (
            "news",
            "News for {{ name }}",
            "Hello {{ name }}, here is what is new this month.",
        ),
        (
            "reset",
            "Reset your password",
            "Follow {{ link }} within 15 minutes.",
        ),
    ] {
        std::fs::create_dir_all(dir.join(name))?;
        std::fs::write(dir.join(name).join("subject.txt"), subject)?;
        std::fs::write(dir.join(name).join("body.txt"), body)?;
    }
    Ok(dir)
}

/// The bench's token secret (unsubscribe links, bounce addresses).
const TOKEN_SECRET: &str = "bench-token-secret-0123456789abcdef";

struct Bench {
    db: TestDb,
    sink: SmtpSink,
    mailer: Arc<Mailer>,
}

async fn setup(pool_size: u32, bounce_domain: Option<String>) -> anyhow::Result<Bench> {
    let db = TestDb::with_pool_size(30).await;
    let sink = SmtpSink::start().await;
    let config = MailConfig {
        mode: Mode::Smtp(SmtpUrl::parse(&sink.url())?),
        from: Some("Docket <docket@example.com>".to_owned()),
        template_dir: catalog_dir()?,
        pool_size,
        public_url: Some("https://docket.example.com".to_owned()),
        token_secret: Some(
            docket_mail::token::TokenSecret::new(TOKEN_SECRET).map_err(anyhow::Error::msg)?,
        ),
        bounce_domain,
        ..MailConfig::default()
    };
    let mailer = Arc::new(Mailer::new(db.pool.clone(), config).map_err(anyhow::Error::msg)?);
    Ok(Bench { db, sink, mailer })
}

fn start(
    bench: &Bench,
    mail: usize,
    recovery: usize,
) -> anyhow::Result<(
    CancellationToken,
    tokio::task::JoinHandle<docket_queue::Result<()>>,
)> {
    let mut registry = Registry::new();
    docket_mail::jobs::register(&mut registry, bench.mailer.clone());
    let config = RuntimeConfig {
        queues: vec![
            QueueConfig::new("mail").concurrency(mail),
            QueueConfig::new(RECOVERY_QUEUE).concurrency(recovery),
        ],
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(bench.db.pool.clone(), registry, config)?;
    let stop = CancellationToken::new();
    let handle = tokio::spawn(runtime.run(stop.clone().cancelled_owned()));
    Ok((stop, handle))
}

async fn create_campaign(bench: &Bench, recipients: usize) -> anyhow::Result<uuid::Uuid> {
    let rows = (0..recipients)
        .map(|i| Recipient {
            to: format!("user{i}@example.com"),
            name: Some(format!("User {i}")),
            locale: None,
            vars: serde_json::json!({}),
        })
        .collect();
    let new = NewCampaign::new("bench", "news", rows);
    Ok(campaign::create(
        &bench.db.pool,
        bench.mailer.catalog(),
        bench.mailer.from(),
        &new,
    )
    .await?)
}

async fn pending(pool: &PgPool, id: uuid::Uuid) -> anyhow::Result<i32> {
    Ok(campaign::show(pool, id).await?.pending)
}

/// A campaign of `recipients` through an SMTP pool of `pool_size` connections, with as
/// many batch jobs at once: messages a second until every recipient is final. Every
/// message carries the unsubscribe headers; `bounce_domain` adds per-delivery envelope
/// senders.
pub(crate) async fn campaign(
    recipients: usize,
    pool_size: u32,
    bounce_domain: Option<String>,
) -> anyhow::Result<()> {
    let bench = setup(pool_size, bounce_domain).await?;
    let id = create_campaign(&bench, recipients).await?;
    let started = Instant::now();
    let (stop, worker) = start(&bench, pool_size as usize, 1)?;
    while pending(&bench.db.pool, id).await? > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    stop.cancel();
    worker.await??;
    let sent = bench.sink.messages().len();
    println!(
        "campaign: {recipients} recipients, SMTP pool {pool_size}, {pool_size} batch jobs at once: \
         {elapsed:.2?} = {:.0} messages/s ({sent} received)",
        sent as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Recovery emails enqueued one at a time while a campaign of `recipients` runs: latency
/// from the enqueue's commit to the relay's acceptance.
pub(crate) async fn recovery(
    recipients: usize,
    samples: usize,
    pool_size: u32,
) -> anyhow::Result<()> {
    let bench = setup(pool_size, None).await?;
    let id = create_campaign(&bench, recipients).await?;
    let (stop, worker) = start(&bench, pool_size as usize, 2)?;
    while bench.sink.messages().len() < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let to = format!("reset{i}@example.org");
        let job = Recovery {
            to: to.clone(),
            template: "reset".to_owned(),
            vars: serde_json::json!({ "link": format!("https://example.org/r/{i}") }),
            locale: None,
            idempotency_key: None,
        };
        let new = NewJob::typed(&job)?
            .queue(RECOVERY_QUEUE)
            .priority(RECOVERY_PRIORITY)
            .expires_at(chrono::Utc::now() + chrono::Duration::minutes(15));
        docket_queue::enqueue(&bench.db.pool, &new).await?;
        let enqueued = Instant::now();
        let accepted = loop {
            if let Some(message) = bench.sink.messages().into_iter().find(|m| m.to[0] == to) {
                break message.at;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        latencies.push(accepted.saturating_duration_since(enqueued));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = pending(&bench.db.pool, id).await?;
    stop.cancel();
    worker.await??;
    println!(
        "recovery latency, enqueue to SMTP accept, {samples} emails while a {recipients}-recipient campaign \
         runs (SMTP pool {pool_size}; {left} campaign recipients still pending at the end): {}",
        percentiles(&mut latencies)
    );
    Ok(())
}

/// A Postfix report of a 5.1.1 failure, as the tests read it.
const POSTFIX_FAILED: &str =
    include_str!("../../crates/mail/tests/fixtures/dsn/postfix-failed-5.1.1.eml");

/// The bounce domain of the ingestion bench.
const BOUNCE_DOMAIN: &str = "bounces.example.com";

/// Bounce ingestion: a campaign of `messages` recipients is sent with VERP, then a Postfix
/// failure report for each delivery goes in, the first half over `POST /api/mail/bounces`
/// (a real `docket-http` server on loopback, `concurrency` clients, a connection per
/// message) and, with `docket`, the rest one at a time through `docket mail bounce`.
pub(crate) async fn bounces(
    messages: usize,
    concurrency: usize,
    docket: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let bench = setup(4, Some(BOUNCE_DOMAIN.to_owned())).await?;
    let id = create_campaign(&bench, messages).await?;
    let (stop, worker) = start(&bench, 4, 1)?;
    while pending(&bench.db.pool, id).await? > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    worker.await??;
    let reports: Vec<String> = bench
        .sink
        .messages()
        .iter()
        .map(|m| {
            let token = m
                .from
                .trim_start_matches("bounce+")
                .split('@')
                .next()
                .unwrap_or("");
            POSTFIX_FAILED
                .replace("{TOKEN}", token)
                .replace("{RECIPIENT}", &m.to[0])
        })
        .collect();
    let (over_http, over_cli) = reports.split_at(reports.len() / 2);

    const SECRET: &str = "bench-bearer-0123456789";
    let state = docket_http::AppState::new(
        bench.db.pool.clone(),
        docket_http::Secret::new(SECRET),
        None,
        docket_http::HealthConfig::default(),
    )
    .with_mailer(bench.mailer.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let stop_http = CancellationToken::new();
    let http = tokio::spawn(docket_http::serve(
        listener,
        state,
        docket_http::Limits::default(),
        stop_http.clone().cancelled_owned(),
    ));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reports = Arc::new(over_http.to_vec());
    let started = Instant::now();
    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, reports) = (next.clone(), reports.clone());
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(report) = reports.get(i) else {
                        return Ok::<_, anyhow::Error>(());
                    };
                    let mut stream = tokio::net::TcpStream::connect(addr).await?;
                    let head = format!(
                        "POST /api/mail/bounces HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\
                         Authorization: Bearer {SECRET}\r\nContent-Type: message/rfc822\r\n\
                         Content-Length: {}\r\n\r\n",
                        report.len()
                    );
                    stream.write_all(head.as_bytes()).await?;
                    stream.write_all(report.as_bytes()).await?;
                    let mut response = String::new();
                    stream.read_to_string(&mut response).await?;
                    anyhow::ensure!(
                        response.contains("\"outcome\":\"bounced\""),
                        "unexpected answer: {response}"
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.await??;
    }
    let elapsed = started.elapsed();
    stop_http.cancel();
    http.await??;
    println!(
        "POST /api/mail/bounces: {} reports, {concurrency} clients: {elapsed:.2?} = {:.0} messages/s",
        over_http.len(),
        over_http.len() as f64 / elapsed.as_secs_f64()
    );

    let Some(docket) = docket else {
        return Ok(());
    };
    let started = Instant::now();
    for report in over_cli {
        use std::io::Write;
        let mut child = std::process::Command::new(&docket)
            .args(["mail", "bounce"])
            .env("DATABASE_URL", &bench.db.url)
            .env(docket_settings::MAIL_TOKEN_SECRET.var, TOKEN_SECRET)
            .env(docket_settings::MAIL_BOUNCE_DOMAIN.var, BOUNCE_DOMAIN)
            .env(docket_settings::LOG_FORMAT.var, "json")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()?;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?
            .write_all(report.as_bytes())?;
        let status = child.wait()?;
        anyhow::ensure!(status.success(), "docket mail bounce exited {status}");
    }
    let elapsed = started.elapsed();
    println!(
        "docket mail bounce: {} reports, one process each, one at a time: {elapsed:.2?} = {:.0} messages/s",
        over_cli.len(),
        over_cli.len() as f64 / elapsed.as_secs_f64()
    );
    let bounced = campaign::show(&bench.db.pool, id).await?.bounced;
    println!("bounced deliveries: {bounced} of {messages}");
    Ok(())
}
