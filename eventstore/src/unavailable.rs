//! Telling "PostgreSQL is away for a moment" from "this statement is wrong".
//!
//! A restart (`pg_ctl restart -m fast`) ends every connection with SQLSTATE 57P01, which
//! sqlx reports as a database error, not an I/O error; a failover, a full connection table
//! or a serialization failure look alike to a caller: try again shortly. The API answers
//! these 503 with `Retry-After` (never 500), projectors and workers retry them for as long
//! as they last instead of counting them against an event.

/// Whether `e` says the database could not be used just now, rather than that the
/// statement or the data is wrong.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_unavailable_code(&code)),
        _ => false,
    }
}

/// SQLSTATEs that mean "not now" (PostgreSQL's appendix A).
pub fn is_unavailable_code(code: &str) -> bool {
    // 08: connection exception; 53: insufficient resources (too many connections, disk
    // full, out of memory); 57P01-57P05: admin/crash shutdown, cannot connect now, idle
    // session timeout; 40001/40P01: serialization failure, deadlock (the transaction was
    // rolled back and may simply be run again); 25006: read-only transaction (a standby
    // after a failover); 55P03: lock not available.
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || matches!(code, "40001" | "40P01" | "25006" | "55P03")
}

/// The same question about an error boxed by cqrs-es or postgres-es.
pub fn is_unavailable_boxed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(sqlx) = c.downcast_ref::<sqlx::Error>() {
            return is_unavailable(sqlx);
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdowns_and_connection_failures_are_unavailable_but_bad_statements_are_not() {
        for code in [
            "57P01", "57P02", "57P03", "08006", "08001", "53300", "40001", "25006",
        ] {
            assert!(is_unavailable_code(code), "{code}");
        }
        for code in ["23505", "22021", "42P01", "42601", "22P02"] {
            assert!(!is_unavailable_code(code), "{code}");
        }
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(sqlx::Error::PoolClosed);
        assert!(is_unavailable_boxed(boxed.as_ref()));
    }
}
