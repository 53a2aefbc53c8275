-- The docket schema as the migrated database has it. Generated: do not edit.
-- Made by `DOCKET_WRITE_SCHEMA=1 cargo test -p docket-queue --test it schema`;
-- the migrations in migrations/ stay the source of truth.

create type docket.job_state as enum ('pending', 'retrying', 'processing', 'completed', 'dead_letter', 'cancelled');

create table docket.batches (
    id uuid not null default docket.uuid_v7(),
    total integer not null,
    callback_kind text,
    callback_payload jsonb not null default '{}'::jsonb,
    callback_queue text not null default 'default'::text,
    callback_job_id uuid,
    completed integer,
    dead_letter integer,
    cancelled integer,
    schedule text,
    tick_at timestamp with time zone,
    created_at timestamp with time zone not null default now(),
    finished_at timestamp with time zone,
    trace_context jsonb
);
alter table docket.batches add constraint batches_counts_iff_finished CHECK (((finished_at IS NULL) = ((completed IS NULL) AND (dead_letter IS NULL) AND (cancelled IS NULL))));
alter table docket.batches add constraint batches_total_positive CHECK ((total > 0));
alter table docket.batches add constraint batches_pkey PRIMARY KEY (id);
CREATE INDEX batches_open ON docket.batches USING btree (created_at) WHERE (finished_at IS NULL);
CREATE INDEX batches_schedule ON docket.batches USING btree (schedule, tick_at) WHERE (schedule IS NOT NULL);

create table docket.jobs (
    id uuid not null default docket.uuid_v7(),
    queue text not null default 'default'::text,
    kind text not null,
    payload jsonb not null default '{}'::jsonb,
    state docket.job_state not null default 'pending'::docket.job_state,
    priority smallint not null default 0,
    run_at timestamp with time zone not null default now(),
    attempt integer not null default 0,
    max_attempts integer not null default 25,
    unique_key text,
    expires_at timestamp with time zone,
    last_error text,
    errors jsonb not null default '[]'::jsonb,
    dead_letter_reason text,
    locked_by uuid,
    cancel_requested_at timestamp with time zone,
    created_at timestamp with time zone not null default now(),
    attempted_at timestamp with time zone,
    finished_at timestamp with time zone,
    lease_token uuid,
    parked_at timestamp with time zone,
    batch_id uuid,
    group_key text,
    trace_context jsonb,
    replays integer not null default 0
);
alter table docket.jobs add constraint jobs_attempt_not_negative CHECK ((attempt >= 0));
alter table docket.jobs add constraint jobs_dead_letter_reason CHECK (((state = 'dead_letter'::docket.job_state) = (dead_letter_reason IS NOT NULL)));
alter table docket.jobs add constraint jobs_errors_is_array CHECK ((jsonb_typeof(errors) = 'array'::text));
alter table docket.jobs add constraint jobs_expires_at_in_range CHECK (((expires_at >= '0001-01-01 00:00:00+00'::timestamp with time zone) AND (expires_at < '10000-01-01 00:00:00+00'::timestamp with time zone))) NOT VALID;
alter table docket.jobs add constraint jobs_finished_iff_final CHECK (((state = ANY (ARRAY['completed'::docket.job_state, 'dead_letter'::docket.job_state, 'cancelled'::docket.job_state])) = (finished_at IS NOT NULL)));
alter table docket.jobs add constraint jobs_group_key_length CHECK (((group_key IS NULL) OR ((length(group_key) >= 1) AND (length(group_key) <= 256))));
alter table docket.jobs add constraint jobs_kind_length CHECK (((char_length(kind) >= 1) AND (char_length(kind) <= 127)));
alter table docket.jobs add constraint jobs_locked_iff_processing CHECK (((state = 'processing'::docket.job_state) = (locked_by IS NOT NULL)));
alter table docket.jobs add constraint jobs_max_attempts_positive CHECK ((max_attempts > 0));
alter table docket.jobs add constraint jobs_queue_length CHECK (((char_length(queue) >= 1) AND (char_length(queue) <= 127)));
alter table docket.jobs add constraint jobs_run_at_in_range CHECK (((run_at >= '0001-01-01 00:00:00+00'::timestamp with time zone) AND (run_at < '10000-01-01 00:00:00+00'::timestamp with time zone))) NOT VALID;
alter table docket.jobs add constraint jobs_token_iff_processing CHECK (((state = 'processing'::docket.job_state) = (lease_token IS NOT NULL)));
alter table docket.jobs add constraint jobs_trace_context_object CHECK (((trace_context IS NULL) OR (jsonb_typeof(trace_context) = 'object'::text))) NOT VALID;
alter table docket.jobs add constraint jobs_unique_key_length CHECK ((char_length(unique_key) <= 256)) NOT VALID;
alter table docket.jobs add constraint jobs_unique_key_not_empty CHECK (((unique_key IS NULL) OR (char_length(unique_key) > 0)));
alter table docket.jobs add constraint jobs_pkey PRIMARY KEY (id);
CREATE INDEX jobs_batch ON docket.jobs USING btree (batch_id) WHERE (batch_id IS NOT NULL);
CREATE INDEX jobs_batch_live ON docket.jobs USING btree (batch_id) WHERE ((batch_id IS NOT NULL) AND (state = ANY (ARRAY['pending'::docket.job_state, 'retrying'::docket.job_state, 'processing'::docket.job_state])));
CREATE INDEX jobs_cancel_requested ON docket.jobs USING btree (locked_by) WHERE (cancel_requested_at IS NOT NULL);
CREATE INDEX jobs_claim ON docket.jobs USING btree (queue, priority, run_at, id) WHERE ((state = ANY (ARRAY['pending'::docket.job_state, 'retrying'::docket.job_state])) AND (parked_at IS NULL) AND (group_key IS NULL));
CREATE INDEX jobs_claim_grouped ON docket.jobs USING btree (queue, group_key, priority, run_at, id) WHERE ((state = ANY (ARRAY['pending'::docket.job_state, 'retrying'::docket.job_state])) AND (parked_at IS NULL) AND (group_key IS NOT NULL));
CREATE INDEX jobs_dead_letter ON docket.jobs USING btree (queue, kind, finished_at) WHERE (state = 'dead_letter'::docket.job_state);
CREATE INDEX jobs_expiring ON docket.jobs USING btree (expires_at) WHERE ((expires_at IS NOT NULL) AND (state = ANY (ARRAY['pending'::docket.job_state, 'retrying'::docket.job_state])));
CREATE INDEX jobs_finished ON docket.jobs USING btree (state, finished_at) WHERE (finished_at IS NOT NULL);
CREATE INDEX jobs_listing ON docket.jobs USING btree (state, id) WHERE (state = ANY (ARRAY['dead_letter'::docket.job_state, 'cancelled'::docket.job_state]));
CREATE INDEX jobs_parked ON docket.jobs USING btree (queue, kind) WHERE ((parked_at IS NOT NULL) AND (state = ANY (ARRAY['pending'::docket.job_state, 'retrying'::docket.job_state])));
CREATE INDEX jobs_processing ON docket.jobs USING btree (lease_token) WHERE (state = 'processing'::docket.job_state);
CREATE INDEX jobs_snapshot ON docket.jobs USING btree (queue, state, run_at) WHERE (state = ANY (ARRAY['pending'::docket.job_state, 'retrying'::docket.job_state, 'processing'::docket.job_state, 'dead_letter'::docket.job_state]));
CREATE UNIQUE INDEX jobs_unique_key_live ON docket.jobs USING btree (unique_key) WHERE ((unique_key IS NOT NULL) AND (state = ANY (ARRAY['pending'::docket.job_state, 'retrying'::docket.job_state, 'processing'::docket.job_state])));
CREATE TRIGGER jobs_expire_mail_delivery AFTER UPDATE ON docket.jobs FOR EACH ROW WHEN (((new.state = 'dead_letter'::docket.job_state) AND (old.state <> 'dead_letter'::docket.job_state) AND (new.dead_letter_reason = 'expired'::text) AND (new.kind = ANY (ARRAY['mail.recovery'::text, 'mail.admin'::text])))) EXECUTE FUNCTION docket.mail_expire_delivery_of_expired_job();
CREATE TRIGGER jobs_park_paused_campaign_job BEFORE UPDATE ON docket.jobs FOR EACH ROW WHEN (((old.state = 'processing'::docket.job_state) AND (new.state = ANY (ARRAY['pending'::docket.job_state, 'retrying'::docket.job_state])) AND (new.kind = 'mail.campaign_batch'::text) AND (new.batch_id IS NOT NULL))) EXECUTE FUNCTION docket.mail_park_paused_campaign_job();

create table docket.mail_bounces (
    id uuid not null default docket.uuid_v7(),
    received_at timestamp with time zone not null default now(),
    delivery_id uuid,
    outcome text not null,
    status_code text,
    diagnostic text,
    reason text
);
alter table docket.mail_bounces add constraint mail_bounces_outcome CHECK ((outcome = ANY (ARRAY['bounced'::text, 'delayed'::text, 'ignored'::text])));
alter table docket.mail_bounces add constraint mail_bounces_reason_iff_ignored CHECK (((reason IS NOT NULL) = (outcome = 'ignored'::text)));
alter table docket.mail_bounces add constraint mail_bounces_pkey PRIMARY KEY (id);
CREATE INDEX mail_bounces_delivery ON docket.mail_bounces USING btree (delivery_id) WHERE (delivery_id IS NOT NULL);

create table docket.mail_campaigns (
    id uuid not null default docket.uuid_v7(),
    name text not null,
    template text not null,
    paused boolean not null default false,
    cancelled boolean not null default false,
    total integer not null,
    batch_id uuid,
    created_at timestamp with time zone not null default now()
);
alter table docket.mail_campaigns add constraint mail_campaigns_name_length CHECK (((char_length(name) >= 1) AND (char_length(name) <= 200)));
alter table docket.mail_campaigns add constraint mail_campaigns_total_positive CHECK ((total > 0));
alter table docket.mail_campaigns add constraint mail_campaigns_pkey PRIMARY KEY (id);
CREATE INDEX mail_campaigns_batch ON docket.mail_campaigns USING btree (batch_id);

create table docket.mail_deliveries (
    id uuid not null default docket.uuid_v7(),
    source text not null,
    campaign_id uuid,
    idempotency_key text not null,
    recipient text not null,
    recipient_name text,
    template text not null,
    locale text,
    vars jsonb not null default '{}'::jsonb,
    status text not null default 'queued'::text,
    suppressed_reason text,
    smtp_code integer,
    smtp_reply text,
    message_id text not null,
    attempts integer not null default 0,
    retry_at timestamp with time zone,
    job_id uuid,
    last_error text,
    created_at timestamp with time zone not null default now(),
    updated_at timestamp with time zone not null default now(),
    sent_at timestamp with time zone,
    throttles integer not null default 0,
    unsubscribed_at timestamp with time zone,
    job_replays integer not null default 0
);
alter table docket.mail_deliveries add constraint mail_deliveries_attempts_nonnegative CHECK ((attempts >= 0));
alter table docket.mail_deliveries add constraint mail_deliveries_campaign_iff_source CHECK (((campaign_id IS NOT NULL) = (source = 'campaign'::text)));
alter table docket.mail_deliveries add constraint mail_deliveries_reason_iff_suppressed CHECK (((suppressed_reason IS NOT NULL) = (status = 'suppressed'::text)));
alter table docket.mail_deliveries add constraint mail_deliveries_sent_at_iff_sent CHECK ((((status <> 'sent'::text) OR (sent_at IS NOT NULL)) AND ((sent_at IS NULL) OR (status = ANY (ARRAY['sent'::text, 'bounced'::text])))));
alter table docket.mail_deliveries add constraint mail_deliveries_source CHECK ((source = ANY (ARRAY['recovery'::text, 'admin'::text, 'campaign'::text])));
alter table docket.mail_deliveries add constraint mail_deliveries_status CHECK ((status = ANY (ARRAY['queued'::text, 'sending'::text, 'sent'::text, 'suppressed'::text, 'failed'::text, 'dead_letter'::text, 'expired'::text, 'unknown'::text, 'cancelled'::text, 'bounced'::text])));
alter table docket.mail_deliveries add constraint mail_deliveries_unsubscribed_campaign CHECK (((unsubscribed_at IS NULL) OR (source = 'campaign'::text)));
alter table docket.mail_deliveries add constraint mail_deliveries_pkey PRIMARY KEY (id);
alter table docket.mail_deliveries add constraint mail_deliveries_idempotency_key UNIQUE (idempotency_key);
CREATE INDEX mail_deliveries_campaign ON docket.mail_deliveries USING btree (campaign_id, status) WHERE (campaign_id IS NOT NULL);
CREATE INDEX mail_deliveries_created ON docket.mail_deliveries USING btree (created_at DESC, id DESC);
CREATE INDEX mail_deliveries_job_open ON docket.mail_deliveries USING btree (job_id) WHERE ((source <> 'campaign'::text) AND (status = ANY (ARRAY['queued'::text, 'sending'::text])));
CREATE INDEX mail_deliveries_recipient ON docket.mail_deliveries USING btree (lower(recipient));
CREATE INDEX mail_deliveries_sent ON docket.mail_deliveries USING btree (sent_at) WHERE (sent_at IS NOT NULL);

create table docket.mail_status (
    id integer not null default 1,
    last_fault_at timestamp with time zone,
    last_fault text,
    cleared_at timestamp with time zone,
    last_sent_at timestamp with time zone,
    unreachable_relay text,
    unreachable_since timestamp with time zone,
    unreachable_at timestamp with time zone,
    unreachable_attempts integer not null default 0,
    unreachable_error text
);
alter table docket.mail_status add constraint mail_status_one_row CHECK ((id = 1));
alter table docket.mail_status add constraint mail_status_pkey PRIMARY KEY (id);

create table docket.mail_suppressions (
    address text not null,
    reason text not null,
    created_at timestamp with time zone not null default now(),
    campaign_id uuid
);
alter table docket.mail_suppressions add constraint mail_suppressions_lower CHECK ((address = lower(address)));
alter table docket.mail_suppressions add constraint mail_suppressions_pkey PRIMARY KEY (address);

create table docket.queue_controls (
    queue text not null,
    paused boolean not null default false,
    paused_at timestamp with time zone,
    updated_at timestamp with time zone not null default now()
);
alter table docket.queue_controls add constraint queue_controls_paused_at_iff_paused CHECK (((paused_at IS NOT NULL) = paused));
alter table docket.queue_controls add constraint queue_controls_queue_length CHECK (((char_length(queue) >= 1) AND (char_length(queue) <= 127)));
alter table docket.queue_controls add constraint queue_controls_pkey PRIMARY KEY (queue);

create table docket.queue_wakeups (
    queue text not null,
    wanted boolean not null default true
);
alter table docket.queue_wakeups add constraint queue_wakeups_pkey PRIMARY KEY (queue);

create table docket.rate_limits (
    name text not null,
    rate double precision not null,
    burst double precision not null,
    tokens double precision not null,
    updated_at timestamp with time zone not null default now()
);
alter table docket.rate_limits add constraint rate_limits_burst_positive CHECK ((burst >= (1)::double precision));
alter table docket.rate_limits add constraint rate_limits_rate_positive CHECK ((rate > (0)::double precision));
alter table docket.rate_limits add constraint rate_limits_pkey PRIMARY KEY (name);

create table docket.restore_checks (
    id bigint not null,
    checked_at timestamp with time zone not null default now(),
    backup_file text not null,
    backup_taken_at timestamp with time zone,
    ok boolean not null,
    failure text,
    tables integer not null,
    jobs bigint not null,
    table_rows jsonb not null default '{}'::jsonb,
    job_states jsonb not null default '{}'::jsonb,
    duration_ms bigint not null,
    owner text not null
);
alter table docket.restore_checks add constraint restore_checks_counts_not_negative CHECK (((tables >= 0) AND (jobs >= 0) AND (duration_ms >= 0)));
alter table docket.restore_checks add constraint restore_checks_failure_iff_failed CHECK ((ok = (failure IS NULL)));
alter table docket.restore_checks add constraint restore_checks_owner_not_empty CHECK (((char_length(owner) >= 1) AND (char_length(owner) <= 256)));
alter table docket.restore_checks add constraint restore_checks_pkey PRIMARY KEY (id);
CREATE INDEX restore_checks_checked_at ON docket.restore_checks USING btree (checked_at DESC);

create table docket.revoked_sessions (
    nonce text not null,
    revoked_at timestamp with time zone not null default now(),
    expires_at timestamp with time zone not null
);
alter table docket.revoked_sessions add constraint revoked_sessions_pkey PRIMARY KEY (nonce);
CREATE INDEX revoked_sessions_expires_at ON docket.revoked_sessions USING btree (expires_at);

create table docket.schedule_declarations (
    schedule text not null,
    worker_id uuid not null,
    definition jsonb not null,
    declared_at timestamp with time zone not null default now()
);
alter table docket.schedule_declarations add constraint schedule_declarations_pkey PRIMARY KEY (schedule, worker_id);
CREATE INDEX schedule_declarations_worker ON docket.schedule_declarations USING btree (worker_id);

create table docket.schedule_ticks (
    schedule text not null,
    tick_at timestamp with time zone not null,
    job_id uuid,
    created_at timestamp with time zone not null default now()
);
alter table docket.schedule_ticks add constraint schedule_ticks_pkey PRIMARY KEY (schedule, tick_at);
CREATE INDEX schedule_ticks_job ON docket.schedule_ticks USING btree (job_id) WHERE (job_id IS NOT NULL);

create table docket.schedules (
    name text not null,
    cron text not null,
    kind text not null,
    payload jsonb not null default '{}'::jsonb,
    queue text not null default 'default'::text,
    priority smallint not null default 0,
    max_attempts integer not null default 25,
    timezone text not null default 'UTC'::text,
    catch_up text not null default 'latest'::text,
    overlap text not null default 'allow'::text,
    paused boolean not null default false,
    last_tick_at timestamp with time zone,
    next_tick_at timestamp with time zone,
    registered_at timestamp with time zone not null default now(),
    resumed_at timestamp with time zone,
    catch_up_max integer not null default 100
);
alter table docket.schedules add constraint schedules_catch_up CHECK ((catch_up = ANY (ARRAY['skip'::text, 'latest'::text, 'all'::text])));
alter table docket.schedules add constraint schedules_catch_up_max_check CHECK ((catch_up_max >= 1));
alter table docket.schedules add constraint schedules_name_length CHECK (((char_length(name) >= 1) AND (char_length(name) <= 127)));
alter table docket.schedules add constraint schedules_overlap CHECK ((overlap = ANY (ARRAY['allow'::text, 'skip'::text])));
alter table docket.schedules add constraint schedules_pkey PRIMARY KEY (name);

create table docket.workers (
    id uuid not null,
    host text not null,
    pid integer not null,
    queues text[] not null,
    version text not null,
    started_at timestamp with time zone not null default now(),
    heartbeat_at timestamp with time zone not null default now(),
    kinds text[] not null default '{}'::text[],
    lease_expires_at timestamp with time zone not null
);
alter table docket.workers add constraint workers_pkey PRIMARY KEY (id);

CREATE OR REPLACE FUNCTION docket.advance_schedule(schedule text, tick_at timestamp with time zone, next_tick_at timestamp with time zone DEFAULT NULL::timestamp with time zone, record_next boolean DEFAULT false)
 RETURNS void
 LANGUAGE sql
AS $function$
    update docket.schedules s set
        last_tick_at = case when s.paused then s.last_tick_at
                            else greatest(s.last_tick_at, advance_schedule.tick_at) end,
        next_tick_at = case when advance_schedule.record_next then advance_schedule.next_tick_at
                            else s.next_tick_at end
    where s.name = advance_schedule.schedule
$function$;

CREATE OR REPLACE FUNCTION docket.append_error(errors jsonb, attempt integer, at timestamp with time zone, error text)
 RETURNS jsonb
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    select coalesce(jsonb_agg(e.entry order by e.n), '[]')
    from jsonb_array_elements(errors || jsonb_build_array(jsonb_build_object(
             'attempt', attempt, 'at', at, 'error', left(error, 4000))))
         with ordinality as e(entry, n)
    where e.n > jsonb_array_length(errors) + 1 - 20
$function$;

CREATE OR REPLACE FUNCTION docket.enqueue(kind text, payload jsonb, queue text DEFAULT 'default'::text, run_at timestamp with time zone DEFAULT now(), priority integer DEFAULT 0, max_attempts integer DEFAULT 25, unique_key text DEFAULT NULL::text, expires_at timestamp with time zone DEFAULT NULL::timestamp with time zone, group_key text DEFAULT NULL::text, traceparent text DEFAULT NULL::text, tracestate text DEFAULT NULL::text)
 RETURNS uuid
 LANGUAGE plpgsql
AS $function$
#variable_conflict use_column
declare
    job_id uuid;
begin
    loop
        insert into docket.jobs (queue, kind, payload, run_at, priority, max_attempts, unique_key, expires_at,
                                 group_key, trace_context)
        values (coalesce(enqueue.queue, 'default'), enqueue.kind, coalesce(enqueue.payload, '{}'),
                coalesce(enqueue.run_at, now()), coalesce(enqueue.priority, 0),
                coalesce(enqueue.max_attempts, 25), enqueue.unique_key, enqueue.expires_at,
                enqueue.group_key, docket.trace_context(enqueue.traceparent, enqueue.tracestate))
        on conflict (unique_key) where unique_key is not null and state in ('pending', 'retrying', 'processing')
        do nothing
        returning id into job_id;

        if job_id is null then
            select j.id into job_id from docket.jobs j
            where j.unique_key = enqueue.unique_key and j.state in ('pending', 'retrying', 'processing');
        end if;
        -- Null only when the live job holding the key finished in between: insert again.
        exit when job_id is not null;
    end loop;

    if coalesce(enqueue.run_at, now()) <= now() then
        perform docket.wake(coalesce(enqueue.queue, 'default'));
    end if;
    return job_id;
end
$function$;

CREATE OR REPLACE FUNCTION docket.enqueue_batch_callback(kind text, payload jsonb, queue text, batch_context jsonb)
 RETURNS uuid
 LANGUAGE plpgsql
AS $function$
declare
    job_id uuid;
begin
    job_id := docket.enqueue(kind, payload, queue);
    if batch_context ? 'traceparent' then
        update docket.jobs j
        set trace_context = jsonb_build_object('links', jsonb_build_array(
                jsonb_strip_nulls(jsonb_build_object('traceparent', batch_context->'traceparent',
                                                     'tracestate', batch_context->'tracestate'))))
        where j.id = job_id;
    end if;
    return job_id;
end
$function$;

CREATE OR REPLACE FUNCTION docket.enqueue_many(kinds text[], payloads jsonb[], queues text[], run_ats timestamp with time zone[], priorities integer[], max_attempts_list integer[], unique_keys text[], expires_ats timestamp with time zone[], ids uuid[] DEFAULT NULL::uuid[], batch_id uuid DEFAULT NULL::uuid, group_keys text[] DEFAULT NULL::text[], traceparents text[] DEFAULT NULL::text[], tracestates text[] DEFAULT NULL::text[])
 RETURNS TABLE(ord bigint, id uuid)
 LANGUAGE plpgsql
AS $function$
declare
    slots   uuid[];
    missing integer;
begin
    -- One id per slot: the caller's (UUID v7, made in the client), or one made here.
    slots := array(select coalesce(ids[g], docket.uuid_v7())
                   from generate_series(1, cardinality(kinds)) g order by g);

    if not exists (select 1 from unnest(unique_keys) k where k is not null) then
        -- Fast path: with no unique keys there is nothing to look up.
        insert into docket.jobs (id, queue, kind, payload, run_at, priority, max_attempts, expires_at,
                                 batch_id, group_key, trace_context)
        select i.id, coalesce(i.queue, 'default'), i.kind, coalesce(i.payload, '{}'),
               coalesce(i.run_at, now()), coalesce(i.priority, 0), coalesce(i.max_attempts, 25),
               i.expires_at, enqueue_many.batch_id, i.group_key, docket.trace_context(i.traceparent, i.tracestate)
        from unnest(slots, kinds, payloads, queues, run_ats, priorities, max_attempts_list, expires_ats,
                    group_keys, traceparents, tracestates)
             as i(id, kind, payload, queue, run_at, priority, max_attempts, expires_at, group_key,
                  traceparent, tracestate);
    else
        loop
            -- Duplicate keys inside one call: the first occurrence is the one inserted. A
            -- slot whose id is already a job (inserted in an earlier round, or its key's
            -- live job found below) is not inserted again.
            insert into docket.jobs (id, queue, kind, payload, run_at, priority, max_attempts, unique_key,
                                     expires_at, batch_id, group_key, trace_context)
            select distinct on (coalesce(i.unique_key, i.id::text))
                   i.id, coalesce(i.queue, 'default'), i.kind, coalesce(i.payload, '{}'),
                   coalesce(i.run_at, now()), coalesce(i.priority, 0), coalesce(i.max_attempts, 25),
                   i.unique_key, i.expires_at, enqueue_many.batch_id, i.group_key,
                   docket.trace_context(i.traceparent, i.tracestate)
            from unnest(slots, kinds, payloads, queues, run_ats, priorities, max_attempts_list, unique_keys, expires_ats,
                        group_keys, traceparents, tracestates)
                 with ordinality as i(id, kind, payload, queue, run_at, priority, max_attempts, unique_key, expires_at,
                                      group_key, traceparent, tracestate, ord)
            where not exists (select 1 from docket.jobs j where j.id = i.id)
            order by coalesce(i.unique_key, i.id::text), i.ord
            on conflict (unique_key) where unique_key is not null and state in ('pending', 'retrying', 'processing')
            do nothing;

            -- Point every keyed slot at the live job that holds its key (its own row, or
            -- the one that was there first). A key's live job can finish between the
            -- conflict and this lookup; such a slot gets a fresh id and goes round again.
            select array_agg(coalesce(l.id, docket.uuid_v7()) order by i.ord),
                   count(*) filter (where l.id is null)
              into slots, missing
            from unnest(slots, unique_keys) with ordinality as i(id, unique_key, ord)
            cross join lateral (
                select case when i.unique_key is null then i.id
                            else (select j.id from docket.jobs j
                                  where j.unique_key = i.unique_key
                                    and j.state in ('pending', 'retrying', 'processing')) end as id
            ) l;
            exit when missing = 0;
        end loop;
    end if;

    perform docket.wake(q.queue)
    from (select distinct coalesce(i.queue, 'default') as queue
          from unnest(queues, run_ats) as i(queue, run_at)
          where coalesce(i.run_at, now()) <= now()) q;

    return query select s.ord, s.id from unnest(slots) with ordinality as s(id, ord) order by s.ord;
end
$function$;

CREATE OR REPLACE FUNCTION docket.enqueue_tick(schedule text, tick_at timestamp with time zone, traceparent text DEFAULT NULL::text, tracestate text DEFAULT NULL::text, OUT job_id uuid, OUT skipped boolean)
 RETURNS record
 LANGUAGE plpgsql
AS $function$
#variable_conflict use_column
declare
    s       docket.schedules;
begin
    skipped := false;
    select * into s from docket.schedules
    where name = enqueue_tick.schedule and not paused
      and (last_tick_at is null or last_tick_at < enqueue_tick.tick_at)
    for update;
    if not found then
        return;
    end if;
    insert into docket.schedule_ticks (schedule, tick_at)
    values (enqueue_tick.schedule, enqueue_tick.tick_at)
    on conflict (schedule, tick_at) do nothing;
    if not found then
        return;
    end if;
    if s.overlap = 'skip' and (exists (
        select 1 from docket.batches b
        where b.schedule = enqueue_tick.schedule and b.finished_at is null
    ) or exists (
        -- The last tick's job has not finished: it may not have made its batch yet.
        select 1 from docket.jobs j
        where j.id = (select t.job_id from docket.schedule_ticks t
                      where t.schedule = enqueue_tick.schedule and t.job_id is not null
                      order by t.tick_at desc limit 1)
          and j.state in ('pending', 'retrying', 'processing')
    )) then
        perform docket.advance_schedule(enqueue_tick.schedule, enqueue_tick.tick_at);
        skipped := true;
        return;
    end if;
    job_id := docket.enqueue(s.kind, s.payload, s.queue, enqueue_tick.tick_at, s.priority,
                             s.max_attempts, traceparent => enqueue_tick.traceparent,
                             tracestate => enqueue_tick.tracestate);
    update docket.schedule_ticks t set job_id = enqueue_tick.job_id
    where t.schedule = enqueue_tick.schedule and t.tick_at = enqueue_tick.tick_at;
    perform docket.advance_schedule(enqueue_tick.schedule, enqueue_tick.tick_at);
end
$function$;

CREATE OR REPLACE FUNCTION docket.lock_grouped(queue text, kinds text[], groups text[], after_priority smallint[], after_run_at timestamp with time zone[], after_id uuid[], per_group bigint, lim bigint, at timestamp with time zone)
 RETURNS SETOF uuid
 LANGUAGE plpgsql
 ROWS 10
 SET enable_sort TO 'off'
AS $function$
begin
    return query
    select c.id
    from unnest($3, $4, $5, $6) as g(key, priority, run_at, id)
    cross join lateral (
        select j.id from docket.jobs j
        where j.state in ('pending', 'retrying') and j.parked_at is null
          and j.queue = $1 and j.group_key = g.key
          and (j.priority, j.run_at, j.id)
              > (coalesce(g.priority, (-32768)::smallint), coalesce(g.run_at, '-infinity'),
                 coalesce(g.id, '00000000-0000-0000-0000-000000000000'))
          and j.run_at <= coalesce($9, now())
          and ($2 is null or j.kind = any($2))
          and (j.expires_at is null or j.expires_at > coalesce($9, now()))
        order by j.priority, j.run_at, j.id
        limit $7
        for update skip locked
    ) c
    limit $8;
end
$function$;

CREATE OR REPLACE FUNCTION docket.mail_campaign_set_controls(campaign uuid, set_paused boolean, set_cancelled boolean)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
declare
    c docket.mail_campaigns;
    queues text[];
    q text;
begin
    -- First the campaign's row lock: a batch job's trigger that read the old controls
    -- has committed by the time the statements below take their snapshots.
    update docket.mail_campaigns
    set paused = coalesce(set_paused, paused), cancelled = coalesce(set_cancelled, cancelled)
    where id = campaign
    returning * into c;
    if not found then
        return false;
    end if;
    if c.cancelled then
        -- A batch job reserves a recipient only while it is `queued`: one it has not
        -- reserved yet is never sent now.
        update docket.mail_deliveries d
        set status = 'cancelled', retry_at = null, updated_at = now(),
            last_error = 'its campaign was cancelled before it was sent'
        where d.campaign_id = c.id and d.status = 'queued';
    end if;
    if c.paused and not c.cancelled then
        update docket.jobs j set run_at = greatest(j.run_at, now() + interval '100 years')
        where j.batch_id = c.batch_id and j.state in ('pending', 'retrying');
    else
        -- Every waiting job comes back now: a parked one, and one waiting on a recipient's
        -- retry ladder, which looks and waits again (once).
        with woken as (
            update docket.jobs j set run_at = now()
            where j.batch_id = c.batch_id and j.state in ('pending', 'retrying')
              and j.run_at > now()
            returning j.queue
        )
        select array_agg(distinct w.queue) into queues from woken w;
        foreach q in array coalesce(queues, '{}') loop
            perform docket.wake(q);
        end loop;
    end if;
    return true;
end
$function$;

CREATE OR REPLACE FUNCTION docket.mail_expire_delivery_of_expired_job()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
begin
    update docket.mail_deliveries
    set status = 'expired', retry_at = null, updated_at = now(),
        last_error = 'its job expired before it could be sent; never sent late'
    where job_id = new.id and source <> 'campaign' and status = 'queued';
    return null;
end
$function$;

CREATE OR REPLACE FUNCTION docket.mail_park_paused_campaign_job()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
begin
    perform 1 from docket.mail_campaigns c
    where c.batch_id = new.batch_id and c.paused and not c.cancelled
    for share;
    if found then
        new.run_at := greatest(new.run_at, now() + interval '100 years');
    end if;
    return new;
end
$function$;

CREATE OR REPLACE FUNCTION docket.rate_limit_give_back(bucket text, unused integer)
 RETURNS void
 LANGUAGE sql
AS $function$
    update docket.rate_limits set tokens = least(burst, tokens + unused) where name = bucket;
$function$;

CREATE OR REPLACE FUNCTION docket.rate_limit_take(bucket text, per_second double precision, capacity double precision, wanted integer, may_borrow double precision, OUT granted integer, OUT level double precision)
 RETURNS record
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION docket.ready_groups(queue text, before text, lim bigint, most bigint, at timestamp with time zone)
 RETURNS TABLE(group_key text, due boolean)
 LANGUAGE plpgsql
 STABLE ROWS 10
 SET enable_sort TO 'off'
AS $function$
declare
    g_key text := $2;
    g_priority smallint;
    g_run_at timestamptz;
    g_due boolean;
    walked bigint := 0;
    due_groups bigint := 0;
begin
    loop
        -- The next group down: below g_key, or (none given) the last group of all.
        if g_key is null then
            select j.group_key, j.priority, j.run_at into g_key, g_priority, g_run_at from docket.jobs j
            where j.queue = $1 and j.state in ('pending', 'retrying') and j.parked_at is null
              and j.group_key is not null
            order by j.group_key desc, j.priority desc, j.run_at desc, j.id desc limit 1;
        else
            select j.group_key, j.priority, j.run_at into g_key, g_priority, g_run_at from docket.jobs j
            where j.queue = $1 and j.state in ('pending', 'retrying') and j.parked_at is null
              and j.group_key is not null and j.group_key < g_key
            order by j.group_key desc, j.priority desc, j.run_at desc, j.id desc limit 1;
        end if;
        exit when not found;
        walked := walked + 1;
        -- The job the probe landed on is due: so is the group (the usual case, one probe).
        -- Otherwise its priorities from the last (the one the probe landed on) down to the
        -- first, each probed at its newest due job.
        g_due := g_run_at <= coalesce($5, now());
        while not g_due loop
            perform 1 from docket.jobs j
            where j.queue = $1 and j.state in ('pending', 'retrying') and j.parked_at is null
              and j.group_key = g_key and j.priority = g_priority
              and j.run_at <= coalesce($5, now())
            order by j.group_key desc, j.priority desc, j.run_at desc, j.id desc limit 1;
            g_due := found;
            exit when g_due;
            select j.priority into g_priority from docket.jobs j
            where j.queue = $1 and j.state in ('pending', 'retrying') and j.parked_at is null
              and j.group_key = g_key and j.priority < g_priority
            order by j.group_key desc, j.priority desc, j.run_at desc, j.id desc limit 1;
            exit when not found;
        end loop;
        group_key := g_key;
        due := g_due;
        return next;
        if g_due then
            due_groups := due_groups + 1;
        end if;
        exit when due_groups >= $3 or walked >= $4;
    end loop;
end
$function$;

CREATE OR REPLACE FUNCTION docket.trace_context(traceparent text, tracestate text DEFAULT NULL::text)
 RETURNS jsonb
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    select case when traceparent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$'
                 and left(traceparent, 2) <> 'ff'
                 and (left(traceparent, 2) <> '00' or length(traceparent) = 55)
                 and substr(traceparent, 4, 32) <> repeat('0', 32)
                 and substr(traceparent, 37, 16) <> repeat('0', 16)
           then jsonb_strip_nulls(jsonb_build_object(
                    'traceparent', '00' || substr(traceparent, 3, 53),
                    'tracestate', nullif(left(tracestate, 512), '')))
           end
$function$;

CREATE OR REPLACE FUNCTION docket.uuid_v7()
 RETURNS uuid
 LANGUAGE plpgsql
 PARALLEL SAFE
AS $function$
declare
    ms double precision := extract(epoch from clock_timestamp()) * 1000;
begin
    return encode(
        substring(int8send(floor(ms)::bigint) from 3)
        || int2send((x'7000'::int | floor((ms - floor(ms)) * 4096)::int)::smallint)
        || substring(uuid_send(gen_random_uuid()) from 9),
        'hex')::uuid;
end
$function$;

CREATE OR REPLACE FUNCTION docket.wake(queue text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
#variable_conflict use_column
declare
    taken text;
begin
    -- The common case under load: nobody waits. A plain read, no lock.
    if not exists (select 1 from docket.queue_wakeups w where w.queue = wake.queue and w.wanted) then
        return;
    end if;
    update docket.queue_wakeups w set wanted = false
    where w.queue = (select q.queue from docket.queue_wakeups q
                     where q.queue = wake.queue and q.wanted
                     for update skip locked)
    returning w.queue into taken;
    if taken is not null then
        perform pg_notify('docket_jobs', taken);
    end if;
end
$function$;
