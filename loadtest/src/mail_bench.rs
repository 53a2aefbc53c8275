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

struct Bench {
    db: TestDb,
    sink: SmtpSink,
    mailer: Arc<Mailer>,
}

async fn setup(pool_size: u32) -> anyhow::Result<Bench> {
    let db = TestDb::with_pool_size(30).await;
    let sink = SmtpSink::start().await;
    let config = MailConfig {
        mode: Mode::Smtp(SmtpUrl::parse(&sink.url())?),
        from: Some("Docket <docket@example.com>".to_owned()),
        template_dir: catalog_dir()?,
        pool_size,
        public_url: Some("https://docket.example.com".to_owned()),
        token_secret: Some(
            docket_mail::token::TokenSecret::new("bench-token-secret-0123456789abcdef")
                .map_err(anyhow::Error::msg)?,
        ),
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
/// many batch jobs at once: messages a second until every recipient is final.
pub(crate) async fn campaign(recipients: usize, pool_size: u32) -> anyhow::Result<()> {
    let bench = setup(pool_size).await?;
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
    let bench = setup(pool_size).await?;
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
