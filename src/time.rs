//! Time as keyhold stores it: integer microseconds since the Unix epoch,
//! shown as RFC 3339 UTC with microseconds.

use chrono::{DateTime, SecondsFormat, Utc};

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

/// RFC 3339, UTC, microsecond precision (`2026-11-28T23:17:20.123456Z`).
pub(crate) fn to_rfc3339(us: i64) -> String {
    match DateTime::<Utc>::from_timestamp_micros(us) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Micros, true),
        None => format!("@{us}us"),
    }
}

/// Parses RFC 3339 (any offset) into microseconds since the epoch.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc).timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_keeps_microseconds() {
        let us = 1_764_371_840_123_456;
        let s = to_rfc3339(us);
        assert!(s.ends_with('Z'), "{s}");
        assert_eq!(parse_rfc3339(&s), Some(us));
    }
}
