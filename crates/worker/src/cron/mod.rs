//! Cron schedules: their declaration, parsing and tick arithmetic. Pure: the scheduler
//! service (`scheduler`) and the database decide when ticks are enqueued; this module only
//! says which instants are ticks.
//!
//! # Expressions
//!
//! A 5-field crontab (`min hour day month weekday`) means what crontab(5) says, weekdays
//! `0`-`7` with `0` and `7` Sunday; it is read as the 6-field form with second 0 (its
//! numeric weekdays turned into names). The 6- and 7-field forms (seconds first, an
//! optional year last) are the `cron` crate's, whose numeric weekdays run `1`-`7` from
//! Sunday; names (`Mon-Fri`) mean the same in both. An expression that never fires
//! (30 February) is refused like a malformed one.
//!
//! # Time zones and daylight saving
//!
//! Ticks are computed in the schedule's IANA zone (default UTC), as a person reading the
//! crontab in that zone expects. On a spring-forward day a wall-clock time that does not
//! exist (02:30 in Europe/Berlin on the last Sunday of March) does not fire that day. On a
//! fall-back day each real instant whose wall-clock time matches fires once, in order: a
//! schedule whose minute or hour field is a wildcard (`*/15 * * * *`, `0 * * * *`,
//! `*/5 1 * * *`) keeps firing through the repeated hour (100 quarter-hours on New York's
//! 25-hour 2026-11-01), as crontab does; a fixed-time schedule (`30 2 * * *`, `0 0,30 1 * *
//! *`) fires at the first occurrence only. Ticks are always strictly after the instant they
//! count from, even when that instant is inside the repeated hour. The tests `a_daily_0230_*`,
//! `*_repeated_hour` and `*_fall_back_day` pin these.

pub(crate) mod scheduler;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

pub use docket_queue::cron::{CatchUp, Overlap, Schedule, CATCH_UP_MAX_DEFAULT};

/// A parsed expression in its zone.
#[derive(Clone, Debug)]
pub struct Cron {
    schedule: ::cron::Schedule,
    zone: Tz,
    /// Neither its minute nor its hour is a wildcard: on a fall-back day it fires at the
    /// first occurrence of a repeated wall-clock time only.
    fixed_time: bool,
}

/// How far ahead a tick is looked for before an expression counts as never firing.
const HORIZON_YEARS: i64 = 30;

impl Cron {
    /// Parses `schedule`'s expression in its zone, refusing what cannot work: a malformed
    /// expression, one that never fires, an unknown zone, an empty name, kind or queue.
    ///
    /// # Errors
    ///
    /// A message that names the schedule and what is wrong with it.
    pub fn of(schedule: &Schedule) -> Result<Cron, String> {
        let named = |what: String| format!("schedule {:?}: {what}", schedule.name);
        if schedule.name.trim().is_empty() {
            return Err("a schedule has an empty name".to_owned());
        }
        let job = docket_queue::NewJob::new(schedule.kind.clone(), schedule.payload.clone())
            .queue(schedule.queue.clone())
            .max_attempts(schedule.max_attempts);
        job.validate().map_err(|err| named(err.to_string()))?;
        if schedule.catch_up_max == 0 {
            return Err(named("catch_up_max must be at least 1".to_owned()));
        }
        Cron::parse(&schedule.cron, &schedule.timezone).map_err(named)
    }

    /// Parses `expr` (5, 6 or 7 fields) in the IANA zone `zone`.
    ///
    /// # Errors
    ///
    /// What is wrong: the expression, that it never fires, or the zone.
    pub fn parse(expr: &str, zone: &str) -> Result<Cron, String> {
        let crontab = match expr.trim() {
            nickname if nickname.starts_with('@') => nickname_crontab(nickname)
                .ok_or_else(|| {
                    format!(
                        "cron {expr:?} is not supported: the nicknames are @yearly (@annually), @monthly, @weekly, @daily (@midnight) and @hourly{}",
                        if nickname.eq_ignore_ascii_case("@reboot") {
                            "; @reboot has no time to run at (a schedule runs at times, not at a process's start)"
                        } else {
                            ""
                        }
                    )
                })?,
            trimmed => trimmed,
        };
        let fields: Vec<&str> = crontab.split_whitespace().collect();
        let normalised = match fields.len() {
            5 => {
                check_crontab(expr, &fields)?;
                format!(
                    "0 {} {}",
                    fields[..4].join(" "),
                    crontab_weekdays(fields[4])
                )
            }
            6 | 7 => crontab.to_owned(),
            n => {
                return Err(format!(
                    "cron {expr:?} has {}; expected 5 (minute hour day month weekday), or 6/7 with seconds first, or a nickname like @daily",
                    if n == 1 { "1 field".to_owned() } else { format!("{n} fields") }
                ))
            }
        };
        let schedule = ::cron::Schedule::from_str(&normalised).map_err(|err| {
            if fields.len() == 5 {
                // The crate's words are about the 6-field form it was given (its ranges,
                // its positions): not the expression the user wrote.
                format!(
                    "cron {expr:?} is not valid (minute hour day month weekday): {}",
                    crate_error(&err)
                )
            } else {
                format!("cron {expr:?} is not valid: {}", crate_error(&err))
            }
        })?;
        let zone: Tz = zone
            .parse()
            .map_err(|_| format!("unknown time zone {zone:?} (an IANA name like Europe/Moscow)"))?;
        // Crontab's rule: a field that starts with `*` (or is `?`) is a wildcard.
        let wildcard = |field: &str| field.starts_with('*') || field == "?";
        let fields: Vec<&str> = normalised.split_whitespace().collect();
        let fixed_time = !wildcard(fields[1]) && !wildcard(fields[2]);
        let cron = Cron {
            schedule,
            zone,
            fixed_time,
        };
        let from = Utc::now();
        match cron.next_after(from) {
            Some(next) if next < from + chrono::Duration::days(365 * HORIZON_YEARS) => Ok(cron),
            _ => Err(format!("cron {expr:?} never fires")),
        }
    }

    /// The ticks strictly after `after`, in order, each real instant once.
    fn after(&self, after: DateTime<Utc>) -> Ticks<'_> {
        use chrono::TimeZone;
        let local = after.with_timezone(&self.zone);
        // The `cron` crate walks wall-clock times. From the first occurrence of a repeated
        // time, the second occurrences of the earlier wall-clock times of that hour are
        // still ahead: start the walk one fold earlier (what is not after `after` is dropped).
        let start = match self.zone.from_local_datetime(&local.naive_local()) {
            chrono::LocalResult::Ambiguous(first, second) if first == local => {
                local - (second - first)
            }
            _ => local,
        };
        Ticks {
            walk: self.schedule.after(&start),
            after,
            fixed_time: self.fixed_time,
            first: None,
            repeats: std::collections::VecDeque::new(),
            done: false,
        }
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.after(after).next()
    }

    /// The ticks in `(after, until]`, oldest first, at most `limit` of them (the most
    /// recent ones when there are more). Walks every tick of the range: for a range of
    /// unknown length, [`Cron::newest_ticks`].
    pub fn ticks_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut ticks = std::collections::VecDeque::with_capacity(limit.min(64));
        for tick in self.after(after).take_while(|tick| *tick <= until) {
            if ticks.len() == limit {
                ticks.pop_front();
            }
            ticks.push_back(tick);
        }
        ticks.into()
    }

    /// The newest `limit` ticks in `(after, until]`, oldest first, with the work bounded
    /// by `limit`, not by how far back `after` is (an every-second schedule resumed after
    /// weeks). A walk from `after` counts up to [`COUNT_LIMIT`] ticks; when the range holds
    /// more, the newest are found by a walk that starts a little before `until`, twice as
    /// far back each time it found `limit` ticks or fewer.
    pub fn newest_ticks(&self, after: DateTime<Utc>, until: DateTime<Utc>, limit: usize) -> Newest {
        let mut walk = self.after(after).take_while(|tick| *tick <= until);
        let mut ticks = std::collections::VecDeque::with_capacity(limit.min(64));
        let mut seen = 0u64;
        for tick in walk.by_ref().take(limit + COUNT_LIMIT) {
            seen += 1;
            if ticks.len() == limit {
                ticks.pop_front();
            }
            ticks.push_back(tick);
        }
        if walk.next().is_none() {
            return Newest {
                older: seen - ticks.len() as u64,
                ticks: ticks.into(),
                counted_all: true,
            };
        }
        // The first span: `limit + 1` times the interval between the ticks after `until`.
        let interval = self
            .next_after(until)
            .and_then(|next| Some(self.next_after(next)? - next))
            .unwrap_or_default()
            .max(chrono::Duration::seconds(1));
        let mut span = interval * i32::try_from(limit + 1).unwrap_or(i32::MAX);
        loop {
            let from = until
                .checked_sub_signed(span)
                .map_or(after, |from| from.max(after));
            let ticks = self.ticks_between(from, until, limit + 1);
            if from == after || ticks.len() > limit {
                return Newest {
                    ticks: ticks[ticks.len().saturating_sub(limit)..].to_vec(),
                    // The range holds more than `seen` ticks.
                    older: seen + 1 - limit as u64,
                    counted_all: false,
                };
            }
            span = span * 2;
        }
    }
}

/// How many ticks [`Cron::newest_ticks`] counts, beyond those it returns, before it stops
/// counting and looks for the newest from the other end.
const COUNT_LIMIT: usize = 1_000;

/// What [`Cron::newest_ticks`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Newest {
    /// The newest ticks, oldest first.
    pub ticks: Vec<DateTime<Utc>>,
    /// How many older ticks it counted (all of them when `counted_all`, else a lower
    /// bound).
    pub older: u64,
    /// Whether it walked the whole range (else there are older ticks it did not count).
    pub counted_all: bool,
}

/// The ticks of a [`Cron`] after an instant, in order of real time. The `cron` crate walks
/// wall-clock times and gives both occurrences of a repeated one together (01:00 EDT,
/// 01:00 EST, 01:15 EDT, ...): first occurrences (and unambiguous times) come out in order,
/// second occurrences in order among themselves, and each waits here until the first
/// occurrences before it are out. A fixed-time schedule's second occurrences are dropped.
struct Ticks<'a> {
    walk: ::cron::ScheduleIterator<'a, Tz>,
    after: DateTime<Utc>,
    fixed_time: bool,
    /// The next first-occurrence tick, pulled ahead of `repeats`.
    first: Option<DateTime<Utc>>,
    /// Second occurrences not yet given, in order.
    repeats: std::collections::VecDeque<DateTime<Utc>>,
    done: bool,
}

impl Iterator for Ticks<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<DateTime<Utc>> {
        while self.first.is_none() && !self.done {
            let Some(tick) = self.walk.next() else {
                self.done = true;
                break;
            };
            #[cfg(test)]
            tests::WALKED.with(|walked| walked.set(walked.get() + 1));
            let second = is_second_occurrence(&tick);
            let tick = tick.with_timezone(&Utc);
            if tick <= self.after {
                continue;
            }
            if !second {
                self.first = Some(tick);
            } else if !self.fixed_time {
                self.repeats.push_back(tick);
            }
        }
        match (self.repeats.front(), self.first) {
            (Some(repeat), Some(first)) if *repeat < first => self.repeats.pop_front(),
            (_, Some(first)) => {
                self.first = None;
                Some(first)
            }
            (_, None) => self.repeats.pop_front(),
        }
    }
}

/// Whether `tick` is the second occurrence of a wall-clock time that a fall-back day
/// repeats.
fn is_second_occurrence(tick: &DateTime<Tz>) -> bool {
    use chrono::TimeZone;
    matches!(
        tick.timezone().from_local_datetime(&tick.naive_local()),
        chrono::LocalResult::Ambiguous(first, _) if first < *tick
    )
}

/// The 5-field crontab a nickname stands for (crontab(5)), or `None` for an unknown one.
fn nickname_crontab(nickname: &str) -> Option<&'static str> {
    Some(match nickname.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => return None,
    })
}

/// The `cron` crate's error, without the expression it was given (the 6-field form, not
/// the user's).
fn crate_error(err: &::cron::error::Error) -> String {
    let text = err.to_string();
    match text.split_once(": ") {
        Some((_, rest)) if text.starts_with("Invalid expression") => rest.to_owned(),
        _ => text,
    }
}

/// Checks each value of a 5-field crontab against its field's range (crontab(5)), so that
/// a mistake is said in the user's terms: `hour 25 is out of range 0-23`.
fn check_crontab(expr: &str, fields: &[&str]) -> Result<(), String> {
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    let specs: [(&str, u32, u32, &[&str]); 5] = [
        ("minute", 0, 59, &[]),
        ("hour", 0, 23, &[]),
        ("day of month", 1, 31, &[]),
        ("month", 1, 12, &MONTHS),
        ("weekday", 0, 7, &DAYS),
    ];
    for (field, (what, min, max, names)) in fields.iter().zip(specs) {
        let bad = |detail: String| {
            Err(format!(
                "cron {expr:?}: {detail} (the fields are minute 0-59, hour 0-23, day of month 1-31, month 1-12, weekday 0-7 with 0 and 7 Sunday)"
            ))
        };
        for part in field.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (part, None),
            };
            if let Some(step) = step {
                match step.parse::<u32>() {
                    Ok(step) if step >= 1 => {}
                    _ => {
                        return bad(format!(
                            "the {what} step {step:?} is not a whole number of at least 1"
                        ))
                    }
                }
            }
            if range == "*" || range == "?" {
                continue;
            }
            let ends: Vec<&str> = match range.split_once('-') {
                Some((from, to)) => vec![from, to],
                None => vec![range],
            };
            for end in ends {
                if let Ok(n) = end.parse::<u32>() {
                    if n < min || n > max {
                        return bad(format!("{what} {n} is out of range {min}-{max}"));
                    }
                } else if names.is_empty() {
                    return bad(format!("{what} {end:?} is not a number"));
                } else if !names.iter().any(|name| name.eq_ignore_ascii_case(end)) {
                    return bad(format!(
                        "{what} {end:?} is neither a number {min}-{max} nor a name like {}",
                        names[1]
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A crontab weekday field in the `cron` crate's terms: each number `0`-`7` becomes its
/// name (`0` and `7` are Sunday), so `1-5` stays Monday to Friday. A range that ends at
/// `7` (`5-7`) becomes one that ends on Saturday plus Sunday (`FRI-SAT,SUN`).
fn crontab_weekdays(field: &str) -> String {
    const NAMES: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
    let name = |n: &str| n.parse::<usize>().ok().and_then(|n| NAMES.get(n)).copied();
    field
        .split(',')
        .map(|part| {
            let (range, step) = match part.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (part, None),
            };
            let range = match range.split_once('-') {
                Some((from, "7")) if step.is_none() && name(from).is_some() => {
                    return match name(from) {
                        Some("SUN") | None => "SUN-SAT".to_owned(),
                        Some(from) => format!("{from}-SAT,SUN"),
                    };
                }
                Some((from, to)) => match (name(from), name(to)) {
                    (Some(from), Some(to)) => format!("{from}-{to}"),
                    _ => range.to_owned(),
                },
                None => name(range).map_or_else(|| range.to_owned(), str::to_owned),
            };
            match step {
                Some(step) => format!("{range}/{step}"),
                None => range,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// What a scheduler does for a schedule at `now`, given the last tick the database has
/// for it: the ticks to enqueue (oldest first), and how many due ticks it drops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// Ticks to enqueue, oldest first.
    pub enqueue: Vec<DateTime<Utc>>,
    /// Due ticks dropped by the catch-up policy (missed).
    pub missed: u64,
    /// More ticks were missed than `missed` counts: the computation stopped counting (an
    /// every-second schedule resumed after weeks), its work bounded by what it enqueues.
    pub missed_more: bool,
    /// The tick the schedule is at afterwards (the newest due tick), when any was due.
    pub last: Option<DateTime<Utc>>,
}

/// What makes a due tick on time rather than missed (see [`due`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OnTime {
    /// A tick due longer ago than this is never on time.
    pub grace: Duration,
    /// When this scheduler last looked, if that was a regular pass ago: the ticks that came
    /// due since were watched for, not missed.
    pub watched_since: Option<DateTime<Utc>>,
    /// When the schedule was last resumed: a tick due before that fell inside the pause.
    pub resumed_at: Option<DateTime<Utc>>,
}

impl OnTime {
    /// Only the newest due tick within `grace` is on time.
    pub fn within(grace: Duration) -> Self {
        OnTime {
            grace,
            ..OnTime::default()
        }
    }
}

/// Decides the due ticks of a schedule at `now`: those after `last_tick` (or after
/// `registered_at`, for a schedule that never ticked), up to `now`, through `policy`.
///
/// A due tick is on time when it is due within `grace` of `now`, not before the
/// schedule's last resume, and either it is the newest due tick or it came due since this
/// scheduler's previous pass (`watched_since`, a pass a second ago: two ticks of an
/// every-second schedule fall between passes 1.1 s apart). So the window is the interval
/// between two looks, never wider than the schedule's own interval (an older due tick
/// already has a newer one due after it) unless the scheduler was watching, and never
/// open on a pause or an outage. Every other due tick was missed (downtime, a pause, a
/// stalled process) and is the policy's: `skip` drops them, `latest` enqueues the newest
/// due tick when none is on time, `all` the newest `catch_up_max` (or every on-time tick,
/// when more). The work is bounded by what is enqueued ([`Cron::newest_ticks`]), however
/// far back `last_tick` is.
pub fn due(
    cron: &Cron,
    last_tick: DateTime<Utc>,
    now: DateTime<Utc>,
    policy: CatchUp,
    catch_up_max: u32,
    window: &OnTime,
) -> Due {
    let keep = match policy {
        CatchUp::Skip | CatchUp::Latest => 1,
        CatchUp::All => catch_up_max.max(1) as usize,
    };
    let newest = cron.newest_ticks(last_tick, now, keep);
    let Some(&last) = newest.ticks.last() else {
        return Due::default();
    };
    let cutoff = now - chrono::Duration::from_std(window.grace).unwrap_or_default();
    let eligible = |tick: DateTime<Utc>| {
        tick >= cutoff && window.resumed_at.is_none_or(|resumed| tick >= resumed)
    };
    // The ticks that came due while this scheduler watched: a few at most, as the walk
    // starts no earlier than the grace.
    let mut on_time: Vec<DateTime<Utc>> = match window.watched_since {
        Some(since) => {
            let from = since
                .max(last_tick)
                .max(cutoff - chrono::Duration::nanoseconds(1));
            let ticks = cron.ticks_between(from, now, usize::MAX);
            ticks.into_iter().filter(|tick| eligible(*tick)).collect()
        }
        None => Vec::new(),
    };
    if on_time.is_empty() && eligible(last) {
        on_time.push(last);
    }
    let enqueue = match policy {
        CatchUp::Skip => on_time,
        CatchUp::Latest if on_time.is_empty() => vec![last],
        CatchUp::Latest => on_time,
        CatchUp::All if on_time.len() > newest.ticks.len() => on_time,
        CatchUp::All => newest.ticks.clone(),
    };
    let due_ticks = newest.older + newest.ticks.len() as u64;
    Due {
        missed: due_ticks.saturating_sub(enqueue.len() as u64),
        enqueue,
        missed_more: !newest.counted_all,
        last: Some(last),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    thread_local! {
        /// How many wall-clock ticks this thread's walks pulled from the `cron` crate.
        pub(super) static WALKED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn five_and_six_field_forms_that_mean_the_same_give_the_same_ticks() {
        let five = Cron::parse("*/15 3 * * 1-5", "UTC").unwrap();
        let six = Cron::parse("0 */15 3 * * Mon-Fri", "UTC").unwrap();
        let from = utc("2026-12-01T00:00:00Z");
        let until = utc("2026-12-15T00:00:00Z");
        let ticks = five.ticks_between(from, until, 1000);
        assert_eq!(ticks, six.ticks_between(from, until, 1000));
        assert_eq!(ticks.len(), 10 * 4, "ten weekdays, four a day");
        assert_eq!(ticks[0], utc("2026-12-01T03:00:00Z"));
    }

    /// A mistake in a 5-field expression is said in the terms of what the user wrote: the
    /// field, its real range, never the internal 6-field form.
    #[test]
    fn a_crontab_mistake_is_said_in_the_crontab_s_own_terms() {
        for (expr, says) in [
            ("0 25 * * *", "hour 25 is out of range 0-23"),
            ("0 3 32 * *", "day of month 32 is out of range 1-31"),
            ("0 3 * 13 *", "month 13 is out of range 1-12"),
            ("0 3 * * 8", "weekday 8 is out of range 0-7"),
            ("0 3 * Foo *", "month \"Foo\" is neither a number"),
            ("*/0 * * * *", "minute step \"0\""),
            ("@reboot", "@reboot has no time"),
            ("@fortnightly", "nicknames are @yearly"),
            ("x", "has 1 field;"),
        ] {
            let err = Cron::parse(expr, "UTC").unwrap_err();
            assert!(err.contains(says), "{expr}: {err}");
            assert!(!err.contains("0 0 25"), "{expr}: {err}");
            assert!(!err.contains("less than 23"), "{expr}: {err}");
        }
    }

    /// The crontab nicknames mean what crontab(5) says.
    #[test]
    fn crontab_nicknames_are_their_five_field_forms() {
        let from = utc("2026-12-01T10:30:00Z");
        for (nickname, crontab) in [
            ("@yearly", "0 0 1 1 *"),
            ("@annually", "0 0 1 1 *"),
            ("@monthly", "0 0 1 * *"),
            ("@weekly", "0 0 * * 0"),
            ("@daily", "0 0 * * *"),
            ("@midnight", "0 0 * * *"),
            ("@hourly", "0 * * * *"),
            ("@DAILY", "0 0 * * *"),
        ] {
            let a = Cron::parse(nickname, "UTC").unwrap();
            let b = Cron::parse(crontab, "UTC").unwrap();
            let until = from + chrono::Duration::days(800);
            assert_eq!(
                a.ticks_between(from, until, 1000),
                b.ticks_between(from, until, 1000),
                "{nickname}"
            );
        }
        assert_eq!(
            Cron::parse("@daily", "UTC").unwrap().next_after(from),
            Some(utc("2026-12-02T00:00:00Z"))
        );
    }

    #[test]
    fn bad_expressions_zones_and_never_firing_ones_are_refused_with_the_schedule_named() {
        let with = |cron: &str, zone: &str| {
            let mut config = Schedule::new("nightly-report", cron, "report.build");
            config.timezone = zone.to_owned();
            Cron::of(&config).unwrap_err()
        };
        for (cron, zone, says) in [
            ("61 * * * *", "UTC", "minute 61 is out of range 0-59"),
            ("* * *", "UTC", "3 fields"),
            ("0 0 30 2 *", "UTC", "never fires"),
            ("0 * * * *", "Mars/Olympus", "unknown time zone"),
        ] {
            let err = with(cron, zone);
            assert!(
                err.contains("nightly-report") && err.contains(says),
                "{err}"
            );
        }
        let mut empty_kind = Schedule::new("x", "* * * * *", "");
        empty_kind.kind = String::new();
        assert!(Cron::of(&empty_kind).unwrap_err().contains("kind"));
    }

    #[test]
    fn a_daily_0230_in_berlin_does_not_fire_on_the_spring_forward_day() {
        let cron = Cron::parse("30 2 * * *", "Europe/Berlin").unwrap();
        // 2027-03-28: clocks jump from 02:00 to 03:00; 02:30 does not exist.
        let ticks =
            cron.ticks_between(utc("2027-03-27T00:00:00Z"), utc("2027-03-30T00:00:00Z"), 10);
        let berlin = |y, m, d, h, min| {
            chrono_tz::Europe::Berlin
                .with_ymd_and_hms(y, m, d, h, min, 0)
                .unwrap()
                .with_timezone(&Utc)
        };
        assert_eq!(
            ticks,
            [berlin(2027, 3, 27, 2, 30), berlin(2027, 3, 29, 2, 30)]
        );
    }

    #[test]
    fn a_daily_0230_in_berlin_fires_once_on_the_fall_back_day() {
        let cron = Cron::parse("30 2 * * *", "Europe/Berlin").unwrap();
        // 2027-10-31: clocks go back from 03:00 to 02:00; 02:30 happens twice.
        let ticks =
            cron.ticks_between(utc("2027-10-30T12:00:00Z"), utc("2027-11-01T12:00:00Z"), 10);
        assert_eq!(
            ticks,
            [utc("2027-10-31T00:30:00Z"), utc("2027-11-01T01:30:00Z")],
            "the first 02:30 (CEST, 00:30 UTC), then the next day's (CET)"
        );
        assert_eq!(
            cron.next_after(utc("2027-10-31T00:30:00Z")),
            Some(utc("2027-11-01T01:30:00Z"))
        );
    }

    /// Every tick of `cron` on the local day `date` of its zone, oldest first.
    fn local_day(cron: &Cron, zone: Tz, date: (i32, u32, u32)) -> Vec<DateTime<Utc>> {
        let (y, m, d) = date;
        let start = zone.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap();
        let end = start
            .date_naive()
            .succ_opt()
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let end = zone.from_local_datetime(&end).unwrap();
        let before = start.with_timezone(&Utc) - chrono::Duration::seconds(1);
        let until = end.with_timezone(&Utc) - chrono::Duration::seconds(1);
        cron.ticks_between(before, until, 100_000)
    }

    /// The largest gap between consecutive ticks, and that they are strictly increasing.
    fn widest_gap(ticks: &[DateTime<Utc>]) -> chrono::Duration {
        assert!(ticks.windows(2).all(|w| w[0] < w[1]), "in order, once each");
        ticks.windows(2).map(|w| w[1] - w[0]).max().unwrap()
    }

    #[test]
    fn a_quarter_hourly_schedule_keeps_firing_through_the_repeated_hour() {
        use chrono_tz::America::New_York;
        // 2026-11-01 in New York: 01:00-01:59 happens twice (EDT, then EST): 25 hours.
        let cron = Cron::parse("*/15 * * * *", "America/New_York").unwrap();
        let ticks = local_day(&cron, New_York, (2026, 11, 1));
        assert_eq!(ticks.len(), 100, "four a real hour over a 25-hour day");
        assert_eq!(widest_gap(&ticks), chrono::Duration::minutes(15));
        // Wildcard hours too: an hourly schedule fires in each real hour.
        let hourly = Cron::parse("0 * * * *", "America/New_York").unwrap();
        assert_eq!(local_day(&hourly, New_York, (2026, 11, 1)).len(), 25);
        // So does a wildcard minute inside a fixed hour (crontab's rule): 01:00-01:59 twice.
        let one_am = Cron::parse("*/15 1 * * *", "America/New_York").unwrap();
        assert_eq!(local_day(&one_am, New_York, (2026, 11, 1)).len(), 8);
    }

    #[test]
    fn an_every_minute_schedule_in_berlin_loses_no_minute_on_the_fall_back_day() {
        use chrono_tz::Europe::Berlin;
        let cron = Cron::parse("0 * * * * *", "Europe/Berlin").unwrap();
        let ticks = local_day(&cron, Berlin, (2026, 10, 25));
        assert_eq!(ticks.len(), 25 * 60);
        assert_eq!(widest_gap(&ticks), chrono::Duration::minutes(1));
    }

    #[test]
    fn fixed_time_schedules_fire_once_on_the_fall_back_day() {
        use chrono_tz::America::New_York;
        for (expr, expected) in [
            ("30 1 * * *", "2026-11-01T05:30:00Z"), // 01:30 EDT, not 01:30 EST
            ("0 0,30 1 * * *", "2026-11-01T05:00:00Z"), // 01:00 and 01:30 EDT only
        ] {
            let cron = Cron::parse(expr, "America/New_York").unwrap();
            let ticks = local_day(&cron, New_York, (2026, 11, 1));
            assert_eq!(ticks[0], utc(expected), "{expr}");
            assert!(
                ticks.iter().all(|t| *t < utc("2026-11-01T06:00:00Z")),
                "{expr}: {ticks:?}"
            );
        }
    }

    #[test]
    fn no_tick_before_the_instant_it_counts_from_inside_the_repeated_hour() {
        let cron = Cron::parse("*/15 * * * *", "America/New_York").unwrap();
        // Registered at 01:20 EST (the second 01:20): the first tick is 01:30 EST.
        let second_0120 = utc("2026-11-01T06:20:00Z");
        assert_eq!(
            cron.next_after(second_0120),
            Some(utc("2026-11-01T06:30:00Z"))
        );
        assert_eq!(
            cron.ticks_between(second_0120, utc("2026-11-01T07:00:00Z"), 10),
            [
                utc("2026-11-01T06:30:00Z"),
                utc("2026-11-01T06:45:00Z"),
                utc("2026-11-01T07:00:00Z")
            ]
        );
        // From 01:20 EDT (the first 01:20), the repeated 01:00 and 01:15 EST are still ahead.
        assert_eq!(
            cron.ticks_between(utc("2026-11-01T05:20:00Z"), utc("2026-11-01T06:15:00Z"), 10),
            [
                utc("2026-11-01T05:30:00Z"),
                utc("2026-11-01T05:45:00Z"),
                utc("2026-11-01T06:00:00Z"),
                utc("2026-11-01T06:15:00Z")
            ]
        );
        let daily = Cron::parse("30 1 * * *", "America/New_York").unwrap();
        assert_eq!(
            daily.next_after(second_0120),
            Some(utc("2026-11-02T06:30:00Z")),
            "a fixed time already had its 01:30 this day"
        );
    }

    #[test]
    fn crontab_weekdays_mean_what_crontab_says() {
        for (crontab, cron) in [
            ("1-5", "MON-FRI"),
            ("0", "SUN"),
            ("7", "SUN"),
            ("0,6", "SUN,SAT"),
            ("5-7", "FRI-SAT,SUN"),
            ("*/2", "*/2"),
            ("1-5/2", "MON-FRI/2"),
            ("Mon-Fri", "Mon-Fri"),
        ] {
            assert_eq!(crontab_weekdays(crontab), cron, "{crontab}");
        }
        // Sunday 2026-12-06: a crontab `0` fires on it, `1-5` does not.
        let sunday = utc("2026-12-06T00:00:00Z");
        let next_day = utc("2026-12-07T00:00:00Z");
        assert_eq!(
            Cron::parse("0 12 * * 0", "UTC")
                .unwrap()
                .ticks_between(sunday, next_day, 5),
            [utc("2026-12-06T12:00:00Z")]
        );
        assert!(Cron::parse("0 12 * * 1-5", "UTC")
            .unwrap()
            .ticks_between(sunday, next_day - chrono::Duration::seconds(1), 5)
            .is_empty());
    }

    #[test]
    fn catch_up_policies_after_five_missed_ticks() {
        let cron = Cron::parse("* * * * * *", "UTC").unwrap(); // every second
        let last = utc("2026-12-01T00:00:00Z");
        let now = utc("2026-12-01T00:00:05Z");
        let grace = Duration::from_millis(500);
        let tick = |s: u32| utc(&format!("2026-12-01T00:00:0{s}Z"));
        let run = |policy, max| due(&cron, last, now, policy, max, &OnTime::within(grace));
        let cases = [
            (CatchUp::Skip, 100, vec![tick(5)]),
            (CatchUp::Latest, 100, vec![tick(5)]),
            (CatchUp::All, 100, (1..=5).map(tick).collect()),
            (CatchUp::All, 2, vec![tick(4), tick(5)]),
        ];
        for (policy, max, expected) in cases {
            let due = run(policy, max);
            assert_eq!(due.enqueue, expected, "{policy:?} {max}");
            assert_eq!(due.missed, 5 - expected.len() as u64, "{policy:?} {max}");
            assert!(!due.missed_more);
            assert_eq!(due.last, Some(now));
        }
        // The on-time window is never wider than the interval: with a 3 s grace, a run
        // two seconds late finds tick 4 already followed by tick 5, so tick 4 was missed.
        let late = |policy, resumed_at| {
            let three = Duration::from_secs(3);
            let last = utc("2026-12-01T00:00:03Z");
            let window = OnTime {
                resumed_at,
                ..OnTime::within(three)
            };
            due(&cron, last, now, policy, 100, &window)
        };
        let latest = late(CatchUp::Latest, None);
        assert_eq!((latest.enqueue, latest.missed), (vec![tick(5)], 1));
        assert_eq!(late(CatchUp::Skip, None).enqueue, [tick(5)]);
        // Unless the scheduler looked 1.1 s ago (a regular pass, with its jitter): then
        // tick 4 came due while it watched, and runs whatever the policy.
        for policy in [CatchUp::Skip, CatchUp::Latest] {
            let window = OnTime {
                watched_since: Some(utc("2026-12-01T00:00:03.900Z")),
                ..OnTime::within(Duration::from_secs(3))
            };
            let last = utc("2026-12-01T00:00:03Z");
            let watched = due(&cron, last, now, policy, 100, &window);
            assert_eq!(
                (watched.enqueue, watched.missed),
                (vec![tick(4), tick(5)], 0)
            );
        }
        // A tick before the schedule's resume fell inside its pause: not on time.
        let paused = late(CatchUp::Skip, Some(utc("2026-12-01T00:00:05.100Z")));
        assert_eq!((paused.enqueue, paused.missed), (vec![], 2));
        assert_eq!(late(CatchUp::Skip, Some(tick(5))).enqueue, [tick(5)]);
        // Nothing due, nothing to do; and with no tick on time, `latest` still runs one.
        assert_eq!(
            due(&cron, now, now, CatchUp::All, 100, &OnTime::within(grace)),
            Due::default()
        );
        let hourly = Cron::parse("0 * * * *", "UTC").unwrap();
        let after_downtime = due(
            &hourly,
            last,
            utc("2026-12-01T03:30:00Z"),
            CatchUp::Latest,
            100,
            &OnTime::within(grace),
        );
        assert_eq!(
            (after_downtime.enqueue, after_downtime.missed),
            (vec![utc("2026-12-01T03:00:00Z")], 2)
        );
    }

    /// An every-second schedule resumed after 13 weeks (7.9 million missed ticks): the
    /// catch-up looks at a few hundred ticks, not at every one since the last.
    #[test]
    fn a_catch_up_after_weeks_walks_a_bounded_number_of_ticks() {
        let cron = Cron::parse("* * * * * *", "UTC").unwrap();
        let last = utc("2026-09-01T00:00:00Z");
        let now = utc("2026-12-01T00:00:00.500Z");
        for (policy, enqueued) in [
            (CatchUp::All, 100),
            (CatchUp::Latest, 1),
            (CatchUp::Skip, 1),
        ] {
            WALKED.with(|walked| walked.set(0));
            let window = OnTime {
                watched_since: Some(now - chrono::Duration::seconds(1)),
                ..OnTime::within(Duration::from_secs(3))
            };
            let due = due(&cron, last, now, policy, 100, &window);
            let walked = WALKED.with(std::cell::Cell::get);
            assert!(
                walked <= 3 * COUNT_LIMIT as u64,
                "{policy:?}: walked {walked} ticks"
            );
            assert_eq!(due.enqueue.len(), enqueued, "{policy:?}");
            assert_eq!(due.enqueue.last(), Some(&utc("2026-12-01T00:00:00Z")));
            assert!(due
                .enqueue
                .windows(2)
                .all(|w| w[1] - w[0] == chrono::Duration::seconds(1)));
            assert!(due.missed_more && due.missed > 0, "{due:?}");
        }
        // Dense ticks that stopped hours ago (every second from 09:00 to 09:59): the walk
        // starts earlier until it finds them.
        let nine = Cron::parse("* * 9 * * *", "UTC").unwrap();
        let at = |t: &str| utc(&format!("2026-12-01T{t}Z"));
        let window = OnTime::within(Duration::ZERO);
        let due = due(
            &nine,
            utc("2026-11-28T00:00:00Z"),
            at("15:00:00"),
            CatchUp::All,
            3,
            &window,
        );
        assert_eq!(
            due.enqueue,
            [at("09:59:57"), at("09:59:58"), at("09:59:59")]
        );
        assert!(
            due.missed >= COUNT_LIMIT as u64 && due.missed_more,
            "{due:?}"
        );
    }

    /// Through the fall-back night, `newest_ticks` gives what a walk over every tick gives.
    #[test]
    fn newest_ticks_agree_with_the_full_walk_across_the_repeated_hour() {
        let from = utc("2026-11-01T03:00:00Z");
        for expr in ["*/15 * * * *", "0 * * * *", "30 1 * * *", "*/5 1 * * *"] {
            let cron = Cron::parse(expr, "America/New_York").unwrap();
            for minutes in (0..=300).step_by(7) {
                let until = from + chrono::Duration::minutes(minutes);
                let all = cron.ticks_between(from, until, 10_000);
                for limit in [1, 3] {
                    let newest = cron.newest_ticks(from, until, limit);
                    assert_eq!(
                        newest.ticks,
                        all[all.len().saturating_sub(limit)..],
                        "{expr} {until}"
                    );
                    if newest.counted_all {
                        assert_eq!(newest.older as usize + newest.ticks.len(), all.len());
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Parsing and next-tick computation never panic, whatever the input.
        #[test]
        fn parsing_and_ticks_never_panic(expr in "[0-9*/,\\-A-Za-z? ]{0,40}", zone in "[A-Za-z/_]{0,20}", offset in 0i64..4_000_000_000) {
            if let Ok(cron) = Cron::parse(&expr, &zone) {
                let from = DateTime::<Utc>::from_timestamp(offset, 0).unwrap();
                let _ = cron.next_after(from);
                let _ = cron.ticks_between(from, from + chrono::Duration::hours(1), 10);
            }
        }

        /// Crontab-shaped input (five fields of plausible tokens) never panics either.
        #[test]
        fn crontab_shaped_input_never_panics(fields in proptest::collection::vec("(\\*|[0-9]{1,2}|[0-9]{1,2}-[0-9]{1,2}|\\*/[0-9]{1,2}|[0-9]{1,2},[0-9]{1,2})", 5..=7)) {
            let expr = fields.join(" ");
            if let Ok(cron) = Cron::parse(&expr, "Europe/Moscow") {
                let _ = cron.ticks_between(Utc::now(), Utc::now() + chrono::Duration::days(2), 100);
            }
        }
    }
}
