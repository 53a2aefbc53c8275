-- Cron schedules, as every process that runs a scheduler registers them, and every tick
-- ever enqueued. There is no leader: each tick is recorded, keyed by (schedule, tick
-- instant), in the same statement as its job's enqueue, so however many schedulers see a
-- tick due, one job is made, ever. A finished job does not free its tick (a live-only
-- unique key would, and a slow scheduler would then enqueue the tick again).

create table docket.schedules (
    name          text        not null,
    cron          text        not null,
    kind          text        not null,
    payload       jsonb       not null default '{}',
    queue         text        not null default 'default',
    priority      smallint    not null default 0,
    max_attempts  integer     not null default 25,
    timezone      text        not null default 'UTC',
    catch_up      text        not null default 'latest',
    -- skip: a tick is skipped while the batch of an earlier tick still runs.
    overlap       text        not null default 'allow',
    -- Stored so that a pause holds for every process, across restarts.
    paused        boolean     not null default false,
    -- The newest tick dealt with (enqueued, or missed by the catch-up policy); null until
    -- the first, when ticks count from registered_at.
    last_tick_at  timestamptz,
    -- The next tick, as the last scheduler run computed it: for the CLI and health.
    next_tick_at  timestamptz,
    registered_at timestamptz not null default now(),
    constraint schedules_pkey primary key (name),
    constraint schedules_catch_up check (catch_up in ('skip', 'latest', 'all')),
    constraint schedules_overlap check (overlap in ('allow', 'skip')),
    constraint schedules_name_length check (char_length(name) between 1 and 127)
);

create table docket.schedule_ticks (
    schedule   text        not null,
    tick_at    timestamptz not null,
    job_id     uuid,
    created_at timestamptz not null default now(),
    constraint schedule_ticks_pkey primary key (schedule, tick_at)
);

-- Enqueues the job of one tick, exactly once, and returns its id; a null id when this
-- call is not the one: another scheduler did it, the schedule is paused, or it is already
-- past the tick. With overlap = 'skip', a tick due while a batch of an earlier tick still
-- runs is recorded (a tick row with no job) and skipped: `skipped` is true. The schedule's row is locked first, so concurrent
-- schedulers of one schedule take turns, and each re-reads last_tick_at after the other.
create function docket.enqueue_tick(schedule text, tick_at timestamptz,
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
    if s.overlap = 'skip' and exists (
        select 1 from docket.batches b
        where b.schedule = enqueue_tick.schedule and b.finished_at is null
    ) then
        update docket.schedules set last_tick_at = enqueue_tick.tick_at
        where name = enqueue_tick.schedule;
        skipped := true;
        return;
    end if;
    job_id := docket.enqueue(s.kind, s.payload, s.queue, enqueue_tick.tick_at, s.priority,
                             s.max_attempts);
    update docket.schedule_ticks t set job_id = enqueue_tick.job_id
    where t.schedule = enqueue_tick.schedule and t.tick_at = enqueue_tick.tick_at;
    update docket.schedules set last_tick_at = enqueue_tick.tick_at
    where name = enqueue_tick.schedule;
end
$$;
