//! The OpenAPI document at `/openapi.json`, and Swagger UI at `/docs` (its assets ship
//! inside the binary: it works with no internet).
//!
//! # Layout
//! - [`ApiDoc`]: what utoipa generates from the handlers' annotations (each says what is
//!   its own: its body, its data, the statuses only it answers).
//! - [`contract`]: the pass that adds what operations share (envelopes, common statuses,
//!   headers, security, the control-character rule); [`document`] is the result, served
//!   as it is and printed by `chronicle openapi`.

pub mod contract;

use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::routes::{
    auth, conversations, health, live, me, password, privacy, sessions, usage, usage_batch, users,
};
use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Chronicle",
        description = "An event-sourced backend for accounts, usage and messages. Every response is an envelope `{code, message, data}`; errors add `error` (a stable kind) and, for validation, `fields`. Commands answer with `data.position` (and `X-Position`), a cursor into the event log; send it back as `X-Min-Position` on a GET to read your own writes."
    ),
    paths(
        auth::register,
        auth::resend_verification,
        auth::verify_email,
        auth::verify_link,
        sessions::login,
        sessions::refresh,
        sessions::logout,
        sessions::logout_all,
        sessions::introspect,
        password::forgot_password,
        password::reset_password,
        me::get_me,
        me::patch_me,
        me::change_password,
        me::put_avatar,
        me::list_sessions,
        me::revoke_session,
        privacy::erase_me,
        privacy::history,
        privacy::export,
        usage::plans,
        usage::record_usage,
        usage_batch::record_usage_batch,
        usage::usage,
        usage::change_plan,
        conversations::list,
        conversations::create,
        conversations::get_one,
        conversations::rename,
        conversations::delete_one,
        conversations::bulk_delete,
        conversations::messages::list_messages,
        conversations::messages::post_message,
        conversations::messages::get_message,
        conversations::messages::edit_message,
        conversations::messages::delete_message,
        live::stream,
        crate::routes::chat::chat,
        crate::routes::uploads::upload,
        crate::routes::uploads::list,
        crate::routes::uploads::get_one,
        crate::routes::uploads::content,
        crate::routes::uploads::delete_one,
        users::status,
        users::avatar,
        health::live,
        health::ready,
        health::detailed,
        health::metrics,
        crate::routes::admin::users::list,
        crate::routes::admin::users::create,
        crate::routes::admin::users::read,
        crate::routes::admin::users::update,
        crate::routes::admin::users::erase,
        crate::routes::admin::users::set_role,
        crate::routes::admin::users::deactivate,
        crate::routes::admin::users::reactivate,
        crate::routes::admin::users::end_all_sessions,
        crate::routes::admin::users::end_session,
        crate::routes::admin::audit::history,
        crate::routes::admin::insight::stats,
        crate::routes::admin::insight::projections_report,
        crate::routes::admin::insight::rebuild,
        crate::routes::admin::live::live,
        crate::routes::admin::export::export,
    ),
    components(schemas(
        crate::error::ErrorBody,
        crate::error::UpgradeDetails,
        crate::routes::admin::users::Role,
        crate::routes::admin::users::UserStatus,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Registration and sign-in"),
        (name = "users", description = "Accounts"),
        (name = "me", description = "The signed-in user's own account"),
        (name = "conversations", description = "Conversations and messages (owner only), and their live stream"),
        (name = "uploads", description = "Files I store (counted as usage)"),
        (name = "usage", description = "Plans, usage metering and limits (days are UTC)"),
        (name = "operations", description = "Health and metrics"),
        (name = "admin", description = "Running the service and auditing users (role admin, or an admin API key in X-Admin-Key)"),
    )
)]
pub struct ApiDoc;

/// The `bearer` security scheme (JWT access tokens).
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_key",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    "X-Admin-Key",
                    "An admin API key made with `chronicle admin api-key create`",
                ),
            )),
        );
    }
}

/// The document as served: utoipa's, completed by the [`contract`] pass.
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    contract::apply(&mut doc);
    doc
}

/// The document, pretty-printed (`chronicle openapi`).
pub fn document_json() -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(&document())
}

pub fn router() -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", document()))
}
