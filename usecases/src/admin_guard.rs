//! "Never remove the last active admin": a rule across aggregates, checked on the write
//! side under a cluster-wide advisory lock after the users read model has caught up with
//! every committed event, and held until the read model shows the change.

use aggregates::user::{ROLE_ADMIN, STATUS_ACTIVE};
use aggregates::LogCursor;
use projections::ReadModel;
use uuid::Uuid;

use crate::{Core, Error};

/// Run `change` (which may take away `target`'s admin powers) only if another active admin
/// would remain. One such change at a time in the whole deployment (an advisory lock on a
/// connection of its own, held while the users read model catches up with the change).
pub async fn with_admin_guard<F>(
    state: &Core,
    target: Uuid,
    verb: &str,
    change: F,
) -> Result<Option<LogCursor>, Error>
where
    F: std::future::Future<Output = Result<Option<LogCursor>, Error>>,
{
    let lock = eventstore::locks::lock(&state.pool, "chronicle:admins").await?;
    let outcome = guarded(state, target, verb, change).await;
    lock.release().await;
    outcome
}

async fn guarded<F>(
    state: &Core,
    target: Uuid,
    verb: &str,
    change: F,
) -> Result<Option<LogCursor>, Error>
where
    F: std::future::Future<Output = Result<Option<LogCursor>, Error>>,
{
    users_caught_up(state, None).await?;
    let row = projections::users::by_id(&state.pool, target)
        .await?
        .ok_or_else(|| Error::NotFound("no such user".into()))?;
    if row.role == ROLE_ADMIN && row.status == STATUS_ACTIVE {
        let others = projections::users::active_admins_except(&state.pool, target).await?;
        if others == 0 {
            return Err(Error::Conflict(format!(
                "cannot {verb} the last active admin; make another admin first"
            )));
        }
    }
    let cursor = change.await?;
    // Hold the lock until the read model shows the change. If it does not in time, the
    // change stands (it is committed); the next guarded change waits for it before it
    // counts admins (it waits for every committed event), so it cannot be counted twice.
    if users_caught_up(state, cursor).await.is_err() {
        tracing::warn!(user.id = %target, "The users read model is behind an admin change");
    }
    Ok(cursor)
}

/// Wait until the users read model has reached `cursor` (None: every event committed so
/// far, readable or not yet: a count made after this wait includes every earlier change).
pub async fn users_caught_up(state: &Core, cursor: Option<LogCursor>) -> Result<(), Error> {
    let target = match cursor {
        Some(c) => Some(c),
        None => eventstore::log::last_committed(&state.pool).await?,
    };
    let Some(target) = target else { return Ok(()) };
    state
        .checkpoints
        .wait_for(
            &[ReadModel::Users, ReadModel::Sessions],
            target,
            state.settings.read_your_writes_timeout,
        )
        .await
        .map_err(|_| Error::NotCaughtUp)
}
