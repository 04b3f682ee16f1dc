//! `/api/v1/admin/stats` and `/api/v1/admin/projections`: how the service is used, and
//! how its read models are doing. Stats come from read models only (cheap to ask often).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use aggregates::LogCursor;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use chrono::Duration;
use projections::event_stats::{DailyActivity, EventTypeCount};
use projections::usage::DailyUsage;
use projections::users::CountBy;
use projections::ReadModel;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Admin;
use crate::envelope::Reply;
use crate::extract::AppQuery;
use crate::routes::health::{inspect, LagCheck};
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/stats", get(stats))
        .route("/api/v1/admin/projections", get(projections_report))
        .route("/api/v1/admin/projections/{name}/rebuild", post(rebuild))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserCounts {
    pub total: i64,
    pub by_status: BTreeMap<String, i64>,
    pub by_role: BTreeMap<String, i64>,
    pub by_plan: BTreeMap<String, i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    pub users: UserCounts,
    /// Sign-ups, sign-ins and active users per UTC day (days with none are left out).
    pub activity: Vec<DailyActivity>,
    /// How many events of each type the log holds.
    pub events_by_type: Vec<EventTypeCount>,
    /// Everyone's usage per day and kind.
    pub usage: Vec<DailyUsage>,
    /// Usage per kind over the whole period.
    pub usage_totals: BTreeMap<String, i64>,
    /// The first day the period covers.
    pub since: chrono::NaiveDate,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// How many days back activity and usage go (1 to 366, default 30).
    #[param(minimum = 1, maximum = 366)]
    pub days: Option<u32>,
}

/// Users by status, role and plan; sign-ups, sign-ins and active users per day; events
/// per type; usage per day.
#[utoipa::path(get, path = "/api/v1/admin/stats", operation_id = "get_stats", tag = "admin",
    security(("bearer" = []), ("admin_key" = [])), params(StatsQuery),
    responses((status = 200, body = Stats), (status = 403, body = crate::error::ErrorBody)))]
pub async fn stats(
    State(state): State<AppState>,
    _admin: Admin,
    AppQuery(q): AppQuery<StatsQuery>,
) -> Result<Reply<Stats>, ApiError> {
    let days = q.days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(ApiError::validation("days", "must be 1 to 366"));
    }
    let since = state.clock.now().date_naive() - Duration::days(i64::from(days) - 1);
    let count = |by| projections::users::count_by(&state.pool, by);
    let by_status: BTreeMap<String, i64> = count(CountBy::Status).await?.into_iter().collect();
    let by_role = count(CountBy::Role).await?.into_iter().collect();
    let by_plan = count(CountBy::Plan).await?.into_iter().collect();
    let usage = projections::usage::totals(&state.pool, since).await?;
    let mut usage_totals = BTreeMap::new();
    for u in &usage {
        *usage_totals.entry(u.kind.clone()).or_insert(0) += u.total;
    }
    Ok(Reply::ok(Stats {
        users: UserCounts {
            total: by_status.values().sum(),
            by_status,
            by_role,
            by_plan,
        },
        activity: projections::event_stats::activity_since(&state.pool, since).await?,
        events_by_type: projections::event_stats::counts(&state.pool).await?,
        usage,
        usage_totals,
        since,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionsReport {
    /// The last event a reader of the global order can see now.
    #[schema(value_type = Option<String>)]
    pub head: Option<LogCursor>,
    pub relay: Option<LagCheck>,
    pub projections: Vec<LagCheck>,
}

/// Each read model's position, lag (events and seconds), state and last error; the relay's.
#[utoipa::path(get, path = "/api/v1/admin/projections", operation_id = "get_projections_report", tag = "admin",
    security(("bearer" = []), ("admin_key" = [])),
    responses((status = 200, body = ProjectionsReport), (status = 403, body = crate::error::ErrorBody)))]
pub async fn projections_report(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Reply<ProjectionsReport>, ApiError> {
    let report = inspect(&state).await;
    Ok(Reply::ok(ProjectionsReport {
        head: eventstore::log::head(&state.pool).await?,
        relay: report.relay,
        projections: report.projections,
    }))
}

/// Read models being rebuilt by this process.
static REBUILDING: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

#[derive(Debug, Serialize, ToSchema)]
pub struct RebuildStarted {
    pub name: String,
    pub status: String,
}

/// Rebuild a read model from the log through shadow tables, in the background (202).
/// Readers keep the old rows until the new ones are swapped in; when it is done,
/// `GET /api/v1/admin/projections` shows the read model's `events_applied` counting from
/// the rebuild. 409 while this process rebuilds it already (another process's rebuild of
/// the same read model waits for the first: one at a time, by an advisory lock).
#[utoipa::path(post, path = "/api/v1/admin/projections/{name}/rebuild", operation_id = "rebuild_projection", tag = "admin",
    security(("bearer" = []), ("admin_key" = [])),
    params(("name" = String, Path, description = "users, sessions, usage, conversations, uploads or event_stats")),
    responses((status = 202, body = RebuildStarted), (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "Already rebuilding", body = crate::error::ErrorBody)))]
pub async fn rebuild(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Reply<RebuildStarted>, ApiError> {
    let model: ReadModel =
        name.parse()
            .map_err(|e: projections::read_model::UnknownReadModel| {
                ApiError::NotFound(e.to_string())
            })?;
    {
        let mut running = REBUILDING
            .lock()
            .map_err(|_| ApiError::internal_msg("rebuild registry poisoned"))?;
        if !running.insert(model.name()) {
            return Err(ApiError::Conflict(format!(
                "{model} is being rebuilt already"
            )));
        }
    }
    tracing::info!(read_model = %model, by = ?admin.identity, "Rebuild requested");
    let pool = state.pool.clone();
    let keys = state.keys.clone();
    tokio::spawn(async move {
        let outcome = projections::rebuild::rebuild(&pool, &keys, model, |_, _| {}).await;
        if let Err(e) = outcome {
            tracing::error!(read_model = %model, error = %e, "Rebuild failed");
        }
        if let Ok(mut running) = REBUILDING.lock() {
            running.remove(model.name());
        }
    });
    Ok(Reply::ok(RebuildStarted {
        name: model.name().to_owned(),
        status: "rebuilding".into(),
    })
    .with_status(StatusCode::ACCEPTED))
}
