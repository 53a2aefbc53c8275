// Graphile Worker, the same workload as `docket-loadtest throughput`: N no-op jobs queued
// before the clock starts (through its public SQL API, `graphile_worker.add_jobs`), one
// worker at concurrency C, the clock stopped when the last job is gone from the table.
// A fresh database of its own on DATABASE_URL's server, dropped at the end.
//
//   node bench.mjs JOBS CONCURRENCY [batched]
//
// `batched`: its documented throughput settings: a local queue (jobs fetched and locked in
// batches) and batched completions.
import pg from "pg";
import { Logger, makeWorkerUtils, run } from "graphile-worker";

// Quiet: a log line per job would be most of the work measured.
const logger = new Logger(() => () => {});

const [jobs, concurrency] = [Number(process.argv[2] ?? 20000), Number(process.argv[3] ?? 10)];
const batched = process.argv[4] === "batched";
const server = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const name = `gw_bench_${process.pid}`;
const admin = new pg.Client({ connectionString: server });
await admin.connect();
await admin.query(`create database ${name}`);
const url = server.replace(/\/[^/?]*(\?|$)/, `/${name}$1`);
try {
  const utils = await makeWorkerUtils({ connectionString: url, logger });
  await utils.migrate();
  await utils.release();
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  for (let done = 0; done < jobs; done += 10000) {
    await pool.query(
      `select graphile_worker.add_jobs(array(
         select json_populate_record(null::graphile_worker.job_spec,
                json_build_object('identifier', 'noop', 'payload', json_build_object('n', g)))
         from generate_series(1, $1) g))`,
      [Math.min(10000, jobs - done)],
    );
  }
  await pool.query("vacuum analyze graphile_worker._private_jobs");
  let ran = 0;
  const started = performance.now();
  const workerPool = new pg.Pool({ connectionString: url, max: concurrency + 2 });
  // Dropping the database at the end ends whatever the runner still holds.
  workerPool.on("error", () => {});
  workerPool.on("connect", (client) => client.on("error", () => {}));
  const runner = await run({
    pgPool: workerPool,
    concurrency,
    noHandleSignals: true,
    logger,
    crontab: "",
    pollInterval: 1000,
    taskList: { noop: async () => { ran += 1; } },
    preset: batched
      ? { worker: { localQueue: { size: Number(process.env.LOCAL_QUEUE ?? Math.max(concurrency + 1, 100)) },
                    completeJobBatchDelay: 0, failJobBatchDelay: 0 } }
      : {},
  });
  while (ran < jobs) await new Promise((r) => setTimeout(r, 5));
  // Then the database: the last completions are written (completed jobs are deleted).
  for (;;) {
    const { rows } = await pool.query("select count(*)::int as n from graphile_worker._private_jobs");
    if (rows[0].n === 0) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `graphile-worker${batched ? " (batched)" : ""}: ${jobs} no-op jobs, concurrency ${concurrency}: ` +
      `${seconds.toFixed(2)} s = ${Math.round(jobs / seconds)} jobs/s`,
  );
  await runner.stop();
  await workerPool.end();
  await pool.end();
} finally {
  await admin.query(`drop database if exists ${name} with (force)`);
  await admin.end();
}
