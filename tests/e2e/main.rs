//! End-to-end tests: the whole application on a random port against the real PostgreSQL
//! and NATS of the machine. Each test gets its own database and its own stream and subject
//! prefix, so tests run in parallel. Logs are silent unless `TEST_LOG` is set.
//!
//! One test binary (modules below) keeps link time down.

mod own_postgres;
mod support;
mod uploads;
mod usage;
mod usage_batch;

mod admin;
mod assistant;
mod auth;
mod console;
mod conversations;
mod database_blips;
mod dev_default;
mod docs;
mod enumeration;
mod event_log;
mod fake_model;
mod generated_client;
mod hostile_input;
mod http_contract;
mod idempotency;
mod mailer;
mod operations;
mod pipeline;
mod privacy;
mod resilience;
mod scale_out;
mod secrets_sealed;
mod slow_clients;
mod smtp_sink;
mod startup;
mod test_command;
mod two_instances;
mod versioning;
