//! Durations in specs: Go/Kubernetes-style strings (`30s`, `5m`, `1h30m`, `500ms`), validated at
//! admission by a pattern plus a CEL bound, and parsed once, when the object is read, into a
//! [`SpecDuration`]: the rest of the code never holds an unparsed duration.

use std::borrow::Cow;
use std::sync::LazyLock;
use std::time::Duration;

use kube::core::{Message, Rule};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The pattern every duration field carries in the schema: one or more `<number><unit>` terms.
pub const PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";
/// The longest duration string a schema admits.
pub const MAX_LENGTH: u32 = 32;

static PATTERN_RE: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(PATTERN).expect("the duration pattern compiles"));

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

/// A duration as a spec writes it: the text (kept, so it serializes back exactly as written and a
/// copied spec never drifts) and its value. Its schema is a string with [`PATTERN`]; the bounds
/// are per field, with [`between`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpecDuration {
    text: String,
    value: Duration,
}

impl SpecDuration {
    /// Parses a duration string such as `1h30m`, `90s`, `0.5s` or `250ms`.
    pub fn parse(text: &str) -> Result<SpecDuration, DurationError> {
        Ok(SpecDuration {
            value: parse(text)?,
            text: text.to_string(),
        })
    }

    /// A whole number of seconds, written the way specs write it (`90` → `1m30s`).
    pub fn from_secs(secs: u64) -> SpecDuration {
        SpecDuration {
            text: format_secs(secs),
            value: Duration::from_secs(secs),
        }
    }

    /// The value.
    pub fn get(&self) -> Duration {
        self.value
    }

    /// The value in seconds.
    pub fn as_secs_f64(&self) -> f64 {
        self.value.as_secs_f64()
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for SpecDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for SpecDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, DurationError> {
        SpecDuration::parse(s)
    }
}

impl PartialEq<&str> for SpecDuration {
    /// Compares the text as written.
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl Serialize for SpecDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for SpecDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        SpecDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for SpecDuration {
    fn schema_name() -> Cow<'static, str> {
        "SpecDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": PATTERN,
            "maxLength": MAX_LENGTH,
        })
    }
}

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("invalid duration {0:?}: expected terms like 30s, 5m, 1h30m or 500ms")]
    Invalid(String),
}

/// Parses a duration string such as `1h30m`, `90s`, `0.5s` or `250ms`: exactly the strings
/// [`PATTERN`] admits (and whose value fits a [`Duration`]).
fn parse(s: &str) -> Result<Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = || DurationError::Invalid(s.to_string());
    if !PATTERN_RE.is_match(s) {
        return Err(invalid());
    }
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
    fn pattern_and_parser_agree_on_generated_strings() {
        // Every string over a small alphabet up to 4 characters: the parser accepts exactly what
        // the schema pattern (what the apiserver enforces) admits.
        let pattern = regex::Regex::new(PATTERN).expect("compiles");
        let alphabet = ['1', '0', '.', 'm', 's', 'h', '-', ' '];
        let mut strings = vec![String::new()];
        let mut checked = 0;
        for _ in 0..4 {
            strings = strings
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            for s in &strings {
                assert_eq!(
                    pattern.is_match(s),
                    parse(s).is_ok(),
                    "pattern and parser disagree on {s:?}"
                );
                checked += 1;
            }
        }
        assert!(checked > 4000);
    }

    #[test]
    fn spec_durations_serialize_as_written() {
        for text in ["90s", "1m30s", "0.5s", "250ms", "2h"] {
            let d: SpecDuration =
                serde_json::from_value(serde_json::json!(text)).expect("a valid duration");
            assert_eq!(serde_json::to_value(&d).expect("serializes"), text);
            assert_eq!(d.get(), parse(text).expect("parses"));
        }
        assert_eq!(
            SpecDuration::parse("1m30s").map(|d| d.get()),
            SpecDuration::parse("90s").map(|d| d.get())
        );
        let refused = serde_json::from_value::<SpecDuration>(serde_json::json!("10"));
        assert!(refused.is_err(), "a bare number is not a spec duration");
    }

    #[test]
    fn the_schema_carries_the_pattern() {
        let schema = schemars::schema_for!(SpecDuration);
        assert_eq!(schema.get("pattern"), Some(&serde_json::json!(PATTERN)));
        assert_eq!(
            schema.get("maxLength"),
            Some(&serde_json::json!(MAX_LENGTH))
        );
        assert_eq!(schema.get("type"), Some(&serde_json::json!("string")));
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
