//! Files users stored (`uploads`), and the queries the API runs. Guarded by the upload's
//! sequence.

use aggregates::upload::{UploadEvent, AGGREGATE_TYPE};
use aggregates::user::{self, UserEvent};
use chrono::{DateTime, Utc};
use eventstore::crypto::ERASED;
use eventstore::StoredEvent;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::ProjectionError;

pub async fn apply(conn: &mut PgConnection, event: &StoredEvent) -> Result<(), ProjectionError> {
    if event.aggregate_type == user::AGGREGATE_TYPE {
        let e: UserEvent = crate::read_model::payload(event)?;
        if let UserEvent::UserErased { .. } = e {
            let owner: Uuid = event
                .aggregate_id
                .parse()
                .map_err(|err| ProjectionError::poison(event, format!("aggregate id: {err}")))?;
            sqlx::query("update uploads set filename = $2, deleted_at = coalesce(deleted_at, $3) where owner_id = $1")
                .bind(owner)
                .bind(ERASED)
                .bind(event.recorded_at)
                .execute(&mut *conn)
                .await?;
        }
        return Ok(());
    }
    if event.aggregate_type != AGGREGATE_TYPE {
        return Ok(());
    }
    let e: UploadEvent = crate::read_model::payload(event)?;
    let id: Uuid = event
        .aggregate_id
        .parse()
        .map_err(|err| ProjectionError::poison(event, format!("aggregate id: {err}")))?;
    let seq = event.sequence as i64;
    let last: Option<i64> = sqlx::query_scalar("select last_sequence from uploads where id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    if last.is_some_and(|l| l >= seq) {
        return Ok(());
    }
    match e {
        UploadEvent::UploadStored {
            owner_id,
            filename,
            content_type,
            size,
            sha256,
        } => {
            sqlx::query(
                "insert into uploads (id, owner_id, filename, content_type, size, sha256, created_at, last_sequence) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (id) do nothing",
            )
            .bind(id)
            .bind(owner_id)
            .bind(filename)
            .bind(content_type)
            .bind(size as i64)
            .bind(sha256)
            .bind(event.recorded_at)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
        }
        UploadEvent::UploadDeleted { .. } => {
            sqlx::query("update uploads set deleted_at = $2, last_sequence = $3 where id = $1")
                .bind(id)
                .bind(event.recorded_at)
                .bind(seq)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

pub async fn clear(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("delete from uploads").execute(conn).await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UploadRow {
    pub id: Uuid,
    #[serde(skip)]
    pub owner_id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub created_at: DateTime<Utc>,
}

const SELECT: &str =
    "select id, owner_id, filename, content_type, size, sha256, created_at from uploads";

pub async fn owned<'e>(
    db: impl PgExecutor<'e>,
    owner: Uuid,
    id: Uuid,
) -> Result<Option<UploadRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{SELECT} where id = $1 and owner_id = $2 and deleted_at is null"
    ))
    .bind(id)
    .bind(owner)
    .fetch_optional(db)
    .await
}

pub async fn list<'e>(db: impl PgExecutor<'e>, owner: Uuid) -> Result<Vec<UploadRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{SELECT} where owner_id = $1 and deleted_at is null order by created_at desc limit 500"
    ))
    .bind(owner)
    .fetch_all(db)
    .await
}

/// Every file hash a user's uploads (live or not) point at (for erasure).
pub async fn hashes_of<'e>(
    db: impl PgExecutor<'e>,
    owner: Uuid,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("select distinct sha256 from uploads where owner_id = $1")
        .bind(owner)
        .fetch_all(db)
        .await
}

/// Whether anyone but `owner` keeps a live upload of the bytes `sha256`.
pub async fn kept_by_others<'e>(
    db: impl PgExecutor<'e>,
    sha256: &str,
    owner: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (select 1 from uploads where sha256 = $1 and owner_id <> $2 and deleted_at is null)",
    )
    .bind(sha256)
    .bind(owner)
    .fetch_one(db)
    .await
}
