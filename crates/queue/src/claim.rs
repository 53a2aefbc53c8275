//! Claim: the ready → processing step.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::db::{self, ClaimPosition};
use crate::error::Result;
use crate::job::Job;

/// What to claim.
#[derive(Clone, Debug)]
pub struct ClaimRequest<'a> {
    /// The queue to claim from.
    pub queue: &'a str,
    /// Only these kinds (a worker claims only what it can run); `None` for any kind.
    pub kinds: Option<&'a [String]>,
    /// The worker that will hold the jobs. Its heartbeat is its lease: register it with
    /// [`crate::maintenance::heartbeat`] first, or the rescuer frees the jobs at once.
    pub worker_id: Uuid,
    /// This claim's fencing token: make a fresh one for every claim
    /// ([`ClaimRequest::new_token`]). Every job the claim takes carries it, and each
    /// outcome must name it. Knowing it before the claim is sent lets a worker whose claim
    /// reply was lost find (and hand back) exactly the jobs that claim took.
    pub token: Uuid,
    /// At most this many jobs.
    pub limit: u32,
    /// The time to claim at; `None` for the database's clock.
    pub now: Option<DateTime<Utc>>,
}

impl<'a> ClaimRequest<'a> {
    /// A fresh claim token: a UUID v7, never repeated.
    pub fn new_token() -> Uuid {
        Uuid::now_v7()
    }

    fn params(&self) -> db::ClaimParams<'a> {
        db::ClaimParams {
            queue: self.queue,
            kinds: self.kinds,
            worker_id: self.worker_id,
            token: self.token,
            limit: i64::from(self.limit),
            now: self.now,
        }
    }
}

/// The result of one claim.
#[derive(Clone, Debug, Default)]
pub struct Claimed {
    /// Jobs now `processing` under the worker, in priority, run_at, id order.
    pub jobs: Vec<Job>,
}

/// Claims up to `limit` ready jobs without a group of one queue in one statement with
/// `FOR UPDATE SKIP LOCKED`: concurrent claimers never get the same job and never wait on
/// each other. Each claimed job is `processing`, its `attempt` incremented, its
/// `locked_by` the worker.
///
/// # Transactions, locks, and timeouts
///
/// The row locks are held only for the statement's transaction. Run it on a pool (auto-
/// commit) or commit right after: the job's lease is its `locked_by` plus the worker's
/// heartbeat, not a row lock, so nothing is locked while the job runs.
///
/// # Expired jobs
///
/// A ready job past its `expires_at` is never claimed and does not count against
/// `limit`: however many expired jobs sit at the head of a queue, a claim still takes the
/// fresh ones behind them. [`crate::maintenance::expire`] dead-letters them.
///
/// # Errors
///
/// [`crate::Error::Database`] when the database fails.
pub async fn claim(exec: impl PgExecutor<'_>, request: &ClaimRequest<'_>) -> Result<Claimed> {
    let params = request.params();
    let mut jobs = db::job_claim(exec, &params, None).await?;
    jobs.sort_by_key(|job| (job.priority, job.run_at, job.id));
    Ok(Claimed { jobs })
}

/// How often a [`ClaimCursor`] goes back to the head of a busy queue at most: the longest
/// a job that became ready behind the cursor waits, as long as scans from the head are
/// cheap.
pub const HEAD_SCAN_EVERY: Duration = Duration::from_secs(1);

/// By default scans from the head may take at most one part in this many of a claimer's
/// time. While vacuum is held back they grow slower with every claim, and are spaced out to
/// match.
pub const HEAD_SCAN_BUDGET: u32 = 20;

/// Where one claimer's plain claims have reached in its queue: the last job it claimed.
///
/// Every claim leaves dead index entries at the head of the queue's claim index, and
/// PostgreSQL removes them only when vacuum runs, which it cannot do while any older
/// snapshot is open (a `pg_dump`, a long report, an idle transaction, a replica with
/// `hot_standby_feedback`); it cannot even mark them dead for later scans to skip. A claim
/// that starts at the head steps over all of them, so claims grow slower as a backlog is
/// worked off, and far slower while a snapshot is held. A claim that starts after the
/// cursor jumps over them in one index descent.
///
/// Jobs can become ready behind the cursor: a higher priority enqueued later, a job rescued
/// or replayed with its old `run_at`, an enqueue that commits late. So claims go back to
/// the head once the queue past the cursor has run dry, and at least every
/// [`HEAD_SCAN_EVERY`] while it does not, as long as scans from the head take no more than
/// a twentieth of the time; when they would (many dead entries), they are spaced out so
/// that they do not.
#[derive(Clone, Debug, Default)]
pub struct ClaimCursor {
    after: Option<ClaimPosition>,
    /// The last claim past the cursor came back short: look behind it next.
    ran_dry: bool,
    heads: HeadScans,
}

impl ClaimCursor {
    /// A cursor at the head. Claims go back to the head at least every `head_scan_every`
    /// while the queue is busy, and scans from the head take at most one part in
    /// `head_scan_budget` of the claimer's time (`None`: they are never spaced out).
    pub fn new(head_scan_every: Duration, head_scan_budget: Option<u32>) -> Self {
        ClaimCursor {
            after: None,
            ran_dry: false,
            heads: HeadScans::new(head_scan_every, head_scan_budget),
        }
    }
}

/// When a claimer last went back to the head of its queue (or of every group), and how
/// long that took: the rule for when to go back again.
#[derive(Clone, Debug)]
struct HeadScans {
    at: Option<Instant>,
    /// How long the last scan from the head took.
    cost: Duration,
    every: Duration,
    budget: Option<u32>,
}

impl Default for HeadScans {
    fn default() -> Self {
        Self::new(HEAD_SCAN_EVERY, Some(HEAD_SCAN_BUDGET))
    }
}

impl HeadScans {
    fn new(every: Duration, budget: Option<u32>) -> Self {
        HeadScans {
            at: None,
            cost: Duration::ZERO,
            every,
            budget,
        }
    }

    /// Whether a scan from the head is due: `busy` when the queue past the cursor still had
    /// work at the last claim, so only the periodic one is.
    fn due(&self, busy: bool) -> bool {
        let Some(at) = self.at else {
            return true;
        };
        let spacing = self
            .budget
            .map_or(Duration::ZERO, |budget| self.cost * budget);
        let spacing = if busy {
            spacing.max(self.every)
        } else {
            spacing
        };
        at.elapsed() >= spacing
    }

    /// A scan from the head that began at `started` has just ended.
    fn scanned(&mut self, started: Instant) {
        self.at = Some(Instant::now());
        self.cost = started.elapsed();
    }
}

/// A claimed job's place in the claim order.
fn position(job: &Job) -> ClaimPosition {
    ClaimPosition {
        priority: job.priority,
        run_at: job.run_at,
        id: job.id.0,
    }
}

/// [`claim`], starting where this claimer's last claim ended (see [`ClaimCursor`]): the
/// same jobs in the same order while the queue is worked in order, at a cost that does not
/// grow with the dead entries earlier claims left.
///
/// One statement, so that claimed jobs start at once. When the queue past the cursor has no
/// ready job, the same call claims from the head instead; when it has some but fewer than
/// `limit`, they are returned, and the next claim (the claimer is woken when they finish)
/// starts from the head. Either way, a short claim raises the queue's wake-up flag.
///
/// # Errors
///
/// [`crate::Error::Database`] when the database fails; jobs claimed by a statement that
/// succeeded carry the token.
pub async fn claim_resuming<'c, E>(
    exec: E,
    request: &ClaimRequest<'_>,
    cursor: &mut ClaimCursor,
) -> Result<Claimed>
where
    E: PgExecutor<'c> + Copy,
{
    let params = request.params();
    let from_cursor = cursor.after.filter(|_| !cursor.heads.due(!cursor.ran_dry));
    let mut jobs = match &from_cursor {
        Some(after) => db::job_claim(exec, &params, Some(after)).await?,
        None => Vec::new(),
    };
    cursor.ran_dry = from_cursor.is_some() && (jobs.len() as i64) < params.limit;
    if from_cursor.is_none() || (jobs.is_empty() && cursor.heads.due(false)) {
        let started = Instant::now();
        jobs = db::job_claim(exec, &params, None).await?;
        cursor.heads.scanned(started);
        cursor.ran_dry = false;
    }
    jobs.sort_by_key(|job| (job.priority, job.run_at, job.id));
    // The next claim resumes after the last job taken; a claim that took nothing leaves
    // the cursor where it was.
    if let Some(last) = jobs.last() {
        cursor.after = Some(position(last));
    }
    Ok(Claimed { jobs })
}

/// The smallest share of a claim a member of the rotation gets while the claim can fill
/// it: a claim of `limit` jobs offers turns to at most `limit / GROUP_SHARE_LEAST` members
/// at a time (rounded up).
const GROUP_SHARE_LEAST: i64 = 4;

/// How many groups with nothing due one look for the next members may walk past, beyond
/// the members it looks for: a long run of such groups is passed over a bounded piece at a
/// time, the cursor moving past each piece.
const GROUPS_PASSED_OVER_MOST: i64 = 64;

/// How many times one claim looks for further members when those offered a turn could not
/// fill it (they had nothing due, or other claimers held their jobs), or when it walked
/// past [`GROUPS_PASSED_OVER_MOST`] groups with nothing due without finding one.
const FAIR_PASSES_MOST: usize = 4;

/// A member of a queue's rotation: its jobs without a group, or one group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Member {
    Ungrouped,
    Group(String),
}

/// Where a queue's fair claims stand: the last member of the rotation offered a turn or
/// passed over (the next claim goes on after it, so over successive claims every member
/// gets its turn however many there are), and in each group, the last job this claimer
/// took from it.
///
/// The rotation runs: the jobs without a group, then the groups in descending key order,
/// then round again.
///
/// Like a [`ClaimCursor`] for each group: a group's share is taken after its last job, not
/// from its head, where the dead entries of its claimed jobs pile up until vacuum removes
/// them. A group whose share past its position comes back short is claimed from its head
/// next time, and every group is, at least every [`HEAD_SCAN_EVERY`] (spaced out as slow
/// scans from the head are).
#[derive(Clone, Debug, Default)]
pub struct GroupCursor {
    /// `None`: at the start of the rotation (the jobs without a group come next).
    last: Option<Member>,
    positions: HashMap<String, ClaimPosition>,
    heads: HeadScans,
    /// The jobs without a group: their own cursor, as a plain claimer's.
    ungrouped: ClaimCursor,
}

impl GroupCursor {
    /// A cursor at every group's head, going back to every head at least every
    /// `head_scan_every` (see [`ClaimCursor::new`]).
    pub fn new(head_scan_every: Duration, head_scan_budget: Option<u32>) -> Self {
        GroupCursor {
            heads: HeadScans::new(head_scan_every, head_scan_budget),
            ungrouped: ClaimCursor::new(head_scan_every, head_scan_budget),
            ..GroupCursor::default()
        }
    }
}

/// Claims up to `limit` ready jobs of one queue, sharing them fairly between its groups
/// and its jobs without a group (round-robin, the jobs without a group being one member of
/// the rotation, like a group).
///
/// The claim offers turns to the next `limit / 4` members of the rotation after `cursor`
/// (each group served costs two index probes, so a claim serves no more groups than it can
/// give four jobs each, and the others come in the next claims). Groups with nothing due
/// (every job waits for its `run_at`: a delay, a retry's backoff) are passed over, and the
/// cursor moves past every member offered a turn, whether it had work or not: a member
/// without work never holds up the others. Each member gets an equal share (rounded up) in
/// its own priority order; what one cannot use goes, in a further round, to the members
/// that filled theirs, and when the members offered a turn still leave the claim short,
/// the claim goes on to the next members, at most once round the rotation. A claim is as
/// full as the ready work allows (a short claim tells the producer the queue is drained),
/// and a group with 100,000 ready jobs and a group with ten get the same share while both
/// have work.
///
/// Equal shares rather than weights: they need no configuration, and they keep the
/// smallest tenant's wait independent of the largest tenant's backlog.
///
/// A few autocommit statements (walk the groups, claim each round's shares), all under the
/// request's token.
///
/// # Errors
///
/// [`crate::Error::Database`] when the database fails; jobs claimed by the statements that
/// succeeded carry the token.
pub async fn claim_fair<'c, E>(
    exec: E,
    request: &ClaimRequest<'_>,
    cursor: &mut GroupCursor,
) -> Result<Claimed>
where
    E: PgExecutor<'c> + Copy,
{
    let started = Instant::now();
    let from_heads = cursor.heads.due(true);
    if from_heads {
        cursor.positions.clear();
    }
    let limit = i64::from(request.limit);
    let mut jobs: Vec<Job> = Vec::new();
    // Every member this claim offered a turn or passed over: one claim goes round the
    // rotation at most once.
    let mut seen: HashSet<Member> = HashSet::new();
    for _ in 0..FAIR_PASSES_MOST {
        let remaining = limit - jobs.len() as i64;
        if remaining <= 0 {
            break;
        }
        // Each group served costs the claim two index probes, so a claim serves at most one
        // member per GROUP_SHARE_LEAST jobs it may take; the rest wait for the next claims.
        let want = (remaining + GROUP_SHARE_LEAST - 1) / GROUP_SHARE_LEAST;
        let (members, round) = next_members(exec, request, cursor, &mut seen, want).await?;
        if !members.is_empty() {
            let got = claim_shares(exec, request, cursor, members, remaining).await?;
            jobs.extend(got);
        }
        if round {
            break;
        }
    }
    if from_heads {
        cursor.heads.scanned(started);
    }
    jobs.sort_by_key(|job| (job.priority, job.run_at, job.id));
    Ok(Claimed { jobs })
}

/// Up to `want` members of the rotation after the cursor, the cursor moved past each of
/// them and past the groups with nothing due walked over on the way; none in `seen`, each
/// added to it. Also whether the rotation has gone round once (the next member was in
/// `seen`).
async fn next_members<'c, E>(
    exec: E,
    request: &ClaimRequest<'_>,
    cursor: &mut GroupCursor,
    seen: &mut HashSet<Member>,
    want: i64,
) -> Result<(Vec<Member>, bool)>
where
    E: PgExecutor<'c> + Copy,
{
    let mut members = Vec::new();
    while (members.len() as i64) < want {
        let before = match &cursor.last {
            None => {
                if !seen.insert(Member::Ungrouped) {
                    return Ok((members, true));
                }
                members.push(Member::Ungrouped);
                cursor.last = Some(Member::Ungrouped);
                continue;
            }
            Some(Member::Ungrouped) => None,
            Some(Member::Group(key)) => Some(key.clone()),
        };
        let due = want - members.len() as i64;
        let most = due + GROUPS_PASSED_OVER_MOST;
        let walked = db::job_ready_groups(
            exec,
            request.queue,
            before.as_deref(),
            due,
            most,
            request.now,
        )
        .await?;
        let found = walked.iter().filter(|g| g.due).count() as i64;
        let at_end = found < due && (walked.len() as i64) < most;
        for group in walked {
            let member = Member::Group(group.group_key);
            if !seen.insert(member.clone()) {
                return Ok((members, true));
            }
            if group.due {
                members.push(member.clone());
            }
            cursor.last = Some(member);
        }
        if at_end {
            // Past the last group: round again, from the jobs without a group.
            cursor.last = None;
        } else if found < due {
            // A long run of groups with nothing due: the next look goes on from here.
            break;
        }
    }
    Ok((members, false))
}

/// Claims up to `limit` jobs from `members` in equal shares, in rounds: each round gives
/// every member that filled its share in the last one another share of what is left.
async fn claim_shares<'c, E>(
    exec: E,
    request: &ClaimRequest<'_>,
    cursor: &mut GroupCursor,
    mut members: Vec<Member>,
    limit: i64,
) -> Result<Vec<Job>>
where
    E: PgExecutor<'c> + Copy,
{
    let mut jobs: Vec<Job> = Vec::new();
    let mut remaining = limit;
    // A handful of rounds fills any claim.
    for _ in 0..4 {
        if remaining <= 0 || members.is_empty() {
            break;
        }
        let share = (remaining + members.len() as i64 - 1) / members.len() as i64;
        let mut filled = Vec::new();
        if members.contains(&Member::Ungrouped) {
            let take = share.min(remaining);
            let got = claim_resuming(
                exec,
                &ClaimRequest {
                    limit: u32::try_from(take).unwrap_or(u32::MAX),
                    ..request.clone()
                },
                &mut cursor.ungrouped,
            )
            .await?
            .jobs;
            remaining -= got.len() as i64;
            if got.len() as i64 == take {
                filled.push(Member::Ungrouped);
            }
            jobs.extend(got);
        }
        let named: Vec<&String> = members
            .iter()
            .filter_map(|member| match member {
                Member::Group(key) => Some(key),
                Member::Ungrouped => None,
            })
            .collect();
        if !named.is_empty() && remaining > 0 {
            // The groups share what the jobs without a group left, in this same round (a
            // queue whose jobs all have groups then needs no second round).
            let share = (remaining + named.len() as i64 - 1) / named.len() as i64;
            let starts: Vec<db::GroupStart<'_>> = named
                .iter()
                .map(|key| db::GroupStart {
                    key: key.as_str(),
                    after: cursor.positions.get(*key).copied(),
                })
                .collect();
            let params = db::ClaimParams {
                limit: remaining,
                ..request.params()
            };
            let mut got = db::job_claim_grouped(exec, &params, &starts, share).await?;
            got.sort_by_key(|job| (job.priority, job.run_at, job.id));
            remaining -= got.len() as i64;
            for group in &named {
                let taken: Vec<&Job> = got
                    .iter()
                    .filter(|job| job.group_key.as_ref() == Some(*group))
                    .collect();
                if taken.len() as i64 == share {
                    filled.push(Member::Group((*group).clone()));
                    if let Some(last) = taken.last() {
                        cursor.positions.insert((*group).clone(), position(last));
                    }
                } else {
                    // Short past its position: what became ready behind it (a retry, a
                    // higher priority) is looked for next time, from the group's head.
                    cursor.positions.remove(*group);
                }
            }
            jobs.extend(got);
        }
        members = filled;
    }
    Ok(jobs)
}

/// Says that workers are waiting for work on these queues, so that the next enqueue on
/// each notifies (`LISTEN docket_jobs`). Call it once when producers start; after that,
/// every claim that comes back short says it again.
///
/// Enqueues notify only while a worker waits: PostgreSQL serialises the commits of
/// notifying transactions, and under load, when every worker is busy, nobody needs a
/// wake-up. The flag is taken with `SKIP LOCKED`, so concurrent enqueuers never wait on one
/// another; a wake-up lost to a rolled-back enqueue, or to an enqueue that commits just
/// after a claim looked, costs at most one poll interval.
///
/// # Errors
///
/// [`crate::Error::Database`] when the database fails.
pub async fn want_wakeups(exec: impl PgExecutor<'_>, queues: &[String]) -> Result<()> {
    Ok(db::queue_wakeup_want(exec, queues).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_scans_from_the_head_are_spaced_out_to_their_budget() {
        let mut cursor = HeadScans::new(Duration::from_millis(100), Some(20));
        assert!(
            cursor.due(true),
            "a cursor that never scanned starts at the head"
        );

        cursor.at = Some(Instant::now() - Duration::from_millis(150));
        cursor.cost = Duration::from_micros(500);
        assert!(cursor.due(true), "cheap: every 100 ms while busy");
        assert!(cursor.due(false));

        cursor.cost = Duration::from_millis(50);
        assert!(!cursor.due(true), "50 ms scans: one a second at most");
        assert!(!cursor.due(false));
        cursor.at = Some(Instant::now() - Duration::from_millis(1_100));
        assert!(cursor.due(true));
        assert!(cursor.due(false));

        let mut unbudgeted = HeadScans::new(Duration::from_millis(100), None);
        unbudgeted.at = Some(Instant::now());
        unbudgeted.cost = Duration::from_secs(1);
        assert!(unbudgeted.due(false), "never spaced out");
        assert!(
            !unbudgeted.due(true),
            "but still only every 100 ms while busy"
        );
    }
}
