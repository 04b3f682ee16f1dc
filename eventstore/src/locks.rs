//! Cluster-wide locks (PostgreSQL advisory locks), each held on a connection of its own so
//! that nothing else run on the pool can release it by accident, and so that closing the
//! connection — [`AdvisoryLock::release`], or dropping it, or the process dying — always
//! releases it.

use sqlx::{Connection, PgConnection, PgPool};

/// A held lock; release it with [`AdvisoryLock::release`] (dropping it releases it too,
/// when the connection closes).
pub struct AdvisoryLock(PgConnection);

/// Wait for the lock named `key` (`chronicle:admins`, `chronicle:user:<id>`) across every
/// process on the database.
pub async fn lock(pool: &PgPool, key: &str) -> Result<AdvisoryLock, sqlx::Error> {
    let mut conn = pool.acquire().await?.detach();
    sqlx::query("select pg_advisory_lock(hashtext($1))")
        .bind(key)
        .execute(&mut conn)
        .await?;
    Ok(AdvisoryLock(conn))
}

impl AdvisoryLock {
    pub async fn release(self) {
        let _ = self.0.close().await;
    }
}

/// How many in-process queues [`lock_queued`] spreads keys over: also the most
/// connections a process holds outside its pool for such locks.
const STRIPES: usize = 8;

static LOCAL: std::sync::LazyLock<Vec<tokio::sync::Mutex<()>>> =
    std::sync::LazyLock::new(|| (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect());

/// [`lock`], with the waiters of one process queued in the process first: however many
/// requests of one process want `key` at once, one of them holds a connection waiting on
/// PostgreSQL, so a burst on one key cannot use up the pool.
pub async fn lock_queued(pool: &PgPool, key: &str) -> Result<QueuedLock, sqlx::Error> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let local = LOCAL[(h.finish() as usize) % STRIPES].lock().await;
    let global = lock(pool, key).await?;
    Ok(QueuedLock {
        global,
        _local: local,
    })
}

/// A lock held in this process and across processes (see [`lock_queued`]).
pub struct QueuedLock {
    global: AdvisoryLock,
    _local: tokio::sync::MutexGuard<'static, ()>,
}

impl QueuedLock {
    pub async fn release(self) {
        self.global.release().await;
    }
}
