//! Usage against a plan: a user's plan, counting one thing (a message, an upload) against
//! its daily limit before it is accepted, the day's tokens left, and recording what a
//! model's reply used (the chat route and the assistant worker alike).
//!
//! The limit is checked before the model is called (no tokens left: no call). A reply can
//! still use more than what was left; its tokens are then recorded up to the limit only,
//! because the meter never passes a plan's limit: the day is used up, and the next
//! message is refused before the model is called.

use aggregates::meter::{meter_id, Meter, MeterCommand, MeterError, KIND_TOKENS};
use aggregates::plan::{Plan, Plans};
use aggregates::{EventMetadata, LogCursor};
use chrono::{DateTime, NaiveDate, Utc};
use eventstore::{CommandBus, CommandError};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{Core, Error};

/// The plan of this name, or the default one for a name the configuration no longer has
/// (None only when no plan is configured at all).
pub fn plan_named(plans: &Plans, name: &str) -> Option<Plan> {
    plans
        .get(name)
        .or_else(|| plans.get(&plans.default))
        .cloned()
}

/// The user's plan from the users read model (the default plan when the user or their plan
/// is unknown; a plan allowing nothing when none is configured).
pub async fn plan_of(pool: &PgPool, plans: &Plans, user: Uuid) -> Result<Plan, sqlx::Error> {
    let name = projections::users::by_id(pool, user)
        .await?
        .map(|u| u.plan)
        .unwrap_or_else(|| plans.default.clone());
    Ok(plan_named(plans, &name).unwrap_or(Plan {
        name,
        messages_per_day: 0,
        tokens_per_day: 0,
        uploads_per_day: 0,
        max_conversations: 0,
    }))
}

/// A limit of `plan` reached: what the caller is told (the API's 402 `upgrade_required`).
pub fn limit_reached(
    plan: &Plan,
    kind: &str,
    limit: u64,
    used: u64,
    day: Option<NaiveDate>,
) -> Error {
    Error::LimitReached {
        plan: plan.name.clone(),
        kind: kind.to_owned(),
        limit,
        used,
        day,
    }
}

/// Count one of `kind` (messages, uploads...) for `user` on `plan` against its daily limit,
/// before the thing is accepted: [`Error::LimitReached`] when the day's allowance is used up
/// (concurrent calls cannot pass it: the meter decides).
pub async fn charge(
    state: &Core,
    user: Uuid,
    plan: &Plan,
    kind: &str,
    meta: &EventMetadata,
) -> Result<(), Error> {
    let now = state.clock.now();
    let day = now.date_naive();
    let command = MeterCommand::RecordUsage {
        user_id: user,
        day,
        kind: kind.into(),
        amount: 1,
        occurred_at: now,
        limit: plan.daily_limit(kind),
        record_id: None,
    };
    match state
        .meters
        .execute(&meter_id(user, day), command, meta)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => Err(meter_error(e, plan, Some(day))),
    }
}

/// How a refused meter command is told.
pub fn meter_error(e: CommandError<MeterError>, plan: &Plan, day: Option<NaiveDate>) -> Error {
    Error::command(e, "usage was recorded concurrently", |e| match e {
        MeterError::LimitReached { kind, limit, used } => {
            limit_reached(plan, &kind, limit, used, day)
        }
        MeterError::Invalid { field, message } => Error::invalid(field, message),
    })
}

/// [`Error::LimitReached`] when `user` has no tokens left on `now`'s day: the model is not
/// called.
pub async fn require_tokens_left(
    meters: &CommandBus<Meter>,
    user: Uuid,
    plan: &Plan,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let limit = plan.daily_limit(KIND_TOKENS);
    let day = now.date_naive();
    match left(meters, user, now, limit).await {
        Ok(Some(0)) => {
            let limit = limit.unwrap_or(0);
            Err(limit_reached(plan, KIND_TOKENS, limit, limit, Some(day)))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(meter_error(e, plan, Some(day))),
    }
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

/// Record `tokens` used by `user` at `now`, up to `limit`: a reply can use more than was
/// left, and the meter never passes the limit, so the day is then used up. Returns what
/// was recorded and the cursor of its event.
pub async fn record(
    meters: &CommandBus<Meter>,
    user: Uuid,
    now: DateTime<Utc>,
    tokens: u64,
    limit: Option<u64>,
    metadata: &EventMetadata,
) -> Result<(u64, Option<LogCursor>), CommandError<MeterError>> {
    let day = now.date_naive();
    let mut amount = tokens;
    loop {
        if amount == 0 {
            return Ok((0, None));
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
            Ok(outcome) => return Ok((amount, outcome.cursor)),
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
