-- A delivery whose SMTP exchange was cut off with no outcome recorded (its worker died
-- between the reservation and the record) is `unknown`: the relay may have taken it, so it
-- is final and never sent again unless an operator asks (replaying a recovery or admin
-- job, or putting the delivery back to `queued`). While an exchange may still be under
-- way, a `sending` delivery's `retry_at` is when it is over at the latest.

alter table docket.mail_deliveries drop constraint mail_deliveries_status;
alter table docket.mail_deliveries add constraint mail_deliveries_status check (
    status in ('queued', 'sending', 'sent', 'suppressed', 'failed', 'dead_letter', 'expired',
               'unknown'));
