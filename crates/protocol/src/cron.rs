//! Cron ticks as a model: one every-second schedule in `docket.schedules` and
//! `docket.schedule_ticks`, several schedulers (every process runs one, no leader), an
//! operator who pauses and resumes it, and time. A scheduler's pass is two steps, as in
//! `crates/worker/src/scheduler.rs`: the unlocked read of every schedule's state (with the
//! pass's `now`), then one transaction that locks the row, re-reads it, decides the due
//! ticks with the scheduler's own function (`cron::due`, called here as it is), calls
//! `docket.enqueue_tick` for each and `schedule_advance`. Any other action may come
//! between the two; a pass whose transaction fails changes nothing.
//!
//! Time counts in half seconds: ticks fall on whole seconds, an operator acts between
//! them (a pause or a resume never lands on the very instant of a tick).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use docket_worker::cron::{due, CatchUp, Cron, OnTime};

use crate::explore::{Goal, Model};

/// The scheduler's on-time window (`scheduler::ON_TIME`).
const ON_TIME: Duration = Duration::from_secs(3);

/// A pass following the previous one within this long watched the ticks between
/// (`scheduler::WATCHED_GAP`).
const WATCHED_GAP_UNITS: u8 = 4;

/// One time unit: half a second.
const UNIT_MS: i64 = 500;

/// What a scheduler read without a lock, and when: the pass's `now`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Read {
    /// The pass's `now`.
    pub now: u8,
    /// When this scheduler's previous pass looked, when that was a regular pass ago.
    pub watched_since: Option<u8>,
    /// The stored state as read (used only when the lock's re-read is removed).
    pub last_tick: Option<u8>,
    /// The pause as read (used only when the lock's re-read is removed).
    pub paused: bool,
}

/// One scheduler process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scheduler {
    /// `last_pass`: the `now` of its previous pass.
    pub last_pass: Option<u8>,
    /// A pass between its read and its transaction.
    pub pending: Option<Read>,
}

/// The schedule's row, its recorded ticks, the jobs made, the schedulers and the clock.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ticks {
    /// The clock, in half seconds.
    pub now: u8,
    /// `paused`.
    pub paused: bool,
    /// `last_tick_at`.
    pub last_tick: Option<u8>,
    /// `resumed_at`.
    pub resumed_at: Option<u8>,
    /// `docket.schedule_ticks`: one bit per time unit.
    pub recorded: u32,
    /// Jobs enqueued per tick (by time unit).
    pub jobs: Vec<u8>,
    /// Ghost: the ticks that came due while the schedule was paused.
    pub paused_at: u32,
    /// The schedulers.
    pub schedulers: Vec<Scheduler>,
}

/// One step.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Half a second passes.
    Time,
    /// `cron::set_paused(true)`.
    Pause,
    /// `cron::set_paused(false)`: records `resumed_at` when it was paused.
    Resume,
    /// `Scheduler::run_once` up to its unlocked read (`cron::states`).
    Read(u8),
    /// `Scheduler::pass`: the transaction.
    Pass(u8),
    /// The transaction fails (a lost connection, a PostgreSQL restart): rolled back.
    PassFails(u8),
}

/// The rules a mutation test removes; `TODAY` is today's code.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Exactly once: `docket.enqueue_tick` refuses a tick at or before `last_tick_at` or
    /// already in `schedule_ticks`, and the pass decides from `last_tick_at` as re-read
    /// under the row's lock (two layers: either alone keeps a tick to one job).
    pub tick_once: bool,
    /// The pause is re-read under the row's lock, and `docket.enqueue_tick` refuses a
    /// paused schedule (again two layers).
    pub pause_rechecked: bool,
}

impl Rules {
    /// Today's code.
    pub const TODAY: Rules = Rules {
        tick_once: true,
        pause_rechecked: true,
    };
}

/// The bounds, the policy and the rules.
pub struct CronModel {
    /// How many schedulers.
    pub schedulers: usize,
    /// The last time unit (ticks every two units, from unit 2; the last unit falls between
    /// ticks, so that an operator can still resume at the end).
    pub until: u8,
    /// The schedule's policy.
    pub catch_up: CatchUp,
    /// The rules (`TODAY`: today's code).
    pub rules: Rules,
    cron: Cron,
    base: DateTime<Utc>,
    /// `decide`'s answers: few distinct questions, each asked many times.
    decided: Mutex<HashMap<Question, Decision>>,
}

/// What `decide` is asked: the read, the last tick and the last resume.
type Question = (Read, Option<u8>, Option<u8>);
/// Its answer: the ticks to enqueue, and the newest due tick.
type Decision = (Vec<u8>, Option<u8>);

impl CronModel {
    /// `schedulers` schedulers, time up to `seconds`, the policy `catch_up`.
    pub fn new(schedulers: usize, seconds: u8, catch_up: CatchUp, rules: Rules) -> CronModel {
        CronModel {
            schedulers,
            until: seconds * 2 + 1,
            catch_up,
            rules,
            cron: Cron::parse("* * * * * *", "UTC").expect("an every-second schedule"),
            base: "2026-12-01T10:00:00Z".parse().expect("a time"),
            decided: Mutex::new(HashMap::new()),
        }
    }

    fn at(&self, unit: u8) -> DateTime<Utc> {
        self.base + chrono::Duration::milliseconds(i64::from(unit) * UNIT_MS)
    }

    fn unit(&self, at: DateTime<Utc>) -> u8 {
        ((at - self.base).num_milliseconds() / UNIT_MS) as u8
    }

    /// The due ticks the pass decides, as `Scheduler::pass` computes them.
    fn decide(&self, read: &Read, last_tick: Option<u8>, resumed_at: Option<u8>) -> Decision {
        let question = (read.clone(), last_tick, resumed_at);
        let mut decided = self.decided.lock().unwrap_or_else(|e| e.into_inner());
        decided
            .entry(question)
            .or_insert_with(|| self.decide_now(read, last_tick, resumed_at))
            .clone()
    }

    fn decide_now(&self, read: &Read, last_tick: Option<u8>, resumed_at: Option<u8>) -> Decision {
        // `registered_at` is unit 0.
        let from = self.at(last_tick.unwrap_or(0));
        let window = OnTime {
            grace: ON_TIME,
            watched_since: read.watched_since.map(|u| self.at(u)),
            resumed_at: resumed_at.map(|u| self.at(u)),
        };
        let decided = due(
            &self.cron,
            from,
            self.at(read.now),
            self.catch_up,
            100,
            &window,
        );
        let enqueue = decided.enqueue.iter().map(|t| self.unit(*t)).collect();
        (enqueue, decided.last.map(|t| self.unit(t)))
    }
}

impl Model for CronModel {
    type State = Ticks;
    type Action = Action;

    fn init(&self) -> Vec<Ticks> {
        vec![Ticks {
            now: 0,
            paused: false,
            last_tick: None,
            resumed_at: None,
            recorded: 0,
            jobs: vec![0; self.until as usize + 1],
            paused_at: 0,
            schedulers: vec![
                Scheduler {
                    last_pass: None,
                    pending: None,
                };
                self.schedulers
            ],
        }]
    }

    fn actions(&self, s: &Ticks, out: &mut Vec<Action>) {
        out.push(Action::Time);
        if s.now % 2 == 1 {
            out.push(Action::Pause);
            out.push(Action::Resume);
        }
        for (i, scheduler) in s.schedulers.iter().enumerate() {
            let i = i as u8;
            if scheduler.pending.is_none() {
                out.push(Action::Read(i));
            } else {
                out.push(Action::Pass(i));
                out.push(Action::PassFails(i));
            }
        }
    }

    fn next(&self, s: &Ticks, action: &Action) -> Option<Result<Ticks, String>> {
        let mut n = s.clone();
        match action {
            Action::Time => {
                if n.now >= self.until {
                    return None;
                }
                n.now += 1;
                if n.paused && n.now % 2 == 0 {
                    n.paused_at |= 1 << n.now;
                }
            }
            Action::Pause => {
                if n.paused {
                    return None;
                }
                n.paused = true;
            }
            // `schedule_set_paused`: `resumed_at = now()` when it was paused.
            Action::Resume => {
                if !n.paused {
                    return None;
                }
                n.paused = false;
                n.resumed_at = Some(n.now);
            }
            // `run_once`: `now`, `last_pass.replace(now)`, `watched_since`, then
            // `cron::states`; a paused schedule or one with nothing due only records its
            // next tick (not modelled): the pass ends there.
            Action::Read(i) => {
                let now = n.now;
                let scheduler = &mut n.schedulers[*i as usize];
                let previous = scheduler.last_pass.replace(now);
                let watched_since = previous.filter(|p| *p < now && now - *p <= WATCHED_GAP_UNITS);
                let from = s.last_tick.unwrap_or(0);
                let is_due = self
                    .cron
                    .next_after(self.at(from))
                    .is_some_and(|tick| tick <= self.at(now));
                if !s.paused && is_due {
                    scheduler.pending = Some(Read {
                        now,
                        watched_since,
                        last_tick: s.last_tick,
                        paused: s.paused,
                    });
                }
            }
            Action::PassFails(i) => {
                n.schedulers[*i as usize].pending.take()?;
            }
            // `Scheduler::pass`: lock the row (`cron::lock_state`), stop if paused,
            // decide (`cron::due`), `enqueue_tick` each, `advance`, commit.
            Action::Pass(i) => {
                let read = n.schedulers[*i as usize].pending.take()?;
                let rules = self.rules;
                // Without a rule's layers the pass works from what it read unlocked.
                let paused = if rules.pause_rechecked {
                    n.paused
                } else {
                    read.paused
                };
                let last_tick = if rules.tick_once {
                    n.last_tick
                } else {
                    read.last_tick
                };
                if paused {
                    return Some(Ok(n));
                }
                let (enqueue, last) = self.decide(&read, last_tick, n.resumed_at);
                for tick in enqueue {
                    // `docket.enqueue_tick`: the row (not paused, past `last_tick_at`), then
                    // `insert into schedule_ticks ... on conflict do nothing`.
                    let past = n.last_tick.is_none_or(|last| last < tick);
                    if rules.tick_once && (!past || n.recorded & (1 << tick) != 0) {
                        continue;
                    }
                    if rules.pause_rechecked && n.paused {
                        continue;
                    }
                    if n.paused {
                        return Some(Err(format!(
                            "no tick is enqueued while its schedule is paused: tick at {}s",
                            tick as f64 / 2.0
                        )));
                    }
                    n.recorded |= 1 << tick;
                    n.jobs[tick as usize] = n.jobs[tick as usize].saturating_add(1);
                    n.last_tick = Some(tick);
                }
                // `schedule_advance`: never back, never while paused.
                if !n.paused {
                    n.last_tick = n.last_tick.max(last);
                }
            }
        }
        Some(Ok(n))
    }

    fn invariant(&self, s: &Ticks) -> Result<(), String> {
        for (tick, &count) in s.jobs.iter().enumerate() {
            if count > 1 {
                return Err(format!(
                    "a tick is enqueued at most once: tick at {}s has {count} jobs",
                    tick as f64 / 2.0
                ));
            }
            if count > 0 && self.catch_up == CatchUp::Skip && s.paused_at & (1 << tick) != 0 {
                return Err(format!(
                    "with catch_up = \"skip\", no tick that came due inside a pause runs: tick at {}s",
                    tick as f64 / 2.0
                ));
            }
        }
        Ok(())
    }

    fn goals(&self) -> Vec<Goal<Self>> {
        if self.catch_up != CatchUp::All {
            return Vec::new();
        }
        vec![Goal {
            name: "with catch_up = \"all\", every tick due so far is enqueued once schedulers run and the schedule is resumed",
            reached: |_, s| (2..=s.now).step_by(2).all(|tick| s.jobs[tick as usize] == 1),
            allowed: |a| !matches!(a, Action::Pause | Action::PassFails(_)),
        }]
    }

    fn show(&self, s: &Ticks) -> String {
        let mut line = format!(
            "t={}s{} last_tick={:?} jobs@",
            s.now as f64 / 2.0,
            if s.paused { " paused" } else { "" },
            s.last_tick.map(|t| t as f64 / 2.0)
        );
        for (tick, &count) in s.jobs.iter().enumerate() {
            if count > 0 {
                line.push_str(&format!("{}s×{count} ", tick as f64 / 2.0));
            }
        }
        for (i, scheduler) in s.schedulers.iter().enumerate() {
            if let Some(read) = &scheduler.pending {
                line.push_str(&format!("| s{i} read at {}s ", read.now as f64 / 2.0));
            }
        }
        line
    }
}
