//! Following every read model's checkpoint, so that a request can wait until the read
//! models it reads have reached a cursor (read-your-writes).
//!
//! One task per process LISTENs on `chronicle_checkpoints` (the projector NOTIFYs in the
//! transaction that moves a checkpoint, delivered at commit, with the read model's name and
//! its new cursor: [`checkpoint::notification`]) and also re-reads the table on a short
//! timer and whenever the listener (re)connects, because a notification is lost while it
//! is away. Notifications of one read model arrive in the order of their commits (its
//! checkpoint row is locked by each), so the latest one is the checkpoint.

use std::collections::HashMap;
use std::time::Duration;

use aggregates::LogCursor;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{checkpoint, ReadModel};

const POLL_EVERY: Duration = Duration::from_millis(250);

/// The latest known cursor of every read model.
#[derive(Clone, Debug)]
pub struct CheckpointWatch {
    rx: watch::Receiver<HashMap<String, LogCursor>>,
}

/// Why a wait ended without the cursor being reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the read models have not reached the cursor yet")]
pub struct NotReached;

impl CheckpointWatch {
    /// Start following checkpoints; the task ends when `stop` is cancelled.
    pub fn spawn(pool: PgPool, stop: CancellationToken) -> Self {
        let (tx, rx) = watch::channel(HashMap::new());
        tokio::spawn(async move {
            let mut listener: Option<PgListener> = None;
            let mut read_table = true;
            let mut last_read = tokio::time::Instant::now();
            loop {
                if listener.is_none() {
                    listener = match PgListener::connect_with(&pool).await {
                        Ok(mut l) => match l.listen("chronicle_checkpoints").await {
                            Ok(()) => Some(l),
                            Err(_) => None,
                        },
                        Err(_) => None,
                    };
                    read_table = true;
                }
                if read_table || last_read.elapsed() >= POLL_EVERY {
                    if let Ok(all) = checkpoint::all(&pool).await {
                        let map: HashMap<String, LogCursor> =
                            all.into_iter().map(|c| (c.name, c.cursor)).collect();
                        tx.send_if_modified(|cur| {
                            if *cur != map {
                                *cur = map;
                                true
                            } else {
                                false
                            }
                        });
                        read_table = false;
                    }
                    last_read = tokio::time::Instant::now();
                }
                let woke = async {
                    match listener.as_mut() {
                        Some(l) => l.try_recv().await.map_err(|_| ()),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => break,
                    r = woke => match r {
                        Ok(Some(n)) => match checkpoint::parse_notification(n.payload()) {
                            Some((name, cursor)) => {
                                // one queued from before the last table read says less
                                tx.send_if_modified(|cur| {
                                    if cur.get(name).is_some_and(|c| *c >= cursor) {
                                        return false;
                                    }
                                    cur.insert(name.to_owned(), cursor);
                                    true
                                });
                            }
                            None => read_table = true,
                        },
                        // the connection was lost and is being made again
                        Ok(None) => read_table = true,
                        Err(_) => listener = None,
                    },
                    _ = tokio::time::sleep_until(last_read + POLL_EVERY) => {}
                }
            }
        });
        Self { rx }
    }

    /// The latest cursor of one read model.
    pub fn current(&self, model: ReadModel) -> Option<LogCursor> {
        self.rx.borrow().get(model.name()).copied()
    }

    /// Wait until every read model in `models` has reached `cursor`, for at most `timeout`.
    pub async fn wait_for(
        &self,
        models: &[ReadModel],
        cursor: LogCursor,
        timeout: Duration,
    ) -> Result<(), NotReached> {
        let mut rx = self.rx.clone();
        let reached = |m: &HashMap<String, LogCursor>| {
            models
                .iter()
                .all(|model| m.get(model.name()).is_some_and(|c| *c >= cursor))
        };
        let outcome = tokio::time::timeout(timeout, rx.wait_for(reached))
            .await
            .map(|r| r.is_ok());
        match outcome {
            Ok(true) => Ok(()),
            _ => Err(NotReached),
        }
    }
}
