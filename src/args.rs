//! Flag value parsers the three binaries share, so `--timeout 0.5` means the
//! same thing, and is checked the same way, everywhere.

use std::time::Duration;

/// Longest time a flag may give: a year. Beyond any sensible setting, and
/// far from where adding it to the clock could overflow.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// A number of seconds, fractions allowed, from 0 to a year.
pub fn seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=MAX_SECONDS).contains(&value) => Ok(Duration::from_secs_f64(value)),
        _ => Err(format!(
            "`{text}` is not a number of seconds from 0 to a year (e.g. 60 or 0.5)"
        )),
    }
}

/// A rate per second: positive, and at least one a year.
pub fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 1.0 / MAX_SECONDS => Ok(value),
        _ => Err(format!("`{text}` is not a positive number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_accepts_fractions_and_rejects_the_unreasonable() {
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds("0"), Ok(Duration::ZERO));
        for bad in ["-1", "1e19", "NaN", "inf", "soon", ""] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rate_must_be_positive_and_finite() {
        assert_eq!(rate("2.5"), Ok(2.5));
        for bad in ["0", "-5", "1e-300", "inf", "NaN"] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }
}
