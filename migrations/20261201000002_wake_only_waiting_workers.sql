-- Wake-ups without a global lock on every enqueue. PostgreSQL serialises the commits of
-- every transaction that called pg_notify (a database-wide lock held through the commit),
-- which cut concurrent single-job enqueue to about half. Now an enqueue notifies only when
-- a worker has said it is waiting for work on that queue, and the first enqueue after that
-- takes the flag: under load, workers are busy and nobody notifies at all.
--
-- The flag is set by a claim that came back with fewer jobs than it asked for (the worker
-- is about to wait), in the claim statement itself. An enqueue clears it with SKIP LOCKED,
-- so concurrent enqueuers never queue up behind one another's open transaction: the one
-- that holds the flag notifies at its commit. If that transaction rolls back, or commits
-- just after a worker's claim had already looked, the job waits for the worker's next poll
-- (DOCKET_POLL_INTERVAL) at most.

create table docket.queue_wakeups (
    queue  text    not null,
    -- A worker of this queue is waiting: the next enqueue notifies.
    wanted boolean not null default true,
    constraint queue_wakeups_pkey primary key (queue)
);

-- Notify the queue's workers if one is waiting, once. PL/pgSQL, so that its statements'
-- plans are kept per session (a SQL function is planned anew on every call).
create function docket.wake(queue text) returns void
language plpgsql volatile as $$
#variable_conflict use_column
declare
    taken text;
begin
    -- The common case under load: nobody waits. A plain read, no lock.
    if not exists (select 1 from docket.queue_wakeups w where w.queue = wake.queue and w.wanted) then
        return;
    end if;
    update docket.queue_wakeups w set wanted = false
    where w.queue = (select q.queue from docket.queue_wakeups q
                     where q.queue = wake.queue and q.wanted
                     for update skip locked)
    returning w.queue into taken;
    if taken is not null then
        perform pg_notify('docket_jobs', taken);
    end if;
end
$$;

-- The bulk enqueue, as before, without the temporary table the keyed path used to make on
-- every call (a catalog entry per call: slow, and bloat): the slots' ids live in an array.
create or replace function docket.enqueue_many(
    kinds         text[],
    payloads      jsonb[],
    queues        text[],
    run_ats       timestamptz[],
    priorities    integer[],
    max_attempts_list integer[],
    unique_keys   text[],
    expires_ats   timestamptz[],
    ids           uuid[] default null
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
        insert into docket.jobs (id, queue, kind, payload, run_at, priority, max_attempts, expires_at)
        select i.id, coalesce(i.queue, 'default'), i.kind, coalesce(i.payload, '{}'),
               coalesce(i.run_at, now()), coalesce(i.priority, 0), coalesce(i.max_attempts, 25),
               i.expires_at
        from unnest(slots, kinds, payloads, queues, run_ats, priorities, max_attempts_list, expires_ats)
             as i(id, kind, payload, queue, run_at, priority, max_attempts, expires_at);
    else
        loop
            -- Duplicate keys inside one call: the first occurrence is the one inserted. A
            -- slot whose id is already a job (inserted in an earlier round, or its key's
            -- live job found below) is not inserted again.
            insert into docket.jobs (id, queue, kind, payload, run_at, priority, max_attempts, unique_key, expires_at)
            select distinct on (coalesce(i.unique_key, i.id::text))
                   i.id, coalesce(i.queue, 'default'), i.kind, coalesce(i.payload, '{}'),
                   coalesce(i.run_at, now()), coalesce(i.priority, 0), coalesce(i.max_attempts, 25),
                   i.unique_key, i.expires_at
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

create or replace function docket.enqueue(
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
        perform docket.wake(coalesce(enqueue.queue, 'default'));
    end if;
    return job_id;
end
$$;
