//! Durations in specs: Go/Kubernetes-style strings (`30s`, `5m`, `1h30m`, `500ms`), validated at
//! admission by a pattern plus a CEL bound, and parsed here for the controllers.

use std::time::Duration;

use kube::core::{Message, Rule};

/// The pattern every duration field carries in the schema: one or more `<number><unit>` terms.
pub const PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// A CEL rule bounding a duration field to `[min, max]`; both bounds are duration literals.
/// The apiserver evaluates it with CEL's `duration()`, the same grammar [`parse`] accepts.
pub fn between(min: &str, max: &str) -> Rule {
    Rule::new(format!(
        "duration(self) >= duration('{min}') && duration(self) <= duration('{max}')"
    ))
    .message(Message::Message(format!(
        "must be a duration between {min} and {max}, e.g. 30s, 5m or 1h30m"
    )))
}

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("invalid duration {0:?}: expected terms like 30s, 5m, 1h30m or 500ms")]
    Invalid(String),
}

/// Parses a duration string such as `1h30m`, `90s`, `0.5s` or `250ms`.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = || DurationError::Invalid(s.to_string());
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        if num_len == 0 {
            return Err(invalid());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| invalid())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        total += value * seconds_per_unit;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid())
}

/// Formats a whole number of seconds the way specs write durations (`90s` → `1m30s`).
pub fn format_secs(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn refuses_malformed_durations() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        for bad in ["10", "s", "5 m", "1d", "-5s", "1h-3m", "m5"] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn pattern_and_parser_agree() {
        // The schema pattern is what the apiserver enforces; the parser must accept all it accepts.
        for ok in ["30s", "1h30m", "0.5s", "100ms", "2h"] {
            assert!(parse(ok).is_ok());
        }
    }

    #[test]
    fn refuses_overflowing_durations() {
        assert!(parse("99999999999999999999h").is_err());
    }

    #[test]
    fn formats_seconds() {
        assert_eq!(format_secs(0), "0s");
        assert_eq!(format_secs(90), "1m30s");
        assert_eq!(format_secs(3600), "1h");
    }
}
