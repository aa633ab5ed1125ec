//! The CRDs' CEL rules (`x-kubernetes-validations`) evaluated offline with cel-rust, plus the
//! Kubernetes CEL library functions the rules use that plain CEL lacks (`isURL`, `isQuantity`).
//! Transition rules (those reading `oldSelf`) describe updates; like the apiserver on create,
//! offline validation does not evaluate them.

use std::collections::HashMap;
use std::sync::Arc;

use ::cel::objects::{Key, Map};
use ::cel::{Context, Program};

/// A CEL value (re-exported from cel-rust).
pub use ::cel::Value;

/// The result of one rule on one value.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleOutcome {
    /// The rule holds.
    Holds,
    /// The rule evaluated to false: the value is refused.
    Violated,
    /// A transition rule (reads `oldSelf`): only an update can evaluate it.
    Transition,
    /// The rule could not be compiled or evaluated offline (the reason says why). Never taken as
    /// a pass.
    NotEvaluated(String),
}

/// Whether a rule reads `oldSelf` (a transition rule).
pub fn is_transition_rule(rule: &str) -> bool {
    // An identifier match, not a substring of e.g. `boldSelf`.
    regex::Regex::new(r"(^|[^A-Za-z0-9_])oldSelf([^A-Za-z0-9_]|$)")
        .is_ok_and(|re| re.is_match(rule))
}

/// Evaluates `rule` with `self` bound to `value`.
pub fn evaluate(rule: &str, value: &Value) -> RuleOutcome {
    if is_transition_rule(rule) {
        return RuleOutcome::Transition;
    }
    let program = match Program::compile(rule) {
        Ok(p) => p,
        Err(e) => return RuleOutcome::NotEvaluated(format!("does not compile: {e}")),
    };
    let mut ctx = Context::default();
    ctx.add_variable_from_value("self", value.clone());
    if let Err(e) = ctx.add_function("isURL", |s: Arc<String>| is_url(&s)) {
        return RuleOutcome::NotEvaluated(format!("isURL: {e:?}"));
    }
    if let Err(e) = ctx.add_function("isQuantity", |s: Arc<String>| is_quantity(&s)) {
        return RuleOutcome::NotEvaluated(format!("isQuantity: {e:?}"));
    }
    match program.execute(&ctx) {
        Ok(Value::Bool(true)) => RuleOutcome::Holds,
        Ok(Value::Bool(false)) => RuleOutcome::Violated,
        Ok(other) => RuleOutcome::NotEvaluated(format!("evaluates to {other:?}, not a bool")),
        Err(e) => RuleOutcome::NotEvaluated(format!("{e}")),
    }
}

/// Kubernetes' `isURL`: whether Go's `url.Parse` accepts the string. Go is lenient (a bare word
/// is a relative URL); it refuses control characters, bad `%` escapes, a missing scheme before
/// `:`, and a non-numeric port. Those are the cases checked here.
pub fn is_url(s: &str) -> bool {
    if s.chars().any(|c| (c as u32) < 0x20 || c as u32 == 0x7f) {
        return false;
    }
    if !percent_escapes_valid(s) {
        return false;
    }
    let rest = match s.split_once(':') {
        Some((scheme, rest)) if !scheme.contains('/') => {
            let valid = scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            if !valid {
                return false;
            }
            rest
        }
        _ => s,
    };
    let Some(after) = rest.strip_prefix("//") else {
        return true;
    };
    let authority = after.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = if host_port.starts_with('[') {
        match host_port.split_once(']') {
            Some((_, after)) => after.strip_prefix(':'),
            None => return false,
        }
    } else {
        host_port.rsplit_once(':').map(|(_, p)| p)
    };
    let host = host_port
        .strip_suffix(port.map_or("", |_| ""))
        .unwrap_or(host_port);
    let host_ok = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:[]%".contains(c) || !c.is_ascii());
    host_ok && port.is_none_or(|p| p.chars().all(|c| c.is_ascii_digit()))
}

fn percent_escapes_valid(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |j: usize| bytes.get(j).is_some_and(|b| b.is_ascii_hexdigit());
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// Kubernetes' `isQuantity`: a resource quantity such as `500m`, `128Mi`, `1.5`, `2e3`.
pub fn is_quantity(s: &str) -> bool {
    regex::Regex::new(
        r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$",
    )
    .is_ok_and(|re| re.is_match(s))
}

/// A CEL map from string keys.
pub fn map(entries: impl IntoIterator<Item = (String, Value)>) -> Value {
    let map: HashMap<Key, Value> = entries
        .into_iter()
        .map(|(k, v)| (Key::String(Arc::new(k)), v))
        .collect();
    Value::Map(Map { map: Arc::new(map) })
}

/// A CEL value of a JSON value without a schema: integers stay integers, other numbers are
/// doubles.
pub fn from_json(value: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match value {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::String(Arc::new(s.clone())),
        J::Array(items) => Value::List(Arc::new(items.iter().map(from_json).collect())),
        J::Object(fields) => map(fields.iter().map(|(k, v)| (k.clone(), from_json(v)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(rule: &str, value: serde_json::Value) -> RuleOutcome {
        evaluate(rule, &from_json(&value))
    }

    #[test]
    fn the_constructs_the_crd_rules_use_evaluate() {
        let spec = json!({"template": "topk", "keepPatterns": [], "requests": {"cpu": "500m"}});
        for rule in [
            "self.template == 'topk' || !has(self.topk)",
            "self.template == 'priority-filter' || size(self.keepPatterns) == 0",
            "(self.template == 'custom') == has(self.custom)",
            "!has(self.requests) || !('cpu' in self.requests) || isQuantity(string(self.requests['cpu']))",
            "!('memory' in self.requests)",
        ] {
            assert_eq!(eval(rule, spec.clone()), RuleOutcome::Holds, "{rule}");
        }
        assert_eq!(
            eval("self.template != 'topk' || has(self.topk)", spec.clone()),
            RuleOutcome::Violated
        );
        assert_eq!(
            eval(
                "!has(self.churnPerMinute) || self.churnPerMinute <= 60 * self.processes",
                json!({"churnPerMinute": 100000, "processes": 100})
            ),
            RuleOutcome::Violated
        );
    }

    #[test]
    fn durations_follow_kubernetes_cel() {
        let between = "duration(self) >= duration('1s') && duration(self) <= duration('5m')";
        for (value, holds) in [
            ("10s", true),
            ("1h30m", false),
            ("500ms", false),
            ("5m", true),
            ("1m30s", true),
        ] {
            let expected = if holds {
                RuleOutcome::Holds
            } else {
                RuleOutcome::Violated
            };
            assert_eq!(eval(between, json!(value)), expected, "{value}");
        }
        assert_eq!(
            eval(
                "duration(self.warmup) < duration(self.duration)",
                json!({"warmup": "10m", "duration": "5m"})
            ),
            RuleOutcome::Violated
        );
        assert!(matches!(
            eval(between, json!("10 seconds")),
            RuleOutcome::NotEvaluated(_)
        ));
    }

    #[test]
    fn urls_and_quantities_follow_kubernetes() {
        let rule = "isURL(self) && (self.startsWith('http://') || self.startsWith('https://'))";
        assert_eq!(
            eval(rule, json!("https://otlp.example.com:4318/v1")),
            RuleOutcome::Holds
        );
        for bad in [
            "not-a-url",
            "ftp://prom",
            "http://a b",
            "http://h:port",
            "http://%zz",
        ] {
            assert_eq!(eval(rule, json!(bad)), RuleOutcome::Violated, "{bad}");
        }
        for q in ["500m", "128Mi", "1", "1.5", "2e3", ".5", "1Gi", "100k"] {
            assert!(is_quantity(q), "{q}");
        }
        for q in ["lots", "1.5.5", "Mi", "1mi", "", "1 Gi"] {
            assert!(!is_quantity(q), "{q}");
        }
    }

    #[test]
    fn transition_rules_are_not_evaluated_on_create() {
        assert_eq!(
            eval("self.baseline == oldSelf.baseline", json!({"baseline": 1})),
            RuleOutcome::Transition
        );
        assert!(!is_transition_rule("self.boldSelf == 1"));
    }

    #[test]
    fn a_missing_field_is_not_a_pass() {
        assert!(matches!(
            eval("self.nope == 1", json!({})),
            RuleOutcome::NotEvaluated(_)
        ));
    }
}
