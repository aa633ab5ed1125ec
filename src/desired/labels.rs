//! Labels and annotations on everything Phoenix generates, and the names of generated objects.

use std::collections::BTreeMap;

use kube::core::Selector;

/// The field manager of every server-side apply Phoenix makes.
pub const FIELD_MANAGER: &str = "phoenix-operator";
/// `app.kubernetes.io/managed-by` value on generated objects.
pub const MANAGED_BY: &str = "phoenix";
/// Label: the Pipeline a generated object belongs to.
pub const PIPELINE: &str = "phoenix.io/pipeline";
/// Label: the Experiment a generated object belongs to (empty when standalone).
pub const EXPERIMENT: &str = "phoenix.io/experiment";
/// Label: `baseline` or `candidate` inside an Experiment.
pub const VARIANT: &str = "phoenix.io/variant";
/// Label: the Simulation a generated object belongs to.
pub const SIMULATION: &str = "phoenix.io/simulation";
/// Label and pod-template annotation: hash of the rendered collector config.
pub const CONFIG_HASH: &str = "phoenix.io/config-hash";
/// Label: what a generated object is (`collector`, `collector-config`, `load`).
pub const COMPONENT: &str = "app.kubernetes.io/component";

/// Who a generated object belongs to, as read from the owner's own labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ownership {
    pub experiment: Option<String>,
    pub variant: Option<String>,
}

impl Ownership {
    /// Reads experiment/variant from the labels the Experiment controller puts on its children.
    pub fn from_labels(labels: Option<&BTreeMap<String, String>>) -> Self {
        let get = |k: &str| {
            labels
                .and_then(|l| l.get(k))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        Ownership {
            experiment: get(EXPERIMENT),
            variant: get(VARIANT),
        }
    }
}

/// The labels every object generated for a Pipeline carries.
pub fn pipeline_labels(
    pipeline: &str,
    owner: &Ownership,
    component: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
        (
            "app.kubernetes.io/name".to_string(),
            "phoenix-collector".to_string(),
        ),
        (COMPONENT.to_string(), component.to_string()),
        (PIPELINE.to_string(), pipeline.to_string()),
        (
            EXPERIMENT.to_string(),
            owner.experiment.clone().unwrap_or_default(),
        ),
        (
            VARIANT.to_string(),
            owner.variant.clone().unwrap_or_default(),
        ),
    ])
}

/// The pod selector of a Pipeline's collectors (a subset of [`pipeline_labels`], never changes).
pub fn collector_selector(pipeline: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "phoenix-collector".to_string(),
        ),
        (PIPELINE.to_string(), pipeline.to_string()),
    ])
}

/// The labels of a Simulation's Job and pods.
pub fn simulation_labels(simulation: &str, owner: &Ownership) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
        (
            "app.kubernetes.io/name".to_string(),
            "phoenix-simulator".to_string(),
        ),
        (COMPONENT.to_string(), "load".to_string()),
        (SIMULATION.to_string(), simulation.to_string()),
        (
            EXPERIMENT.to_string(),
            owner.experiment.clone().unwrap_or_default(),
        ),
        (VARIANT.to_string(), String::new()),
    ])
}

/// `<pipeline>-collector`: the DaemonSet or Deployment.
pub fn collector_name(pipeline: &str) -> String {
    format!("{pipeline}-collector")
}

/// `<pipeline>-<hash8>`: the immutable ConfigMap of one rendered config.
pub fn config_map_name(pipeline: &str, hash: &str) -> String {
    format!("{pipeline}-{hash}")
}

/// `<simulation>-load`: the simulator Job.
pub fn job_name(simulation: &str) -> String {
    format!("{simulation}-load")
}

/// Annotation the Experiment controller sets on a child Pipeline when its spec allows extra
/// exporters (`spec.allowExtraExporters`). Informational: the Pipeline controller reads the gate
/// from the live controlling Experiment, never from this annotation.
pub const ALLOW_EXTRA_EXPORTERS: &str = "phoenix.io/allow-extra-exporters";

/// The label selector of a node-selector map, each key and value checked with Kubernetes' rules
/// first (a selector string has no escaping: `a=b,c` as a value would add a requirement). The
/// error names the offending entry.
pub fn node_selector(map: &crate::crd::StringMap) -> Result<Selector, String> {
    crate::crd::validation::check_node_selector("spec.nodeSelector", map)?;
    Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_selectors_are_checked_not_spliced() {
        let ok = crate::crd::StringMap::from([("type".to_string(), "kwok".to_string())]);
        assert_eq!(
            node_selector(&ok).map(|s| s.to_string()),
            Ok("type=kwok".into())
        );
        let spliced =
            crate::crd::StringMap::from([("type".to_string(), "kwok,zone!=a".to_string())]);
        assert!(
            node_selector(&spliced)
                .unwrap_err()
                .contains("not a valid label value")
        );
        let bad_key = crate::crd::StringMap::from([("a,b".to_string(), "x".to_string())]);
        assert!(
            node_selector(&bad_key)
                .unwrap_err()
                .contains("not a valid label key")
        );
    }
}
