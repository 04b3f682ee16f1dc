//! `POST /api/v1/metrics/batch`: up to 1,000 usage records in one request (docs/USAGE.md).
//!
//! Every record carries the caller's `id`; its event's id is derived from the user and that
//! id ([`aggregates::meter::record_event_id`]), so the log holds a record once however often
//! it is sent (a retried batch answers `duplicate` for what was accepted before). Records
//! are grouped by meter (user and UTC day) in their order; each meter's records are decided
//! one after another on one state and appended in one statement (the command bus's
//! per-aggregate batching), so a limit reached in the middle of a batch refuses exactly the
//! records past it.
//!
//! What the schema allows but a record breaks (a kind's form, the amount's range, a time
//! outside the window, a `user_id` the caller may not name) makes that record `invalid`,
//! the others go on; what the schema forbids (not an object, a field of the wrong type, more
//! than 1,000 records) refuses the whole batch with 422.

use std::collections::HashMap;

use aggregates::meter::{is_valid_kind, meter_id, MeterCommand, MeterError};
use aggregates::plan::Plan;
use aggregates::user::STATUS_ACTIVE;
use aggregates::{EventMetadata, LogCursor};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use chrono::{DateTime, Duration, Utc};
use eventstore::CommandError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::envelope::Reply;
use crate::extract::{AppJson, RequestMeta};
use crate::routes::admin::{Admin, AdminIdentity};
use crate::routes::usage::{MAX_AHEAD_MINUTES, MAX_BACKDATE_DAYS};
use crate::{ApiError, AppState};
use usecases::usage::plan_named;

/// The most records one batch may carry.
pub const MAX_RECORDS: usize = 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageBatchRequest {
    /// 1 to 1,000 records, decided in this order.
    #[schema(min_items = 1, max_items = 1000)]
    pub records: Vec<UsageRecordInput>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageRecordInput {
    /// Your id for the record: 1 to 128 letters, digits, `-`, `_`, `.` or `:`. A record
    /// whose id was accepted before (for the same user) is a `duplicate`, for as long as the
    /// log holds it: at least 24 hours, in fact for ever.
    #[schema(pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$")]
    pub id: String,
    /// `messages`, `tokens`, `uploads` (limited by the plan), or a custom name (lower-case
    /// letters, digits, `_`, starting with a letter, at most 64; counted, not limited).
    #[schema(pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$")]
    pub kind: String,
    /// 1 to 1,000,000,000 (any other integer makes the record `invalid`).
    #[serde(deserialize_with = "integer")]
    pub amount: i64,
    /// When it happened (default now); at most 7 days back, and not in the future.
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
    /// Whose usage it is: only with an admin key (`X-Admin-Key`), and then required. A
    /// signed-in user records for themself.
    #[serde(default)]
    pub user_id: Option<Uuid>,
}

/// A JSON integer as JSON Schema has it: `7` and `7.0` alike, within 64 bits.
fn integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f > i64::MIN as f64 && f < i64::MAX as f64 => Ok(f as i64),
        _ => Err(serde::de::Error::custom("must be an integer of 64 bits")),
    }
}

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    /// Counted; `position` is its event's log cursor.
    Accepted,
    /// Its id was accepted before: not counted again; `position` is the first one's.
    Duplicate,
    /// It would pass the plan's daily limit: not counted; `details` says by how much.
    UpgradeRequired,
    /// Not a valid record: not counted; `details` names the field.
    Invalid,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecordResult {
    /// The record's `id`, as sent.
    pub id: String,
    pub status: RecordStatus,
    /// The log cursor of the record's event (`accepted`, `duplicate`).
    #[schema(value_type = Option<String>, example = "00000000000002f1-0000000000000007")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<LogCursor>,
    /// Why it was not counted (`upgrade_required`: `plan`, `kind`, `limit`, `used`,
    /// `remaining`, `day`; `invalid`: `field`, `message`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageBatchResult {
    /// One per record, in the order sent.
    pub results: Vec<RecordResult>,
    pub accepted: usize,
    pub duplicates: usize,
    pub refused: usize,
    pub invalid: usize,
}

/// Who records: a signed-in user (for themself) or an admin key (for any user).
pub enum Recorder {
    User(AuthUser),
    /// The request's metadata, acting as the key.
    AdminKey(EventMetadata),
}

impl FromRequestParts<AppState> for Recorder {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if parts.headers.contains_key("x-admin-key") {
            let admin = Admin::from_request_parts(parts, state).await?;
            if let AdminIdentity::ApiKey(_) = admin.identity {
                return Ok(Recorder::AdminKey(admin.meta));
            }
        }
        Ok(Recorder::User(
            AuthUser::from_request_parts(parts, state).await?,
        ))
    }
}

fn invalid(field: &str, message: impl Into<String>) -> Value {
    json!({"field": field, "message": message.into()})
}

fn valid_record_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A record that passed the per-record checks, ready for its meter.
struct Ready {
    index: usize,
    user_id: Uuid,
    command: MeterCommand,
}

/// Record up to 1,000 usage records. 200 with one result per record, in order (`accepted`,
/// `duplicate`, `upgrade_required`, `invalid`); the `X-Position` header is the cursor of the
/// last accepted record. Retrying a batch after a 503 or a lost answer is safe: records it
/// accepted before answer `duplicate`.
#[utoipa::path(post, path = "/api/v1/metrics/batch", operation_id = "record_usage_batch", tag = "usage",
    security(("bearer" = []), ("admin_key" = [])),
    request_body(content = UsageBatchRequest, content_type = "application/json"),
    responses((status = 200, description = "Each record's result, in order", body = UsageBatchResult),
              (status = 422, description = "The batch as a whole is malformed", body = crate::error::ErrorBody)))]
pub async fn record_usage_batch(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    recorder: Recorder,
    AppJson(req): AppJson<UsageBatchRequest>,
) -> Result<Reply<UsageBatchResult>, ApiError> {
    if req.records.is_empty() || req.records.len() > MAX_RECORDS {
        return Err(ApiError::validation(
            "records",
            format!("must hold 1 to {MAX_RECORDS} records"),
        ));
    }
    let now = state.clock.now();
    let mut results: Vec<RecordResult> = req
        .records
        .iter()
        .map(|r| RecordResult {
            id: r.id.clone(),
            status: RecordStatus::Invalid,
            position: None,
            details: None,
        })
        .collect();

    // Whose plan decides each record, looked up once per user.
    let (self_id, meta) = match &recorder {
        Recorder::User(auth) => (Some(auth.user_id), meta.acting_as(auth.user_id, &auth.role)),
        Recorder::AdminKey(key_meta) => (None, key_meta.clone()),
    };
    let mut plans: HashMap<Uuid, Option<Plan>> = HashMap::new();
    if let Recorder::User(auth) = &recorder {
        plans.insert(auth.user_id, Some(auth.plan(&state).await?));
    } else {
        let named: Vec<Uuid> = req.records.iter().filter_map(|r| r.user_id).collect();
        for (id, plan) in plans_of(&state, &named).await? {
            plans.insert(id, plan);
        }
    }

    let mut ready: Vec<Ready> = vec![];
    for (index, r) in req.records.iter().enumerate() {
        let refusal = |field: &str, message: &str| Some(invalid(field, message));
        let user_id = match (self_id, r.user_id) {
            (Some(me), None) => Ok(me),
            (Some(me), Some(named)) if named == me => Ok(me),
            (Some(_), Some(_)) => Err(invalid(
                "user_id",
                "only an admin key records usage for another user",
            )),
            (None, None) => Err(invalid("user_id", "is required with an admin key")),
            (None, Some(named)) => Ok(named),
        };
        let details = match &user_id {
            Err(e) => Some(e.clone()),
            Ok(_) if !valid_record_id(&r.id) => refusal(
                "id",
                "must be 1 to 128 letters, digits, '-', '_', '.' or ':'",
            ),
            Ok(_) if !is_valid_kind(&r.kind) => refusal(
                "kind",
                "lower-case letters, digits and _ (starting with a letter), at most 64",
            ),
            Ok(_) if !(1..=1_000_000_000).contains(&r.amount) => {
                refusal("amount", "must be 1 to 1000000000")
            }
            Ok(_)
                if r.occurred_at
                    .is_some_and(|t| t > now + Duration::minutes(MAX_AHEAD_MINUTES)) =>
            {
                refusal("occurred_at", "is in the future")
            }
            Ok(_)
                if r.occurred_at
                    .is_some_and(|t| t < now - Duration::days(MAX_BACKDATE_DAYS)) =>
            {
                refusal("occurred_at", "is more than 7 days ago")
            }
            Ok(user) if !matches!(plans.get(user), Some(Some(_))) => {
                refusal("user_id", "is not an active user")
            }
            Ok(_) => None,
        };
        if let Some(details) = details {
            results[index].details = Some(details);
            continue;
        }
        let Ok(user_id) = user_id else { continue };
        let Some(Some(plan)) = plans.get(&user_id) else {
            continue;
        };
        let occurred_at = r.occurred_at.unwrap_or(now);
        let day = occurred_at.date_naive();
        ready.push(Ready {
            index,
            user_id,
            command: MeterCommand::RecordUsage {
                user_id,
                day,
                kind: r.kind.clone(),
                amount: r.amount as u64,
                occurred_at,
                limit: plan.daily_limit(&r.kind),
                record_id: Some(r.id.clone()),
            },
        });
    }

    // Each meter's records, in order, as one batch of the command bus; meters in parallel.
    let mut by_meter: Vec<(String, Vec<Ready>)> = vec![];
    let mut meter_index: HashMap<String, usize> = HashMap::new();
    for r in ready {
        let MeterCommand::RecordUsage { day, .. } = &r.command;
        let id = meter_id(r.user_id, *day);
        match meter_index.get(&id) {
            Some(&i) => by_meter[i].1.push(r),
            None => {
                meter_index.insert(id.clone(), by_meter.len());
                by_meter.push((id, vec![r]));
            }
        }
    }
    let runs = by_meter.iter().map(|(id, records)| {
        let commands: Vec<(MeterCommand, EventMetadata)> = records
            .iter()
            .map(|r| (r.command.clone(), meta.clone()))
            .collect();
        state.meters.execute_all(id, commands)
    });
    let answers = futures::future::join_all(runs).await;

    let mut failure: Option<ApiError> = None;
    for ((_, records), answers) in by_meter.iter().zip(answers) {
        for (r, answer) in records.iter().zip(answers) {
            let result = &mut results[r.index];
            match answer {
                Ok(outcome) => {
                    result.status = if outcome.duplicate {
                        RecordStatus::Duplicate
                    } else {
                        RecordStatus::Accepted
                    };
                    result.position = outcome.cursor;
                }
                Err(CommandError::Domain(MeterError::LimitReached { kind, limit, used })) => {
                    let MeterCommand::RecordUsage { day, .. } = &r.command;
                    let plan = plans
                        .get(&r.user_id)
                        .and_then(|p| p.as_ref())
                        .map(|p| p.name.clone());
                    result.status = RecordStatus::UpgradeRequired;
                    result.details = Some(json!({
                        "plan": plan,
                        "kind": kind,
                        "limit": limit,
                        "used": used,
                        "remaining": limit.saturating_sub(used),
                        "day": day,
                    }));
                }
                Err(CommandError::Domain(MeterError::Invalid { field, message })) => {
                    result.details = Some(invalid(field, message));
                }
                Err(e @ (CommandError::Store(_) | CommandError::Unavailable(_))) => {
                    failure.get_or_insert(e.into());
                }
                Err(CommandError::Conflict) => {
                    failure.get_or_insert(ApiError::Conflict(
                        "usage was recorded concurrently; send the batch again".into(),
                    ));
                }
            }
        }
    }
    // Some records could not be decided: the whole batch answers the error, and sending it
    // again is safe (what was accepted answers `duplicate`).
    if let Some(e) = failure {
        return Err(e);
    }
    let count = |s: RecordStatus| results.iter().filter(|r| r.status == s).count();
    let position = results
        .iter()
        .filter(|r| r.status == RecordStatus::Accepted)
        .filter_map(|r| r.position)
        .max();
    let data = UsageBatchResult {
        accepted: count(RecordStatus::Accepted),
        duplicates: count(RecordStatus::Duplicate),
        refused: count(RecordStatus::UpgradeRequired),
        invalid: count(RecordStatus::Invalid),
        results,
    };
    let mut reply = Reply::ok(data);
    reply.position = position;
    Ok(reply)
}

/// The plans of these users, from the users read model (`None`: not an active user).
async fn plans_of(state: &AppState, users: &[Uuid]) -> Result<Vec<(Uuid, Option<Plan>)>, ApiError> {
    if users.is_empty() {
        return Ok(vec![]);
    }
    let mut unique = users.to_vec();
    unique.sort();
    unique.dedup();
    let rows = projections::users::plans_and_statuses(&state.pool, &unique).await?;
    Ok(rows
        .into_iter()
        .map(|(id, plan, status)| {
            (
                id,
                (status == STATUS_ACTIVE)
                    .then(|| plan_named(&state.plans, &plan))
                    .flatten(),
            )
        })
        .collect())
}
