//! Usage per user, per UTC day, per kind (`usage_daily`), and the queries `/api/v1/usage`
//! and the admin totals run. Guarded by each meter's sequence (`usage_meters`).

use aggregates::meter::{MeterEvent, AGGREGATE_TYPE};
use aggregates::user::{self, UserEvent};
use chrono::NaiveDate;
use eventstore::StoredEvent;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::ProjectionError;

pub async fn apply(conn: &mut PgConnection, event: &StoredEvent) -> Result<(), ProjectionError> {
    if event.aggregate_type == user::AGGREGATE_TYPE {
        return apply_user(conn, event).await;
    }
    if event.aggregate_type != AGGREGATE_TYPE {
        return Ok(());
    }
    let meter_event: MeterEvent = serde_json::from_value(event.payload.clone())
        .map_err(|e| ProjectionError::poison(event, format!("payload: {e}")))?;
    let sequence = event.sequence as i64;
    let last: Option<i64> =
        sqlx::query_scalar("select last_sequence from usage_meters where meter_id = $1")
            .bind(&event.aggregate_id)
            .fetch_optional(&mut *conn)
            .await?;
    match last {
        Some(last) if last >= sequence => return Ok(()),
        Some(last) if last != sequence - 1 => {
            return Err(ProjectionError::poison(
                event,
                format!("meter is at {last}, event is {sequence}"),
            ))
        }
        None if sequence != 1 => {
            return Err(ProjectionError::poison(
                event,
                format!("meter has no row, event is {sequence}"),
            ))
        }
        _ => {}
    }
    match meter_event {
        MeterEvent::UsageRecorded {
            user_id,
            day,
            kind,
            amount,
            ..
        } => {
            sqlx::query(
                "insert into usage_daily (user_id, day, kind, total, records) values ($1, $2, $3, $4, 1) \
                 on conflict (user_id, day, kind) do update \
                 set total = usage_daily.total + excluded.total, records = usage_daily.records + 1",
            )
            .bind(user_id)
            .bind(day)
            .bind(&kind)
            .bind(amount as i64)
            .execute(&mut *conn)
            .await?;
        }
    }
    sqlx::query(
        "insert into usage_meters (meter_id, last_sequence) values ($1, $2) \
         on conflict (meter_id) do update set last_sequence = excluded.last_sequence",
    )
    .bind(&event.aggregate_id)
    .bind(sequence)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Usage is not personal on its own, but it is the user's: it goes with the account.
async fn apply_user(conn: &mut PgConnection, event: &StoredEvent) -> Result<(), ProjectionError> {
    let user_event: UserEvent = serde_json::from_value(event.payload.clone())
        .map_err(|e| ProjectionError::poison(event, format!("payload: {e}")))?;
    match user_event {
        UserEvent::UserErased { .. } => {
            let user_id: Uuid = event
                .aggregate_id
                .parse()
                .map_err(|e| ProjectionError::poison(event, format!("aggregate id: {e}")))?;
            sqlx::query("delete from usage_daily where user_id = $1")
                .bind(user_id)
                .execute(&mut *conn)
                .await?;
        }
        UserEvent::UserRegistered { .. }
        | UserEvent::DuplicateRegistrationAttempted { .. }
        | UserEvent::EmailVerificationRequested { .. }
        | UserEvent::EmailVerificationCodeRejected { .. }
        | UserEvent::EmailVerified { .. }
        | UserEvent::FailedLoginsCleared { .. }
        | UserEvent::LoginFailed { .. }
        | UserEvent::PasswordResetRequested { .. }
        | UserEvent::PasswordResetCodeRejected { .. }
        | UserEvent::PasswordReset { .. }
        | UserEvent::PasswordChanged { .. }
        | UserEvent::ProfileUpdated { .. }
        | UserEvent::AvatarChanged { .. }
        | UserEvent::PlanChanged { .. }
        | UserEvent::RoleChanged { .. }
        | UserEvent::UserDeactivated { .. }
        | UserEvent::UserReactivated {}
        | UserEvent::EmailChanged { .. } => {}
    }
    Ok(())
}

pub async fn clear(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("delete from usage_daily")
        .execute(&mut *conn)
        .await?;
    sqlx::query("delete from usage_meters")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DailyUsage {
    pub day: NaiveDate,
    pub kind: String,
    pub total: i64,
    pub records: i64,
}

/// A user's usage from `since` (inclusive), newest day first.
pub async fn for_user<'e>(
    db: impl PgExecutor<'e>,
    user_id: Uuid,
    since: NaiveDate,
) -> Result<Vec<DailyUsage>, sqlx::Error> {
    sqlx::query_as(
        "select day, kind, total, records from usage_daily where user_id = $1 and day >= $2 \
         order by day desc, kind",
    )
    .bind(user_id)
    .bind(since)
    .fetch_all(db)
    .await
}

/// Everyone's usage per day and kind from `since` (for admins).
pub async fn totals<'e>(
    db: impl PgExecutor<'e>,
    since: NaiveDate,
) -> Result<Vec<DailyUsage>, sqlx::Error> {
    sqlx::query_as(
        "select day, kind, sum(total)::bigint as total, sum(records)::bigint as records from usage_daily \
         where day >= $1 group by day, kind order by day desc, kind",
    )
    .bind(since)
    .fetch_all(db)
    .await
}
