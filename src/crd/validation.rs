//! Kubernetes' own rules for values Phoenix copies into generated objects: label keys and values
//! of node selectors and tolerations (pure checks, the same rules as the apiserver's
//! `ValidateLabels` and `ValidateTolerations`), the schema of tolerations (what a schema can check
//! cheaply: enums, patterns and bounded cross-field CEL), and resource quantities (a CEL rule, so
//! the apiserver refuses them at admission), node-selector keys (a CEL rule over at most 32 keys).
//! The operator checks everything again before applying (what the schema cannot: a key prefix over
//! 253 characters, objects stored before these rules); what fails becomes an `Invalid`
//! condition, not a retry.

use std::sync::LazyLock;

use k8s_openapi::api::core::v1::Toleration;
use kube::core::Rule;

/// A label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`, starting and ending with an
/// alphanumeric (Kubernetes `IsValidLabelValue`).
pub const LABEL_VALUE: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$";
/// A qualified name (label key, toleration key): an optional DNS-subdomain prefix and `/`, then a
/// name of at most 63 alphanumerics, `-`, `_`, `.`, starting and ending with an alphanumeric
/// (Kubernetes `IsQualifiedName`; the prefix is at most 253 characters).
pub const QUALIFIED_NAME: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";

/// The two patterns above, compiled once (reconciles check every node-selector entry).
static QUALIFIED_NAME_RE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(QUALIFIED_NAME).expect("the qualified-name pattern compiles")
});
static LABEL_VALUE_RE: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(LABEL_VALUE).expect("the label-value pattern compiles"));

/// Whether `key` is a valid label key (a qualified name, prefix at most 253 characters).
pub fn is_label_key(key: &str) -> bool {
    let prefix_ok = key.split_once('/').is_none_or(|(p, _)| p.len() <= 253);
    prefix_ok && QUALIFIED_NAME_RE.is_match(key)
}

/// Whether `value` is a valid label value.
pub fn is_label_value(value: &str) -> bool {
    LABEL_VALUE_RE.is_match(value)
}

/// The most tolerations a Phoenix object may list (the schema's `maxItems`).
pub const MAX_TOLERATIONS: usize = 32;

/// Checks a node-selector map with Kubernetes' rules (`ValidateLabels`); the error names the
/// field (`field` is the map's path) and the offending entry.
pub fn check_node_selector(field: &str, map: &super::StringMap) -> Result<(), String> {
    for (k, v) in map {
        if !is_label_key(k) {
            return Err(format!(
                "{field}: node selector key {k:?} is not a valid label key (an optional DNS subdomain prefix and '/', then at most 63 alphanumerics, '-', '_', '.', starting and ending with an alphanumeric)"
            ));
        }
        if !is_label_value(v) {
            return Err(format!(
                "{field}[{k:?}]: node selector value {v:?} is not a valid label value (at most 63 alphanumerics, '-', '_', '.', starting and ending with an alphanumeric)"
            ));
        }
    }
    Ok(())
}

/// Checks tolerations with Kubernetes' rules (`ValidateTolerations`, without the alpha `Lt`/`Gt`
/// operators): a key is a qualified name; an empty key needs operator `Exists`; operator `Equal`
/// (or empty) needs a label value, `Exists` an empty value; `tolerationSeconds` needs effect
/// `NoExecute`; the effect is empty, `NoSchedule`, `PreferNoSchedule` or `NoExecute`. The error
/// names the field (`field` is the list's path).
pub fn check_tolerations(field: &str, tolerations: &[Toleration]) -> Result<(), String> {
    if tolerations.len() > MAX_TOLERATIONS {
        return Err(format!(
            "{field}: at most {MAX_TOLERATIONS} tolerations, not {}",
            tolerations.len()
        ));
    }
    for (i, t) in tolerations.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let key = t.key.as_deref().unwrap_or_default();
        let operator = t.operator.as_deref().unwrap_or_default();
        let value = t.value.as_deref().unwrap_or_default();
        let effect = t.effect.as_deref().unwrap_or_default();
        if !key.is_empty() && !is_label_key(key) {
            return Err(format!(
                "{at}.key: {key:?} is not a valid label key (an optional DNS subdomain prefix and '/', then at most 63 alphanumerics, '-', '_', '.', starting and ending with an alphanumeric)"
            ));
        }
        if key.is_empty() && operator != "Exists" {
            return Err(format!(
                "{at}.operator: {operator:?}: operator must be Exists when key is empty (a toleration of every taint)"
            ));
        }
        if t.toleration_seconds.is_some() && effect != "NoExecute" {
            return Err(format!(
                "{at}.effect: {effect:?}: effect must be NoExecute when tolerationSeconds is set"
            ));
        }
        match operator {
            "" | "Equal" if !is_label_value(value) => {
                return Err(format!(
                    "{at}.value: {value:?} is not a valid label value (at most 63 alphanumerics, '-', '_', '.', starting and ending with an alphanumeric)"
                ));
            }
            "" | "Equal" => {}
            "Exists" if !value.is_empty() => {
                return Err(format!(
                    "{at}.value: {value:?}: value must be empty when operator is Exists"
                ));
            }
            "Exists" => {}
            other => {
                return Err(format!(
                    "{at}.operator: {other:?} is not supported: Equal or Exists"
                ));
            }
        }
        if !matches!(effect, "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(format!(
                "{at}.effect: {effect:?} is not supported: NoSchedule, PreferNoSchedule or NoExecute (or empty for all)"
            ));
        }
    }
    Ok(())
}

/// Checks a placement (node selector and tolerations under `field`) with Kubernetes' rules.
pub fn check_placement(
    field: &str,
    node_selector: &super::StringMap,
    tolerations: &[Toleration],
) -> Result<(), String> {
    check_node_selector(&format!("{field}.nodeSelector"), node_selector)?;
    check_tolerations(&format!("{field}.tolerations"), tolerations)
}

/// The schema of a toleration list: Kubernetes' toleration fields with what a schema checks
/// cheaply at admission — the operator and effect enums, key and value patterns with bounded
/// lengths, at most [`MAX_TOLERATIONS`] items, and CEL rules over those bounded fields for the
/// cross-field rules of [`check_tolerations`].
pub fn tolerations_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let key_pattern = format!("^$|{QUALIFIED_NAME}");
    schemars::json_schema!({
        "type": "array",
        "maxItems": MAX_TOLERATIONS,
        "items": {
            "type": "object",
            "description": "A taint the pods tolerate (Kubernetes' Toleration, checked with the apiserver's rules).",
            "properties": {
                "key": {
                    "type": "string",
                    "maxLength": 317,
                    "pattern": key_pattern,
                    "description": "The taint key the toleration applies to: a label key. Empty matches every key, with operator Exists."
                },
                "operator": {
                    "type": "string",
                    "enum": ["", "Equal", "Exists"],
                    "description": "Equal (default): the taint's value must equal value. Exists: any value (value must be empty)."
                },
                "value": {
                    "type": "string",
                    "maxLength": 63,
                    "pattern": LABEL_VALUE,
                    "description": "The taint value to match with operator Equal: a label value."
                },
                "effect": {
                    "type": "string",
                    "enum": ["", "NoSchedule", "PreferNoSchedule", "NoExecute"],
                    "description": "The taint effect to match: NoSchedule, PreferNoSchedule or NoExecute. Empty matches all effects."
                },
                "tolerationSeconds": {
                    "type": "integer",
                    "format": "int64",
                    "description": "How long a NoExecute taint is tolerated before eviction; only with effect NoExecute. Unset: forever."
                }
            },
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
                    "message": "operator must be Exists when key is empty (a toleration of every taint)"
                },
                {
                    "rule": "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
                    "message": "value must be empty when operator is Exists"
                },
                {
                    "rule": "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                    "message": "effect must be NoExecute when tolerationSeconds is set"
                }
            ]
        }
    })
}

/// CEL: every key of a node-selector map (at most 32 keys) is a qualified name, as
/// [`QUALIFIED_NAME`] (with `[.]` for `\.`, which a CEL string cannot hold). The prefix's
/// 253-character limit is left to [`check_node_selector`].
pub fn node_selector_keys() -> Rule {
    let pattern = QUALIFIED_NAME.replace(r"\.", "[.]");
    Rule::new(format!("self.all(k, k.matches('{pattern}'))")).message(
        "node selector keys must be label keys: an optional DNS subdomain prefix and '/', then at most 63 alphanumerics, '-', '_', '.', starting and ending with an alphanumeric",
    )
}

/// CEL: the `cpu` and `memory` requests and limits are resource quantities (e.g. `500m`,
/// `128Mi`).
pub fn resources() -> Rule {
    let q = |map: &str, key: &str| {
        format!(
            "(!has(self.{map}) || !('{key}' in self.{map}) || isQuantity(string(self.{map}['{key}'])))"
        )
    };
    Rule::new(
        [
            q("requests", "cpu"),
            q("requests", "memory"),
            q("limits", "cpu"),
            q("limits", "memory"),
        ]
        .join(" && "),
    )
    .message(
        "resources: cpu and memory requests and limits must be quantities such as 500m or 128Mi",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::StringMap;

    #[test]
    fn label_keys_and_values_follow_kubernetes() {
        for k in [
            "zone",
            "example.com/zone",
            "a_b.c-d",
            "kubernetes.io/hostname",
        ] {
            assert!(is_label_key(k), "{k}");
        }
        let long_name = "a".repeat(64);
        for k in [
            "",
            "a,b",
            "a=b",
            "-a",
            "Example.com/zone",
            "a/b/c",
            &long_name,
        ] {
            assert!(!is_label_key(k), "{k}");
        }
        for v in ["", "kwok", "a.b_c-d"] {
            assert!(is_label_value(v), "{v}");
        }
        for v in ["a,b=c", "a b", "-a", "a!", &long_name] {
            assert!(!is_label_value(v), "{v}");
        }
    }

    fn toleration(key: &str, operator: &str, value: &str, effect: &str) -> Toleration {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Toleration {
            key: opt(key),
            operator: opt(operator),
            value: opt(value),
            effect: opt(effect),
            toleration_seconds: None,
        }
    }

    #[test]
    fn tolerations_follow_kubernetes() {
        let valid = [
            toleration("dedicated", "Equal", "phoenix", "NoSchedule"),
            toleration("example.com/gpu", "", "true", ""),
            toleration("node.kubernetes.io/unreachable", "Exists", "", "NoExecute"),
            toleration("", "Exists", "", ""),
            Toleration {
                toleration_seconds: Some(30),
                ..toleration("k", "Exists", "", "NoExecute")
            },
        ];
        assert_eq!(check_tolerations("t", &valid), Ok(()));
        let refused = [
            (toleration("a,b", "Exists", "", ""), "t[0].key"),
            (toleration("", "Equal", "", ""), "t[0].operator"),
            (toleration("", "", "", ""), "t[0].operator"),
            (toleration("k", "Equal", "a b", ""), "t[0].value"),
            (toleration("k", "Exists", "v", ""), "t[0].value"),
            (toleration("k", "Lt", "5", ""), "t[0].operator"),
            (toleration("k", "In", "", ""), "t[0].operator"),
            (
                toleration("k", "Exists", "", "NoScheduleNoAdmit"),
                "t[0].effect",
            ),
            (
                Toleration {
                    toleration_seconds: Some(30),
                    ..toleration("k", "Exists", "", "NoSchedule")
                },
                "t[0].effect",
            ),
        ];
        for (t, field) in refused {
            let err = check_tolerations("t", std::slice::from_ref(&t)).unwrap_err();
            assert!(err.starts_with(field), "{t:?}: {err}");
        }
        let many = vec![toleration("", "Exists", "", ""); MAX_TOLERATIONS + 1];
        assert!(check_tolerations("t", &many).is_err());
    }

    #[test]
    fn placements_name_the_offending_field() {
        let selector = StringMap::from([("bad key".to_string(), "v".to_string())]);
        let err = check_placement("spec.deployment", &selector, &[]).unwrap_err();
        assert!(err.starts_with("spec.deployment.nodeSelector:"), "{err}");
        let selector = StringMap::from([("zone".to_string(), "a=b".to_string())]);
        let err = check_placement("spec.deployment", &selector, &[]).unwrap_err();
        assert!(
            err.starts_with("spec.deployment.nodeSelector[\"zone\"]:"),
            "{err}"
        );
        let ok = StringMap::from([("kubernetes.io/os".to_string(), "linux".to_string())]);
        assert_eq!(check_placement("spec", &ok, &[]), Ok(()));
    }
}
