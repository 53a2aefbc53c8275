-- A cancelled campaign's unsent recipients are `cancelled` (final): they no longer count as
-- pending, show "to go" or sit `queued` forever among the recent deliveries. A delivery
-- whose SMTP exchange is under way (`sending`) when its campaign is cancelled is left to
-- its exchange, which records what the relay answered.

alter table docket.mail_deliveries drop constraint mail_deliveries_status;
alter table docket.mail_deliveries add constraint mail_deliveries_status check (
    status in ('queued', 'sending', 'sent', 'suppressed', 'failed', 'dead_letter', 'expired',
               'unknown', 'cancelled'));

-- Campaigns cancelled before this migration.
update docket.mail_deliveries d
set status = 'cancelled', retry_at = null, updated_at = now(),
    last_error = 'its campaign was cancelled before it was sent'
from docket.mail_campaigns c
where d.campaign_id = c.id and c.cancelled and d.status = 'queued';

-- Pauses, resumes or cancels a campaign (a null leaves that control as it is) and moves its
-- waiting batch jobs to match: parked while paused, due now otherwise. Cancelling also makes
-- its queued recipients `cancelled`. Returns whether the campaign exists.
create or replace function docket.mail_campaign_set_controls(campaign uuid, set_paused boolean,
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
    if c.cancelled then
        -- A batch job reserves a recipient only while it is `queued`: one it has not
        -- reserved yet is never sent now.
        update docket.mail_deliveries d
        set status = 'cancelled', retry_at = null, updated_at = now(),
            last_error = 'its campaign was cancelled before it was sent'
        where d.campaign_id = c.id and d.status = 'queued';
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
