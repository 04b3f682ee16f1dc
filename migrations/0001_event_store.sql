-- The event store. postgres-es owns the first seven columns of `events` and the whole of
-- `snapshots`; every statement it runs names its columns, so ours (with defaults) are safe.

create table events (
    aggregate_type text   not null,
    aggregate_id   text   not null,
    sequence       bigint not null check (sequence > 0),
    event_type     text   not null,
    event_version  text   not null,
    payload        jsonb  not null,
    metadata       jsonb  not null,
    -- Ours: the global position (assigned at INSERT, visible at COMMIT: not monotonic in
    -- log order), the writing transaction (the log orders by (transaction_id, position)),
    -- when it was recorded, and an id that travels with the event (Nats-Msg-Id).
    position       bigint generated always as identity,
    transaction_id xid8   not null default pg_current_xact_id(),
    recorded_at    timestamptz not null default now(),
    event_id       uuid   not null default gen_random_uuid(),
    primary key (aggregate_type, aggregate_id, sequence)
);

create unique index events_position_key on events (position);
create unique index events_event_id_key on events (event_id);
-- Reading the log in its global order (relay, rebuilds, exports).
create index events_log_order_idx on events (transaction_id, position);
create index events_recorded_at_idx on events (recorded_at);

-- Unused for now: postgres-es's snapshot stores apply new events twice (STACK-NOTES).
create table snapshots (
    aggregate_type   text   not null,
    aggregate_id     text   not null,
    last_sequence    bigint not null,
    current_snapshot bigint not null,
    payload          jsonb  not null,
    primary key (aggregate_type, aggregate_id)
);

-- Wake the relay when events are appended. NOTIFY is delivered at commit and never
-- replayed, so it is only a wake-up: the relay also polls on a timer.
create function chronicle_notify_events() returns trigger
language plpgsql as $$
begin
    perform pg_notify('chronicle_events', '');
    return null;
end
$$;

create trigger events_notify
    after insert on events
    for each statement execute function chronicle_notify_events();

-- The log is append-only. Erasure of personal data deletes a user's key, not events.
create function chronicle_events_append_only() returns trigger
language plpgsql as $$
begin
    raise exception 'the event log is append-only (% refused)', tg_op
        using errcode = 'insufficient_privilege';
end
$$;

create trigger events_append_only
    before update or delete or truncate on events
    for each statement execute function chronicle_events_append_only();

-- Where the relay has got to in the log. Moved only after JetStream acked every event
-- up to it.
create table relay_checkpoints (
    name           text   primary key,
    transaction_id xid8   not null default '0',
    position       bigint not null default 0,
    updated_at     timestamptz not null default now()
);

-- Each read model's place in the log, written in the same transaction as its rows.
create table projection_checkpoints (
    name            text   primary key,
    transaction_id  xid8   not null default '0',
    position        bigint not null default 0,
    -- the last JetStream stream sequence applied: a projection applies messages in stream
    -- order only, so a redelivery that overtakes an earlier message cannot skip it
    stream_sequence bigint not null default 0,
    events_applied  bigint not null default 0,
    status          text   not null default 'running'
                    check (status in ('running', 'failed', 'rebuilding')),
    failed_event_id uuid,
    last_error      text,
    updated_at      timestamptz not null default now()
);

-- One account per email, enforced on the command side before the append.
create table email_claims (
    email      text primary key,
    user_id    uuid not null,
    claimed_at timestamptz not null default now()
);
