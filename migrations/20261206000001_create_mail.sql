-- Email: campaigns, deliveries, the suppression list, and token buckets shared by every
-- process (the relay-wide mail rate; queue rate limits can use the same table).
--
-- A delivery is one email to one recipient. Its idempotency key (a campaign's recipient, or
-- a recovery payload's key) is unique, so a second job with the same key finds the first
-- delivery instead of making another. Before the SMTP exchange the delivery is reserved
-- (`sending`, attempts + 1) in its own committed statement; right after, the outcome is
-- recorded. A delivery found `sent` is never sent again; one found `sending` was cut off
-- between the two writes (a crash): the single window in which a message may go twice.

create table docket.mail_campaigns (
    id          uuid        not null default docket.uuid_v7(),
    name        text        not null,
    template    text        not null,
    -- Operator's controls; `finished` is derived from the deliveries, never stored.
    paused      boolean     not null default false,
    cancelled   boolean     not null default false,
    total       integer     not null,
    -- The batch of its mail.campaign_batch jobs.
    batch_id    uuid,
    created_at  timestamptz not null default now(),
    constraint mail_campaigns_pkey primary key (id),
    constraint mail_campaigns_name_length check (char_length(name) between 1 and 200),
    constraint mail_campaigns_total_positive check (total > 0)
);

create table docket.mail_deliveries (
    id                uuid        not null default docket.uuid_v7(),
    source            text        not null,
    campaign_id       uuid,
    -- At most one delivery per key: a campaign's `campaign_id:address`, a payload's
    -- idempotency_key, or the job id of a recovery or admin email without one.
    idempotency_key   text        not null,
    recipient         text        not null,
    recipient_name    text,
    template          text        not null,
    locale            text,
    -- The recipient's own template variables (a campaign's CSV columns).
    vars              jsonb       not null default '{}',
    status            text        not null default 'queued',
    suppressed_reason text,
    smtp_code         integer,
    smtp_reply        text,
    -- Deterministic: <delivery id@docket>, the same on every attempt.
    message_id        text        not null,
    attempts          integer     not null default 0,
    -- After a temporary failure: not before this (the retry ladder's next step).
    retry_at          timestamptz,
    job_id            uuid,
    last_error        text,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    sent_at           timestamptz,
    constraint mail_deliveries_pkey primary key (id),
    constraint mail_deliveries_idempotency_key unique (idempotency_key),
    constraint mail_deliveries_source check (source in ('recovery', 'admin', 'campaign')),
    constraint mail_deliveries_status check (
        status in ('queued', 'sending', 'sent', 'suppressed', 'failed', 'dead_letter', 'expired')),
    constraint mail_deliveries_campaign_iff_source check ((campaign_id is not null) = (source = 'campaign')),
    constraint mail_deliveries_sent_at_iff_sent check ((sent_at is not null) = (status = 'sent')),
    constraint mail_deliveries_reason_iff_suppressed check (
        (suppressed_reason is not null) = (status = 'suppressed')),
    constraint mail_deliveries_attempts_nonnegative check (attempts >= 0)
);

-- A campaign's deliveries by status: its counts, its pending recipients.
create index mail_deliveries_campaign on docket.mail_deliveries (campaign_id, status)
    where campaign_id is not null;
-- The newest first, for `docket mail deliveries` and the API's pages.
create index mail_deliveries_created on docket.mail_deliveries (created_at desc, id desc);
create index mail_deliveries_recipient on docket.mail_deliveries (lower(recipient));

-- The relay's health across processes: a configuration fault (authentication, TLS) is
-- recorded here and cleared by the next message the relay accepts; `checks.mail` reads it.
create table docket.mail_status (
    id             integer     not null default 1,
    last_fault_at  timestamptz,
    last_fault     text,
    cleared_at     timestamptz,
    constraint mail_status_pkey primary key (id),
    constraint mail_status_one_row check (id = 1)
);
insert into docket.mail_status (id) values (1);

create table docket.mail_suppressions (
    -- Lower case: addresses are compared without regard to case.
    address    text        not null,
    reason     text        not null,
    created_at timestamptz not null default now(),
    constraint mail_suppressions_pkey primary key (address),
    constraint mail_suppressions_lower check (address = lower(address))
);

-- Token buckets: `rate` tokens a second up to `burst`. A taker refills the bucket from the
-- time since `updated_at` and takes one token, in one statement under the row's lock, so
-- the rate holds over every process together.
create table docket.rate_limits (
    name       text             not null,
    rate       double precision not null,
    burst      double precision not null,
    tokens     double precision not null,
    updated_at timestamptz      not null default now(),
    constraint rate_limits_pkey primary key (name),
    constraint rate_limits_rate_positive check (rate > 0),
    constraint rate_limits_burst_positive check (burst >= 1)
);

-- Takes up to `wanted` tokens from a bucket (made full on first use; its rate and burst
-- follow the caller's): one for an email, up to a claim's free slots for a rate-limited
-- queue. A borrower may take while the bucket holds at least `1 - may_borrow` tokens,
-- driving it below zero: recovery emails go first, and everyone else waits for the refill.
-- Returns how many were taken (possibly none) and the level left.
create function docket.rate_limit_take(bucket text, per_second double precision,
                                       capacity double precision, wanted integer,
                                       may_borrow double precision,
                                       out granted integer, out level double precision)
language plpgsql volatile as $$
begin
    insert into docket.rate_limits as r (name, rate, burst, tokens)
    values (bucket, per_second, capacity, capacity)
    on conflict (name) do nothing;
    select least(capacity,
                 r.tokens + per_second * greatest(0, extract(epoch from clock_timestamp() - r.updated_at)))
      into level
    from docket.rate_limits r where r.name = bucket
    for update;
    granted := greatest(0, least(wanted, floor(level + may_borrow)::integer));
    level := level - granted;
    update docket.rate_limits r
    set rate = per_second, burst = capacity, tokens = level, updated_at = clock_timestamp()
    where r.name = bucket;
end
$$;

-- Tokens taken but not used (a claim found fewer jobs than it had tokens) go back, up to
-- the burst.
create function docket.rate_limit_give_back(bucket text, unused integer)
returns void language sql volatile as $$
    update docket.rate_limits set tokens = least(burst, tokens + unused) where name = bucket;
$$;
