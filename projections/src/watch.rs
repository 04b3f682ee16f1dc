//! Following every read model's checkpoint, so that a request can wait until the read
//! models it reads have reached a cursor (read-your-writes).
//!
//! One task per process LISTENs on `chronicle_checkpoints` (the projector NOTIFYs in the
//! transaction that moves a checkpoint, delivered at commit) and also re-reads the table on
//! a short timer, because a notification is lost while the listener reconnects.

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
            loop {
                if listener.is_none() {
                    listener = match PgListener::connect_with(&pool).await {
                        Ok(mut l) => match l.listen("chronicle_checkpoints").await {
                            Ok(()) => Some(l),
                            Err(_) => None,
                        },
                        Err(_) => None,
                    };
                }
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
                }
                let woke = async {
                    match listener.as_mut() {
                        Some(l) => l.try_recv().await.map(|_| ()).map_err(|_| ()),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => break,
                    r = woke => if r.is_err() { listener = None; },
                    _ = tokio::time::sleep(POLL_EVERY) => {}
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
