//! The apiserver's admission checks of a Phoenix object, offline: the CRD's OpenAPI schema
//! (defaults applied first, as the apiserver does; unknown fields refused, as `kubectl`'s strict
//! field validation does), then its CEL rules on every node whose subtree is valid, then
//! `metadata.name`. The schemas are the CRDs generated from the Rust types ([`crate::crd::all`]),
//! the same ones `just crds` writes to crds/.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value as J};

use super::cel::{self, RuleOutcome};

/// One reason an object would be refused.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    /// The field, as the apiserver names it (`spec.topk.k`, `spec.criticalProcesses[0]`); empty
    /// for the object itself.
    pub field: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

/// The OpenAPI schemas of the Phoenix CRDs, by `apiVersion` and `kind`.
#[derive(Debug, Clone)]
pub struct Schemas {
    by_kind: BTreeMap<(String, String), J>,
}

impl Schemas {
    /// The schemas of every served version of the generated CRDs.
    pub fn generated() -> Schemas {
        let mut by_kind = BTreeMap::new();
        for crd in crate::crd::all() {
            for version in &crd.spec.versions {
                let schema = version
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .and_then(|s| serde_json::to_value(s).ok());
                if let Some(schema) = schema {
                    let api_version = format!("{}/{}", crd.spec.group, version.name);
                    by_kind.insert((api_version, crd.spec.names.kind.clone()), schema);
                }
            }
        }
        Schemas { by_kind }
    }

    /// The schema of an `apiVersion` and `kind`.
    pub fn get(&self, api_version: &str, kind: &str) -> Option<&J> {
        self.by_kind
            .get(&(api_version.to_string(), kind.to_string()))
    }

    /// Every finding the apiserver would report when the object is created: `object` is defaulted
    /// in place (so later checks see what the apiserver stores).
    pub fn check(&self, object: &mut J) -> Vec<Finding> {
        let api_version = object.get("apiVersion").and_then(J::as_str).unwrap_or("");
        let kind = object.get("kind").and_then(J::as_str).unwrap_or("");
        let Some(schema) = self.get(api_version, kind) else {
            return vec![Finding {
                field: "kind".into(),
                reason: format!("no Phoenix kind {kind:?} in {api_version:?}"),
            }];
        };
        // The status subresource: what a create sends in status is dropped.
        if let Some(fields) = object.as_object_mut() {
            fields.remove("status");
        }
        apply_defaults(object, schema);
        let mut findings = Vec::new();
        let mut metadata_checked = metadata_findings(object);
        walk(object, schema, "", &mut findings);
        findings.append(&mut metadata_checked);
        findings
    }
}

/// The apiserver's own checks of `metadata`: a name (or generateName) that is a DNS subdomain.
fn metadata_findings(object: &J) -> Vec<Finding> {
    let metadata = object.get("metadata");
    let name = metadata.and_then(|m| m.get("name")).and_then(J::as_str);
    let generate = metadata.and_then(|m| m.get("generateName")).is_some();
    let subdomain =
        regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$");
    match name {
        None if generate => vec![],
        None => vec![Finding {
            field: "metadata.name".into(),
            reason: "Required value: name or generateName is required".into(),
        }],
        Some(n) if n.len() > 253 || !subdomain.is_ok_and(|re| re.is_match(n)) => vec![Finding {
            field: "metadata.name".into(),
            reason: format!(
                "Invalid value: {n:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        }],
        Some(_) => vec![],
    }
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn nullable(schema: &J) -> bool {
    schema.get("nullable").and_then(J::as_bool).unwrap_or(false)
}

fn properties(schema: &J) -> Option<&Map<String, J>> {
    schema.get("properties").and_then(J::as_object)
}

fn item_schema(schema: &J) -> Option<&J> {
    schema.get("items")
}

/// The schema of a map's values (`additionalProperties` as a schema).
fn value_schema(schema: &J) -> Option<&J> {
    schema.get("additionalProperties").filter(|s| s.is_object())
}

fn preserves_unknown(schema: &J) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(J::as_bool)
        .unwrap_or(false)
}

/// Structural defaulting: an absent field (or a null one that may not be null) with a `default`
/// gets it, recursively, as the apiserver does before validation.
pub fn apply_defaults(value: &mut J, schema: &J) {
    match value {
        J::Object(fields) => {
            if let Some(props) = properties(schema) {
                for (name, prop) in props {
                    let missing = fields
                        .get(name)
                        .is_none_or(|v| v.is_null() && !nullable(prop));
                    if missing && let Some(default) = prop.get("default") {
                        fields.insert(name.clone(), default.clone());
                    }
                    if let Some(v) = fields.get_mut(name) {
                        apply_defaults(v, prop);
                    }
                }
            }
            if let Some(values) = value_schema(schema) {
                for v in fields.values_mut() {
                    apply_defaults(v, values);
                }
            }
        }
        J::Array(items) => {
            if let Some(item) = item_schema(schema) {
                for v in items {
                    apply_defaults(v, item);
                }
            }
        }
        _ => {}
    }
}

/// Validates `value` against `schema` at `path`, appending findings; returns the CEL value of the
/// subtree when it is valid (the CEL rules of enclosing nodes run only on valid subtrees).
fn walk(value: &J, schema: &J, path: &str, out: &mut Vec<Finding>) -> Option<cel::Value> {
    let before = out.len();
    let converted = check_type(value, schema, path, out)?;
    check_enum(value, schema, path, out);
    check_bounds(value, schema, path, out);
    let converted = match value {
        J::Object(fields) if !preserves_unknown(schema) || properties(schema).is_some() => {
            walk_object(fields, schema, path, out)
        }
        J::Array(items) => match item_schema(schema) {
            Some(item) => {
                let list: Vec<Option<cel::Value>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| walk(v, item, &format!("{path}[{i}]"), out))
                    .collect();
                list.into_iter()
                    .collect::<Option<Vec<_>>>()
                    .map(|l| cel::Value::List(Arc::new(l)))
            }
            None => Some(converted),
        },
        _ => Some(converted),
    };
    if out.len() > before {
        return None;
    }
    let converted = converted?;
    check_rules(&converted, schema, path, out);
    (out.len() == before).then_some(converted)
}

fn walk_object(
    fields: &Map<String, J>,
    schema: &J,
    path: &str,
    out: &mut Vec<Finding>,
) -> Option<cel::Value> {
    for required in schema
        .get("required")
        .and_then(J::as_array)
        .into_iter()
        .flatten()
        .filter_map(J::as_str)
    {
        if !fields.contains_key(required) {
            out.push(Finding {
                field: child(path, required),
                reason: "Required value".into(),
            });
        }
    }
    let props = properties(schema);
    let values = value_schema(schema);
    let mut entries = Vec::new();
    let mut valid = true;
    for (name, v) in fields {
        let field_schema = props.and_then(|p| p.get(name)).or(values);
        let field_path = if props.is_some() {
            child(path, name)
        } else {
            format!("{path}[{name}]")
        };
        match field_schema {
            // Type and object metadata are the apiserver's own (`metadata_findings`, `check`).
            _ if path.is_empty() && matches!(name.as_str(), "apiVersion" | "kind" | "metadata") => {
                entries.push((name.clone(), cel::from_json(v)));
            }
            Some(s) => match walk(v, s, &field_path, out) {
                Some(c) => entries.push((name.clone(), c)),
                None => valid = false,
            },
            None if preserves_unknown(schema) => entries.push((name.clone(), cel::from_json(v))),
            None if schema.get("additionalProperties").and_then(J::as_bool) == Some(true) => {
                entries.push((name.clone(), cel::from_json(v)))
            }
            None => {
                valid = false;
                out.push(Finding {
                    field: field_path.clone(),
                    reason: format!("unknown field {field_path:?}"),
                });
            }
        }
    }
    valid.then(|| cel::map(entries))
}

/// The JSON type of `value` against the schema's `type`; the CEL value of a scalar (objects and
/// arrays are converted by their walk).
fn check_type(value: &J, schema: &J, path: &str, out: &mut Vec<Finding>) -> Option<cel::Value> {
    let wrong = |expected: &str, out: &mut Vec<Finding>| {
        out.push(Finding {
            field: path.to_string(),
            reason: format!(
                "Invalid value: {:?}: {path} in body must be of type {expected}",
                json_type(value)
            ),
        });
        None
    };
    if value.is_null() {
        return if nullable(schema) {
            Some(cel::Value::Null)
        } else {
            let expected = schema.get("type").and_then(J::as_str).unwrap_or("object");
            wrong(expected, out)
        };
    }
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(J::as_bool)
        .unwrap_or(false)
    {
        return match value {
            J::String(_) => Some(cel::from_json(value)),
            J::Number(n) if n.is_i64() || n.is_u64() => Some(cel::from_json(value)),
            _ => wrong("integer-or-string", out),
        };
    }
    match schema.get("type").and_then(J::as_str) {
        Some("string") if value.is_string() => Some(cel::from_json(value)),
        Some("integer") => match value.as_i64() {
            Some(i) => Some(cel::Value::Int(i)),
            None => wrong("integer", out),
        },
        Some("number") => match value.as_f64() {
            Some(f) => Some(cel::Value::Float(f)),
            None => wrong("number", out),
        },
        Some("boolean") if value.is_boolean() => Some(cel::from_json(value)),
        Some("array") if value.is_array() => Some(cel::Value::Null),
        Some("object") if value.is_object() => Some(cel::from_json(value)),
        None => Some(cel::from_json(value)),
        Some(other) => wrong(other, out),
    }
}

fn json_type(value: &J) -> &'static str {
    match value {
        J::Null => "null",
        J::Bool(_) => "boolean",
        J::Number(n) if n.is_i64() || n.is_u64() => "integer",
        J::Number(_) => "number",
        J::String(_) => "string",
        J::Array(_) => "array",
        J::Object(_) => "object",
    }
}

fn check_enum(value: &J, schema: &J, path: &str, out: &mut Vec<Finding>) {
    if let Some(allowed) = schema.get("enum").and_then(J::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(J::to_string).collect();
        out.push(Finding {
            field: path.to_string(),
            reason: format!(
                "Unsupported value: {value}: supported values: {}",
                list.join(", ")
            ),
        });
    }
}

/// Lengths, numeric bounds, item and property counts and patterns.
fn check_bounds(value: &J, schema: &J, path: &str, out: &mut Vec<Finding>) {
    let num = |key: &str| schema.get(key).and_then(J::as_f64);
    let mut refuse = |reason: String| {
        out.push(Finding {
            field: path.to_string(),
            reason: format!("Invalid value: {value}: {path} in body {reason}"),
        })
    };
    match value {
        J::String(s) => {
            let len = s.chars().count() as f64;
            if let Some(min) = num("minLength").filter(|m| len < *m) {
                refuse(format!("should be at least {min} chars long"));
            }
            if let Some(max) = num("maxLength").filter(|m| len > *m) {
                refuse(format!("may not be longer than {max}"));
            }
            if let Some(pattern) = schema.get("pattern").and_then(J::as_str) {
                match regex::Regex::new(pattern) {
                    Ok(re) if re.is_match(s) => {}
                    Ok(_) => refuse(format!("should match '{pattern}'")),
                    Err(e) => refuse(format!("pattern {pattern:?} cannot be evaluated: {e}")),
                }
            }
        }
        J::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if let Some(min) = num("minimum").filter(|m| x < *m) {
                refuse(format!("should be greater than or equal to {min}"));
            }
            if let Some(max) = num("maximum").filter(|m| x > *m) {
                refuse(format!("should be less than or equal to {max}"));
            }
        }
        J::Array(items) => {
            let len = items.len() as f64;
            if let Some(min) = num("minItems").filter(|m| len < *m) {
                refuse(format!("should have at least {min} items"));
            }
            if let Some(max) = num("maxItems").filter(|m| len > *m) {
                refuse(format!("must have at most {max} items"));
            }
        }
        J::Object(fields) => {
            let len = fields.len() as f64;
            if let Some(min) = num("minProperties").filter(|m| len < *m) {
                refuse(format!("should have at least {min} properties"));
            }
            if let Some(max) = num("maxProperties").filter(|m| len > *m) {
                refuse(format!("must have at most {max} properties"));
            }
        }
        _ => {}
    }
}

/// The node's CEL rules (`x-kubernetes-validations`) on its valid value. A violated rule is
/// reported at the node plus the rule's `fieldPath`; a rule that cannot be evaluated offline is a
/// finding too (never a silent pass).
fn check_rules(value: &cel::Value, schema: &J, path: &str, out: &mut Vec<Finding>) {
    for rule in schema
        .get("x-kubernetes-validations")
        .and_then(J::as_array)
        .into_iter()
        .flatten()
    {
        let Some(expr) = rule.get("rule").and_then(J::as_str) else {
            continue;
        };
        let field = match rule.get("fieldPath").and_then(J::as_str) {
            Some(fp) => format!("{path}{fp}").trim_start_matches('.').to_string(),
            None => path.to_string(),
        };
        let message = rule
            .get("message")
            .and_then(J::as_str)
            .map_or_else(|| format!("failed rule: {expr}"), String::from);
        match cel::evaluate(expr, value) {
            RuleOutcome::Holds | RuleOutcome::Transition => {}
            RuleOutcome::Violated => out.push(Finding {
                field,
                reason: format!("Invalid value: \"object\": {message}"),
            }),
            RuleOutcome::NotEvaluated(why) => out.push(Finding {
                field,
                reason: format!(
                    "Invalid value: {message} (rule {expr:?} could not be evaluated: {why})"
                ),
            }),
        }
    }
}

/// Every CEL rule of a schema with the path of its node, for counting and reporting.
pub fn rules(schema: &J, path: &str, acc: &mut Vec<(String, String)>) {
    for rule in schema
        .get("x-kubernetes-validations")
        .and_then(J::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(expr) = rule.get("rule").and_then(J::as_str) {
            acc.push((path.to_string(), expr.to_string()));
        }
    }
    for (name, prop) in properties(schema).into_iter().flatten() {
        rules(prop, &child(path, name), acc);
    }
    if let Some(item) = item_schema(schema) {
        rules(item, &format!("{path}[*]"), acc);
    }
    if let Some(values) = value_schema(schema) {
        rules(values, &format!("{path}[*]"), acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Vec<Finding> {
        let mut object: J = serde_yaml::from_str(yaml).expect("yaml");
        Schemas::generated().check(&mut object)
    }

    #[test]
    fn every_example_passes_schema_and_rules() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let docs = super::super::documents::read_all(&[dir], false).expect("examples");
        assert!(docs.len() >= 10);
        let schemas = Schemas::generated();
        for doc in docs {
            let mut value = doc.value.clone();
            assert_eq!(schemas.check(&mut value), vec![], "{}", doc.file);
        }
    }

    #[test]
    fn every_rule_of_every_crd_is_known_and_either_runs_on_create_or_is_a_transition() {
        let schemas = Schemas::generated();
        let mut all = Vec::new();
        for schema in schemas.by_kind.values() {
            rules(schema, "", &mut all);
        }
        assert!(all.len() >= 70, "{} rules", all.len());
        for (_, rule) in &all {
            assert!(::cel::Program::compile(rule).is_ok(), "{rule} compiles");
        }
    }

    #[test]
    fn defaults_are_applied_before_rules() {
        let mut object: J = serde_yaml::from_str(
            "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\nspec: {template: baseline}\n",
        )
        .expect("yaml");
        let findings = Schemas::generated().check(&mut object);
        assert_eq!(findings, vec![]);
        assert_eq!(object["spec"]["keepPatterns"], serde_json::json!([]));
        assert!(object["spec"]["collectionInterval"].is_string());
    }

    #[test]
    fn unknown_fields_wrong_types_and_names_are_refused() {
        let f = check(
            "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {name: Bad_Name}\nspec: {template: baseline, colour: red, collectionInterval: 10}\n",
        );
        let fields: Vec<&str> = f.iter().map(|f| f.field.as_str()).collect();
        assert!(fields.contains(&"spec.colour"), "{f:?}");
        assert!(fields.contains(&"spec.collectionInterval"), "{f:?}");
        assert!(fields.contains(&"metadata.name"), "{f:?}");
    }

    #[test]
    fn a_rule_with_a_field_path_names_that_field() {
        let f = check(
            "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\nspec: {template: topk}\n",
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].field, "spec.topk");
    }

    #[test]
    fn an_unknown_kind_is_a_finding() {
        let f = check("apiVersion: phoenix.io/v1alpha1\nkind: Gadget\nmetadata: {name: g}\n");
        assert_eq!(f[0].field, "kind");
    }
}
