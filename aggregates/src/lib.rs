//! Chronicle's domain: aggregates, their commands and events, and the types every other
//! crate shares about the log (the cursor, the request metadata, the stream envelope).
//!
//! This crate is pure: it decides which events a command produces and how an event changes
//! an aggregate, and does no IO. Anything a decision needs from the outside world reaches it
//! through a narrow `Services` trait or as data in the command.
//!
//! # Layout
//! - [`cursor`]: [`LogCursor`], the place of an event in the log's global order.
//! - [`metadata`]: [`EventMetadata`], who caused an event, from where, in which request.
//! - [`envelope`]: [`StreamEnvelope`], the JSON document every event travels in on NATS.
//! - [`event`]: [`Event`], every event of every aggregate as one type, decoded once by
//!   whatever decides on the log.
//! - [`user`]: the `user` aggregate: an account, its verification, password and sign-in rules.
//! - [`session`]: the `session` aggregate: one sign-in, its refresh-token rotation.
//! - [`conversation`]: the `conversation` aggregate: a conversation and its messages.
//! - [`meter`]: the `meter` aggregate: one user's usage on one day, against the plan.
//! - [`plan`]: plans and their daily limits (configuration, not code).
//! - [`api_key`]: the `api_key` aggregate: an admin API key (only its hash is kept).
//! - [`text`]: which characters a value sent by a person may hold (NUL never).
//! - [`email_probe`]: the `email_probe` aggregate: anonymous attempts on an address with no
//!   account, so that known and unknown addresses leave the same trace.
//! - [`describe`]: one readable line per stored event, for audit trails.
//! - [`catalog`]: the event catalogue (descriptions, examples, JSON Schemas) that
//!   `docs/EVENT-CATALOG.md` and `docs/schemas/` are generated from.

pub mod api_key;
pub mod catalog;
pub mod conversation;
pub mod cursor;
pub mod describe;
pub mod email_probe;
pub mod envelope;
pub mod event;
pub mod metadata;
pub mod meter;
pub mod plan;
pub mod session;
pub mod text;
pub mod upload;
pub mod user;

pub use cursor::LogCursor;
pub use envelope::StreamEnvelope;
pub use event::Event;
pub use metadata::EventMetadata;
