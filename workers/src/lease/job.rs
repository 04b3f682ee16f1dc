//! Jobs run under a lease: [`while_held`] starts one while its lease is held and stops it
//! when the lease is lost; a job that makes no progress for [`STUCK_AFTER`]
//! ([`Patience`]) ends [`JobEnd::Stuck`] and its process steps aside.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Lease;
use crate::backoff::Backoff;

/// How long a job may fail without progress before it ends as [`JobEnd::Stuck`].
/// Longer than a NATS stream leader's election (4–9 s), so an election is waited out.
pub const STUCK_AFTER: Duration = Duration::from_secs(15);

/// How long a process that stepped aside leaves the lease to others.
pub const STEP_ASIDE: Duration = Duration::from_secs(30);

/// How a job run under a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    /// Asked to stop (the lease lost, the process stopping), or gave up on an error it
    /// expects to get past here: started again while the lease is held.
    Stopped,
    /// It could not make progress for [`STUCK_AFTER`]: another process should try.
    Stuck,
}

/// How long a job has failed without progress, against its limit (`None`: no limit).
#[derive(Debug, Clone)]
pub struct Patience {
    limit: Option<Duration>,
    failing_since: Option<std::time::Instant>,
}

impl Patience {
    pub fn new(limit: Option<Duration>) -> Self {
        Self {
            limit,
            failing_since: None,
        }
    }

    pub fn progressed(&mut self) {
        self.failing_since = None;
    }

    /// Count a failure: whether the job has now failed for longer than its limit.
    pub fn exhausted(&mut self) -> bool {
        let since = *self
            .failing_since
            .get_or_insert_with(std::time::Instant::now);
        self.limit.is_some_and(|limit| since.elapsed() > limit)
    }
}

/// Run `job` whenever `lease` is held, until `stop`. The job gets a token that is
/// cancelled when the lease is lost (or at `stop`) and must return soon after; a job that
/// returns on its own while the lease is still held is started again after a backoff, and
/// one that ends [`JobEnd::Stuck`] makes this process step aside for [`STEP_ASIDE`].
pub async fn while_held<F, Fut>(lease: Lease, stop: &CancellationToken, label: &str, mut job: F)
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = JobEnd>,
{
    let handle = lease.clone();
    let mut lease = lease.held;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut said_standby = false;
    while !stop.is_cancelled() {
        if !*lease.borrow_and_update() {
            if !said_standby {
                tracing::info!(job = label, "Another process is active; standing by");
                said_standby = true;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                changed = lease.changed() => {
                    if changed.is_err() { break; } // the lease loop is gone: stopping
                    continue;
                }
            }
        }
        said_standby = false;
        let held = stop.child_token();
        let run = job(held.clone());
        tokio::pin!(run);
        let finished_alone = loop {
            tokio::select! {
                end = &mut run => {
                    if end == JobEnd::Stuck && !held.is_cancelled() {
                        handle.step_aside(STEP_ASIDE);
                    }
                    break !held.is_cancelled();
                }
                changed = lease.changed(), if !held.is_cancelled() => {
                    if changed.is_err() || !*lease.borrow() {
                        tracing::info!(job = label, "Lease lost: stopping");
                        held.cancel();
                    }
                }
            }
        };
        if finished_alone && !stop.is_cancelled() {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        } else {
            backoff.reset();
        }
    }
}
