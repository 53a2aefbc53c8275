//! Benchmarks of the queue core: enqueue, bulk enqueue, claim + complete, snapshot.

use std::time::{Duration, Instant};

use docket_queue::{AttemptOutcome, ClaimRequest, NewJob, Outcome};
use docket_testkit::TestDb;
use serde_json::json;
use uuid::Uuid;

use crate::stats::{ms, percentiles};

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

pub(crate) async fn enqueue(jobs: usize) -> anyhow::Result<()> {
    let db = TestDb::with_pool_size(1).await;
    let job = NewJob::new("bench.noop", json!({"n": 1}));
    // Warm the connection and its prepared statement.
    for _ in 0..100 {
        docket_queue::enqueue(&db.pool, &job).await?;
    }
    let started = Instant::now();
    for _ in 0..jobs {
        docket_queue::enqueue(&db.pool, &job).await?;
    }
    let elapsed = started.elapsed();
    println!(
        "single-row enqueue: {jobs} jobs in {elapsed:.2?} = {:.0} jobs/s",
        rate(jobs, elapsed)
    );
    Ok(())
}

pub(crate) async fn bulk(jobs: usize, batch: usize) -> anyhow::Result<()> {
    let db = TestDb::with_pool_size(1).await;
    let batch_jobs: Vec<NewJob> = (0..batch)
        .map(|n| NewJob::new("bench.noop", json!({"n": n})))
        .collect();
    docket_queue::enqueue_many(&db.pool, &batch_jobs).await?;
    let started = Instant::now();
    let mut done = 0;
    while done < jobs {
        docket_queue::enqueue_many(&db.pool, &batch_jobs).await?;
        done += batch;
    }
    let elapsed = started.elapsed();
    println!(
        "bulk enqueue ({batch} per call): {done} jobs in {elapsed:.2?} = {:.0} jobs/s",
        rate(done, elapsed)
    );
    Ok(())
}

pub(crate) async fn cycle(
    jobs: usize,
    batch: u32,
    claimers: usize,
    finished_rows: usize,
) -> anyhow::Result<()> {
    let db = TestDb::with_pool_size(u32::try_from(claimers)? + 2).await;
    if finished_rows > 0 {
        sqlx::query(
            "insert into docket.jobs (kind, state, attempt, finished_at)
             select 'bench.done', 'completed', 1, now() from generate_series(1, $1)",
        )
        .bind(i64::try_from(finished_rows)?)
        .execute(&db.pool)
        .await?;
    }
    let seed: Vec<NewJob> = (0..jobs)
        .map(|n| NewJob::new("bench.noop", json!({"n": n})))
        .collect();
    for chunk in seed.chunks(10_000) {
        docket_queue::enqueue_many(&db.pool, chunk).await?;
    }
    sqlx::query("vacuum analyze docket.jobs")
        .execute(&db.pool)
        .await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..claimers {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            let worker = Uuid::now_v7();
            let mut done = 0usize;
            loop {
                let request = ClaimRequest {
                    queue: "default",
                    kinds: None,
                    worker_id: worker,
                    token: ClaimRequest::new_token(),
                    limit: batch,
                    now: None,
                };
                let claimed = docket_queue::claim(&pool, &request).await?;
                if claimed.jobs.is_empty() {
                    return anyhow::Ok(done);
                }
                let outcomes: Vec<AttemptOutcome> = claimed
                    .jobs
                    .iter()
                    .map(|job| AttemptOutcome::of(job, Outcome::Complete))
                    .collect();
                done += docket_queue::apply_outcomes(&pool, worker, &outcomes, None)
                    .await?
                    .changed
                    .len();
            }
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    let elapsed = started.elapsed();
    println!(
        "claim+complete: batch {batch}, {claimers} claimer(s), {finished_rows} finished rows kept: \
         {total} jobs in {elapsed:.2?} = {:.0} jobs/s",
        rate(total, elapsed)
    );
    Ok(())
}

pub(crate) async fn snapshot(rows: usize, live_share: f64, samples: usize) -> anyhow::Result<()> {
    let db = TestDb::with_pool_size(1).await;
    let (live, _) = fill(&db.pool, rows, live_share).await?;
    docket_queue::snapshot(&db.pool, None).await?;
    let mut timings = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        docket_queue::snapshot(&db.pool, None).await?;
        timings.push(started.elapsed());
    }
    let mean = timings.iter().sum::<Duration>() / u32::try_from(samples.max(1))?;
    println!(
        "snapshot with {rows} rows ({live} live): mean {:.3} ms, {}",
        ms(mean),
        percentiles(&mut timings)
    );
    Ok(())
}

/// Fills a jobs table as a busy system has it: `rows` jobs, `live_share` of them live
/// over 4 queues (a tenth retrying, a fiftieth dead-lettered), the rest completed over the
/// last hour; then vacuums and analyzes. Returns (live, finished).
pub(crate) async fn fill(
    pool: &sqlx::PgPool,
    rows: usize,
    live_share: f64,
) -> anyhow::Result<(i64, i64)> {
    let live = (rows as f64 * live_share) as i64;
    let finished = rows as i64 - live;
    // Live rows over 4 queues, a slice of them retrying and dead-lettered; the rest completed.
    sqlx::query(
        "insert into docket.jobs (queue, kind, state, attempt, run_at, finished_at, dead_letter_reason)
         select 'q' || (n % 4), 'bench',
                (case when n % 10 = 0 then 'retrying' when n % 50 = 1 then 'dead_letter' else 'pending' end)::docket.job_state,
                case when n % 10 = 0 or n % 50 = 1 then 1 else 0 end,
                now() - (n % 600) * interval '1 second',
                case when n % 50 = 1 and n % 10 <> 0 then now() end,
                case when n % 50 = 1 and n % 10 <> 0 then 'permanent' end
         from generate_series(1, $1) n",
    )
    .bind(live)
    .execute(pool)
    .await?;
    sqlx::query(
        "insert into docket.jobs (kind, state, attempt, finished_at)
         select 'bench', 'completed', 1, now() - (n % 3600) * interval '1 second'
         from generate_series(1, $1) n",
    )
    .bind(finished)
    .execute(pool)
    .await?;
    sqlx::query("vacuum analyze docket.jobs")
        .execute(pool)
        .await?;
    Ok((live, finished))
}
