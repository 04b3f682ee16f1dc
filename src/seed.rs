//! Seeding an admin from `ADMIN_EMAIL` / `ADMIN_PASSWORD` at start (idempotent: an email
//! that already has an account is left alone).
//!
//! The seeded password goes through the same policy as every account's
//! ([`api::auth::password_policy`]): production refuses a weak one (already when the
//! configuration is read), development and tests seed it with a loud warning.
//!
//! Processes starting together all run this: the email claim (a primary key) lets exactly
//! one of them register the admin; the others see the claim taken and leave it.

use aggregates::user::{User, UserCommand, ROLE_ADMIN};
use aggregates::EventMetadata;
use anyhow::Context;
use chrono::{DateTime, Utc};
use eventstore::email_claims;
use eventstore::passwords::PasswordHasher;
use eventstore::secrets::random_nonce;
use eventstore::CommandBus;
use sqlx::PgPool;
use usecases::accounts::{open_account, Opened};
use uuid::Uuid;

/// The seeded admin's display name (also a word the password policy rules out).
const DISPLAY_NAME: &str = "Admin";

/// `Err(why)` when `password` fails the policy for the admin `email` ("must be at least
/// 10 characters", ...; never the password).
pub fn password_policy(email: &str, password: &str) -> Result<(), String> {
    usecases::password_policy::check(password, email, Some(DISPLAY_NAME))
}

/// Register the admin unless the email has an account. `enforce_policy`: refuse a weak
/// password (production) instead of warning.
pub async fn admin(
    pool: &PgPool,
    users: &CommandBus<User>,
    email: &str,
    password: &str,
    plan: &str,
    now: DateTime<Utc>,
    enforce_policy: bool,
) -> anyhow::Result<()> {
    if let Err(why) = password_policy(email, password) {
        if enforce_policy {
            anyhow::bail!("ADMIN_PASSWORD is too weak: it {why}");
        }
        tracing::warn!(
            "ADMIN_PASSWORD is too weak: it {why}. The admin is seeded with it because this is \
             not production; production refuses to start with it. Change it."
        );
    }
    let email = aggregates::user::commands::normalize_email(email);
    if email_claims::owner(pool, &email).await?.is_some() {
        return Ok(());
    }
    let password_hash = PasswordHasher::new(1)
        .hash(password.to_owned())
        .await
        .context("hashing ADMIN_PASSWORD")?;
    let user_id = Uuid::now_v7();
    let command = UserCommand::RegisterUser {
        user_id,
        email: email.clone(),
        password_hash: Some(password_hash),
        display_name: Some(DISPLAY_NAME.into()),
        role: ROLE_ADMIN.to_owned(),
        plan: plan.to_owned(),
        verified: true,
        verification_nonce: random_nonce(),
        invitation: false,
        now,
    };
    let meta = EventMetadata::system("seed");
    match open_account(pool, users, &email, user_id, command, &meta).await {
        Ok(Opened::New(_)) => tracing::info!(user.id = %user_id, "Seeded the admin account"),
        // another instance seeded it meanwhile
        Ok(Opened::Taken(_)) => {}
        Err(e) => anyhow::bail!("registering the admin failed: {}", api::error::chain(&e)),
    }
    Ok(())
}
