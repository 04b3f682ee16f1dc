-- Read models. Each belongs to one module of the `projections` crate, which is the only
-- code that writes them.

-- projections::users
create table users (
    id             uuid primary key,
    email          text not null,
    display_name   text,
    role           text not null,
    plan           text not null,
    status         text not null,
    email_verified boolean not null default false,
    has_password   boolean not null default false,
    created_at     timestamptz not null,
    updated_at     timestamptz not null,
    last_login_at  timestamptz,
    avatar_url     text,
    -- the last event of this user applied here: a second line of defence against
    -- applying an event twice
    last_sequence  bigint not null
);
create unique index users_email_key on users (email);

-- projections::event_stats: how many events of each type the log holds.
create table event_type_counts (
    aggregate_type text   not null,
    event_type     text   not null,
    count          bigint not null,
    last_recorded_at timestamptz not null,
    primary key (aggregate_type, event_type)
);
