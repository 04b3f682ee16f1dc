//! Conversations and messages (`conversations`, `messages`), and the queries the API runs.
//! Guarded by the conversation's sequence. Every change to a message NOTIFYs
//! `chronicle_conversation` with the conversation id (delivered at commit), which the live
//! stream listens to.
//!
//! A recorded assistant failure (`AssistantFailed`) is shown as a `messages` row of role
//! `assistant_error` whose content is the reason, `in_reply_to` the user's message, and id
//! the reply id the answer would have had (`aggregates::conversation::reply_id`): the list
//! and the live stream show it where the reply would be, without a schema change. It does
//! not count in `message_count`, and the assistant never sends it to the model.

use aggregates::conversation::{
    reply_id, ConversationEvent, ROLE_ASSISTANT, ROLE_ASSISTANT_ERROR, ROLE_USER,
};
use aggregates::user::UserEvent;
use aggregates::Event;
use chrono::{DateTime, Utc};
use eventstore::crypto::ERASED;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::decoded::erases;
use crate::{Decoded, ProjectionError};

pub const CHANNEL: &str = "chronicle_conversation";

pub async fn apply(conn: &mut PgConnection, event: &Decoded<'_>) -> Result<(), ProjectionError> {
    let e = match &event.event {
        Event::User(e) => return apply_user(conn, event, e).await,
        Event::Conversation(e) => e,
        Event::Session(_)
        | Event::Meter(_)
        | Event::Upload(_)
        | Event::ApiKey(_)
        | Event::EmailProbe(_) => return Ok(()),
    };
    let id = event.uuid()?;
    let seq = event.sequence();
    if !event.is_next_in(conn, "conversations").await? {
        return Ok(());
    }
    let at = event.stored.recorded_at;
    let mut message_changed = false;
    match e {
        ConversationEvent::ConversationStarted { owner_id, title } => {
            sqlx::query(
                "insert into conversations (id, owner_id, title, created_at, updated_at, last_sequence) \
                 values ($1, $2, $3, $4, $4, 0)",
            )
            .bind(id)
            .bind(owner_id)
            .bind(title)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        ConversationEvent::ConversationRenamed { title, .. } => {
            sqlx::query("update conversations set title = $2, updated_at = $3 where id = $1")
                .bind(id)
                .bind(title)
                .bind(at)
                .execute(&mut *conn)
                .await?;
        }
        ConversationEvent::ConversationDeleted { .. } => {
            sqlx::query("update conversations set deleted_at = $2, updated_at = $2 where id = $1")
                .bind(id)
                .bind(at)
                .execute(&mut *conn)
                .await?;
        }
        ConversationEvent::MessagePosted {
            owner_id,
            message_id,
            role,
            content,
            in_reply_to,
        } => {
            sqlx::query(
                "insert into messages (id, conversation_id, owner_id, role, content, in_reply_to, created_at, \
                 posted_seq, changed_seq) values ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            )
            .bind(message_id)
            .bind(id)
            .bind(owner_id)
            .bind(role)
            .bind(content)
            .bind(in_reply_to)
            .bind(at)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "update conversations set message_count = message_count + 1, last_message_at = $2, \
                 updated_at = $2 where id = $1",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            message_changed = true;
        }
        ConversationEvent::MessageEdited {
            message_id,
            content,
            ..
        } => {
            sqlx::query(
                "update messages set content = $2, edited_at = $3, changed_seq = $4 where id = $1",
            )
            .bind(message_id)
            .bind(content)
            .bind(at)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
            message_changed = true;
        }
        ConversationEvent::MessageDeleted { message_id, .. } => {
            // a tombstone: the row stays (ordering, replies), its content goes
            sqlx::query(
                "update messages set content = '', deleted_at = $2, changed_seq = $3 where id = $1",
            )
            .bind(message_id)
            .bind(at)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
            sqlx::query("update conversations set message_count = message_count - 1 where id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
            message_changed = true;
        }
        ConversationEvent::AssistantFailed {
            owner_id,
            message_id,
            reason,
        } => {
            sqlx::query(
                "insert into messages (id, conversation_id, owner_id, role, content, in_reply_to, created_at, \
                 posted_seq, changed_seq) values ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            )
            .bind(reply_id(*message_id))
            .bind(id)
            .bind(owner_id)
            .bind(ROLE_ASSISTANT_ERROR)
            .bind(reason)
            .bind(message_id)
            .bind(at)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
            message_changed = true;
        }
    }
    sqlx::query("update conversations set last_sequence = $2 where id = $1")
        .bind(id)
        .bind(seq)
        .execute(&mut *conn)
        .await?;
    if message_changed {
        sqlx::query("select pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(id.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// An erased user's conversations and messages keep their shape, not their words.
async fn apply_user(
    conn: &mut PgConnection,
    event: &Decoded<'_>,
    e: &UserEvent,
) -> Result<(), ProjectionError> {
    if !erases(e) {
        return Ok(());
    }
    let owner = event.uuid()?;
    sqlx::query("update conversations set title = $2 where owner_id = $1")
        .bind(owner)
        .bind(ERASED)
        .execute(&mut *conn)
        .await?;
    sqlx::query("update messages set content = $2 where owner_id = $1")
        .bind(owner)
        .bind(ERASED)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn clear(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("delete from messages")
        .execute(&mut *conn)
        .await?;
    sqlx::query("delete from conversations")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationRow {
    pub id: Uuid,
    #[serde(skip)]
    pub owner_id: Uuid,
    pub title: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub message_count: i64,
    pub last_message_at: Option<DateTime<Utc>>,
}

const SELECT_CONVERSATION: &str =
    "select id, owner_id, title, created_at, updated_at, message_count, last_message_at from conversations";

/// A live conversation of `owner` (None: unknown, deleted, or someone else's).
pub async fn owned<'e>(
    db: impl PgExecutor<'e>,
    owner: Uuid,
    id: Uuid,
) -> Result<Option<ConversationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{SELECT_CONVERSATION} where id = $1 and owner_id = $2 and deleted_at is null"
    ))
    .bind(id)
    .bind(owner)
    .fetch_optional(db)
    .await
}

/// A page of `owner`'s live conversations, most recently updated first; `q` searches titles.
pub async fn list<'e>(
    db: impl PgExecutor<'e> + Copy,
    owner: Uuid,
    q: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<ConversationRow>, i64), sqlx::Error> {
    let pattern = q.map(|q| {
        format!(
            "%{}%",
            q.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    });
    let filter = "owner_id = $1 and deleted_at is null and ($2::text is null or title ilike $2)";
    let rows = sqlx::query_as(&format!(
        "{SELECT_CONVERSATION} where {filter} order by updated_at desc, id limit $3 offset $4"
    ))
    .bind(owner)
    .bind(&pattern)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!(
        "select count(*) from conversations where {filter}"
    ))
    .bind(owner)
    .bind(&pattern)
    .fetch_one(db)
    .await?;
    Ok((rows, total))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageRow {
    pub id: Uuid,
    pub conversation_id: Uuid,
    #[serde(skip)]
    pub owner_id: Uuid,
    /// `user`, `assistant`, or `assistant_error`: the assistant gave up on the message in
    /// `in_reply_to`, and `content` says why.
    pub role: String,
    pub content: String,
    pub in_reply_to: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub edited_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// Order within the conversation (a cursor for `after`).
    pub posted_seq: i64,
    /// The live stream's event id of this message's last change.
    pub changed_seq: i64,
}

const SELECT_MESSAGE: &str =
    "select id, conversation_id, owner_id, role, content, in_reply_to, created_at, \
     edited_at, deleted_at, posted_seq, changed_seq from messages";

/// Messages of a conversation after `after` (its `posted_seq`), oldest first.
pub async fn messages<'e>(
    db: impl PgExecutor<'e>,
    conversation: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{SELECT_MESSAGE} where conversation_id = $1 and posted_seq > $2 order by posted_seq limit $3"
    ))
    .bind(conversation)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The last `limit` live user and assistant messages of a conversation posted before
/// `before` (a `posted_seq`), oldest first: what the assistant sends to the model.
pub async fn recent_messages<'e>(
    db: impl PgExecutor<'e>,
    conversation: Uuid,
    before: i64,
    limit: i64,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    let mut rows: Vec<MessageRow> = sqlx::query_as(&format!(
        "{SELECT_MESSAGE} where conversation_id = $1 and posted_seq < $2 and deleted_at is null \
         and role in ($3, $4) order by posted_seq desc limit $5"
    ))
    .bind(conversation)
    .bind(before)
    .bind(ROLE_USER)
    .bind(ROLE_ASSISTANT)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.reverse();
    Ok(rows)
}

/// Messages changed after `after` (a `changed_seq`), in change order: the live stream.
pub async fn changed_since<'e>(
    db: impl PgExecutor<'e>,
    conversation: Uuid,
    after: i64,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{SELECT_MESSAGE} where conversation_id = $1 and changed_seq > $2 order by changed_seq limit 500"
    ))
    .bind(conversation)
    .bind(after)
    .fetch_all(db)
    .await
}

/// A message of `owner`, in a live conversation.
pub async fn message_owned<'e>(
    db: impl PgExecutor<'e>,
    owner: Uuid,
    id: Uuid,
) -> Result<Option<MessageRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{SELECT_MESSAGE} m where m.id = $1 and m.owner_id = $2 and m.deleted_at is null \
         and exists (select 1 from conversations c where c.id = m.conversation_id and c.deleted_at is null)"
    ))
    .bind(id)
    .bind(owner)
    .fetch_optional(db)
    .await
}
