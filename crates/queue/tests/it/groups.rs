//! Fair groups: a job's `group_key` from every enqueue path, and claims that share a
//! queue's slots between the groups with ready work.

use std::collections::HashMap;

use docket_queue::{admin, claim, claim_fair, enqueue, enqueue_many, GroupCursor, Job, NewJob};
use docket_testkit::TestDb;

use crate::claim_request as request;
use crate::{hold_snapshot, index_entries_read};
use serde_json::json;
use uuid::Uuid;

fn grouped(n: usize, group: &str) -> Vec<NewJob> {
    (0..n)
        .map(|i| NewJob::new("k", json!({"n": i})).group(group))
        .collect()
}

fn by_group(jobs: &[Job]) -> HashMap<Option<String>, usize> {
    let mut counts = HashMap::new();
    for job in jobs {
        *counts.entry(job.group_key.clone()).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn a_group_of_ten_is_not_starved_by_a_group_of_a_thousand_ahead_of_it() {
    let db = TestDb::new().await;
    enqueue_many(&db.pool, &grouped(1000, "big-tenant"))
        .await
        .unwrap();
    enqueue_many(&db.pool, &grouped(10, "small-tenant"))
        .await
        .unwrap();

    // The plain claim takes jobs in order: the small tenant would wait for all 1,000.
    let plain = claim(&db.pool, &request(10)).await.unwrap().jobs;
    assert!(plain.is_empty(), "grouped jobs are not the plain claim's");

    let mut cursor = GroupCursor::default();
    let mut small = 0;
    for _ in 0..2 {
        let claimed = claim_fair(&db.pool, &request(10), &mut cursor)
            .await
            .unwrap()
            .jobs;
        assert_eq!(claimed.len(), 10, "every claim is full");
        small += by_group(&claimed)
            .get(&Some("small-tenant".to_owned()))
            .copied()
            .unwrap_or(0);
    }
    assert_eq!(
        small, 10,
        "the small tenant's ten ran within the first two claims"
    );
}

/// The jobs without a group are one member of the rotation, like a group. (This test used
/// to assert that they got a share of every claim, so that with claims too small to serve
/// every member they took every claim first: see
/// `one_job_claims_alternate_between_jobs_without_a_group_and_a_group`.)
#[tokio::test]
async fn claims_go_round_every_group_in_turn_and_jobs_without_a_group_take_a_turn_like_one() {
    let db = TestDb::new().await;
    for g in 0..29 {
        enqueue_many(&db.pool, &grouped(20, &format!("tenant-{g:02}")))
            .await
            .unwrap();
    }
    let plain: Vec<NewJob> = (0..100)
        .map(|i| NewJob::new("k", json!({"n": i})))
        .collect();
    enqueue_many(&db.pool, &plain).await.unwrap();

    // A claim of ten serves three members (at least four jobs a member it could fill): ten
    // claims go round the 29 groups and the jobs without a group once.
    let mut cursor = GroupCursor::default();
    let mut seen: HashMap<Option<String>, usize> = HashMap::new();
    for _ in 0..10 {
        let claimed = claim_fair(&db.pool, &request(10), &mut cursor)
            .await
            .unwrap()
            .jobs;
        assert_eq!(claimed.len(), 10);
        assert_eq!(by_group(&claimed).len(), 3, "three members");
        for (group, n) in by_group(&claimed) {
            *seen.entry(group).or_default() += n;
        }
    }
    assert_eq!(
        seen.len(),
        30,
        "ten claims reached all 30 members: {seen:?}"
    );
    assert!(
        seen.values().all(|&n| n <= 4),
        "no member took more than one turn: {seen:?}"
    );
}

#[tokio::test]
async fn a_queue_without_groups_claims_as_before() {
    let db = TestDb::new().await;
    let jobs: Vec<NewJob> = (0..20).map(|i| NewJob::new("k", json!({"n": i}))).collect();
    enqueue_many(&db.pool, &jobs).await.unwrap();
    let mut cursor = GroupCursor::default();
    let claimed = claim_fair(&db.pool, &request(15), &mut cursor)
        .await
        .unwrap()
        .jobs;
    assert_eq!(claimed.len(), 15);
    assert!(
        docket_queue::queues::grouped(&db.pool, &["default".to_owned()])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_group_is_kept_from_rust_sql_and_bulk_enqueue_and_checked() {
    let db = TestDb::new().await;
    let one = enqueue(&db.pool, &NewJob::new("k", json!({})).group("acme"))
        .await
        .unwrap();
    assert_eq!(
        admin::show(&db.pool, one)
            .await
            .unwrap()
            .group_key
            .as_deref(),
        Some("acme")
    );
    let sql: Uuid = sqlx::query_scalar("select docket.enqueue('k', '{}', group_key => 'globex')")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let job = admin::show(&db.pool, docket_queue::JobId(sql))
        .await
        .unwrap();
    assert_eq!(job.group_key.as_deref(), Some("globex"));
    let many = enqueue_many(
        &db.pool,
        &[
            NewJob::new("k", json!({})).group("initech"),
            NewJob::new("k", json!({})),
            NewJob::new("k", json!({}))
                .group("initech")
                .unique_key("once"),
        ],
    )
    .await
    .unwrap();
    let groups: Vec<Option<String>> = groups_of(&db, &many).await;
    assert_eq!(
        groups,
        [Some("initech".into()), None, Some("initech".into())]
    );
    assert_eq!(
        docket_queue::queues::grouped(&db.pool, &["default".to_owned(), "other".to_owned()])
            .await
            .unwrap(),
        ["default"]
    );

    for bad in ["", &"g".repeat(257), "nul\0"] {
        let err = enqueue(&db.pool, &NewJob::new("k", json!({})).group(bad))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("group_key"), "{err}");
    }
}

async fn groups_of(db: &TestDb, ids: &[docket_queue::JobId]) -> Vec<Option<String>> {
    let mut groups = Vec::new();
    for id in ids {
        groups.push(admin::show(&db.pool, *id).await.unwrap().group_key);
    }
    groups
}

/// The fair claim's plans may not depend on the table's statistics: a table bulk-loaded
/// since its last `ANALYZE` (or whose statistics counters an immediate restart discarded)
/// is estimated at a handful of rows, and the fair claim then read every ready job of the
/// queue through `jobs_snapshot` and sorted them, on every claim (the stress drill ran at
/// 28 jobs/s). Here the table has never been analyzed.
#[tokio::test]
async fn a_fair_claim_reads_only_what_it_takes_on_a_table_never_analyzed() {
    // One connection, so the raw `begin` below holds every statement in one transaction
    // and its statistics view counts exactly their reads.
    let db = TestDb::with_pool_size(1).await;
    sqlx::raw_sql(
        "insert into docket.jobs (kind, group_key)
         select 'k', 'tenant-' || (i % 3) from generate_series(1, 30000) i;
         insert into docket.jobs (kind) select 'k' from generate_series(1, 10000)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let reltuples: f32 =
        sqlx::query_scalar("select reltuples from pg_class where oid = 'docket.jobs'::regclass")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(reltuples < 0.0, "the table was never analyzed");

    sqlx::query("begin").execute(&db.pool).await.unwrap();
    let grouped = docket_queue::queues::grouped(&db.pool, &["default".to_owned()])
        .await
        .unwrap();
    assert_eq!(grouped, ["default"]);
    let mut cursor = GroupCursor::default();
    // Four members at least four jobs each: the three groups and the ungrouped jobs.
    let claimed = claim_fair(&db.pool, &request(16), &mut cursor)
        .await
        .unwrap()
        .jobs;
    assert_eq!(claimed.len(), 16);
    assert_eq!(
        by_group(&claimed).len(),
        4,
        "three groups and the ungrouped jobs"
    );
    let (fetched, scanned): (i64, i64) = sqlx::query_as(
        "select coalesce(idx_tup_fetch, 0), coalesce(seq_tup_read, 0)
         from pg_stat_xact_user_tables where relid = 'docket.jobs'::regclass",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    sqlx::query("rollback").execute(&db.pool).await.unwrap();
    assert_eq!(scanned, 0, "no sequential scan");
    assert!(
        fetched <= 100,
        "the probe and the fair claim fetched {fetched} rows from the heap to take 16"
    );
}

/// A grouped job of a kind no live worker runs was never parked (the parker looked only at
/// jobs without a group), so every fair claim of its queue passed over it again.
#[tokio::test]
async fn grouped_jobs_of_a_kind_nobody_runs_are_parked_and_unparked_like_the_rest() {
    let db = TestDb::new().await;
    let now = chrono::Utc::now();
    let worker = docket_queue::maintenance::WorkerInfo {
        id: Uuid::now_v7(),
        host: "test-host".into(),
        pid: 1,
        queues: vec!["default".into()],
        kinds: vec!["k".into()],
        version: "test".into(),
    };
    let lease = std::time::Duration::from_secs(30);
    docket_queue::maintenance::heartbeat(&db.pool, &worker, lease, Some(now))
        .await
        .unwrap();
    let long_ago = now - chrono::Duration::minutes(10);
    let mut jobs = Vec::new();
    for tenant in ["tenant-a", "tenant-b"] {
        jobs.push(
            NewJob::new("nobody.runs", json!({}))
                .group(tenant)
                .run_at(long_ago),
        );
        jobs.push(NewJob::new("k", json!({})).group(tenant).run_at(long_ago));
    }
    jobs.push(NewJob::new("nobody.runs", json!({})).run_at(long_ago));
    enqueue_many(&db.pool, &jobs).await.unwrap();

    let parked = docket_queue::maintenance::park_unhandled(
        &db.pool,
        std::time::Duration::from_secs(60),
        100,
        100,
        Some(now),
    )
    .await
    .unwrap();
    assert_eq!(
        parked.len(),
        3,
        "both groups' and the ungrouped one: {parked:?}"
    );
    assert!(parked
        .iter()
        .all(|(queue, kind)| queue == "default" && kind == "nobody.runs"));

    // The fair claim no longer meets them; the handled grouped jobs are claimed as before.
    let claimed = claim_fair(&db.pool, &request(10), &mut GroupCursor::default())
        .await
        .unwrap()
        .jobs;
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|job| job.kind == "k"));

    // A worker that runs the kind unparks them, groups and all.
    let runner = docket_queue::maintenance::WorkerInfo {
        id: Uuid::now_v7(),
        kinds: vec!["nobody.runs".into()],
        ..worker
    };
    docket_queue::maintenance::heartbeat(&db.pool, &runner, lease, Some(now))
        .await
        .unwrap();
    let unparked = docket_queue::maintenance::unpark_handled(&db.pool, 100, Some(now))
        .await
        .unwrap();
    assert_eq!(unparked, 3);
}

/// While a snapshot older than the claims is held, the claimed jobs' entries stay at the
/// head of every group in `jobs_claim_grouped`, and cannot even be marked dead. The fair
/// claim found its groups by probes that landed on those heads and took each group's share
/// from its head: every claim read every dead entry again (the grouped queue crawled as
/// the backlog was worked off). Now the groups are found from their tails and each share
/// starts where the claimer left the group.
#[tokio::test]
async fn a_fair_claim_does_not_read_the_entries_earlier_claims_left_while_a_snapshot_is_held() {
    // One connection, so that a raw `begin` holds the measured claim in one transaction.
    let db = TestDb::with_pool_size(1).await;
    for g in 0..10 {
        enqueue_many(&db.pool, &grouped(110, &format!("tenant-{g}")))
            .await
            .unwrap();
    }
    let mut holder = hold_snapshot(&db.url).await;

    let patient = || GroupCursor::new(std::time::Duration::from_secs(3600), None);
    let mut cursor = patient();
    for _ in 0..10 {
        let claimed = claim_fair(&db.pool, &request(100), &mut cursor)
            .await
            .unwrap();
        assert_eq!(claimed.jobs.len(), 100);
    }

    sqlx::query("begin").execute(&db.pool).await.unwrap();
    let before = index_entries_read(&db.pool, "docket.jobs_claim_grouped").await;
    let resumed = claim_fair(&db.pool, &request(50), &mut cursor)
        .await
        .unwrap();
    let read_resuming = index_entries_read(&db.pool, "docket.jobs_claim_grouped").await - before;
    sqlx::query("rollback").execute(&db.pool).await.unwrap();
    assert_eq!(resumed.jobs.len(), 50);
    assert_eq!(by_group(&resumed.jobs).len(), 10, "five from each group");

    sqlx::query("begin").execute(&db.pool).await.unwrap();
    let before = index_entries_read(&db.pool, "docket.jobs_claim_grouped").await;
    let from_heads = claim_fair(&db.pool, &request(50), &mut patient())
        .await
        .unwrap();
    let read_from_heads = index_entries_read(&db.pool, "docket.jobs_claim_grouped").await - before;
    sqlx::query("rollback").execute(&db.pool).await.unwrap();
    let ids = |jobs: &[Job]| {
        let mut ids: Vec<_> = jobs.iter().map(|job| job.id).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&from_heads.jobs), ids(&resumed.jobs), "the same jobs");

    assert!(
        read_from_heads >= 1_000,
        "from the heads, the claim reads the 1,000 claimed jobs' entries ({read_from_heads})"
    );
    assert!(
        read_resuming <= 150,
        "the resuming fair claim read {read_resuming} index entries to take 50"
    );
    sqlx::query("rollback").execute(&mut holder).await.unwrap();
}

/// A job that becomes ready behind a group's position (a retry, a higher priority) is
/// found once the group's share past the position comes back short.
#[tokio::test]
async fn a_job_behind_a_groups_position_is_claimed_once_the_group_runs_short() {
    let db = TestDb::new().await;
    let queued = enqueue_many(
        &db.pool,
        &(0..6)
            .map(|i| {
                NewJob::new("k", json!({ "n": i }))
                    .group("acme")
                    .priority(1)
            })
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    let mut cursor = GroupCursor::new(std::time::Duration::from_secs(3600), None);
    let ids = |jobs: &[Job]| jobs.iter().map(|job| job.id).collect::<Vec<_>>();

    // One group and the ungrouped member: a share of 2 each of 4.
    let first = claim_fair(&db.pool, &request(4), &mut cursor)
        .await
        .unwrap();
    assert_eq!(
        ids(&first.jobs),
        queued[..4],
        "rounds hand the unused share on"
    );
    let urgent = enqueue(
        &db.pool,
        &NewJob::new("k", json!({})).group("acme").priority(0),
    )
    .await
    .unwrap();
    let second = claim_fair(&db.pool, &request(4), &mut cursor)
        .await
        .unwrap();
    assert_eq!(ids(&second.jobs), queued[4..], "past the position, short");
    let third = claim_fair(&db.pool, &request(4), &mut cursor)
        .await
        .unwrap();
    assert_eq!(ids(&third.jobs), [urgent], "then from the group's head");
}

/// Claims `n` times one job each (a worker with concurrency 1), through one cursor, and
/// returns each claim's group (`None` for a job without one; a claim that took nothing
/// ends the list).
async fn one_job_claims(db: &TestDb, cursor: &mut GroupCursor, n: usize) -> Vec<Option<String>> {
    let mut taken = Vec::new();
    for _ in 0..n {
        let claimed = claim_fair(&db.pool, &request(1), cursor)
            .await
            .unwrap()
            .jobs;
        match claimed.as_slice() {
            [] => break,
            [job] => taken.push(job.group_key.clone()),
            more => panic!("a claim of one took {}", more.len()),
        }
    }
    taken
}

/// `docket.ready_groups` returned groups whose jobs were all in the future, and the cursor
/// moved only past a group that yielded a job: a group whose one job was delayed ten
/// minutes was offered every one-job claim, and the other groups' ready jobs waited.
#[tokio::test]
async fn a_group_with_nothing_due_does_not_stop_the_rotation() {
    let db = TestDb::new().await;
    let later = chrono::Utc::now() + chrono::Duration::seconds(600);
    enqueue(
        &db.pool,
        &NewJob::new("k", json!({})).group("zz").run_at(later),
    )
    .await
    .unwrap();
    enqueue_many(&db.pool, &grouped(5, "aa")).await.unwrap();

    let taken = one_job_claims(&db, &mut GroupCursor::default(), 6).await;
    assert_eq!(
        taken,
        vec![Some("aa".to_owned()); 5],
        "five one-job claims take aa's five, and nothing is due after them"
    );
}

/// A group whose only job waits out a retry's backoff must not pace the queue: the
/// rotation stopped at it until the backoff ended.
#[tokio::test]
async fn a_retrying_job_waiting_out_its_backoff_does_not_hold_up_the_other_groups() {
    let db = TestDb::new().await;
    enqueue(&db.pool, &NewJob::new("k", json!({})).group("mm"))
        .await
        .unwrap();
    let failing = claim_fair(&db.pool, &request(1), &mut GroupCursor::default())
        .await
        .unwrap()
        .jobs;
    let [failing] = failing.as_slice() else {
        panic!("claimed {failing:?}");
    };
    let worker = failing.locked_by.unwrap();
    docket_queue::apply_outcomes(
        &db.pool,
        worker,
        &[docket_queue::AttemptOutcome::of(
            failing,
            docket_queue::Outcome::Retry {
                error: "boom".into(),
                delay: std::time::Duration::from_secs(600),
            },
        )],
        None,
    )
    .await
    .unwrap();
    enqueue_many(&db.pool, &grouped(3, "aa")).await.unwrap();
    enqueue_many(&db.pool, &grouped(3, "zz")).await.unwrap();

    let taken = one_job_claims(&db, &mut GroupCursor::default(), 7).await;
    assert_eq!(
        taken.len(),
        6,
        "six claims took the six ready jobs: {taken:?}"
    );
    assert!(
        taken.windows(2).all(|pair| pair[0] != pair[1]),
        "aa and zz take turns: {taken:?}"
    );
}

/// The jobs without a group were served first in every claim: with concurrency 1 (claims
/// of one job) a group's jobs waited behind every job without a group. They are one member
/// of the rotation, like a group.
#[tokio::test]
async fn one_job_claims_alternate_between_jobs_without_a_group_and_a_group() {
    let db = TestDb::new().await;
    let plain: Vec<NewJob> = (0..50).map(|i| NewJob::new("k", json!({"n": i}))).collect();
    enqueue_many(&db.pool, &plain).await.unwrap();
    enqueue_many(&db.pool, &grouped(3, "acme")).await.unwrap();

    let taken = one_job_claims(&db, &mut GroupCursor::default(), 6).await;
    let acme = taken
        .iter()
        .filter(|g| g.as_deref() == Some("acme"))
        .count();
    assert_eq!(acme, 3, "acme's three ran within six claims: {taken:?}");
    assert!(
        taken.windows(2).all(|pair| pair[0] != pair[1]),
        "they take turns: {taken:?}"
    );
}

/// Groups with nothing due are walked past a bounded piece at a time, and one claim goes on
/// past several pieces: a hundred of them ahead of the one group with work do not make a
/// claim come back empty (which would send the worker to wait for its next poll).
#[tokio::test]
async fn a_long_run_of_groups_with_nothing_due_is_passed_over_within_one_claim() {
    let db = TestDb::new().await;
    let later = chrono::Utc::now() + chrono::Duration::seconds(600);
    let delayed: Vec<NewJob> = (0..100)
        .map(|g| {
            NewJob::new("k", json!({}))
                .group(format!("later-{g:03}"))
                .run_at(later)
        })
        .collect();
    enqueue_many(&db.pool, &delayed).await.unwrap();
    enqueue_many(&db.pool, &grouped(2, "acme")).await.unwrap();

    let taken = one_job_claims(&db, &mut GroupCursor::default(), 3).await;
    assert_eq!(taken, vec![Some("acme".to_owned()); 2]);
}

/// A group is due when any of its jobs is, whatever the priority of its later ones: the
/// walk lands on a group's last job (here a delayed one of a lower priority) and then looks
/// at each of its priorities.
#[tokio::test]
async fn a_group_whose_last_job_is_delayed_is_due_when_an_earlier_one_is() {
    let db = TestDb::new().await;
    let later = chrono::Utc::now() + chrono::Duration::seconds(600);
    let due = enqueue(&db.pool, &NewJob::new("k", json!({})).group("acme"))
        .await
        .unwrap();
    enqueue(
        &db.pool,
        &NewJob::new("k", json!({}))
            .group("acme")
            .priority(5)
            .run_at(later),
    )
    .await
    .unwrap();

    let claimed = claim_fair(&db.pool, &request(1), &mut GroupCursor::default())
        .await
        .unwrap()
        .jobs;
    assert_eq!(claimed.iter().map(|job| job.id).collect::<Vec<_>>(), [due]);
}
