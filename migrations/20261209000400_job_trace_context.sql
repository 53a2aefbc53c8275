-- Trace context (W3C `traceparent` / `tracestate`) stored with each job, so that the worker's
-- attempt spans join the trace of whatever enqueued the job (an HTTP request, a caller's
-- span, a cron tick) and a batch's callback links to what made the batch.
--
-- `trace_context` is null for a job enqueued without one (the common case when tracing is
-- off: it costs nothing then). Otherwise an object:
--   {"traceparent": "00-<trace id>-<span id>-<flags>", "tracestate": "..."}  the enqueue's span:
--       the first attempt is its child, later attempts link to it;
--   {"links": [{"traceparent": ..., "tracestate": ...}]}  contexts every attempt links to
--       (a batch callback: the batch's creator), without a parent.
-- The check is `not valid`: every row written from now on is checked, and the rows already
-- there (all null) are not scanned under the table's lock.
alter table docket.jobs add column trace_context jsonb;
alter table docket.jobs add constraint jobs_trace_context_object
    check (trace_context is null or jsonb_typeof(trace_context) = 'object') not valid;

-- The context a batch was created in, for its callback's link.
alter table docket.batches add column trace_context jsonb;

-- A valid W3C traceparent (and its tracestate) as the stored object; null for null or a
-- malformed one, which is ignored as the W3C recommendation says (a job is never refused
-- for its tracing). Versions other than 00 are read as 00 (their first 55 characters).
create function docket.trace_context(traceparent text, tracestate text default null)
returns jsonb
language sql immutable parallel safe as $$
    select case when traceparent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$'
                 and left(traceparent, 2) <> 'ff'
                 and (left(traceparent, 2) <> '00' or length(traceparent) = 55)
                 and substr(traceparent, 4, 32) <> repeat('0', 32)
                 and substr(traceparent, 37, 16) <> repeat('0', 16)
           then jsonb_strip_nulls(jsonb_build_object(
                    'traceparent', '00' || substr(traceparent, 3, 53),
                    'tracestate', nullif(left(tracestate, 512), '')))
           end
$$;

-- The enqueue functions take the context as new trailing arguments (named, with defaults,
-- so every existing call keeps working: `traceparent => '00-...'`). A new argument makes a
-- new signature, so the old functions go first.
drop function docket.enqueue(text, jsonb, text, timestamptz, integer, integer, text, timestamptz, text);
drop function docket.enqueue_many(text[], jsonb[], text[], timestamptz[], integer[], integer[],
                                  text[], timestamptz[], uuid[], uuid, text[]);
drop function docket.enqueue_tick(text, timestamptz);

create function docket.enqueue(
    kind          text,
    payload       jsonb,
    queue         text        default 'default',
    run_at        timestamptz default now(),
    priority      integer     default 0,
    max_attempts  integer     default 25,
    unique_key    text        default null,
    expires_at    timestamptz default null,
    group_key     text        default null,
    -- The W3C trace context the job was enqueued in; a malformed one is ignored.
    traceparent   text        default null,
    tracestate    text        default null
) returns uuid
language plpgsql volatile as $$
#variable_conflict use_column
declare
    job_id uuid;
begin
    loop
        insert into docket.jobs (queue, kind, payload, run_at, priority, max_attempts, unique_key, expires_at,
                                 group_key, trace_context)
        values (coalesce(enqueue.queue, 'default'), enqueue.kind, coalesce(enqueue.payload, '{}'),
                coalesce(enqueue.run_at, now()), coalesce(enqueue.priority, 0),
                coalesce(enqueue.max_attempts, 25), enqueue.unique_key, enqueue.expires_at,
                enqueue.group_key, docket.trace_context(enqueue.traceparent, enqueue.tracestate))
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
        perform docket.wake(coalesce(enqueue.queue, 'default'));
    end if;
    return job_id;
end
$$;

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
    batch_id      uuid default null,
    -- Each job's fair-share group (a tenant, a customer); null: none.
    group_keys    text[] default null,
    -- Each job's W3C trace context; null: none. A malformed one is ignored.
    traceparents  text[] default null,
    tracestates   text[] default null
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
                                 batch_id, group_key, trace_context)
        select i.id, coalesce(i.queue, 'default'), i.kind, coalesce(i.payload, '{}'),
               coalesce(i.run_at, now()), coalesce(i.priority, 0), coalesce(i.max_attempts, 25),
               i.expires_at, enqueue_many.batch_id, i.group_key, docket.trace_context(i.traceparent, i.tracestate)
        from unnest(slots, kinds, payloads, queues, run_ats, priorities, max_attempts_list, expires_ats,
                    group_keys, traceparents, tracestates)
             as i(id, kind, payload, queue, run_at, priority, max_attempts, expires_at, group_key,
                  traceparent, tracestate);
    else
        loop
            -- Duplicate keys inside one call: the first occurrence is the one inserted. A
            -- slot whose id is already a job (inserted in an earlier round, or its key's
            -- live job found below) is not inserted again.
            insert into docket.jobs (id, queue, kind, payload, run_at, priority, max_attempts, unique_key,
                                     expires_at, batch_id, group_key, trace_context)
            select distinct on (coalesce(i.unique_key, i.id::text))
                   i.id, coalesce(i.queue, 'default'), i.kind, coalesce(i.payload, '{}'),
                   coalesce(i.run_at, now()), coalesce(i.priority, 0), coalesce(i.max_attempts, 25),
                   i.unique_key, i.expires_at, enqueue_many.batch_id, i.group_key,
                   docket.trace_context(i.traceparent, i.tracestate)
            from unnest(slots, kinds, payloads, queues, run_ats, priorities, max_attempts_list, unique_keys, expires_ats,
                        group_keys, traceparents, tracestates)
                 with ordinality as i(id, kind, payload, queue, run_at, priority, max_attempts, unique_key, expires_at,
                                      group_key, traceparent, tracestate, ord)
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

-- A cron tick's job carries the tick's trace context (the scheduler's span for the tick).
create function docket.enqueue_tick(schedule text, tick_at timestamptz,
                                    traceparent text default null, tracestate text default null,
                                    out job_id uuid, out skipped boolean)
language plpgsql volatile as $$
#variable_conflict use_column
declare
    s       docket.schedules;
begin
    skipped := false;
    select * into s from docket.schedules
    where name = enqueue_tick.schedule and not paused
      and (last_tick_at is null or last_tick_at < enqueue_tick.tick_at)
    for update;
    if not found then
        return;
    end if;
    insert into docket.schedule_ticks (schedule, tick_at)
    values (enqueue_tick.schedule, enqueue_tick.tick_at)
    on conflict (schedule, tick_at) do nothing;
    if not found then
        return;
    end if;
    if s.overlap = 'skip' and (exists (
        select 1 from docket.batches b
        where b.schedule = enqueue_tick.schedule and b.finished_at is null
    ) or exists (
        -- The last tick's job has not finished: it may not have made its batch yet.
        select 1 from docket.jobs j
        where j.id = (select t.job_id from docket.schedule_ticks t
                      where t.schedule = enqueue_tick.schedule and t.job_id is not null
                      order by t.tick_at desc limit 1)
          and j.state in ('pending', 'retrying', 'processing')
    )) then
        perform docket.advance_schedule(enqueue_tick.schedule, enqueue_tick.tick_at);
        skipped := true;
        return;
    end if;
    job_id := docket.enqueue(s.kind, s.payload, s.queue, enqueue_tick.tick_at, s.priority,
                             s.max_attempts, traceparent => enqueue_tick.traceparent,
                             tracestate => enqueue_tick.tracestate);
    update docket.schedule_ticks t set job_id = enqueue_tick.job_id
    where t.schedule = enqueue_tick.schedule and t.tick_at = enqueue_tick.tick_at;
    perform docket.advance_schedule(enqueue_tick.schedule, enqueue_tick.tick_at);
end
$$;

-- A finished batch's callback: enqueued as before, its attempts linked to the context the
-- batch was created in. A volatile function, so its update sees the job just inserted.
create function docket.enqueue_batch_callback(kind text, payload jsonb, queue text,
                                              batch_context jsonb)
returns uuid
language plpgsql volatile as $$
declare
    job_id uuid;
begin
    job_id := docket.enqueue(kind, payload, queue);
    if batch_context ? 'traceparent' then
        update docket.jobs j
        set trace_context = jsonb_build_object('links', jsonb_build_array(
                jsonb_strip_nulls(jsonb_build_object('traceparent', batch_context->'traceparent',
                                                     'tracestate', batch_context->'tracestate'))))
        where j.id = job_id;
    end if;
    return job_id;
end
$$;
