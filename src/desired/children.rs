//! The children of an Experiment: Pipelines `<exp>-baseline` / `<exp>-candidate` and the Simulation
//! `<exp>-load`, all owned by the Experiment and pinned to its target nodes. Pure functions.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::labels;
use crate::crd::experiment::ExperimentSpec;
use crate::crd::{Pipeline, PipelineSpec, Simulation};

/// Annotation on child Pipelines: the remote-write URL their collectors push to (the
/// Experiment's Prometheus).
pub const REMOTE_WRITE_URL: &str = "phoenix.io/remote-write-url";

/// The `phoenix_experiment` label value on every series an Experiment's collectors push:
/// `<namespace>/<name>`, unique across namespaces.
pub fn experiment_label(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The remote-write URL of an Experiment's own Prometheus, when its spec names one.
pub fn remote_write_url(spec: &ExperimentSpec) -> Option<String> {
    spec.prometheus
        .as_ref()
        .map(|p| format!("{}/api/v1/write", p.url.trim_end_matches('/')))
}

/// Which side of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Baseline,
    Candidate,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Baseline => "baseline",
            Side::Candidate => "candidate",
        }
    }
}

/// `<exp>-baseline` / `<exp>-candidate`.
pub fn pipeline_name(experiment: &str, side: Side) -> String {
    format!("{experiment}-{}", side.as_str())
}

/// `<exp>-load`.
pub fn simulation_name(experiment: &str) -> String {
    format!("{experiment}-load")
}

fn meta(
    name: String,
    namespace: &str,
    owner: &OwnerReference,
    experiment: &str,
    variant: &str,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_string()),
        labels: Some(BTreeMap::from([
            (
                "app.kubernetes.io/managed-by".to_string(),
                labels::MANAGED_BY.to_string(),
            ),
            (labels::EXPERIMENT.to_string(), experiment.to_string()),
            (labels::VARIANT.to_string(), variant.to_string()),
        ])),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

/// The child Pipeline of one side. `resolved` is the inline spec or the referenced Pipeline's spec,
/// copied once when the Experiment deploys.
pub fn pipeline(
    experiment: &str,
    namespace: &str,
    owner: &OwnerReference,
    spec: &ExperimentSpec,
    side: Side,
    resolved: &PipelineSpec,
    remote_write_url: Option<&str>,
) -> Pipeline {
    let mut child_spec = resolved.clone();
    if !spec.targets.node_selector.is_empty() {
        child_spec.deployment.node_selector = spec.targets.node_selector.clone();
    }
    child_spec
        .deployment
        .tolerations
        .extend(spec.targets.tolerations.iter().cloned());
    let mut metadata = meta(
        pipeline_name(experiment, side),
        namespace,
        owner,
        experiment,
        side.as_str(),
    );
    let mut annotations = BTreeMap::new();
    if spec.allow_extra_exporters {
        annotations.insert(
            labels::ALLOW_EXTRA_EXPORTERS.to_string(),
            "true".to_string(),
        );
    }
    if let Some(url) = remote_write_url {
        annotations.insert(REMOTE_WRITE_URL.to_string(), url.to_string());
    }
    metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    Pipeline {
        metadata,
        spec: child_spec,
        status: None,
    }
}

/// The child Simulation, when the Experiment has one, on the Experiment's target nodes.
pub fn simulation(
    experiment: &str,
    namespace: &str,
    owner: &OwnerReference,
    spec: &ExperimentSpec,
) -> Option<Simulation> {
    let mut sim_spec = spec.simulation.clone()?;
    if !spec.targets.node_selector.is_empty() {
        sim_spec.node_selector = spec.targets.node_selector.clone();
    }
    sim_spec
        .tolerations
        .extend(spec.targets.tolerations.iter().cloned());
    Some(Simulation {
        metadata: meta(
            simulation_name(experiment),
            namespace,
            owner,
            experiment,
            "",
        ),
        spec: sim_spec,
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "phoenix.io/v1alpha1".into(),
            kind: "Experiment".into(),
            name: "e".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn spec() -> ExperimentSpec {
        serde_yaml::from_str(
            "baseline: {pipeline: {template: baseline, deployment: {nodeSelector: {zone: a}}}}\ncandidate: {pipeline: {template: aggregate, exporters: [{name: nr, endpoint: 'https://otlp.example'}]}}\ntargets: {nodeSelector: {type: kwok}}\nsimulation: {profile: high-cardinality}",
        )
        .expect("parses")
    }

    #[test]
    fn children_are_named_labelled_owned_and_on_the_targets() {
        let s = spec();
        let resolved = s.baseline.pipeline.clone().expect("inline");
        let p = pipeline(
            "e",
            "ns",
            &owner(),
            &s,
            Side::Baseline,
            &resolved,
            Some("http://prom/api/v1/write"),
        );
        assert_eq!(p.metadata.name.as_deref(), Some("e-baseline"));
        let l = p.metadata.labels.clone().expect("labels");
        assert_eq!(
            (l[labels::EXPERIMENT].as_str(), l[labels::VARIANT].as_str()),
            ("e", "baseline")
        );
        assert_eq!(
            p.spec.deployment.node_selector,
            BTreeMap::from([("type".into(), "kwok".into())])
        );
        assert_eq!(
            p.metadata
                .owner_references
                .as_ref()
                .map(|o| o[0].uid.clone()),
            Some("u".into())
        );
        assert_eq!(
            p.metadata
                .annotations
                .as_ref()
                .map(|a| a[REMOTE_WRITE_URL].clone()),
            Some("http://prom/api/v1/write".into())
        );
        let sim = simulation("e", "ns", &owner(), &s).expect("has a simulation");
        assert_eq!(sim.metadata.name.as_deref(), Some("e-load"));
        assert_eq!(sim.spec.node_selector["type"], "kwok");
    }

    #[test]
    fn extra_exporters_only_when_the_experiment_allows_them() {
        let mut s = spec();
        let resolved = s.candidate.pipeline.clone().expect("inline");
        let p = pipeline("e", "ns", &owner(), &s, Side::Candidate, &resolved, None);
        assert!(p.metadata.annotations.is_none());
        s.allow_extra_exporters = true;
        let p = pipeline("e", "ns", &owner(), &s, Side::Candidate, &resolved, None);
        assert_eq!(
            p.metadata
                .annotations
                .map(|a| a[labels::ALLOW_EXTRA_EXPORTERS].clone()),
            Some("true".into())
        );
    }

    #[test]
    fn inline_specs_carry_sensitive_attributes_to_the_children() {
        use crate::crd::pipeline::SensitiveAttributes;
        let s: ExperimentSpec = serde_yaml::from_str(
            "baseline: {pipeline: {template: baseline, sensitiveAttributes: Keep}}\ncandidate: {pipeline: {template: aggregate, sensitiveAttributes: Drop}}",
        )
        .expect("parses");
        for (side, variant, expected) in [
            (Side::Baseline, &s.baseline, SensitiveAttributes::Keep),
            (Side::Candidate, &s.candidate, SensitiveAttributes::Drop),
        ] {
            let resolved = variant.pipeline.clone().expect("inline");
            let p = pipeline("e", "ns", &owner(), &s, side, &resolved, None);
            assert_eq!(p.spec.sensitive_attributes, expected, "{side:?}");
        }
        // Unset: the default, Hash.
        let resolved = spec().baseline.pipeline.expect("inline");
        let p = pipeline(
            "e",
            "ns",
            &owner(),
            &spec(),
            Side::Baseline,
            &resolved,
            None,
        );
        assert_eq!(p.spec.sensitive_attributes, SensitiveAttributes::Hash);
    }
}
