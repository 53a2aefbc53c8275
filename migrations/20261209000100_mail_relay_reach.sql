-- Whether the relay can be reached at all, beside the configuration faults: connection
-- failures and timeouts since the last message the relay took (where, since when, how
-- many, the last error), and when it last took one. `checks.mail` reads them, so that a
-- relay that refuses connections degrades the check and a relay never tried is not
-- called healthy.
alter table docket.mail_status
    add column last_sent_at          timestamptz,
    add column unreachable_relay     text,
    add column unreachable_since     timestamptz,
    add column unreachable_at        timestamptz,
    add column unreachable_attempts  integer not null default 0,
    add column unreachable_error     text;
