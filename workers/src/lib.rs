//! Chronicle's background workers.
//!
//! # Layout
//! - [`bus`]: the NATS connection, the stream's configuration and subjects.
//! - [`lease`]: which process does a one-at-a-time job (PostgreSQL advisory locks on one
//!   connection per process, hot standbys taking over within a poll).
//! - [`relay`]: the event store → JetStream relay (one active, holding its lease).
//! - [`projector`]: JetStream → read models, one durable pull consumer per read model, one
//!   active projector per read model (holding its lease).
//! - [`mailer`]: JetStream → mail (SMTP, or .eml files in development).
//! - [`assistant`]: JetStream → the model → replies to user messages (docs/ASSISTANT.md).
//! - [`durable`]: the durable-consumer skeleton the projector, the mailer and the
//!   assistant share.
//! - [`backoff`]: the retry delay every worker loop uses.

pub mod assistant;
pub mod backoff;
pub mod bus;
pub mod durable;
pub mod lease;
pub mod mailer;
pub mod projector;
pub mod relay;

pub use bus::{BusConfig, EventBus};
pub use projector::Projector;
pub use relay::Relay;
