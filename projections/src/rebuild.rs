//! Rebuilding a read model from the log.
//!
//! One transaction: lock the read model's checkpoint (the projector waits meanwhile),
//! delete its rows, replay every event of the log in order, set the checkpoint to the last
//! one, commit. Readers keep seeing the old rows until the commit swaps the new ones in
//! (MVCC does what shadow tables would). The projector then resumes and skips what the
//! rebuild already applied.
//!
//! The cost: while it runs, the rebuild's own transaction is open, so readers of the global
//! order (the relay) wait for it. Fine for the log sizes we have; rebuilding into shadow
//! tables in committed batches is the way on when logs grow.

use aggregates::LogCursor;
use eventstore::crypto::KeyStore;
use sqlx::PgPool;

use crate::{checkpoint, ProjectionError, ReadModel};

const BATCH: i64 = 1_000;

#[derive(Debug, Clone, PartialEq)]
pub struct RebuildReport {
    pub events_applied: u64,
    pub cursor: LogCursor,
}

/// Replay `model` from the start of the log. `progress(done, total)` is called after every
/// batch.
pub async fn rebuild(
    pool: &PgPool,
    keys: &KeyStore,
    model: ReadModel,
    mut progress: impl FnMut(u64, u64),
) -> Result<RebuildReport, ProjectionError> {
    let mut tx = pool.begin().await?;
    let before = checkpoint::lock(&mut tx, model).await?;
    let total = eventstore::log::backlog(&mut *tx, LogCursor::START)
        .await?
        .0
        .max(0) as u64;
    model.clear(&mut tx).await?;
    let mut cursor = LogCursor::START;
    let mut applied = 0u64;
    loop {
        let batch = eventstore::log::read_after(&mut *tx, cursor, BATCH).await?;
        if batch.is_empty() {
            break;
        }
        for mut event in batch {
            event
                .open(keys)
                .await
                .map_err(|e| ProjectionError::poison(&event, e))?;
            model.apply(&mut tx, &event).await?;
            cursor = event.cursor;
            applied += 1;
        }
        progress(applied, total.max(applied));
    }
    // events_applied restarts from the replay count; the stream position is the
    // projector's and stays where it was.
    sqlx::query("update projection_checkpoints set events_applied = 0 where name = $1")
        .bind(model.name())
        .execute(&mut *tx)
        .await?;
    checkpoint::advance(&mut tx, model, cursor, before.stream_sequence, applied).await?;
    tx.commit().await?;
    tracing::info!(read_model = %model, events = applied, cursor = %cursor, "Rebuilt read model");
    Ok(RebuildReport {
        events_applied: applied,
        cursor,
    })
}
