//! Erasing a user, wherever it is asked for (the user's own `DELETE /api/v1/users/me`, an
//! admin's delete, `chronicle admin`): record `UserErased`, delete the user's key (every
//! sealed copy of their personal data becomes unreadable), release their email, wait until
//! the read models have scrubbed them, and delete their files unless someone else stored
//! the same bytes.

use aggregates::user::{UserCommand, ROLE_ADMIN};
use aggregates::{EventMetadata, LogCursor};
use projections::ReadModel;
use uuid::Uuid;

use crate::admin_guard::with_admin_guard;
use crate::{Core, Error};

/// Erase `user_id`; `requested_by` is `user` or `admin` (it is in the event).
pub async fn erase_user(
    state: &Core,
    user_id: Uuid,
    requested_by: &str,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, Error> {
    let avatar = projections::users::by_id(&state.pool, user_id)
        .await?
        .and_then(|u| u.avatar_sha256);
    let outcome = state
        .users
        .execute(
            &user_id.to_string(),
            UserCommand::EraseUser {
                requested_by: requested_by.to_owned(),
            },
            meta,
        )
        .await?;
    state.keys.erase(user_id).await?;
    eventstore::email_claims::release_all(&state.pool, user_id).await?;
    state
        .settle(
            outcome.cursor,
            &[
                ReadModel::Users,
                ReadModel::Sessions,
                ReadModel::Conversations,
                ReadModel::Uploads,
            ],
        )
        .await;
    let files = &state.settings.data_dir;
    if let Some(sha) = avatar.filter(|s| is_file_name(s)) {
        if projections::users::count_with_avatar(&state.pool, &sha).await? == 0 {
            let _ = tokio::fs::remove_file(files.join("avatars").join(&sha)).await;
        }
    }
    // uploaded files go too, unless another user stored the same bytes
    for sha in projections::uploads::hashes_of(&state.pool, user_id).await? {
        if is_file_name(&sha)
            && !projections::uploads::kept_by_others(&state.pool, &sha, user_id).await?
        {
            let _ = tokio::fs::remove_file(files.join("uploads").join(&sha)).await;
        }
    }
    tracing::info!(user.id = %user_id, requested_by, "Erased a user");
    Ok(outcome.cursor)
}

/// A user erasing themselves, confirming with their password when the account has one.
/// The last active admin may not: nobody could administer.
pub async fn erase_self(
    state: &Core,
    user_id: Uuid,
    password: Option<String>,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, Error> {
    let user = state.users.load(&user_id.to_string()).await?;
    if let Some(hash) = &user.password_hash {
        let given = password.ok_or(Error::InvalidCredentials)?;
        if !state.passwords.verify(given, hash.clone()).await? {
            return Err(Error::InvalidCredentials);
        }
    }
    let is_admin = projections::users::by_id(&state.pool, user_id)
        .await?
        .is_some_and(|u| u.role == ROLE_ADMIN);
    if is_admin {
        with_admin_guard(state, user_id, "delete", async {
            erase_user(state, user_id, "user", meta).await
        })
        .await
    } else {
        erase_user(state, user_id, "user", meta).await
    }
}

/// A stored file is named by its SHA-256 in hex: anything else is never a path to delete.
fn is_file_name(sha: &str) -> bool {
    !sha.is_empty() && sha.chars().all(|c| c.is_ascii_hexdigit())
}
