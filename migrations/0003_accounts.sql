-- projections::users: profile fields and the avatar.
alter table users
    add column locale text,
    add column timezone text,
    add column avatar_content_type text,
    add column avatar_sha256 text,
    drop column avatar_url;

-- projections::sessions: one row per sign-in.
create table sessions (
    id             uuid primary key,
    user_id        uuid not null,
    device         text not null,
    ip             text,
    user_agent     text,
    created_at     timestamptz not null,
    last_seen_at   timestamptz not null,
    expires_at     timestamptz not null,
    revoked_at     timestamptz,
    revoked_reason text,
    last_sequence  bigint not null
);
create index sessions_user_idx on sessions (user_id, created_at desc);
