-- How many live conversations a user has, read from the log on the command side (the
-- plan's max_conversations is decided there, under the owner's lock): the user's
-- ConversationStarted events less their ConversationDeleted ones, found without reading
-- their messages.
create index events_conversation_lifecycle_idx on events (subject_id, event_type)
    where aggregate_type = 'conversation'
      and event_type in ('ConversationStarted', 'ConversationDeleted');
