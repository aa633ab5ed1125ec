//! Getting user-provided strings into the collector config unchanged: OTTL string literals, RE2
//! literal quoting, and the collector's `${...}` config expansion (which must never run on user
//! input: `${env:...}` / `${file:...}` would read the pod's env and files).

use serde_json::Value;

/// Escapes `$` as `$$`: the collector's config resolver turns `$$` back into `$` after
/// expansion, so user text can never trigger `${env:...}` or `${file:...}`.
pub fn confmap(s: &str) -> String {
    s.replace('$', "$$")
}

/// Escapes every string value (not the keys, which the resolver does not expand) of a user-given
/// component configuration with [`confmap`].
pub fn confmap_value(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(confmap(s)),
        Value::Array(items) => Value::Array(items.iter().map(confmap_value).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), confmap_value(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// An OTTL string literal (double-quoted, Go escapes) holding `s`, with `$` escaped for the
/// config resolver.
pub fn ottl_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str(r#"\""#),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\t' => out.push_str(r"\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    confmap(&out)
}

/// Quotes every RE2 metacharacter of `s` (as Go's `regexp.QuoteMeta` does), so the result
/// matches `s` literally.
pub fn regex_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One regex matching any of `patterns` (each kept as written, so each keeps its own anchors).
pub fn any_of(patterns: &[String]) -> String {
    patterns
        .iter()
        .map(|p| format!("(?:{p})"))
        .collect::<Vec<_>>()
        .join("|")
}

/// One anchored regex matching exactly one of `names`.
pub fn exactly_one_of(names: &[String]) -> String {
    let alternatives: Vec<String> = names.iter().map(|n| regex_literal(n)).collect();
    format!("^(?:{})$", alternatives.join("|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ottl_strings_escape_quotes_backslashes_and_dollars() {
        assert_eq!(ottl_string(r#"^a\.b"c$"#), r#""^a\\.b\"c$$""#);
        assert_eq!(ottl_string("x\ny"), r#""x\ny""#);
    }

    #[test]
    fn literal_regexes_match_only_the_name() {
        let re = regex::Regex::new(&exactly_one_of(&["a.b".into(), "c++".into()])).unwrap();
        assert!(re.is_match("a.b") && re.is_match("c++"));
        assert!(!re.is_match("axb") && !re.is_match("a.bc") && !re.is_match("c"));
    }

    #[test]
    fn user_values_cannot_expand_env_vars() {
        let v = serde_json::json!({"k": ["${env:SECRET}", 1], "${x}": "$"});
        assert_eq!(
            confmap_value(&v),
            serde_json::json!({"k": ["$${env:SECRET}", 1], "${x}": "$$"})
        );
    }
}
