//! Duration strings of the simulator's configuration: `30s`, `10m`, `1h30m`, `500ms`, `1.5s` (the
//! grammar the Simulation CRD admits), plus a bare number of seconds (`90`) for the command line.
//!
//! Arithmetic is checked: no input makes the parser panic.

use std::time::Duration;

const NANOS_PER_MS: u128 = 1_000_000;
const NANOS_PER_S: u128 = 1_000 * NANOS_PER_MS;

/// Parses a duration such as `1h30m`, `90s`, `0.5s`, `250ms` or `90` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid =
        || format!("invalid duration {text:?}: expected terms like 30s, 10m, 1h30m or 500ms");
    if text.is_empty() {
        return Err(invalid());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| invalid());
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let unit_len = rest[number_len..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - number_len);
        let unit_nanos = match &rest[number_len..number_len + unit_len] {
            "ms" => NANOS_PER_MS,
            "s" => NANOS_PER_S,
            "m" => 60 * NANOS_PER_S,
            "h" => 3_600 * NANOS_PER_S,
            _ => return Err(invalid()),
        };
        let term = term_nanos(&rest[..number_len], unit_nanos).ok_or_else(invalid)?;
        total = total.checked_add(term).ok_or_else(invalid)?;
        rest = &rest[number_len + unit_len..];
    }
    let nanos = u64::try_from(total).map_err(|_| format!("duration {text:?} is too long"))?;
    Ok(Duration::from_nanos(nanos))
}

/// `number × unit` in nanoseconds for a decimal `number` (`12`, `0.5`); `None` when malformed or
/// absurdly large. Fractions finer than a nanosecond are dropped.
fn term_nanos(number: &str, unit_nanos: u128) -> Option<u128> {
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) if !w.is_empty() && !f.is_empty() => (w, f),
        Some(_) => return None,
        None => (number, ""),
    };
    if whole.len() > 20 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole_nanos = whole.parse::<u128>().ok()?.checked_mul(unit_nanos)?;
    let digits = &fraction[..fraction.len().min(18)];
    let fraction_nanos = if digits.is_empty() {
        0
    } else {
        let scale = 10u128.pow(u32::try_from(digits.len()).ok()?);
        digits.parse::<u128>().ok()?.checked_mul(unit_nanos)? / scale
    };
    whole_nanos.checked_add(fraction_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_terms() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("2m30s"), Ok(Duration::from_secs(150)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse_duration("0.25h"), Ok(Duration::from_secs(900)));
    }

    #[test]
    fn bare_numbers_are_seconds() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_malformed_or_huge_input_without_panicking() {
        for bad in [
            "",
            "s",
            "5 m",
            "1d",
            "-5s",
            "1h-3m",
            "m5",
            ".5s",
            "5.s",
            "1..5s",
            "10x",
            "1h30",
            "99999999999999999999999h",
            "18446744073709551616",
            "600000000000h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
