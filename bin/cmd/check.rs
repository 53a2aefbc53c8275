//! `docket check [--json]`: the operator's health report, the same findings in the same
//! words as the bearer health document and `/ops` (plus the migrations, which only this
//! command reads). Exit 0 when everything is ok, 1 when something needs a look (`warn`,
//! `unknown`, `degraded`), 2 when something is `down`, so that cron and monitoring systems
//! can act on the code alone.

use std::process::ExitCode;

use docket_queue::health::{self, Finding, Verdict};
use serde::Serialize;

use crate::cli::OutputArgs;
use crate::config::Config;
use crate::table;

#[derive(Serialize)]
struct Report {
    /// The overall status, as the health document gives it.
    status: Verdict,
    checks: Vec<Finding>,
}

const MIGRATIONS_ADVICE: &str =
    "run `docket migrate` (workers and `serve` refuse to start on a schema they do not know).";

pub(crate) async fn run(config: &Config, output: OutputArgs) -> anyhow::Result<ExitCode> {
    let probes = docket_http::health::probes(&config.check, Some(&config.mail.mode));
    let unreachable = |detail: String| {
        Finding::new(
            "database",
            Verdict::Down,
            detail,
            "check that PostgreSQL is up and reachable with DATABASE_URL.",
        )
    };
    let checks = match config.require_database() {
        Err(err) => database_unreachable(unreachable(err.to_string()), &probes, config).await,
        Ok(url) => match crate::cmd::connect(url).await {
            Err(err) => {
                database_unreachable(unreachable(format!("{err:#}")), &probes, config).await
            }
            Ok(pool) => {
                let mut checks = vec![migrations(&pool).await];
                checks.extend(
                    health::evaluate(&pool, &config.health, &probes)
                        .await
                        .findings,
                );
                pool.close().await;
                checks
            }
        },
    };
    let worst = checks
        .iter()
        .map(|c| c.verdict)
        .max()
        .unwrap_or(Verdict::Ok);
    let report = Report {
        status: Verdict::overall(checks.iter().map(|c| c.verdict)),
        checks,
    };
    if output.json {
        crate::cmd::print_json(&report)?;
    } else {
        let rows: Vec<Vec<String>> = report
            .checks
            .iter()
            .map(|c| {
                vec![
                    c.name.to_owned(),
                    c.verdict.to_string(),
                    match c.advice {
                        Some(advice) => format!("{}: {advice}", c.detail),
                        None => c.detail.clone(),
                    },
                ]
            })
            .collect();
        table::print(&["CHECK", "STATUS", "DETAIL"], &rows);
        let warnings = report
            .checks
            .iter()
            .filter(|c| c.verdict == Verdict::Warn)
            .count();
        match warnings {
            0 => println!("\noverall: {}", report.status),
            1 => println!("\noverall: {} (1 warning)", report.status),
            n => println!("\noverall: {} ({n} warnings)", report.status),
        }
    }
    Ok(ExitCode::from(match worst {
        Verdict::Ok => 0,
        Verdict::Warn | Verdict::Unknown | Verdict::Degraded => 1,
        Verdict::Down => 2,
    }))
}

/// Without a database: that, and what the probes that need none can still say.
async fn database_unreachable(
    database: Finding,
    probes: &[std::sync::Arc<dyn health::Probe>],
    config: &Config,
) -> Vec<Finding> {
    let mut checks = vec![database];
    checks.extend(health::probe_all(probes, None, config.health.check_timeout).await);
    checks
}

/// Whether every migration this binary knows is applied.
pub(crate) async fn migrations(pool: &sqlx::PgPool) -> Finding {
    match docket_queue::workers::migration_status(docket_queue::pooled(pool)).await {
        Ok(status) if status.is_current() => Finding::new(
            "migrations",
            Verdict::Ok,
            format!("{} of {} applied", status.applied, status.known),
            MIGRATIONS_ADVICE,
        ),
        Ok(status) => Finding::new(
            "migrations",
            Verdict::Down,
            format!("pending: {:?}", status.pending),
            MIGRATIONS_ADVICE,
        ),
        Err(err) => Finding::new(
            "migrations",
            Verdict::Down,
            err.to_string(),
            MIGRATIONS_ADVICE,
        ),
    }
}
