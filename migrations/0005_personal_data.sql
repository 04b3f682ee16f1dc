-- Per-user data keys, wrapped by the master key. Erasure nulls the key and keeps the row
-- as a tombstone, so no new key is ever made for an erased user.
create table user_keys (
    user_id       uuid primary key,
    wrapped_key   bytea,
    master_key_id text not null,
    created_at    timestamptz not null default now(),
    rotated_at    timestamptz,
    erased_at     timestamptz
);

-- Erased users keep a row with placeholders: emails are unique among the others only.
drop index users_email_key;
create unique index users_email_key on users (email) where email <> '[erased]';

-- A user's own history: their aggregate's events and the events they caused.
create index events_aggregate_id_idx on events (aggregate_id);
create index events_actor_idx on events ((metadata ->> 'actor_id'));
