//! Kubernetes' own rules for values Phoenix copies into generated objects: label keys and values
//! of node selectors (pure checks; values also by the schema's pattern, which is [`LABEL_VALUE`])
//! and resource quantities (a CEL rule, so the apiserver refuses them at admission). Keys of maps
//! and tolerations are not checked by CEL: the rules' estimated cost on unbounded strings exceeds
//! the apiserver's budget; what the apiserver refuses later becomes a condition, not a retry.

use kube::core::Rule;

/// A label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`, starting and ending with an
/// alphanumeric (Kubernetes `IsValidLabelValue`).
pub const LABEL_VALUE: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$";
/// A qualified name (label key, toleration key): an optional DNS-subdomain prefix and `/`, then a
/// name of at most 63 alphanumerics, `-`, `_`, `.`, starting and ending with an alphanumeric
/// (Kubernetes `IsQualifiedName`; the prefix is at most 253 characters).
pub const QUALIFIED_NAME: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";

/// Whether `key` is a valid label key (a qualified name, prefix at most 253 characters).
pub fn is_label_key(key: &str) -> bool {
    let prefix_ok = key.split_once('/').is_none_or(|(p, _)| p.len() <= 253);
    prefix_ok && regex::Regex::new(QUALIFIED_NAME).is_ok_and(|re| re.is_match(key))
}

/// Whether `value` is a valid label value.
pub fn is_label_value(value: &str) -> bool {
    regex::Regex::new(LABEL_VALUE).is_ok_and(|re| re.is_match(value))
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
}
