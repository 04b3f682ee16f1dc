-- projections::conversations: conversations and their messages.
create table conversations (
    id              uuid primary key,
    owner_id        uuid not null,
    title           text not null,
    created_at      timestamptz not null,
    updated_at      timestamptz not null,
    deleted_at      timestamptz,
    message_count   bigint not null default 0,
    last_message_at timestamptz,
    last_sequence   bigint not null
);
create index conversations_owner_idx on conversations (owner_id, updated_at desc) where deleted_at is null;

create table messages (
    id              uuid primary key,
    conversation_id uuid not null,
    owner_id        uuid not null,
    role            text not null,
    content         text not null,
    in_reply_to     uuid,
    created_at      timestamptz not null,
    edited_at       timestamptz,
    deleted_at      timestamptz,
    -- the conversation's event sequence that posted it (list order) and that last changed
    -- it (the live stream's event id)
    posted_seq      bigint not null,
    changed_seq     bigint not null
);
create index messages_conversation_idx on messages (conversation_id, posted_seq);
create index messages_changed_idx on messages (conversation_id, changed_seq);
create index messages_owner_idx on messages (owner_id);
