//! `chronicle events ...`: the event log from a terminal.
//!
//! - `export`: the log in its order (`transaction_id`, `position`), filtered like
//!   `GET /api/v1/admin/events`, as NDJSON (one stream envelope per line) or CSV, to a file
//!   or standard output, in batches (bounded memory), with a progress bar on a terminal.
//! - `import`: an NDJSON export appended to an empty log (another database): the same
//!   events, ids, sequences and times, in the same order, personal values and secrets'
//!   derivatives sealed again with that database's keys (an export made before secrets
//!   were sealed comes out sealed too). Replaying the read models there gives the same rows.
//! - `tail`: follow the NATS stream as events arrive (or from the start, or a time),
//!   personal values opened, secrets' derivatives left out.

use std::io::{BufRead, IsTerminal, Write};

use aggregates::{LogCursor, StreamEnvelope};
use anyhow::{bail, Context};
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use chrono::{DateTime, Utc};
use clap::{Subcommand, ValueEnum};
use eventstore::crypto::KeyStore;
use eventstore::{database, personal};
use futures::StreamExt;
use sqlx::PgPool;
use usecases::export::{self, ExportQuery, ExportSpec, Format, CSV_HEADER};

use crate::Config;

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Write the event log (or a filtered part of it) in its order.
    #[command(after_help = crate::env_help::DATABASE_AND_KEYS)]
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        /// ndjson (one stream envelope per line) or csv.
        #[arg(long, value_enum, default_value_t = ExportFormat::Ndjson)]
        format: ExportFormat,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
        /// Keep personal values sealed, as the log and the stream hold them.
        #[arg(long)]
        sealed: bool,
        /// Keep secrets' derivatives (password hashes...): for a copy that must work the
        /// same (`events import`). Left out by default.
        #[arg(long)]
        with_secrets: bool,
    },
    /// Append an NDJSON export to this database's log, which must be empty.
    #[command(after_help = crate::env_help::DATABASE_AND_KEYS)]
    Import {
        /// The NDJSON file (`-` for standard input).
        file: std::path::PathBuf,
    },
    /// Follow the NATS stream and print each event as it arrives.
    #[command(after_help = crate::env_help::TAIL)]
    Tail {
        /// Start from the first message the stream holds.
        #[arg(long, conflicts_with = "since")]
        from_start: bool,
        /// Start from this time (RFC 3339).
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        /// Only these event types, comma-separated.
        #[arg(long = "type")]
        types: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
        /// Print the envelopes as NDJSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Ndjson,
    Csv,
}

/// The same filters as `GET /api/v1/admin/events`.
#[derive(Debug, Clone, clap::Args)]
pub struct FilterArgs {
    /// Start after this cursor.
    #[arg(long)]
    after: Option<String>,
    /// Recorded at or after (RFC 3339).
    #[arg(long)]
    since: Option<DateTime<Utc>>,
    /// Recorded before (RFC 3339).
    #[arg(long)]
    until: Option<DateTime<Utc>>,
    /// Event types, comma-separated.
    #[arg(long = "type")]
    types: Option<String>,
    #[arg(long)]
    aggregate_type: Option<String>,
    #[arg(long)]
    aggregate_id: Option<String>,
    /// The actor's id.
    #[arg(long)]
    actor: Option<String>,
    /// At most this many events.
    #[arg(long)]
    limit: Option<u64>,
}

pub async fn run(config: Config, command: EventsCommand) -> anyhow::Result<()> {
    if matches!(command, EventsCommand::Import { .. }) {
        database::ensure_database(&config.database.url).await?;
    }
    let pool = database::connect(&config.database.url, 4)
        .await
        .context("DATABASE_URL: cannot connect")?;
    let keys = KeyStore::new(pool.clone(), config.keys.master.clone());
    match command {
        EventsCommand::Export {
            filter,
            format,
            output,
            sealed,
            with_secrets,
        } => export_log(&pool, &keys, filter, format, output, sealed, with_secrets).await,
        EventsCommand::Import { file } => {
            database::migrate(&pool).await?;
            import(&pool, &keys, &file).await
        }
        EventsCommand::Tail {
            from_start,
            since,
            types,
            limit,
            json,
        } => tail(&config, &keys, from_start, since, types, limit, json).await,
    }
}

async fn export_log(
    pool: &PgPool,
    keys: &KeyStore,
    filter: FilterArgs,
    format: ExportFormat,
    output: Option<std::path::PathBuf>,
    sealed: bool,
    with_secrets: bool,
) -> anyhow::Result<()> {
    let spec = ExportSpec::from_query(ExportQuery {
        after: filter.after,
        since: filter.since,
        until: filter.until,
        types: filter.types,
        aggregate_type: filter.aggregate_type,
        aggregate_id: filter.aggregate_id,
        actor: filter.actor,
        limit: filter.limit,
        personal: Some(if sealed { "sealed" } else { "open" }.into()),
        secrets: Some(if with_secrets { "keep" } else { "omit" }.into()),
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let format = match format {
        ExportFormat::Ndjson => Format::Ndjson,
        ExportFormat::Csv => Format::Csv,
    };
    let mut out: Box<dyn Write> = match &output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let total = eventstore::log::count_filtered(pool, spec.after, &spec.filter).await?;
    let total = spec
        .limit
        .map_or(total.max(0) as u64, |l| l.min(total.max(0) as u64));
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "exporting [{bar:40}] {pos}/{len} events ({per_sec}, {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    if format == Format::Csv {
        out.write_all(CSV_HEADER.as_bytes())?;
    }
    let mut written = 0u64;
    let mut chunks = Box::pin(export::stream(pool.clone(), keys.clone(), spec, format).fuse());
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.context("reading the log")?;
        written += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        out.write_all(&chunk)?;
        bar.set_position(written);
    }
    out.flush()?;
    bar.finish_and_clear();
    if output.is_some() || std::io::stderr().is_terminal() {
        eprintln!("exported {written} events");
    }
    Ok(())
}

/// Events per transaction when importing.
const IMPORT_BATCH: usize = 1_000;

async fn import(pool: &PgPool, keys: &KeyStore, file: &std::path::Path) -> anyhow::Result<()> {
    let existing: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(pool)
        .await?;
    if existing > 0 {
        bail!("this database's log holds {existing} events already; import into an empty one");
    }
    // Standard input is read once, into memory; a file is read twice (checked, then
    // appended), so that a bad line anywhere appends nothing.
    let stdin_lines = if file.as_os_str() == "-" {
        Some(
            std::io::stdin()
                .lock()
                .lines()
                .collect::<Result<Vec<_>, _>>()?,
        )
    } else {
        None
    };
    let lines = || -> anyhow::Result<Box<dyn Iterator<Item = std::io::Result<String>>>> {
        Ok(match &stdin_lines {
            Some(all) => Box::new(all.clone().into_iter().map(Ok)),
            None => Box::new(
                std::io::BufReader::new(
                    std::fs::File::open(file)
                        .with_context(|| format!("cannot read {}", file.display()))?,
                )
                .lines(),
            ),
        })
    };
    let mut last = LogCursor::START;
    for (n, line) in lines()?.enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let envelope = check_line(&line, n + 1, last)?;
        last = envelope.cursor;
    }
    let mut batch: Vec<StreamEnvelope> = Vec::with_capacity(IMPORT_BATCH);
    let mut imported = 0u64;
    // who has which email at the end: the copy's one-account-per-email claims
    let mut emails: std::collections::HashMap<uuid::Uuid, String> = Default::default();
    for line in lines()? {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let envelope: StreamEnvelope = serde_json::from_str(&line)?;
        track_email(&envelope, &mut emails);
        batch.push(envelope);
        if batch.len() == IMPORT_BATCH {
            imported += append(pool, keys, &mut batch).await?;
        }
    }
    imported += append(pool, keys, &mut batch).await?;
    for (user, email) in &emails {
        eventstore::email_claims::claim(pool, email, *user).await?;
    }
    println!(
        "imported {imported} events; {} email claims restored",
        emails.len()
    );
    Ok(())
}

/// One line of an export, checked: an envelope, after the previous one, with personal
/// values opened and secrets' derivatives kept (else the copy would not work the same).
fn check_line(line: &str, n: usize, last: LogCursor) -> anyhow::Result<StreamEnvelope> {
    let envelope: StreamEnvelope =
        serde_json::from_str(line).with_context(|| format!("line {n}: not a stream envelope"))?;
    if envelope.cursor <= last {
        bail!("line {n}: out of log order (an export is in order)");
    }
    if line.contains("enc:v1:") {
        bail!("line {n}: personal values are sealed; export without --sealed (they are sealed again with this database's keys)");
    }
    let registered = envelope.payload.get("UserRegistered");
    if registered.is_some_and(|r| r.get("password_hash").is_none()) {
        bail!("line {n}: the export left secrets' derivatives out; export with --with-secrets");
    }
    Ok(envelope)
}

fn track_email(e: &StreamEnvelope, emails: &mut std::collections::HashMap<uuid::Uuid, String>) {
    if e.aggregate_type != aggregates::user::AGGREGATE_TYPE {
        return;
    }
    let Ok(user) = e.aggregate_id.parse::<uuid::Uuid>() else {
        return;
    };
    let email = |event: &str| {
        e.payload
            .get(event)
            .and_then(|b| b.get("email"))
            .and_then(serde_json::Value::as_str)
            .map(aggregates::user::commands::normalize_email)
    };
    if let Some(address) = email("UserRegistered").or_else(|| email("EmailChanged")) {
        if address != eventstore::crypto::ERASED {
            emails.insert(user, address);
        }
    } else if e.payload.get("UserErased").is_some() {
        emails.remove(&user);
    }
}

/// Append a batch in one transaction, in order (the new log keeps the export's order).
async fn append(
    pool: &PgPool,
    keys: &KeyStore,
    batch: &mut Vec<StreamEnvelope>,
) -> anyhow::Result<u64> {
    let mut tx = pool.begin().await?;
    let n = batch.len() as u64;
    for e in batch.drain(..) {
        let mut payload = e.payload;
        let mut metadata = serde_json::to_value(e.metadata.to_map())?;
        // secrets of an event that names no user (a session's rotation) are its
        // aggregate's owner's: read on this transaction, which sees the earlier events
        let aggregate_subject =
            if personal::secret_owner(&e.aggregate_type, &e.aggregate_id, &payload)
                == personal::SecretOwner::Aggregate
                && personal::has_open_secrets(&payload)
            {
                personal::stored_subject(&mut *tx, &e.aggregate_type, &e.aggregate_id).await?
            } else {
                None
            };
        personal::seal_event(
            keys,
            &e.aggregate_type,
            &e.aggregate_id,
            &mut payload,
            &mut metadata,
            aggregate_subject,
        )
        .await?;
        sqlx::query(
            "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata, recorded_at, event_id) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&e.aggregate_type)
        .bind(&e.aggregate_id)
        .bind(e.sequence as i64)
        .bind(&e.event_type)
        .bind(&e.event_version)
        .bind(&payload)
        .bind(&metadata)
        .bind(e.recorded_at)
        .bind(e.event_id)
        .execute(&mut *tx)
        .await
        .with_context(|| format!("appending event {}", e.event_id))?;
    }
    tx.commit().await?;
    Ok(n)
}

async fn tail(
    config: &Config,
    keys: &KeyStore,
    from_start: bool,
    since: Option<DateTime<Utc>>,
    types: Option<String>,
    limit: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let client = async_nats::connect(config.bus.servers.as_slice())
        .await
        .with_context(|| format!("NATS_URL={}: cannot connect", config.bus.nats_url()))?;
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream
        .get_stream(&config.bus.stream)
        .await
        .with_context(|| format!("CHRONICLE_STREAM={}: no such stream", config.bus.stream))?;
    let deliver_policy = match (from_start, since) {
        (true, _) => DeliverPolicy::All,
        (false, Some(t)) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(
                t.timestamp_nanos_opt().unwrap_or(0) as i128,
            )
            .context("--since is out of range")?,
        },
        (false, None) => DeliverPolicy::New,
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy,
            filter_subject: format!("{}.events.>", config.bus.subject_prefix),
            ..Default::default()
        })
        .await
        .context("cannot follow the stream")?;
    let wanted = usecases::export::type_list(types);
    let mut messages = consumer
        .messages()
        .await
        .context("cannot follow the stream")?;
    let mut shown = 0u64;
    let stdout = std::io::stdout();
    while let Some(message) = messages.next().await {
        let message = message.context("the stream failed")?;
        let mut envelope: StreamEnvelope = match serde_json::from_slice(&message.payload) {
            Ok(e) => e,
            Err(_) => continue,
        };
        if !wanted.is_empty() && !wanted.contains(&envelope.event_type) {
            continue;
        }
        let mut event = eventstore::StoredEvent::from_envelope(envelope);
        event.open(keys).await?;
        // a terminal (and whatever it is piped into) shows what an export shows by
        // default: personal values opened, secrets' derivatives left out
        usecases::audit::strip_secrets(&mut event.payload);
        envelope = event.into_envelope();
        let mut out = stdout.lock();
        if json {
            writeln!(out, "{}", serde_json::to_string(&envelope)?)?;
        } else {
            writeln!(
                out,
                "{}  {:<33} {:<28} {:<8} {}",
                envelope.recorded_at.format("%Y-%m-%d %H:%M:%S"),
                envelope.cursor.to_string(),
                envelope.event_type,
                envelope.metadata.actor_role,
                aggregates::describe::summary(&envelope.event_type, &envelope.payload)
            )?;
        }
        out.flush()?;
        shown += 1;
        if limit.is_some_and(|l| shown >= l) {
            break;
        }
    }
    Ok(())
}
