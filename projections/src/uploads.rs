//! Files users stored (`uploads`), and the queries the API runs. Guarded by the upload's
//! sequence.

use aggregates::upload::UploadEvent;
use aggregates::user::UserEvent;
use aggregates::Event;
use chrono::{DateTime, Utc};
use eventstore::crypto::ERASED;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::decoded::erases;
use crate::{Decoded, ProjectionError};

pub async fn apply(conn: &mut PgConnection, event: &Decoded<'_>) -> Result<(), ProjectionError> {
    let e = match &event.event {
        Event::User(e) => return apply_user(conn, event, e).await,
        Event::Upload(e) => e,
        Event::Session(_)
        | Event::Meter(_)
        | Event::Conversation(_)
        | Event::ApiKey(_)
        | Event::EmailProbe(_) => return Ok(()),
    };
    let id = event.uuid()?;
    let seq = event.sequence();
    if !event.is_next_in(conn, "uploads").await? {
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
            .bind(*size as i64)
            .bind(sha256)
            .bind(event.stored.recorded_at)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
        }
        UploadEvent::UploadDeleted { .. } => {
            sqlx::query("update uploads set deleted_at = $2, last_sequence = $3 where id = $1")
                .bind(id)
                .bind(event.stored.recorded_at)
                .bind(seq)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// An erased user's files lose their names and are gone.
async fn apply_user(
    conn: &mut PgConnection,
    event: &Decoded<'_>,
    user_event: &UserEvent,
) -> Result<(), ProjectionError> {
    if !erases(user_event) {
        return Ok(());
    }
    sqlx::query(
        "update uploads set filename = $2, deleted_at = coalesce(deleted_at, $3) \
         where owner_id = $1",
    )
    .bind(event.uuid()?)
    .bind(ERASED)
    .bind(event.stored.recorded_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn clear(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("delete from uploads").execute(conn).await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
