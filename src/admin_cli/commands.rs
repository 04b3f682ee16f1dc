//! What `chronicle admin` takes on its command line (clap).

use clap::{Args, Subcommand};
use uuid::Uuid;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user (with a password, or an invitation mail to choose one).
    #[command(after_help = crate::env_help::ADMIN)]
    CreateUser {
        #[arg(long)]
        email: String,
        /// The password (visible to other local users in the process list: prefer
        /// --password-stdin). Without either, the user gets an invitation mail.
        #[arg(long, conflicts_with = "password_stdin")]
        password: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Create the account verified (no verification mail).
        #[arg(long)]
        verify: bool,
        /// user or admin
        #[arg(long, default_value = "user")]
        role: String,
        /// The plan (the configured default when absent).
        #[arg(long)]
        plan: Option<String>,
        /// The display name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Switch a user off: no sign-in, every session revoked.
    #[command(after_help = crate::env_help::ADMIN)]
    DeactivateUser {
        #[arg(long)]
        email: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Switch a deactivated user back on.
    #[command(after_help = crate::env_help::ADMIN)]
    ReactivateUser {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        out: Output,
    },
    /// List users, newest first.
    #[command(after_help = crate::env_help::ADMIN)]
    ListUsers {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// pending_verification, active, disabled or erased
        #[arg(long)]
        status: Option<String>,
        /// user or admin
        #[arg(long)]
        role: Option<String>,
        /// A part of the email or name.
        #[arg(long)]
        q: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Give a user the role user or admin.
    #[command(after_help = crate::env_help::ADMIN)]
    SetRole {
        #[arg(long)]
        email: String,
        #[arg(long)]
        role: String,
        #[command(flatten)]
        out: Output,
    },
    /// A user's audit trail as a timeline: who did what, when, from where.
    #[command(after_help = crate::env_help::ADMIN)]
    UserHistory {
        #[arg(long)]
        email: String,
        /// At most this many entries (the latest ones).
        #[arg(long, default_value_t = 200)]
        limit: u32,
        #[command(flatten)]
        out: Output,
    },
    /// Admin API keys (for `X-Admin-Key`).
    #[command(after_help = crate::env_help::ADMIN)]
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Make a key; it is printed once and never stored (only its hash is).
    #[command(after_help = crate::env_help::ADMIN)]
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        out: Output,
    },
    /// Every key, with when it was last used.
    #[command(after_help = crate::env_help::ADMIN)]
    List {
        #[command(flatten)]
        out: Output,
    },
    /// Revoke a key: it stops working at once.
    #[command(after_help = crate::env_help::ADMIN)]
    Revoke {
        /// The key's id (from `list`).
        id: Uuid,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Debug, Clone, Copy, Args)]
pub struct Output {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}
