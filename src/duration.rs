//! Durations people write: `90`, `90s`, `15m`, `1h30m`, `2h`, `7d`,
//! `2w`, `1w 2d`. A bare number is seconds; otherwise one or more parts,
//! each a whole number and a unit, the units from largest to smallest,
//! each at most once. Used by every duration flag (`--ttl`, `--wait`,
//! `--overlap`, `--expiring`, `--recovery-window`, the server's timeouts),
//! the `expiring_within` query parameter and `KEYHOLD_KEY_COMMAND_TIMEOUT`.
//!
//! Hand-written rather than a crate: five units, no fractions, so the
//! grammar fits in a loop and every input is either exactly understood or
//! refused with the accepted forms. [`ttl`] and [`up_to_ten_years`] are
//! the clap value parsers of the flags with a range, so an out-of-range
//! value is a usage error (exit 2) like any other bad value.
//!
//! Not for: the reveal rate (`N/min`, see `limiter`).

use std::fmt;
use std::str::FromStr;

/// A whole number of seconds parsed from a human duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(pub u64);

/// The forms accepted, said in every refusal.
const FORMS: &str = "write a whole number of seconds, or whole numbers each with a unit, \
                     largest first: s (seconds), m (minutes), h (hours), d (days), w (weeks), \
                     e.g. 90, 90s, 15m, 1h30m, 12h, 7d, 30d, 2w";

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a duration: {FORMS}")]
pub struct DurationError(String);

/// The units, largest first: the spellings of each and its seconds.
const UNITS: [(&[&str], u64); 5] = [
    (&["w", "week", "weeks"], 604_800),
    (&["d", "day", "days"], 86_400),
    (&["h", "hour", "hours"], 3600),
    (&["m", "min", "mins", "minute", "minutes"], 60),
    (&["s", "sec", "secs", "second", "seconds"], 1),
];

impl FromStr for Seconds {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Seconds, DurationError> {
        let err = || DurationError(s.chars().take(40).collect());
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(err());
        }
        if rest.bytes().all(|b| b.is_ascii_digit()) {
            return rest.parse().map(Seconds).map_err(|_| err());
        }
        let mut total: u64 = 0;
        // Index into UNITS of the next unit allowed (largest first, each once).
        let mut next_unit = 0;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
            if digits == 0 {
                return Err(err());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| err())?;
            rest = rest[digits..].trim_start();
            let word_len = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            let word = &rest[..word_len];
            rest = rest[word_len..].trim_start();
            let at = UNITS
                .iter()
                .position(|(names, _)| names.contains(&word))
                .ok_or_else(err)?;
            if at < next_unit {
                return Err(err());
            }
            next_unit = at + 1;
            total = n
                .checked_mul(UNITS[at].1)
                .and_then(|part| total.checked_add(part))
                .ok_or_else(err)?;
        }
        Ok(Seconds(total))
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} s", self.0)
    }
}

/// The longest ttl, overlap or recovery window keyhold stores, in
/// seconds: ten years (a key's or token's `ttl_seconds`, a rotation's
/// `overlap_seconds`).
pub(crate) const MAX_TTL_SECONDS: i64 = 10 * 365 * 24 * 3600;

/// Ten years, the longest ttl or overlap keyhold stores.
pub(crate) const TEN_YEARS: u64 = MAX_TTL_SECONDS as u64;

/// Why a duration flag with a range refused its value (clap prints it
/// after the flag's name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RangeError {
    #[error(transparent)]
    NotADuration(#[from] DurationError),
    #[error(
        "a ttl is from 1 s to 10 years ({TEN_YEARS} s), e.g. 90d; leave the flag out for no expiry"
    )]
    Ttl,
    #[error("at most 10 years ({TEN_YEARS} s)")]
    OverTenYears,
}

/// The value parser of a `--ttl`: a duration from 1 s to 10 years.
pub(crate) fn ttl(s: &str) -> Result<Seconds, RangeError> {
    let d: Seconds = s.parse()?;
    if d.0 == 0 || d.0 > TEN_YEARS {
        return Err(RangeError::Ttl);
    }
    Ok(d)
}

/// The value parser of a duration from 0 to 10 years (`--overlap`).
pub(crate) fn up_to_ten_years(s: &str) -> Result<Seconds, RangeError> {
    let d: Seconds = s.parse()?;
    if d.0 > TEN_YEARS {
        return Err(RangeError::OverTenYears);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_combinations_and_bare_seconds() {
        for (text, secs) in [
            ("90", 90),
            ("90s", 90),
            ("15m", 900),
            ("1h30m", 5400),
            ("1h 30m", 5400),
            ("2h", 7200),
            ("12h", 43_200),
            ("7d", 604_800),
            ("30d", 2_592_000),
            ("2w", 1_209_600),
            ("1w2d3h4m5s", 604_800 + 172_800 + 10_800 + 240 + 5),
            (" 7 days ", 604_800),
            ("1 hour 30 minutes", 5400),
            ("0", 0),
            ("0s", 0),
        ] {
            assert_eq!(text.parse::<Seconds>(), Ok(Seconds(secs)), "{text}");
        }
    }

    #[test]
    fn everything_else_is_refused() {
        for bad in [
            "",
            " ",
            "d",
            "1.5h",
            "-3s",
            "10x",
            "30y",
            "1h30",
            "30m1h",
            "1h1h",
            "1m1min",
            "h30m",
            "10 parsecs",
            "99999999999999999999w",
            "99999999999999999999",
        ] {
            let e = bad.parse::<Seconds>().unwrap_err().to_string();
            assert!(e.contains("1h30m"), "{bad}: {e}");
        }
        assert!(u64::MAX.to_string().parse::<Seconds>().is_ok());
        assert!(format!("{}w", u64::MAX / 2).parse::<Seconds>().is_err());
        assert!(format!("{}s1s", u64::MAX).parse::<Seconds>().is_err());
    }

    #[test]
    fn a_ttl_is_from_one_second_to_ten_years() {
        assert_eq!(ttl("1s"), Ok(Seconds(1)));
        assert_eq!(ttl("1h30m"), Ok(Seconds(5400)));
        assert_eq!(
            ttl("0").unwrap_err().to_string(),
            "a ttl is from 1 s to 10 years (315360000 s), e.g. 90d; leave the flag out for no \
             expiry"
        );
        assert!(ttl("0s").is_err());
        assert!(ttl("600w").is_err());
        assert!(ttl("10x")
            .unwrap_err()
            .to_string()
            .contains("not a duration"));
        assert_eq!(up_to_ten_years("0"), Ok(Seconds(0)));
        assert_eq!(
            up_to_ten_years("600w").unwrap_err().to_string(),
            "at most 10 years (315360000 s)"
        );
    }
}
