//! Chronicle's write side and its access to the log, shared by the API and the workers so
//! that neither depends on the other (ARCHITECTURE decision 9).
//!
//! # Layout
//! - [`database`]: connecting, creating the database when it is missing, migrations.
//! - [`command_bus`]: executing commands: cqrs-es aggregates decide, queued commands of one
//!   aggregate are decided together and appended in one statement, with request metadata,
//!   conflict retry, commands with ids done at most once, and the log cursor of the result.
//! - [`log`]: reading the log in its global order, `(transaction_id, position)`, without
//!   ever skipping a slow transaction.
//! - [`email_claims`]: one account per email, enforced before the append.
//! - [`locks`]: cluster-wide advisory locks, each on a connection of its own.
//! - [`crypto`]: per-user data keys (and the system key) wrapped by the master key; sealing
//!   values.
//! - [`personal`]: which event values are personal data or secrets' derivatives and whose;
//!   sealing and opening events.
//! - [`encrypting_repository`]: postgres-es's repository with sealing on the way in and
//!   opening and upcasting on the way out; the command bus loads and seals through it.
//! - [`passwords`]: argon2id hashing on a pool of its own threads, at a lower priority.
//! - [`rate_limits`]: rate limits shared by every process (a GCRA whose state is in
//!   PostgreSQL).
//! - [`relay_checkpoint`]: where the relay has got to in the log.
//! - [`secrets`]: HMAC-derived one-time links and codes, refresh-token hashes.
//! - [`unavailable`]: telling "PostgreSQL is away for a moment" (503, retry) from a bad
//!   statement.
//! - [`upcast`]: reading events stored at an earlier version as the current version.

pub mod command_bus;
pub mod crypto;
pub mod database;
pub mod email_claims;
pub mod encrypting_repository;
mod group_commit;
pub mod locks;
pub mod log;
pub mod passwords;
pub mod personal;
pub mod rate_limits;
pub mod relay_checkpoint;
pub mod secrets;
pub mod unavailable;
pub mod upcast;

pub use command_bus::{Cause, CommandBus, CommandError, CommandOutcome};
pub use log::StoredEvent;
