-- The operations page counts emails sent per minute beside jobs finished: an index range
-- on the minutes it has not read yet, never a scan of the deliveries.
create index mail_deliveries_sent on docket.mail_deliveries (sent_at) where sent_at is not null;
