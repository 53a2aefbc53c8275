//! The invariants, checked from the database: the jobs the drill enqueued (with what each
//! should end as, in `drill_expectations`) and the ledger every run wrote. The same check
//! runs alone as `drill-check` on a drill's database.

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// The most ids of each kind of violation a report names.
const NAMED: i64 = 100;

/// Creates the expectations table: what each drill job should end as, `completed` or
/// `dead_letter:<reason prefix>`.
pub(crate) async fn create_expectations(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query(
        "create table if not exists drill_expectations (
            job_id uuid primary key,
            expect text not null)",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A job that ended otherwise than expected.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub(crate) struct Unexpected {
    pub(crate) job_id: Uuid,
    pub(crate) expected: String,
    pub(crate) actual: String,
}

/// A run of a job that started before an earlier run of it had ended.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub(crate) struct Overlap {
    pub(crate) job_id: Uuid,
    /// The later run's ledger row.
    pub(crate) run: i64,
}

/// Percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p95: f64,
    pub(crate) p99: f64,
}

/// What the database says after a drill.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Findings {
    pub(crate) jobs: i64,
    pub(crate) completed: i64,
    pub(crate) dead_letter: i64,
    pub(crate) cancelled: i64,
    /// Jobs whose row is gone, or that never finished: ids (at most 100) and how many.
    pub(crate) lost: Vec<Uuid>,
    pub(crate) lost_count: i64,
    /// Jobs that finished otherwise than expected (a dead letter with the wrong reason, a
    /// job that should have failed and completed, ...).
    pub(crate) unexpected: Vec<Unexpected>,
    pub(crate) unexpected_count: i64,
    /// Two runs of one job overlapping in time: a second run started while the first
    /// still held the job.
    pub(crate) overlapping_runs: Vec<Overlap>,
    pub(crate) overlapping_count: i64,
    /// Runs that ended after their lease had lapsed: when the run recorded its end, the
    /// database no longer gave the job to it (rescued, claimed again, finished) or its
    /// worker's stored lease had passed. A worker stalled past its lease that carried on.
    pub(crate) runs_past_lease: Vec<Overlap>,
    pub(crate) runs_past_lease_count: i64,
    /// Attempts beyond the first, over every job.
    pub(crate) retries: i64,
    /// Runs that never finished (their process was killed or cut off).
    pub(crate) interrupted_runs: i64,
    /// Jobs with an interrupted run that another run then completed: rescued.
    pub(crate) rescued: i64,
    /// From enqueue to the first run's start.
    pub(crate) pickup_ms: Percentiles,
    /// Drill jobs not finished.
    pub(crate) backlog: i64,
}

impl Findings {
    /// Whether any invariant is broken.
    pub(crate) fn violated(&self) -> bool {
        self.lost_count > 0
            || self.unexpected_count > 0
            || self.overlapping_count > 0
            || self.runs_past_lease_count > 0
    }
}

/// Reads the findings.
pub(crate) async fn check(pool: &PgPool) -> sqlx::Result<Findings> {
    // Fresh statistics: the tables were filled moments ago, and a plan made for empty ones
    // would loop over a hundred thousand rows per row.
    sqlx::query("alter table drill_ledger add column if not exists lease_held boolean")
        .execute(pool)
        .await?;
    sqlx::query("analyze drill_ledger, drill_expectations")
        .execute(pool)
        .await?;
    let mut findings = Findings::default();
    let states: Vec<(String, i64)> = sqlx::query_as(
        "select coalesce(j.state::text, 'missing'), count(*)
         from drill_expectations e left join docket.jobs j on j.id = e.job_id group by 1",
    )
    .fetch_all(pool)
    .await?;
    for (state, count) in states {
        findings.jobs += count;
        match state.as_str() {
            "completed" => findings.completed = count,
            "dead_letter" => findings.dead_letter = count,
            "cancelled" => findings.cancelled = count,
            "pending" | "retrying" | "processing" => findings.backlog += count,
            _ => {}
        }
    }
    let lost_where = "from drill_expectations e left join docket.jobs j on j.id = e.job_id
         where j.id is null or j.state in ('pending', 'retrying', 'processing')";
    findings.lost_count = sqlx::query_scalar(&format!("select count(*) {lost_where}"))
        .fetch_one(pool)
        .await?;
    findings.lost = sqlx::query_scalar(&format!(
        "select e.job_id {lost_where} order by 1 limit {NAMED}"
    ))
    .fetch_all(pool)
    .await?;
    let unexpected_where = "from drill_expectations e join docket.jobs j on j.id = e.job_id
         where j.state in ('completed', 'dead_letter')
           and not ((e.expect = 'completed' and j.state = 'completed')
                 or (e.expect like 'dead_letter:%' and j.state = 'dead_letter'
                     and j.dead_letter_reason like substr(e.expect, 13) || '%'))";
    findings.unexpected_count = sqlx::query_scalar(&format!("select count(*) {unexpected_where}"))
        .fetch_one(pool)
        .await?;
    findings.unexpected = sqlx::query_as(&format!(
        "select e.job_id, e.expect as expected,
                j.state::text || coalesce(':' || j.dead_letter_reason, '') as actual
         {unexpected_where} order by 1 limit {NAMED}"
    ))
    .fetch_all(pool)
    .await?;
    // One sort of the ledger, not a self-join: a run overlaps an earlier one exactly when
    // it starts before the latest end among the runs of its job that started before it.
    let overlaps = "with runs as (
            select job_id, id, started_at,
                   max(finished_at) over (partition by job_id order by started_at, id
                                          rows between unbounded preceding and 1 preceding) as earlier_end
            from drill_ledger where finished_at is not null)
         select job_id, id as run from runs where started_at < earlier_end";
    findings.overlapping_count =
        sqlx::query_scalar(&format!("select count(*) from ({overlaps}) o"))
            .fetch_one(pool)
            .await?;
    findings.overlapping_runs = sqlx::query_as(&format!("{overlaps} order by 1, 2 limit {NAMED}"))
        .fetch_all(pool)
        .await?;
    let past_lease = "select job_id, id as run from drill_ledger
         where finished_at is not null and lease_held is false";
    findings.runs_past_lease_count =
        sqlx::query_scalar(&format!("select count(*) from ({past_lease}) p"))
            .fetch_one(pool)
            .await?;
    findings.runs_past_lease = sqlx::query_as(&format!("{past_lease} order by 1, 2 limit {NAMED}"))
        .fetch_all(pool)
        .await?;
    findings.retries = sqlx::query_scalar(
        "select coalesce(sum(greatest(j.attempt - 1, 0)), 0)::bigint
         from drill_expectations e join docket.jobs j on j.id = e.job_id",
    )
    .fetch_one(pool)
    .await?;
    findings.interrupted_runs =
        sqlx::query_scalar("select count(*) from drill_ledger where finished_at is null")
            .fetch_one(pool)
            .await?;
    findings.rescued = sqlx::query_scalar(
        "select count(distinct l.job_id) from drill_ledger l join docket.jobs j on j.id = l.job_id
         where l.finished_at is null and j.state = 'completed'",
    )
    .fetch_one(pool)
    .await?;
    let pickup: Option<Vec<f64>> = sqlx::query_scalar(
        "select percentile_cont(array[0.5, 0.95, 0.99]) within group
                (order by extract(epoch from l.started_at - j.created_at) * 1000)
         from drill_ledger l join docket.jobs j on j.id = l.job_id where l.attempt = 1",
    )
    .fetch_one(pool)
    .await?;
    if let Some([p50, p95, p99]) = pickup.as_deref() {
        findings.pickup_ms = Percentiles {
            p50: *p50,
            p95: *p95,
            p99: *p99,
        };
    }
    Ok(findings)
}

/// Completed runs per second of the drill, from the ledger: (second since `start`, runs).
pub(crate) async fn runs_per_second(
    pool: &PgPool,
    start: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<Vec<(f64, i64)>> {
    sqlx::query_as(
        "select extract(epoch from date_trunc('second', finished_at) - $1)::float8, count(*)
         from drill_ledger where finished_at is not null group by 1 order by 1",
    )
    .bind(start)
    .fetch_all(pool)
    .await
}

/// `drill-check`: the invariants of the drill whose database `DATABASE_URL` names. Prints
/// the findings as JSON; exits non-zero on a violation, naming the ids.
pub(crate) async fn run_alone() -> anyhow::Result<std::process::ExitCode> {
    let url = std::env::var("DATABASE_URL")
        .map_err(|_| anyhow::anyhow!("drill-check needs DATABASE_URL: the drill's database"))?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await?;
    let findings = check(&pool).await?;
    println!("{}", serde_json::to_string_pretty(&findings)?);
    if findings.violated() {
        eprintln!("{}", describe_violations(&findings));
        return Ok(std::process::ExitCode::FAILURE);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// One line per kind of violation, with the ids.
pub(crate) fn describe_violations(findings: &Findings) -> String {
    let mut lines = Vec::new();
    if findings.lost_count > 0 {
        let ids: Vec<String> = findings.lost.iter().map(Uuid::to_string).collect();
        lines.push(format!(
            "lost: {} jobs: {}",
            findings.lost_count,
            ids.join(", ")
        ));
    }
    if findings.unexpected_count > 0 {
        let ids: Vec<String> = findings
            .unexpected
            .iter()
            .map(|u| format!("{} (expected {}, got {})", u.job_id, u.expected, u.actual))
            .collect();
        lines.push(format!(
            "unexpected outcome: {} jobs: {}",
            findings.unexpected_count,
            ids.join(", ")
        ));
    }
    if findings.overlapping_count > 0 {
        let ids: Vec<String> = findings
            .overlapping_runs
            .iter()
            .map(|o| {
                format!(
                    "{} (run {} began before an earlier one ended)",
                    o.job_id, o.run
                )
            })
            .collect();
        lines.push(format!(
            "overlapping runs: {}: {}",
            findings.overlapping_count,
            ids.join(", ")
        ));
    }
    if findings.runs_past_lease_count > 0 {
        let ids: Vec<String> = findings
            .runs_past_lease
            .iter()
            .map(|o| {
                format!(
                    "{} (run {} ended after its lease had lapsed)",
                    o.job_id, o.run
                )
            })
            .collect();
        lines.push(format!(
            "runs past their lease: {}: {}",
            findings.runs_past_lease_count,
            ids.join(", ")
        ));
    }
    lines.join("\n")
}
