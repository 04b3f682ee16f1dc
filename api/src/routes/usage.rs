//! Plans and usage: `GET /api/v1/plans`, `POST /api/v1/metrics` (RecordUsage; its batch
//! form is [`crate::routes::usage_batch`]),
//! `GET /api/v1/usage`, `POST /api/v1/users/me/plan`.
//!
//! Days are UTC: usage counts towards the UTC date of its `occurred_at` (default: now), and
//! limits reset at 00:00 UTC.

use aggregates::meter::{meter_id, MeterCommand, MeterError};
use aggregates::plan::Plan;
use aggregates::user::UserCommand;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use eventstore::CommandError;
use projections::ReadModel;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::envelope::{CommandAccepted, Reply};
use crate::error::user_error;
use crate::extract::{AppJson, RequestMeta};
use crate::routes::read_your_writes::settle;
use crate::views::profile;
use crate::views::Profile;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/plans", get(plans))
        .route("/api/v1/metrics", post(record_usage))
        .route(
            "/api/v1/metrics/batch",
            post(crate::routes::usage_batch::record_usage_batch),
        )
        .route("/api/v1/usage", get(usage))
        .route("/api/v1/users/me/plan", post(change_plan))
}

/// How far back usage may be recorded, and how far ahead (clock skew).
pub(crate) const MAX_BACKDATE_DAYS: i64 = 7;
pub(crate) const MAX_AHEAD_MINUTES: i64 = 5;

/// Every plan, with its daily limits.
#[utoipa::path(get, path = "/api/v1/plans", operation_id = "list_plans", tag = "usage",
    responses((status = 200, description = "The plans", body = Vec<PlanView>)))]
pub async fn plans(State(state): State<AppState>) -> Reply<Vec<PlanView>> {
    Reply::ok(
        state
            .plans
            .plans
            .iter()
            .map(|p| PlanView::from_plan(p, p.name == state.plans.default))
            .collect(),
    )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlanView {
    pub name: String,
    pub messages_per_day: u64,
    pub tokens_per_day: u64,
    pub uploads_per_day: u64,
    pub max_conversations: u64,
    /// The plan new accounts start on.
    pub default: bool,
}

impl PlanView {
    fn from_plan(p: &Plan, default: bool) -> Self {
        Self {
            name: p.name.clone(),
            messages_per_day: p.messages_per_day,
            tokens_per_day: p.tokens_per_day,
            uploads_per_day: p.uploads_per_day,
            max_conversations: p.max_conversations,
            default,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordUsageRequest {
    /// `messages`, `tokens`, `uploads` (limited by the plan), or a custom name
    /// (lower-case, digits, `_`; counted, not limited).
    #[schema(pattern = "^[a-z][a-z0-9_]{0,63}$")]
    pub kind: String,
    /// 1 to 1,000,000,000.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub amount: u64,
    /// When it happened (default now); at most 7 days back, and not in the future.
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
}

/// Record usage. 202 with the log position; 402 `upgrade_required` (with `details`: the
/// kind, limit, used and remaining) when it would pass the plan's daily limit. The limit is
/// decided on the command side: concurrent requests cannot overshoot it.
#[utoipa::path(post, path = "/api/v1/metrics", operation_id = "record_usage", tag = "usage", security(("bearer" = [])),
    request_body(content = RecordUsageRequest, content_type = "application/json"),
    responses((status = 202, description = "Recorded", body = CommandAccepted),
              (status = 402, description = "`upgrade_required`", body = crate::error::ErrorBody),
              (status = 422, description = "Invalid kind, amount or time", body = crate::error::ErrorBody)))]
pub async fn record_usage(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    auth: AuthUser,
    AppJson(req): AppJson<RecordUsageRequest>,
) -> Result<Reply<CommandAccepted>, ApiError> {
    if req.amount == 0 || req.amount > 1_000_000_000 {
        return Err(ApiError::validation("amount", "must be 1 to 1000000000"));
    }
    let now = state.clock.now();
    let occurred_at = req.occurred_at.unwrap_or(now);
    if occurred_at > now + Duration::minutes(MAX_AHEAD_MINUTES) {
        return Err(ApiError::validation("occurred_at", "is in the future"));
    }
    if occurred_at < now - Duration::days(MAX_BACKDATE_DAYS) {
        return Err(ApiError::validation(
            "occurred_at",
            "is more than 7 days ago",
        ));
    }
    let plan = auth.plan(&state).await?;
    let day = occurred_at.date_naive();
    let limit = plan.daily_limit(&req.kind);
    let mut meta = meta;
    meta.actor_id = Some(auth.user_id.to_string());
    meta.actor_role = auth.role.clone();
    let command = MeterCommand::RecordUsage {
        user_id: auth.user_id,
        day,
        kind: req.kind.clone(),
        amount: req.amount,
        occurred_at,
        limit,
        record_id: None,
    };
    let outcome = state
        .meters
        .execute(&meter_id(auth.user_id, day), command, &meta)
        .await
        .map_err(|e| match e {
            CommandError::Domain(MeterError::LimitReached { kind, limit, used }) => {
                ApiError::UpgradeRequired {
                    message: format!(
                        "the {} plan allows {limit} {kind} a day; upgrade for more",
                        plan.name
                    ),
                    details: json!({
                        "plan": plan.name,
                        "kind": kind,
                        "limit": limit,
                        "used": used,
                        "remaining": limit.saturating_sub(used),
                        "day": day,
                    }),
                }
            }
            CommandError::Domain(MeterError::Invalid { field, message }) => {
                ApiError::validation(field, message)
            }
            CommandError::Conflict => {
                ApiError::Conflict("usage was recorded concurrently; try again".into())
            }
            e @ (CommandError::Store(_) | CommandError::Unavailable(_)) => e.into(),
        })?;
    Ok(Reply {
        status: StatusCode::ACCEPTED,
        data: CommandAccepted {
            position: outcome.cursor,
        },
        position: outcome.cursor,
        lagging: vec![],
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KindUsage {
    pub kind: String,
    pub used: i64,
    /// The plan's daily limit (null: not limited).
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DayUsage {
    pub day: NaiveDate,
    pub kinds: Vec<KindUsage>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    #[schema(value_type = PlanView)]
    pub plan: serde_json::Value,
    /// Today (UTC), every limited kind and any other recorded today.
    pub today: DayUsage,
    /// The last 30 days (today included), newest first; days without usage are left out.
    pub days: Vec<DayUsage>,
}

fn kind_usage(plan: &Plan, kind: &str, used: i64) -> KindUsage {
    let limit = plan.daily_limit(kind);
    KindUsage {
        kind: kind.to_owned(),
        used,
        limit,
        remaining: limit.map(|l| l.saturating_sub(used.max(0) as u64)),
    }
}

/// My usage today and per day for the last 30 days, against my plan. Honours
/// `X-Min-Position` (send the position a `POST /metrics` answered with).
#[utoipa::path(get, path = "/api/v1/usage", operation_id = "get_usage", tag = "usage", security(("bearer" = [])),
    params(("X-Min-Position" = Option<String>, Header, description = "Wait until usage has reached this log cursor")),
    responses((status = 200, description = "My usage", body = UsageReport)))]
pub async fn usage(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Reply<UsageReport>, ApiError> {
    let plan = auth.plan(&state).await?;
    let today = state.clock.now().date_naive();
    let rows =
        projections::usage::for_user(&state.pool, auth.user_id, today - Duration::days(29)).await?;
    let mut days: Vec<DayUsage> = vec![];
    for r in &rows {
        match days.last_mut() {
            Some(d) if d.day == r.day => d.kinds.push(kind_usage(&plan, &r.kind, r.total)),
            _ => days.push(DayUsage {
                day: r.day,
                kinds: vec![kind_usage(&plan, &r.kind, r.total)],
            }),
        }
    }
    let mut today_kinds: Vec<KindUsage> = ["messages", "tokens", "uploads"]
        .iter()
        .map(|k| {
            let used = rows
                .iter()
                .find(|r| r.day == today && r.kind == *k)
                .map(|r| r.total)
                .unwrap_or(0);
            kind_usage(&plan, k, used)
        })
        .collect();
    for r in rows
        .iter()
        .filter(|r| r.day == today && plan.daily_limit(&r.kind).is_none())
    {
        today_kinds.push(kind_usage(&plan, &r.kind, r.total));
    }
    Ok(Reply::ok(UsageReport {
        plan: serde_json::to_value(PlanView::from_plan(&plan, plan.name == state.plans.default))
            .unwrap_or_default(),
        today: DayUsage {
            day: today,
            kinds: today_kinds,
        },
        days,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePlanRequest {
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F\u2028\u2029]*$"
    )]
    pub plan: String,
}

/// Move to another plan; its limits apply to the next request.
#[utoipa::path(post, path = "/api/v1/users/me/plan", operation_id = "change_plan", tag = "usage", security(("bearer" = [])),
    request_body(content = ChangePlanRequest, content_type = "application/json"),
    responses((status = 200, description = "The profile on the new plan", body = Profile),
              (status = 422, description = "No such plan", body = crate::error::ErrorBody)))]
pub async fn change_plan(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    auth: AuthUser,
    AppJson(req): AppJson<ChangePlanRequest>,
) -> Result<Reply<Profile>, ApiError> {
    if state.plans.get(&req.plan).is_none() {
        let known: Vec<&str> = state.plans.plans.iter().map(|p| p.name.as_str()).collect();
        return Err(ApiError::validation(
            "plan",
            format!("is not a plan (known: {})", known.join(", ")),
        ));
    }
    let mut meta = meta;
    meta.actor_id = Some(auth.user_id.to_string());
    meta.actor_role = auth.role.clone();
    let outcome = state
        .users
        .execute(
            &auth.user_id.to_string(),
            UserCommand::ChangePlan { plan: req.plan },
            &meta,
        )
        .await
        .map_err(user_error)?;
    // the next RecordUsage reads the plan from the read model: wait for it
    let lagging = settle(&state, outcome.cursor, &[ReadModel::Users]).await;
    let mut reply = Reply::ok(profile(&state, auth.user_id).await?);
    reply.position = outcome.cursor;
    reply.lagging = lagging;
    Ok(reply)
}
