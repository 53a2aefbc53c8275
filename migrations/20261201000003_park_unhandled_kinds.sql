-- Ready jobs whose kind no live worker runs are parked out of the claim's index.
--
-- A worker claims only the kinds it knows, and PostgreSQL 15 can only test a row's kind
-- after reading it from the heap: ready jobs of a kind nobody runs sat at the head of
-- jobs_claim and were read again by every claim (200,000 of them: 41 ms and 4,600 buffers
-- per claim). The parker (a worker maintenance service) sets parked_at on jobs that have
-- been ready for a while with no live worker for their queue and kind; they leave
-- jobs_claim, stay `pending`/`retrying` (the snapshot still counts them, their age still
-- shows), and are listed cheaply as unhandled kinds. A worker that runs the kind unparks
-- them when it starts, and the parker unparks them for any live worker that runs it.

alter table docket.jobs add column parked_at timestamptz;

-- The claim's index, as before, without parked jobs. Rebuilt here: on a large table this
-- migration holds the table's lock while it builds.
drop index docket.jobs_claim;
create index jobs_claim on docket.jobs (queue, priority, run_at, id)
    where state in ('pending', 'retrying') and parked_at is null;

-- Parked ready jobs by queue and kind: what the health check lists as unhandled, and what
-- a worker that runs the kind takes back.
create index jobs_parked on docket.jobs (queue, kind)
    where parked_at is not null and state in ('pending', 'retrying');
