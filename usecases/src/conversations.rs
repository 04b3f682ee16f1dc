//! Starting a conversation within the plan's `max_conversations`, decided on the command
//! side and race-free across every process: under the owner's lock, the owner's live
//! conversations are counted in the log (committed events, not a read model that may lag),
//! and the start runs before the lock is given back. 30 concurrent starts with room for 20
//! start exactly 20, on one instance or several.

use std::future::Future;

use aggregates::plan::Plan;
use eventstore::{locks, log};
use uuid::Uuid;

use crate::usage::limit_reached;
use crate::{Core, Error};

/// Run `start` (the command starting a conversation for `owner`) if `plan` leaves room for
/// one more; [`Error::LimitReached`] (`conversations`) otherwise. No plan configured: no
/// limit.
pub async fn start_within_plan<T, F, Fut>(
    core: &Core,
    owner: Uuid,
    plan: Option<&Plan>,
    start: F,
) -> Result<T, Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    let Some(plan) = plan else {
        return Ok(start().await);
    };
    let lock = locks::lock_queued(&core.pool, &format!("chronicle:conversations:{owner}")).await?;
    let decided = async {
        let live = log::live_conversations(&core.pool, owner).await?;
        if live >= plan.max_conversations {
            return Err(limit_reached(
                plan,
                "conversations",
                plan.max_conversations,
                live,
                None,
            ));
        }
        Ok(start().await)
    }
    .await;
    lock.release().await;
    decided
}
