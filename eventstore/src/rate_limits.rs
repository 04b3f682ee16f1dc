//! Rate limits shared by every process of a deployment: a GCRA (generic cell rate
//! algorithm, what governor runs in memory) whose state per key — its theoretical arrival
//! time, `tat` — lives in PostgreSQL's UNLOGGED `rate_limits` table, decided in one
//! statement so concurrent checks from any number of instances never let more through
//! than the quota.
//!
//! A quota of `n` per `period` lets a full bucket take `n` at once and then one every
//! `period / n`: a request at `now` is allowed when `max(tat, now) - now <= period - period/n`,
//! and moves `tat` on by `period / n`. Time is PostgreSQL's, so instances with skewed
//! clocks agree.

use std::time::Duration;

use sqlx::{PgExecutor, PgPool};

/// `n` requests per `period`, in bursts of up to `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub per_period: u32,
    pub period: Duration,
}

impl Quota {
    pub fn per_minute(n: u32) -> Self {
        Self {
            per_period: n.max(1),
            period: Duration::from_secs(60),
        }
    }

    /// The time one request uses up.
    fn emission(&self) -> Duration {
        self.period / self.per_period.max(1)
    }

    /// How far ahead of now `tat` may be for a request to pass.
    fn tolerance(&self) -> Duration {
        self.period.saturating_sub(self.emission())
    }
}

/// Count one request under `key`: `Ok(None)` when it is allowed, `Ok(Some(wait))` when it
/// is over the quota and may be retried after `wait`.
pub async fn check<'e>(
    db: impl PgExecutor<'e> + Copy,
    key: &str,
    quota: Quota,
) -> Result<Option<Duration>, sqlx::Error> {
    let emission = quota.emission().as_micros() as i64;
    let tolerance = quota.tolerance().as_micros() as i64;
    let allowed: Option<i32> = sqlx::query_scalar(
        "insert into rate_limits as r (key, tat) \
         values ($1, now() + make_interval(secs => $2::float8 / 1e6)) \
         on conflict (key) do update \
            set tat = greatest(r.tat, now()) + make_interval(secs => $2::float8 / 1e6) \
          where greatest(r.tat, now()) - now() <= make_interval(secs => $3::float8 / 1e6) \
         returning 1",
    )
    .bind(key)
    .bind(emission)
    .bind(tolerance)
    .fetch_optional(db)
    .await?;
    if allowed.is_some() {
        return Ok(None);
    }
    // refused: how long until a request fits again
    let wait_micros: Option<f64> = sqlx::query_scalar(
        "select extract(epoch from (tat - now()))::float8 * 1e6 - $2::float8 \
         from rate_limits where key = $1",
    )
    .bind(key)
    .bind(tolerance as f64)
    .fetch_optional(db)
    .await?;
    let wait = wait_micros.unwrap_or(0.0).max(0.0) as u64;
    Ok(Some(Duration::from_micros(wait)))
}

/// A full allowance for `key` again.
pub async fn forgive<'e>(db: impl PgExecutor<'e>, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("delete from rate_limits where key = $1")
        .bind(key)
        .execute(db)
        .await?;
    Ok(())
}

/// Forget the keys that are back to a full allowance (the table stays small).
pub async fn sweep(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("delete from rate_limits where tat < now()")
        .execute(pool)
        .await?
        .rows_affected())
}
