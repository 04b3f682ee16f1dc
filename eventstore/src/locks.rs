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
