-- A job's times fall in the years 1 to 9999 UTC, the range every input of Docket shares:
-- NewJob::validate (crates/queue/src/job.rs, check_time), the CLI and the HTTP API go
-- through it, and these constraints hold it for callers of docket.enqueue /
-- docket.enqueue_many from SQL. PostgreSQL's own timestamptz range (4713 BC .. 294276 AD)
-- is wider; a time outside it is refused while parsing anyway.
--
-- NOT VALID: the constraints hold for every row written from now on without scanning the
-- table under a lock; rows written before keep whatever they have.
alter table docket.jobs
    add constraint jobs_run_at_in_range check (
        run_at >= timestamptz '0001-01-01 00:00:00+00'
        and run_at < timestamptz '10000-01-01 00:00:00+00'
    ) not valid,
    add constraint jobs_expires_at_in_range check (
        expires_at >= timestamptz '0001-01-01 00:00:00+00'
        and expires_at < timestamptz '10000-01-01 00:00:00+00'
    ) not valid;
