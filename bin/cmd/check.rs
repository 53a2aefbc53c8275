//! `docket check [--json]`: the operator's health report. Exit 0 when everything is ok,
//! 1 when something needs a look (warn), 2 when something is failing, so that cron and
//! monitoring systems can act on the code alone.

use std::process::ExitCode;

use docket_http::host::{self, Item, Verdict};
use docket_queue::health::{self, Check};
use serde::Serialize;

use crate::cli::OutputArgs;
use crate::config::Config;
use crate::table;

#[derive(Serialize)]
struct Report {
    status: Verdict,
    checks: Vec<Item>,
}

pub(crate) async fn run(config: &Config, output: OutputArgs) -> anyhow::Result<ExitCode> {
    let mut checks = Vec::new();
    match config.require_database() {
        Err(err) => checks.push(Item {
            name: "database",
            status: Verdict::Fail,
            detail: err.to_string(),
        }),
        Ok(url) => match crate::cmd::connect(url).await {
            Err(err) => checks.push(Item {
                name: "database",
                status: Verdict::Fail,
                detail: format!("{err:#}"),
            }),
            Ok(pool) => {
                database_checks(&pool, config, &mut checks).await;
                pool.close().await;
            }
        },
    }
    checks.extend(host::checks(&config.check));
    let status = checks.iter().map(|c| c.status).max().unwrap_or(Verdict::Ok);
    let report = Report { status, checks };
    if output.json {
        crate::cmd::print_json(&report)?;
    } else {
        let rows: Vec<Vec<String>> = report
            .checks
            .iter()
            .map(|c| {
                vec![
                    c.name.to_owned(),
                    format!("{:?}", c.status).to_lowercase(),
                    c.detail.clone(),
                ]
            })
            .collect();
        table::print(&["CHECK", "STATUS", "DETAIL"], &rows);
        println!("\noverall: {}", format!("{status:?}").to_lowercase());
    }
    Ok(ExitCode::from(match status {
        Verdict::Ok => 0,
        Verdict::Warn => 1,
        Verdict::Fail => 2,
    }))
}

async fn database_checks(pool: &sqlx::PgPool, config: &Config, checks: &mut Vec<Item>) {
    match docket_queue::workers::migration_status(pool).await {
        Ok(status) if status.is_current() => checks.push(Item {
            name: "migrations",
            status: Verdict::Ok,
            detail: format!("{} of {} applied", status.applied, status.known),
        }),
        Ok(status) => checks.push(Item {
            name: "migrations",
            status: Verdict::Fail,
            detail: format!("pending: {:?}; run `docket migrate`", status.pending),
        }),
        Err(err) => checks.push(Item {
            name: "migrations",
            status: Verdict::Fail,
            detail: err.to_string(),
        }),
    }
    let report = health::evaluate(pool, &config.health).await;
    let verdict = |check: Check| match check {
        Check::Ok => Verdict::Ok,
        Check::Warn | Check::Unknown | Check::Degraded => Verdict::Warn,
        Check::Down => Verdict::Fail,
    };
    checks.push(Item {
        name: "database",
        status: verdict(report.checks.database),
        detail: "answers".into(),
    });
    let Some(snapshot) = &report.queue else {
        return;
    };
    let live = report.workers.iter().filter(|w| w.live).count();
    checks.push(Item {
        name: "workers",
        status: verdict(report.checks.workers),
        detail: format!("{live} live of {} registered", report.workers.len()),
    });
    checks.push(Item {
        name: "backlog",
        status: verdict(report.checks.backlog),
        detail: match snapshot.total.oldest_ready_age_seconds {
            Some(age) => format!(
                "{} ready or waiting; oldest ready {age:.0} s (threshold {} s)",
                snapshot.total.pending + snapshot.total.retrying,
                config.health.backlog_threshold.as_secs()
            ),
            None => "nothing ready".into(),
        },
    });
    checks.push(Item {
        name: "dead_letter",
        status: verdict(report.checks.dead_letter),
        detail: format!("{} dead letters", snapshot.total.dead_letter),
    });
    checks.push(Item {
        name: "unhandled_kinds",
        status: verdict(report.checks.unhandled_kinds),
        detail: if report.unhandled_kinds.is_empty() {
            "every ready kind has a live worker".into()
        } else {
            let names: Vec<String> = report
                .unhandled_kinds
                .iter()
                .map(|u| format!("{}/{}", u.queue, u.kind))
                .collect();
            format!("no live worker runs {}", names.join(", "))
        },
    });
    checks.push(Item {
        name: "cron",
        status: verdict(report.checks.cron),
        detail: match report.cron.len() {
            0 => "no schedules".into(),
            n if report.checks.cron == Check::Degraded => {
                format!(
                    "a due tick of {n} schedules is over a minute late (is any scheduler running?)"
                )
            }
            n => format!("{n} schedules on time"),
        },
    });
}
