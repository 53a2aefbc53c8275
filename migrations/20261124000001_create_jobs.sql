-- Docket's schema: the jobs table, the workers that hold leases on them, and the SQL
-- enqueue functions that are the one place where enqueue logic lives.

create schema if not exists docket;

create type docket.job_state as enum (
    'pending',      -- waiting for its first attempt; ready when run_at <= now()
    'retrying',     -- failed at least once; ready again when run_at <= now()
    'processing',   -- claimed by a worker that holds its lease
    'completed',    -- its handler returned success
    'dead_letter',  -- attempts exhausted, permanent error, malformed or expired
    'cancelled'     -- cancelled by an operator or by application code
);

-- UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, 12 bits of sub-millisecond time
-- (the RFC's method 3, so ids made in sequence sort in that order), then random bits. Ids
-- sort by creation time, which keeps the primary key's inserts at its right edge and gives
-- the job list a stable keyset order. PostgreSQL 15 has no uuidv7().
create function docket.uuid_v7() returns uuid
language sql volatile parallel safe as $$
    select encode(
        substring(int8send(floor(ms)::bigint) from 3)
        || int2send((x'7000'::int | floor((ms - floor(ms)) * 4096)::int)::smallint)
        || substring(uuid_send(gen_random_uuid()) from 9),
        'hex')::uuid
    from (select extract(epoch from clock_timestamp()) * 1000 as ms) t
$$;

-- Appends one failure to a job's error history and keeps the most recent 20, so that a
-- job retried many times cannot grow its row without bound. Messages are cut at 4,000
-- characters.
create function docket.append_error(errors jsonb, attempt integer, at timestamptz, error text)
returns jsonb
language sql immutable parallel safe as $$
    select coalesce(jsonb_agg(e.entry order by e.n), '[]')
    from jsonb_array_elements(errors || jsonb_build_array(jsonb_build_object(
             'attempt', attempt, 'at', at, 'error', left(error, 4000))))
         with ordinality as e(entry, n)
    where e.n > jsonb_array_length(errors) + 1 - 20
$$;

create table docket.jobs (
    id                 uuid              not null default docket.uuid_v7(),
    queue              text              not null default 'default',
    kind               text              not null,
    payload            jsonb             not null default '{}',
    state              docket.job_state  not null default 'pending',
    -- Lower runs first.
    priority           smallint          not null default 0,
    run_at             timestamptz       not null default now(),
    -- Attempts started so far; the claim increments it.
    attempt            integer           not null default 0,
    max_attempts       integer           not null default 25,
    -- At most one live (pending, retrying, processing) job per key: jobs_unique_key_live.
    unique_key         text,
    -- A job not started by then is dead-lettered with reason 'expired' instead of run late.
    expires_at         timestamptz,
    last_error         text,
    -- Bounded history of failures: [{"attempt": n, "at": ts, "error": "..."}], oldest first.
    errors             jsonb             not null default '[]',
    -- Why a job is in dead_letter: 'expired', 'attempts_exhausted', 'discarded', 'malformed: ...'.
    dead_letter_reason text,
    -- The worker holding the job while it is processing. Together with `attempt` this is
    -- the lease token that fences every outcome write.
    locked_by          uuid,
    -- Set when cancel is asked for a processing job; the worker stops it cooperatively.
    cancel_requested_at timestamptz,
    created_at         timestamptz       not null default now(),
    attempted_at       timestamptz,
    finished_at        timestamptz,

    constraint jobs_pkey primary key (id),
    constraint jobs_kind_length check (char_length(kind) between 1 and 127),
    constraint jobs_queue_length check (char_length(queue) between 1 and 127),
    constraint jobs_max_attempts_positive check (max_attempts > 0),
    constraint jobs_attempt_not_negative check (attempt >= 0),
    constraint jobs_unique_key_not_empty check (unique_key is null or char_length(unique_key) > 0),
    constraint jobs_errors_is_array check (jsonb_typeof(errors) = 'array'),
    constraint jobs_finished_iff_final check (
        (state in ('completed', 'dead_letter', 'cancelled')) = (finished_at is not null)),
    constraint jobs_locked_iff_processing check ((state = 'processing') = (locked_by is not null)),
    constraint jobs_dead_letter_reason check ((state = 'dead_letter') = (dead_letter_reason is not null))
)
-- A queue table is all churn: every job is inserted, updated two or three times and
-- deleted. State changes touch indexed columns, so updates are never HOT; leaving 10% of
-- each page free still lets the new row version land on the same page, which keeps the
-- heap compact. Autovacuum must keep up with that churn long before the default 20% of
-- dead rows, and must keep the visibility map fresh (insert-driven vacuum) so that the
-- snapshot's counts stay index-only.
with (
    fillfactor = 90,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

-- The claim's index, shaped like its ORDER BY and holding ready-able rows only: finished
-- jobs never enter it, so however many completed rows the table keeps, the claim walks
-- only jobs that can run.
create index jobs_claim on docket.jobs (queue, priority, run_at, id)
    where state in ('pending', 'retrying');

-- The snapshot's index: per queue and live state, counts and the oldest run_at come from
-- an index-only scan. Completed and cancelled rows stay out of it.
create index jobs_snapshot on docket.jobs (queue, state, run_at)
    where state in ('pending', 'retrying', 'processing', 'dead_letter');

-- One live job per unique_key. A finished job frees its key.
create unique index jobs_unique_key_live on docket.jobs (unique_key)
    where unique_key is not null and state in ('pending', 'retrying', 'processing');

-- Workers look up the jobs they hold that an operator asked to cancel. Deliberately not
-- an index of all processing jobs by worker: PostgreSQL would drive the outcome
-- statement's join from it (its estimate ignores the entries of just-finished jobs) and
-- turn each batch into a nested loop over every job the worker holds. The rescuer, which
-- runs every few seconds under a lock, reads processing rows through jobs_snapshot.
create index jobs_cancel_requested on docket.jobs (locked_by)
    where cancel_requested_at is not null;

-- The pruner deletes finished jobs by state and age, oldest first.
create index jobs_finished on docket.jobs (state, finished_at)
    where finished_at is not null;

-- Dead-letter listing and bulk replay filter by queue and kind.
create index jobs_dead_letter on docket.jobs (queue, kind, finished_at)
    where state = 'dead_letter';

-- Worker processes. A worker's lease on its jobs lasts as long as its heartbeat is fresh;
-- the rescuer frees the jobs of a worker whose heartbeat is older than the lease timeout.
-- The id is fresh per process start, so a restarted process never inherits a dead one's jobs.
create table docket.workers (
    id           uuid        not null,
    host         text        not null,
    pid          integer     not null,
    queues       text[]      not null,
    version      text        not null,
    started_at   timestamptz not null default now(),
    heartbeat_at timestamptz not null default now(),
    constraint workers_pkey primary key (id)
);

-- Enqueue many jobs in one statement. The arrays are parallel, one element per job; a
-- null element takes the column's default. A job whose unique_key already has a live job
-- is not inserted: its slot in the result carries the existing job's id instead.
-- Returns one row per input job, in input order.
--
-- Every queue that gets a job that is ready now is notified once: NOTIFY deduplicates
-- identical (channel, payload) pairs within a transaction, so a transaction that enqueues
-- thousands of jobs on one queue wakes the workers once, at commit.
create function docket.enqueue_many(
    kinds         text[],
    payloads      jsonb[],
    queues        text[],
    run_ats       timestamptz[],
    priorities    integer[],
    max_attempts_list integer[],
    unique_keys   text[],
    expires_ats   timestamptz[],
    -- Ids for the jobs, made by the caller (UUID v7); null: made here. Making them in the
    -- client spares the server a text round trip per row and speeds bulk enqueue.
    ids           uuid[] default null
) returns table (ord bigint, id uuid)
language plpgsql volatile as $$
declare
    missing integer;
begin
    -- Fast path: with no unique keys there is nothing to look up, so insert straight from
    -- the arrays in one statement.
    if not exists (select 1 from unnest(unique_keys) k where k is not null) then
        return query
        with input as materialized (
            select i.ord, coalesce(i.id, docket.uuid_v7()) as id, i.kind, i.payload, i.queue, i.run_at,
                   i.priority, i.max_attempts, i.expires_at
            from unnest(kinds, payloads, queues, run_ats, priorities, max_attempts_list, expires_ats, ids)
                 with ordinality as i(kind, payload, queue, run_at, priority, max_attempts, expires_at, id, ord)
        ), inserted as (
            insert into docket.jobs (id, queue, kind, payload, run_at, priority, max_attempts, expires_at)
            select i.id, coalesce(i.queue, 'default'), i.kind, coalesce(i.payload, '{}'),
                   coalesce(i.run_at, now()), coalesce(i.priority, 0), coalesce(i.max_attempts, 25),
                   i.expires_at
            from input i
            returning 1
        )
        select i.ord, i.id from input i order by i.ord;

        perform pg_notify('docket_jobs', q.queue)
        from (select distinct coalesce(i.queue, 'default') as queue
              from unnest(queues, run_ats) as i(queue, run_at)
              where coalesce(i.run_at, now()) <= now()) q;
        return;
    end if;

    create temporary table if not exists docket_enqueue_input (
        ord bigint, id uuid, kind text, payload jsonb, queue text, run_at timestamptz,
        priority integer, max_attempts integer, unique_key text, expires_at timestamptz
    ) on commit drop;
    truncate docket_enqueue_input;

    insert into docket_enqueue_input
    select i.ord, coalesce(i.id, docket.uuid_v7()), i.kind, coalesce(i.payload, '{}'), coalesce(i.queue, 'default'),
           coalesce(i.run_at, now()), coalesce(i.priority, 0), coalesce(i.max_attempts, 25),
           i.unique_key, i.expires_at
    from unnest(kinds, payloads, queues, run_ats, priorities, max_attempts_list, unique_keys, expires_ats, ids)
         with ordinality as i(kind, payload, queue, run_at, priority, max_attempts, unique_key, expires_at, id, ord);

    loop
        -- Duplicate keys inside one call: the first occurrence is the one inserted.
        insert into docket.jobs (id, queue, kind, payload, run_at, priority, max_attempts, unique_key, expires_at)
        select distinct on (coalesce(i.unique_key, i.id::text))
               i.id, i.queue, i.kind, i.payload, i.run_at, i.priority, i.max_attempts, i.unique_key, i.expires_at
        from docket_enqueue_input i
        where not exists (select 1 from docket.jobs j where j.id = i.id)
        order by coalesce(i.unique_key, i.id::text), i.ord
        on conflict (unique_key) where unique_key is not null and state in ('pending', 'retrying', 'processing')
        do nothing;

        -- Point every keyed job at the live job that holds its key (its own row, or the one
        -- that was there first).
        update docket_enqueue_input i set id = j.id
        from docket.jobs j
        where i.unique_key is not null and j.unique_key = i.unique_key
          and j.state in ('pending', 'retrying', 'processing') and i.id <> j.id;

        -- A key's live job can finish between the conflict and the lookup; such a slot is
        -- left pointing at nothing and goes round again with a fresh id.
        update docket_enqueue_input i set id = docket.uuid_v7()
        where i.unique_key is not null and not exists (select 1 from docket.jobs j where j.id = i.id);
        get diagnostics missing = row_count;
        exit when missing = 0;
    end loop;

    perform pg_notify('docket_jobs', q.queue)
    from (select distinct i.queue from docket_enqueue_input i where i.run_at <= now()) q;

    return query select i.ord, i.id from docket_enqueue_input i order by i.ord;
end
$$;

-- Enqueue one job from any language that can talk to PostgreSQL, inside the caller's
-- transaction. Returns the job's id; with a unique_key that already has a live job, that
-- job's id (no second job, no error).
create function docket.enqueue(
    kind          text,
    payload       jsonb,
    queue         text        default 'default',
    run_at        timestamptz default now(),
    priority      integer     default 0,
    max_attempts  integer     default 25,
    unique_key    text        default null,
    expires_at    timestamptz default null
) returns uuid
language plpgsql volatile as $$
#variable_conflict use_column
declare
    job_id uuid;
begin
    loop
        insert into docket.jobs (queue, kind, payload, run_at, priority, max_attempts, unique_key, expires_at)
        values (coalesce(enqueue.queue, 'default'), enqueue.kind, coalesce(enqueue.payload, '{}'),
                coalesce(enqueue.run_at, now()), coalesce(enqueue.priority, 0),
                coalesce(enqueue.max_attempts, 25), enqueue.unique_key, enqueue.expires_at)
        on conflict (unique_key) where unique_key is not null and state in ('pending', 'retrying', 'processing')
        do nothing
        returning id into job_id;

        if job_id is null then
            select j.id into job_id from docket.jobs j
            where j.unique_key = enqueue.unique_key and j.state in ('pending', 'retrying', 'processing');
        end if;
        -- Null only when the live job holding the key finished in between: insert again.
        exit when job_id is not null;
    end loop;

    if coalesce(enqueue.run_at, now()) <= now() then
        perform pg_notify('docket_jobs', coalesce(enqueue.queue, 'default'));
    end if;
    return job_id;
end
$$;
