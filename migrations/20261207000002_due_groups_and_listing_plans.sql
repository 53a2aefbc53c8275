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
-- group has work) and one per priority to test: a backward probe from `run_at <= at`,
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
    g_due boolean;
    walked bigint := 0;
    due_groups bigint := 0;
begin
    loop
        -- The next group down: below g_key, or (none given) the last group of all.
        if g_key is null then
            select j.group_key, j.priority into g_key, g_priority from docket.jobs j
            where j.queue = $1 and j.state in ('pending', 'retrying') and j.parked_at is null
              and j.group_key is not null
            order by j.group_key desc, j.priority desc, j.run_at desc, j.id desc limit 1;
        else
            select j.group_key, j.priority into g_key, g_priority from docket.jobs j
            where j.queue = $1 and j.state in ('pending', 'retrying') and j.parked_at is null
              and j.group_key is not null and j.group_key < g_key
            order by j.group_key desc, j.priority desc, j.run_at desc, j.id desc limit 1;
        end if;
        exit when not found;
        walked := walked + 1;
        -- Its priorities from the last (the one the probe landed on) down to the first.
        loop
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
