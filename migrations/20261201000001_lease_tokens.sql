-- Leases that cannot be confused: a fencing token per claim, a lease per worker, expiry
-- swept apart from the claim, and the input limits every enqueue path shares.

-- A fresh token for every claim. `(locked_by, attempt)` repeats (replay resets `attempt`,
-- a snooze gives it back), so a stale outcome of an earlier claim by the same worker could
-- pass that fence; a token made anew by each claim never repeats. Set iff processing.
alter table docket.jobs add column lease_token uuid;
update docket.jobs set lease_token = docket.uuid_v7() where state = 'processing';
alter table docket.jobs add constraint jobs_token_iff_processing
    check ((state = 'processing') = (lease_token is not null));

-- The btree of jobs_unique_key_live cannot hold entries above about 2.7 kB; a key that
-- long failed with an index error. 256 characters are at most 1,024 bytes. NOT VALID:
-- enforced for every new or changed row without scanning the rows already there.
alter table docket.jobs add constraint jobs_unique_key_length
    check (char_length(unique_key) <= 256) not valid;

-- The expiry sweep dead-letters ready jobs past their expires_at, so that they never take
-- up a claim's LIMIT. Only jobs that carry an expiry enter this index.
create index jobs_expiring on docket.jobs (expires_at)
    where expires_at is not null and state in ('pending', 'retrying');

-- Each worker's lease is its own: the heartbeat stores until when it holds its jobs, so a
-- worker with a long lease is never judged by another worker's shorter setting.
alter table docket.workers add column lease_expires_at timestamptz;
update docket.workers set lease_expires_at = heartbeat_at + interval '30 seconds';
alter table docket.workers alter column lease_expires_at set not null;

-- The jobs held right now, by claim token: small (one entry per running job), so the
-- rescuer and each worker's reconciliation read only processing rows instead of walking
-- jobs_snapshot from end to end. Keyed by the token, not by the worker: an index led by
-- locked_by drew the outcome statement's join into a nested loop over every job the worker
-- holds (see jobs_cancel_requested in the first migration).
create index jobs_processing on docket.jobs (lease_token) where state = 'processing';
