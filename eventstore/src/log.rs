//! Reading the log in its global order.
//!
//! The order of the log is `(transaction_id, position)`. A reader only reads events whose
//! writing transaction is below `pg_snapshot_xmin(pg_current_snapshot())`: every such
//! transaction has finished, so nothing can later appear behind the reader's cursor. A
//! long transaction anywhere in the cluster holds readers back (nothing is lost); the
//! relay exposes that as lag.

use aggregates::{EventMetadata, LogCursor, StreamEnvelope};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, PgPool, Row, ValueRef};
use uuid::Uuid;

/// One event as stored in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub cursor: LogCursor,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: u64,
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    pub metadata: EventMetadata,
    pub payload: serde_json::Value,
}

impl StoredEvent {
    pub fn into_envelope(self) -> StreamEnvelope {
        StreamEnvelope {
            transaction_id: self.cursor.transaction_id,
            position: self.cursor.position,
            cursor: self.cursor,
            event_id: self.event_id,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence: self.sequence,
            event_type: self.event_type,
            event_version: self.event_version,
            recorded_at: self.recorded_at,
            metadata: self.metadata,
            payload: self.payload,
        }
    }

    /// An event from the stream, at the current version (a message published before its
    /// event's version changed is upcast here).
    pub fn from_envelope(e: StreamEnvelope) -> Self {
        let (event_version, payload) =
            crate::upcast::upcast(&e.event_type, &e.event_version, e.payload);
        Self {
            cursor: e.cursor,
            event_id: e.event_id,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            event_type: e.event_type,
            event_version,
            recorded_at: e.recorded_at,
            metadata: e.metadata,
            payload,
        }
    }

    /// Open the sealed personal values (erased users' read as `"[erased]"`).
    pub async fn open(
        &mut self,
        keys: &crate::crypto::KeyStore,
    ) -> Result<(), crate::crypto::CryptoError> {
        let mut meta = serde_json::to_value(&self.metadata).unwrap_or_default();
        crate::personal::open_values(keys, &mut [&mut self.payload, &mut meta]).await?;
        if let Ok(m) = serde_json::from_value(meta) {
            self.metadata = m;
        }
        Ok(())
    }

    /// Open the sealed personal values of the payload only, which is what read models use:
    /// the metadata's (the IP address, the user agent) stay sealed.
    pub async fn open_payload(
        &mut self,
        keys: &crate::crypto::KeyStore,
    ) -> Result<(), crate::crypto::CryptoError> {
        crate::personal::open_values(keys, &mut [&mut self.payload]).await
    }

    /// An event as the log holds it, upcast to the current version (the row itself is
    /// never changed).
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let metadata: serde_json::Value = row.try_get("metadata")?;
        let metadata =
            serde_json::from_value::<std::collections::HashMap<String, String>>(metadata)
                .map(|m| EventMetadata::from_map(&m))
                .unwrap_or_default();
        let event_type: String = row.try_get("event_type")?;
        let stored_version: String = row.try_get("event_version")?;
        let (event_version, payload) =
            crate::upcast::upcast(&event_type, &stored_version, row.try_get("payload")?);
        Ok(Self {
            cursor: cursor_from_row(row)?,
            event_id: row.try_get("event_id")?,
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get::<i64, _>("sequence")?.max(0) as u64,
            event_type,
            event_version,
            recorded_at: row.try_get("recorded_at")?,
            metadata,
            payload,
        })
    }
}

/// Read a cursor from a row with columns `transaction_id` (selected as text) and `position`.
pub fn cursor_from_row(row: &PgRow) -> Result<LogCursor, sqlx::Error> {
    let tx: String = row.try_get("transaction_id")?;
    let transaction_id = tx.parse::<u64>().map_err(|e| sqlx::Error::ColumnDecode {
        index: "transaction_id".into(),
        source: Box::new(e),
    })?;
    let position: i64 = row.try_get("position")?;
    Ok(LogCursor::new(transaction_id, position.max(0) as u64))
}

/// The transaction id as the text PostgreSQL casts to `xid8` (`$n::text::xid8`).
pub fn xid8_param(cursor: &LogCursor) -> String {
    cursor.transaction_id.to_string()
}

/// The position as PostgreSQL's `bigint`.
pub fn position_param(cursor: &LogCursor) -> i64 {
    i64::try_from(cursor.position).unwrap_or(i64::MAX)
}

const SELECT_EVENT: &str = "select transaction_id::text as transaction_id, position, event_id, \
     aggregate_type, aggregate_id, sequence, event_type, event_version, recorded_at, payload, metadata \
     from events";

/// The next `limit` events after `after`, in log order, from finished transactions only.
pub async fn read_after<'e>(
    db: impl PgExecutor<'e>,
    after: LogCursor,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "{SELECT_EVENT} where (transaction_id, position) > ($1::text::xid8, $2) \
         and transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
         order by events.transaction_id, position limit $3"
    );
    let rows = sqlx::query(&sql)
        .bind(xid8_param(&after))
        .bind(position_param(&after))
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter().map(StoredEvent::from_row).collect()
}

/// The events of `aggregate_types` among the next `limit` events after `after` (in log
/// order, from finished transactions only), with the cursor of the last of those `limit`
/// events whatever its type (`None`: no event after `after`) and how many there were: a
/// reader of some types moves through the whole log without reading the rest.
pub async fn read_after_of_types(
    conn: &mut sqlx::PgConnection,
    after: LogCursor,
    limit: i64,
    aggregate_types: &[&str],
) -> Result<(Vec<StoredEvent>, Option<LogCursor>, i64), sqlx::Error> {
    let rows = scan_after(conn, after, limit, Some(aggregate_types)).await?;
    let scanned = Scanned::decode(&rows)?;
    Ok((scanned.events, scanned.last, scanned.count))
}

/// The next `limit` rows of the log after `after` (in log order, from finished
/// transactions only), not decoded yet ([`Scanned::decode`]). With `aggregate_types`, the
/// rows of other types come without their payload and metadata: one ordered index scan
/// moves past them without turning their JSON into text. A reader that reads ahead on a
/// connection of its own (a rebuild) leaves the decoding to the task that applies them.
pub async fn scan_after<'e>(
    db: impl PgExecutor<'e>,
    after: LogCursor,
    limit: i64,
    aggregate_types: Option<&[&str]>,
) -> Result<Vec<PgRow>, sqlx::Error> {
    sqlx::query(
        "select transaction_id::text as transaction_id, position, event_id, aggregate_type, \
         aggregate_id, sequence, event_type, event_version, recorded_at, \
         case when $4::text[] is null or aggregate_type = any($4) then payload end as payload, \
         case when $4::text[] is null or aggregate_type = any($4) then metadata end as metadata \
         from events where (transaction_id, position) > ($1::text::xid8, $2) \
         and transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
         order by events.transaction_id, position limit $3",
    )
    .bind(xid8_param(&after))
    .bind(position_param(&after))
    .bind(limit)
    .bind(aggregate_types)
    .fetch_all(db)
    .await
}

/// Rows of [`scan_after`], decoded.
#[derive(Debug, Default)]
pub struct Scanned {
    /// The events of the types asked for, in log order.
    pub events: Vec<StoredEvent>,
    /// The cursor of the last row, whatever its type (`None`: no rows).
    pub last: Option<LogCursor>,
    /// How many rows there were.
    pub count: i64,
}

impl Scanned {
    /// The scan decided which rows are wanted: those with a payload (the log's `payload`
    /// is never null; [`scan_after`] leaves it out for other types).
    pub fn decode(rows: &[PgRow]) -> Result<Self, sqlx::Error> {
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            if row.try_get_raw("payload")?.is_null() {
                continue;
            }
            events.push(StoredEvent::from_row(row)?);
        }
        Ok(Self {
            events,
            last: rows.last().map(cursor_from_row).transpose()?,
            count: rows.len() as i64,
        })
    }
}

/// The cursor of the last event a reader of the global order can see now (the head of the
/// readable log), or `None` when it is empty.
pub async fn head<'e>(db: impl PgExecutor<'e>) -> Result<Option<LogCursor>, sqlx::Error> {
    let row = sqlx::query(
        "select transaction_id::text as transaction_id, position from events \
         where transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
         order by events.transaction_id desc, position desc limit 1",
    )
    .fetch_optional(db)
    .await?;
    row.as_ref().map(cursor_from_row).transpose()
}

/// The cursor of the newest event committed so far, readable or not yet (a transaction
/// that began earlier may still be open): what "every event written until now" means to a
/// waiter that must not stop short.
pub async fn last_committed<'e>(db: impl PgExecutor<'e>) -> Result<Option<LogCursor>, sqlx::Error> {
    let row = sqlx::query(
        "select transaction_id::text as transaction_id, position from events \
         order by events.transaction_id desc, position desc limit 1",
    )
    .fetch_optional(db)
    .await?;
    row.as_ref().map(cursor_from_row).transpose()
}

/// How many readable events lie after `after`, and when the oldest of them was recorded.
pub async fn backlog<'e>(
    db: impl PgExecutor<'e>,
    after: LogCursor,
) -> Result<(i64, Option<DateTime<Utc>>), sqlx::Error> {
    let row = sqlx::query(
        "select count(*) as n, min(recorded_at) as oldest from events \
         where (transaction_id, position) > ($1::text::xid8, $2) \
         and transaction_id < pg_snapshot_xmin(pg_current_snapshot())",
    )
    .bind(xid8_param(&after))
    .bind(position_param(&after))
    .fetch_one(db)
    .await?;
    Ok((row.try_get("n")?, row.try_get("oldest")?))
}

/// The total number of events in the log that a global reader can see.
pub async fn count_before<'e>(
    db: impl PgExecutor<'e>,
    upto: LogCursor,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select count(*) from events where (transaction_id, position) <= ($1::text::xid8, $2)",
    )
    .bind(xid8_param(&upto))
    .bind(position_param(&upto))
    .fetch_one(db)
    .await
}

/// What a user's history holds: every event whose subject is the user (their `user`
/// aggregate, and everything they own: sessions, meters, conversations, uploads; see
/// `events.subject_id`, set at insert) and every event they caused as the actor.
const USER_HISTORY: &str = "(subject_id = $1 or metadata ->> 'actor_id' = $1::text)";
/// The same, without what they caused in other users' histories (their own view).
const OWN_HISTORY: &str =
    "(subject_id = $1 or (metadata ->> 'actor_id' = $1::text and subject_id is null))";

/// Which part of a user's history to read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryFilter {
    /// Only these event types (none: all).
    pub types: Vec<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Oldest first (the log's order) when false, newest first when true.
    pub newest_first: bool,
    pub limit: i64,
    pub offset: i64,
    /// Leave out events the user caused that belong to another user (an admin's actions):
    /// the user's own view must not show other people's data.
    pub own_only: bool,
}

/// A page of a user's history, and how many events match in all.
pub async fn subject_history<'e>(
    db: impl PgExecutor<'e> + Copy,
    user_id: Uuid,
    filter: &HistoryFilter,
) -> Result<(Vec<StoredEvent>, i64), sqlx::Error> {
    let whose = if filter.own_only {
        OWN_HISTORY
    } else {
        USER_HISTORY
    };
    let conditions = format!(
        "{whose} and (cardinality($2::text[]) = 0 or event_type = any($2)) \
         and ($3::timestamptz is null or recorded_at >= $3) \
         and ($4::timestamptz is null or recorded_at < $4)"
    );
    let direction = if filter.newest_first { "desc" } else { "asc" };
    let rows = sqlx::query(&format!(
        "{SELECT_EVENT} where {conditions} \
         order by events.transaction_id {direction}, position {direction} limit $5 offset $6"
    ))
    .bind(user_id)
    .bind(&filter.types)
    .bind(filter.since)
    .bind(filter.until)
    .bind(filter.limit)
    .bind(filter.offset)
    .fetch_all(db)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("select count(*) from events where {conditions}"))
        .bind(user_id)
        .bind(&filter.types)
        .bind(filter.since)
        .bind(filter.until)
        .fetch_one(db)
        .await?;
    Ok((
        rows.iter()
            .map(StoredEvent::from_row)
            .collect::<Result<_, _>>()?,
        total,
    ))
}

/// A page of a user's history, newest first, and how many events it has in all.
pub async fn user_history<'e>(
    db: impl PgExecutor<'e> + Copy,
    user_id: Uuid,
    limit: i64,
    offset: i64,
) -> Result<(Vec<StoredEvent>, i64), sqlx::Error> {
    let filter = HistoryFilter {
        newest_first: true,
        limit,
        offset,
        own_only: true,
        ..HistoryFilter::default()
    };
    subject_history(db, user_id, &filter).await
}

/// Which events an export reads (all given conditions hold).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogFilter {
    /// Recorded at or after.
    pub since: Option<DateTime<Utc>>,
    /// Recorded before.
    pub until: Option<DateTime<Utc>>,
    /// Only these event types (none: all).
    pub types: Vec<String>,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    /// The `actor_id` of the metadata (a user id, an API key id, a worker's name).
    pub actor: Option<String>,
}

const LOG_FILTER: &str = "($3::timestamptz is null or recorded_at >= $3) \
     and ($4::timestamptz is null or recorded_at < $4) \
     and (cardinality($5::text[]) = 0 or event_type = any($5)) \
     and ($6::text is null or aggregate_type = $6) \
     and ($7::text is null or aggregate_id = $7) \
     and ($8::text is null or metadata ->> 'actor_id' = $8)";

/// The next `limit` events after `after` that match `filter`, in the log's order, from
/// finished transactions only (the relay's rule: an export never skips an event that
/// commits later with a lower position; it sees it on its next page).
pub async fn read_filtered<'e>(
    db: impl PgExecutor<'e>,
    after: LogCursor,
    filter: &LogFilter,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "{SELECT_EVENT} where (transaction_id, position) > ($1::text::xid8, $2) \
         and transaction_id < pg_snapshot_xmin(pg_current_snapshot()) and {LOG_FILTER} \
         order by events.transaction_id, position limit $9"
    );
    let rows = bind_filter(sqlx::query(&sql), after, filter)
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter().map(StoredEvent::from_row).collect()
}

/// Bind `$1`–`$8` of a query over `after` and [`LOG_FILTER`].
fn bind_filter<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    after: LogCursor,
    filter: &'q LogFilter,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(xid8_param(&after))
        .bind(position_param(&after))
        .bind(filter.since)
        .bind(filter.until)
        .bind(&filter.types)
        .bind(&filter.aggregate_type)
        .bind(&filter.aggregate_id)
        .bind(&filter.actor)
}

/// How many readable events after `after` match `filter` (for progress bars).
pub async fn count_filtered<'e>(
    db: impl PgExecutor<'e>,
    after: LogCursor,
    filter: &LogFilter,
) -> Result<i64, sqlx::Error> {
    let sql = format!(
        "select count(*) from events where (transaction_id, position) > ($1::text::xid8, $2) \
         and transaction_id < pg_snapshot_xmin(pg_current_snapshot()) and {LOG_FILTER}"
    );
    bind_filter(sqlx::query(&sql), after, filter)
        .fetch_one(db)
        .await?
        .try_get(0)
}

/// Use up `n` log positions without appending anything, outside any transaction (so no
/// transaction id is taken either).
///
/// Anonymous requests about an email must leave the same trace in the log whether the
/// address has an account or not, and a client sees positions in every command answer: a
/// path that appends fewer events than its twin skips the difference here. Gaps in
/// positions are normal (a rolled-back append leaves one); every reader orders by the
/// cursor pair and never assumes consecutive positions.
pub async fn skip_positions(pool: &sqlx::PgPool, n: u32) -> Result<(), sqlx::Error> {
    if n == 0 {
        return Ok(());
    }
    sqlx::query(
        "select nextval(pg_get_serial_sequence('events', 'position')) \
         from generate_series(1, $1)",
    )
    .bind(n as i32)
    .execute(pool)
    .await?;
    Ok(())
}

/// Every committed event of one aggregate type, in each aggregate's own order (by id, then
/// sequence). Not the log's global order, and so not held back by a transaction still open
/// elsewhere in the cluster: for views that fold each aggregate on its own (the list of API
/// keys), where the relay's rule would hide a revocation behind someone else's slow
/// transaction.
pub async fn read_aggregate_type<'e>(
    db: impl PgExecutor<'e>,
    aggregate_type: &str,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!("{SELECT_EVENT} where aggregate_type = $1 order by aggregate_id, sequence");
    let rows = sqlx::query(&sql).bind(aggregate_type).fetch_all(db).await?;
    rows.iter().map(StoredEvent::from_row).collect()
}

/// Whose history each of these events is in (`subject_id`), for those that have one (a
/// session's later events name no user).
pub async fn subjects_of(
    pool: &PgPool,
    event_ids: &[Uuid],
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "select event_id, subject_id from events \
         where event_id = any($1) and subject_id is not null",
    )
    .bind(event_ids)
    .fetch_all(pool)
    .await
}

/// When each of these actors last caused an event (actors that never did are left out).
pub async fn last_acted(
    pool: &PgPool,
    actor_ids: &[String],
) -> Result<Vec<(String, Option<DateTime<Utc>>)>, sqlx::Error> {
    sqlx::query_as(
        "select metadata ->> 'actor_id', max(recorded_at) from events \
         where metadata ->> 'actor_id' = any($1) group by 1",
    )
    .bind(actor_ids)
    .fetch_all(pool)
    .await
}

/// How many conversations `owner` has started and not deleted, from the log (committed
/// events only: what a command deciding now must count).
pub async fn live_conversations<'e>(
    db: impl PgExecutor<'e>,
    owner: Uuid,
) -> Result<u64, sqlx::Error> {
    let live: i64 = sqlx::query_scalar(
        "select count(*) filter (where event_type = 'ConversationStarted') \
              - count(*) filter (where event_type = 'ConversationDeleted') \
         from events \
         where subject_id = $1 and aggregate_type = 'conversation' \
           and event_type in ('ConversationStarted', 'ConversationDeleted')",
    )
    .bind(owner)
    .fetch_one(db)
    .await?;
    Ok(live.max(0) as u64)
}
