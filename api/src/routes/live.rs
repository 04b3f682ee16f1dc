//! `GET /api/v1/conversations/{id}/stream`: server-sent events with every new, edited or
//! deleted message of one of my conversations, as the projection applies them. Each event's
//! id is the message's change sequence: reconnecting with `Last-Event-ID` (or
//! `?last_event_id=`) replays what was missed.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures::Stream;
use projections::conversations::{self, MessageRow};
use serde::Deserialize;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::extract::AppQuery;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/conversations/{id}/stream", get(stream))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    #[serde(default)]
    pub last_event_id: Option<i64>,
}

struct Follow {
    pool: sqlx::PgPool,
    conversation: Uuid,
    last: i64,
    rx: broadcast::Receiver<Uuid>,
    pending: VecDeque<MessageRow>,
}

/// Live messages of one of my conversations (text/event-stream, event `message`).
#[utoipa::path(get, path = "/api/v1/conversations/{id}/stream", operation_id = "stream_conversation", tag = "conversations", security(("bearer" = [])),
    params(("id" = Uuid, Path), ("Last-Event-ID" = Option<i64>, Header, minimum = 0, description = "Resume after this event (an event's `id`)")),
    responses((status = 200, description = "Server-sent events: `event: message`, `id` the message's `posted_seq`, `data` a message (the JSON of `MessageRow`)",
               content_type = "text/event-stream", body = projections::conversations::MessageRow),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn stream(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    AppQuery(q): AppQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::NotFound("no such conversation".into()))?;
    conversations::owned(&state.pool, auth.user_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such conversation".into()))?;
    // a resume point that is not one of our ids is refused, not read as "from the start"
    let last = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    ApiError::bad_request("Last-Event-ID", "is not a message's posted_seq")
                })?,
        ),
        None => None,
    };
    let last = match last.or(q.last_event_id) {
        Some(n) if n < 0 => return Err(ApiError::validation("last_event_id", "must be 0 or more")),
        other => other.unwrap_or(0),
    };
    let follow = Follow {
        pool: state.pool.clone(),
        conversation: id,
        last,
        // subscribe before the first read, so nothing falls between the two
        rx: state.feed.subscribe(),
        pending: VecDeque::new(),
    };
    let events = futures::stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(m) = f.pending.pop_front() {
                f.last = m.changed_seq;
                let event = Event::default()
                    .id(m.changed_seq.to_string())
                    .event("message")
                    .json_data(&m)
                    .unwrap_or_else(|_| Event::default().comment("unserialisable message"));
                return Some((Ok(event), f));
            }
            match conversations::changed_since(&f.pool, f.conversation, f.last).await {
                Ok(rows) if !rows.is_empty() => {
                    f.pending.extend(rows);
                    continue;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
            // wait for this conversation to change (or look again after a while: a
            // notification can be missed while the listener reconnects)
            let wait = async {
                loop {
                    match f.rx.recv().await {
                        Ok(changed) if changed == f.conversation => return,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
