-- Restore checks: each run of `docket restore-check` restores a backup into a scratch
-- database, checks it and records here when, which file, the verdict, what came back and
-- who ran it. The newest row is what `docket check`, the health document and /ops show.
create table docket.restore_checks (
    id bigint generated always as identity primary key,
    checked_at timestamptz not null default now(),
    backup_file text not null,
    backup_taken_at timestamptz,
    ok boolean not null,
    failure text,
    tables integer not null,
    jobs bigint not null,
    table_rows jsonb not null default '{}',
    job_states jsonb not null default '{}',
    duration_ms bigint not null,
    owner text not null,
    constraint restore_checks_failure_iff_failed check (ok = (failure is null)),
    constraint restore_checks_counts_not_negative check (tables >= 0 and jobs >= 0 and duration_ms >= 0),
    constraint restore_checks_owner_not_empty check (char_length(owner) between 1 and 256)
);
create index restore_checks_checked_at on docket.restore_checks (checked_at desc);
