-- projections::usage: each user's usage per UTC day and kind.
create table usage_daily (
    user_id uuid   not null,
    day     date   not null,
    kind    text   not null,
    total   bigint not null,
    records bigint not null,
    primary key (user_id, day, kind)
);
create index usage_daily_day_idx on usage_daily (day);

-- The last event applied per meter (a `meter` aggregate is a user's day): the sequence
-- guard that makes applying an event twice change nothing.
create table usage_meters (
    meter_id      text primary key,
    last_sequence bigint not null
);
