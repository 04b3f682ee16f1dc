//! A read model's checkpoint: its place in the log, kept in `projection_checkpoints` in the
//! same transaction as its rows.

use aggregates::LogCursor;
use chrono::{DateTime, Utc};
use eventstore::log::{cursor_from_row, position_param, xid8_param};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::ReadModel;

#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub name: String,
    pub cursor: LogCursor,
    /// The last JetStream stream sequence this read model has consumed.
    pub stream_sequence: u64,
    pub events_applied: u64,
    /// `running`, `failed` or `rebuilding`.
    pub status: String,
    pub failed_event_id: Option<Uuid>,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

pub const RUNNING: &str = "running";
pub const FAILED: &str = "failed";

/// The checkpoint's columns, as `from_row` reads them (a macro, so each query is one
/// constant string: none is formatted on the projectors' path).
macro_rules! select_checkpoints {
    ($($rest:literal),*) => {
        concat!(
            "select name, transaction_id::text as transaction_id, position, stream_sequence, \
             events_applied, status, failed_event_id, last_error, updated_at",
            $($rest),*
        )
    };
}

fn from_row(row: &PgRow) -> Result<Checkpoint, sqlx::Error> {
    Ok(Checkpoint {
        name: row.try_get("name")?,
        cursor: cursor_from_row(row)?,
        stream_sequence: row.try_get::<i64, _>("stream_sequence")?.max(0) as u64,
        events_applied: row.try_get::<i64, _>("events_applied")?.max(0) as u64,
        status: row.try_get("status")?,
        failed_event_id: row.try_get("failed_event_id")?,
        last_error: row.try_get("last_error")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Make sure every read model has a checkpoint row.
pub async fn ensure_all<'e>(db: impl PgExecutor<'e> + Copy) -> Result<(), sqlx::Error> {
    for model in ReadModel::ALL {
        sqlx::query("insert into projection_checkpoints (name) values ($1) on conflict do nothing")
            .bind(model.name())
            .execute(db)
            .await?;
    }
    Ok(())
}

/// Lock the read model's checkpoint row for this transaction: the projector and a rebuild
/// of the same read model take turns, never interleave.
pub async fn lock(conn: &mut PgConnection, model: ReadModel) -> Result<Checkpoint, sqlx::Error> {
    lock_with(
        conn,
        model,
        select_checkpoints!(" from projection_checkpoints where name = $1 for update"),
    )
    .await
}

/// [`lock`], and let the transaction commit without waiting for the disk
/// (`synchronous_commit = off`, ARCHITECTURE decision 30), in the same round trip.
pub async fn lock_relaxed(
    conn: &mut PgConnection,
    model: ReadModel,
) -> Result<Checkpoint, sqlx::Error> {
    lock_with(
        conn,
        model,
        select_checkpoints!(
            ", set_config('synchronous_commit', 'off', true) ",
            "from projection_checkpoints where name = $1 for update"
        ),
    )
    .await
}

/// One statement (`locking`) while the row exists (it does after [`ensure_all`]); the row
/// is made first when it does not.
async fn lock_with(
    conn: &mut PgConnection,
    model: ReadModel,
    locking: &'static str,
) -> Result<Checkpoint, sqlx::Error> {
    if let Some(row) = sqlx::query(locking)
        .bind(model.name())
        .fetch_optional(&mut *conn)
        .await?
    {
        return from_row(&row);
    }
    sqlx::query("insert into projection_checkpoints (name) values ($1) on conflict do nothing")
        .bind(model.name())
        .execute(&mut *conn)
        .await?;
    let row = sqlx::query(locking)
        .bind(model.name())
        .fetch_one(&mut *conn)
        .await?;
    from_row(&row)
}

pub async fn load<'e>(
    db: impl PgExecutor<'e>,
    model: ReadModel,
) -> Result<Option<Checkpoint>, sqlx::Error> {
    let row = sqlx::query(select_checkpoints!(
        " from projection_checkpoints where name = $1"
    ))
    .bind(model.name())
    .fetch_optional(db)
    .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn all<'e>(db: impl PgExecutor<'e>) -> Result<Vec<Checkpoint>, sqlx::Error> {
    let rows = sqlx::query(select_checkpoints!(
        " from projection_checkpoints order by name"
    ))
    .fetch_all(db)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Move the checkpoint (inside the transaction that applied the events) and wake whoever
/// waits on it (NOTIFY is delivered at commit), in one statement.
pub async fn advance(
    conn: &mut PgConnection,
    model: ReadModel,
    cursor: LogCursor,
    stream_sequence: u64,
    newly_applied: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "with moved as ( \
             update projection_checkpoints set transaction_id = $2::text::xid8, position = $3, \
             stream_sequence = greatest(stream_sequence, $4), events_applied = events_applied + $5, \
             status = 'running', failed_event_id = null, last_error = null, updated_at = now() \
             where name = $1 returning name) \
         select pg_notify('chronicle_checkpoints', $6) from moved",
    )
    .bind(model.name())
    .bind(xid8_param(&cursor))
    .bind(position_param(&cursor))
    .bind(stream_sequence as i64)
    .bind(newly_applied as i64)
    .bind(notification(model, cursor))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(())
}

/// What a checkpoint's NOTIFY on `chronicle_checkpoints` says: the read model's name and
/// the cursor it moved to (`users 1234 5678`), so a [`crate::CheckpointWatch`] need not
/// read the table for each one.
pub fn notification(model: ReadModel, cursor: LogCursor) -> String {
    format!(
        "{} {} {}",
        model.name(),
        cursor.transaction_id,
        cursor.position
    )
}

/// The read model and cursor of a [`notification`] (`None`: not one; an older release
/// sent the name alone).
pub fn parse_notification(payload: &str) -> Option<(&str, LogCursor)> {
    let mut parts = payload.split(' ');
    let (name, transaction_id, position) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((
        name,
        LogCursor::new(transaction_id.parse().ok()?, position.parse().ok()?),
    ))
}

/// Move a checkpoint past messages of aggregates the read model does not read, in one
/// statement and without waiting for the disk (the projector reads such messages again
/// after a crash and skips them again): the stream sequence from `from_sequence` to
/// `to_sequence`, the cursor to `cursor` unless it is already further (a rebuild moved it).
/// `false` when the stored checkpoint is not at `from_sequence` (another process moved it)
/// or not running: then nothing changes, and the caller takes the transaction path.
pub async fn advance_past<'e>(
    db: impl PgExecutor<'e>,
    model: ReadModel,
    from_sequence: u64,
    to_sequence: u64,
    cursor: LogCursor,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(
        "with moved as ( \
             update projection_checkpoints set \
             transaction_id = case when (transaction_id, position) < ($3::text::xid8, $4) \
                 then $3::text::xid8 else transaction_id end, \
             position = case when (transaction_id, position) < ($3::text::xid8, $4) \
                 then $4 else position end, \
             stream_sequence = $5, updated_at = now() \
             where name = $1 and stream_sequence = $2 and status = 'running' \
             and set_config('synchronous_commit', 'off', true) = 'off' \
             returning name, transaction_id, position) \
         select pg_notify('chronicle_checkpoints', name || ' ' || transaction_id::text || ' ' || position) \
         from moved",
    )
    .bind(model.name())
    .bind(from_sequence as i64)
    .bind(xid8_param(&cursor))
    .bind(position_param(&cursor))
    .bind(to_sequence as i64)
    .fetch_optional(db)
    .await?;
    Ok(moved.is_some())
}

/// Stop the read model: an event keeps failing. It stays stopped (and health says so)
/// until a rebuild or a restart of the projector.
pub async fn mark_failed<'e>(
    db: impl PgExecutor<'e>,
    model: ReadModel,
    event_id: Option<Uuid>,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update projection_checkpoints set status = 'failed', failed_event_id = $2, \
         last_error = $3, updated_at = now() where name = $1",
    )
    .bind(model.name())
    .bind(event_id)
    .bind(error)
    .execute(db)
    .await?;
    Ok(())
}

/// Let a failed read model try again (the projector does this when it starts).
pub async fn clear_failure<'e>(
    db: impl PgExecutor<'e>,
    model: ReadModel,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update projection_checkpoints set status = 'running', updated_at = now() \
         where name = $1 and status = 'failed'",
    )
    .bind(model.name())
    .execute(db)
    .await?;
    Ok(())
}

#[cfg(test)]
mod notification_tests {
    use super::*;

    #[test]
    fn a_notification_carries_the_model_and_its_cursor_and_old_ones_do_not_parse() {
        let cursor = LogCursor::new(18_446_744_073_709_551_615, 42);
        let said = notification(ReadModel::Usage, cursor);
        assert_eq!(said, "usage 18446744073709551615 42");
        assert_eq!(parse_notification(&said), Some(("usage", cursor)));
        for old in [
            "usage",
            "",
            "usage 1",
            "usage 1 2 3",
            "usage x 2",
            "usage 1 -2",
        ] {
            assert_eq!(parse_notification(old), None, "{old}");
        }
    }
}
