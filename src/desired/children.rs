//! The children of an Experiment: Pipelines `<exp>-baseline` / `<exp>-candidate` and the Simulation
//! `<exp>-load`, all owned by the Experiment and pinned to its target nodes. Pure functions.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::labels;
use crate::crd::experiment::{Experiment, ExperimentSpec};
use crate::crd::{Pipeline, PipelineSpec, Simulation};

/// Annotation on child Pipelines: the remote-write URL their collectors push to (the
/// Experiment's Prometheus). Informational: the Pipeline controller reads the URL from the live
/// controlling Experiment ([`grant`]), never from this annotation.
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

/// What the Experiment controlling a Pipeline grants it: the series labels, the Prometheus its
/// collectors push to, and whether `spec.exporters` are rendered. Read from the live Experiment,
/// never from the Pipeline's own labels or annotations (which whoever may edit Pipelines can set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The Experiment's name.
    pub experiment: String,
    /// Which child the Pipeline is.
    pub variant: Side,
    /// The Experiment's own remote-write URL ([`remote_write_url`]), if its spec names one.
    pub remote_write_url: Option<String>,
    /// `spec.allowExtraExporters` of the Experiment.
    pub allow_extra_exporters: bool,
}

impl Grant {
    /// The ownership labels of what the Pipeline generates.
    pub fn ownership(&self) -> labels::Ownership {
        labels::Ownership {
            experiment: Some(self.experiment.clone()),
            variant: Some(self.variant.as_str().to_string()),
        }
    }
}

/// The controller ownerReference of `owner_refs` when it names an Experiment (`phoenix.io`).
pub fn experiment_owner(owner_refs: &[OwnerReference]) -> Option<&OwnerReference> {
    owner_refs.iter().find(|o| {
        o.controller == Some(true)
            && o.kind == "Experiment"
            && o.api_version.split('/').next() == Some("phoenix.io")
    })
}

/// The grant of the Pipeline `pipeline` whose controller is `owner`, when `experiment` is that
/// owner (the live Experiment of that name has the owner's UID) and the Pipeline is one of its
/// children by name. `None`: the Pipeline is treated as standalone.
pub fn grant(pipeline: &str, owner: &OwnerReference, experiment: &Experiment) -> Option<Grant> {
    let name = experiment.metadata.name.as_deref()?;
    if name != owner.name || experiment.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
        return None;
    }
    let variant = [Side::Baseline, Side::Candidate]
        .into_iter()
        .find(|side| pipeline_name(name, *side) == pipeline)?;
    Some(Grant {
        experiment: name.to_string(),
        variant,
        remote_write_url: remote_write_url(&experiment.spec),
        allow_extra_exporters: experiment.spec.allow_extra_exporters,
    })
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

    fn experiment(uid: &str) -> Experiment {
        let mut spec = spec();
        spec.prometheus = serde_yaml::from_str("url: http://team-prom:9090/").expect("parses");
        spec.allow_extra_exporters = true;
        let mut e = Experiment::new("e", spec);
        e.metadata.uid = Some(uid.into());
        e
    }

    #[test]
    fn only_the_live_controlling_experiment_grants_anything() {
        let refs = [owner()];
        let o = experiment_owner(&refs).expect("controller ref to an Experiment");
        assert_eq!(
            grant("e-candidate", o, &experiment("u")),
            Some(Grant {
                experiment: "e".into(),
                variant: Side::Candidate,
                remote_write_url: Some("http://team-prom:9090/api/v1/write".into()),
                allow_extra_exporters: true,
            })
        );
        // An Experiment of the same name but another UID (deleted and re-created).
        assert_eq!(grant("e-candidate", o, &experiment("other")), None);
        // A Pipeline that is not one of the Experiment's children by name.
        assert_eq!(grant("mine", o, &experiment("u")), None);
        // Owner references that are not an Experiment's controller reference.
        let mut not_controller = owner();
        not_controller.controller = None;
        let mut other_group = owner();
        other_group.api_version = "evil.io/v1".into();
        for r in [not_controller, other_group] {
            assert_eq!(experiment_owner(std::slice::from_ref(&r)), None);
        }
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
