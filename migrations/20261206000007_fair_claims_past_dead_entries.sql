-- Fair claims that do not step over the dead index entries earlier claims left: the grouped
-- counterpart of the resuming plain claim (docs/architecture.md, "Resuming claims").
--
-- Claims take each group's jobs from its head, so the entries of claimed jobs pile up at
-- the head of every group in jobs_claim_grouped until vacuum removes them. Every probe that
-- landed on a group's head stepped over them: the loose scan that finds the groups (each
-- probe lands on the first entry of the next group) and the lock of each group's share.
-- While a snapshot is held, vacuum can remove nothing and they cannot even be marked dead:
-- finding 50 groups after 64,000 claims read 33,000 buffers (20 ms), on every claim.
--
-- Now the loose scan walks the groups backwards, from the end of the index: each probe
-- lands on the last entry of the group before, its newest job, which is live while the
-- group has work. And the lock starts each group where this claimer last took from it
-- (after its (priority, run_at, id)), as the plain claim does; the claimer goes back to a
-- group's head when the group comes back short, and to every head periodically.

drop function docket.ready_groups(text, text, bigint);

-- Up to lim groups with ready-able jobs in a queue whose key sorts before `before` (null:
-- from the last group), in descending key order: a loose scan of jobs_claim_grouped from its
-- end, one probe per group however many jobs (or dead entries) each holds.
create function docket.ready_groups(queue text, before text, lim bigint)
returns setof text
language plpgsql stable
rows 10
set enable_sort = off
as $$
declare
    first_key text;
begin
    -- The first probe: below `before`, or (none given) the last group of all.
    if before is null then
        first_key := (select j.group_key from docket.jobs j
                      where j.queue = $1 and j.state in ('pending', 'retrying') and j.parked_at is null
                        and j.group_key is not null
                      order by j.group_key desc, j.priority desc, j.run_at desc, j.id desc limit 1);
    else
        first_key := (select j.group_key from docket.jobs j
                      where j.queue = $1 and j.state in ('pending', 'retrying') and j.parked_at is null
                        and j.group_key is not null and j.group_key < $2
                      order by j.group_key desc, j.priority desc, j.run_at desc, j.id desc limit 1);
    end if;
    return query
    with recursive groups as (
        select first_key as group_key
        union all
        select (select j.group_key from docket.jobs j
                where j.queue = $1 and j.state in ('pending', 'retrying') and j.parked_at is null
                  and j.group_key is not null and j.group_key < g.group_key
                order by j.group_key desc, j.priority desc, j.run_at desc, j.id desc limit 1)
        from groups g where g.group_key is not null
    )
    select g.group_key from groups g where g.group_key is not null limit $3;
end
$$;

drop function docket.lock_grouped(text, text[], text[], bigint, bigint, timestamptz);

-- Locks up to per_group ready jobs of each of `groups` (each group's priority, run_at, id
-- order, after the group's position in the after_* arrays, null: from its head; skipping
-- rows other claimers hold), lim in all, and returns their ids. The row locks belong to
-- the caller's transaction: the claim statement marks the rows processing.
create function docket.lock_grouped(
    queue text, kinds text[], groups text[],
    after_priority smallint[], after_run_at timestamptz[], after_id uuid[],
    per_group bigint, lim bigint, at timestamptz
)
returns setof uuid
language plpgsql volatile
-- A claim's worth, not the default 1,000: the claim statement joins these ids to the
-- table, and at 1,000 its planner would hash-join them against a sequential scan.
rows 10
set enable_sort = off
as $$
begin
    return query
    select c.id
    from unnest($3, $4, $5, $6) as g(key, priority, run_at, id)
    cross join lateral (
        select j.id from docket.jobs j
        where j.state in ('pending', 'retrying') and j.parked_at is null
          and j.queue = $1 and j.group_key = g.key
          and (j.priority, j.run_at, j.id)
              > (coalesce(g.priority, (-32768)::smallint), coalesce(g.run_at, '-infinity'),
                 coalesce(g.id, '00000000-0000-0000-0000-000000000000'))
          and j.run_at <= coalesce($9, now())
          and ($2 is null or j.kind = any($2))
          and (j.expires_at is null or j.expires_at > coalesce($9, now()))
        order by j.priority, j.run_at, j.id
        limit $7
        for update skip locked
    ) c
    limit $8;
end
$$;
