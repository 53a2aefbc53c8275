-- The fair claim's statements as functions that run with sorting off, so that their plans
-- do not depend on the table's statistics. PL/pgSQL rather than SQL: it keeps each
-- statement's plan for the session, where a SQL function with a SET clause is planned anew
-- on every call (that cost a third of a grouped queue's throughput).
--
-- Planned from no statistics (a table bulk-loaded since its last ANALYZE, or one whose
-- counters an immediate restart discarded, so that autovacuum does not know to analyze
-- it), a queue's ready jobs are estimated at a handful of rows; the planner then read
-- every one of them through jobs_snapshot and sorted them, on every fair claim: 40,000
-- ready jobs cost 280,000 heap fetches to claim ten. With sorting off, the only plan left
-- for "the first rows in this order" is jobs_claim_grouped, which holds them in that order.
-- (The plain claim needs no such help: jobs_claim is its only index with the right order
-- and predicate, and its plan takes it whatever the estimates.)

-- Up to lim groups with ready-able jobs in a queue whose key sorts after `after`, in key
-- order: a loose scan of jobs_claim_grouped, one probe per group however many jobs each
-- holds.
create function docket.ready_groups(queue text, after text, lim bigint)
returns setof text
language plpgsql stable
rows 10
set enable_sort = off
as $$
begin
    return query
    with recursive groups as (
        (select j.group_key from docket.jobs j
         where j.queue = $1 and j.state in ('pending', 'retrying') and j.parked_at is null
           and j.group_key is not null and j.group_key > $2
         order by j.group_key limit 1)
        union all
        select (select j.group_key from docket.jobs j
                where j.queue = $1 and j.state in ('pending', 'retrying') and j.parked_at is null
                  and j.group_key is not null and j.group_key > g.group_key
                order by j.group_key limit 1)
        from groups g where g.group_key is not null
    )
    select g.group_key from groups g where g.group_key is not null limit $3;
end
$$;

-- Locks up to per_group ready jobs of each of `groups` (each group's priority, run_at, id
-- order, skipping rows other claimers hold), lim in all, and returns their ids. The row
-- locks belong to the caller's transaction: the claim statement marks the rows processing.
create function docket.lock_grouped(
    queue text, kinds text[], groups text[], per_group bigint, lim bigint, at timestamptz
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
    from unnest($3) as g(key)
    cross join lateral (
        select j.id from docket.jobs j
        where j.state in ('pending', 'retrying') and j.parked_at is null
          and j.queue = $1 and j.group_key = g.key
          and j.run_at <= coalesce($6, now())
          and ($2 is null or j.kind = any($2))
          and (j.expires_at is null or j.expires_at > coalesce($6, now()))
        order by j.priority, j.run_at, j.id
        limit $4
        for update skip locked
    ) c
    limit $5;
end
$$;
