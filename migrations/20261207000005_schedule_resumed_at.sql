-- When a schedule was last resumed: a tick due before it fell inside the pause, so it is
-- never on time (`catch_up = "skip"` drops it; `latest` and `all` treat it as missed).
-- Set by the resume only (a resume of a running schedule leaves it); null until the first.
alter table docket.schedules add column resumed_at timestamptz;
