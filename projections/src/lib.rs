//! Chronicle's read models. Each lives in one module: the tables it owns (created by the
//! workspace migrations), how an event changes them, and the queries the API runs. The API
//! never writes SQL against a read model.
//!
//! Every read model is idempotent: it keeps its checkpoint (the log cursor, a
//! `(transaction_id, position)` pair) in `projection_checkpoints`, written in the same
//! transaction as its rows, and skips what is at or before it.
//!
//! # Layout
//! - [`read_model`]: [`ReadModel`], the list of read models and the dispatch to each.
//! - [`decoded`]: an event decoded once into `aggregates::Event`, and the sequence guard.
//! - [`checkpoint`]: reading, locking and moving a read model's checkpoint.
//! - [`users`]: accounts (`users` table); the status query.
//! - [`sessions`]: sign-ins (`sessions` table), checked on every authenticated request.
//! - [`usage`]: usage per user, day and kind.
//! - [`conversations`]: conversations and messages; the live stream's notifications.
//! - [`event_stats`]: how many events of each type the log holds.
//! - [`rebuild`]: replaying a read model from the log.
//! - [`watch`]: following every checkpoint, for read-your-writes.

pub mod checkpoint;
pub mod conversations;
pub mod decoded;
pub mod event_stats;
pub mod feed;
pub mod read_model;
pub mod rebuild;
pub mod sessions;
pub mod uploads;
pub mod usage;
pub mod users;
pub mod watch;

pub use checkpoint::Checkpoint;
pub use decoded::Decoded;
pub use read_model::{ProjectionError, ReadModel};
pub use watch::CheckpointWatch;
