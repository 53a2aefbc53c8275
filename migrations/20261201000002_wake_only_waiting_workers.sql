-- Wake-ups without a global lock on every enqueue (docket.enqueue here; docket.enqueue_many
-- in the batches migration, which also gives it its batch). PostgreSQL serialises the commits of
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
