//! Group commit: concurrent appends of one command bus (different aggregates of one type)
//! reach PostgreSQL as one statement: one round trip, one commit and one fsync for all.
//!
//! Appends queue on a channel. A task takes whatever has queued (up to [`MAX_GROUP_ROWS`]
//! rows) and runs it, up to [`IN_FLIGHT`] statements at a time, so a group waiting for its
//! fsync does not hold the next one back and an append that arrives alone is sent at once,
//! as the statement it always was. Nothing waits for a group to fill.
//!
//! One aggregate is never in two groups at once: the bus appends an aggregate's batch and
//! waits for the answer before it decides the next. A group that fails on a unique
//! violation (an aggregate moved on in another process, or a command id already taken)
//! runs each of its appends alone, so only the one that lost sees its conflict. A group
//! whose connection was lost is resolved as a single append is: by looking for its events
//! (a statement is atomic: all of them or none).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aggregates::LogCursor;
use cqrs_es::persist::SerializedEvent;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

use crate::command_bus::Failure;
use crate::log::cursor_from_row;

/// The most rows one statement carries.
pub const MAX_GROUP_ROWS: usize = 2_000;
/// How many statements may be running at once.
pub const IN_FLIGHT: usize = 4;
/// How long a lost connection's events are looked for through a blip of PostgreSQL.
const RESOLVE_FOR: Duration = Duration::from_secs(15);

/// The cursors of appended events, by event id.
pub(crate) type Cursors = HashMap<Uuid, LogCursor>;

struct Request {
    rows: Vec<SerializedEvent>,
    ids: Vec<Uuid>,
    reply: oneshot::Sender<Result<Cursors, Failure>>,
}

/// One bus's appends (see the module's documentation).
pub(crate) struct GroupCommit {
    pool: PgPool,
    /// The group task's queue, started by the first append (inside a runtime).
    queue: OnceLock<mpsc::UnboundedSender<Request>>,
}

impl GroupCommit {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            queue: OnceLock::new(),
        }
    }

    /// Append sealed events (`ids` are their event ids, in order); their cursors.
    pub(crate) async fn append(
        &self,
        rows: &[SerializedEvent],
        ids: &[Uuid],
    ) -> Result<Cursors, Failure> {
        if rows.is_empty() {
            return Ok(HashMap::new());
        }
        let queue = self.queue.get_or_init(|| {
            let (queue, requests) = mpsc::unbounded_channel();
            tokio::spawn(run(self.pool.clone(), requests));
            queue
        });
        let (reply, answer) = oneshot::channel();
        let request = Request {
            rows: rows.to_vec(),
            ids: ids.to_vec(),
            reply,
        };
        if queue.send(request).is_err() {
            return append_alone(&self.pool, rows, ids).await;
        }
        match answer.await {
            Ok(answer) => answer,
            // the group's task went away (its runtime is shutting down): whether the
            // statement ran is known only to the log
            Err(_) => resolve_all(&self.pool, ids, "the append was interrupted").await,
        }
    }
}

/// Take what has queued, run it as one group, up to [`IN_FLIGHT`] groups at a time.
async fn run(pool: PgPool, mut requests: mpsc::UnboundedReceiver<Request>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = requests.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // what queued while the running groups held every permit joins this one
        let mut size = first.rows.len();
        let mut group = vec![first];
        while size < MAX_GROUP_ROWS {
            match requests.try_recv() {
                Ok(next) => {
                    size += next.rows.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            run_group(&pool, group).await;
            drop(permit);
        });
    }
}

async fn run_group(pool: &PgPool, mut group: Vec<Request>) {
    if group.len() == 1 {
        if let Some(request) = group.pop() {
            let answer = append_alone(pool, &request.rows, &request.ids).await;
            let _ = request.reply.send(answer);
        }
        return;
    }
    metrics::histogram!("chronicle_group_commit_appends").record(group.len() as f64);
    let rows: Vec<&SerializedEvent> = group.iter().flat_map(|r| r.rows.iter()).collect();
    let ids: Vec<Uuid> = group.iter().flat_map(|r| r.ids.iter().copied()).collect();
    match insert(pool, &rows, &ids).await {
        Ok(cursors) => answer_each(group, &cursors),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            // someone's aggregate moved on: each alone, so only that one conflicts
            futures::future::join_all(group.into_iter().map(|request| async move {
                let answer = append_alone(pool, &request.rows, &request.ids).await;
                let _ = request.reply.send(answer);
            }))
            .await;
        }
        Err(e) if crate::unavailable::is_unavailable(&e) => {
            tracing::warn!(appends = group.len(), error = %e, "A group append lost PostgreSQL; looking for its events");
            match resolve_all(pool, &ids, &e.to_string()).await {
                Ok(found) => answer_each(group, &found),
                Err(failure) => fail_each(group, failure),
            }
        }
        Err(e) => fail_each(group, Failure::Store(crate::command_bus::Cause::new(e))),
    }
}

fn fail_each(group: Vec<Request>, failure: Failure) {
    for request in group {
        let _ = request.reply.send(Err(failure.clone()));
    }
}

fn answer_each(group: Vec<Request>, cursors: &Cursors) {
    for request in group {
        let mine = request
            .ids
            .iter()
            .filter_map(|id| cursors.get(id).map(|c| (*id, *c)))
            .collect();
        let _ = request.reply.send(Ok(mine));
    }
}

/// One aggregate's append as one statement. A unique violation (the aggregate moved on, or
/// an event id is already taken) is a conflict. When the connection is lost mid-statement,
/// the events are looked for: found, the append happened; not found, it did not.
async fn append_alone(
    pool: &PgPool,
    rows: &[SerializedEvent],
    ids: &[Uuid],
) -> Result<Cursors, Failure> {
    let refs: Vec<&SerializedEvent> = rows.iter().collect();
    match insert(pool, &refs, ids).await {
        Ok(cursors) => Ok(cursors),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            Err(Failure::Conflict)
        }
        Err(e) if crate::unavailable::is_unavailable(&e) => {
            let aggregate = rows.first().map(|r| r.aggregate_type.as_str());
            tracing::warn!(aggregate, error = %e, "An append lost PostgreSQL; looking for its events");
            resolve_all(pool, ids, &e.to_string()).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `INSERT … SELECT FROM unnest(…) RETURNING` the cursors, autocommit.
async fn insert(
    pool: &PgPool,
    rows: &[&SerializedEvent],
    ids: &[Uuid],
) -> Result<Cursors, sqlx::Error> {
    let returned = sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata, event_id) \
         select a, i, s, t, v, p, m, e \
         from unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], \
                     $7::jsonb[], $8::uuid[]) as u(a, i, s, t, v, p, m, e) \
         returning event_id, transaction_id::text as transaction_id, position",
    )
    .bind(
        rows.iter()
            .map(|r| r.aggregate_type.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.aggregate_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.sequence as i64).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.event_type.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.event_version.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| &r.payload).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| &r.metadata).collect::<Vec<_>>())
    .bind(ids)
    .fetch_all(pool)
    .await?;
    cursors(&returned)
}

/// Rows of `event_id`, `transaction_id`, `position` as cursors by event id.
fn cursors(rows: &[PgRow]) -> Result<Cursors, sqlx::Error> {
    let mut cursors = HashMap::with_capacity(rows.len());
    for row in rows {
        let id: Uuid = row.try_get("event_id")?;
        cursors.insert(id, cursor_from_row(row)?);
    }
    Ok(cursors)
}

/// The events with these ids, all of them (an append is atomic), or `Unavailable` with
/// `why` when they are not in the log.
async fn resolve_all(pool: &PgPool, ids: &[Uuid], why: &str) -> Result<Cursors, Failure> {
    let found = resolve(pool, ids).await?;
    if found.len() == ids.len() {
        Ok(found)
    } else {
        Err(Failure::Unavailable(why.to_owned()))
    }
}

/// The events with these ids, looked for through a blip of PostgreSQL.
pub(crate) async fn resolve(pool: &PgPool, ids: &[Uuid]) -> Result<Cursors, Failure> {
    let deadline = tokio::time::Instant::now() + RESOLVE_FOR;
    let mut delay = Duration::from_millis(50);
    loop {
        match find_events(pool, ids).await {
            Err(Failure::Unavailable(e)) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "Looking for an append's events: PostgreSQL away, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

/// The cursors of the events with these ids that are in the log.
pub(crate) async fn find_events(pool: &PgPool, ids: &[Uuid]) -> Result<Cursors, Failure> {
    let rows = sqlx::query(
        "select event_id, transaction_id::text as transaction_id, position from events \
         where event_id = any($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(cursors(&rows)?)
}
