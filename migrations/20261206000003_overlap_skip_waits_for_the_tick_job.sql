-- overlap = 'skip' waited only for an open batch of an earlier tick; a tick due after the
-- earlier tick's job was enqueued but before that job had made its batch (a busy worker,
-- a retry) ran on top of it. A tick now also waits while the schedule's last enqueued tick
-- job is live. Same signature: replaced in place.
create or replace function docket.enqueue_tick(schedule text, tick_at timestamptz,
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
