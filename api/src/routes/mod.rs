//! One module per resource, each with its `router()`.

pub mod auth;
pub mod health;
pub mod read_your_writes;
pub mod users;
