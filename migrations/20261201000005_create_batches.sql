-- Batches: jobs enqueued together whose progress is tracked and which, once every one of
-- them is final, enqueue one callback job, exactly once.
--
-- No counter is kept on the batch while it runs: a row every completion updated would
-- serialise all of a batch's completions. Progress is counted from the jobs (through
-- jobs_batch), and the batch tracker finishes a batch when jobs_batch_live has no entry
-- left for it, storing the final counts and enqueueing the callback in one statement,
-- guarded by `finished_at is null` under the row's lock.

create table docket.batches (
    id               uuid        not null default docket.uuid_v7(),
    total            integer     not null,
    callback_kind    text,
    callback_payload jsonb       not null default '{}',
    callback_queue   text        not null default 'default',
    callback_job_id  uuid,
    -- The final counts, stored when the batch finishes (finished jobs may be pruned later).
    completed        integer,
    dead_letter      integer,
    cancelled        integer,
    -- The schedule tick that made it, for a cron batch.
    schedule         text,
    tick_at          timestamptz,
    created_at       timestamptz not null default now(),
    finished_at      timestamptz,
    constraint batches_pkey primary key (id),
    constraint batches_total_positive check (total > 0),
    constraint batches_counts_iff_finished check (
        (finished_at is null) = (completed is null and dead_letter is null and cancelled is null))
);

-- The open batches, oldest first: what the tracker looks at.
create index batches_open on docket.batches (created_at) where finished_at is null;

-- A schedule's batches, newest tick first: its last tick's progress, its overlap rule.
create index batches_schedule on docket.batches (schedule, tick_at) where schedule is not null;

-- A tick's job, to link the batch that job makes to its tick.
create index schedule_ticks_job on docket.schedule_ticks (job_id) where job_id is not null;

alter table docket.jobs add column batch_id uuid;

-- A batch's jobs, for its counts.
create index jobs_batch on docket.jobs (batch_id) where batch_id is not null;
-- A batch's live jobs: empty once the batch is done. Small: only live jobs of batches.
create index jobs_batch_live on docket.jobs (batch_id)
    where batch_id is not null and state in ('pending', 'retrying', 'processing');

-- The bulk enqueue, with a batch for its jobs, waking only waiting workers, and without the
-- temporary table the keyed path used to make on every call (a catalog entry per call:
-- slow, and bloat): the slots' ids live in an array. A new argument makes a new
-- signature, so the old function goes first.
drop function docket.enqueue_many(text[], jsonb[], text[], timestamptz[], integer[], integer[],
                                  text[], timestamptz[], uuid[]);

create function docket.enqueue_many(
    kinds         text[],
    payloads      jsonb[],
    queues        text[],
    run_ats       timestamptz[],
    priorities    integer[],
    max_attempts_list integer[],
    unique_keys   text[],
    expires_ats   timestamptz[],
    ids           uuid[] default null,
    -- The batch every job of the call belongs to (docket.batches); null: none.
    batch_id      uuid default null
) returns table (ord bigint, id uuid)
language plpgsql volatile as $$
declare
    slots   uuid[];
    missing integer;
begin
    -- One id per slot: the caller's (UUID v7, made in the client), or one made here.
    slots := array(select coalesce(ids[g], docket.uuid_v7())
                   from generate_series(1, cardinality(kinds)) g order by g);

    if not exists (select 1 from unnest(unique_keys) k where k is not null) then
        -- Fast path: with no unique keys there is nothing to look up.
        insert into docket.jobs (id, queue, kind, payload, run_at, priority, max_attempts, expires_at,
                                 batch_id)
        select i.id, coalesce(i.queue, 'default'), i.kind, coalesce(i.payload, '{}'),
               coalesce(i.run_at, now()), coalesce(i.priority, 0), coalesce(i.max_attempts, 25),
               i.expires_at, enqueue_many.batch_id
        from unnest(slots, kinds, payloads, queues, run_ats, priorities, max_attempts_list, expires_ats)
             as i(id, kind, payload, queue, run_at, priority, max_attempts, expires_at);
    else
        loop
            -- Duplicate keys inside one call: the first occurrence is the one inserted. A
            -- slot whose id is already a job (inserted in an earlier round, or its key's
            -- live job found below) is not inserted again.
            insert into docket.jobs (id, queue, kind, payload, run_at, priority, max_attempts, unique_key,
                                     expires_at, batch_id)
            select distinct on (coalesce(i.unique_key, i.id::text))
                   i.id, coalesce(i.queue, 'default'), i.kind, coalesce(i.payload, '{}'),
                   coalesce(i.run_at, now()), coalesce(i.priority, 0), coalesce(i.max_attempts, 25),
                   i.unique_key, i.expires_at, enqueue_many.batch_id
            from unnest(slots, kinds, payloads, queues, run_ats, priorities, max_attempts_list, unique_keys, expires_ats)
                 with ordinality as i(id, kind, payload, queue, run_at, priority, max_attempts, unique_key, expires_at, ord)
            where not exists (select 1 from docket.jobs j where j.id = i.id)
            order by coalesce(i.unique_key, i.id::text), i.ord
            on conflict (unique_key) where unique_key is not null and state in ('pending', 'retrying', 'processing')
            do nothing;

            -- Point every keyed slot at the live job that holds its key (its own row, or
            -- the one that was there first). A key's live job can finish between the
            -- conflict and this lookup; such a slot gets a fresh id and goes round again.
            select array_agg(coalesce(l.id, docket.uuid_v7()) order by i.ord),
                   count(*) filter (where l.id is null)
              into slots, missing
            from unnest(slots, unique_keys) with ordinality as i(id, unique_key, ord)
            cross join lateral (
                select case when i.unique_key is null then i.id
                            else (select j.id from docket.jobs j
                                  where j.unique_key = i.unique_key
                                    and j.state in ('pending', 'retrying', 'processing')) end as id
            ) l;
            exit when missing = 0;
        end loop;
    end if;

    perform docket.wake(q.queue)
    from (select distinct coalesce(i.queue, 'default') as queue
          from unnest(queues, run_ats) as i(queue, run_at)
          where coalesce(i.run_at, now()) <= now()) q;

    return query select s.ord, s.id from unnest(slots) with ordinality as s(id, ord) order by s.ord;
end
$$;

