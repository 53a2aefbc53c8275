//! `docket demo`: a compressed hour of the operations Docket was built for, on a throwaway
//! PostgreSQL (or a database of its own on `DATABASE_URL`'s server) and the testkit's SMTP
//! sink, with `serve` in-process: a campaign with bouncing addresses and a stretch of 451s,
//! its queue paused and resumed, recovery emails overtaking it, a cron schedule ticking,
//! jobs failing into `dead_letter` and a replay once the cause is fixed. Progress bars while it runs; logs go to a file.
//! At the end, a summary checked against the database and the relay.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use docket_http::{AppState, HealthConfig, Secret};
use docket_mail::campaign::{self, NewCampaign, Recipient};
use docket_mail::config::{Mode, Notifications, SmtpUrl};
use docket_mail::jobs::{Recovery, RECOVERY_PRIORITY, RECOVERY_QUEUE};
use docket_mail::token::TokenSecret;
use docket_mail::{MailConfig, Mailer};
use docket_queue::{admin, DeadLetterFilter, JobState, NewJob};
use docket_testkit::{SmtpSink, ThrowawayCluster};
use docket_worker::cron::Schedule;
use docket_worker::{builtin, JobError, QueueConfig, Runtime, RuntimeConfig};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, PgPool};
use tokio_util::sync::CancellationToken;

use crate::cli::DemoArgs;
use crate::cmd::snapshot::print_table;
use crate::config::DatabaseUrl;

/// How big the story is.
struct Scale {
    recipients: usize,
    bouncing: usize,
    recovery_emails: usize,
    /// How long the relay answers 451 to everyone, part way through the campaign.
    greylist_for: Duration,
    /// Campaign batch jobs at once (and SMTP connections).
    senders: usize,
    /// The relay-wide rate limit, so that a person can watch (recovery emails go first).
    rate: Option<&'static str>,
}

const FULL: Scale = Scale {
    recipients: 5_000,
    bouncing: 5,
    recovery_emails: 40,
    greylist_for: Duration::from_secs(2),
    senders: 2,
    rate: Some("250/s"),
};

const QUICK: Scale = Scale {
    recipients: 400,
    bouncing: 3,
    recovery_emails: 10,
    greylist_for: Duration::from_millis(600),
    senders: 2,
    rate: None,
};

/// The demo's templates: a newsletter in English and Russian, a password reset.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "newsletter/subject.txt",
        "{{ name }}, what is new in December",
    ),
    (
        "newsletter/body.txt",
        "Hello {{ name }},\n\nyour plan {{ plan }} now includes cron schedules.\n",
    ),
    (
        "newsletter/ru/subject.txt",
        "{{ name }}, что нового в декабре",
    ),
    (
        "newsletter/ru/body.txt",
        "Здравствуйте, {{ name }}!\n\nВ тариф {{ plan }} вошли расписания cron.\n",
    ),
    ("password_reset/subject.txt", "Reset your password"),
    (
        "password_reset/body.txt",
        "Follow {{ link }} within 15 minutes.\n",
    ),
];

/// The kind whose handler fails while the (pretend) ledger is down.
const INVOICE: &str = "demo.invoice";

/// A new directory for the demo under the system's temporary directory, readable by its
/// owner only: `docket-demo-<random>`, created exclusively (never an existing directory or a
/// planted symlink).
pub(crate) fn work_dir() -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    let dir = std::env::temp_dir().join(format!("docket-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// Creates `path` exclusively (it must not exist, not even as a symlink), owner-only.
pub(crate) fn private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Runs the demo in its directory: removed at the end when the story succeeded, kept (with
/// its logs) when it did not.
pub(crate) async fn run(database_url: Option<&DatabaseUrl>, args: &DemoArgs) -> anyhow::Result<()> {
    let dir = args
        .work_dir
        .clone()
        .map_or_else(work_dir, Ok)
        .context("creating the demo's directory")?;
    let outcome = tell(database_url, args, &dir).await;
    match (&outcome, &args.log_file) {
        (Ok(()), _) | (Err(_), None) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        (Err(_), Some(log)) => eprintln!("The demo's logs are kept in {}", log.display()),
    }
    outcome
}

async fn tell(
    database_url: Option<&DatabaseUrl>,
    args: &DemoArgs,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let scale = if args.quick { &QUICK } else { &FULL };
    let database = Database::open(database_url).await?;
    let pool = &database.pool;
    docket_queue::migrate(pool).await?;

    let sink = SmtpSink::start().await;
    let templates = dir.join("templates");
    for (path, text) in TEMPLATES {
        let path = templates.join(path);
        std::fs::create_dir_all(path.parent().context("template path")?)?;
        std::fs::write(path, text)?;
    }
    // The demo's own server answers the campaign's unsubscribe links.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let mail = MailConfig {
        mode: Mode::Smtp(SmtpUrl::parse(&sink.url())?),
        public_url: Some(format!("http://{addr}")),
        token_secret: Some(
            TokenSecret::new(&format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            ))
            .map_err(anyhow::Error::msg)?,
        ),
        from: Some("Docket Demo <demo@docket.test>".to_owned()),
        template_dir: templates.clone(),
        pool_size: u32::try_from(scale.senders)?,
        retry_ladder: vec![Duration::from_secs(1); 4],
        admin_email: Some("Ops <ops@docket.test>".to_owned()),
        notify: Notifications::parse("campaign_finished")?,
        rate: scale.rate.map(str::parse).transpose()?,
        ..MailConfig::default()
    };
    let mailer = Arc::new(Mailer::new(pool.clone(), mail).map_err(anyhow::Error::msg)?);

    // The workers: the mail kinds, the built-in ones, and an invoice job that fails while
    // the ledger is down.
    let ledger_down = Arc::new(AtomicBool::new(true));
    let mut registry = crate::cmd::worker::registry(mailer.clone());
    let down = ledger_down.clone();
    registry
        .register_raw(INVOICE, move |_payload, _ctx| {
            let down = down.load(Ordering::Relaxed);
            async move {
                if down {
                    return Err(JobError::from("ledger unavailable: connection refused"));
                }
                Ok(())
            }
        })
        .backoff = docket_queue::Backoff::Exponential {
        base: Duration::from_millis(200),
        max: Duration::from_secs(1),
        jitter: 0.1,
    };
    let runtime_config = RuntimeConfig {
        queues: vec![
            QueueConfig::new("default").concurrency(10),
            QueueConfig::new(docket_mail::jobs::MAIL_QUEUE).concurrency(scale.senders),
            QueueConfig::new(RECOVERY_QUEUE).concurrency(2),
        ],
        poll_interval: Duration::from_millis(200),
        shutdown_timeout: Duration::from_secs(5),
        schedules: vec![Schedule::new(
            "demo.heartbeat",
            "*/2 * * * * *",
            builtin::NOOP,
        )],
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(pool.clone(), registry, runtime_config)?;

    // `serve`, in-process, with a one-time secret.
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let state = AppState::new(
        pool.clone(),
        Secret::new(&secret),
        None,
        HealthConfig::default(),
    )
    .with_mailer(mailer.clone());
    let stop_http = CancellationToken::new();
    let http = tokio::spawn(docket_http::serve(
        listener,
        state,
        docket_http::Limits::default(),
        stop_http.clone().cancelled_owned(),
    ));
    let stop_workers = CancellationToken::new();
    let workers = tokio::spawn(runtime.run(stop_workers.clone().cancelled_owned()));

    println!("Docket demo: {}", database.describe());
    println!(
        "  SMTP relay (the testkit's sink): {}{}",
        sink.addr(),
        scale.rate.map_or_else(String::new, |rate| format!(
            ", at most {rate} over every process"
        ))
    );
    println!("  ops page: http://{addr}/ops   sign in with the one-time secret: {secret}");
    println!("  watch: curl -s -H 'Authorization: Bearer {secret}' http://{addr}/api/health");
    if let Some(log) = &args.log_file {
        println!(
            "  logs: {} (removed at the end unless the demo fails)",
            log.display()
        );
    }
    println!();

    let story = Story {
        pool,
        sink: &sink,
        mailer: &mailer,
        scale,
        ledger_down: &ledger_down,
    };
    let outcome = story.play().await;

    if args.keep && outcome.is_ok() {
        println!("\nServing until Ctrl-C: http://{addr}/ops (secret {secret})");
        crate::signal::shutdown_signal().await;
    }
    stop_http.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    stop_workers.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), workers).await;
    let _ = std::fs::remove_dir_all(&templates);
    database.close().await;
    outcome
}

/// The demo's database: a throwaway cluster, or a database of its own on the given server
/// (created here, dropped at the end).
struct Database {
    pool: PgPool,
    cluster: Option<ThrowawayCluster>,
    /// With `DATABASE_URL`: the server, and the database made for the demo.
    own: Option<(PgConnectOptions, String)>,
}

impl Database {
    async fn open(url: Option<&DatabaseUrl>) -> anyhow::Result<Database> {
        let (cluster, options, own) = match url {
            None => {
                let cluster = tokio::task::spawn_blocking(ThrowawayCluster::start)
                    .await?
                    .context("cannot start a throwaway PostgreSQL: install PostgreSQL's server (apt-get install postgresql) or set DATABASE_URL")?;
                let options: PgConnectOptions = cluster.url("postgres").parse()?;
                (Some(cluster), options, None)
            }
            Some(url) => {
                // A database of the demo's own: its jobs never meet a real deployment's
                // workers, and dropping it cleans up everything. The name is made here,
                // so formatting it into the statement is safe.
                let name = format!(
                    "docket_demo_{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                );
                let mut admin = url
                    .options()
                    .connect()
                    .await
                    .with_context(|| format!("cannot connect to {url}"))?;
                admin
                    .execute(format!(r#"create database "{name}""#).as_str())
                    .await
                    .context("cannot create the demo's database (the user needs CREATEDB)")?;
                admin.close().await.ok();
                let options = url.options().database(&name);
                (None, options, Some((url.options(), name)))
            }
        };
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .context("cannot connect to PostgreSQL")?;
        Ok(Database { pool, cluster, own })
    }

    fn describe(&self) -> String {
        match (&self.cluster, &self.own) {
            (Some(_), _) => "a throwaway PostgreSQL cluster (removed at the end)".to_owned(),
            (None, Some((_, name))) => {
                format!("database {name} on DATABASE_URL's server (dropped at the end)")
            }
            (None, None) => "PostgreSQL".to_owned(),
        }
    }

    async fn close(self) {
        crate::cmd::close_pool(self.pool).await;
        if let Some((server, name)) = self.own {
            if let Ok(mut admin) = server.connect().await {
                let _ = admin
                    .execute(format!(r#"drop database if exists "{name}" with (force)"#).as_str())
                    .await;
            }
        }
        drop(self.cluster);
    }
}

/// The story, and what the summary checks.
struct Story<'a> {
    pool: &'a PgPool,
    sink: &'a SmtpSink,
    mailer: &'a Mailer,
    scale: &'a Scale,
    ledger_down: &'a AtomicBool,
}

impl Story<'_> {
    async fn play(&self) -> anyhow::Result<()> {
        let scale = self.scale;
        let bars = MultiProgress::new();
        let style = ProgressStyle::with_template("{prefix:>16} [{bar:32}] {pos}/{len} {msg}")?
            .progress_chars("=> ");
        let bar = |prefix: &str, len: usize| {
            let bar = bars.add(ProgressBar::new(len as u64));
            bar.set_style(style.clone());
            bar.set_prefix(prefix.to_owned());
            bar
        };

        // A campaign: a few addresses that do not exist, some readers in Russian.
        let bouncing: Vec<String> = (0..scale.bouncing)
            .map(|i| format!("gone{i}@demo.test"))
            .collect();
        for address in &bouncing {
            self.sink.reply_to(
                address,
                Some("550 5.1.1 The email account that you tried to reach does not exist"),
            );
        }
        let mut recipients: Vec<Recipient> = (0..scale.recipients - scale.bouncing)
            .map(|i| Recipient {
                to: format!("reader{i}@demo.test"),
                name: Some(if i % 5 == 0 {
                    format!("Читатель {i}")
                } else {
                    format!("Reader {i}")
                }),
                locale: (i % 5 == 0).then(|| "ru".to_owned()),
                vars: serde_json::json!({ "plan": if i % 3 == 0 { "team" } else { "pro" } }),
            })
            .collect();
        recipients.extend(bouncing.iter().enumerate().map(|(i, to)| Recipient {
            to: to.clone(),
            name: Some(format!("Former reader {i}")),
            locale: None,
            vars: serde_json::json!({ "plan": "pro" }),
        }));
        let new = NewCampaign::new("December newsletter", "newsletter", recipients);
        let campaign_id =
            campaign::create(self.pool, self.mailer.catalog(), self.mailer.from(), &new).await?;
        let campaign_bar = bar("campaign", scale.recipients);
        let recovery_bar = bar("recovery emails", scale.recovery_emails);
        let invoice_bar = bar("invoices", 3);
        let cron_bar = bars.add(ProgressBar::new_spinner());
        cron_bar.set_prefix("cron");
        cron_bar.set_style(ProgressStyle::with_template("{prefix:>16} {msg}")?);

        // Invoices fail while the ledger is down: they end in dead_letter.
        let mut invoices = Vec::new();
        for n in 1..=3 {
            let job = NewJob::new(INVOICE, serde_json::json!({ "invoice": n })).max_attempts(2);
            invoices.push(docket_queue::enqueue(self.pool, &job).await?);
        }
        let malformed = NewJob::new("docket.sleep", serde_json::json!({ "seconds": "ten" }));
        docket_queue::enqueue(self.pool, &malformed).await?;

        let started = Instant::now();
        let mut recovery_sent_at: HashMap<String, Instant> = HashMap::new();
        let mut greylist: Option<Instant> = None;
        // The campaign's queue is paused for a while two thirds of the way in: recovery
        // emails (a queue of their own) go on.
        let mut pause: Option<Instant> = None;
        let mut resumed = false;
        let mut replayed = false;
        let deadline = started + Duration::from_secs(300);
        loop {
            ensure!(
                Instant::now() < deadline,
                "the demo did not finish in 5 minutes"
            );
            let status = campaign::show(self.pool, campaign_id).await?;
            let done = usize::try_from(status.total - status.pending)?;
            campaign_bar.set_position(done as u64);
            if pause.is_none() || resumed {
                campaign_bar.set_message(format!(
                    "sent {} · suppressed {} · failed {}",
                    status.sent, status.suppressed, status.failed
                ));
            }
            // A stretch of 451s a third of the way in, for one reader in seven: retried on
            // the ladder.
            let greylisted = || {
                (0..scale.recipients - scale.bouncing)
                    .step_by(7)
                    .map(|i| format!("reader{i}@demo.test"))
            };
            if greylist.is_none() && done >= scale.recipients / 3 {
                for address in greylisted() {
                    self.sink.reply_to(
                        &address,
                        Some("451 4.7.1 Greylisted, please try again later"),
                    );
                }
                greylist = Some(Instant::now());
            }
            if greylist.is_some_and(|at| at.elapsed() >= scale.greylist_for) {
                for address in greylisted() {
                    self.sink.reply_to(&address, None);
                }
            }
            if pause.is_none() && done >= scale.recipients * 2 / 3 {
                docket_queue::queues::pause(self.pool, docket_mail::jobs::MAIL_QUEUE).await?;
                pause = Some(Instant::now());
                campaign_bar.set_message("queue `mail` paused (docket queues pause mail)");
            }
            if !resumed && pause.is_some_and(|at| at.elapsed() >= scale.greylist_for) {
                docket_queue::queues::resume(self.pool, docket_mail::jobs::MAIL_QUEUE).await?;
                resumed = true;
            }
            // Recovery emails arrive while the campaign runs, one every 100 ms.
            let due = if done > 0 {
                (started.elapsed().as_millis() / 100) as usize
            } else {
                0
            };
            while recovery_sent_at.len() < scale.recovery_emails.min(due) {
                let n = recovery_sent_at.len();
                let to = format!("user{n}@customer.test");
                let job = Recovery {
                    to: to.clone(),
                    template: "password_reset".to_owned(),
                    vars: serde_json::json!({ "link": format!("https://app.test/reset/{n}") }),
                    locale: None,
                    idempotency_key: Some(format!("reset-{n}")),
                };
                let job = NewJob::typed(&job)?
                    .queue(RECOVERY_QUEUE)
                    .priority(RECOVERY_PRIORITY)
                    .expires_at(chrono::Utc::now() + chrono::Duration::minutes(15));
                docket_queue::enqueue(self.pool, &job).await?;
                recovery_sent_at.insert(to, Instant::now());
            }
            let recovery_received = recovery_sent_at
                .keys()
                .filter(|to| self.sink.count_for(to) > 0)
                .count();
            recovery_bar.set_position(recovery_received as u64);
            // Once the invoices are dead letters, the ledger is "fixed" and they are replayed.
            let dead = self.dead_invoices(&invoices).await?;
            if !replayed && dead == invoices.len() {
                self.ledger_down.store(false, Ordering::Relaxed);
                let filter = DeadLetterFilter {
                    kind: Some(INVOICE.to_owned()),
                    ..DeadLetterFilter::default()
                };
                let n = admin::replay_dead_letters(self.pool, &filter).await?;
                invoice_bar.set_message(format!(
                    "ledger back: {} replayed",
                    docket_queue::counted(n, "dead letter", "dead letters")
                ));
                replayed = true;
            } else if !replayed {
                invoice_bar.set_message(format!("ledger down: {dead} dead-lettered"));
            }
            let completed = self.completed(&invoices).await?;
            invoice_bar.set_position(completed as u64);
            let ticks = self.ticks().await?;
            cron_bar.set_message(format!(
                "demo.heartbeat (every 2 s): {} enqueued",
                docket_queue::counted(ticks, "tick", "ticks")
            ));
            cron_bar.tick();
            // The campaign's end is told to the admin address once its batch is done; told
            // when the relay has it and its delivery is recorded sent (the relay's copy
            // arrives a moment before the record, and the summary reads the record).
            let told = self.sink.count_for("ops@docket.test") > 0
                && docket_mail::delivery::tally(self.pool)
                    .await?
                    .iter()
                    .any(|t| {
                        t.source == "admin"
                            && t.status == docket_mail::delivery::Status::Sent
                            && t.count > 0
                    });
            if status.pending == 0
                && told
                && recovery_received == scale.recovery_emails
                && completed == invoices.len()
                && ticks >= 2
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for bar in [&campaign_bar, &recovery_bar, &invoice_bar, &cron_bar] {
            bar.finish();
        }
        let elapsed = started.elapsed();
        self.summarise(campaign_id, &bouncing, &recovery_sent_at, elapsed)
            .await
    }

    async fn dead_invoices(&self, ids: &[docket_queue::JobId]) -> anyhow::Result<usize> {
        self.count_in(ids, JobState::DeadLetter).await
    }

    async fn completed(&self, ids: &[docket_queue::JobId]) -> anyhow::Result<usize> {
        self.count_in(ids, JobState::Completed).await
    }

    async fn count_in(
        &self,
        ids: &[docket_queue::JobId],
        state: JobState,
    ) -> anyhow::Result<usize> {
        let mut n = 0;
        for id in ids {
            if admin::show(self.pool, *id).await?.state == state {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Ticks of `demo.heartbeat`: in the demo, only the schedule makes no-op jobs.
    async fn ticks(&self) -> anyhow::Result<usize> {
        let page = admin::list(
            self.pool,
            &docket_queue::ListFilter {
                kind: Some(builtin::NOOP.to_owned()),
                limit: 1000,
                ..Default::default()
            },
        )
        .await?;
        Ok(page.jobs.len())
    }

    /// The summary, each figure read from the database and checked against the relay.
    async fn summarise(
        &self,
        campaign_id: uuid::Uuid,
        bouncing: &[String],
        recovery: &HashMap<String, Instant>,
        elapsed: Duration,
    ) -> anyhow::Result<()> {
        let status = campaign::show(self.pool, campaign_id).await?;
        let tally = docket_mail::delivery::tally(self.pool).await?;
        let count = |source: &str, status: docket_mail::delivery::Status| {
            tally
                .iter()
                .filter(|t| t.source == source && t.status == status)
                .map(|t| t.count)
                .sum::<i64>()
        };
        let retried: i64 = tally
            .iter()
            .filter(|t| t.source == "campaign")
            .map(|t| t.retried)
            .sum();
        let suppressions = docket_mail::delivery::suppressions(self.pool, None).await?;
        let messages = self.sink.messages();
        let campaign_received = messages
            .iter()
            .filter(|m| m.to[0].ends_with("@demo.test"))
            .count();
        let mut latencies: Vec<Duration> = recovery
            .iter()
            .filter_map(|(to, enqueued)| {
                messages
                    .iter()
                    .find(|m| &m.to[0] == to)
                    .map(|m| m.at.saturating_duration_since(*enqueued))
            })
            .collect();
        latencies.sort();
        let campaign_done = messages
            .iter()
            .filter(|m| m.to[0].ends_with("@demo.test"))
            .map(|m| m.at)
            .max();
        let overtook = recovery
            .keys()
            .filter_map(|to| messages.iter().find(|m| &m.to[0] == to))
            .filter(|m| campaign_done.is_some_and(|done| m.at < done))
            .count();
        let percentile = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        let dead = admin::list(
            self.pool,
            &docket_queue::ListFilter {
                state: Some(JobState::DeadLetter),
                limit: 100,
                ..Default::default()
            },
        )
        .await?;

        println!("\nSummary ({elapsed:.1?})");
        println!("  campaign \"{}\": {}", status.name, status.state);
        println!("    sent        {:>6}", status.sent);
        println!("    suppressed  {:>6}", status.suppressed);
        println!(
            "    failed      {:>6}   (5.1.1: now on the suppression list: {})",
            status.failed,
            suppressions.len()
        );
        println!("    retried     {retried:>6}   (the relay's 451s, sent on a later attempt)");
        println!("    dead letter {:>6}", status.dead_letter);
        println!(
            "  recovery emails: {} sent, {overtook} of them before the campaign's last message; \
             latency enqueue → relay p50 {:.0} ms, p99 {:.0} ms",
            count("recovery", docket_mail::delivery::Status::Sent),
            percentile(0.5).as_secs_f64() * 1000.0,
            percentile(0.99).as_secs_f64() * 1000.0
        );
        println!(
            "  admin emails: {} sent (campaign finished → ops@docket.test)",
            count("admin", docket_mail::delivery::Status::Sent)
        );
        println!("  dead letters left: {}", dead.jobs.len());
        for job in &dead.jobs {
            println!(
                "    {} {} ({})",
                job.id,
                job.kind,
                job.dead_letter_reason.as_deref().unwrap_or("-")
            );
        }
        println!("  invoices: 3 dead-lettered while the ledger was down, replayed, completed");
        println!(
            "  queue `mail` was paused for a while and resumed; recovery emails went on meanwhile"
        );

        // The figures agree with each other, with the relay, and with what was planned.
        ensure!(
            status.state == "finished" && status.pending == 0,
            "the campaign is not finished: {status:?}"
        );
        ensure!(
            i64::from(status.sent) == i64::try_from(campaign_received)?,
            "{} recorded as sent but the relay received {campaign_received}",
            status.sent
        );
        ensure!(
            usize::try_from(status.failed)? == bouncing.len(),
            "every bouncing address failed"
        );
        ensure!(
            bouncing
                .iter()
                .all(|b| suppressions.iter().any(|s| &s.address == b)),
            "bounces are suppressed"
        );
        ensure!(
            messages
                .iter()
                .filter(|m| m.to[0].ends_with("@demo.test"))
                .map(|m| &m.to[0])
                .collect::<std::collections::HashSet<_>>()
                .len()
                == campaign_received,
            "a campaign recipient received two messages"
        );
        ensure!(retried > 0, "the stretch of 451s was retried");
        ensure!(
            docket_queue::queues::paused(self.pool).await?.is_empty(),
            "no queue is left paused"
        );
        ensure!(
            count("admin", docket_mail::delivery::Status::Sent) == 1,
            "the admin was told once"
        );
        ensure!(
            dead.jobs.len() == 1 && dead.jobs[0].kind == "docket.sleep",
            "only the malformed job is left dead"
        );
        println!("  checked against the database and the relay: ok");

        println!("\nSnapshot");
        print_table(&docket_queue::snapshot(self.pool, None).await?);
        Ok(())
    }
}
