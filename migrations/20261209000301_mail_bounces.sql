-- Bounces after acceptance. A relay answers 250 for addresses it cannot deliver and sends
-- the real outcome later as a delivery status notification (RFC 3464) to the envelope
-- sender, which names the delivery (VERP, `bounce+<token>@…`). A permanent failure makes a
-- sent delivery `bounced`: final, still with the `sent_at` of the relay's 250 (or none, for
-- an `unknown` one the bounce proves was taken).

alter table docket.mail_deliveries drop constraint mail_deliveries_status;
alter table docket.mail_deliveries add constraint mail_deliveries_status check (
    status in ('queued', 'sending', 'sent', 'suppressed', 'failed', 'dead_letter', 'expired',
               'unknown', 'cancelled', 'bounced'));
alter table docket.mail_deliveries drop constraint mail_deliveries_sent_at_iff_sent;
alter table docket.mail_deliveries add constraint mail_deliveries_sent_at_iff_sent check (
    (status <> 'sent' or sent_at is not null) and (sent_at is null or status in ('sent', 'bounced')));

-- Every message handed to `docket mail bounce` or `POST /api/mail/bounces`, with what it
-- came to: `bounced` (a permanent failure, the delivery changed), `delayed` (the relay is
-- still trying; nothing changed) or `ignored` (an auto-reply, not a DSN, a token that names
-- no delivery: `reason` says which). A log for operators, never read on the send path.
create table docket.mail_bounces (
    id          uuid        not null default docket.uuid_v7(),
    received_at timestamptz not null default now(),
    delivery_id uuid,
    outcome     text        not null,
    -- The DSN's enhanced status code (`5.1.1`) and diagnostic, when it had them.
    status_code text,
    diagnostic  text,
    reason      text,
    constraint mail_bounces_pkey primary key (id),
    constraint mail_bounces_outcome check (outcome in ('bounced', 'delayed', 'ignored')),
    constraint mail_bounces_reason_iff_ignored check ((reason is not null) = (outcome = 'ignored'))
);

-- A delivery's bounce records.
create index mail_bounces_delivery on docket.mail_bounces (delivery_id) where delivery_id is not null;
