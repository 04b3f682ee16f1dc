//! One module per resource, each with its `router()`.

pub mod admin;
pub mod auth;
pub mod chat;
pub mod console;
pub mod conversations;
pub mod health;
pub mod live;
pub mod me;
pub mod password;
pub mod privacy;
pub mod read_your_writes;
pub mod sessions;
pub mod uploads;
pub mod usage;
pub mod usage_batch;
pub mod users;
