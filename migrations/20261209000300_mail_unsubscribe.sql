-- One-click unsubscribe (RFC 8058). A campaign email's link names its delivery; following it
-- suppresses the address and marks the delivery, so that the campaign can count who left
-- through it. The delivery's status is untouched: it was sent, and that stays true.

alter table docket.mail_deliveries add column unsubscribed_at timestamptz;
alter table docket.mail_deliveries add constraint mail_deliveries_unsubscribed_campaign check (
    unsubscribed_at is null or source = 'campaign');

-- Which campaign an unsubscribe came from (null for entries from an SMTP reply or an
-- operator). Kept when the campaign is gone: the suppression outlives it.
alter table docket.mail_suppressions add column campaign_id uuid;
