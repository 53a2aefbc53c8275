-- An operator's replay, recorded rather than inferred. A job can run again without anyone
-- asking (handed back at shutdown, rescued after a stall, retried): a handler whose earlier
-- run left something only an operator may undo (an email whose fate is `unknown`, a
-- dead-lettered ladder) must tell that from a replay, and what it finds is no evidence of
-- either. `jobs.replays` counts the replays (`job_replay`, `job_replay_dead_letters`), in
-- the statement that puts the job back to `pending`, so every run claimed after a replay
-- sees it.
--
-- No CHECK on it: validating one holds the table's lock for a scan of every row, and only
-- the replays ever write it (`+ 1`). The constant default adds the column without a
-- rewrite.
alter table docket.jobs add column replays integer not null default 0;

-- The replay of its job that a recovery or admin delivery has answered: a run of a job
-- replayed more often than this takes the newest replay as the operator's word once (a
-- `dead_letter` or `unknown` delivery goes back to `queued` with a fresh ladder) and
-- records it here in the same statement, so a later run of that same replay (rescued,
-- handed back) finds nothing new and sends nothing.
alter table docket.mail_deliveries add column job_replays integer not null default 0;
