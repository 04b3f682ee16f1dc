//! `/api/v1/admin/users`: list, create, read, change, deactivate, erase (the audit trail
//! of one user is in [`super::audit`]).

use aggregates::LogCursor;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::Router;
use projections::sessions::SessionRow;
use projections::users::{UserFilter, UserSort};
use projections::ReadModel;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::Admin;
use crate::envelope::Reply;
use crate::extract::{from_json, AppJson, AppQuery};
use crate::routes::read_your_writes::settle;
use crate::views::AdminUser;
use crate::{ApiError, AppState};
use usecases::accounts::{self, NewUser, UserChanges};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/users", get(list).post(create))
        .route(
            "/api/v1/admin/users/{id}",
            get(read).patch(update).delete(erase),
        )
        .route("/api/v1/admin/users/{id}/role", put(set_role))
        .route("/api/v1/admin/users/{id}/deactivate", post(deactivate))
        .route("/api/v1/admin/users/{id}/reactivate", post(reactivate))
        .route(
            "/api/v1/admin/users/{id}/sessions",
            delete(end_all_sessions),
        )
        .route(
            "/api/v1/admin/users/{id}/sessions/{session_id}",
            delete(end_session),
        )
}

/// A user as admins see them: the profile the user sees, and a little more.
/// A role (documentation of the values `role` takes).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Admin,
}

/// An account's status (documentation of the values `status` takes).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    PendingVerification,
    Active,
    Disabled,
    Erased,
}

pub(super) fn user_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound("no such user".into()))
}

async fn admin_user(state: &AppState, id: Uuid) -> Result<AdminUser, ApiError> {
    projections::users::by_id(&state.pool, id)
        .await?
        .map(AdminUser::from)
        .ok_or_else(|| ApiError::NotFound("no such user".into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1-based (default 1).
    #[param(minimum = 1, maximum = 1_000_000)]
    pub page: Option<u32>,
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub per_page: Option<u32>,
    /// A part of the email or display name, any case.
    #[param(max_length = 200)]
    pub q: Option<String>,
    /// `pending_verification`, `active`, `disabled` or `erased`.
    #[param(pattern = "^(pending_verification|active|disabled|erased)$")]
    pub status: Option<String>,
    /// `user` or `admin`.
    #[param(pattern = "^(user|admin)$")]
    pub role: Option<String>,
    pub plan: Option<String>,
    /// `created`, `last_login` or `email`; a leading `-` for descending (default `-created`).
    #[param(pattern = "^-?(created|last_login|email)$")]
    pub sort: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<AdminUser>,
    pub page: u32,
    pub per_page: u32,
    pub total: i64,
}

pub(super) fn page_of(
    page: Option<u32>,
    per_page: Option<u32>,
    max: u32,
) -> Result<(u32, u32), ApiError> {
    let page = crate::extract::page_number(page)?;
    let per_page = per_page.unwrap_or(50);
    if !(1..=max).contains(&per_page) {
        return Err(ApiError::validation(
            "per_page",
            format!("must be 1 to {max}"),
        ));
    }
    Ok((page, per_page))
}

pub(super) fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Users, filtered, sorted and paginated, with the total that match.
#[utoipa::path(get, path = "/api/v1/admin/users", operation_id = "list_users", tag = "admin",
    security(("bearer" = []), ("admin_key" = [])),
    params(ListQuery, ("X-Min-Position" = Option<String>, Header, description = "Wait until the read model has reached this log cursor")),
    responses((status = 200, description = "A page of users", body = UserPage),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    AppQuery(q): AppQuery<ListQuery>,
) -> Result<Reply<UserPage>, ApiError> {
    let (page, per_page) = page_of(q.page, q.per_page, 200)?;
    let sort = non_empty(q.sort).unwrap_or_else(|| "-created".into());
    let (descending, key) = match sort.strip_prefix('-') {
        Some(k) => (true, k),
        None => (false, sort.as_str()),
    };
    let sort = match key {
        "created" => UserSort::Created,
        "last_login" => UserSort::LastLogin,
        "email" => UserSort::Email,
        _ => {
            return Err(ApiError::validation(
                "sort",
                "must be created, last_login or email, with an optional leading -",
            ))
        }
    };
    let q_text = crate::extract::search_text(q.q.as_deref(), 200)?.map(str::to_owned);
    if q_text.as_ref().is_some_and(|t| t.chars().count() > 200) {
        return Err(ApiError::validation("q", "must be at most 200 characters"));
    }
    let filter = UserFilter {
        q: q_text,
        status: non_empty(q.status),
        role: non_empty(q.role),
        plan: non_empty(q.plan),
        sort,
        descending,
        limit: per_page as i64,
        offset: (page as i64 - 1) * per_page as i64,
    };
    let (rows, total) = projections::users::search(&state.pool, &filter).await?;
    Ok(Reply::ok(UserPage {
        items: rows.into_iter().map(AdminUser::from).collect(),
        page,
        per_page,
        total,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// Without one the user is invited: a mail with a link to choose a password.
    #[serde(default)]
    #[schema(min_length = 10, max_length = 128)]
    pub password: Option<String>,
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F\u2028\u2029]*$"
    )]
    pub display_name: Option<String>,
    /// `user` (default) or `admin`.
    #[serde(default)]
    #[schema(value_type = Option<Role>)]
    pub role: Option<String>,
    /// The default plan when absent.
    #[serde(default)]
    pub plan: Option<String>,
    /// Already verified: no verification mail (default false).
    #[serde(default)]
    pub verified: bool,
}

/// What an admin's change answers with.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserChanged {
    #[schema(value_type = Option<String>)]
    pub position: Option<LogCursor>,
    /// The user afterwards (absent once erased).
    pub user: Option<AdminUser>,
}

async fn changed(
    state: &AppState,
    id: Uuid,
    cursor: Option<LogCursor>,
    status: StatusCode,
) -> Result<Reply<UserChanged>, ApiError> {
    let lagging = settle(state, cursor, &[ReadModel::Users, ReadModel::Sessions]).await;
    let user = projections::users::by_id(&state.pool, id)
        .await?
        .map(AdminUser::from);
    Ok(Reply {
        status,
        data: UserChanged {
            position: cursor,
            user,
        },
        position: cursor,
        lagging,
    })
}

/// Create a user: verified or not, with a role, with a password or an invitation mail.
#[utoipa::path(post, path = "/api/v1/admin/users", operation_id = "create_user", tag = "admin",
    security(("bearer" = []), ("admin_key" = [])),
    request_body = CreateUser,
    responses((status = 201, description = "Created", body = UserChanged),
              (status = 409, description = "The email has an account", body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    admin: Admin,
    AppJson(req): AppJson<CreateUser>,
) -> Result<Reply<UserChanged>, ApiError> {
    let new = NewUser {
        email: req.email,
        password: req.password,
        display_name: req.display_name,
        role: req.role,
        plan: req.plan,
        verified: req.verified,
    };
    let (id, cursor) = accounts::create_user(&state, new, &admin.meta).await?;
    changed(&state, id, cursor, StatusCode::CREATED).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserDetail {
    pub user: AdminUser,
    /// Every session, newest first.
    pub sessions: Vec<SessionRow>,
}

/// One user and their sessions.
#[utoipa::path(get, path = "/api/v1/admin/users/{id}", operation_id = "get_user", tag = "admin",
    security(("bearer" = []), ("admin_key" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = UserDetail), (status = 404, body = crate::error::ErrorBody)))]
pub async fn read(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Reply<UserDetail>, ApiError> {
    let id = user_id(&id)?;
    let user = admin_user(&state, id).await?;
    let sessions = projections::sessions::all_for_user(&state.pool, id).await?;
    Ok(Reply::ok(UserDetail { user, sessions }))
}

/// `null` and absent differ: `"display_name": null` clears it.
fn some_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// `null` clears it.
    #[serde(default, deserialize_with = "some_or_null")]
    #[schema(value_type = Option<String>)]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F\u2028\u2029]*[^\s\u0000-\u001F\u007F-\u009F\u2028\u2029][^\u0000-\u001F\u007F-\u009F\u2028\u2029]*$"
    )]
    pub display_name: Option<Option<String>>,
    #[serde(default)]
    pub plan: Option<String>,
    /// A new email: the user must verify it (a mail is sent to it).
    #[serde(default)]
    #[schema(format = Email, max_length = 254)]
    pub email: Option<String>,
}

/// Change a user's display name, plan or email.
#[utoipa::path(patch, path = "/api/v1/admin/users/{id}", operation_id = "update_user", tag = "admin",
    security(("bearer" = []), ("admin_key" = [])),
    params(("id" = Uuid, Path)), request_body = UpdateUser,
    responses((status = 200, body = UserChanged), (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "The email belongs to another account", body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    AppJson(req): AppJson<UpdateUser>,
) -> Result<Reply<UserChanged>, ApiError> {
    let id = user_id(&id)?;
    let changes = UserChanges {
        display_name: req.display_name,
        plan: req.plan,
        email: req.email,
    };
    let cursor = accounts::update_user(&state, id, changes, &admin.meta).await?;
    changed(&state, id, cursor, StatusCode::OK).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    /// `user` or `admin`.
    #[schema(value_type = Role)]
    pub role: String,
}

/// Give a user another role. The last active admin cannot be demoted (409).
#[utoipa::path(put, path = "/api/v1/admin/users/{id}/role", operation_id = "set_user_role", tag = "admin",
    security(("bearer" = []), ("admin_key" = [])),
    params(("id" = Uuid, Path)), request_body = RoleRequest,
    responses((status = 200, body = UserChanged), (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "The last active admin", body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn set_role(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    AppJson(req): AppJson<RoleRequest>,
) -> Result<Reply<UserChanged>, ApiError> {
    let id = user_id(&id)?;
    let cursor = accounts::set_role(&state, id, req.role.trim(), &admin.meta).await?;
    changed(&state, id, cursor, StatusCode::OK).await
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeactivateRequest {
    /// Why (kept in the log; up to 500 characters).
    #[serde(default)]
    #[schema(
        max_length = 500,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F\u2028\u2029]*$"
    )]
    pub reason: Option<String>,
}

/// An optional JSON body: none at all, or a JSON document.
fn optional_body<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        from_json(body)
    }
}

/// Switch a user off: they cannot sign in and every session dies at once. The last active
/// admin cannot be deactivated (409).
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/deactivate", operation_id = "deactivate_user", tag = "admin",
    security(("bearer" = []), ("admin_key" = [])),
    params(("id" = Uuid, Path)), request_body(content = Option<DeactivateRequest>),
    responses((status = 200, body = UserChanged), (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "The last active admin", body = crate::error::ErrorBody)))]
pub async fn deactivate(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Reply<UserChanged>, ApiError> {
    let id = user_id(&id)?;
    let req: DeactivateRequest = optional_body(&body)?;
    let cursor = accounts::deactivate(&state, id, req.reason, &admin.meta).await?;
    changed(&state, id, cursor, StatusCode::OK).await
}

/// Switch a deactivated user back on.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/reactivate", operation_id = "reactivate_user", tag = "admin",
    security(("bearer" = []), ("admin_key" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = UserChanged), (status = 404, body = crate::error::ErrorBody)))]
pub async fn reactivate(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Reply<UserChanged>, ApiError> {
    let id = user_id(&id)?;
    let cursor = accounts::reactivate(&state, id, &admin.meta).await?;
    changed(&state, id, cursor, StatusCode::OK).await
}

/// Delete a user: the same erasure as the owner's own (personal data unreadable
/// everywhere, email released). The last active admin cannot be deleted (409).
#[utoipa::path(delete, path = "/api/v1/admin/users/{id}", operation_id = "erase_user", tag = "admin",
    security(("bearer" = []), ("admin_key" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = UserChanged), (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "The last active admin", body = crate::error::ErrorBody)))]
pub async fn erase(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Reply<UserChanged>, ApiError> {
    let id = user_id(&id)?;
    admin_user(&state, id).await?;
    let cursor = accounts::erase(&state, id, &admin.meta).await?;
    changed(&state, id, cursor, StatusCode::OK).await
}

/// End every session of a user.
#[utoipa::path(delete, path = "/api/v1/admin/users/{id}/sessions", operation_id = "end_user_sessions", tag = "admin",
    security(("bearer" = []), ("admin_key" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = UserChanged), (status = 404, body = crate::error::ErrorBody)))]
pub async fn end_all_sessions(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Reply<UserChanged>, ApiError> {
    let id = user_id(&id)?;
    admin_user(&state, id).await?;
    let cursor = accounts::end_sessions(&state, id, None, &admin.meta).await?;
    changed(&state, id, cursor, StatusCode::OK).await
}

/// End one session of a user.
#[utoipa::path(delete, path = "/api/v1/admin/users/{id}/sessions/{session_id}", operation_id = "end_user_session", tag = "admin",
    security(("bearer" = []), ("admin_key" = [])),
    params(("id" = Uuid, Path), ("session_id" = Uuid, Path)),
    responses((status = 200, body = UserChanged), (status = 404, body = crate::error::ErrorBody)))]
pub async fn end_session(
    State(state): State<AppState>,
    admin: Admin,
    Path((id, session_id)): Path<(String, String)>,
) -> Result<Reply<UserChanged>, ApiError> {
    let id = user_id(&id)?;
    let session_id: Uuid = session_id
        .parse()
        .map_err(|_| ApiError::NotFound("no such session".into()))?;
    let cursor = accounts::end_sessions(&state, id, Some(session_id), &admin.meta).await?;
    changed(&state, id, cursor, StatusCode::OK).await
}
