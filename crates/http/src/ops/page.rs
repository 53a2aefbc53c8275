//! What the page shows: read from the same cheap queries as the health document and the
//! job API, shaped for the templates (ages in words, checks with what to do, the chart's
//! geometry).

use chrono::{DateTime, Utc};
use docket_queue::admin;
use docket_queue::health::{HealthReport, Verdict};
use docket_queue::Job;
use serde::Serialize;

use crate::ops::throughput::Minute;
use crate::state::AppState;

/// How often the page reloads itself.
pub(crate) const REFRESH_SECONDS: u32 = 10;

/// How many of each list the page shows.
const DEAD_LETTERS_SHOWN: u32 = 25;
const BATCHES_SHOWN: u32 = 8;
const CAMPAIGNS_SHOWN: u32 = 8;
const DELIVERIES_SHOWN: u32 = 15;
const SUPPRESSIONS_SHOWN: u32 = 15;

/// The main page.
#[derive(Serialize)]
pub(crate) struct Overview {
    status: &'static str,
    status_icon: &'static str,
    /// Checks at `warn`: they degrade nothing, but the header must not read a bare `ok`.
    warnings: usize,
    generated_at: String,
    refresh_seconds: u32,
    checks: Vec<CheckLine>,
    queues: Option<Vec<QueueLine>>,
    chart: Chart,
    dead_letter_total: i64,
    dead_letters: Option<Vec<DeadLetterLine>>,
    dead_letter_queues: Vec<String>,
    dead_letter_kinds: Vec<String>,
    cron: Vec<docket_queue::cron::ScheduleRow>,
    workers: Vec<WorkerLine>,
    campaigns: Option<Vec<Progress<docket_mail::campaign::CampaignStatus>>>,
    batches: Option<Vec<Progress<docket_queue::batch::BatchStatus>>>,
    deliveries: Option<Vec<docket_mail::delivery::Delivery>>,
    suppressions: Option<Vec<docket_mail::delivery::Suppression>>,
}

#[derive(Serialize)]
struct CheckLine {
    name: &'static str,
    verdict: &'static str,
    icon: &'static str,
    detail: String,
    advice: Option<&'static str>,
    #[serde(skip)]
    rank: Verdict,
}

#[derive(Serialize)]
struct QueueLine {
    name: String,
    pending: i64,
    retrying: i64,
    processing: i64,
    dead_letter: i64,
    oldest_ready_age: String,
    paused: bool,
}

/// A dead letter, and whether a replay would take it (an expired one is refused).
#[derive(Serialize)]
struct DeadLetterLine {
    #[serde(flatten)]
    job: Job,
    replayable: bool,
}

#[derive(Serialize)]
struct WorkerLine {
    id: String,
    host: String,
    queues: Vec<String>,
    heartbeat_age: String,
    live: bool,
}

/// A batch or campaign with how far along it is.
#[derive(Serialize)]
pub(crate) struct Progress<T> {
    #[serde(flatten)]
    item: T,
    done_percent: i64,
}

fn progress<T>(item: T, total: i32, remaining: i32) -> Progress<T> {
    let done = i64::from(total - remaining);
    let done_percent = if total > 0 {
        done * 100 / i64::from(total)
    } else {
        100
    };
    Progress { item, done_percent }
}

/// Seconds as a person says them: `42 s`, `7 min`, `3.5 h`.
pub(crate) fn age(seconds: f64) -> String {
    match seconds {
        s if s < 90.0 => format!("{s:.0} s"),
        s if s < 5400.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} days", s / 86400.0),
    }
}

fn icon(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Ok => "✓",
        Verdict::Warn => "⚠",
        Verdict::Unknown => "?",
        Verdict::Degraded | Verdict::Down => "✗",
    }
}

/// The checks, failing first, each with what an operator does about it: the report's own
/// findings, in the words every surface uses.
fn check_lines(report: &HealthReport) -> Vec<CheckLine> {
    let mut lines: Vec<CheckLine> = report
        .findings
        .iter()
        .map(|finding| CheckLine {
            name: finding.name,
            verdict: finding.verdict.as_str(),
            icon: icon(finding.verdict),
            detail: finding.detail.clone(),
            advice: finding.advice,
            rank: finding.verdict,
        })
        .collect();
    lines.sort_by_key(|line| std::cmp::Reverse(line.rank));
    lines
}

/// The chart: one strip per series (jobs completed, emails sent when mail runs, jobs
/// dead-lettered), each on its own scale, so that a few dead letters beside thousands of
/// completed jobs still show; the labels are the page's text, readable at any width.
#[derive(Serialize)]
struct Chart {
    width: u32,
    height: u32,
    bar_width: u32,
    completed: i64,
    dead_lettered: i64,
    emails: i64,
    show_emails: bool,
    last_minute: i64,
    first_label: String,
    last_label: String,
    series: Vec<Series>,
}

/// One strip of the chart.
#[derive(Serialize)]
struct Series {
    /// Its class and key: `completed`, `emails` or `dead`.
    key: &'static str,
    /// What it counts, as a person says it.
    name: &'static str,
    /// Its colour (the key beside its caption has the same).
    colour: &'static str,
    total: i64,
    max: i64,
    bars: Vec<Bar>,
}

#[derive(Serialize)]
struct Bar {
    x: u32,
    y: f64,
    height: f64,
    count: i64,
    label: String,
}

/// A minute with any count is never drawn thinner than this (in the strip's units).
const BAR_MIN_HEIGHT: f64 = 3.0;

fn series(
    minutes: &[Minute],
    (key, name, colour): (&'static str, &'static str, &'static str),
    count: fn(&Minute) -> i64,
    step: u32,
    height: u32,
) -> Series {
    let max = minutes.iter().map(count).max().unwrap_or(0);
    let bars = minutes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let n = count(m);
            let bar = if n > 0 && max > 0 {
                (n as f64 * f64::from(height) / max as f64).max(BAR_MIN_HEIGHT)
            } else {
                0.0
            };
            Bar {
                x: i as u32 * step,
                y: f64::from(height) - bar,
                height: bar,
                count: n,
                label: m.label.clone(),
            }
        })
        .collect();
    Series {
        key,
        name,
        colour,
        total: minutes.iter().map(count).sum(),
        max,
        bars,
    }
}

/// The chart of `minutes`; the emails strip when `mail` runs here or any email went out.
fn chart(minutes: &[Minute], mail: bool) -> Chart {
    const WIDTH: u32 = 600;
    const HEIGHT: u32 = 60;
    let step = WIDTH / minutes.len().max(1) as u32;
    let emails: i64 = minutes.iter().map(|m| m.emails).sum();
    let show_emails = mail || emails > 0;
    let mut strips = vec![series(
        minutes,
        ("completed", "jobs completed", "#1f6f43"),
        |m| m.completed,
        step,
        HEIGHT,
    )];
    if show_emails {
        strips.push(series(
            minutes,
            ("emails", "emails sent", "#1d4f91"),
            |m| m.emails,
            step,
            HEIGHT,
        ));
    }
    strips.push(series(
        minutes,
        ("dead", "jobs dead-lettered", "#a61b1b"),
        |m| m.dead_lettered,
        step,
        HEIGHT,
    ));
    Chart {
        width: WIDTH,
        height: HEIGHT,
        bar_width: step.saturating_sub(1).max(1),
        completed: minutes.iter().map(|m| m.completed).sum(),
        dead_lettered: minutes.iter().map(|m| m.dead_lettered).sum(),
        emails,
        show_emails,
        // The newest minute is still running.
        last_minute: minutes.iter().rev().nth(1).map_or(0, |m| m.completed),
        first_label: minutes.first().map(|m| m.label.clone()).unwrap_or_default(),
        last_label: minutes.last().map(|m| m.label.clone()).unwrap_or_default(),
        series: strips,
    }
}

/// Reads everything the main page shows. Each part that cannot be read shows as such; the
/// page itself always renders.
pub(crate) async fn overview(state: &AppState, now: DateTime<Utc>) -> Overview {
    let pool = &state.pool;
    let db = docket_queue::pooled(pool);
    let report = state.health.report();
    let dead_letters = admin::newest_dead_letters(db, DEAD_LETTERS_SHOWN);
    let campaigns = docket_mail::campaign::list(db, CAMPAIGNS_SHOWN);
    let batches = docket_queue::batch::list(db, BATCHES_SHOWN);
    let deliveries = docket_mail::delivery::list(
        db,
        &docket_mail::delivery::DeliveryFilter {
            status: None,
            campaign_id: None,
            to: None,
            limit: DELIVERIES_SHOWN,
        },
    );
    let suppressions = docket_mail::delivery::suppressions(db, Some(SUPPRESSIONS_SHOWN));
    let minutes = state.ops.throughput.last_hour(pool, now);
    let (report, dead_letters, campaigns, batches, deliveries, suppressions, minutes) = tokio::join!(
        report,
        dead_letters,
        campaigns,
        batches,
        deliveries,
        suppressions,
        minutes
    );

    let (status, status_icon) = (report.status.as_str(), icon(report.status));
    let queues = report.queue.as_ref().map(|snapshot| {
        snapshot
            .queues
            .iter()
            .map(|(name, q)| QueueLine {
                name: name.clone(),
                pending: q.pending,
                retrying: q.retrying,
                processing: q.processing,
                dead_letter: q.dead_letter,
                oldest_ready_age: q.oldest_ready_age_seconds.map_or("—".into(), age),
                paused: q.paused,
            })
            .collect()
    });
    let dead_letter_queues = report
        .queue
        .as_ref()
        .map(|s| {
            s.queues
                .iter()
                .filter(|(_, q)| q.dead_letter > 0)
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default();
    let dead_letters: Option<Vec<DeadLetterLine>> = dead_letters.ok().map(|jobs| {
        jobs.into_iter()
            .map(|job| DeadLetterLine {
                replayable: job.replayable(now),
                job,
            })
            .collect()
    });
    let mut dead_letter_kinds: Vec<String> = dead_letters
        .iter()
        .flatten()
        .map(|line| line.job.kind.clone())
        .collect();
    dead_letter_kinds.sort();
    dead_letter_kinds.dedup();
    Overview {
        status,
        status_icon,
        warnings: report
            .findings
            .iter()
            .filter(|f| f.verdict == Verdict::Warn)
            .count(),
        generated_at: now.format(docket_queue::health::TIME_FORMAT).to_string(),
        refresh_seconds: REFRESH_SECONDS,
        checks: check_lines(&report),
        queues,
        chart: chart(&minutes, state.mailer.is_some()),
        dead_letter_total: report.queue.as_ref().map_or(0, |s| s.total.dead_letter),
        dead_letters,
        dead_letter_queues,
        dead_letter_kinds,
        cron: report.cron.clone(),
        workers: report
            .workers
            .iter()
            .map(|w| WorkerLine {
                id: w.id.to_string(),
                host: w.host.clone(),
                queues: w.queues.clone(),
                heartbeat_age: age(w.heartbeat_age_seconds),
                live: w.live,
            })
            .collect(),
        campaigns: campaigns.ok().map(|list| {
            list.into_iter()
                .map(|c| {
                    let (total, pending) = (c.total, c.pending);
                    progress(c, total, pending)
                })
                .collect()
        }),
        batches: batches.ok().map(|list| {
            list.into_iter()
                .map(|b| {
                    let (total, remaining) = (b.total, b.remaining);
                    progress(b, total, remaining)
                })
                .collect()
        }),
        deliveries: deliveries.ok(),
        suppressions: suppressions.ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_a_person_says_them() {
        assert_eq!(age(4.2), "4 s");
        assert_eq!(age(600.0), "10 min");
        assert_eq!(age(3.0 * 3600.0), "3.0 h");
        assert_eq!(age(3.0 * 86400.0), "3.0 days");
    }

    fn minutes(at: usize, completed: i64, dead_lettered: i64, emails: i64) -> Vec<Minute> {
        (0..60)
            .map(|i| Minute {
                label: format!("{i}"),
                completed: if i == at { completed } else { 0 },
                dead_lettered: if i == at { dead_lettered } else { 0 },
                emails: if i == at { emails } else { 0 },
            })
            .collect()
    }

    #[test]
    fn each_series_scales_to_its_own_busiest_minute() {
        let chart = chart(&minutes(10, 900, 100, 0), false);
        let keys: Vec<&str> = chart.series.iter().map(|s| s.key).collect();
        assert_eq!(keys, ["completed", "dead"], "no emails strip without mail");
        for strip in &chart.series {
            let bar = &strip.bars[10];
            assert!((bar.height - 60.0).abs() < 1e-9, "{}", strip.key);
            assert_eq!(bar.y, 0.0);
            assert_eq!(strip.bars[11].height, 0.0);
        }
        assert_eq!((chart.completed, chart.dead_lettered), (900, 100));
    }

    /// One dead letter beside a thousand completed jobs is a visible bar of its own.
    #[test]
    fn a_single_dead_letter_is_visible_beside_thousands_of_jobs() {
        let mut minutes = minutes(10, 1000, 0, 0);
        minutes[20].dead_lettered = 1;
        minutes[30].dead_lettered = 50;
        let chart = chart(&minutes, false);
        let dead = chart.series.iter().find(|s| s.key == "dead").unwrap();
        assert!(
            dead.bars[20].height >= BAR_MIN_HEIGHT,
            "{}",
            dead.bars[20].height
        );
        assert_eq!(dead.max, 50);
    }

    /// Where mail runs, emails sent are counted beside jobs (what the operator thinks in).
    #[test]
    fn emails_are_counted_beside_jobs_when_mail_runs() {
        let chart = chart(&minutes(5, 3, 0, 1200), true);
        let emails = chart.series.iter().find(|s| s.key == "emails").unwrap();
        assert_eq!((emails.total, emails.max, chart.emails), (1200, 1200, 1200));
        assert!(chart.show_emails);
        assert!(chart.series.iter().any(|s| s.key == "completed"));
    }
}
