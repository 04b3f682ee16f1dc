//! Connecting to PostgreSQL, creating the database when it is missing, and migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

/// The migrations in the workspace's `migrations/` folder, embedded in the binary.
///
/// Migrations a newer release applied are ignored, not refused (`ignore_missing`): during a
/// rolling upgrade the processes of the release before keep starting against the migrated
/// database. That is safe because migrations only add (docs/DEPLOYMENT.md, "Upgrading").
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("../migrations")
};

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("DATABASE_URL is not a PostgreSQL URL: {0}")]
    BadUrl(#[source] sqlx::Error),
    #[error("cannot reach PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot create database {name}: {source}")]
    Create {
        name: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Parse `DATABASE_URL` with statement logging turned down: statements are traced at
/// debug level, never at info (they may carry personal data as parameters).
pub fn connect_options(url: &str) -> Result<PgConnectOptions, DatabaseError> {
    let options = PgConnectOptions::from_str(url).map_err(DatabaseError::BadUrl)?;
    Ok(options
        .log_statements(log::LevelFilter::Debug)
        .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(1)))
}

/// Create the database named in `url` when it does not exist yet.
///
/// Safe when any number of processes start at once on a fresh database: the losers of
/// the race see the database as existing, whichever way PostgreSQL tells them.
pub async fn ensure_database(url: &str) -> Result<(), DatabaseError> {
    let options = connect_options(url)?;
    let name = options.get_database().unwrap_or("postgres").to_owned();
    match PgConnection::connect_with(&options).await {
        Ok(conn) => {
            let _ = conn.close().await;
            return Ok(());
        }
        // 3D000: invalid_catalog_name (the database does not exist)
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {}
        Err(e) => return Err(DatabaseError::Connect(e)),
    }
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres"))
        .await
        .map_err(DatabaseError::Connect)?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    let created = sqlx::query(&format!("create database {quoted}"))
        .execute(&mut admin)
        .await;
    let _ = admin.close().await;
    match created {
        Ok(_) => {
            tracing::info!(database = %name, "Created the database");
            Ok(())
        }
        // Another process created it meanwhile. PostgreSQL says so with 42P04
        // (duplicate_database) when the other CREATE DATABASE had committed before ours
        // looked, but with 23505 (unique_violation on pg_database_datname_index) when both
        // were in flight at once: ours then waited on the other's catalogue row and found it
        // committed. Both mean the database exists.
        Err(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) =>
        {
            tracing::debug!(database = %name, "Another process created the database");
            Ok(())
        }
        Err(source) => Err(DatabaseError::Create { name, source }),
    }
}

/// A pool for the app. Connections are made lazily so that a process starts while
/// PostgreSQL is briefly away; health checks report it.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DatabaseError> {
    connect_with_timeout(url, max_connections, Duration::from_secs(5)).await
}

/// [`connect`] with how long a request may wait for a free connection before it is
/// answered 503.
pub async fn connect_with_timeout(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, DatabaseError> {
    let options = connect_options(url)?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        // no ping before every acquire: it doubled the round trips of every query (the
        // read path's profile, BENCHMARKS.md). A connection that died with its server
        // fails its next query with an I/O error, which is "unavailable" (503 with
        // Retry-After, retried by the workers), and sqlx drops it from the pool.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(DatabaseError::Connect)
}

/// Apply every pending migration.
///
/// Processes that start together all call this: sqlx's migrator takes a session advisory
/// lock (keyed by the database name) before it even creates `_sqlx_migrations`, so they
/// take turns and each one after the first finds nothing left to do. `MIGRATOR.locking`
/// is sqlx's default; a test keeps it on.
pub async fn migrate(pool: &PgPool) -> Result<(), DatabaseError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrator_locks_so_that_processes_starting_together_take_turns() {
        assert!(MIGRATOR.locking);
        assert!(
            MIGRATOR.ignore_missing,
            "a process of the release before must start on a database a newer one migrated"
        );
    }
}
