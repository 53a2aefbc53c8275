-- Two rules of the mail tables that hold at the jobs' own writes, whoever makes them.
--
-- 1. A paused campaign costs nothing per second. Its batch jobs used to be claimed, find
--    the campaign paused and snooze 5 s, over and over (1,000 jobs: 6,306 row updates in
--    20 s on one worker). Now they are parked: `run_at` a century ahead (what a snooze of
--    `DELAY_MAX` stores), where no claim looks. Pausing parks the jobs that wait; a job
--    that was running parks when it goes back to ready (its snooze, a retry, a rescue, a
--    hand-back) while the campaign is paused; resuming or cancelling brings every waiting
--    job back to now and wakes the `mail` queue's workers.
--
--    The order that makes it safe: the trigger below reads a paused campaign `for share`,
--    so it waits for a pause or resume in flight, and a pause or resume locks the campaign
--    row before it moves the jobs, in a later statement (a fresh snapshot). A resume that
--    commits before a job's snooze is written is seen by the trigger (the job stays due);
--    one that comes after the trigger read waits for that write to commit and then moves
--    the parked job itself. No snooze decided on a stale read can park a job for good.
--
-- 2. An email whose job expires has its delivery expired. The expiry sweep dead-letters a
--    ready job past its `expires_at` (no claim hands it out), so a recovery or admin email
--    held (a throttle, a configuration fault, the relay's rate) past its job's expiry used
--    to stay `queued` with its attempts given back, forever. The trigger settles it in the
--    sweep's own transaction; the queue's sweep knows nothing of mail. Only `queued`
--    deliveries: one `sending` was cut off mid-exchange and may have been sent.

-- A campaign by its batch: the trigger finds a job's campaign through the job's batch.
create index mail_campaigns_batch on docket.mail_campaigns (batch_id);

-- The single emails still under way, by job: what an expiring job's trigger looks up. Small:
-- campaign deliveries (all queued at creation) and final ones stay out.
create index mail_deliveries_job_open on docket.mail_deliveries (job_id)
    where source <> 'campaign' and status in ('queued', 'sending');

-- Parks a campaign batch job going back to ready while its campaign is paused (and not
-- cancelled).
create function docket.mail_park_paused_campaign_job() returns trigger
language plpgsql volatile as $$
begin
    perform 1 from docket.mail_campaigns c
    where c.batch_id = new.batch_id and c.paused and not c.cancelled
    for share;
    if found then
        new.run_at := greatest(new.run_at, now() + interval '100 years');
    end if;
    return new;
end
$$;

create trigger jobs_park_paused_campaign_job
    before update on docket.jobs
    for each row
    when (old.state = 'processing' and new.state in ('pending', 'retrying')
          and new.kind = 'mail.campaign_batch' and new.batch_id is not null)
    execute function docket.mail_park_paused_campaign_job();

-- Expires the open delivery of a recovery or admin job that expired.
create function docket.mail_expire_delivery_of_expired_job() returns trigger
language plpgsql volatile as $$
begin
    update docket.mail_deliveries
    set status = 'expired', retry_at = null, updated_at = now(),
        last_error = 'its job expired before it could be sent; never sent late'
    where job_id = new.id and source <> 'campaign' and status = 'queued';
    return null;
end
$$;

create trigger jobs_expire_mail_delivery
    after update on docket.jobs
    for each row
    when (new.state = 'dead_letter' and old.state <> 'dead_letter'
          and new.dead_letter_reason = 'expired'
          and new.kind in ('mail.recovery', 'mail.admin'))
    execute function docket.mail_expire_delivery_of_expired_job();

-- Pauses, resumes or cancels a campaign (a null leaves that control as it is) and moves its
-- waiting batch jobs to match: parked while paused, due now otherwise. Returns whether the
-- campaign exists.
create function docket.mail_campaign_set_controls(campaign uuid, set_paused boolean,
                                                  set_cancelled boolean)
returns boolean
language plpgsql volatile as $$
declare
    c docket.mail_campaigns;
    queues text[];
    q text;
begin
    -- First the campaign's row lock: a batch job's trigger that read the old controls
    -- has committed by the time the statements below take their snapshots.
    update docket.mail_campaigns
    set paused = coalesce(set_paused, paused), cancelled = coalesce(set_cancelled, cancelled)
    where id = campaign
    returning * into c;
    if not found then
        return false;
    end if;
    if c.paused and not c.cancelled then
        update docket.jobs j set run_at = greatest(j.run_at, now() + interval '100 years')
        where j.batch_id = c.batch_id and j.state in ('pending', 'retrying');
    else
        -- Every waiting job comes back now: a parked one, and one waiting on a recipient's
        -- retry ladder, which looks and waits again (once).
        with woken as (
            update docket.jobs j set run_at = now()
            where j.batch_id = c.batch_id and j.state in ('pending', 'retrying')
              and j.run_at > now()
            returning j.queue
        )
        select array_agg(distinct w.queue) into queues from woken w;
        foreach q in array coalesce(queues, '{}') loop
            perform docket.wake(q);
        end loop;
    end if;
    return true;
end
$$;
