-- Cron: one field list and one writer of `last_tick_at`.
--
-- The definition a process registers is the whole schedule: its catch-up bound is stored
-- beside the policy it bounds.
alter table docket.schedules
    add column catch_up_max integer not null default 100 check (catch_up_max >= 1);

-- The one writer of a schedule's `last_tick_at`: forward only, never while it is paused.
-- `docket.enqueue_tick` (a tick enqueued or skipped) and the scheduler (ticks the catch-up
-- policy let go, and the next tick it shows, when `record_next`) both move a schedule
-- through it.
create function docket.advance_schedule(schedule text, tick_at timestamptz,
                                        next_tick_at timestamptz default null,
                                        record_next boolean default false)
returns void language sql as $$
    update docket.schedules s set
        last_tick_at = case when s.paused then s.last_tick_at
                            else greatest(s.last_tick_at, advance_schedule.tick_at) end,
        next_tick_at = case when advance_schedule.record_next then advance_schedule.next_tick_at
                            else s.next_tick_at end
    where s.name = advance_schedule.schedule
$$;

create or replace function docket.enqueue_tick(schedule text, tick_at timestamptz,
                                              out job_id uuid, out skipped boolean)
language plpgsql as $$
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
                             s.max_attempts);
    update docket.schedule_ticks t set job_id = enqueue_tick.job_id
    where t.schedule = enqueue_tick.schedule and t.tick_at = enqueue_tick.tick_at;
    perform docket.advance_schedule(enqueue_tick.schedule, enqueue_tick.tick_at);
end
$$;
