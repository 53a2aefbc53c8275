-- Two fixes of issue 21: a fair claim's rotation passes over groups with nothing due
-- (docs/architecture.md, "Fair groups"), and the admin listing reads only what it returns
-- whatever its plan (docs/architecture.md, "Listing jobs").

-- ready_groups returned every group with a pending or retrying job, due or not: a group
-- whose only job was delayed ten minutes, or waited out a retry's backoff, was offered a
-- turn by every claim, yielded nothing, and stopped the rotation for every other group.
-- Now it says of each group it walks past whether any of its jobs is due, so the caller
-- offers turns only to groups with work and moves its cursor past the others.
drop function docket.ready_groups(text, text, bigint);

-- Walks the groups with ready-able jobs in a queue whose key sorts before `before` (null:
-- from the last group), in descending key order, and returns each with whether one of its
-- jobs is due at `at` (null: now). Stops after `lim` due groups or `most` groups walked,
-- whichever comes first, so that a run of groups with nothing due costs a bounded walk;
-- the caller resumes after the last group returned.
--
-- Each group costs one probe to find (it lands on the group's newest job, live while the
-- group has work; when that job is due, so is the group) and, only when that job is not
-- due, one per priority to test: a backward probe from `run_at <= at`,
-- landing on its newest due job, which claims (oldest first) take last. Neither probe
-- lands on a group's head, where the entries of claimed jobs pile up until vacuum removes
-- them (see 20261206000007), and future jobs are never read.
create function docket.ready_groups(queue text, before text, lim bigint, most bigint, at timestamptz)
returns table (group_key text, due boolean)
language plpgsql stable
rows 10
set enable_sort = off
as $$
declare
    g_key text := $2;
    g_priority smallint;
    g_run_at timestamptz;
    g_due boolean;
    walked bigint := 0;
    due_groups bigint := 0;
begin
    loop
        -- The next group down: below g_key, or (none given) the last group of all.
        if g_key is null then
            select j.group_key, j.priority, j.run_at into g_key, g_priority, g_run_at from docket.jobs j
            where j.queue = $1 and j.state in ('pending', 'retrying') and j.parked_at is null
              and j.group_key is not null
            order by j.group_key desc, j.priority desc, j.run_at desc, j.id desc limit 1;
        else
            select j.group_key, j.priority, j.run_at into g_key, g_priority, g_run_at from docket.jobs j
            where j.queue = $1 and j.state in ('pending', 'retrying') and j.parked_at is null
              and j.group_key is not null and j.group_key < g_key
            order by j.group_key desc, j.priority desc, j.run_at desc, j.id desc limit 1;
        end if;
        exit when not found;
        walked := walked + 1;
        -- The job the probe landed on is due: so is the group (the usual case, one probe).
        -- Otherwise its priorities from the last (the one the probe landed on) down to the
        -- first, each probed at its newest due job.
        g_due := g_run_at <= coalesce($5, now());
        while not g_due loop
            perform 1 from docket.jobs j
            where j.queue = $1 and j.state in ('pending', 'retrying') and j.parked_at is null
              and j.group_key = g_key and j.priority = g_priority
              and j.run_at <= coalesce($5, now())
            order by j.group_key desc, j.priority desc, j.run_at desc, j.id desc limit 1;
            g_due := found;
            exit when g_due;
            select j.priority into g_priority from docket.jobs j
            where j.queue = $1 and j.state in ('pending', 'retrying') and j.parked_at is null
              and j.group_key = g_key and j.priority < g_priority
            order by j.group_key desc, j.priority desc, j.run_at desc, j.id desc limit 1;
            exit when not found;
        end loop;
        group_key := g_key;
        due := g_due;
        return next;
        if g_due then
            due_groups := due_groups + 1;
        end if;
        exit when due_groups >= $3 or walked >= $4;
    end loop;
end
$$;

-- The admin listing (GET /api/jobs, docket jobs list) newest first by id is one statement per
-- state with the state written into it (crates/queue/src/db/job.rs, job_list): the statement
-- that took the state as a parameter could use no index of one state under a generic plan,
-- and walked the primary key past every completed row to find the few dead letters (223 ms
-- at 900,000 completed rows). With the state a literal, even a generic plan knows how common
-- the state is (its statistics are per value) and can use the indexes whose predicate names
-- it: a live state reads that state's rows (jobs_snapshot, jobs_processing) or walks the
-- primary key when the state is common, and never the completed ones.
--
-- The two final states besides completed get an index in listing order, so that a page of
-- them reads only the page, however many pile up (an outage's dead letters). It costs the
-- hot path nothing: a job enters it only when it is dead-lettered or cancelled. The live
-- states get none: two more index entries for every job (at enqueue and at the claim) would
-- slow every job for the sake of an operator's listing. Completed jobs are the bulk of the
-- table and the primary key's newest-first walk meets mostly them.
--
-- The index is built in the migration's transaction, holding writes to the table while it
-- reads it; its entries are few (dead letters and cancelled jobs only), the read is not.
create index jobs_listing on docket.jobs (state, id) where state in ('dead_letter', 'cancelled');
