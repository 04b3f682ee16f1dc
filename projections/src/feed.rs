//! Which conversations just changed, for the live stream: one LISTEN on
//! `chronicle_conversation` per process, fanned out with a broadcast channel.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::conversations::CHANNEL;

#[derive(Clone, Debug)]
pub struct ConversationFeed {
    tx: broadcast::Sender<Uuid>,
}

impl ConversationFeed {
    pub fn spawn(pool: PgPool, stop: CancellationToken) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let sender = tx.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let mut listener = match PgListener::connect_with(&pool).await {
                    Ok(l) => l,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if listener.listen(CHANNEL).await.is_err() {
                    continue;
                }
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        n = listener.recv() => match n {
                            Ok(n) => {
                                if let Ok(id) = n.payload().parse() {
                                    let _ = sender.send(id);
                                }
                            }
                            Err(_) => break, // reconnect
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.tx.subscribe()
    }
}
