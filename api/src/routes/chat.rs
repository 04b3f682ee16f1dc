//! `POST /api/v1/chat`: one prompt to the configured model, answered in the response
//! (docs/ASSISTANT.md).
//!
//! The call counts one `messages` and the reply's `tokens` against the plan (402
//! `upgrade_required` when either is used up, checked before the model is called). With
//! `conversation_id` (one of mine, else 404) the prompt and the reply are appended to the
//! conversation together (`PostExchange`, one commit): the assistant worker, reading the
//! prompt from the stream, finds it answered and does not call the model again.
//! Without `LLM_BASE_URL` and `LLM_API_KEY`: 503 `unavailable`.

use aggregates::conversation::{reply_id, ConversationCommand, CONTENT_MAX};
use aggregates::meter::{KIND_MESSAGES, KIND_TOKENS};
use aggregates::LogCursor;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use projections::conversations;
use projections::ReadModel;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::envelope::Reply;
use crate::extract::{AppJson, RequestMeta};
use crate::routes::conversations::conversation_error;
use crate::routes::read_your_writes::settle;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/chat", post(chat))
}

/// What `/chat` answers when the model is not configured.
pub const NOT_CONFIGURED: &str =
    "the assistant is not configured: set LLM_BASE_URL and LLM_API_KEY";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// 1 to 32000 characters, not blank (it is trimmed); lines may break.
    #[schema(
        min_length = 1,
        max_length = 32000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub prompt: String,
    /// One of my conversations: its last messages go to the model with the prompt, and
    /// the prompt and the reply become messages of it.
    #[serde(default)]
    pub conversation_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatResponse {
    /// The model's answer.
    pub response: String,
    /// The tokens the call used (the provider's count; counted against `tokens_per_day`).
    pub tokens: u64,
    /// With `conversation_id`: the prompt's message id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<Uuid>,
    /// With `conversation_id`: the reply's message id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_id: Option<Uuid>,
}

/// Send one prompt to the model and get its answer. Counts 1 `messages` and the answer's
/// `tokens` (402 `upgrade_required` when the day's are used up); with `conversation_id`
/// the prompt and the answer become messages of that conversation. 503 `unavailable`
/// when no model is configured, or the model cannot answer now.
#[utoipa::path(post, path = "/api/v1/chat", operation_id = "chat", tag = "conversations", security(("bearer" = [])),
    request_body(content = ChatRequest, content_type = "application/json"),
    responses((status = 200, description = "The answer", body = ChatResponse),
              (status = 402, description = "`upgrade_required`: messages or tokens used up", body = crate::error::ErrorBody),
              (status = 404, description = "Not one of my conversations", body = crate::error::ErrorBody),
              (status = 503, description = "`unavailable`: no model configured, or it cannot answer now", body = crate::error::ErrorBody)))]
pub async fn chat(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    auth: AuthUser,
    AppJson(req): AppJson<ChatRequest>,
) -> Result<Reply<ChatResponse>, ApiError> {
    let client = state
        .llm
        .clone()
        .ok_or_else(|| ApiError::Unavailable(NOT_CONFIGURED.into()))?;
    let prompt = req.prompt.trim().to_owned();
    if prompt.is_empty() || prompt.chars().count() > CONTENT_MAX {
        return Err(ApiError::validation(
            "prompt",
            "must be 1 to 32000 characters",
        ));
    }
    let conversation = match req.conversation_id {
        Some(id) => Some(
            conversations::owned(&state.pool, auth.user_id, id)
                .await?
                .ok_or_else(|| ApiError::NotFound("no such conversation".into()))?,
        ),
        None => None,
    };
    let mut meta = meta;
    meta.actor_id = Some(auth.user_id.to_string());
    meta.actor_role = auth.role.clone();

    let plan = auth.plan(&state).await?;
    let now = state.clock.now();
    let limit = plan.daily_limit(KIND_TOKENS);
    usecases::usage::require_tokens_left(&state.meters, auth.user_id, &plan, now).await?;
    auth.charge(&state, KIND_MESSAGES, &meta).await?;

    let history = match &conversation {
        Some(c) => {
            conversations::recent_messages(&state.pool, c.id, i64::MAX, llm::HISTORY_MAX as i64 - 1)
                .await?
        }
        None => vec![],
    };
    let messages = llm::conversation(
        history
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .chain([(llm::ROLE_USER, prompt.as_str())]),
    );
    let completion = client.complete(&messages).await.map_err(|e| {
        tracing::warn!(reason = %e.reason(), detail = %e.detail(), "The model cannot answer a chat");
        ApiError::Unavailable(format!(
            "the assistant cannot answer now ({}); try again shortly",
            e.reason()
        ))
    })?;
    let response: String = completion
        .content
        .trim()
        .chars()
        .take(CONTENT_MAX)
        .collect();

    let mut position: Option<LogCursor> = None;
    let mut lagging = vec![];
    let mut ids = None;
    if let Some(c) = &conversation {
        let prompt_id = Uuid::now_v7();
        let answer_id = reply_id(prompt_id);
        let outcome = state
            .conversations
            .execute(
                &c.id.to_string(),
                ConversationCommand::PostExchange {
                    by: auth.user_id,
                    prompt_id,
                    prompt,
                    reply_id: answer_id,
                    reply: response.clone(),
                },
                &meta,
            )
            .await
            .map_err(conversation_error)?;
        position = outcome.cursor;
        lagging = settle(&state, outcome.cursor, &[ReadModel::Conversations]).await;
        ids = Some((prompt_id, answer_id));
    }
    let tokens = completion.total_tokens;
    match usecases::usage::record(&state.meters, auth.user_id, now, tokens, limit, &meta).await {
        Ok((_, cursor)) => position = position.max(cursor),
        // the answer is given: losing its count is better than losing the answer
        Err(e) => tracing::error!(error = %e, tokens, "Cannot record a chat's tokens"),
    }
    let mut reply = Reply::ok(ChatResponse {
        response,
        tokens,
        message_id: ids.map(|(p, _)| p),
        reply_id: ids.map(|(_, r)| r),
    });
    reply.position = position;
    reply.lagging = lagging;
    Ok(reply)
}
