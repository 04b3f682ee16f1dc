//! Conversations: `/api/v1/conversations...`; their messages in [`messages`]
//! (`/api/v1/conversations/{id}/messages`, `/api/v1/messages/{id}`).
//! Only the owner sees a conversation or a message: anyone else gets 404 on every route.
//! The live stream is in [`super::live`].

use aggregates::conversation::{ConversationCommand, ConversationError};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use eventstore::CommandError;
use projections::conversations::{self, ConversationRow};
use projections::ReadModel;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::envelope::Reply;
use crate::extract::{AppJson, AppQuery, RequestMeta};
use crate::routes::read_your_writes::settle;
use crate::views::profile;
use crate::{ApiError, AppState};

pub mod messages;

use self::messages::{delete_message, edit_message, get_message, list_messages, post_message};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/conversations",
            get(list).post(create).delete(bulk_delete),
        )
        .route(
            "/api/v1/conversations/{id}",
            get(get_one).patch(rename).delete(delete_one),
        )
        .route(
            "/api/v1/conversations/{id}/messages",
            get(list_messages).post(post_message),
        )
        .route(
            "/api/v1/messages/{id}",
            get(get_message).patch(edit_message).delete(delete_message),
        )
}

fn not_found() -> ApiError {
    ApiError::NotFound("no such conversation".into())
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse().map_err(|_| not_found())
}

fn as_owner(meta: aggregates::EventMetadata, auth: &AuthUser) -> aggregates::EventMetadata {
    meta.acting_as(auth.user_id, &auth.role)
}

pub fn conversation_error(e: CommandError<ConversationError>) -> ApiError {
    match e {
        CommandError::Domain(ConversationError::NotFound)
        | CommandError::Domain(ConversationError::AlreadyStarted) => not_found(),
        CommandError::Domain(ConversationError::MessageNotFound) => {
            ApiError::NotFound("no such message".into())
        }
        CommandError::Domain(ConversationError::Invalid { field, message }) => {
            ApiError::validation(field, message)
        }
        CommandError::Conflict => {
            ApiError::Conflict("the conversation changed meanwhile; try again".into())
        }
        e @ (CommandError::Store(_) | CommandError::Unavailable(_)) => e.into(),
    }
}

async fn owned(state: &AppState, auth: &AuthUser, id: Uuid) -> Result<ConversationRow, ApiError> {
    conversations::owned(&state.pool, auth.user_id, id)
        .await?
        .ok_or_else(not_found)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Search in titles.
    #[serde(default)]
    #[param(max_length = 200)]
    pub q: Option<String>,
    #[serde(default)]
    #[param(minimum = 1, maximum = 1_000_000)]
    pub page: Option<u32>,
    /// 1 to 100 (default 20).
    #[serde(default)]
    #[param(minimum = 1, maximum = 100)]
    pub per_page: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationPage {
    pub items: Vec<ConversationRow>,
    pub page: u32,
    pub per_page: u32,
    pub total: i64,
}

/// My conversations, most recently active first.
#[utoipa::path(get, path = "/api/v1/conversations", operation_id = "list_conversations", tag = "conversations", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, description = "A page", body = ConversationPage)))]
pub async fn list(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(q): AppQuery<ListQuery>,
) -> Result<Reply<ConversationPage>, ApiError> {
    let page = crate::extract::page_number(q.page)?;
    let per_page = q.per_page.unwrap_or(20);
    if !(1..=100).contains(&per_page) {
        return Err(ApiError::validation("per_page", "must be 1 to 100"));
    }
    let search = crate::extract::search_text(q.q.as_deref(), 200)?;
    let (items, total) = conversations::list(
        &state.pool,
        auth.user_id,
        search,
        per_page as i64,
        (page as i64 - 1) * per_page as i64,
    )
    .await?;
    Ok(Reply::ok(ConversationPage {
        items,
        page,
        per_page,
        total,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TitleRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F\u2028\u2029]*[^\s\u0000-\u001F\u007F-\u009F\u2028\u2029][^\u0000-\u001F\u007F-\u009F\u2028\u2029]*$"
    )]
    pub title: String,
}

/// Start a conversation. 402 `upgrade_required` when the plan's `max_conversations` are in use.
#[utoipa::path(post, path = "/api/v1/conversations", operation_id = "create_conversation", tag = "conversations", security(("bearer" = [])),
    request_body(content = TitleRequest, content_type = "application/json"),
    responses((status = 201, description = "Created", body = ConversationRow),
              (status = 402, description = "`upgrade_required`", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    auth: AuthUser,
    AppJson(req): AppJson<TitleRequest>,
) -> Result<Reply<ConversationRow>, ApiError> {
    let me = profile(&state, auth.user_id).await?;
    let plan = usecases::usage::plan_named(&state.plans, &me.plan);
    let id = Uuid::now_v7();
    let metadata = as_owner(meta, &auth);
    let aggregate_id = id.to_string();
    let outcome =
        usecases::conversations::start_within_plan(&state, auth.user_id, plan.as_ref(), || {
            state.conversations.execute(
                &aggregate_id,
                ConversationCommand::StartConversation {
                    owner_id: auth.user_id,
                    title: req.title.trim().to_owned(),
                },
                &metadata,
            )
        })
        .await?
        .map_err(conversation_error)?;
    let lagging = settle(&state, outcome.cursor, &[ReadModel::Conversations]).await;
    // Created either way: a read model that has not caught up yet (named in
    // X-Projections-Lagging) must not turn a success into a 404 that a client would retry
    // into a second conversation. The row is then the one the command just decided.
    let row = match conversations::owned(&state.pool, auth.user_id, id).await? {
        Some(row) => row,
        None => {
            let now = state.clock.now();
            ConversationRow {
                id,
                owner_id: auth.user_id,
                title: req.title.trim().to_owned(),
                created_at: now,
                updated_at: now,
                message_count: 0,
                last_message_at: None,
            }
        }
    };
    let mut reply = Reply::ok(row).with_status(StatusCode::CREATED);
    reply.position = outcome.cursor;
    reply.lagging = lagging;
    Ok(reply)
}

/// One of my conversations.
#[utoipa::path(get, path = "/api/v1/conversations/{id}", operation_id = "get_conversation", tag = "conversations", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = ConversationRow), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
) -> Result<Reply<ConversationRow>, ApiError> {
    Ok(Reply::ok(owned(&state, &auth, parse_id(&id)?).await?))
}

/// Rename one of my conversations.
#[utoipa::path(patch, path = "/api/v1/conversations/{id}", operation_id = "rename_conversation", tag = "conversations", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body(content = TitleRequest, content_type = "application/json"),
    responses((status = 200, body = ConversationRow), (status = 404, body = crate::error::ErrorBody)))]
pub async fn rename(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    auth: AuthUser,
    Path(id): Path<String>,
    AppJson(req): AppJson<TitleRequest>,
) -> Result<Reply<ConversationRow>, ApiError> {
    let id = parse_id(&id)?;
    let outcome = state
        .conversations
        .execute(
            &id.to_string(),
            ConversationCommand::Rename {
                by: auth.user_id,
                title: req.title.trim().to_owned(),
            },
            &as_owner(meta, &auth),
        )
        .await
        .map_err(conversation_error)?;
    settle(&state, outcome.cursor, &[ReadModel::Conversations]).await;
    let mut reply = Reply::ok(owned(&state, &auth, id).await?);
    reply.position = outcome.cursor;
    Ok(reply)
}

async fn delete_conversation(
    state: &AppState,
    meta: &aggregates::EventMetadata,
    auth: &AuthUser,
    id: Uuid,
) -> Result<Option<aggregates::LogCursor>, ApiError> {
    let outcome = state
        .conversations
        .execute(
            &id.to_string(),
            ConversationCommand::Delete { by: auth.user_id },
            meta,
        )
        .await
        .map_err(conversation_error)?;
    Ok(outcome.cursor)
}

/// Delete one of my conversations.
#[utoipa::path(delete, path = "/api/v1/conversations/{id}", operation_id = "delete_conversation", tag = "conversations", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_one(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    auth: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let cursor = delete_conversation(&state, &as_owner(meta, &auth), &auth, parse_id(&id)?).await?;
    settle(&state, cursor, &[ReadModel::Conversations]).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkDelete {
    /// 1 to 100 conversation ids.
    #[schema(min_items = 1, max_items = 100)]
    pub ids: Vec<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkDeleted {
    /// The ids that were mine and are now deleted (others are ignored).
    pub deleted: Vec<Uuid>,
}

/// Delete several of my conversations.
#[utoipa::path(delete, path = "/api/v1/conversations", operation_id = "delete_conversations", tag = "conversations", security(("bearer" = [])),
    request_body(content = BulkDelete, content_type = "application/json"), responses((status = 200, body = BulkDeleted)))]
pub async fn bulk_delete(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    auth: AuthUser,
    AppJson(req): AppJson<BulkDelete>,
) -> Result<Reply<BulkDeleted>, ApiError> {
    if req.ids.is_empty() || req.ids.len() > 100 {
        return Err(ApiError::validation("ids", "send 1 to 100 ids"));
    }
    let meta = as_owner(meta, &auth);
    let mut deleted = vec![];
    let mut cursor = None;
    for id in req.ids {
        match delete_conversation(&state, &meta, &auth, id).await {
            Ok(c) => {
                deleted.push(id);
                cursor = c.max(cursor);
            }
            Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    settle(&state, cursor, &[ReadModel::Conversations]).await;
    Ok(Reply::ok(BulkDeleted { deleted }))
}
