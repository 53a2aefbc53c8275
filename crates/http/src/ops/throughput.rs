//! The page's throughput chart: jobs completed and dead-lettered, and emails the relay
//! took, per minute over the last hour, kept in memory and brought up to date when the page is viewed. Each view reads
//! only the jobs that finished and the emails sent since the previous one (index ranges on
//! `jobs_finished` and `mail_deliveries_sent`),
//! so the chart costs the database nothing while nobody looks and never scans the table.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::Mutex;

/// The chart's span, in minutes.
pub(crate) const MINUTES: i64 = 60;

/// Jobs that finish in a transaction that commits later than this after its
/// `finished_at` are missed; each view reads up to this long ago.
const SETTLE: Duration = Duration::seconds(2);

/// The per-minute counts read so far, and how far they reach.
#[derive(Default)]
pub(crate) struct Throughput {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    read_until: Option<DateTime<Utc>>,
    minutes: BTreeMap<DateTime<Utc>, Counts>,
}

/// One minute's counts.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    completed: i64,
    dead_lettered: i64,
    emails: i64,
}

/// One minute's bars.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Minute {
    /// `HH:MM` (UTC).
    pub(crate) label: String,
    pub(crate) completed: i64,
    pub(crate) dead_lettered: i64,
    /// Emails the relay took.
    pub(crate) emails: i64,
}

impl Throughput {
    /// The last hour, minute by minute, oldest first; the minutes read so far when the
    /// database does not answer.
    pub(crate) async fn last_hour(&self, pool: &PgPool, now: DateTime<Utc>) -> Vec<Minute> {
        let mut state = self.state.lock().await;
        let this_minute = now.duration_trunc(Duration::minutes(1)).unwrap_or(now);
        let first_minute = this_minute - Duration::minutes(MINUTES - 1);
        let until = now - SETTLE;
        let since = state
            .read_until
            .map_or(first_minute, |read| read.max(first_minute));
        if since < until {
            let (jobs, emails) = tokio::join!(
                docket_queue::admin::finished_per_minute(docket_queue::pooled(pool), since, until),
                docket_mail::delivery::sent_per_minute(docket_queue::pooled(pool), since, until)
            );
            match (jobs, emails) {
                (Ok(jobs), Ok(emails)) => {
                    for row in jobs {
                        let counts = state.minutes.entry(row.minute).or_default();
                        counts.completed += row.completed;
                        counts.dead_lettered += row.dead_lettered;
                    }
                    for (minute, sent) in emails {
                        state.minutes.entry(minute).or_default().emails += sent;
                    }
                    state.read_until = Some(until);
                }
                (Err(err), _) => tracing::debug!(error = %err, "throughput not read"),
                (_, Err(err)) => tracing::debug!(error = %err, "emails sent not read"),
            }
        }
        state.minutes.retain(|minute, _| *minute >= first_minute);
        (0..MINUTES)
            .map(|i| {
                let minute = first_minute + Duration::minutes(i);
                let counts = state.minutes.get(&minute).copied().unwrap_or_default();
                Minute {
                    label: minute.format("%H:%M").to_string(),
                    completed: counts.completed,
                    dead_lettered: counts.dead_lettered,
                    emails: counts.emails,
                }
            })
            .collect()
    }
}
