//! Read-your-writes: a command waits (bounded) until the read models its caller reads next
//! have passed its last event; a GET with `X-Min-Position` waits until its read models have
//! reached that cursor.

use aggregates::LogCursor;
use projections::ReadModel;

use crate::extract::MinPosition;
use crate::{ApiError, AppState};

/// Wait for `models` to reach `cursor`; returns the read models still behind when the
/// configured time ran out (the command succeeded either way).
pub async fn settle(
    state: &AppState,
    cursor: Option<LogCursor>,
    models: &[ReadModel],
) -> Vec<&'static str> {
    let Some(cursor) = cursor else { return vec![] };
    let timeout = state.config.read_your_writes_timeout;
    if state
        .checkpoints
        .wait_for(models, cursor, timeout)
        .await
        .is_ok()
    {
        return vec![];
    }
    models
        .iter()
        .filter(|m| state.checkpoints.current(**m).is_none_or(|c| c < cursor))
        .map(|m| m.name())
        .collect()
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
