-- Admin and the audit trail.

-- Whose history an event belongs to: the user for `user` events, else the payload's
-- `user_id` or `owner_id`, else the subject of the aggregate's earlier events (a session's
-- later events carry no user id). Set once, at INSERT, by the trigger below; a user's
-- audit trail is "subject_id = user or metadata.actor_id = user".
alter table events add column subject_id uuid;

create function chronicle_events_subject() returns trigger
language plpgsql as $$
declare
    body jsonb;
    s text;
begin
    if new.aggregate_type = 'user' then
        s := new.aggregate_id;
    else
        select value into body from jsonb_each(new.payload) limit 1;
        s := coalesce(body ->> 'user_id', body ->> 'owner_id');
        if s is null then
            select e.subject_id::text into s from events e
             where e.aggregate_type = new.aggregate_type
               and e.aggregate_id = new.aggregate_id
               and e.subject_id is not null
             order by e.sequence limit 1;
        end if;
    end if;
    if s ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
        new.subject_id := s::uuid;
    end if;
    return new;
end
$$;

create trigger events_subject
    before insert on events
    for each row execute function chronicle_events_subject();

-- Events written before this migration: the same rule, once. (The log is otherwise
-- append-only; this fills a new derived column and changes no stored value.)
alter table events disable trigger events_append_only;
update events e set subject_id = s.subject::uuid
from (
    select aggregate_type, aggregate_id, sequence,
           case when aggregate_type = 'user' then aggregate_id
                else coalesce((select value from jsonb_each(payload) limit 1) ->> 'user_id',
                              (select value from jsonb_each(payload) limit 1) ->> 'owner_id')
           end as subject
    from events
) s
where e.aggregate_type = s.aggregate_type and e.aggregate_id = s.aggregate_id
  and e.sequence = s.sequence
  and s.subject ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
update events e set subject_id = first.subject_id
from (select distinct on (aggregate_type, aggregate_id) aggregate_type, aggregate_id, subject_id
        from events where subject_id is not null
       order by aggregate_type, aggregate_id, sequence) first
where e.subject_id is null
  and e.aggregate_type = first.aggregate_type and e.aggregate_id = first.aggregate_id;
alter table events enable trigger events_append_only;

create index events_subject_idx on events (subject_id, transaction_id, position)
    where subject_id is not null;
-- Filters of the admin's event export.
create index events_type_idx on events (event_type, transaction_id, position);

-- projections::event_stats: activity per UTC day.
create table daily_activity (
    day          date primary key,
    signups      bigint not null default 0,
    logins       bigint not null default 0,
    active_users bigint not null default 0
);
-- Who was active on a day (a user who caused an event), so each counts once.
create table daily_active_users (
    day     date not null,
    user_id uuid not null,
    primary key (day, user_id)
);

-- The admin's user list: sort keys.
create index users_created_idx on users (created_at);
create index users_last_login_idx on users (last_login_at);
