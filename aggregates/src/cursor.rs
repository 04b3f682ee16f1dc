//! The place of an event in the log's global order.
//!
//! The log is ordered by the pair (writing transaction id, position). Positions come from
//! an identity column and are assigned at INSERT, so a transaction that appends two events
//! while another commits between them gets positions 13 and 15 and the other 14; the log
//! order is then 13, 15, 14. A cursor is therefore always the pair, compared as a pair.
//!
//! On the wire a cursor is one opaque string: both numbers as 16 lower-case hex digits
//! joined by `-`. Fixed width makes the strings sort the same way the cursors do.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A place in the log: the writing transaction's id (`xid8`) and the event's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogCursor {
    /// The id of the transaction that wrote the event (PostgreSQL `xid8`, epoch included).
    pub transaction_id: u64,
    /// The event's global position (an identity column; unique, not monotonic in log order).
    pub position: u64,
}

impl LogCursor {
    /// The cursor before the first event of any log.
    pub const START: LogCursor = LogCursor {
        transaction_id: 0,
        position: 0,
    };

    pub fn new(transaction_id: u64, position: u64) -> Self {
        Self {
            transaction_id,
            position,
        }
    }
}

impl fmt::Display for LogCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{:016x}", self.transaction_id, self.position)
    }
}

/// Why a string is not a cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a log cursor: expected two groups of 16 hex digits joined by '-'")]
pub struct InvalidCursor;

impl FromStr for LogCursor {
    type Err = InvalidCursor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tx, pos) = s.trim().split_once('-').ok_or(InvalidCursor)?;
        if tx.len() != 16 || pos.len() != 16 {
            return Err(InvalidCursor);
        }
        let transaction_id = u64::from_str_radix(tx, 16).map_err(|_| InvalidCursor)?;
        let position = u64::from_str_radix(pos, 16).map_err(|_| InvalidCursor)?;
        Ok(Self::new(transaction_id, position))
    }
}

impl Serialize for LogCursor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// On the wire a cursor is one string (see the module docs), so its schema is written by
/// hand rather than derived from the two numbers.
impl schemars::JsonSchema for LogCursor {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LogCursor".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A place in the log's global order: the writing transaction's id and \
                the event's position, each as 16 lower-case hex digits, joined by `-`. Opaque, \
                but the strings sort in log order.",
            "type": "string",
            "pattern": "^[0-9a-f]{16}-[0-9a-f]{16}$",
            "examples": ["00000000000002e0-0000000000000001"]
        })
    }
}

impl<'de> Deserialize<'de> for LogCursor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_through_its_string() {
        let c = LogCursor::new(0x1234, 99);
        let s = c.to_string();
        assert_eq!(s, "0000000000001234-0000000000000063");
        assert_eq!(s.parse::<LogCursor>(), Ok(c));
    }

    #[test]
    fn cursors_order_by_transaction_before_position() {
        // The example from the module docs: 13 and 15 in one transaction, 14 in a later one.
        let a13 = LogCursor::new(100, 13);
        let a15 = LogCursor::new(100, 15);
        let b14 = LogCursor::new(101, 14);
        let mut v = vec![b14, a15, a13];
        v.sort();
        assert_eq!(v, vec![a13, a15, b14]);
        // and the strings sort the same way
        let mut s: Vec<String> = [b14, a15, a13].iter().map(|c| c.to_string()).collect();
        s.sort();
        assert_eq!(s, vec![a13.to_string(), a15.to_string(), b14.to_string()]);
    }

    #[test]
    fn garbage_is_not_a_cursor() {
        for bad in [
            "",
            "12",
            "x-y",
            "0000000000001234",
            "000000000000123g-0000000000000063",
        ] {
            assert_eq!(bad.parse::<LogCursor>(), Err(InvalidCursor), "{bad}");
        }
    }
}
