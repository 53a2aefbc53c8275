-- Fair groups: a job's optional group_key (a tenant, a customer). Within one queue the
-- claim shares its slots between the groups with ready work, so one group with 100,000
-- ready jobs cannot starve another with ten.
--
-- Jobs without a group keep today's claim: jobs_claim now holds only them, and the grouped
-- ones have an index of their own shaped for a loose scan over their groups (one probe per
-- group) and, inside a group, for the claim's order. The parker looks at ungrouped jobs
-- only (through jobs_claim): a grouped job of a kind nobody runs is passed over by each
-- fair claim rather than parked.

alter table docket.jobs add column group_key text;
alter table docket.jobs add constraint jobs_group_key_length
    check (group_key is null or length(group_key) between 1 and 256);

drop index docket.jobs_claim;
create index jobs_claim on docket.jobs (queue, priority, run_at, id)
    where state in ('pending', 'retrying') and parked_at is null and group_key is null;
create index jobs_claim_grouped on docket.jobs (queue, group_key, priority, run_at, id)
    where state in ('pending', 'retrying') and parked_at is null and group_key is not null;

-- The enqueue functions take the group as a new trailing argument; a new argument makes a
-- new signature, so the old functions go first.
drop function docket.enqueue(text, jsonb, text, timestamptz, integer, integer, text, timestamptz);
drop function docket.enqueue_many(text[], jsonb[], text[], timestamptz[], integer[], integer[],
                                  text[], timestamptz[], uuid[], uuid);

create function docket.enqueue(
    kind          text,
    payload       jsonb,
    queue         text        default 'default',
    run_at        timestamptz default now(),
    priority      integer     default 0,
    max_attempts  integer     default 25,
    unique_key    text        default null,
    expires_at    timestamptz default null,
    group_key     text        default null
) returns uuid
language plpgsql volatile as $$
#variable_conflict use_column
declare
    job_id uuid;
begin
    loop
        insert into docket.jobs (queue, kind, payload, run_at, priority, max_attempts, unique_key, expires_at,
                                 group_key)
        values (coalesce(enqueue.queue, 'default'), enqueue.kind, coalesce(enqueue.payload, '{}'),
                coalesce(enqueue.run_at, now()), coalesce(enqueue.priority, 0),
                coalesce(enqueue.max_attempts, 25), enqueue.unique_key, enqueue.expires_at,
                enqueue.group_key)
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
    group_keys    text[] default null
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
                                 batch_id, group_key)
        select i.id, coalesce(i.queue, 'default'), i.kind, coalesce(i.payload, '{}'),
               coalesce(i.run_at, now()), coalesce(i.priority, 0), coalesce(i.max_attempts, 25),
               i.expires_at, enqueue_many.batch_id, i.group_key
        from unnest(slots, kinds, payloads, queues, run_ats, priorities, max_attempts_list, expires_ats,
                    group_keys)
             as i(id, kind, payload, queue, run_at, priority, max_attempts, expires_at, group_key);
    else
        loop
            -- Duplicate keys inside one call: the first occurrence is the one inserted. A
            -- slot whose id is already a job (inserted in an earlier round, or its key's
            -- live job found below) is not inserted again.
            insert into docket.jobs (id, queue, kind, payload, run_at, priority, max_attempts, unique_key,
                                     expires_at, batch_id, group_key)
            select distinct on (coalesce(i.unique_key, i.id::text))
                   i.id, coalesce(i.queue, 'default'), i.kind, coalesce(i.payload, '{}'),
                   coalesce(i.run_at, now()), coalesce(i.priority, 0), coalesce(i.max_attempts, 25),
                   i.unique_key, i.expires_at, enqueue_many.batch_id, i.group_key
            from unnest(slots, kinds, payloads, queues, run_ats, priorities, max_attempts_list, unique_keys, expires_ats,
                        group_keys)
                 with ordinality as i(id, kind, payload, queue, run_at, priority, max_attempts, unique_key, expires_at,
                                      group_key, ord)
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
