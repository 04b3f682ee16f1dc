//! Leases: which process does a job that only one may do at a time (relaying the log,
//! applying one read model).
//!
//! A lease is a PostgreSQL session advisory lock named after the job. Each process keeps
//! **one** connection of its own for all its leases (not one of the pool's, so a busy pool
//! never delays a takeover). A small loop on it, every `poll` (250 ms ± 25 %):
//! - tries, in one statement, every lease it does not hold (`pg_try_advisory_lock`, which
//!   never waits, so standbys never queue on PostgreSQL: no thundering herd when the holder
//!   dies, just one cheap statement per standby per tick);
//! - otherwise checks that its connection is alive (`select 1`): a lease lives exactly as
//!   long as its session, so a dead connection means every lease of this process is gone.
//!
//! When a process dies, PostgreSQL ends its session at once (the socket closes) and frees
//! its locks; a standby holds them within one poll. A process cut off from PostgreSQL
//! notices within one poll (or a 2 s statement timeout) and stops its jobs; until then two
//! holders can overlap for a moment, which the jobs tolerate (the relay republishes under
//! the same message ids; a projector's batches lock its checkpoint row and skip what is
//! applied).
//!
//! Each lease is a [`watch::Receiver<bool>`] (true: held); [`while_held`] runs a job while
//! it is true and stops it when it turns false.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backoff::{rand_below, Backoff};

/// How often a process looks at its leases.
pub const DEFAULT_POLL: Duration = Duration::from_millis(250);

/// The longest a lease statement may take before the connection counts as lost.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);

struct Wanted {
    name: String,
    held: watch::Sender<bool>,
}

/// The leases of one process.
#[derive(Clone)]
pub struct Leases {
    wanted: Arc<Mutex<Vec<Wanted>>>,
    /// Tells the loop a lease was added (so it is tried at once).
    added: Arc<tokio::sync::Notify>,
}

impl Leases {
    /// Start the loop on a connection of its own to `pool`'s database; it ends (and frees
    /// every lease) at `stop`.
    pub fn spawn(pool: &PgPool, poll: Duration, stop: CancellationToken) -> Self {
        let leases = Self {
            wanted: Arc::default(),
            added: Arc::default(),
        };
        let options = (*pool.connect_options()).clone();
        tokio::spawn(leases.clone().keep(options, poll, stop));
        leases
    }

    /// The lease on `name` (tried from the next poll on).
    pub fn lease(&self, name: &str) -> watch::Receiver<bool> {
        let (held, receiver) = watch::channel(false);
        if let Ok(mut wanted) = self.wanted.lock() {
            wanted.push(Wanted {
                name: name.to_string(),
                held,
            });
        }
        self.added.notify_one();
        receiver
    }

    fn set(&self, f: impl Fn(&Wanted) -> bool) {
        if let Ok(wanted) = self.wanted.lock() {
            for w in wanted.iter() {
                let now = f(w);
                w.held
                    .send_if_modified(|held| std::mem::replace(held, now) != now);
            }
        }
    }

    /// The names of the leases not held.
    fn missing(&self) -> Vec<String> {
        self.wanted
            .lock()
            .map(|w| {
                w.iter()
                    .filter(|w| !*w.held.borrow())
                    .map(|w| w.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn keep(self, options: PgConnectOptions, poll: Duration, stop: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        while !stop.is_cancelled() {
            let connected = tokio::select! {
                _ = stop.cancelled() => break,
                c = tokio::time::timeout(STATEMENT_TIMEOUT, PgConnection::connect_with(&options)) => c,
            };
            let mut conn = match connected {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Leases: cannot reach PostgreSQL");
                    self.pause(&mut backoff, &stop).await;
                    continue;
                }
                Err(_) => {
                    tracing::warn!("Leases: PostgreSQL does not answer");
                    self.pause(&mut backoff, &stop).await;
                    continue;
                }
            };
            backoff.reset();
            match self.hold(&mut conn, poll, &stop).await {
                Ok(()) => {
                    // stopping: give every lease back at once rather than when the
                    // connection closes
                    let _ = tokio::time::timeout(
                        STATEMENT_TIMEOUT,
                        sqlx::query("select pg_advisory_unlock_all()").execute(&mut conn),
                    )
                    .await;
                    self.set(|_| false);
                    let _ = conn.close().await;
                    break;
                }
                Err(e) => {
                    self.set(|_| false);
                    tracing::warn!(error = %e, "Leases lost with their connection; reconnecting");
                    self.pause(&mut backoff, &stop).await;
                }
            }
        }
        self.set(|_| false);
    }

    async fn pause(&self, backoff: &mut Backoff, stop: &CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }

    /// Poll on `conn` until `stop` (`Ok`) or until the connection fails (`Err`: every
    /// lease is lost).
    async fn hold(
        &self,
        conn: &mut PgConnection,
        poll: Duration,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            let missing = self.missing();
            if missing.is_empty() {
                tokio::time::timeout(
                    STATEMENT_TIMEOUT,
                    sqlx::query("select 1").execute(&mut *conn),
                )
                .await??;
            } else {
                let got: Vec<(String, bool)> = tokio::time::timeout(
                    STATEMENT_TIMEOUT,
                    sqlx::query_as(
                        "select name, pg_try_advisory_lock(hashtextextended(name, 0)) \
                         from unnest($1::text[]) as name",
                    )
                    .bind(&missing)
                    .fetch_all(&mut *conn),
                )
                .await??;
                let won: Vec<&str> = got
                    .iter()
                    .filter(|(_, won)| *won)
                    .map(|(name, _)| name.as_str())
                    .collect();
                for name in &won {
                    tracing::info!(lease = %name, "Lease taken: this process is active");
                }
                self.set(|w| *w.held.borrow() || won.contains(&w.name.as_str()));
            }
            let quarter = (poll.as_millis() as u64 / 4).max(1);
            let wait = poll - Duration::from_millis(quarter)
                + Duration::from_millis(rand_below(2 * quarter));
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = self.added.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Run `job` whenever `lease` is held, until `stop`. The job gets a token that is
/// cancelled when the lease is lost (or at `stop`) and must return soon after; a job that
/// returns on its own while the lease is still held (an error it could not get past) is
/// started again after a backoff.
pub async fn while_held<F, Fut>(
    mut lease: watch::Receiver<bool>,
    stop: &CancellationToken,
    label: &str,
    mut job: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
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
                _ = &mut run => break !held.is_cancelled(),
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
