//! How many events of each type the log holds (`event_type_counts`). It spans every
//! aggregate, so it is guarded by the checkpoint pair alone: applying an event twice would
//! count it twice, which the tests check never happens.

use chrono::{DateTime, Utc};
use eventstore::StoredEvent;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};

use crate::ProjectionError;

pub async fn apply(conn: &mut PgConnection, event: &StoredEvent) -> Result<(), ProjectionError> {
    sqlx::query(
        "insert into event_type_counts (aggregate_type, event_type, count, last_recorded_at) \
         values ($1, $2, 1, $3) on conflict (aggregate_type, event_type) do update \
         set count = event_type_counts.count + 1, \
             last_recorded_at = greatest(event_type_counts.last_recorded_at, excluded.last_recorded_at)",
    )
    .bind(&event.aggregate_type)
    .bind(&event.event_type)
    .bind(event.recorded_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn clear(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("delete from event_type_counts")
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EventTypeCount {
    pub aggregate_type: String,
    pub event_type: String,
    pub count: i64,
    pub last_recorded_at: DateTime<Utc>,
}

pub async fn counts<'e>(db: impl PgExecutor<'e>) -> Result<Vec<EventTypeCount>, sqlx::Error> {
    sqlx::query_as(
        "select aggregate_type, event_type, count, last_recorded_at from event_type_counts \
         order by aggregate_type, event_type",
    )
    .fetch_all(db)
    .await
}
