//! Chronicle's HTTP API (axum): command and query handlers, the error envelope,
//! extractors, middleware, health, metrics and the OpenAPI document.
//!
//! Commands go through [`eventstore::CommandBus`]; queries read read models through the
//! query functions of [`projections`] only, never the event log.
//!
//! # Layout
//! - [`state`]: [`AppState`] and [`ApiConfig`], what every handler can reach.
//! - [`auth`]: access and refresh tokens, the [`auth::AuthUser`] extractor, cookies,
//!   password policy, rate limits.
//! - [`clock`]: the injectable clock commands take their `now` from (the use cases').
//! - [`idempotency`]: the `Idempotency-Key` middleware for every POST.
//! - [`error`]: [`ApiError`], the one error type, and its envelope (the error policy).
//! - [`envelope`]: the success envelope and command answers (`data.position`, `X-Position`).
//! - [`extract`]: extractors that turn bad input into our 4xx envelope (JSON, forms, query
//!   strings, request metadata, `X-Min-Position`).
//! - [`clean_input`]: control characters (NUL above all) refused in every path, query,
//!   header and body string, with 422 naming the field.
//! - [`middleware`]: request ids, HTTP metrics, and the envelope for errors axum makes itself.
//! - [`views`]: how read model rows are shown (a profile, a user to admins).
//! - [`routes`]: one module per resource, each with its `router()`: extract, call a use
//!   case (`usecases`) or a read model query (`projections`), reply.
//! - [`openapi`]: the OpenAPI document and Swagger UI.

pub mod auth;
pub mod clean_input;
pub use usecases::clock;
pub mod envelope;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod views;

pub use error::ApiError;
pub use state::{ApiConfig, AppState};

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// The whole HTTP app.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    let cors = middleware::cors(&state.config.allowed_origins);
    let production = state.config.app_env == "production";
    let idempotency_state = state.clone();
    let min_position_state = state.clone();
    Router::new()
        .merge(routes::auth::router())
        .merge(routes::sessions::router())
        .merge(routes::password::router())
        .merge(routes::me::router(state.config.avatar_max_bytes))
        .merge(routes::privacy::router())
        .merge(routes::usage::router())
        .merge(routes::conversations::router())
        .merge(routes::live::router())
        .merge(routes::chat::router())
        .merge(routes::uploads::router(state.config.upload_max_bytes))
        .merge(routes::users::router())
        .merge(routes::admin::router())
        .merge(routes::health::router())
        .merge(openapi::router())
        .merge(routes::console::router())
        // route_layer: the route template (MatchedPath) is known only inside the router
        .route_layer(axum::middleware::from_fn(middleware::http_metrics))
        .fallback(middleware::not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(
            middleware::envelope_for_bare_errors,
        ))
        .layer(axum::middleware::from_fn_with_state(
            min_position_state,
            routes::read_your_writes::min_position,
        ))
        .layer(axum::middleware::from_fn(clean_input::middleware))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn_with_state(
            idempotency_state,
            idempotency::middleware,
        ))
        .layer(axum::middleware::from_fn(middleware::security_headers))
        .layer(axum::middleware::from_fn(
            move |mut req: axum::extract::Request, next: axum::middleware::Next| {
                if production {
                    req.extensions_mut().insert(middleware::Production);
                }
                next.run(req)
            },
        ))
        .layer(CompressionLayer::new())
        .layer(cors)
        .layer(TraceLayer::new_for_http().make_span_with(middleware::request_span))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}
