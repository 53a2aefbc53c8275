-- Queue controls an operator sets, stored so that they hold for every process and across
-- restarts. A paused queue's jobs stay ready (counted, aged) but no worker claims them:
-- each worker reads the paused queues once per poll interval, so the claim itself pays
-- nothing for the control. Enqueueing is never paused.
create table docket.queue_controls (
    queue      text        not null,
    paused     boolean     not null default false,
    paused_at  timestamptz,
    updated_at timestamptz not null default now(),
    constraint queue_controls_pkey primary key (queue),
    constraint queue_controls_queue_length check (char_length(queue) between 1 and 127),
    constraint queue_controls_paused_at_iff_paused check ((paused_at is not null) = paused)
);
