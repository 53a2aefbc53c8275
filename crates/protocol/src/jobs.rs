//! The job protocol as a model: the rows of `docket.jobs` and `docket.workers` (the
//! database side) and, for each worker process, its lease, the claims in flight, the runs
//! it holds and its completer queue (the process side). Each action is one statement or
//! one decision of the code, named in its comment; faults (a crash, a stall, a lost reply,
//! a failed heartbeat) are actions too.
//!
//! # Time
//!
//! Time is not a number here. Each instant that matters (the send of the heartbeat that
//! last confirmed the lease, the previous term's, a heartbeat in flight, the lease stamped
//! in the worker's row) has a [`Phase`]: well within the lease, within the release margin
//! (`must_release`: an interval, its jitter and the stop grace before the lease ends), or a
//! lease or more ago. Time passing ages one instant by one phase, never a later instant
//! past an earlier one. A running process's heartbeat checks every interval, so its own
//! lease cannot age past the margin while held unless the process is stalled (a stall is
//! the only way to jump the check). A job waiting for its `run_at` or its `expires_at`
//! has a flag that time sets.

use std::fmt::Write as _;

use crate::explore::{Goal, Model};

/// How long ago an instant was, measured against the lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Less than the lease minus the release margin ago.
    Fresh,
    /// Within the release margin: a heartbeat that fails now releases
    /// (`lease::must_release`).
    Near,
    /// A lease or more ago: `lease_had_gap`, and a lease stamped then has lapsed.
    Gap,
}

impl Phase {
    /// The next phase; without heartbeat faults nothing tells `Near` from `Fresh`.
    fn aged(self, scope: &Scope) -> Option<Phase> {
        match self {
            Phase::Fresh if !scope.beat_faults => Some(Phase::Gap),
            _ => self.older(),
        }
    }

    fn older(self) -> Option<Phase> {
        match self {
            Phase::Fresh => Some(Phase::Near),
            Phase::Near => Some(Phase::Gap),
            Phase::Gap => None,
        }
    }
}

/// A claim's fencing token (`ClaimRequest::new_token`): only equality matters, so the
/// model renumbers them in order of appearance.
pub type Token = u8;

/// A job row's state (`docket.job_state`), and a slot not enqueued yet or deduplicated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Not enqueued yet.
    Absent,
    /// Its enqueue found a live job holding its unique key and returned that one.
    Deduplicated,
    /// `pending`: waiting for its first attempt.
    Pending,
    /// `retrying`: failed (or handed back after a failure), waiting for another.
    Retrying,
    /// `processing`: claimed by a worker.
    Processing,
    /// `completed`.
    Completed,
    /// `dead_letter`.
    DeadLetter,
    /// `cancelled`.
    Cancelled,
}

impl State {
    fn is_final(self) -> bool {
        matches!(
            self,
            State::Completed | State::DeadLetter | State::Cancelled
        )
    }

    fn is_live(self) -> bool {
        matches!(self, State::Pending | State::Retrying | State::Processing)
    }

    fn is_waiting(self) -> bool {
        matches!(self, State::Pending | State::Retrying)
    }
}

/// One job row.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Job {
    /// `state`.
    pub state: State,
    /// `attempt`.
    pub attempt: u8,
    /// `locked_by` and `lease_token`.
    pub holder: Option<(u8, Token)>,
    /// `cancel_requested_at is not null`.
    pub cancel_requested: bool,
    /// `run_at <= now()`.
    pub due: bool,
    /// `expires_at <= now()`.
    pub expired: bool,
    /// `dead_letter_reason = 'expired'` (the other reasons are not told apart).
    pub expired_reason: bool,
    /// Ghost: an operator cancelled the job and has not replayed it since.
    pub operator_cancelled: bool,
}

/// What a handler's run ended with, on its way to the completer (`Outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Out {
    /// `Outcome::Complete`.
    Complete,
    /// A failure (a returned error, a panic, a timeout): `Outcome::Retry` with a backoff.
    Retry,
    /// A permanent failure: `Outcome::DeadLetter`.
    DeadLetter,
    /// `Outcome::Snooze` with a delay.
    Snooze,
    /// `Outcome::Snooze` with no delay: a hand-back (`Ended::Released`).
    HandBack,
    /// An operator cancelled it.
    Cancel,
}

/// Why a run's stop switch fired (`StopReason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stop {
    /// An operator cancelled it.
    Cancel,
    /// This worker lost its lease, or no longer holds the run's claim.
    Release,
}

/// Where a held run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Claimed ahead, waiting in the producer for a slot (prefetch).
    Waiting,
    /// Its handler runs in a slot.
    Running,
    /// Ended: its outcome is in the completer's queue; the holding ends when it is written.
    Ended(Out),
}

/// A run: a job and the token of the claim that handed it to this worker (`RunId`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Run {
    /// The job (its slot).
    pub job: u8,
    /// The claim's token.
    pub token: Token,
    /// The lease term it started in, counted back from the current one (0: this term,
    /// 1: the previous, 2: older).
    pub term: u8,
    /// Where it is.
    pub stage: Stage,
    /// Its stop switch: fired, and why.
    pub stop: Option<Stop>,
}

impl Run {
    /// `StopSwitch::is_live`.
    fn is_live(&self) -> bool {
        self.stop.is_none() && !matches!(self.stage, Stage::Ended(_))
    }
}

/// A worker process's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Process {
    /// Running.
    Running,
    /// Stopped (SIGSTOP, a paused VM, a starved CPU): takes no step, time passes freely.
    Stalled,
    /// Gone without a word (its row stays until the rescuer's turn).
    Crashed,
    /// Shut down and deregistered.
    Exited,
}

/// A heartbeat sent whose reply has not been read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Beat {
    /// When it was sent.
    pub sent: Phase,
    /// Whether the database ran it (false: lost before it got there; it can only fail).
    pub reached: bool,
    /// `Renewal::lapsed`, as the database answered.
    pub lapsed: bool,
}

/// A claim whose statement committed and whose reply has not been read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Claim {
    /// The claim's token.
    pub token: Token,
    /// The jobs it took.
    pub jobs: Vec<u8>,
    /// Every run was released since it was sent (`ClaimGuard::adopt`).
    pub released_since: bool,
}

/// A reconciler pass between its two reads and its decisions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reading {
    /// `holdings.runs()`, taken before the database is asked.
    pub running: Vec<(u8, Token)>,
    /// `held_by`: job, token, cancel requested.
    pub held: Vec<(u8, Token, bool)>,
}

/// One worker: its row in `docket.workers` and its process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Worker {
    /// The process.
    pub process: Process,
    /// Shutting down: its producers claim nothing more.
    pub shutting_down: bool,
    /// Its row: `None` when deleted (deregistered); the lease stamped in it.
    pub row: Option<Phase>,
    /// `Lease`: given up or not, and its current and previous terms' confirmed sends.
    pub held: bool,
    /// The current term's last confirmed heartbeat send (`confirmed_sent_at`).
    pub current: Phase,
    /// The previous term's (`LeaseState::previous`).
    pub previous: Option<Phase>,
    /// A heartbeat in flight.
    pub beat: Option<Beat>,
    /// A claim in flight (one producer: at most one).
    pub claim: Option<Claim>,
    /// The runs it holds, from their claim until their outcome is written.
    pub runs: Vec<Run>,
    /// `Holdings`' entries: the key each run is held under, with the run (job, token).
    pub map: Vec<(u8, Token)>,
    /// A reconciler pass between its reads and its decisions.
    pub reading: Option<Reading>,
}

/// The whole system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct System {
    /// `docket.jobs`, one row per slot.
    pub jobs: Vec<Job>,
    /// The workers.
    pub workers: Vec<Worker>,
}

/// Which instant of a worker time ages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Instant {
    /// The lease stamped in its row.
    Row,
    /// The current term's last confirmed heartbeat send.
    Current,
    /// The previous term's.
    Previous,
    /// The heartbeat in flight's send.
    Beat,
}

/// One step. Workers (`w`) and jobs by number; a run by its job and token. Each variant
/// names the statement or decision of the code it mirrors (in full at its arm in
/// [`Jobs`]'s `next`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // the fields are the worker, job, token and outcome named above
pub enum Action {
    /// `enqueue` (`docket.enqueue`, unique key: `on conflict do nothing`).
    Enqueue(u8),
    /// `admin::cancel` (`job_cancel`).
    Cancel(u8),
    /// `admin::replay` (`job_replay`).
    Replay(u8),
    /// `maintenance::expire` (`job_expire_ready`).
    ExpireSweep,
    /// `maintenance::rescue_lapsed` (`job_rescue_lapsed`).
    Rescue,
    /// Time reaches a waiting job's `run_at`.
    Due(u8),
    /// Time passes a job's `expires_at`.
    Expires(u8),
    /// `Producer::claim_into`: `begin_claim`, then `claim` (`job_claim`) commits.
    Claim { w: u8, jobs: Vec<u8> },
    /// The claim's reply: `ClaimGuard::adopt` and the dispatch to slots or prefetch.
    ClaimReply(u8),
    /// Fault: the claim committed, its reply was lost (the guard is dropped).
    ClaimReplyLost(u8),
    /// `Producer::run`'s turn over its prefetched jobs.
    ProducerTurn(u8),
    /// The handler returns (`Ended::Returned`, a panic or a timeout as `Retry`).
    Finish {
        w: u8,
        job: u8,
        token: Token,
        out: Out,
    },
    /// A stopped run ends after its grace (`Ended::CancelledByOperator`, `Released`).
    StopEnds { w: u8, job: u8, token: Token },
    /// `WhileLeaseHeld` ends a run whose term's lease is not proven.
    LeaseStops { w: u8, job: u8, token: Token },
    /// `Completer::flush` → `apply_outcomes` (`job_set_outcome_many`); `reply_lost`: a
    /// fault, the write committed and is written again.
    Write {
        w: u8,
        job: u8,
        token: Token,
        reply_lost: bool,
    },
    /// `Reconciler::reconcile`: `holdings.runs()`, then `held_by`.
    ReconcileRead(u8),
    /// `Reconciler::reconcile`: stop, cancel, hand back.
    ReconcileAct(u8),
    /// `Heartbeat::run_once` up to `worker_heartbeat`; `reached: false`: a fault, the
    /// statement never got to the database.
    BeatSend { w: u8, reached: bool },
    /// `Heartbeat::run_once` after a reply.
    BeatReply(u8),
    /// Fault: the heartbeat failed or timed out (`must_release`).
    BeatFails(u8),
    /// Time: one instant of a worker ages by a phase.
    Age { w: u8, instant: Instant },
    /// Fault: the process stops (SIGSTOP, a paused VM, a starved CPU).
    Stall(u8),
    /// The stopped process goes on.
    Wake(u8),
    /// Fault: the process is killed.
    Crash(u8),
    /// `Started::shutdown` begins.
    ShutdownBegin(u8),
    /// The shutdown deadline: `hard_stop`.
    HardStop(u8),
    /// The worker deregisters (`worker_delete`) and the process ends.
    Exit(u8),
}

impl Action {
    /// A fault, an operator's or an application's request: not one the system takes on its
    /// own to make progress.
    fn is_outside(&self) -> bool {
        matches!(
            self,
            Action::Enqueue(_)
                | Action::Cancel(_)
                | Action::Replay(_)
                | Action::ClaimReplyLost(_)
                | Action::BeatSend { reached: false, .. }
                | Action::BeatFails(_)
                | Action::Write {
                    reply_lost: true,
                    ..
                }
                | Action::Stall(_)
                | Action::Crash(_)
                | Action::ShutdownBegin(_)
        )
    }
}

/// One job slot's setup.
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// Enqueued before the first step (otherwise `Enqueue` is an action).
    pub enqueued: bool,
    /// Its unique key, if any (slots with the same key collide).
    pub key: Option<u8>,
    /// It has an `expires_at`, which time may pass.
    pub expires: bool,
}

/// One worker's setup.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    /// Its queue's concurrency.
    pub slots: u8,
    /// Its queue's prefetch.
    pub prefetch: u8,
    /// Takes the faults in scope (stalls, crashes, heartbeat faults, lost replies), and
    /// time ages its lease. A worker that is not faulty heartbeats on time throughout: its
    /// lease holds, and its heartbeat is left out of the model.
    pub faulty: bool,
}

/// The rules the guarantees issue settled, each of which a mutation test removes. All
/// `true` is today's code.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Lease continuity: the heartbeat releases every run when it finds a gap (before its
    /// send, at its reply, or `Renewal::lapsed`), not only when it fails.
    pub release_on_gap: bool,
    /// Run identity: `Holdings` keyed by (job, token), not by job alone.
    pub run_is_job_and_token: bool,
    /// The outcome statement's fence includes the claim token, not only the worker.
    pub token_fence: bool,
    /// A retry, snooze or hand-back of a job an operator cancelled ends it `cancelled`.
    pub cancel_sticks: bool,
    /// The rescuer runs (without it, the liveness check must find the crashed worker's
    /// job stuck: a check that the liveness check can fail).
    pub rescue: bool,
}

impl Rules {
    /// Today's code.
    pub const TODAY: Rules = Rules {
        release_on_gap: true,
        run_is_job_and_token: true,
        token_fence: true,
        cancel_sticks: true,
        rescue: true,
    };
}

/// Which families of actions a check takes: each check covers a few, so that every
/// family is checked with the others it interacts with, within a state count that runs in
/// seconds.
#[derive(Clone, Copy, Debug)]
pub struct Scope {
    /// An operator's cancel and replay.
    pub operator: bool,
    /// Time passing a job's `expires_at`, and the expiry sweep.
    pub expiry: bool,
    /// A process stopped for any length of time.
    pub stall: bool,
    /// A process killed.
    pub crash: bool,
    /// A graceful shutdown, with its deadline.
    pub shutdown: bool,
    /// A heartbeat that fails or never reaches the database (a lost connection, a
    /// PostgreSQL restart), and the release margin it is judged by.
    pub beat_faults: bool,
    /// A claim whose reply is lost after it committed; an outcome written twice (the
    /// first reply lost).
    pub lost_replies: bool,
    /// Handlers also dead-letter and snooze (not only complete and fail).
    pub all_outcomes: bool,
}

/// The bounds, the scope and the rules.
#[derive(Clone, Debug)]
pub struct Jobs {
    /// The job slots.
    pub jobs: Vec<JobSpec>,
    /// The workers.
    pub workers: Vec<WorkerSpec>,
    /// Every job's `max_attempts`.
    pub max_attempts: u8,
    /// The families of actions taken.
    pub scope: Scope,
    /// The rules (all on: today's code).
    pub rules: Rules,
}

impl Jobs {
    /// Leases and faults: one job, two workers with a slot each (the first takes the
    /// faults), two attempts; stalls of any length, crashes, failed and lost heartbeats.
    pub fn leases(rules: Rules) -> Jobs {
        Jobs {
            jobs: vec![JobSpec {
                enqueued: true,
                key: None,
                expires: false,
            }],
            workers: vec![
                WorkerSpec {
                    slots: 1,
                    prefetch: 0,
                    faulty: true,
                },
                WorkerSpec {
                    slots: 1,
                    prefetch: 0,
                    faulty: false,
                },
            ],
            max_attempts: 2,
            scope: Scope {
                operator: false,
                expiry: false,
                stall: true,
                crash: true,
                shutdown: false,
                beat_faults: true,
                lost_replies: false,
                all_outcomes: false,
            },
            rules,
        }
    }

    /// Lost replies: one job, two workers with a slot each; the first loses claim replies
    /// and outcome replies (written again, then fenced off), and its process may stall.
    pub fn replies(rules: Rules) -> Jobs {
        Jobs {
            scope: Scope {
                lost_replies: true,
                crash: false,
                beat_faults: false,
                ..Jobs::leases(rules).scope
            },
            ..Jobs::leases(rules)
        }
    }

    /// The walks replayed against PostgreSQL: two jobs sharing a unique key (the second
    /// enqueued by an action, with an expiry), a faulty worker that prefetches beside a
    /// healthy one, every family of actions.
    pub fn walks() -> Jobs {
        Jobs {
            jobs: Jobs::queue(Rules::TODAY).jobs,
            workers: vec![
                WorkerSpec {
                    slots: 1,
                    prefetch: 1,
                    faulty: true,
                },
                WorkerSpec {
                    slots: 1,
                    prefetch: 0,
                    faulty: false,
                },
            ],
            max_attempts: 2,
            scope: Scope {
                operator: true,
                expiry: true,
                stall: true,
                crash: true,
                shutdown: true,
                beat_faults: true,
                lost_replies: true,
                all_outcomes: true,
            },
            rules: Rules::TODAY,
        }
    }

    /// How many jobs worker `w`'s producer claims at most now (`Producer::wanted`).
    pub fn claim_limit(&self, s: &System, w: u8) -> usize {
        self.wanted(&s.workers[w as usize], w)
    }

    /// The jobs worker `w`'s reconciler hands back at its `ReconcileAct` now: those the
    /// database gave it (as read) that it knows nothing of.
    pub fn hand_backs(&self, s: &System, w: u8) -> Vec<(u8, Token)> {
        let worker = &s.workers[w as usize];
        let Some(reading) = &worker.reading else {
            return Vec::new();
        };
        reading
            .held
            .iter()
            .filter(|(job, token, _)| !self.knows(worker, *job, *token))
            .map(|(job, token, _)| (*job, *token))
            .collect()
    }

    /// Larger bounds (the ignored test `larger_bounds`): the lease scenario and the lost
    /// replies together (stalls, crashes, heartbeat faults, lost claim and outcome
    /// replies on one worker).
    pub fn large(rules: Rules) -> Jobs {
        Jobs {
            scope: Scope {
                lost_replies: true,
                ..Jobs::leases(rules).scope
            },
            ..Jobs::leases(rules)
        }
    }

    /// The queue's own rules: two jobs sharing a unique key (the second enqueued by an
    /// action, with an expiry), one worker that prefetches a job beside its slot; cancel,
    /// replay, expiry, every outcome, and shutdown with its deadline.
    pub fn queue(rules: Rules) -> Jobs {
        Jobs {
            jobs: vec![
                JobSpec {
                    enqueued: true,
                    key: Some(0),
                    expires: false,
                },
                JobSpec {
                    enqueued: false,
                    key: Some(0),
                    expires: true,
                },
            ],
            workers: vec![WorkerSpec {
                slots: 1,
                prefetch: 1,
                faulty: false,
            }],
            max_attempts: 2,
            scope: Scope {
                operator: true,
                expiry: true,
                stall: false,
                crash: false,
                shutdown: true,
                beat_faults: false,
                lost_replies: false,
                all_outcomes: true,
            },
            rules,
        }
    }
}

// ----- the lease and the holdings (crates/worker/src/lease.rs) -----

/// `Lease::holds_for(term)`: that term's last confirmed send is less than a lease ago.
fn holds_for(w: &Worker, term: u8) -> bool {
    match term {
        0 => w.current != Phase::Gap,
        1 => w.previous.is_some_and(|p| p != Phase::Gap),
        _ => false,
    }
}

/// `Lease::is_held`.
fn is_held(w: &Worker) -> bool {
    w.held && w.current != Phase::Gap
}

impl Jobs {
    /// The `Holdings` key of a run.
    fn key_matches(&self, entry: (u8, Token), job: u8, token: Token) -> bool {
        entry.0 == job && (!self.rules.run_is_job_and_token || entry.1 == token)
    }

    /// `inner.runs.get(key)`: the run held under the key of (job, token), if any.
    fn held_run(&self, w: &Worker, job: u8, token: Token) -> Option<usize> {
        let entry = *w.map.iter().find(|e| self.key_matches(**e, job, token))?;
        w.runs
            .iter()
            .position(|r| (r.job, r.token) == (entry.0, entry.1))
    }

    /// `Holdings::knows`.
    fn knows(&self, w: &Worker, job: u8, token: Token) -> bool {
        w.map.iter().any(|e| self.key_matches(*e, job, token))
            || w.claim.as_ref().is_some_and(|c| c.token == token)
    }

    /// `inner.runs.insert(key, switch)`.
    fn map_insert(&self, w: &mut Worker, job: u8, token: Token) {
        w.map.retain(|e| !self.key_matches(*e, job, token));
        w.map.push((job, token));
    }

    /// `HeldJob::drop`: `inner.runs.remove(&self.run)` (removes whatever the key holds).
    fn drop_run(&self, w: &mut Worker, index: usize) {
        let run = w.runs.remove(index);
        w.map.retain(|e| !self.key_matches(*e, run.job, run.token));
    }
}

/// `StopSwitch::stop`: the first reason stays.
fn stop(run: &mut Run, reason: Stop) {
    run.stop.get_or_insert(reason);
}

/// `Heartbeat::release`: `Lease::lose` then `Holdings::release_all`.
fn release(w: &mut Worker) {
    if w.held {
        w.previous = Some(w.current);
        for run in &mut w.runs {
            run.term = (run.term + 1).min(2);
        }
    }
    w.held = false;
    if let Some(claim) = &mut w.claim {
        claim.released_since = true;
    }
    let held: Vec<(u8, Token)> = w.map.clone();
    for run in &mut w.runs {
        if run.is_live() && held.contains(&(run.job, run.token)) {
            stop(run, Stop::Release);
        }
    }
}

// ----- the database statements (crates/queue/src/db/job.rs) -----

impl Jobs {
    /// `job_claim`'s ready condition: pending or retrying, `run_at` reached, not expired.
    fn claimable(job: &Job) -> bool {
        job.state.is_waiting() && job.due && !job.expired
    }

    /// `job_set_outcome_many` for one outcome: fenced by worker and token; returns whether
    /// it applied.
    fn apply_outcome(&self, jobs: &mut [Job], w: u8, job: u8, token: Token, out: Out) -> bool {
        let rules = self.rules;
        let row = &mut jobs[job as usize];
        let fenced = match row.holder {
            Some((by, tok)) => by == w && (tok == token || !rules.token_fence),
            None => false,
        };
        if row.state != State::Processing || !fenced {
            return false;
        }
        let cancelled = row.cancel_requested && rules.cancel_sticks;
        let snooze = matches!(out, Out::Snooze | Out::HandBack);
        let new = match out {
            Out::Complete => State::Completed,
            Out::Retry | Out::Snooze | Out::HandBack if cancelled => State::Cancelled,
            Out::Cancel => State::Cancelled,
            Out::DeadLetter => State::DeadLetter,
            Out::Retry if row.attempt >= self.max_attempts => State::DeadLetter,
            Out::Retry => State::Retrying,
            // snooze: the attempt is given back; a job that never failed stays pending
            _ if row.attempt > 1 => State::Retrying,
            _ => State::Pending,
        };
        if snooze {
            row.attempt -= 1;
        }
        row.state = new;
        row.holder = None;
        row.cancel_requested = false;
        row.expired_reason = false;
        // run_at: now + delay (a hand-back's delay is zero).
        row.due = matches!(out, Out::HandBack);
        true
    }
}

impl Jobs {
    fn spec_key(&self, job: usize) -> Option<u8> {
        self.jobs[job].key
    }

    /// Another live job holds `job`'s unique key (`jobs_unique_key_live`).
    fn key_taken(&self, s: &System, job: usize) -> bool {
        let Some(key) = self.spec_key(job) else {
            return false;
        };
        s.jobs.iter().enumerate().any(|(other, row)| {
            other != job && row.state.is_live() && self.spec_key(other) == Some(key)
        })
    }

    fn new_token(s: &System) -> Token {
        let mut max = 0;
        for job in &s.jobs {
            if let Some((_, t)) = job.holder {
                max = max.max(t + 1);
            }
        }
        for w in &s.workers {
            if let Some(c) = &w.claim {
                max = max.max(c.token + 1);
            }
            for r in &w.runs {
                max = max.max(r.token + 1);
            }
            for e in &w.map {
                max = max.max(e.1 + 1);
            }
            if let Some(reading) = &w.reading {
                for e in &reading.running {
                    max = max.max(e.1 + 1);
                }
                for e in &reading.held {
                    max = max.max(e.1 + 1);
                }
            }
        }
        max
    }
}

/// The subsets of `items` with 1 to `most` members.
fn subsets(items: &[u8], most: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for mask in 1u32..(1 << items.len()) {
        if (mask.count_ones() as usize) <= most {
            out.push(
                items
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, j)| *j)
                    .collect(),
            );
        }
    }
    out
}

impl Model for Jobs {
    type State = System;
    type Action = Action;

    fn init(&self) -> Vec<System> {
        let jobs = self
            .jobs
            .iter()
            .map(|spec| Job {
                state: if spec.enqueued {
                    State::Pending
                } else {
                    State::Absent
                },
                attempt: 0,
                holder: None,
                cancel_requested: false,
                due: true,
                expired: false,
                expired_reason: false,
                operator_cancelled: false,
            })
            .collect();
        let workers = self
            .workers
            .iter()
            .map(|_| Worker {
                process: Process::Running,
                shutting_down: false,
                // Registered at start (`Runtime::start` beats once before any claim).
                row: Some(Phase::Fresh),
                held: true,
                current: Phase::Fresh,
                previous: None,
                beat: None,
                claim: None,
                runs: Vec::new(),
                map: Vec::new(),
                reading: None,
            })
            .collect();
        vec![System { jobs, workers }]
    }

    fn actions(&self, s: &System, out: &mut Vec<Action>) {
        for (j, job) in s.jobs.iter().enumerate() {
            let j = j as u8;
            let operator = self.scope.operator;
            match job.state {
                State::Absent => out.push(Action::Enqueue(j)),
                State::Pending | State::Retrying | State::Processing if operator => {
                    out.push(Action::Cancel(j))
                }
                State::Completed | State::DeadLetter | State::Cancelled if operator => {
                    out.push(Action::Replay(j))
                }
                _ => {}
            }
            if job.state.is_waiting() && !job.due {
                out.push(Action::Due(j));
            }
            let enqueued = !matches!(job.state, State::Absent | State::Deduplicated);
            if self.scope.expiry && self.jobs[j as usize].expires && !job.expired && enqueued {
                out.push(Action::Expires(j));
            }
        }
        if self.scope.expiry {
            out.push(Action::ExpireSweep);
        }
        if self.rules.rescue {
            out.push(Action::Rescue);
        }
        for (w, worker) in s.workers.iter().enumerate() {
            let faulty = self.workers[w].faulty;
            let w = w as u8;
            // A worker that is not faulty takes none of the faults in scope.
            let scope = if faulty {
                self.scope
            } else {
                Scope {
                    stall: false,
                    crash: false,
                    beat_faults: false,
                    lost_replies: false,
                    ..self.scope
                }
            };
            if faulty {
                for instant in [
                    Instant::Row,
                    Instant::Current,
                    Instant::Previous,
                    Instant::Beat,
                ] {
                    out.push(Action::Age { w, instant });
                }
            }
            match worker.process {
                Process::Running => {}
                Process::Stalled => {
                    out.push(Action::Wake(w));
                    if scope.crash {
                        out.push(Action::Crash(w));
                    }
                    continue;
                }
                Process::Crashed | Process::Exited => continue,
            }
            if scope.stall {
                out.push(Action::Stall(w));
            }
            if scope.crash {
                out.push(Action::Crash(w));
            }
            if scope.shutdown && !worker.shutting_down {
                out.push(Action::ShutdownBegin(w));
            } else if worker.shutting_down {
                out.push(Action::HardStop(w));
                out.push(Action::Exit(w));
            }
            // The producer.
            // Bound: a worker holds at most its slots, its prefetch and one more run (an
            // outcome waiting in the completer).
            let room = worker.runs.len()
                < (self.workers[w as usize].slots + self.workers[w as usize].prefetch + 1) as usize;
            if room && !worker.shutting_down && worker.claim.is_none() && worker.held {
                let wanted = self.wanted(worker, w);
                if wanted > 0 {
                    let ready: Vec<u8> = s
                        .jobs
                        .iter()
                        .enumerate()
                        .filter(|(_, job)| Jobs::claimable(job))
                        .map(|(j, _)| j as u8)
                        .collect();
                    for jobs in subsets(&ready, wanted) {
                        out.push(Action::Claim { w, jobs });
                    }
                }
            }
            if worker.claim.is_some() {
                out.push(Action::ClaimReply(w));
                if scope.lost_replies {
                    out.push(Action::ClaimReplyLost(w));
                }
            }
            out.push(Action::ProducerTurn(w));
            for run in &worker.runs {
                let (job, token) = (run.job, run.token);
                match run.stage {
                    Stage::Running => {
                        if holds_for(worker, run.term) {
                            let outs: &[Out] = if scope.all_outcomes {
                                &[Out::Complete, Out::Retry, Out::DeadLetter, Out::Snooze][..]
                            } else {
                                &[Out::Complete, Out::Retry][..]
                            };
                            for &out_ in outs {
                                out.push(Action::Finish {
                                    w,
                                    job,
                                    token,
                                    out: out_,
                                });
                            }
                        } else {
                            out.push(Action::LeaseStops { w, job, token });
                        }
                        if run.stop.is_some() {
                            out.push(Action::StopEnds { w, job, token });
                        }
                    }
                    Stage::Ended(_) => {
                        for reply_lost in [false, true] {
                            if reply_lost && !scope.lost_replies {
                                continue;
                            }
                            out.push(Action::Write {
                                w,
                                job,
                                token,
                                reply_lost,
                            });
                        }
                    }
                    Stage::Waiting => {}
                }
            }
            if worker.reading.is_none() {
                out.push(Action::ReconcileRead(w));
            } else {
                out.push(Action::ReconcileAct(w));
            }
            if !faulty {
                continue;
            }
            if worker.beat.is_none() {
                out.push(Action::BeatSend { w, reached: true });
                if scope.beat_faults {
                    out.push(Action::BeatSend { w, reached: false });
                }
            } else {
                out.push(Action::BeatReply(w));
                if scope.beat_faults {
                    out.push(Action::BeatFails(w));
                }
            }
        }
    }

    fn next(&self, s: &System, action: &Action) -> Option<Result<System, String>> {
        let mut n = s.clone();
        match action {
            // `docket.enqueue`: insert ... on conflict (unique_key) where live do nothing,
            // then return the live job holding the key.
            Action::Enqueue(j) => {
                let j = *j as usize;
                if n.jobs[j].state != State::Absent {
                    return None;
                }
                if self.key_taken(&n, j) {
                    n.jobs[j].state = State::Deduplicated;
                } else {
                    n.jobs[j].state = State::Pending;
                    n.jobs[j].due = true;
                }
            }
            // `job_cancel`: a waiting job is cancelled at once; a processing one is marked.
            Action::Cancel(j) => {
                let job = &mut n.jobs[*j as usize];
                match job.state {
                    State::Pending | State::Retrying => {
                        job.state = State::Cancelled;
                        job.expired_reason = false;
                    }
                    State::Processing => job.cancel_requested = true,
                    _ => return None,
                }
                job.operator_cancelled = true;
            }
            // `job_replay`: a finished job, not past its expiry, back to pending with a
            // fresh attempt budget; refused (unique violation) while its key is live.
            Action::Replay(j) => {
                let ju = *j as usize;
                if !n.jobs[ju].state.is_final() || n.jobs[ju].expired || self.key_taken(&n, ju) {
                    return None;
                }
                let job = &mut n.jobs[ju];
                job.state = State::Pending;
                job.attempt = 0;
                job.due = true;
                job.cancel_requested = false;
                job.expired_reason = false;
                job.operator_cancelled = false;
            }
            // `job_expire_ready`: waiting jobs past `expires_at` become dead letters.
            Action::ExpireSweep => {
                let mut any = false;
                for job in &mut n.jobs {
                    if job.state.is_waiting() && job.expired {
                        job.state = State::DeadLetter;
                        job.expired_reason = true;
                        job.cancel_requested = false;
                        any = true;
                    }
                }
                if !any {
                    return None;
                }
            }
            // `job_rescue_lapsed`: processing jobs whose worker's stored lease has passed
            // or whose worker has no row.
            Action::Rescue => {
                let mut any = false;
                for job in &mut n.jobs {
                    let Some((w, _)) = job.holder else { continue };
                    let lapsed = match s.workers[w as usize].row {
                        None => true,
                        Some(phase) => phase == Phase::Gap,
                    };
                    if job.state != State::Processing || !lapsed {
                        continue;
                    }
                    job.state = if job.cancel_requested {
                        State::Cancelled
                    } else if job.attempt >= self.max_attempts {
                        State::DeadLetter
                    } else {
                        State::Retrying
                    };
                    job.holder = None;
                    job.cancel_requested = false;
                    job.due = true;
                    any = true;
                }
                if !any {
                    return None;
                }
            }
            Action::Due(j) => {
                let job = &mut n.jobs[*j as usize];
                if !job.state.is_waiting() || job.due {
                    return None;
                }
                job.due = true;
            }
            Action::Expires(j) => {
                let job = &mut n.jobs[*j as usize];
                if job.expired {
                    return None;
                }
                job.expired = true;
            }
            // `Producer::claim_into`: `begin_claim(token)`, then `job_claim` (one statement:
            // ready jobs become processing under the worker and the token, attempt + 1).
            // Sent while the lease was held when the producer looked (time may have passed
            // since: the check is not part of the statement).
            Action::Claim { w, jobs } => {
                let token = Jobs::new_token(&n);
                for &j in jobs {
                    let job = &mut n.jobs[j as usize];
                    if !Jobs::claimable(job) {
                        return None;
                    }
                    job.state = State::Processing;
                    job.attempt += 1;
                    job.holder = Some((*w, token));
                    job.cancel_requested = false;
                }
                n.workers[*w as usize].claim = Some(Claim {
                    token,
                    jobs: jobs.clone(),
                    released_since: false,
                });
            }
            // `ClaimGuard::adopt`, then `claim_into`'s dispatch: a run stopped at adoption
            // is finished unstarted; the others start in free slots or wait (prefetch).
            Action::ClaimReply(w) => {
                let worker = &mut n.workers[*w as usize];
                let claim = worker.claim.take()?;
                for &job in &claim.jobs {
                    // An older run of the job held here is over: the database gave the job
                    // to this claim.
                    let older: Vec<(u8, Token)> =
                        worker.map.iter().copied().filter(|e| e.0 == job).collect();
                    for run in &mut worker.runs {
                        if older.contains(&(run.job, run.token)) && run.is_live() {
                            stop(run, Stop::Release);
                        }
                    }
                    self.map_insert(worker, job, claim.token);
                    let free = self.free_slots(worker, *w);
                    let stage = if claim.released_since {
                        Stage::Ended(Out::HandBack)
                    } else if free > 0 {
                        Stage::Running
                    } else {
                        Stage::Waiting
                    };
                    worker.runs.push(Run {
                        job,
                        token: claim.token,
                        term: 0,
                        stage,
                        stop: claim.released_since.then_some(Stop::Release),
                    });
                }
            }
            // A claim that committed but whose reply never came: the guard is dropped.
            Action::ClaimReplyLost(w) => {
                n.workers[*w as usize].claim.take()?;
            }
            // `Producer::run`'s turn: while the lease is held, finish the stopped and expired
            // prefetched jobs and start the others in free slots; otherwise hand them all
            // back.
            Action::ProducerTurn(w) => {
                let wi = *w as usize;
                let claiming = is_held(&n.workers[wi]) && !n.workers[wi].shutting_down;
                let mut changed = false;
                let worker = &mut n.workers[wi];
                for run in worker.runs.iter_mut() {
                    if run.stage != Stage::Waiting {
                        continue;
                    }
                    let expired = n.jobs[run.job as usize].expired;
                    if !claiming || run.stop.is_some() || expired {
                        let cancel = run.stop == Some(Stop::Cancel);
                        run.stage = Stage::Ended(if cancel { Out::Cancel } else { Out::HandBack });
                        changed = true;
                    }
                }
                if claiming {
                    let mut free = self.free_slots(worker, *w);
                    for run in worker.runs.iter_mut() {
                        if free > 0 && run.stage == Stage::Waiting {
                            run.stage = Stage::Running;
                            run.term = 0;
                            free -= 1;
                            changed = true;
                        }
                    }
                }
                if !changed {
                    return None;
                }
            }
            // The handler returned (polled only while `WhileLeaseHeld` holds for its term).
            Action::Finish { w, job, token, out } => {
                let worker = &mut n.workers[*w as usize];
                let run = worker
                    .runs
                    .iter_mut()
                    .find(|r| (r.job, r.token) == (*job, *token))?;
                run.stage = Stage::Ended(*out);
            }
            // `Executor::run`: the stop switch fired and the handler did not complete within
            // the grace: `Ended::CancelledByOperator` or `Ended::Released`.
            Action::StopEnds { w, job, token } => {
                let worker = &mut n.workers[*w as usize];
                let run = worker
                    .runs
                    .iter_mut()
                    .find(|r| (r.job, r.token) == (*job, *token))?;
                run.stage = Stage::Ended(match run.stop? {
                    Stop::Cancel => Out::Cancel,
                    Stop::Release => Out::HandBack,
                });
            }
            // `WhileLeaseHeld` found the lease of the run's term unproven: `Ended::Released`.
            Action::LeaseStops { w, job, token } => {
                let worker = &mut n.workers[*w as usize];
                let at = worker
                    .runs
                    .iter()
                    .position(|r| (r.job, r.token) == (*job, *token))?;
                if holds_for(worker, worker.runs[at].term) {
                    return None;
                }
                let run = &mut worker.runs[at];
                run.stage = Stage::Ended(Out::HandBack);
            }
            // `Completer::flush` → `apply_outcomes` (fenced), then the `HeldJob` drops. A
            // lost reply leaves the outcome to be written again (then fenced off).
            Action::Write {
                w,
                job,
                token,
                reply_lost,
            } => {
                let index = n.workers[*w as usize]
                    .runs
                    .iter()
                    .position(|r| (r.job, r.token) == (*job, *token))?;
                let Stage::Ended(out) = n.workers[*w as usize].runs[index].stage else {
                    return None;
                };
                let before = s.jobs[*job as usize].holder;
                if self.apply_outcome(&mut n.jobs, *w, *job, *token, out)
                    && before != Some((*w, *token))
                {
                    return Some(Err(format!(
                        "no outcome from a stale run is applied: run (job {job}, token {token}) of worker {w} wrote {out:?} over {before:?}"
                    )));
                }
                if !reply_lost {
                    let worker = &mut n.workers[*w as usize];
                    self.drop_run(worker, index);
                }
            }
            // `Reconciler::reconcile`: `holdings.runs()`, then `held_by`.
            Action::ReconcileRead(w) => {
                let worker = &n.workers[*w as usize];
                let running = worker.map.clone();
                let held = n
                    .jobs
                    .iter()
                    .enumerate()
                    .filter_map(|(j, job)| match job.holder {
                        Some((by, token)) if by == *w && job.state == State::Processing => {
                            Some((j as u8, token, job.cancel_requested))
                        }
                        _ => None,
                    })
                    .collect();
                n.workers[*w as usize].reading = Some(Reading { running, held });
            }
            // The rest of the pass: stop the runs the database no longer gives this worker,
            // stop the cancelled ones, and hand back (fenced) the jobs it holds unknown here.
            Action::ReconcileAct(w) => {
                let wi = *w as usize;
                let reading = n.workers[wi].reading.take()?;
                let given = |job: u8, token: Token| {
                    reading
                        .held
                        .iter()
                        .any(|h| self.key_matches((h.0, h.1), job, token))
                };
                for &(job, token) in &reading.running {
                    if !given(job, token) {
                        if let Some(i) = self.held_run(&n.workers[wi], job, token) {
                            let run = &mut n.workers[wi].runs[i];
                            if run.is_live() {
                                stop(run, Stop::Release);
                            }
                        }
                    }
                }
                for &(job, token, cancel) in &reading.held {
                    if cancel {
                        if let Some(i) = self.held_run(&n.workers[wi], job, token) {
                            stop(&mut n.workers[wi].runs[i], Stop::Cancel);
                        }
                    }
                }
                for &(job, token, _) in &reading.held {
                    if !self.knows(&n.workers[wi], job, token) {
                        let before = n.jobs[job as usize].holder;
                        if self.apply_outcome(&mut n.jobs, *w, job, token, Out::HandBack)
                            && before != Some((*w, token))
                        {
                            return Some(Err(format!(
                                "no outcome from a stale run is applied: worker {w}'s reconciler handed back job {job} under token {token} over {before:?}"
                            )));
                        }
                    }
                }
            }
            // `Heartbeat::run_once`: a gap before the send releases; then `worker_heartbeat`
            // (upsert: the row's lease from now, and whether it had lapsed or was gone).
            Action::BeatSend { w, reached } => {
                let rules = self.rules;
                let worker = &mut n.workers[*w as usize];
                if rules.release_on_gap && worker.current == Phase::Gap {
                    release(worker);
                }
                let lapsed = match worker.row {
                    None => true,
                    Some(phase) => phase == Phase::Gap,
                };
                if *reached {
                    worker.row = Some(Phase::Fresh);
                }
                worker.beat = Some(Beat {
                    sent: Phase::Fresh,
                    reached: *reached,
                    lapsed,
                });
            }
            // The reply: a gap since the last confirmed send, or `Renewal::lapsed`, releases;
            // the lease is renewed only when nothing from before is held
            // (`Lease::confirm(sent_at, holdings.len() == 0)`).
            Action::BeatReply(w) => {
                let rules = self.rules;
                let worker = &mut n.workers[*w as usize];
                let beat = worker.beat?;
                if !beat.reached {
                    return None;
                }
                worker.beat = None;
                if rules.release_on_gap && (worker.current == Phase::Gap || beat.lapsed) {
                    release(worker);
                }
                worker.current = worker.current.min(beat.sent);
                if worker.map.is_empty() {
                    worker.held = true;
                }
            }
            // A heartbeat that failed or timed out: `must_release` from the margin on.
            Action::BeatFails(w) => {
                let worker = &mut n.workers[*w as usize];
                worker.beat.take()?;
                if worker.current >= Phase::Near {
                    release(worker);
                }
            }
            Action::Age { w, instant } => {
                let scope = self.scope;
                let worker = &mut n.workers[*w as usize];
                let alive = matches!(worker.process, Process::Running | Process::Stalled);
                match instant {
                    // The row's stamp is no earlier than the confirmed send, nor than a beat
                    // in flight that reached it.
                    Instant::Row => {
                        let next = worker.row?.aged(&scope)?;
                        if alive && next > worker.current {
                            return None;
                        }
                        if let Some(beat) = worker.beat {
                            if beat.reached && next > beat.sent {
                                return None;
                            }
                        }
                        worker.row = Some(next);
                    }
                    Instant::Current => {
                        if !alive {
                            return None;
                        }
                        let next = worker.current.aged(&scope)?;
                        if worker.previous.is_some_and(|p| next > p) {
                            return None;
                        }
                        // A running process checks its lease every interval: past the
                        // margin only once it has given it up, or while stalled.
                        if next == Phase::Gap && worker.held && worker.process == Process::Running {
                            return None;
                        }
                        worker.current = next;
                    }
                    Instant::Previous => {
                        if !alive {
                            return None;
                        }
                        worker.previous = Some(worker.previous?.aged(&scope)?);
                    }
                    Instant::Beat => {
                        if !alive {
                            return None;
                        }
                        let beat = worker.beat.as_mut()?;
                        let next = beat.sent.aged(&scope)?;
                        if next > worker.current {
                            return None;
                        }
                        beat.sent = next;
                    }
                }
            }
            Action::Stall(w) => {
                let worker = &mut n.workers[*w as usize];
                if worker.process != Process::Running {
                    return None;
                }
                worker.process = Process::Stalled;
            }
            Action::Wake(w) => {
                let worker = &mut n.workers[*w as usize];
                if worker.process != Process::Stalled {
                    return None;
                }
                worker.process = Process::Running;
            }
            Action::Crash(w) => {
                let worker = &mut n.workers[*w as usize];
                if !matches!(worker.process, Process::Running | Process::Stalled) {
                    return None;
                }
                forget_process(worker, Process::Crashed);
            }
            // `Started::shutdown`: producers stop claiming (and hand back what they
            // prefetched at their next turn); running jobs get `shutdown_timeout`.
            Action::ShutdownBegin(w) => {
                n.workers[*w as usize].shutting_down = true;
            }
            // The shutdown deadline (`hard_stop`): running jobs are stopped (`Released`).
            Action::HardStop(w) => {
                let worker = &mut n.workers[*w as usize];
                let mut any = false;
                for run in &mut worker.runs {
                    if run.stage == Stage::Running && run.stop.is_none() {
                        stop(run, Stop::Release);
                        any = true;
                    }
                }
                if !any {
                    return None;
                }
            }
            // The completer drained (or gave up), the last reconcile ran (its own actions),
            // the worker deregisters (`worker_delete`) and the process ends.
            Action::Exit(w) => {
                let worker = &mut n.workers[*w as usize];
                if worker
                    .runs
                    .iter()
                    .any(|r| matches!(r.stage, Stage::Running | Stage::Waiting))
                {
                    return None;
                }
                worker.row = None;
                forget_process(worker, Process::Exited);
            }
        }
        Some(Ok(n))
    }

    fn invariant(&self, s: &System) -> Result<(), String> {
        for (w, worker) in s.workers.iter().enumerate() {
            if worker.process != Process::Running {
                continue;
            }
            for run in &worker.runs {
                if run.stage != Stage::Running || !holds_for(worker, run.term) {
                    continue;
                }
                // A handler that may take a step now: the database must give it its job,
                // under this very claim, on a lease that has not lapsed.
                let job = &s.jobs[run.job as usize];
                let mine =
                    job.state == State::Processing && job.holder == Some((w as u8, run.token));
                let live = worker.row.is_some_and(|p| p != Phase::Gap);
                if !mine || !live {
                    return Err(format!(
                        "no two runs of one job overlap: worker {w}'s run (job {}, token {}) may take a step while the database {}",
                        run.job,
                        run.token,
                        if !mine {
                            format!("has the job {:?} under {:?}", job.state, job.holder)
                        } else {
                            "says its lease lapsed".to_owned()
                        }
                    ));
                }
            }
        }
        for (j, job) in s.jobs.iter().enumerate() {
            if job.operator_cancelled && job.state.is_waiting() {
                return Err(format!(
                    "an operator's cancel is never undone: job {j} is {:?} again without a replay",
                    job.state
                ));
            }
            if job.attempt > self.max_attempts {
                return Err(format!("job {j} has attempt {} > max", job.attempt));
            }
            if self.key_taken(s, j) && job.state.is_live() {
                return Err(format!("two live jobs hold job {j}'s unique key"));
            }
        }
        Ok(())
    }

    fn canonical(&self, mut s: System) -> System {
        let mut names: Vec<Token> = Vec::new();
        let mut rename = |t: &mut Token| {
            let at = match names.iter().position(|n| n == t) {
                Some(at) => at,
                None => {
                    names.push(*t);
                    names.len() - 1
                }
            };
            *t = at as Token;
        };
        for job in &mut s.jobs {
            if let Some((_, t)) = &mut job.holder {
                rename(t);
            }
        }
        for worker in &mut s.workers {
            if let Some(c) = &mut worker.claim {
                rename(&mut c.token);
            }
            for r in &mut worker.runs {
                rename(&mut r.token);
            }
            for e in &mut worker.map {
                rename(&mut e.1);
            }
            if let Some(reading) = &mut worker.reading {
                for e in &mut reading.running {
                    rename(&mut e.1);
                }
                for e in &mut reading.held {
                    rename(&mut e.1);
                }
            }
        }
        for worker in &mut s.workers {
            worker.map.sort_unstable();
        }
        s
    }

    fn goals(&self) -> Vec<Goal<Self>> {
        vec![Goal {
            name: "every job ends (final), or waits ready with no live worker to run it",
            reached: |_, s| {
                let runner = s.workers.iter().any(|w| {
                    matches!(w.process, Process::Running | Process::Stalled) && !w.shutting_down
                });
                s.jobs.iter().all(|job| {
                    job.state.is_final()
                        || matches!(job.state, State::Absent | State::Deduplicated)
                        || (job.state.is_waiting() && !runner)
                })
            },
            allowed: |a| !a.is_outside(),
        }]
    }

    fn show(&self, s: &System) -> String {
        show(s)
    }
}

impl Jobs {
    /// Free slots: the queue's concurrency less the runs holding a slot.
    fn free_slots(&self, worker: &Worker, w: u8) -> usize {
        let busy = worker
            .runs
            .iter()
            .filter(|r| r.stage == Stage::Running)
            .count();
        (self.workers[w as usize].slots as usize).saturating_sub(busy)
    }

    /// `Producer::wanted`: a job per free slot, and the prefetch refilled once half gone.
    fn wanted(&self, worker: &Worker, w: u8) -> usize {
        let prefetch = self.workers[w as usize].prefetch as usize;
        let waiting = worker
            .runs
            .iter()
            .filter(|r| r.stage == Stage::Waiting)
            .count();
        let ahead = if waiting <= prefetch / 2 {
            prefetch - waiting
        } else {
            0
        };
        self.free_slots(worker, w) + ahead
    }
}

/// A process gone: nothing of it runs or writes any more.
fn forget_process(worker: &mut Worker, process: Process) {
    worker.process = process;
    worker.shutting_down = false;
    worker.held = false;
    worker.current = Phase::Gap;
    worker.previous = None;
    worker.beat = None;
    worker.claim = None;
    worker.runs.clear();
    worker.map.clear();
    worker.reading = None;
}

/// One line per state, for traces.
pub fn show(s: &System) -> String {
    let mut line = String::new();
    for (j, job) in s.jobs.iter().enumerate() {
        let _ = write!(line, "job{j}:{:?}", job.state);
        if job.state == State::Absent || job.state == State::Deduplicated {
            line.push_str("  ");
            continue;
        }
        let _ = write!(line, "(a{}", job.attempt);
        if let Some((w, t)) = job.holder {
            let _ = write!(line, ",w{w}/t{t}");
        }
        if job.cancel_requested {
            line.push_str(",cancel");
        }
        if !job.due {
            line.push_str(",later");
        }
        if job.expired {
            line.push_str(",expired");
        }
        line.push_str(")  ");
    }
    for (w, worker) in s.workers.iter().enumerate() {
        let _ = write!(line, "| w{w}:{:?}", worker.process);
        if !matches!(worker.process, Process::Running | Process::Stalled) {
            let _ = write!(line, " row={:?} ", worker.row);
            continue;
        }
        let _ = write!(
            line,
            "{} row={:?} lease={}{:?}",
            if worker.shutting_down {
                "(stopping)"
            } else {
                ""
            },
            worker.row.map_or("gone".to_owned(), |p| format!("{p:?}")),
            if worker.held { "held," } else { "given-up," },
            worker.current
        );
        if let Some(p) = worker.previous {
            let _ = write!(line, ",prev={p:?}");
        }
        if let Some(b) = worker.beat {
            let _ = write!(
                line,
                " beat({:?}{})",
                b.sent,
                if b.reached { "" } else { ",lost" }
            );
        }
        if let Some(c) = &worker.claim {
            let _ = write!(line, " claim(t{}→{:?})", c.token, c.jobs);
        }
        for r in &worker.runs {
            let _ = write!(
                line,
                " run(j{}/t{},term-{},{:?}",
                r.job, r.token, r.term, r.stage
            );
            if let Some(stop) = r.stop {
                let _ = write!(line, ",stop:{stop:?}");
            }
            line.push(')');
        }
        if worker.map.len() != worker.runs.len() {
            let _ = write!(line, " holdings={:?}", worker.map);
        }
        line.push(' ');
    }
    line
}
