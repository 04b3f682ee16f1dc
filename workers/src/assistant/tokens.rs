//! The owner's plan, the day's tokens left, and recording what a reply used.
//!
//! The limit is checked before the model is called (no tokens left: no call). A reply can
//! still use more than what was left; its tokens are then recorded up to the limit only,
//! because the meter never passes a plan's limit: the day is used up, and the next
//! message is refused before the model is called.

use aggregates::meter::{meter_id, Meter, MeterCommand, MeterError, KIND_TOKENS};
use aggregates::plan::{Plan, Plans};
use aggregates::EventMetadata;
use chrono::{DateTime, Utc};
use eventstore::{CommandBus, CommandError};
use sqlx::PgPool;
use uuid::Uuid;

/// The user's plan (the default plan when the user or their plan is unknown).
pub async fn plan_of(pool: &PgPool, plans: &Plans, user: Uuid) -> Result<Plan, sqlx::Error> {
    let name = projections::users::by_id(pool, user)
        .await?
        .map(|u| u.plan)
        .unwrap_or_else(|| plans.default.clone());
    Ok(plans
        .get(&name)
        .or_else(|| plans.get(&plans.default))
        .cloned()
        .unwrap_or(Plan {
            name,
            messages_per_day: 0,
            tokens_per_day: 0,
            uploads_per_day: 0,
            max_conversations: 0,
        }))
}

/// The tokens `user` has left on `now`'s day under `limit` (None: not limited).
pub async fn left(
    meters: &CommandBus<Meter>,
    user: Uuid,
    now: DateTime<Utc>,
    limit: Option<u64>,
) -> Result<Option<u64>, CommandError<MeterError>> {
    let Some(limit) = limit else {
        return Ok(None);
    };
    let meter = meters.load(&meter_id(user, now.date_naive())).await?;
    Ok(Some(limit.saturating_sub(meter.used(KIND_TOKENS))))
}

/// Record `tokens` used by `user` at `now`, up to `limit`. Returns what was recorded.
pub async fn record(
    meters: &CommandBus<Meter>,
    user: Uuid,
    now: DateTime<Utc>,
    tokens: u64,
    limit: Option<u64>,
    metadata: &EventMetadata,
) -> Result<u64, CommandError<MeterError>> {
    let day = now.date_naive();
    let mut amount = tokens;
    loop {
        if amount == 0 {
            return Ok(0);
        }
        let command = MeterCommand::RecordUsage {
            user_id: user,
            day,
            kind: KIND_TOKENS.into(),
            amount,
            occurred_at: now,
            limit,
            record_id: None,
        };
        match meters
            .execute(&meter_id(user, day), command, metadata)
            .await
        {
            Ok(_) => return Ok(amount),
            // the reply used more than was left: count it up to the limit
            Err(CommandError::Domain(MeterError::LimitReached { limit, used, .. }))
                if limit.saturating_sub(used) < amount =>
            {
                amount = limit.saturating_sub(used);
            }
            Err(e) => return Err(e),
        }
    }
}
