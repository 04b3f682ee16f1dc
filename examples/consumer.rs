//! A consumer of Chronicle's event stream, as another team would write one: a durable
//! JetStream pull consumer that reads from the start of the stream, from a stream
//! sequence, or from a time, acknowledges each message after handling it, and counts the
//! events by type. Run it with
//!
//! ```sh
//! cargo run --example consumer -- --from start
//! cargo run --example consumer -- --from 2026-11-22T10:00:00Z --durable reports
//! cargo run --example consumer -- --from seq:1500
//! ```
//!
//! It stops when no message has arrived for `--idle` seconds (a real worker would keep
//! going). A durable consumer remembers what was acknowledged: run it again with the same
//! `--durable` and it resumes where it stopped. `docs/CONSUMERS.md` explains the choices.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use futures::StreamExt;
use serde::Deserialize;

/// The part of Chronicle's envelope this consumer needs (docs/EVENTS.md has all of it).
#[derive(Debug, Deserialize)]
pub struct Envelope {
    pub event_id: String,
    pub cursor: String,
    pub event_type: String,
}

/// Where to start reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum From {
    Start,
    Sequence(u64),
    Time(time::OffsetDateTime),
}

impl std::str::FromStr for From {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "start" {
            return Ok(From::Start);
        }
        if let Some(n) = s.strip_prefix("seq:") {
            return n
                .parse()
                .map(From::Sequence)
                .map_err(|e| format!("seq: {e}"));
        }
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(From::Time)
            .map_err(|e| format!("expected start, seq:<n> or an RFC 3339 time: {e}"))
    }
}

/// What a run saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub by_type: BTreeMap<String, u64>,
    pub total: u64,
    /// The last cursor handled: a consumer that also reads exports can continue from it.
    pub last_cursor: Option<String>,
}

/// Read `stream` through the durable consumer `durable` from `from`, acknowledging every
/// message, until none arrives for `idle`.
pub async fn count(
    nats_url: &str,
    stream: &str,
    durable: &str,
    from: From,
    idle: Duration,
) -> Result<Counts, Box<dyn std::error::Error + Send + Sync>> {
    let client = async_nats::connect(nats_url).await?;
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream.get_stream(stream).await?;
    let deliver_policy = match from {
        From::Start => DeliverPolicy::All,
        From::Sequence(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
        From::Time(start_time) => DeliverPolicy::ByStartTime { start_time },
    };
    let consumer = stream
        .get_or_create_consumer(
            durable,
            pull::Config {
                durable_name: Some(durable.to_owned()),
                deliver_policy,
                ack_policy: AckPolicy::Explicit,
                // redeliver what was not acknowledged within 30 s (a crash mid-message)
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await?;
    let mut counts = Counts::default();
    let mut seen = std::collections::HashSet::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(idle)
            .messages()
            .await?;
        let mut got = 0;
        while let Some(message) = batch.next().await {
            let message = message?;
            got += 1;
            let envelope: Envelope = serde_json::from_slice(&message.payload)?;
            // redeliveries happen (at-least-once): the event id makes handling idempotent
            if seen.insert(envelope.event_id.clone()) {
                *counts.by_type.entry(envelope.event_type).or_default() += 1;
                counts.total += 1;
                counts.last_cursor = Some(envelope.cursor);
            }
            message.ack().await?;
        }
        if got == 0 {
            return Ok(counts);
        }
    }
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut from = From::Start;
    let mut durable = "example-consumer".to_owned();
    let mut idle = Duration::from_secs(2);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--from" => from = value.parse()?,
            "--durable" => durable = value,
            "--idle" => idle = Duration::from_secs(value.parse()?),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let stream = std::env::var("CHRONICLE_STREAM").unwrap_or_else(|_| "CHRONICLE_EVENTS".into());
    let counts = count(&url, &stream, &durable, from, idle).await?;
    for (event_type, n) in &counts.by_type {
        println!("{n:>10}  {event_type}");
    }
    println!(
        "{:>10}  events in all; last cursor {:?}",
        counts.total, counts.last_cursor
    );
    Ok(())
}
