//! Rebuilding and verifying a read model from the log, through shadow tables.
//!
//! A read model's tables get twins in a schema of their own (`shadow_<name>`, created
//! `LIKE` the live tables). The log is replayed into them in committed batches of
//! [`BATCH`] events, each batch in a transaction whose `search_path` puts the shadow schema
//! first: the projection code (which names its tables unqualified) writes the twins, while
//! `events` and the key tables still resolve to `public`. No long transaction is held, so
//! the relay and the live projector keep going meanwhile.
//!
//! Then one short transaction locks the live checkpoint (the projector waits), replays the
//! few events the shadow still lacks, and
//! - **verify**: replays up to exactly the live checkpoint and compares a digest of every
//!   table with its twin, reporting the rows that differ; nothing live changes;
//! - **rebuild**: replays up to the readable head, replaces the live rows with the shadow's
//!   (`delete` + `insert`, so readers see the old rows until the commit and the new ones
//!   after it: no downtime), and moves the checkpoint; the projector then skips what the
//!   rebuild applied.
//!
//! One rebuild or verify per read model at a time (an advisory lock).

use aggregates::LogCursor;
use eventstore::crypto::KeyStore;
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, PgPool, Row};

use crate::read_model::Replay;
use crate::{checkpoint, ProjectionError, ReadModel};

const BATCH: i64 = 1_000;

#[derive(Debug, Clone, PartialEq)]
pub struct RebuildReport {
    pub events_applied: u64,
    pub cursor: LogCursor,
}

/// A live table compared with its replayed twin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableDigest {
    pub table: String,
    pub live_rows: i64,
    pub replayed_rows: i64,
    pub live_digest: String,
    pub replayed_digest: String,
    /// Rows in the live table that the replay does not produce.
    pub only_live: i64,
    /// Rows the replay produces that the live table lacks.
    pub only_replayed: i64,
}

impl TableDigest {
    pub fn matches(&self) -> bool {
        self.live_digest == self.replayed_digest && self.live_rows == self.replayed_rows
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    pub read_model: String,
    /// The live checkpoint both sides were compared at.
    #[serde(serialize_with = "cursor_text")]
    pub cursor: LogCursor,
    pub events_replayed: u64,
    pub tables: Vec<TableDigest>,
}

fn cursor_text<S: serde::Serializer>(c: &LogCursor, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&c.to_string())
}

impl VerifyReport {
    pub fn matches(&self) -> bool {
        self.tables.iter().all(TableDigest::matches)
    }
}

impl ReadModel {
    /// The tables this read model owns (what a rebuild replaces, what verify compares).
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            ReadModel::Users => &["users"],
            ReadModel::Sessions => &["sessions"],
            ReadModel::Usage => &["usage_daily", "usage_meters"],
            ReadModel::Conversations => &["conversations", "messages"],
            ReadModel::Uploads => &["uploads"],
            ReadModel::EventStats => &["event_type_counts", "daily_activity", "daily_active_users"],
        }
    }

    fn shadow_schema(self) -> String {
        format!("shadow_{}", self.name())
    }
}

/// Replay `model` from the start of the log into shadow tables and swap them in.
/// `progress(done, total)` is called after every batch.
pub async fn rebuild(
    pool: &PgPool,
    keys: &KeyStore,
    model: ReadModel,
    mut progress: impl FnMut(u64, u64),
) -> Result<RebuildReport, ProjectionError> {
    let mut guard = exclusive(pool, model).await?;
    let outcome = async {
        let mut shadow = Shadow::create(pool, model).await?;
        shadow.fill(pool, keys, None, &mut progress).await?;
        let mut tx = pool.begin().await?;
        let before = checkpoint::lock(&mut tx, model).await?;
        shadow.apply_upto(&mut tx, keys, None).await?;
        let schema = model.shadow_schema();
        for table in model.tables() {
            sqlx::query(&format!("delete from public.{table}"))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!(
                "insert into public.{table} select * from {schema}.{table}"
            ))
            .execute(&mut *tx)
            .await?;
        }
        // events_applied restarts from the replay count; the stream position is the
        // projector's and stays where it was.
        sqlx::query("update projection_checkpoints set events_applied = 0 where name = $1")
            .bind(model.name())
            .execute(&mut *tx)
            .await?;
        checkpoint::advance(
            &mut tx,
            model,
            shadow.cursor,
            before.stream_sequence,
            shadow.applied,
        )
        .await?;
        tx.commit().await?;
        progress(shadow.passed, shadow.passed);
        Ok::<_, ProjectionError>(RebuildReport {
            events_applied: shadow.applied,
            cursor: shadow.cursor,
        })
    }
    .await;
    drop_shadow(&mut guard, model).await;
    let _ = guard.close().await;
    let report = outcome?;
    tracing::info!(read_model = %model, events = report.events_applied, cursor = %report.cursor, "Rebuilt read model");
    Ok(report)
}

/// Replay `model` into shadow tables up to the live checkpoint and compare every table with
/// its twin. Nothing live changes.
pub async fn verify(
    pool: &PgPool,
    keys: &KeyStore,
    model: ReadModel,
    mut progress: impl FnMut(u64, u64),
) -> Result<VerifyReport, ProjectionError> {
    let mut guard = exclusive(pool, model).await?;
    let outcome = async {
        let live = checkpoint::load(pool, model)
            .await?
            .map(|c| c.cursor)
            .unwrap_or(LogCursor::START);
        let mut shadow = Shadow::create(pool, model).await?;
        shadow.fill(pool, keys, Some(live), &mut progress).await?;
        let mut tx = pool.begin().await?;
        let at = checkpoint::lock(&mut tx, model).await?.cursor;
        shadow.apply_upto(&mut tx, keys, Some(at)).await?;
        let mut tables = vec![];
        for table in model.tables() {
            tables.push(compare(&mut tx, &model.shadow_schema(), table).await?);
        }
        tx.rollback().await?;
        Ok::<_, ProjectionError>(VerifyReport {
            read_model: model.name().to_owned(),
            cursor: at,
            events_replayed: shadow.applied,
            tables,
        })
    }
    .await;
    drop_shadow(&mut guard, model).await;
    let _ = guard.close().await;
    outcome
}

/// A connection of its own holding the read model's shadow lock (closing it releases it).
async fn exclusive(pool: &PgPool, model: ReadModel) -> Result<PgConnection, sqlx::Error> {
    let mut conn = pool.acquire().await?.detach();
    sqlx::query("select pg_advisory_lock(hashtext($1))")
        .bind(format!("chronicle:shadow:{}", model.name()))
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

async fn drop_shadow(conn: &mut PgConnection, model: ReadModel) {
    let _ = sqlx::query(&format!(
        "drop schema if exists {} cascade",
        model.shadow_schema()
    ))
    .execute(conn)
    .await;
}

/// How many scanned batches the reader may hold ahead of the replay.
const READ_AHEAD: usize = 2;

/// Scan the log from `after` in batches of [`BATCH`] rows (the rows of other types without
/// their JSON, see [`eventstore::log::scan_after`]) and send each, undecoded, until a short
/// batch, an error, or the receiver is gone.
async fn read_ahead(
    pool: PgPool,
    mut after: LogCursor,
    types: Option<&'static [&'static str]>,
    batches: tokio::sync::mpsc::Sender<Result<Vec<PgRow>, sqlx::Error>>,
) {
    loop {
        let rows = eventstore::log::scan_after(&pool, after, BATCH, types).await;
        let next = match &rows {
            Ok(rows) => rows
                .last()
                .map(eventstore::log::cursor_from_row)
                .transpose()
                .map(|last| (last, rows.len() as i64 == BATCH)),
            Err(_) => Ok((None, false)),
        };
        let (last, full) = match next {
            Ok(next) => next,
            Err(e) => {
                let _ = batches.send(Err(e)).await;
                return;
            }
        };
        if batches.send(rows).await.is_err() || !full {
            return;
        }
        if let Some(last) = last {
            after = last;
        }
    }
}

/// A task that ends when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Shadow tables being filled, and how far they are.
struct Shadow {
    model: ReadModel,
    cursor: LogCursor,
    applied: u64,
    /// Events of the log moved past, applied or not (for progress).
    passed: u64,
    /// What the read model folds across batches, written at the end.
    replay: Replay,
}

impl Shadow {
    async fn create(pool: &PgPool, model: ReadModel) -> Result<Self, sqlx::Error> {
        let schema = model.shadow_schema();
        let mut tx = pool.begin().await?;
        sqlx::query(&format!("drop schema if exists {schema} cascade"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("create schema {schema}"))
            .execute(&mut *tx)
            .await?;
        for table in model.tables() {
            sqlx::query(&format!(
                "create table {schema}.{table} (like public.{table} including all)"
            ))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Self {
            model,
            cursor: LogCursor::START,
            applied: 0,
            passed: 0,
            replay: Replay::default(),
        })
    }

    /// Replay in committed batches up to `upto` (None: the readable head). A task of its
    /// own reads the log ahead on a connection of its own ([`read_ahead`]), so PostgreSQL
    /// reads the next batch while this one is decoded and folded.
    async fn fill(
        &mut self,
        pool: &PgPool,
        keys: &KeyStore,
        upto: Option<LogCursor>,
        progress: &mut impl FnMut(u64, u64),
    ) -> Result<(), ProjectionError> {
        let total = eventstore::log::backlog(pool, LogCursor::START)
            .await?
            .0
            .max(0) as u64;
        let (batches, mut ahead) = tokio::sync::mpsc::channel(READ_AHEAD);
        let reader = AbortOnDrop(tokio::spawn(read_ahead(
            pool.clone(),
            self.cursor,
            self.model.aggregate_types(),
            batches,
        )));
        let outcome = async {
            while let Some(rows) = ahead.recv().await {
                let rows = rows?;
                let mut tx = pool.begin().await?;
                let more = self.apply_rows(&mut tx, keys, upto, &rows).await?;
                tx.commit().await?;
                progress(self.passed, total.max(self.passed));
                if !more {
                    break;
                }
            }
            Ok(())
        }
        .await;
        drop(reader);
        outcome
    }

    /// Inside the caller's transaction: replay everything left up to `upto`.
    async fn apply_upto(
        &mut self,
        tx: &mut PgConnection,
        keys: &KeyStore,
        upto: Option<LogCursor>,
    ) -> Result<(), ProjectionError> {
        while self.apply_batch(tx, keys, upto).await? {}
        self.shadow_path(tx).await?;
        self.model.finish_replay(tx, &mut self.replay).await?;
        self.reset_path(tx).await?;
        Ok(())
    }

    /// One batch into the shadow tables; whether there may be more.
    async fn apply_batch(
        &mut self,
        tx: &mut PgConnection,
        keys: &KeyStore,
        upto: Option<LogCursor>,
    ) -> Result<bool, ProjectionError> {
        let rows =
            eventstore::log::scan_after(&mut *tx, self.cursor, BATCH, self.model.aggregate_types())
                .await?;
        self.apply_rows(tx, keys, upto, &rows).await
    }

    /// The rows of one scan ([`eventstore::log::scan_after`] from `self.cursor`) into the
    /// shadow tables; whether there may be more.
    async fn apply_rows(
        &mut self,
        tx: &mut PgConnection,
        keys: &KeyStore,
        upto: Option<LogCursor>,
        rows: &[PgRow],
    ) -> Result<bool, ProjectionError> {
        self.shadow_path(tx).await?;
        // the read model's own events only, unless it counts every event
        let scanned = eventstore::log::Scanned::decode(rows)?;
        self.passed += scanned.count.max(0) as u64;
        let mut more = scanned.count == BATCH;
        let mut opened = Vec::with_capacity(scanned.events.len());
        for mut event in scanned.events {
            if upto.is_some_and(|u| event.cursor > u) {
                more = false;
                break;
            }
            self.model
                .open(&mut event, keys)
                .await
                .map_err(|e| ProjectionError::poison(&event, e))?;
            opened.push(event);
        }
        // applied together: a read model may fold the batch in memory
        self.model.replay(tx, &opened, &mut self.replay).await?;
        self.applied += opened.len() as u64;
        if let Some(last) = opened.last() {
            self.cursor = last.cursor;
        }
        // past the events of other types read over, up to `upto`
        if let Some(scanned_to) = scanned.last {
            match upto {
                Some(u) if scanned_to > u => {
                    more = false;
                    self.cursor = self.cursor.max(u);
                }
                _ => self.cursor = self.cursor.max(scanned_to),
            }
        }
        self.reset_path(tx).await?;
        Ok(more)
    }

    /// The shadow tables first: the projection's statements name tables without a schema.
    async fn shadow_path(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "select set_config('search_path', '{}, public', true)",
            self.model.shadow_schema()
        ))
        .execute(tx)
        .await?;
        Ok(())
    }

    async fn reset_path(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("select set_config('search_path', 'public', true)")
            .execute(tx)
            .await?;
        Ok(())
    }
}

/// Compare `public.<table>` with `<schema>.<table>`: row counts, an order-independent
/// digest of every row's text (a sum of row hashes), and how many rows each side has that the other lacks.
async fn compare(
    tx: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<TableDigest, sqlx::Error> {
    // A sum of 64-bit row hashes: independent of row order and of constant memory
    // (a string of every row would not fit past about 1 GB); `except all` below names the
    // differing rows when the sums differ.
    let digest = |s: &str| {
        format!(
            "select count(*) as n, coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint), 0)::text as d \
             from {s}.{table} t"
        )
    };
    let live = sqlx::query(&digest("public")).fetch_one(&mut *tx).await?;
    let replayed = sqlx::query(&digest(schema)).fetch_one(&mut *tx).await?;
    let only = |a: &str, b: &str| {
        format!(
            "select count(*) from (select * from {a}.{table} except all select * from {b}.{table}) d"
        )
    };
    let only_live: i64 = sqlx::query_scalar(&only("public", schema))
        .fetch_one(&mut *tx)
        .await?;
    let only_replayed: i64 = sqlx::query_scalar(&only(schema, "public"))
        .fetch_one(&mut *tx)
        .await?;
    Ok(TableDigest {
        table: table.to_owned(),
        live_rows: live.try_get("n")?,
        replayed_rows: replayed.try_get("n")?,
        live_digest: live.try_get("d")?,
        replayed_digest: replayed.try_get("d")?,
        only_live,
        only_replayed,
    })
}
