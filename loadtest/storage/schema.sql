-- Four shapes of job storage, side by side, for the lean-hot-table decision
-- (docs/architecture.md, "Where finished jobs live"). Each has docket.jobs' columns
-- and the indexes each part of it needs; run.sh drives them with the same workload.
drop schema if exists one_table, list_parts, history, no_history cascade;

create or replace function public.spike_uuid_v7() returns uuid language sql volatile as $$
    select encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing
        substring(int8send(floor(extract(epoch from clock_timestamp()) * 1000)::bigint) from 3)
        from 1 for 6), 52, 1), 53, 1), 'hex')::uuid
$$;

do $$
declare
    s text;
    cols text := $c$
        id uuid not null default public.spike_uuid_v7(),
        queue text not null default 'default',
        kind text not null,
        payload jsonb not null default '{}',
        state text not null default 'pending',
        priority smallint not null default 0,
        run_at timestamptz not null default now(),
        attempt integer not null default 0,
        max_attempts integer not null default 25,
        unique_key text,
        expires_at timestamptz,
        last_error text,
        errors jsonb not null default '[]',
        dead_letter_reason text,
        locked_by uuid,
        cancel_requested_at timestamptz,
        created_at timestamptz not null default now(),
        attempted_at timestamptz,
        finished_at timestamptz,
        lease_token uuid,
        parked_at timestamptz,
        batch_id uuid,
        group_key text $c$;
    -- What the claim, the snapshot, unique keys, expiry, parking, cancels and leases need.
    live_indexes text[] := array[
        'create index on %s (queue, priority, run_at, id) where state in (''pending'', ''retrying'') and parked_at is null and group_key is null',
        'create index on %s (queue, group_key, priority, run_at, id) where state in (''pending'', ''retrying'') and parked_at is null and group_key is not null',
        'create index on %s (expires_at) where expires_at is not null and state in (''pending'', ''retrying'')',
        'create index on %s (queue, kind) where parked_at is not null and state in (''pending'', ''retrying'')',
        'create index on %s (lease_token) where state = ''processing''',
        'create index on %s (queue, state, run_at) where state in (''pending'', ''retrying'', ''processing'')',
        'create unique index on %s (unique_key) where unique_key is not null and state in (''pending'', ''retrying'', ''processing'')',
        'create index on %s (batch_id) where batch_id is not null and state in (''pending'', ''retrying'', ''processing'')',
        'create index on %s (locked_by) where cancel_requested_at is not null'];
    -- What the dead-letter list, the throughput chart, listings and batches read.
    done_indexes text[] := array[
        'create index on %s (queue, kind, finished_at) where state = ''dead_letter''',
        'create index on %s (state, finished_at)',
        'create index on %s (state, id) where state in (''dead_letter'', ''cancelled'')',
        'create index on %s (batch_id) where batch_id is not null'];
    ix text;
begin
    -- Today: one table, every index.
    create schema one_table;
    execute format('create table one_table.jobs (%s, primary key (id))', cols);
    foreach ix in array live_indexes[1:5] || live_indexes[7:9] || done_indexes loop
        execute format(ix, 'one_table.jobs');
    end loop;
    -- Today's snapshot index also counts dead letters.
    execute 'create index on one_table.jobs (queue, state, run_at) where state in (''pending'', ''retrying'', ''processing'', ''dead_letter'')';

    -- docket.jobs partitioned by state class: live jobs in one partition, finished ones in
    -- daily partitions by finished_at; an outcome's UPDATE moves the row.
    create schema list_parts;
    execute format('create table list_parts.jobs (%s) partition by list (state)', cols);
    execute 'create table list_parts.live partition of list_parts.jobs for values in (''pending'', ''retrying'', ''processing'')';
    execute 'alter table list_parts.live add primary key (id)';
    foreach ix in array live_indexes loop
        execute format(ix, 'list_parts.live');
    end loop;
    execute 'create table list_parts.done partition of list_parts.jobs for values in (''completed'', ''dead_letter'', ''cancelled'') partition by range (finished_at)';
    execute 'create index on list_parts.done (id)';
    foreach ix in array done_indexes loop
        execute format(ix, 'list_parts.done');
    end loop;

    -- A live table and a history table by day; an outcome deletes from one and inserts
    -- into the other in one statement.
    create schema history;
    execute format('create table history.live (%s, primary key (id))', cols);
    foreach ix in array live_indexes loop
        execute format(ix, 'history.live');
    end loop;
    execute format('create table history.done (%s) partition by range (finished_at)', cols);
    execute 'create index on history.done (id)';
    foreach ix in array done_indexes loop
        execute format(ix, 'history.done');
    end loop;

    -- keep = "none": a completed job is deleted; nothing is kept.
    create schema no_history;
    execute format('create table no_history.live (%s, primary key (id))', cols);
    foreach ix in array live_indexes loop
        execute format(ix, 'no_history.live');
    end loop;

    foreach s in array array['list_parts', 'history'] loop
        for d in -2..2 loop
            execute format('create table %I.done_%s partition of %I.done for values from (%L) to (%L)',
                s, to_char(current_date + d, 'YYYYMMDD'), s, current_date + d, current_date + d + 1);
        end loop;
    end loop;
    -- No autovacuum during the runs: its WAL would land in whichever shape runs next.
    -- run.sh vacuums where a shape's own retention needs it and counts that.
    for s in select format('%I.%I', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace
             where n.nspname in ('one_table', 'list_parts', 'history', 'no_history') and c.relkind = 'r' loop
        execute format('alter table %s set (autovacuum_enabled = off)', s);
    end loop;
end $$;
