//! Read-your-writes: a command waits (bounded) until the read models its caller reads next
//! have passed its last event; a GET with `X-Min-Position` waits until its read models have
//! reached that cursor. Every GET of the API honours the header in one place
//! ([`min_position`], a middleware waiting for every read model), so no handler does.

use aggregates::LogCursor;
use projections::ReadModel;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::extract::MinPosition;
use crate::{ApiError, AppState};

/// Wait for `models` to reach `cursor`; returns the read models still behind when the
/// configured time ran out (the command succeeded either way).
pub async fn settle(
    state: &AppState,
    cursor: Option<LogCursor>,
    models: &[ReadModel],
) -> Vec<&'static str> {
    state.settle(cursor, models).await
}

/// Honour `X-Min-Position` on a query: 503 `not_caught_up` if the read models do not reach
/// it in time.
pub async fn require(
    state: &AppState,
    min: MinPosition,
    models: &[ReadModel],
) -> Result<(), ApiError> {
    match min.0 {
        None => Ok(()),
        Some(cursor) => state
            .checkpoints
            .wait_for(models, cursor, state.config.read_your_writes_timeout)
            .await
            .map_err(|_| ApiError::NotCaughtUp),
    }
}

/// Whether a GET of `path` honours `X-Min-Position`: the API's own reads (not health,
/// metrics, the document or the console's files, which read no read model).
pub fn honours_min_position(path: &str) -> bool {
    // the plans come from configuration, the verification link only renders a page
    path.starts_with("/api/") && !matches!(path, "/api/v1/plans" | "/api/v1/auth/verify")
}

/// The middleware: a GET of the API with `X-Min-Position` waits (bounded) until every read
/// model has reached that cursor, else 503 `not_caught_up` with `Retry-After`; a header that
/// is not a cursor is 400.
pub async fn min_position(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::GET || !honours_min_position(req.uri().path()) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let min = match MinPosition::from_request_parts(&mut parts, &state).await {
        Ok(min) => min,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = require(&state, min, &ReadModel::ALL).await {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}
