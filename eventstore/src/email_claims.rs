//! One account per email, enforced on the command side in PostgreSQL.
//!
//! Registration claims the normalised email for a fresh user id *before* it appends
//! `UserRegistered`; the primary key on `email_claims` decides concurrent registrations.
//! If the append then fails, the claim is released. If the process dies between claim and
//! append, the claim points at a user with no events: such a claim, once older than
//! [`STALE_AFTER_SECS`], is taken over by the next registration.

use sqlx::PgPool;
use uuid::Uuid;

/// How old a claim without events must be before another registration may take it over.
pub const STALE_AFTER_SECS: i64 = 300;

/// The result of trying to claim an email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The email is now ours, for this user id.
    Claimed,
    /// The email belongs to this (existing or registering) user.
    TakenBy(Uuid),
}

pub async fn claim(pool: &PgPool, email: &str, user_id: Uuid) -> Result<Claim, sqlx::Error> {
    let inserted = sqlx::query(
        "insert into email_claims (email, user_id) values ($1, $2) on conflict (email) do nothing",
    )
    .bind(email)
    .bind(user_id)
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::Claimed);
    }
    // Someone holds it. Take it over only if that claim never led to an account.
    let taken_over = sqlx::query(
        "update email_claims c set user_id = $2, claimed_at = now() \
         where c.email = $1 and c.claimed_at < now() - make_interval(secs => $3) \
         and not exists (select 1 from events e where e.aggregate_type = 'user' \
                         and e.aggregate_id = c.user_id::text)",
    )
    .bind(email)
    .bind(user_id)
    .bind(STALE_AFTER_SECS as f64)
    .execute(pool)
    .await?;
    if taken_over.rows_affected() == 1 {
        return Ok(Claim::Claimed);
    }
    let owner: Option<Uuid> =
        sqlx::query_scalar("select user_id from email_claims where email = $1")
            .bind(email)
            .fetch_optional(pool)
            .await?;
    match owner {
        Some(owner) => Ok(Claim::TakenBy(owner)),
        // Released between our two statements: try once more from the start.
        None => Box::pin(claim(pool, email, user_id)).await,
    }
}

/// Give a claim back (the append it was for failed).
pub async fn release(pool: &PgPool, email: &str, user_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("delete from email_claims where email = $1 and user_id = $2")
        .bind(email)
        .bind(user_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// The user an email belongs to (or is being registered for), if any. This is the
/// command side's own table, so it knows an account the moment it is registered.
pub async fn owner(pool: &PgPool, email: &str) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("select user_id from email_claims where email = $1")
        .bind(email)
        .fetch_optional(pool)
        .await
}

/// Release every claim of `user_id` (their account is erased).
pub async fn release_all(pool: &PgPool, user_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("delete from email_claims where user_id = $1")
        .bind(user_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Release every claim of `user_id` but the one of `keep` (the email they have now).
pub async fn release_all_but(pool: &PgPool, user_id: Uuid, keep: &str) -> Result<(), sqlx::Error> {
    sqlx::query("delete from email_claims where user_id = $1 and email <> $2")
        .bind(user_id)
        .bind(keep)
        .execute(pool)
        .await?;
    Ok(())
}
