//! Seeding an admin from `ADMIN_EMAIL` / `ADMIN_PASSWORD` at start (idempotent: an email
//! that already has an account is left alone).

use aggregates::user::{User, UserCommand, ROLE_ADMIN};
use aggregates::EventMetadata;
use anyhow::Context;
use chrono::{DateTime, Utc};
use eventstore::email_claims::{self, Claim};
use eventstore::passwords::PasswordHasher;
use eventstore::secrets::random_nonce;
use eventstore::CommandBus;
use sqlx::PgPool;
use uuid::Uuid;

pub async fn admin(
    pool: &PgPool,
    users: &CommandBus<User>,
    email: &str,
    password: &str,
    plan: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let email = aggregates::user::commands::normalize_email(email);
    if email_claims::owner(pool, &email).await?.is_some() {
        return Ok(());
    }
    let password_hash = PasswordHasher::new(1)
        .hash(password.to_owned())
        .await
        .context("hashing ADMIN_PASSWORD")?;
    let user_id = Uuid::now_v7();
    if email_claims::claim(pool, &email, user_id).await? != Claim::Claimed {
        return Ok(()); // another instance seeded it meanwhile
    }
    let command = UserCommand::RegisterUser {
        user_id,
        email: email.clone(),
        password_hash: Some(password_hash),
        display_name: Some("Admin".into()),
        role: ROLE_ADMIN.to_owned(),
        plan: plan.to_owned(),
        verified: true,
        verification_nonce: random_nonce(),
        invitation: false,
        now,
    };
    if let Err(e) = users
        .execute(
            &user_id.to_string(),
            command,
            &EventMetadata::system("seed"),
        )
        .await
    {
        email_claims::release(pool, &email, user_id).await?;
        anyhow::bail!("registering the admin failed: {e}");
    }
    tracing::info!(user.id = %user_id, "Seeded the admin account");
    Ok(())
}
