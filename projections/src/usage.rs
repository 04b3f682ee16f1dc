//! Usage per user, per UTC day, per kind (`usage_daily`), and the queries `/api/v1/usage`
//! and the admin totals run. Guarded by each meter's sequence (`usage_meters`).
//!
//! A batch of events is folded in memory ([`apply_all`]): the meters' sequences are read
//! once, each `(user, day, kind)`'s total and count are summed, and the rows are written
//! with one upsert per table. The live projector and rebuilds both apply batches this way;
//! [`apply`] is the one-event case.

use std::collections::HashMap;

use aggregates::meter::MeterEvent;
use aggregates::Event;
use chrono::NaiveDate;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::decoded::erases;
use crate::{Decoded, ProjectionError};

/// How many sums or meters a replay keeps in memory before it writes them.
const REPLAY_FLUSH_AT: usize = 50_000;

/// Fold events into `fold` in their order (the same rows as applying them one by one once
/// it is flushed). `fold` may carry sums from earlier batches: a replay keeps one across
/// its batches and writes it when it grows large, at an erasure, and at the end, so a
/// usage row is written once instead of once a batch; the projector flushes every batch.
pub(crate) async fn fold_into(
    conn: &mut PgConnection,
    events: &[Decoded<'_>],
    fold: &mut Fold,
) -> Result<(), ProjectionError> {
    let mut unknown: Vec<&str> = events
        .iter()
        .filter(|e| matches!(e.event, Event::Meter(_)))
        .map(|e| e.stored.aggregate_id.as_str())
        .filter(|m| !fold.last.contains_key(*m))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    if !unknown.is_empty() {
        let known: Vec<(String, i64)> = sqlx::query_as(
            "select meter_id, last_sequence from usage_meters where meter_id = any($1)",
        )
        .bind(&unknown)
        .fetch_all(&mut *conn)
        .await?;
        fold.last.extend(known);
    }
    for event in events {
        match &event.event {
            Event::Meter(meter_event) => fold.add(event, meter_event)?,
            Event::User(user_event) => {
                // usage is not personal on its own, but it is the user's: it goes with them
                if erases(user_event) {
                    // an erasure deletes rows: what is folded so far is written first
                    fold.flush(conn).await?;
                    sqlx::query("delete from usage_daily where user_id = $1")
                        .bind(event.uuid()?)
                        .execute(&mut *conn)
                        .await?;
                }
            }
            Event::Session(_)
            | Event::Conversation(_)
            | Event::Upload(_)
            | Event::ApiKey(_)
            | Event::EmailProbe(_) => {}
        }
    }
    if fold.sums.len() >= REPLAY_FLUSH_AT || fold.moved.len() >= REPLAY_FLUSH_AT {
        fold.flush(conn).await?;
    }
    if fold.moved.is_empty() && fold.last.len() >= 4 * REPLAY_FLUSH_AT {
        fold.last.clear(); // written: read again when needed
    }
    Ok(())
}

/// Usage events summed in memory, not yet written.
#[derive(Default)]
pub struct Fold {
    /// Each meter's last applied sequence (the stored one, then the folded one).
    last: HashMap<String, i64>,
    /// The meters whose sequence moved and is not written yet.
    moved: HashMap<String, i64>,
    /// `(user, day, kind)` → (amount, records) to add.
    sums: HashMap<(Uuid, NaiveDate, String), (i64, i64)>,
}

impl Fold {
    fn add(
        &mut self,
        event: &Decoded<'_>,
        meter_event: &MeterEvent,
    ) -> Result<(), ProjectionError> {
        let meter = &event.stored.aggregate_id;
        if !event.is_next(self.last.get(meter).copied(), format_args!("meter {meter}"))? {
            return Ok(());
        }
        let sequence = event.sequence();
        match meter_event {
            MeterEvent::UsageRecorded {
                user_id,
                day,
                kind,
                amount,
                ..
            } => {
                let sum = self.sums.entry((*user_id, *day, kind.clone())).or_default();
                sum.0 += *amount as i64;
                sum.1 += 1;
            }
        }
        self.last.insert(meter.clone(), sequence);
        self.moved.insert(meter.clone(), sequence);
        Ok(())
    }

    pub(crate) async fn flush(&mut self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        if !self.sums.is_empty() {
            let mut users = Vec::with_capacity(self.sums.len());
            let mut days = Vec::with_capacity(self.sums.len());
            let mut kinds = Vec::with_capacity(self.sums.len());
            let mut totals = Vec::with_capacity(self.sums.len());
            let mut records = Vec::with_capacity(self.sums.len());
            for ((user, day, kind), (total, count)) in self.sums.drain() {
                users.push(user);
                days.push(day);
                kinds.push(kind);
                totals.push(total);
                records.push(count);
            }
            sqlx::query(
                "insert into usage_daily (user_id, day, kind, total, records) \
                 select * from unnest($1::uuid[], $2::date[], $3::text[], $4::bigint[], $5::bigint[]) \
                 on conflict (user_id, day, kind) do update \
                 set total = usage_daily.total + excluded.total, \
                     records = usage_daily.records + excluded.records",
            )
            .bind(&users)
            .bind(&days)
            .bind(&kinds)
            .bind(&totals)
            .bind(&records)
            .execute(&mut *conn)
            .await?;
        }
        if !self.moved.is_empty() {
            let (ids, sequences): (Vec<String>, Vec<i64>) = self.moved.drain().unzip();
            sqlx::query(
                "insert into usage_meters (meter_id, last_sequence) \
                 select * from unnest($1::text[], $2::bigint[]) \
                 on conflict (meter_id) do update set last_sequence = excluded.last_sequence",
            )
            .bind(&ids)
            .bind(&sequences)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

pub async fn clear(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("delete from usage_daily")
        .execute(&mut *conn)
        .await?;
    sqlx::query("delete from usage_meters")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DailyUsage {
    pub day: NaiveDate,
    pub kind: String,
    pub total: i64,
    pub records: i64,
}

/// A user's usage from `since` (inclusive), newest day first.
pub async fn for_user<'e>(
    db: impl PgExecutor<'e>,
    user_id: Uuid,
    since: NaiveDate,
) -> Result<Vec<DailyUsage>, sqlx::Error> {
    sqlx::query_as(
        "select day, kind, total, records from usage_daily where user_id = $1 and day >= $2 \
         order by day desc, kind",
    )
    .bind(user_id)
    .bind(since)
    .fetch_all(db)
    .await
}

/// Everyone's usage per day and kind from `since` (for admins).
pub async fn totals<'e>(
    db: impl PgExecutor<'e>,
    since: NaiveDate,
) -> Result<Vec<DailyUsage>, sqlx::Error> {
    sqlx::query_as(
        "select day, kind, sum(total)::bigint as total, sum(records)::bigint as records from usage_daily \
         where day >= $1 group by day, kind order by day desc, kind",
    )
    .bind(since)
    .fetch_all(db)
    .await
}
