//! Durations people write: `90`, `90s`, `15m`, `12h`, `30d`, `2w` (a
//! number and at most one unit; a bare number is seconds). Used by
//! `keys add --ttl` and `exec --wait`.
//!
//! Hand-written rather than a crate: five units, no fractions, no
//! combinations (`1h30m`), so the grammar fits in a match and every input
//! is either exactly understood or refused with the accepted forms.

use std::fmt;
use std::str::FromStr;

/// A whole number of seconds parsed from a human duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(pub u64);

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a duration: write a whole number with an optional unit, s (seconds), m \
     (minutes), h (hours), d (days) or w (weeks), e.g. 90, 15m, 12h, 30d"
)]
pub struct DurationError(String);

impl FromStr for Seconds {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Seconds, DurationError> {
        let err = || DurationError(s.chars().take(40).collect());
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(err());
        }
        let n: u64 = num.parse().map_err(|_| err())?;
        let per = match unit.trim() {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 604_800,
            _ => return Err(err()),
        };
        n.checked_mul(per).map(Seconds).ok_or_else(err)
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} s", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds() {
        for (text, secs) in [
            ("90", 90),
            ("90s", 90),
            ("15m", 900),
            ("12h", 43_200),
            ("30d", 2_592_000),
            ("2w", 1_209_600),
            (" 7 days ", 604_800),
            ("0", 0),
        ] {
            assert_eq!(text.parse::<Seconds>(), Ok(Seconds(secs)), "{text}");
        }
    }

    #[test]
    fn everything_else_is_refused() {
        for bad in [
            "",
            "d",
            "1.5h",
            "-3s",
            "1h30m",
            "30y",
            "10 parsecs",
            "99999999999999999999w",
        ] {
            let e = bad.parse::<Seconds>().unwrap_err().to_string();
            assert!(e.contains("30d"), "{bad}: {e}");
        }
        assert!(u64::MAX.to_string().parse::<Seconds>().is_ok());
        assert!(format!("{}w", u64::MAX / 2).parse::<Seconds>().is_err());
    }
}
