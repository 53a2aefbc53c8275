//! The stress drill: load, chaos and an invariant check, with a report a person reads in
//! a minute.
//!
//! It starts its own `docket serve` (HTTP, maintenance, and the mail queue) and N drill
//! workers (this binary's `drill-worker`: the runtime embedded as an application embeds it,
//! with kinds that write a ledger of every run), on a throwaway cluster or the database
//! `DATABASE_URL` names, with the testkit's SMTP sink as the relay. It enqueues a mixed
//! workload, plays the monitor, injects the chosen faults, waits for the backlog to drain,
//! then checks the invariants from the database and the ledger and writes the report.
//!
//! - `worker`: the drill worker and its kinds.
//! - `procs`: the processes.
//! - `monitor`: the once-a-second health reading.
//! - `check`: the invariants (also `drill-check`, on a drill's database).
//! - `report`: `report.json`, `report.md` and `chart.svg`.

pub(crate) mod check;
mod monitor;
mod procs;
mod report;
pub(crate) mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use docket_queue::{JobArgs, NewJob};
use docket_testkit::{SmtpSink, ThrowawayCluster};
use serde::Serialize;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::sync::Mutex;

use monitor::Sample;
use procs::{Process, Setup};

/// A drill's size and faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Profile {
    /// A few thousand jobs, two workers, kill and terminate: under two minutes.
    Quick,
    /// 100,000 jobs, four workers, every fault the setup allows.
    Standard,
    /// A steady rate for an hour; samples bloat.
    Soak,
}

/// A fault the drill can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Fault {
    /// `kill -9` of a random worker, and a new one started.
    Kill,
    /// `pg_terminate_backend` of every drill worker connection.
    Terminate,
    /// PostgreSQL restarted at once (own cluster only).
    PgRestart,
    /// The relay answers 451 for a while.
    Smtp,
    /// A REPEATABLE READ transaction held open: vacuum can remove nothing meanwhile.
    HeldSnapshot,
    /// SIGSTOP of a random worker for longer than its lease, then SIGCONT: its runs must
    /// not go on once the lease has lapsed.
    Stall,
    /// A small campaign whose every fourth recipient's mailbox answers 450 for a while: the
    /// others are still sent, and a recovery email sent meanwhile keeps its latency.
    SmtpBusy,
    /// A job in a group of its own that is not due for a day, beside the busy groups: the
    /// fair rotation must pass it over (it is cancelled once everything else is final).
    NotDueGroup,
}

impl std::str::FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "kill" => Fault::Kill,
            "terminate" => Fault::Terminate,
            "pg-restart" => Fault::PgRestart,
            "smtp" => Fault::Smtp,
            "held-snapshot" => Fault::HeldSnapshot,
            "stall" => Fault::Stall,
            "smtp-busy" => Fault::SmtpBusy,
            "not-due-group" => Fault::NotDueGroup,
            other => {
                return Err(format!(
                "unknown fault {other:?}: kill, terminate, pg-restart, smtp, held-snapshot, stall, smtp-busy, not-due-group or none"
            ))
            }
        })
    }
}

/// The drill's options, from the command line.
pub(crate) struct DrillArgs {
    pub(crate) profile: Profile,
    pub(crate) jobs: Option<usize>,
    pub(crate) workers: Option<usize>,
    /// Comma-separated faults, or `none`; default: the profile's.
    pub(crate) chaos: Option<String>,
    pub(crate) out: PathBuf,
    pub(crate) docket: PathBuf,
    pub(crate) seed: u64,
    /// `--i-know-this-is-not-production`: skip [`refuse_production`].
    pub(crate) not_production: bool,
}

/// What a profile sets.
struct Plan {
    jobs: usize,
    workers: usize,
    concurrency: usize,
    recipients: usize,
    /// Jobs a second for a steady load; `None`: all at once.
    steady_rate: Option<f64>,
    chaos: Vec<Fault>,
    chaos_every: Duration,
    held_for: Duration,
    limited_rate: &'static str,
    time_limit: Duration,
}

impl Plan {
    fn of(args: &DrillArgs, own_cluster: bool) -> anyhow::Result<Plan> {
        let mut plan = match args.profile {
            Profile::Quick => Plan {
                jobs: 3_000,
                workers: 2,
                concurrency: 4,
                recipients: 100,
                steady_rate: None,
                chaos: vec![Fault::Kill, Fault::Terminate],
                chaos_every: Duration::from_secs(2),
                held_for: Duration::from_secs(4),
                limited_rate: "100/s",
                time_limit: Duration::from_secs(120),
            },
            Profile::Standard => Plan {
                jobs: 100_000,
                workers: 4,
                concurrency: 16,
                recipients: 2_000,
                steady_rate: None,
                chaos: [
                    Fault::Kill,
                    Fault::Stall,
                    Fault::NotDueGroup,
                    Fault::Terminate,
                    Fault::SmtpBusy,
                    Fault::Smtp,
                    Fault::HeldSnapshot,
                ]
                .into_iter()
                .chain(own_cluster.then_some(Fault::PgRestart))
                .collect(),
                chaos_every: Duration::from_secs(10),
                held_for: Duration::from_secs(60),
                limited_rate: "200/s",
                time_limit: Duration::from_secs(1800),
            },
            Profile::Soak => Plan {
                jobs: 720_000,
                workers: 4,
                concurrency: 16,
                recipients: 5_000,
                steady_rate: Some(200.0),
                chaos: Vec::new(),
                chaos_every: Duration::from_secs(60),
                held_for: Duration::from_secs(120),
                limited_rate: "200/s",
                time_limit: Duration::from_secs(4200),
            },
        };
        if let Some(jobs) = args.jobs {
            plan.jobs = jobs;
        }
        if let Some(workers) = args.workers {
            anyhow::ensure!(workers > 0, "--workers must be at least 1");
            plan.workers = workers;
        }
        if let Some(chaos) = &args.chaos {
            plan.chaos = if chaos == "none" {
                Vec::new()
            } else {
                chaos
                    .split(',')
                    .map(|f| f.trim().parse().map_err(anyhow::Error::msg))
                    .collect::<anyhow::Result<_>>()?
            };
        }
        anyhow::ensure!(
            own_cluster || !plan.chaos.contains(&Fault::PgRestart),
            "pg-restart needs the drill's own cluster: unset DATABASE_URL"
        );
        Ok(plan)
    }
}

/// A fault as it happened.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Injected {
    pub(crate) at_s: f64,
    pub(crate) fault: Fault,
    pub(crate) detail: String,
}

/// Dead tuples and sizes of the jobs table at one moment.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub(crate) struct Bloat {
    #[sqlx(skip)]
    pub(crate) at_s: f64,
    pub(crate) dead_tuples: i64,
    pub(crate) live_tuples: i64,
    pub(crate) table_bytes: i64,
    pub(crate) index_bytes: i64,
}

async fn bloat(pool: &PgPool, at_s: f64) -> Option<Bloat> {
    let mut row: Bloat = sqlx::query_as(
        "select n_dead_tup as dead_tuples, n_live_tup as live_tuples,
                pg_table_size('docket.jobs') as table_bytes,
                pg_indexes_size('docket.jobs') as index_bytes
         from pg_stat_user_tables where schemaname = 'docket' and relname = 'jobs'",
    )
    .fetch_one(pool)
    .await
    .ok()?;
    row.at_s = at_s;
    Some(row)
}

/// A small deterministic generator (splitmix64): the same seed makes the same workload.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One job of the mixed workload and what it should end as.
fn one_job(mix: &mut Mix) -> (NewJob, &'static str) {
    let sleep = |mix: &mut Mix| match mix.below(100) {
        0..70 => mix.below(3),
        70..95 => 5 + mix.below(45),
        _ => 100 + mix.below(400),
    };
    let work = |payload| NewJob::new(<worker::Work as JobArgs>::KIND, payload);
    match mix.below(100) {
        // Tenants of one queue, claimed fairly: one big, nine small.
        0..40 => {
            let tenant = match mix.below(10) {
                0..6 => 0,
                n => n,
            };
            let job = work(json!({"ms": sleep(mix)})).group(format!("tenant-{tenant}"));
            (job, "completed")
        }
        40..80 => (work(json!({"ms": sleep(mix)})), "completed"),
        80..88 => (
            work(json!({"ms": mix.below(3), "fail": 1 + mix.below(3)})),
            "completed",
        ),
        88..91 => (
            work(json!({"ms": mix.below(3), "permanent": true})),
            "dead_letter:permanent",
        ),
        91..93 => (work(json!({"ms": "soon"})), "dead_letter:malformed"),
        93..95 => {
            // Ready only after it has expired: the expiry sweep dead-letters it unrun.
            let now = Utc::now();
            let mut job = work(json!({"ms": 1}));
            job.run_at = Some(now + chrono::Duration::seconds(2));
            job.expires_at = Some(now + chrono::Duration::seconds(1));
            (job, "dead_letter:expired")
        }
        _ => (
            work(json!({"ms": mix.below(3)})).queue(worker::LIMITED_QUEUE),
            "completed",
        ),
    }
}

/// Enqueues `jobs` with their expectations, in one transaction.
async fn enqueue(pool: &PgPool, mix: &mut Mix, jobs: usize) -> anyhow::Result<()> {
    let (jobs, expectations): (Vec<NewJob>, Vec<&str>) = (0..jobs).map(|_| one_job(mix)).unzip();
    let mut tx = pool.begin().await?;
    let ids = docket_queue::enqueue_many(&mut *tx, &jobs).await?;
    let ids: Vec<uuid::Uuid> = ids.into_iter().map(|id| id.0).collect();
    sqlx::query(
        "insert into drill_expectations (job_id, expect)
         select * from unnest($1::uuid[], $2::text[])",
    )
    .bind(&ids)
    .bind(&expectations)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The database: the one `DATABASE_URL` names, or a throwaway cluster of the drill's own.
struct Database {
    url: String,
    cluster: Option<Arc<ThrowawayCluster>>,
}

async fn database() -> anyhow::Result<Database> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return Ok(Database { url, cluster: None });
    }
    let cluster = tokio::task::spawn_blocking(ThrowawayCluster::start).await??;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&cluster.url("postgres"))
        .await?;
    sqlx::query("create database drill").execute(&admin).await?;
    admin.close().await;
    Ok(Database {
        url: cluster.url("drill"),
        cluster: Some(Arc::new(cluster)),
    })
}

/// Docket's tables whose rows are someone's data (not the rows a migration seeds).
const DATA_TABLES: [&str; 7] = [
    "jobs",
    "workers",
    "schedules",
    "batches",
    "mail_campaigns",
    "mail_deliveries",
    "mail_suppressions",
];

/// The tables the drill creates (beside Docket's own schema and its migrations table).
const DRILL_TABLES: [&str; 2] = ["drill_ledger", "drill_expectations"];

/// Refuses a database that may be someone's: one whose Docket tables hold rows, or that
/// has a table the drill did not create. The drill adds thousands of jobs and dead letters,
/// registers workers, kills processes and terminates connections: it must run on a scratch
/// database (or its own cluster, with `DATABASE_URL` unset).
async fn refuse_production(pool: &PgPool) -> anyhow::Result<()> {
    let mut holds = Vec::new();
    for table in DATA_TABLES {
        let qualified = format!("docket.{table}");
        let exists: bool = sqlx::query_scalar("select to_regclass($1) is not null")
            .bind(&qualified)
            .fetch_one(pool)
            .await?;
        if exists
            && sqlx::query_scalar::<_, bool>(&format!("select exists (select 1 from {qualified})"))
                .fetch_one(pool)
                .await?
        {
            holds.push(qualified);
        }
    }
    let foreign: Vec<String> = sqlx::query_scalar(
        "select format('%I.%I', n.nspname, c.relname)
         from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.relkind in ('r', 'p', 'v', 'm', 'f')
           and n.nspname not in ('pg_catalog', 'information_schema', 'docket')
           and n.nspname not like 'pg\\_%'
           and not (n.nspname = 'public' and c.relname = any($1))
         order by 1",
    )
    .bind(
        DRILL_TABLES
            .iter()
            .chain(&["_sqlx_migrations"])
            .map(|t| (*t).to_owned())
            .collect::<Vec<_>>(),
    )
    .fetch_all(pool)
    .await?;
    let mut reasons = Vec::new();
    if !holds.is_empty() {
        reasons.push(format!(
            "it holds Docket data (rows in {})",
            holds.join(", ")
        ));
    }
    if !foreign.is_empty() {
        let shown: Vec<&str> = foreign.iter().take(5).map(String::as_str).collect();
        let more = foreign.len().saturating_sub(shown.len());
        reasons.push(format!(
            "it has tables the drill did not create ({}{})",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    anyhow::ensure!(
        reasons.is_empty(),
        "refusing to run the drill on this database: {}. The drill adds thousands of jobs \
         and dead letters, registers workers, kills processes and terminates connections. \
         Give it an empty scratch database (or unset DATABASE_URL for a throwaway cluster of \
         its own), or pass --i-know-this-is-not-production",
        reasons.join("; and ")
    );
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The campaign's template and its recipients' addresses.
fn templates(out: &std::path::Path) -> anyhow::Result<PathBuf> {
    let dir = out.join("templates/drill_news");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("subject.txt"), "Drill news for {{ name }}")?;
    std::fs::write(dir.join("body.txt"), "Hello {{ name }}, this is a drill.")?;
    Ok(out.join("templates"))
}

fn recipient(i: usize) -> String {
    format!("reader{i}@drill.example.com")
}

/// Runs the drill; the exit code says whether every invariant held.
pub(crate) async fn run(args: DrillArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out)?;
    let database = database().await?;
    let plan = Plan::of(&args, database.cluster.is_some())?;
    let pool = PgPoolOptions::new()
        .max_connections(6)
        .connect(&database.url)
        .await?;
    if database.cluster.is_none() && !args.not_production {
        refuse_production(&pool).await?;
    }
    docket_queue::migrate(&pool).await?;
    worker::create_ledger(&pool).await?;
    check::create_expectations(&pool).await?;
    let used: i64 = sqlx::query_scalar("select count(*) from drill_expectations")
        .fetch_one(&pool)
        .await?;
    anyhow::ensure!(
        used == 0,
        "this database holds an earlier drill: give the drill an empty one"
    );

    let sink = SmtpSink::start().await;
    let setup = Setup {
        database_url: database.url.clone(),
        out: args.out.clone(),
        docket: args.docket.clone(),
        secret: uuid::Uuid::new_v4().simple().to_string(),
        http_port: free_port()?,
        smtp_url: sink.url(),
        templates: templates(&args.out)?,
        worker_concurrency: plan.concurrency,
        limited_rate: plan.limited_rate.to_owned(),
    };
    let started = Instant::now();
    let started_at = Utc::now();
    let mut serve = procs::serve(&setup)?;
    let http_up = Instant::now();
    while monitor::get(setup.http_port, "/api/health", None)
        .await
        .is_none()
    {
        anyhow::ensure!(
            !serve.exited() && http_up.elapsed() < Duration::from_secs(60),
            "docket serve did not start: see {}",
            args.out.join("serve.log").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The campaign, created as an application does (its own transaction).
    let mail_config = docket_mail::MailConfig {
        mode: docket_mail::config::Mode::Smtp(docket_mail::config::SmtpUrl::parse(&sink.url())?),
        from: Some("Docket drill <drill@example.com>".to_owned()),
        template_dir: setup.templates.clone(),
        public_url: Some(format!("http://127.0.0.1:{}", setup.http_port)),
        token_secret: Some(
            docket_mail::token::TokenSecret::new(procs::TOKEN_SECRET)
                .map_err(anyhow::Error::msg)?,
        ),
        ..docket_mail::MailConfig::default()
    };
    let mailer = docket_mail::Mailer::new(pool.clone(), mail_config).map_err(anyhow::Error::msg)?;
    let recipients = (0..plan.recipients)
        .map(|i| docket_mail::campaign::Recipient {
            to: recipient(i),
            name: Some(format!("Reader {i}")),
            locale: None,
            vars: json!({}),
        })
        .collect();
    let mut campaign = docket_mail::campaign::NewCampaign::new("drill", "drill_news", recipients);
    campaign.batch_size = 50;
    docket_mail::campaign::create(&pool, mailer.catalog(), mailer.from(), &campaign).await?;

    let progress = indicatif::ProgressBar::new(plan.jobs as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} jobs finished  {msg}",
        )?
        .progress_chars("=> "),
    );
    let mut ctx = Chaos {
        mix: Mix(args.seed),
        workers: (0..plan.workers)
            .map(|i| procs::worker(&setup, i))
            .collect::<anyhow::Result<_>>()?,
        next_worker: plan.workers,
        setup: &setup,
        pool: &pool,
        cluster: database.cluster.clone(),
        sink: &sink,
        relay_back_at: None,
        held_for: plan.held_for,
        database_url: &database.url,
        mailer: &mailer,
        stalled: Vec::new(),
        busy: Vec::new(),
        recovery_due: Vec::new(),
        recoveries: Vec::new(),
        not_due: Vec::new(),
    };
    let mut enqueued = 0;
    if plan.steady_rate.is_none() {
        while enqueued < plan.jobs {
            let chunk = (plan.jobs - enqueued).min(5_000);
            enqueue(&pool, &mut ctx.mix, chunk).await?;
            enqueued += chunk;
        }
    }

    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let faults: Arc<Mutex<Vec<Injected>>> = Arc::default();
    let bloat_samples: Arc<Mutex<Vec<Bloat>>> = Arc::default();
    let mut peak_rss_kib = 0;
    let mut fault_index = 0;
    let mut next_fault = started + plan.chaos_every;
    let mut next_bloat = started;
    let mut violations_outside: Vec<String> = Vec::new();
    // Set once the work has drained: no fault is injected after, so that faults that add
    // work or last a while (stall, smtp-busy) cannot keep the drill from ending.
    let mut winding_down = false;
    let drained = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if ctx.relay_back_at.is_some_and(|at| Instant::now() >= at) {
            sink.reply_to_all(None);
            ctx.relay_back_at = None;
        }
        end_faults_due(&mut ctx, Instant::now()).await;
        let at_s = started.elapsed().as_secs_f64();
        if let Some(rate) = plan.steady_rate {
            let due = ((at_s * rate) as usize).min(plan.jobs);
            // A failed enqueue (a fault in progress) is tried again on the next tick.
            if due > enqueued && enqueue(&pool, &mut ctx.mix, due - enqueued).await.is_ok() {
                enqueued = due;
            }
        }
        let sample = monitor::sample(setup.http_port, &setup.secret, at_s).await;
        if let Some(live) = sample.live() {
            progress.set_position((enqueued as i64 - live).max(0) as u64);
        }
        progress.set_message(format!(
            "{} · oldest ready {} · dead letters {}",
            sample.status,
            sample
                .oldest_ready_age_s
                .map_or("-".into(), |a| format!("{a:.1} s")),
            sample.dead_letter.map_or("-".into(), |n| n.to_string())
        ));
        let reachable = sample.status != "unreachable";
        samples.lock().await.push(sample);
        for worker in &ctx.workers {
            peak_rss_kib = peak_rss_kib.max(worker.peak_rss_kib().unwrap_or(0));
        }
        if Instant::now() >= next_bloat {
            next_bloat += Duration::from_secs(5);
            if let Some(row) = bloat(&pool, at_s).await {
                bloat_samples.lock().await.push(row);
            }
        }
        if serve.exited() {
            violations_outside.push("docket serve exited on its own".into());
            break false;
        }
        if !plan.chaos.is_empty() && !winding_down && Instant::now() >= next_fault {
            next_fault += plan.chaos_every;
            let fault = plan.chaos[fault_index % plan.chaos.len()];
            fault_index += 1;
            let detail = match inject(fault, &mut ctx).await {
                Ok(detail) => detail,
                // A fault that cannot be injected (the database is still coming back from
                // the last one) is reported, and the drill goes on.
                Err(err) => format!("{fault:?} could not be injected: {err:#}"),
            };
            progress.println(format!("{at_s:>7.1} s  fault: {detail}"));
            faults.lock().await.push(Injected {
                at_s,
                fault,
                detail,
            });
        }
        // Drained by the database's word, never the monitor's: a health document taken
        // while the database is down has no figures, which must not read as zero. The
        // not-due groups' jobs wait a day: they are cancelled once everything else is final.
        let left: Option<i64> = sqlx::query_scalar(
            "select count(*) from docket.jobs
             where state in ('pending', 'retrying', 'processing') and id <> all($1)",
        )
        .bind(&ctx.not_due)
        .fetch_one(&pool)
        .await
        .ok();
        let work_done = reachable && enqueued == plan.jobs && left == Some(0);
        winding_down |= work_done;
        if work_done && ctx.stalled.is_empty() && ctx.recovery_due.is_empty() {
            for id in std::mem::take(&mut ctx.not_due) {
                docket_queue::admin::cancel(&pool, docket_queue::JobId(id)).await?;
            }
            break true;
        }
        if started.elapsed() > plan.time_limit {
            violations_outside.push(format!(
                "the backlog did not drain within {} s",
                plan.time_limit.as_secs()
            ));
            if !ctx.not_due.is_empty() {
                let ready: i64 = sqlx::query_scalar(
                    "select count(*) from docket.jobs where state in ('pending', 'retrying')
                     and run_at <= now() and group_key is not null and id <> all($1)",
                )
                .bind(&ctx.not_due)
                .fetch_one(&pool)
                .await
                .unwrap_or(-1);
                if ready > 0 {
                    violations_outside.push(format!(
                        "not-due-group: {ready} grouped jobs were ready and never claimed beside a group with nothing due (the fair rotation wedged)"
                    ));
                }
            }
            break false;
        }
    };
    progress.finish_and_clear();

    // Health back to `ok` once the faults stop.
    let mut health_ok = false;
    let settle = Instant::now();
    while drained && settle.elapsed() < Duration::from_secs(60) {
        let sample = monitor::sample(
            setup.http_port,
            &setup.secret,
            started.elapsed().as_secs_f64(),
        )
        .await;
        health_ok = sample.status == "ok";
        samples.lock().await.push(sample);
        if health_ok {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if drained && !health_ok {
        violations_outside.push("health did not return to ok within 60 s".into());
    }
    let duration_s = started.elapsed().as_secs_f64();
    // Every stopped worker goes on, so that it can shut down.
    for (pid, _, continued) in &ctx.stalled {
        if !continued {
            let _ = signal(*pid, "-CONT");
        }
    }
    for worker in &mut ctx.workers {
        worker.stop(Duration::from_secs(10));
    }
    serve.stop(Duration::from_secs(30));

    let findings = check::check(&pool).await?;
    // Each recipient exactly once. A process killed in the middle of an SMTP exchange
    // leaves that delivery `unknown` (maybe sent, never sent again unasked): the only
    // recipients that may have received nothing. Nobody is ever sent twice.
    let crash_faults = plan
        .chaos
        .iter()
        .any(|f| matches!(f, Fault::Kill | Fault::Terminate | Fault::PgRestart));
    let unknown: std::collections::HashSet<String> =
        sqlx::query_scalar("select recipient from docket.mail_deliveries where status = 'unknown'")
            .fetch_all(&pool)
            .await?
            .into_iter()
            .collect();
    let mut missing_recipients = Vec::new();
    let mut duplicate_sends = 0;
    for i in 0..plan.recipients {
        match sink.count_for(&recipient(i)) {
            0 if crash_faults && unknown.contains(&recipient(i)) => {}
            0 => missing_recipients.push(recipient(i)),
            1 => {}
            n => duplicate_sends += n - 1,
        }
    }
    if !missing_recipients.is_empty() {
        violations_outside.push(format!(
            "{} campaign recipients received nothing: {}",
            missing_recipients.len(),
            missing_recipients.join(", ")
        ));
    }
    let (busy_violations, busy_duplicates, recovery_latency_ms) = busy_findings(&ctx);
    violations_outside.extend(busy_violations);
    duplicate_sends += busy_duplicates;
    if duplicate_sends > 0 {
        violations_outside.push(format!("{duplicate_sends} duplicate sends"));
    }
    let runs = check::runs_per_second(&pool, started_at).await?;
    let samples = samples.lock().await.clone();
    let report = report::Report::new(report::Inputs {
        profile: args.profile,
        workers: plan.workers,
        duration_s,
        findings,
        samples,
        faults: faults.lock().await.clone(),
        bloat: bloat_samples.lock().await.clone(),
        peak_worker_rss_kib: peak_rss_kib,
        recipients: plan.recipients,
        duplicate_sends,
        crash_window_sends: if crash_faults { duplicate_sends } else { 0 },
        violations_outside,
        runs,
        recovery_latency_ms,
    });
    report.write(&args.out)?;
    println!("{}", report.summary());
    pool.close().await;
    drop(database);
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What the faults act on.
struct Chaos<'a> {
    mix: Mix,
    workers: Vec<Process>,
    next_worker: usize,
    setup: &'a Setup,
    pool: &'a PgPool,
    cluster: Option<Arc<ThrowawayCluster>>,
    sink: &'a SmtpSink,
    /// When the relay's 451s end.
    relay_back_at: Option<Instant>,
    held_for: Duration,
    database_url: &'a str,
    mailer: &'a docket_mail::Mailer,
    /// Stalled workers: pid, when it gets SIGCONT, and whether it has. One stays listed
    /// for a while after, so that the drill does not end before its runs record their end.
    stalled: Vec<(u32, Instant, bool)>,
    /// The smtp-busy campaigns so far.
    busy: Vec<BusyCampaign>,
    /// Recovery emails to send (an address, when), and those sent (address, enqueued).
    recovery_due: Vec<(String, Instant)>,
    recoveries: Vec<(String, Instant)>,
    /// The jobs of groups whose head is not due: cancelled once everything else is final.
    not_due: Vec<uuid::Uuid>,
}

/// How long a stalled worker stays stopped: well past its lease (2 s) and the rescuer's
/// next pass, so that its jobs are rescued and run elsewhere meanwhile.
const STALL_FOR: Duration = Duration::from_secs(5);

/// How long the busy mailboxes answer 450: past the mail retry ladder (1+2+4+8 s), so a
/// busy recipient may end `failed` but never holds up the others.
const BUSY_FOR: Duration = Duration::from_secs(20);

/// The recipients of one smtp-busy campaign; every fourth one is busy.
const BUSY_RECIPIENTS: usize = 20;

/// The longest a recovery email may take, enqueue to the relay's 250, while mailboxes are
/// busy: the relay is not what is busy, so nothing should hold it back.
const RECOVERY_BOUND: Duration = Duration::from_secs(10);

/// One smtp-busy campaign: its recipients, which of them are busy, until when.
struct BusyCampaign {
    recipients: Vec<String>,
    busy: Vec<String>,
    until: Instant,
    cleared: bool,
    /// The recipients beside the busy ones still unsent when the 450s ended: held up.
    held_up: Vec<String>,
}

/// Injects one fault; says what it did.
async fn inject(fault: Fault, ctx: &mut Chaos<'_>) -> anyhow::Result<String> {
    Ok(match fault {
        Fault::Kill => {
            let victim = ctx.mix.below(ctx.workers.len() as u64) as usize;
            ctx.workers[victim].kill();
            let name = ctx.workers[victim].name.clone();
            ctx.workers[victim] = procs::worker(ctx.setup, ctx.next_worker)?;
            ctx.next_worker += 1;
            format!("{name} killed with SIGKILL; a new one started")
        }
        Fault::Terminate => {
            let cut: i64 = sqlx::query_scalar(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity
                 where application_name = $1",
            )
            .bind(worker::APPLICATION_NAME)
            .fetch_one(ctx.pool)
            .await?;
            format!("{cut} worker connections terminated")
        }
        Fault::PgRestart => {
            let cluster = ctx
                .cluster
                .clone()
                .ok_or_else(|| anyhow::anyhow!("not the drill's own cluster"))?;
            tokio::task::spawn_blocking(move || cluster.restart()).await??;
            "PostgreSQL restarted (immediate)".to_owned()
        }
        Fault::Smtp => {
            ctx.sink
                .reply_to_all(Some("451 4.3.0 drill: try again later"));
            ctx.relay_back_at = Some(Instant::now() + Duration::from_secs(3));
            "the relay answers 451 for 3 s".to_owned()
        }
        Fault::HeldSnapshot => {
            hold_snapshot(ctx.database_url, ctx.held_for).await?;
            format!(
                "a REPEATABLE READ transaction held open for {} s",
                ctx.held_for.as_secs()
            )
        }
        Fault::Stall => {
            let running: Vec<usize> = (0..ctx.workers.len())
                .filter(|&i| {
                    let pid = ctx.workers[i].child.id();
                    !ctx.stalled.iter().any(|(p, _, _)| *p == pid)
                })
                .collect();
            anyhow::ensure!(!running.is_empty(), "every worker is stopped already");
            let victim = running[ctx.mix.below(running.len() as u64) as usize];
            let pid = ctx.workers[victim].child.id();
            signal(pid, "-STOP")?;
            ctx.stalled.push((pid, Instant::now() + STALL_FOR, false));
            format!(
                "{} stopped with SIGSTOP for {} s (its lease: 2 s), then SIGCONT",
                ctx.workers[victim].name,
                STALL_FOR.as_secs()
            )
        }
        Fault::SmtpBusy => {
            // One busy campaign at a time: a profile that repeats its faults quickly would
            // otherwise pile them up.
            if ctx.busy.iter().any(|c| !c.cleared) {
                return Ok("smtp-busy: the last busy campaign's 450s go on; none added".into());
            }
            let n = ctx.busy.len();
            let recipients: Vec<String> = (0..BUSY_RECIPIENTS)
                .map(|i| format!("busy{n}-{i}@drill.example.com"))
                .collect();
            let busy: Vec<String> = recipients.iter().step_by(4).cloned().collect();
            for address in &busy {
                ctx.sink
                    .reply_to(address, Some("450 4.2.0 drill: mailbox busy, try later"));
            }
            let mut campaign = docket_mail::campaign::NewCampaign::new(
                &format!("drill busy {n}"),
                "drill_news",
                recipients
                    .iter()
                    .map(|to| docket_mail::campaign::Recipient {
                        to: to.clone(),
                        name: Some("Busy reader".to_owned()),
                        locale: None,
                        vars: json!({}),
                    })
                    .collect(),
            );
            campaign.batch_size = 10;
            docket_mail::campaign::create(
                ctx.pool,
                ctx.mailer.catalog(),
                ctx.mailer.from(),
                &campaign,
            )
            .await?;
            let now = Instant::now();
            ctx.busy.push(BusyCampaign {
                recipients,
                busy: busy.clone(),
                until: now + BUSY_FOR,
                cleared: false,
                held_up: Vec::new(),
            });
            // Once the busy replies have begun, a recovery email must still go out at once.
            ctx.recovery_due.push((
                format!("recovery{n}@drill.example.com"),
                now + Duration::from_secs(3),
            ));
            format!(
                "a campaign of {BUSY_RECIPIENTS}: {} of its mailboxes answer 450 for {} s; a recovery email 3 s in",
                busy.len(),
                BUSY_FOR.as_secs()
            )
        }
        Fault::NotDueGroup => {
            if let Some(id) = ctx.not_due.first() {
                return Ok(format!("not-due-group: job {id} still waits; none added"));
            }
            let n = ctx.not_due.len();
            let group = format!("not-due-{n}");
            let job = NewJob::new(<worker::Work as JobArgs>::KIND, json!({"ms": 1}))
                .group(group.clone())
                .run_at(Utc::now() + chrono::Duration::days(1));
            let mut tx = ctx.pool.begin().await?;
            let id = docket_queue::enqueue(&mut *tx, &job).await?;
            sqlx::query("insert into drill_expectations (job_id, expect) values ($1, 'cancelled')")
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            ctx.not_due.push(id.0);
            format!("group {group}: one job, due in a day, beside the busy groups")
        }
    })
}

/// Ends the faults whose time is up by `now`: SIGCONT to stalled workers, the busy
/// mailboxes accept again; and sends the recovery emails that are due.
async fn end_faults_due(ctx: &mut Chaos<'_>, now: Instant) {
    for (pid, until, continued) in &mut ctx.stalled {
        if !*continued && *until <= now {
            // A worker killed while stopped is gone: nothing to continue.
            let _ = signal(*pid, "-CONT");
            *continued = true;
        }
    }
    ctx.stalled
        .retain(|(_, until, _)| *until + Duration::from_secs(2) > now);
    for campaign in &mut ctx.busy {
        if !campaign.cleared && campaign.until <= now {
            campaign.held_up = campaign
                .recipients
                .iter()
                .filter(|to| !campaign.busy.contains(to) && ctx.sink.count_for(to) == 0)
                .cloned()
                .collect();
            for address in &campaign.busy {
                ctx.sink.reply_to(address, None);
            }
            campaign.cleared = true;
        }
    }
    let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut ctx.recovery_due)
        .into_iter()
        .partition(|(_, at)| *at <= Instant::now());
    ctx.recovery_due = later;
    for (to, _) in due {
        let enqueued = Instant::now();
        match enqueue_recovery(ctx.pool, &to).await {
            Ok(()) => ctx.recoveries.push((to, enqueued)),
            // The database is coming back from a fault: try again on the next tick.
            Err(_) => ctx.recovery_due.push((to, Instant::now())),
        }
    }
}

/// Sends `kill SIGNAL pid`.
fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill {signal} {pid} failed");
    Ok(())
}

/// Sends a recovery email as an application does: `mail.recovery` on its own queue, first.
async fn enqueue_recovery(pool: &PgPool, to: &str) -> anyhow::Result<()> {
    let job = NewJob::typed(&docket_mail::jobs::Recovery {
        to: to.to_owned(),
        template: "drill_news".to_owned(),
        vars: json!({"name": "Recovering reader"}),
        locale: None,
        idempotency_key: None,
    })?
    .queue(docket_mail::jobs::RECOVERY_QUEUE)
    .priority(docket_mail::jobs::RECOVERY_PRIORITY)
    .expires_at(Utc::now() + chrono::Duration::minutes(10));
    docket_queue::enqueue(pool, &job).await?;
    Ok(())
}

/// What the smtp-busy faults left: violations, duplicate sends, recovery latencies (ms).
fn busy_findings(ctx: &Chaos<'_>) -> (Vec<String>, usize, Vec<f64>) {
    let mut violations = Vec::new();
    let mut duplicates = 0;
    for campaign in &ctx.busy {
        let mut wedged = Vec::new();
        for to in &campaign.recipients {
            match ctx.sink.count_for(to) {
                0 if !campaign.busy.contains(to) => wedged.push(to.clone()),
                0 | 1 => {}
                n => duplicates += n - 1,
            }
        }
        if !campaign.held_up.is_empty() {
            violations.push(format!(
                "smtp-busy: {} recipients beside a busy mailbox were still unsent when its {} s of 450s ended: {}",
                campaign.held_up.len(),
                BUSY_FOR.as_secs(),
                campaign.held_up.join(", ")
            ));
        }
        if !wedged.is_empty() {
            violations.push(format!(
                "smtp-busy: {} recipients beside a busy mailbox received nothing: {}",
                wedged.len(),
                wedged.join(", ")
            ));
        }
    }
    let messages = ctx.sink.messages();
    let mut latencies = Vec::new();
    for (to, enqueued) in &ctx.recoveries {
        match messages.iter().find(|m| m.to.iter().any(|t| t == to)) {
            Some(message) => {
                let took = message.at.saturating_duration_since(*enqueued);
                latencies.push(took.as_secs_f64() * 1000.0);
                if took > RECOVERY_BOUND {
                    violations.push(format!(
                        "smtp-busy: the recovery email to {to} took {:.1} s (bound {} s)",
                        took.as_secs_f64(),
                        RECOVERY_BOUND.as_secs()
                    ));
                }
            }
            None => violations.push(format!(
                "smtp-busy: the recovery email to {to} never reached the relay"
            )),
        }
    }
    (violations, duplicates, latencies)
}

/// Opens a REPEATABLE READ transaction, takes its snapshot, and holds it for `hold` in the
/// background; vacuum can remove no row that dies meanwhile.
async fn hold_snapshot(url: &str, hold: Duration) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query("begin isolation level repeatable read")
        .execute(&mut conn)
        .await?;
    sqlx::query("select count(*) from docket.workers")
        .execute(&mut conn)
        .await?;
    tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        let _ = sqlx::query("commit").execute(&mut conn).await;
    });
    Ok(())
}
