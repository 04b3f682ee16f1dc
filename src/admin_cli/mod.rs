//! `chronicle admin ...`: running the service from a terminal.
//!
//! The commands talk to the database directly (not over HTTP) and run the very use cases
//! the admin API runs (`usecases::accounts`, `usecases::api_keys`), so their events are the same and appear
//! in the same audit trails. The actor of their events is `cli:<login>` with role `system`.
//! Tables for people by default, `--json` for scripts.
//!
//! Exit codes: 0 done; 1 an unexpected failure (the database is down...); 2 bad arguments
//! or input; 3 no such user or key; 4 refused (the email is taken, the last admin, a key
//! revoked already); 5 the read models did not catch up in time (the change itself is
//! recorded).

use std::sync::Arc;

use aggregates::user::UserError;
use aggregates::EventMetadata;
use anyhow::Context;
use api::views::AdminUser;
use eventstore::crypto::KeyStore;
use eventstore::log::HistoryFilter;
use eventstore::passwords::PasswordHasher;
use eventstore::{database, CommandBus};
use projections::users::{UserFilter, UserSort};
use tokio_util::sync::CancellationToken;
use usecases::accounts::{self as ops, NewUser};
use usecases::{admin_guard, api_keys, audit, Core, Error, SystemClock};
use uuid::Uuid;

use crate::Config;

mod commands;
mod terminal;

pub use self::commands::{AdminCommand, ApiKeyCommand, Output};
use self::terminal::{print_json, print_users, read_password_line, shorten, show_user};

pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_NOT_FOUND: i32 = 3;
pub const EXIT_REFUSED: i32 = 4;
pub const EXIT_NOT_CAUGHT_UP: i32 = 5;

/// Run an admin command; the process's exit code.
pub async fn run(config: Config, command: AdminCommand) -> i32 {
    match execute(config, command).await {
        Ok(()) => 0,
        Err(CliError::UseCase(e)) => {
            let code = match &e {
                Error::Invalid { .. } | Error::User(UserError::Invalid { .. }) => EXIT_USAGE,
                Error::NotFound(_) | Error::User(UserError::NotRegistered) => EXIT_NOT_FOUND,
                Error::Conflict(_) | Error::User(UserError::AlreadyRegistered) => EXIT_REFUSED,
                Error::NotCaughtUp => EXIT_NOT_CAUGHT_UP,
                _ => EXIT_FAILURE,
            };
            let message = match &e {
                Error::NotCaughtUp => {
                    "the users read model is behind the log (is a projector running?); try again"
                        .to_owned()
                }
                other => api::error::chain(other),
            };
            eprintln!("chronicle admin: {message}");
            code
        }
        Err(CliError::Other(e)) => {
            eprintln!("chronicle admin: {e:#}");
            EXIT_FAILURE
        }
    }
}

enum CliError {
    UseCase(Error),
    Other(anyhow::Error),
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError::UseCase(e)
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::Other(e)
    }
}

impl From<sqlx::Error> for CliError {
    fn from(e: sqlx::Error) -> Self {
        CliError::Other(e.into())
    }
}

/// The use cases' core on a database connection: nothing of HTTP or NATS.
async fn state(config: &Config, stop: &CancellationToken) -> anyhow::Result<Core> {
    let pool =
        database::connect_with_timeout(&config.database.url, 4, config.database.acquire_timeout)
            .await
            .context("DATABASE_URL: cannot connect")?;
    database::migrate(&pool).await?;
    let keys = KeyStore::new(pool.clone(), config.keys.master.clone());
    let users = Arc::new(CommandBus::new(
        pool.clone(),
        keys.clone(),
        config.auth.user_policy.clone(),
    ));
    let passwords = PasswordHasher::new(config.auth.password_hash_concurrency);
    Ok(crate::app::core(
        config,
        &pool,
        &keys,
        users,
        passwords,
        Arc::new(SystemClock),
        stop,
    ))
}

/// Who is at the terminal, as the actor of the events.
fn cli_actor() -> String {
    let login = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{login}")
}

fn cli_meta() -> EventMetadata {
    let request = Uuid::now_v7().to_string();
    EventMetadata {
        user_agent: Some(format!("chronicle-cli/{}", env!("CARGO_PKG_VERSION"))),
        request_id: Some(request.clone()),
        correlation_id: Some(request.clone()),
        causation_id: Some(request),
        ..EventMetadata::system(&cli_actor())
    }
}

async fn execute(config: Config, command: AdminCommand) -> Result<(), CliError> {
    let stop = CancellationToken::new();
    let state = state(&config, &stop).await?;
    let outcome = dispatch(&state, command).await;
    stop.cancel();
    outcome
}

async fn dispatch(state: &Core, command: AdminCommand) -> Result<(), CliError> {
    let meta = cli_meta();
    match command {
        AdminCommand::CreateUser {
            email,
            password,
            password_stdin,
            verify,
            role,
            plan,
            name,
            out,
        } => {
            let password = if password_stdin {
                Some(read_password_line()?)
            } else {
                password
            };
            let new = NewUser {
                email,
                password,
                display_name: name,
                role: Some(role),
                plan,
                verified: verify,
            };
            let (id, cursor) = ops::create_user(state, new, &meta).await?;
            settled(state, cursor).await;
            show_user(state, id, out, "created").await
        }
        AdminCommand::DeactivateUser { email, reason, out } => {
            let id = ops::user_id_by_email(state, &email).await?;
            let cursor = ops::deactivate(state, id, reason, &meta).await?;
            settled(state, cursor).await;
            show_user(state, id, out, "deactivated").await
        }
        AdminCommand::ReactivateUser { email, out } => {
            let id = ops::user_id_by_email(state, &email).await?;
            let cursor = ops::reactivate(state, id, &meta).await?;
            settled(state, cursor).await;
            show_user(state, id, out, "reactivated").await
        }
        AdminCommand::SetRole { email, role, out } => {
            let id = ops::user_id_by_email(state, &email).await?;
            let cursor = ops::set_role(state, id, role.trim(), &meta).await?;
            settled(state, cursor).await;
            show_user(state, id, out, "updated").await
        }
        AdminCommand::ListUsers {
            limit,
            status,
            role,
            q,
            out,
        } => {
            if !(1..=10_000).contains(&limit) {
                return Err(Error::invalid("limit", "must be 1 to 10000").into());
            }
            let filter = UserFilter {
                q,
                status,
                role,
                plan: None,
                sort: UserSort::Created,
                descending: true,
                limit: i64::from(limit),
                offset: 0,
            };
            let (rows, total) = projections::users::search(&state.pool, &filter).await?;
            let users: Vec<AdminUser> = rows.into_iter().map(AdminUser::from).collect();
            if out.json {
                print_json(&users)?;
            } else {
                print_users(&users);
                println!("{} of {} users", users.len(), total);
            }
            Ok(())
        }
        AdminCommand::UserHistory { email, limit, out } => {
            let id = ops::user_id_by_email(state, &email).await?;
            let filter = HistoryFilter {
                newest_first: true,
                limit: i64::from(limit.clamp(1, 100_000)),
                ..HistoryFilter::default()
            };
            let (mut entries, total) = audit::trail(state, id, &filter).await?;
            entries.reverse(); // the latest `limit`, oldest first
            if out.json {
                print_json(&entries)?;
            } else {
                println!("History of {} ({id}): {total} events", email.trim());
                for e in &entries {
                    let from = match (&e.ip, &e.user_agent) {
                        (Some(ip), Some(ua)) => format!("{ip}, {}", shorten(ua, 40)),
                        (Some(ip), None) => ip.clone(),
                        (None, Some(ua)) => shorten(ua, 40),
                        (None, None) => "-".into(),
                    };
                    println!(
                        "{}  {:<30} {:<8} {:<32} {}\n{:>22}{}",
                        e.recorded_at.format("%Y-%m-%d %H:%M:%S"),
                        e.event_type,
                        e.actor.kind,
                        shorten(&e.actor.label, 32),
                        from,
                        "",
                        e.summary
                    );
                }
            }
            Ok(())
        }
        AdminCommand::ApiKey { command } => api_key(state, command, &meta).await,
    }
}

async fn api_key(
    state: &Core,
    command: ApiKeyCommand,
    meta: &EventMetadata,
) -> Result<(), CliError> {
    match command {
        ApiKeyCommand::Create { name, out } => {
            let key = api_keys::create_api_key(state, &name, &cli_actor(), meta).await?;
            if out.json {
                print_json(&key)?;
            } else {
                println!("Created API key {} ({})", key.id, key.name);
                println!("{}", key.key);
                println!("Keep it now: it is not stored and cannot be shown again.");
            }
        }
        ApiKeyCommand::List { out } => {
            let keys = api_keys::list_api_keys(state).await?;
            if out.json {
                print_json(&keys)?;
            } else {
                println!(
                    "{:<36}  {:<24} {:<8} {:<20} {:<20} created by",
                    "id", "name", "state", "created", "last used"
                );
                for k in &keys {
                    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                        t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_else(|| "-".into())
                    };
                    println!(
                        "{:<36}  {:<24} {:<8} {:<20} {:<20} {}",
                        k.id,
                        shorten(&k.name, 24),
                        if k.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        },
                        time(k.created_at),
                        time(k.last_used_at),
                        k.created_by
                    );
                }
            }
        }
        ApiKeyCommand::Revoke { id, out } => {
            let cursor = api_keys::revoke_api_key(state, id, &cli_actor(), meta).await?;
            if out.json {
                print_json(&serde_json::json!({ "id": id, "revoked": true, "position": cursor }))?;
            } else {
                println!("Revoked API key {id}");
            }
        }
    }
    Ok(())
}

/// Wait (bounded) for the read models to show a change; say so when they do not.
async fn settled(state: &Core, cursor: Option<aggregates::LogCursor>) {
    if cursor.is_some() && admin_guard::users_caught_up(state, cursor).await.is_err() {
        eprintln!(
            "chronicle admin: recorded, but the read models have not caught up yet \
             (is a projector running?)"
        );
    }
}
