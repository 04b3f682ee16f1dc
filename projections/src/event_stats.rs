//! How many events of each type the log holds (`event_type_counts`), and activity per day
//! (`daily_activity`: sign-ups, sign-ins, active users). It spans every
//! aggregate, so it is guarded by the checkpoint pair alone: applying an event twice would
//! count it twice, which the tests check never happens.

use chrono::{DateTime, NaiveDate, Utc};
use eventstore::StoredEvent;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

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
    .execute(&mut *conn)
    .await?;
    apply_activity(conn, event).await?;
    Ok(())
}

/// Sign-ups, sign-ins and active users per UTC day (`daily_activity`). A user is active on
/// a day when they caused an event that day as themselves.
async fn apply_activity(conn: &mut PgConnection, event: &StoredEvent) -> Result<(), sqlx::Error> {
    let day = event.recorded_at.date_naive();
    let (signups, logins) = match event.event_type.as_str() {
        "UserRegistered" => (1i64, 0i64),
        "SessionStarted" => (0, 1),
        _ => (0, 0),
    };
    let active = match (&event.metadata.actor_id, event.metadata.actor_role.as_str()) {
        (Some(id), "user" | "admin") => id.parse::<Uuid>().ok(),
        _ => None,
    };
    let mut newly_active = 0i64;
    if let Some(user) = active {
        newly_active = sqlx::query(
            "insert into daily_active_users (day, user_id) values ($1, $2) on conflict do nothing",
        )
        .bind(day)
        .bind(user)
        .execute(&mut *conn)
        .await?
        .rows_affected() as i64;
    }
    if signups + logins + newly_active > 0 {
        sqlx::query(
            "insert into daily_activity (day, signups, logins, active_users) values ($1, $2, $3, $4) \
             on conflict (day) do update set signups = daily_activity.signups + excluded.signups, \
             logins = daily_activity.logins + excluded.logins, \
             active_users = daily_activity.active_users + excluded.active_users",
        )
        .bind(day)
        .bind(signups)
        .bind(logins)
        .bind(newly_active)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub async fn clear(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    for table in ["event_type_counts", "daily_activity", "daily_active_users"] {
        sqlx::query(&format!("delete from {table}"))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Activity on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DailyActivity {
    pub day: NaiveDate,
    pub signups: i64,
    pub logins: i64,
    pub active_users: i64,
}

/// Activity per day from `since` (inclusive), oldest first.
pub async fn activity_since<'e>(
    db: impl PgExecutor<'e>,
    since: NaiveDate,
) -> Result<Vec<DailyActivity>, sqlx::Error> {
    sqlx::query_as(
        "select day, signups, logins, active_users from daily_activity where day >= $1 order by day",
    )
    .bind(since)
    .fetch_all(db)
    .await
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
