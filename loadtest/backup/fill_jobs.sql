-- `psql -v n=1000000 -f loadtest/backup/fill_jobs.sql DB`: n jobs in mixed states (60% completed,
-- 20% pending, 5% retrying, 2% processing, 8% dead_letter, 5% cancelled), with payloads
-- like an email job's: the data of the backup and restore-check benchmark (docs/benchmarks.md).
insert into docket.jobs (queue, kind, payload, state, priority, run_at, attempt, max_attempts,
    last_error, errors, dead_letter_reason, locked_by, lease_token, created_at, attempted_at, finished_at)
select
    case when i % 3 = 0 then 'mail' else 'default' end,
    case i % 4 when 0 then 'mail.campaign' when 1 then 'report.build' when 2 then 'invoice.send' else 'user.sync' end,
    jsonb_build_object('to', 'user' || i || '@example.com', 'template', 'welcome', 'vars', jsonb_build_object('name', 'User ' || i, 'plan', 'pro')),
    s.state::docket.job_state,
    0,
    now() - interval '1 hour',
    case when s.state = 'pending' then 0 else 1 end,
    25,
    case when s.state in ('retrying', 'dead_letter') then 'connection reset by peer' end,
    case when s.state in ('retrying', 'dead_letter')
         then jsonb_build_array(jsonb_build_object('attempt', 1, 'error', 'connection reset by peer', 'at', now()))
         else '[]'::jsonb end,
    case when s.state = 'dead_letter' then 'max_attempts' end,
    case when s.state = 'processing' then gen_random_uuid() end,
    case when s.state = 'processing' then gen_random_uuid() end,
    now() - interval '2 hours',
    case when s.state <> 'pending' then now() - interval '90 minutes' end,
    case when s.state in ('completed', 'dead_letter', 'cancelled') then now() - interval '80 minutes' end
from generate_series(1, :n) i
cross join lateral (select case
    when i % 100 < 60 then 'completed'
    when i % 100 < 80 then 'pending'
    when i % 100 < 85 then 'retrying'
    when i % 100 < 87 then 'processing'
    when i % 100 < 95 then 'dead_letter'
    else 'cancelled' end as state) s;
