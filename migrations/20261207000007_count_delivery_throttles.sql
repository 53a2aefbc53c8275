-- 421/454 replies a delivery met without spending an attempt: past a few, each spends one
-- (a destination that always defers ends on its ladder instead of holding its batch).
alter table docket.mail_deliveries add column throttles integer not null default 0;
