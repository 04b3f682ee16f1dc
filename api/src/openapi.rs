//! The OpenAPI document (generated from the handlers by utoipa) at `/openapi.json`, and
//! Swagger UI at `/docs` (its assets ship inside the binary: it works with no internet).

use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::routes::{auth, health, users};
use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Chronicle",
        description = "An event-sourced backend for accounts, usage and messages. Every response is an envelope `{code, message, data}`; errors add `error` (a stable kind) and, for validation, `fields`. Commands answer with `data.position` (and `X-Position`), a cursor into the event log; send it back as `X-Min-Position` on a GET to read your own writes."
    ),
    paths(
        auth::register,
        users::status,
        health::live,
        health::ready,
        health::detailed,
        health::metrics,
    ),
    components(schemas(crate::error::ErrorBody)),
    tags(
        (name = "auth", description = "Registration and sign-in"),
        (name = "users", description = "Accounts"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

pub fn router() -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
}
