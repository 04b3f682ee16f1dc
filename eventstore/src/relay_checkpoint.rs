//! Where the relay has got to in the log (`relay_checkpoints`). Read by the relay and by
//! health checks; moved only by the relay, after JetStream acked every event up to it.

use aggregates::LogCursor;
use sqlx::PgExecutor;

use crate::log::{cursor_from_row, position_param, xid8_param};

pub async fn load<'e>(db: impl PgExecutor<'e>, name: &str) -> Result<LogCursor, sqlx::Error> {
    let row = sqlx::query(
        "select transaction_id::text as transaction_id, position from relay_checkpoints where name = $1",
    )
    .bind(name)
    .fetch_optional(db)
    .await?;
    Ok(row
        .as_ref()
        .map(cursor_from_row)
        .transpose()?
        .unwrap_or(LogCursor::START))
}

/// Move the checkpoint forward (never back: a second relay that lost its lock cannot undo
/// the leader's progress), without waiting for the disk: a move lost in a crash of
/// PostgreSQL only makes the relay publish those events again, under the same message ids,
/// which JetStream drops as duplicates within its window (`NATS_DUPLICATE_WINDOW_SECS`,
/// 10 minutes; ARCHITECTURE decision 30).
pub async fn advance<'e>(
    db: impl PgExecutor<'e>,
    name: &str,
    cursor: LogCursor,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "with relaxed as (select set_config('synchronous_commit', 'off', true)) \
         insert into relay_checkpoints (name, transaction_id, position) \
         select $1, $2::text::xid8, $3 from relaxed \
         on conflict (name) do update set transaction_id = excluded.transaction_id, \
         position = excluded.position, updated_at = now() \
         where (relay_checkpoints.transaction_id, relay_checkpoints.position) \
             < (excluded.transaction_id, excluded.position)",
    )
    .bind(name)
    .bind(xid8_param(&cursor))
    .bind(position_param(&cursor))
    .execute(db)
    .await?;
    Ok(())
}
