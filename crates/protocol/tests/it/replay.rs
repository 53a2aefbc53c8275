//! The model drives the code: seeded random walks through the job model's actions, each
//! database step run through the queue crate's real function (claim, heartbeat, outcome,
//! reconciler read, rescue, expiry, cancel, replay, enqueue, deregister) on a real
//! PostgreSQL, and after every step the database compared with the model's rows and the
//! model's invariants checked. A disagreement fails with the walk so far.
//!
//! Time: every statement runs at the walk's clock `now` (a day ahead of the database's,
//! so that what the database stamps with its own `now()` is already due), leases last a
//! day, retries and snoozes wait an hour. The model's time is per instant (a job's
//! `run_at` reached, its `expires_at` passed, a worker's stored lease passed), so the
//! walk moves that one stored instant to the clock instead of moving the clock for all:
//! to the code, which compares each with `now`, the two are the same.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use docket_protocol::explore::Model;
use docket_protocol::jobs::{Action, Instant, Jobs, Out, Phase, State, System, Token};
use docket_protocol::walk::{enabled, Rng};
use docket_queue::maintenance::{self, WorkerInfo};
use docket_queue::{admin, AttemptOutcome, ClaimRequest, Job, JobId, JobState, NewJob, Outcome};
use docket_testkit::TestDb;
use sqlx::PgPool;
use uuid::Uuid;

const KIND: &str = "walk.job";
const LEASE: Duration = Duration::from_secs(24 * 3600);
const LATER: Duration = Duration::from_secs(3600);

/// How many walks, and how long each (`DOCKET_PROTOCOL_WALKS=<walks>x<steps>` for more).
fn walks() -> (u64, usize) {
    std::env::var("DOCKET_PROTOCOL_WALKS")
        .ok()
        .and_then(|v| {
            let (walks, steps) = v.split_once('x')?;
            Some((walks.parse().ok()?, steps.parse().ok()?))
        })
        .unwrap_or((80, 60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_walks_of_the_model_replayed_on_postgresql_agree_step_by_step() {
    let db = TestDb::new().await;
    let (count, steps) = walks();
    let started = std::time::Instant::now();
    let mut changed = 0;
    for seed in 0..count {
        changed += Walk::new(db.pool.clone(), Jobs::walks(), seed)
            .await
            .run(steps)
            .await;
    }
    println!(
        "{count} walks of {steps} steps replayed on PostgreSQL ({changed} steps changed a row) in {:.1?}",
        started.elapsed()
    );
}

/// The replay can fail: a model wrong about one statement (here, that a hand-back of a
/// job an operator cancelled puts it back in the queue) disagrees with the database
/// within a few walks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_wrong_about_one_statement_disagrees_with_the_database() {
    let db = TestDb::new().await;
    let wrong = Jobs {
        rules: docket_protocol::jobs::Rules {
            cancel_sticks: false,
            ..docket_protocol::jobs::Rules::TODAY
        },
        ..Jobs::walks()
    };
    for seed in 0..200 {
        let walk = Walk::new(db.pool.clone(), wrong.clone(), seed).await;
        let outcome = tokio::spawn(walk.run(60)).await;
        if let Err(err) = outcome {
            let message = err.into_panic();
            let message = message
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default();
            assert!(message.contains("in the database"), "{message}");
            return;
        }
    }
    panic!("200 walks of a wrong model never disagreed with the database");
}

/// One walk: the model's state and the database's names for its jobs, workers and tokens.
struct Walk {
    pool: PgPool,
    model: Jobs,
    seed: u64,
    rng: Rng,
    state: System,
    queue: String,
    now: DateTime<Utc>,
    jobs: Vec<Option<JobId>>,
    workers: Vec<WorkerInfo>,
    tokens: HashMap<Token, Uuid>,
    log: String,
    /// Steps that changed a row.
    changed: usize,
}

impl Walk {
    async fn new(pool: PgPool, model: Jobs, seed: u64) -> Walk {
        let queue = format!("walk{seed}");
        let slots = model.jobs.len();
        let state = model.init().remove(0);
        let now = Utc::now() + chrono::Duration::days(1);
        let workers: Vec<WorkerInfo> = model
            .workers
            .iter()
            .map(|_| WorkerInfo {
                id: Uuid::now_v7(),
                host: "walk".into(),
                pid: 1,
                queues: vec![queue.clone()],
                kinds: vec![KIND.into()],
                version: "walk".into(),
            })
            .collect();
        let mut walk = Walk {
            pool,
            model,
            seed,
            rng: Rng::new(seed),
            state,
            queue,
            now,
            jobs: vec![None; slots],
            changed: 0,
            workers,
            tokens: HashMap::new(),
            log: String::new(),
        };
        for worker in &walk.workers {
            maintenance::heartbeat(&walk.pool, worker, LEASE, Some(now))
                .await
                .unwrap();
        }
        for (j, spec) in walk.model.jobs.clone().iter().enumerate() {
            if spec.enqueued {
                walk.jobs[j] = Some(walk.enqueue(j).await);
            }
        }
        walk.compare("start").await;
        walk
    }

    /// Takes `steps` steps; returns how many changed a row.
    async fn run(mut self, steps: usize) -> usize {
        let mut actions = Vec::new();
        for step in 0..steps {
            // Mostly a step that changes the model's state; one in eight from every action
            // (a refused cancel or replay, a rescue with nothing lapsed, ...).
            actions.clear();
            if self.rng.below(8) == 0 {
                self.model.actions(&self.state, &mut actions);
            } else {
                actions.extend(
                    enabled(&self.model, &self.state)
                        .into_iter()
                        .map(|(a, _)| a),
                );
            }
            if actions.is_empty() {
                self.model.actions(&self.state, &mut actions);
            }
            let action = actions[self.rng.below(actions.len())].clone();
            let before = self.state.jobs.clone();
            let taken = self.step(action).await;
            if self.state.jobs != before {
                self.changed += 1;
            }
            let _ = writeln!(
                self.log,
                "{step:>3}. {taken:?}\n     → {}",
                self.model.show(&self.state)
            );
            self.compare(&format!("{taken:?}")).await;
        }
        sqlx::query("delete from docket.jobs where queue = $1")
            .bind(&self.queue)
            .execute(&self.pool)
            .await
            .unwrap();
        self.changed
    }

    fn fail(&self, why: String) -> ! {
        panic!(
            "walk {} (seed {}): the database and the model disagree: {why}\n{}",
            self.queue, self.seed, self.log
        )
    }

    fn job(&self, j: u8) -> JobId {
        self.jobs[j as usize].expect("an enqueued job")
    }

    /// Runs `action`'s statement, if it has one, then the model's step; returns the
    /// action as taken (a claim names the jobs the database gave).
    async fn step(&mut self, action: Action) -> Action {
        let pool = &self.pool.clone();
        let now = Some(self.now);
        let action = match action {
            Action::Claim { w, .. } => {
                let worker = &self.workers[w as usize];
                let token = ClaimRequest::new_token();
                let kinds = [KIND.to_owned()];
                let limit = self.model.claim_limit(&self.state, w);
                let claimed = docket_queue::claim(
                    pool,
                    &ClaimRequest {
                        queue: &self.queue,
                        kinds: Some(&kinds),
                        worker_id: worker.id,
                        token,
                        limit: limit as u32,
                        now,
                    },
                )
                .await
                .unwrap();
                let mut jobs: Vec<u8> = claimed.jobs.iter().map(|job| self.slot(job.id)).collect();
                jobs.sort_unstable();
                let ready = self.state.jobs.iter().filter(|job| {
                    matches!(job.state, State::Pending | State::Retrying) && job.due && !job.expired
                });
                if jobs.len() != ready.count().min(limit) {
                    self.fail(format!("worker {w}'s claim of {limit} took {jobs:?}"));
                }
                if jobs.is_empty() {
                    return Action::Claim { w, jobs };
                }
                let action = Action::Claim { w, jobs };
                if !matches!(self.model.next(&self.state, &action), Some(Ok(_))) {
                    self.fail(format!(
                        "{action:?}: the database claimed jobs the model says are not ready"
                    ));
                }
                self.apply(&action);
                // The model's fresh token for this claim is the new one in its state.
                let fresh = self.state.workers[w as usize]
                    .claim
                    .as_ref()
                    .expect("a claim in flight")
                    .token;
                self.tokens.insert(fresh, token);
                return action;
            }
            Action::Enqueue(j) => {
                let id = self.enqueue(j as usize).await;
                self.apply(&action);
                if self.state.jobs[j as usize].state == State::Deduplicated {
                    let holder = self.model.jobs[j as usize].key;
                    let live = (0..self.state.jobs.len()).find(|&o| {
                        o != j as usize
                            && self.model.jobs[o].key == holder
                            && matches!(
                                self.state.jobs[o].state,
                                State::Pending | State::Retrying | State::Processing
                            )
                    });
                    if live.and_then(|o| self.jobs[o]) != Some(id) {
                        self.fail(format!("job {j}'s enqueue returned {id}, not the live job"));
                    }
                } else {
                    self.jobs[j as usize] = Some(id);
                }
                return action;
            }
            Action::Cancel(j) => {
                let done = admin::cancel(pool, self.job(j)).await;
                let expected = self.model.next(&self.state, &action).is_some();
                if done.is_ok() != expected {
                    self.fail(format!(
                        "cancel of job {j}: {done:?}, the model says {expected}"
                    ));
                }
                action
            }
            Action::Replay(j) => {
                let done = admin::replay(pool, self.job(j)).await;
                let expected = self.model.next(&self.state, &action).is_some();
                if done.is_ok() != expected {
                    self.fail(format!(
                        "replay of job {j}: {done:?}, the model says {expected}"
                    ));
                }
                action
            }
            Action::ExpireSweep => {
                maintenance::expire(pool, 100, now).await.unwrap();
                action
            }
            Action::Rescue => {
                maintenance::rescue_lapsed(pool, 100, now).await.unwrap();
                action
            }
            Action::Due(j) => {
                self.set(j, "run_at = $2").await;
                action
            }
            Action::Expires(j) => {
                // Past for the database's own clock too (replay reads `now()`).
                self.set(j, "expires_at = least($2, now()) - interval '1 second'")
                    .await;
                action
            }
            Action::Age {
                w,
                instant: Instant::Row,
            } => {
                let next = self.model.next(&self.state, &action);
                if let Some(Ok(next)) = &next {
                    if next.workers[w as usize].row == Some(Phase::Gap) {
                        sqlx::query(
                            "update docket.workers set lease_expires_at = $2 - interval '1 second' where id = $1",
                        )
                        .bind(self.workers[w as usize].id)
                        .bind(self.now)
                        .execute(pool)
                        .await
                        .unwrap();
                    }
                }
                action
            }
            Action::Write { w, job, token, .. } => {
                let run = self.state.workers[w as usize]
                    .runs
                    .iter()
                    .find(|r| (r.job, r.token) == (job, token))
                    .expect("a run")
                    .clone();
                let docket_protocol::jobs::Stage::Ended(out) = run.stage else {
                    self.fail(format!("{action:?} of a run that has not ended"));
                };
                let before = self.state.jobs[job as usize].clone();
                let changed = self.outcome(w, job, token, out).await;
                self.apply(&action);
                let after = &self.state.jobs[job as usize];
                if changed != (before != *after) {
                    self.fail(format!(
                        "{action:?} changed the row: {changed}, the model says {}",
                        before != *after
                    ));
                }
                return action;
            }
            Action::ReconcileRead(w) => {
                self.apply(&action);
                let held = maintenance::held_by(pool, self.workers[w as usize].id)
                    .await
                    .unwrap();
                let mut got: Vec<(JobId, Uuid, bool)> = held
                    .iter()
                    .map(|h| (h.id, h.token, h.cancel_requested))
                    .collect();
                let reading = self.state.workers[w as usize]
                    .reading
                    .clone()
                    .expect("read");
                let mut expected: Vec<(JobId, Uuid, bool)> = reading
                    .held
                    .iter()
                    .map(|(j, t, c)| (self.job(*j), self.tokens[t], *c))
                    .collect();
                got.sort();
                expected.sort();
                if got != expected {
                    self.fail(format!(
                        "held_by({w}) is {got:?}, the model read {expected:?}"
                    ));
                }
                return action;
            }
            Action::ReconcileAct(w) => {
                for (job, token) in self.model.hand_backs(&self.state, w) {
                    self.outcome(w, job, token, Out::HandBack).await;
                }
                action
            }
            Action::BeatSend { w, reached: true } => {
                let worker = &self.workers[w as usize];
                let renewal = maintenance::heartbeat(pool, worker, LEASE, now)
                    .await
                    .unwrap();
                self.apply(&action);
                let beat = self.state.workers[w as usize]
                    .beat
                    .expect("a beat in flight");
                if renewal.lapsed != beat.lapsed {
                    self.fail(format!(
                        "worker {w}'s heartbeat says lapsed = {}",
                        renewal.lapsed
                    ));
                }
                return action;
            }
            Action::Exit(w) => {
                if self.model.next(&self.state, &action).is_some() {
                    maintenance::deregister(pool, self.workers[w as usize].id)
                        .await
                        .unwrap();
                }
                action
            }
            other => other,
        };
        self.apply(&action);
        action
    }

    /// The model's step (nothing when the action does nothing in this state).
    fn apply(&mut self, action: &Action) {
        match self.model.next(&self.state, action) {
            Some(Ok(next)) => self.state = next,
            Some(Err(property)) => self.fail(format!("the model broke a property: {property}")),
            None => {}
        }
    }

    async fn enqueue(&self, j: usize) -> JobId {
        let spec = &self.model.jobs[j];
        let mut job = NewJob::new(KIND, serde_json::json!({ "slot": j }));
        // `NewJob` defaults ride along; the walk sets what the model knows of.
        job.queue = self.queue.clone();
        job.max_attempts = i32::from(self.model.max_attempts);
        job.unique_key = spec.key.map(|k| format!("{}-key{k}", self.queue));
        if spec.expires {
            job.expires_at = Some(self.now + chrono::Duration::days(1));
        }
        docket_queue::enqueue(&self.pool, &job).await.unwrap()
    }

    /// Moves one stored instant of job `j` (the model's time passing it).
    async fn set(&self, j: u8, assignment: &str) {
        sqlx::query(&format!(
            "update docket.jobs set {assignment} where id = $1"
        ))
        .bind(self.job(j))
        .bind(self.now)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// Writes one outcome through `apply_outcomes`; whether it changed the job.
    async fn outcome(&self, w: u8, job: u8, token: Token, out: Out) -> bool {
        let outcome = match out {
            Out::Complete => Outcome::Complete,
            Out::Retry => Outcome::Retry {
                error: "failed".into(),
                delay: LATER,
            },
            Out::DeadLetter => Outcome::DeadLetter {
                reason: "permanent".into(),
                error: "failed for good".into(),
            },
            Out::Snooze => Outcome::Snooze { delay: LATER },
            Out::HandBack => Outcome::Snooze {
                delay: Duration::ZERO,
            },
            Out::Cancel => Outcome::Cancel,
        };
        let id = self.job(job);
        let item = AttemptOutcome {
            id,
            attempt: i32::from(self.state.jobs[job as usize].attempt),
            token: self.tokens[&token],
            outcome,
        };
        let applied = docket_queue::apply_outcomes(
            &self.pool,
            self.workers[w as usize].id,
            &[item],
            Some(self.now),
        )
        .await
        .unwrap();
        applied.changed.iter().any(|(changed, _)| *changed == id)
    }

    fn slot(&self, id: JobId) -> u8 {
        self.jobs
            .iter()
            .position(|j| *j == Some(id))
            .expect("a job of this walk") as u8
    }

    /// The database's rows as the model sees them, and the model's invariants.
    async fn compare(&self, after: &str) {
        let rows: Vec<Job> = sqlx::query_as("select * from docket.jobs where queue = $1")
            .bind(&self.queue)
            .fetch_all(&self.pool)
            .await
            .unwrap();
        for (j, model) in self.state.jobs.iter().enumerate() {
            let Some(id) = self.jobs[j] else { continue };
            let row = rows.iter().find(|r| r.id == id).expect("the job's row");
            let state = match row.state {
                JobState::Pending => State::Pending,
                JobState::Retrying => State::Retrying,
                JobState::Processing => State::Processing,
                JobState::Completed => State::Completed,
                JobState::DeadLetter => State::DeadLetter,
                JobState::Cancelled => State::Cancelled,
            };
            let holder = row.locked_by.map(|by| {
                let w = self
                    .workers
                    .iter()
                    .position(|w| w.id == by)
                    .expect("a walk worker") as u8;
                let token = row.lease_token.expect("a token");
                let t = self
                    .tokens
                    .iter()
                    .find(|(_, uuid)| **uuid == token)
                    .map(|(t, _)| *t)
                    .unwrap_or(u8::MAX);
                (w, t)
            });
            let seen = (
                state,
                row.attempt as u8,
                holder,
                row.cancel_requested_at.is_some(),
                row.run_at <= self.now,
                row.expires_at.is_some_and(|at| at <= self.now),
                row.dead_letter_reason.as_deref() == Some("expired"),
            );
            let expected = (
                model.state,
                model.attempt,
                model.holder,
                model.cancel_requested,
                model.due,
                model.expired,
                model.expired_reason,
            );
            // A finished job's run_at is the database's business.
            let (seen, expected) = if matches!(state, State::Pending | State::Retrying) {
                (seen, expected)
            } else {
                (
                    (seen.0, seen.1, seen.2, seen.3, true, seen.5, seen.6),
                    (
                        expected.0, expected.1, expected.2, expected.3, true, expected.5,
                        expected.6,
                    ),
                )
            };
            if seen != expected {
                self.fail(format!(
                    "after {after}: job {j} is (state, attempt, holder, cancel, due, expired, expired reason) {seen:?} in the database, {expected:?} in the model"
                ));
            }
        }
        for (w, worker) in self.workers.iter().enumerate() {
            let lease: Option<DateTime<Utc>> =
                sqlx::query_scalar("select lease_expires_at from docket.workers where id = $1")
                    .bind(worker.id)
                    .fetch_optional(&self.pool)
                    .await
                    .unwrap();
            let seen = lease.map(|at| at <= self.now);
            let expected = self.state.workers[w].row.map(|p| p == Phase::Gap);
            if seen != expected {
                self.fail(format!(
                    "after {after}: worker {w}'s row (lapsed?) is {seen:?} in the database, {expected:?} in the model"
                ));
            }
        }
        let live_keys: i64 = sqlx::query_scalar(
            "select count(*) - count(distinct unique_key) from docket.jobs
             where queue = $1 and unique_key is not null and state in ('pending', 'retrying', 'processing')",
        )
        .bind(&self.queue)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        if live_keys != 0 {
            self.fail(format!("after {after}: two live jobs share a unique key"));
        }
        // The rows agree: the model's invariants hold of the database too.
        if let Err(property) = self.model.invariant(&self.state) {
            self.fail(format!("after {after}: {property}"));
        }
    }
}
