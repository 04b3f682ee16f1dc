//! Chronicle, the binary's library: configuration, telemetry, and [`Application`], the one
//! build path shared by `main` and the end-to-end tests (`build` → `port` →
//! `run_until_stopped`).
//!
//! # Layout
//! - [`config`]: [`Config`] from the environment, validated at start.
//! - [`telemetry`]: JSON logs and the Prometheus recorder.
//! - [`app`]: [`Application`] and [`Roles`]: which parts run in this process.
//! - [`server`]: the HTTP server loop: connection limit, header, body and keep-alive
//!   timeouts, an accept loop that survives running out of descriptors.
//! - [`seed`]: the admin account from `ADMIN_EMAIL` / `ADMIN_PASSWORD`.
//! - [`events_cli`]: `chronicle events export|import|tail`, the log from a terminal.
//! - [`env_help`]: the environment each command reads, for its `--help`.
//! - [`admin_cli`]: `chronicle admin ...`, the admin operations from a terminal.
//! - [`dev_services`]: in development, a private PostgreSQL and NATS when none is reachable.

pub mod admin_cli;
pub mod app;
pub mod config;
pub mod dev_services;
pub mod env_help;
pub mod events_cli;
pub mod memory;
pub mod seed;
pub mod server;
pub mod telemetry;

pub use app::{Application, Role, Roles};
pub use config::Config;
