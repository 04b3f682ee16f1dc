//! Projection lag as the benches measure it: from a command's answer (its events are
//! committed) until a read model's checkpoint has its cursor, as read-your-writes waits.

use std::time::{Duration, Instant};

use aggregates::LogCursor;
use projections::{CheckpointWatch, ReadModel};
use tokio::task::JoinHandle;

/// The cursor a command answered with (`X-Position`).
pub fn position(resp: &reqwest::Response) -> Option<LogCursor> {
    resp.headers()
        .get("x-position")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<LogCursor>().ok())
}

/// Milliseconds from `answered` until `model` has reached `cursor` (None after 30 s).
pub fn sample(
    watch: &CheckpointWatch,
    model: ReadModel,
    cursor: LogCursor,
    answered: Instant,
) -> JoinHandle<Option<f64>> {
    let watch = watch.clone();
    tokio::spawn(async move {
        watch
            .wait_for(&[model], cursor, Duration::from_secs(30))
            .await
            .ok()
            .map(|_| answered.elapsed().as_secs_f64() * 1000.0)
    })
}

/// Every sample that arrived, in milliseconds.
pub async fn collect(samples: Vec<JoinHandle<Option<f64>>>) -> Vec<f64> {
    let mut out = Vec::with_capacity(samples.len());
    for s in samples {
        if let Ok(Some(ms)) = s.await {
            out.push(ms);
        }
    }
    out
}
