//! Health and metrics: `/healthz`, `/health`, `/health/live` (the process answers),
//! `/health/ready` (PostgreSQL, NATS, relay and read-model lag, failed read models; 503
//! when not ready), `/health/detailed`, and Prometheus `/metrics`.

use std::time::Instant;

use aggregates::LogCursor;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use projections::checkpoint;
use serde::Serialize;
use utoipa::ToSchema;

use crate::envelope::{Envelope, Reply};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(live))
        .route("/health", get(live))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/health/detailed", get(detailed))
        .route("/metrics", get(metrics))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    pub status: &'static str,
}

/// The process is up and answering.
#[utoipa::path(get, path = "/health/live", operation_id = "health_live", tag = "operations",
    responses((status = 200, description = "Alive", body = Liveness)))]
pub async fn live() -> Reply<Liveness> {
    Reply::ok(Liveness { status: "ok" })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LagCheck {
    pub name: String,
    pub ok: bool,
    /// `running`, `failed` or `rebuilding` (read models); `running` for the relay.
    pub status: String,
    #[schema(value_type = String)]
    pub position: LogCursor,
    /// Readable events in the log after `position`.
    pub lag_events: i64,
    /// Age of the oldest of them.
    pub lag_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_applied: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_event_id: Option<uuid::Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthReport {
    /// `ok` or `failing`.
    pub status: &'static str,
    pub postgres: Check,
    pub nats: Check,
    pub relay: Option<LagCheck>,
    pub projections: Vec<LagCheck>,
}

impl HealthReport {
    pub fn ready(&self) -> bool {
        self.postgres.ok
            && self.nats.ok
            && self.relay.as_ref().is_some_and(|r| r.ok)
            && self.projections.iter().all(|p| p.ok)
    }
}

/// Look at every part of the pipeline.
pub async fn inspect(state: &AppState) -> HealthReport {
    let started = Instant::now();
    let pg = sqlx::query_scalar::<_, i32>("select 1")
        .fetch_one(&state.pool)
        .await;
    let postgres = Check {
        ok: pg.is_ok(),
        detail: pg.err().map(|e| e.to_string()),
        latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
    };
    let nats = match &state.nats {
        Some(client) => {
            let connection = client.connection_state();
            Check {
                ok: connection == async_nats::connection::State::Connected,
                detail: Some(connection.to_string()),
                latency_ms: None,
            }
        }
        None => Check {
            ok: true,
            detail: Some("not used by this process".into()),
            latency_ms: None,
        },
    };
    let max_events = state.config.ready_max_lag_events;
    let max_secs = state.config.ready_max_lag.as_secs_f64();
    let lag = |cursor: LogCursor| {
        let pool = state.pool.clone();
        async move {
            let (n, oldest) = eventstore::log::backlog(&pool, cursor)
                .await
                .unwrap_or((0, None));
            let secs = oldest
                .map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            (n, secs)
        }
    };
    let mut relay = None;
    let mut projections = vec![];
    if postgres.ok {
        if let Ok(cursor) =
            eventstore::relay_checkpoint::load(&state.pool, &state.config.relay_name).await
        {
            let (n, secs) = lag(cursor).await;
            relay = Some(LagCheck {
                name: state.config.relay_name.clone(),
                ok: n <= max_events && secs <= max_secs,
                status: "running".into(),
                position: cursor,
                lag_events: n,
                lag_seconds: secs,
                events_applied: None,
                failed_event_id: None,
                last_error: None,
            });
        }
        if let Ok(all) = checkpoint::all(&state.pool).await {
            for cp in all {
                let (n, secs) = lag(cp.cursor).await;
                projections.push(LagCheck {
                    ok: cp.status != checkpoint::FAILED && n <= max_events && secs <= max_secs,
                    name: cp.name,
                    status: cp.status,
                    position: cp.cursor,
                    lag_events: n,
                    lag_seconds: secs,
                    events_applied: Some(cp.events_applied),
                    failed_event_id: cp.failed_event_id,
                    last_error: cp.last_error,
                });
            }
        }
    }
    let mut report = HealthReport {
        status: "ok",
        postgres,
        nats,
        relay,
        projections,
    };
    if !report.ready() {
        report.status = "failing";
    }
    report
}

fn report_response(report: HealthReport) -> Response {
    let status = if report.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Envelope {
        code: status.as_u16(),
        message: status.canonical_reason().unwrap_or("").to_owned(),
        data: report,
    };
    (status, Json(body)).into_response()
}

/// Ready to serve: PostgreSQL and NATS reachable, relay and read models caught up (within
/// the configured lag), no read model failed. 503 otherwise, with the report.
#[utoipa::path(get, path = "/health/ready", operation_id = "health_ready", tag = "operations",
    responses((status = 200, description = "Ready", body = HealthReport),
              (status = 503, description = "Not ready", body = HealthReport)))]
pub async fn ready(State(state): State<AppState>) -> Response {
    report_response(inspect(&state).await)
}

/// The same report as `/health/ready`, always with every detail.
#[utoipa::path(get, path = "/health/detailed", operation_id = "health_detailed", tag = "operations",
    responses((status = 200, description = "Healthy", body = HealthReport),
              (status = 503, description = "Something is wrong", body = HealthReport)))]
pub async fn detailed(State(state): State<AppState>) -> Response {
    report_response(inspect(&state).await)
}

/// Prometheus text format. Lag gauges are measured at scrape time.
#[utoipa::path(get, path = "/metrics", operation_id = "get_metrics", tag = "operations",
    responses((status = 200, description = "Prometheus metrics", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let report = inspect(&state).await;
    metrics::gauge!("chronicle_ready").set(if report.ready() { 1.0 } else { 0.0 });
    if let Some(relay) = &report.relay {
        metrics::gauge!("chronicle_relay_lag_events").set(relay.lag_events as f64);
        metrics::gauge!("chronicle_relay_lag_seconds").set(relay.lag_seconds);
    }
    for p in &report.projections {
        let name = p.name.clone();
        metrics::gauge!("chronicle_projection_lag_events", "read_model" => name.clone())
            .set(p.lag_events as f64);
        metrics::gauge!("chronicle_projection_lag_seconds_now", "read_model" => name.clone())
            .set(p.lag_seconds);
        metrics::gauge!("chronicle_projection_failed", "read_model" => name.clone()).set(
            if p.status == checkpoint::FAILED {
                1.0
            } else {
                0.0
            },
        );
        metrics::gauge!("chronicle_projection_position", "read_model" => name)
            .set(p.position.position as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
