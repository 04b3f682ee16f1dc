//! What `chronicle admin` prints (tables for people, JSON for scripts) and reads (a
//! password on standard input).

use std::io::{IsTerminal, Read};

use api::views::AdminUser;
use serde::Serialize;
use usecases::{Core, Error};
use uuid::Uuid;

use super::{CliError, Output};

pub(super) async fn show_user(
    state: &Core,
    id: Uuid,
    out: Output,
    done: &str,
) -> Result<(), CliError> {
    let user = projections::users::by_id(&state.pool, id)
        .await?
        .map(AdminUser::from);
    match (out.json, user) {
        (true, Some(u)) => print_json(&u)?,
        (true, None) => print_json(&serde_json::json!({ "id": id }))?,
        (false, Some(u)) => {
            println!("{done} {} ({})", u.profile.email, u.profile.id);
            print_users(&[u]);
        }
        (false, None) => println!("{done} user {id}"),
    }
    Ok(())
}

pub(super) fn print_users(users: &[AdminUser]) {
    println!(
        "{:<36}  {:<32} {:<6} {:<10} {:<21} {:<17} last login",
        "id", "email", "role", "plan", "status", "created"
    );
    for u in users {
        println!(
            "{:<36}  {:<32} {:<6} {:<10} {:<21} {:<17} {}",
            u.profile.id,
            shorten(&u.profile.email, 32),
            u.profile.role,
            shorten(&u.profile.plan, 10),
            u.profile.status,
            u.profile.created_at.format("%Y-%m-%d %H:%M"),
            u.profile
                .last_login_at
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
}

pub(super) fn print_json<T: Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Other(e.into()))?;
    println!("{text}");
    Ok(())
}

pub(super) fn shorten(v: &str, max: usize) -> String {
    if v.chars().count() <= max {
        v.to_owned()
    } else {
        let mut s: String = v.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

pub(super) fn read_password_line() -> Result<String, CliError> {
    if std::io::stdin().is_terminal() {
        eprint!("Password: ");
    }
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| CliError::Other(e.into()))?;
    let line = input.lines().next().unwrap_or("").to_owned();
    if line.is_empty() {
        return Err(Error::invalid("password", "standard input held no password").into());
    }
    Ok(line)
}
