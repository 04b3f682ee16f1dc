//! Messages: `/api/v1/conversations/{id}/messages` and `/api/v1/messages/{id}`. A message
//! is its conversation's owner's alone, as the conversation is.

use aggregates::conversation::{ConversationCommand, ROLE_USER};
use aggregates::meter::KIND_MESSAGES;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use projections::conversations::{self, MessageRow};
use projections::ReadModel;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::envelope::Reply;
use crate::extract::{AppJson, AppQuery, RequestMeta};
use crate::routes::read_your_writes::settle;
use crate::{ApiError, AppState};

use super::{as_owner, conversation_error, owned, parse_id};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MessagesQuery {
    /// Messages after this cursor (a message's `posted_seq`); default from the start.
    #[serde(default)]
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// 1 to 200 (default 50).
    #[serde(default)]
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    pub items: Vec<MessageRow>,
    /// Pass as `after` for the next page; null at the end.
    pub next: Option<i64>,
}

/// Messages of one of my conversations, oldest first (deleted ones as tombstones).
#[utoipa::path(get, path = "/api/v1/conversations/{id}/messages", operation_id = "list_messages", tag = "conversations", security(("bearer" = [])),
    params(("id" = Uuid, Path), MessagesQuery), responses((status = 200, body = MessagePage), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list_messages(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
    AppQuery(q): AppQuery<MessagesQuery>,
) -> Result<Reply<MessagePage>, ApiError> {
    let conversation = owned(&state, &auth, parse_id(&id)?).await?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::validation("limit", "must be 1 to 200"));
    }
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::validation("after", "must be 0 or more"));
    }
    let items = conversations::messages(&state.pool, conversation.id, after, limit as i64).await?;
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|m| m.posted_seq))
        .flatten();
    Ok(Reply::ok(MessagePage { items, next }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentRequest {
    /// 1 to 32000 characters, not blank (it is trimmed); lines may break.
    #[schema(
        min_length = 1,
        max_length = 32000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub content: String,
}

/// Post a message (PostMessage). It counts as usage (`messages`): 402 `upgrade_required`
/// when the day's messages are used up, and then nothing is appended.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/messages", operation_id = "post_message", tag = "conversations", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body(content = ContentRequest, content_type = "application/json"),
    responses((status = 201, body = MessageRow), (status = 402, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn post_message(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    auth: AuthUser,
    Path(id): Path<String>,
    AppJson(req): AppJson<ContentRequest>,
) -> Result<Reply<MessageRow>, ApiError> {
    let conversation = owned(&state, &auth, parse_id(&id)?).await?;
    let content = req.content.trim().to_owned();
    if content.is_empty() || content.chars().count() > aggregates::conversation::CONTENT_MAX {
        return Err(ApiError::validation(
            "content",
            "must be 1 to 32000 characters",
        ));
    }
    let meta = as_owner(meta, &auth);
    auth.charge(&state, KIND_MESSAGES, &meta).await?;
    let message_id = Uuid::now_v7();
    let outcome = state
        .conversations
        .execute(
            &conversation.id.to_string(),
            ConversationCommand::PostMessage {
                by: auth.user_id,
                message_id,
                role: ROLE_USER.into(),
                content,
                in_reply_to: None,
            },
            &meta,
        )
        .await
        .map_err(conversation_error)?;
    let lagging = settle(&state, outcome.cursor, &[ReadModel::Conversations]).await;
    let message = conversations::message_owned(&state.pool, auth.user_id, message_id)
        .await?
        .ok_or(ApiError::NotCaughtUp)?;
    let mut reply = Reply::ok(message).with_status(StatusCode::CREATED);
    reply.position = outcome.cursor;
    reply.lagging = lagging;
    Ok(reply)
}

async fn my_message(state: &AppState, auth: &AuthUser, id: &str) -> Result<MessageRow, ApiError> {
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::NotFound("no such message".into()))?;
    conversations::message_owned(&state.pool, auth.user_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such message".into()))
}

/// One of my messages.
#[utoipa::path(get, path = "/api/v1/messages/{id}", operation_id = "get_message", tag = "conversations", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = MessageRow), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_message(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
) -> Result<Reply<MessageRow>, ApiError> {
    Ok(Reply::ok(my_message(&state, &auth, &id).await?))
}

/// Edit one of my messages.
#[utoipa::path(patch, path = "/api/v1/messages/{id}", operation_id = "edit_message", tag = "conversations", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body(content = ContentRequest, content_type = "application/json"),
    responses((status = 200, body = MessageRow), (status = 404, body = crate::error::ErrorBody)))]
pub async fn edit_message(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    auth: AuthUser,
    Path(id): Path<String>,
    AppJson(req): AppJson<ContentRequest>,
) -> Result<Reply<MessageRow>, ApiError> {
    let message = my_message(&state, &auth, &id).await?;
    let outcome = state
        .conversations
        .execute(
            &message.conversation_id.to_string(),
            ConversationCommand::EditMessage {
                by: auth.user_id,
                message_id: message.id,
                content: req.content.trim().to_owned(),
            },
            &as_owner(meta, &auth),
        )
        .await
        .map_err(conversation_error)?;
    settle(&state, outcome.cursor, &[ReadModel::Conversations]).await;
    let mut reply = Reply::ok(my_message(&state, &auth, &id).await?);
    reply.position = outcome.cursor;
    Ok(reply)
}

/// Delete one of my messages (the conversation keeps a tombstone; the history keeps it).
#[utoipa::path(delete, path = "/api/v1/messages/{id}", operation_id = "delete_message", tag = "conversations", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_message(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    auth: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let message = my_message(&state, &auth, &id).await?;
    let outcome = state
        .conversations
        .execute(
            &message.conversation_id.to_string(),
            ConversationCommand::DeleteMessage {
                by: auth.user_id,
                message_id: message.id,
            },
            &as_owner(meta, &auth),
        )
        .await
        .map_err(conversation_error)?;
    settle(&state, outcome.cursor, &[ReadModel::Conversations]).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
