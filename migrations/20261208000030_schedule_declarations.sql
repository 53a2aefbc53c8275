-- Cron: which live process declares each schedule.
--
-- Every process that runs a scheduler records, at start, the definition of each schedule
-- it declares, under its worker id. A schedule that no live worker (its lease holds)
-- declares is retired: a renamed `[[schedule]]`, a built-in schedule whose feature was
-- turned off. Live declarations that differ are two processes that disagree about one
-- name. A worker's declarations go with its registration.
create table docket.schedule_declarations (
    schedule    text not null,
    worker_id   uuid not null,
    definition  jsonb not null,
    declared_at timestamptz not null default now(),
    primary key (schedule, worker_id)
);
create index schedule_declarations_worker on docket.schedule_declarations (worker_id);
