//! The children of an Experiment: Pipelines `<exp>-baseline` / `<exp>-candidate` and the Simulation
//! `<exp>-load`, all owned by the Experiment and pinned to its target nodes. Pure functions.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::labels;
use crate::crd::duration::SpecDuration;
use crate::crd::experiment::{Experiment, ExperimentSpec, Targets};
use crate::crd::pipeline::DeploymentMode;
use crate::crd::{Pipeline, PipelineSpec, Simulation};

/// Longest load a Simulation admits (its `spec.duration` maximum).
pub const MAX_LOAD: Duration = Duration::from_secs(24 * 3600);

/// Annotation on child Pipelines: the remote-write URL their collectors push to (the
/// Experiment's Prometheus). Informational: the Pipeline controller reads the URL from the live
/// controlling Experiment ([`grant`]), never from this annotation.
pub const REMOTE_WRITE_URL: &str = "phoenix.io/remote-write-url";

/// The `phoenix_experiment` label value on every series an Experiment's collectors push:
/// `<namespace>/<name>`, unique across namespaces.
pub fn experiment_label(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The remote-write URL of an Experiment's own Prometheus, when its spec names one:
/// `spec.prometheus.remoteWriteUrl`, else `<spec.prometheus.url>/api/v1/write`.
pub fn remote_write_url(spec: &ExperimentSpec) -> Option<String> {
    spec.prometheus.as_ref().map(|p| {
        p.remote_write_url
            .clone()
            .unwrap_or_else(|| format!("{}/api/v1/write", p.url.trim_end_matches('/')))
    })
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
    /// The Experiment's remote-write credentials Secret
    /// (`spec.prometheus.remoteWriteSecretRef`), if its spec names one.
    pub remote_write_secret: Option<String>,
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
        remote_write_secret: experiment
            .spec
            .prometheus
            .as_ref()
            .and_then(|p| p.remote_write_secret_ref.as_ref())
            .map(|r| r.name.clone()),
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
    place(&mut child_spec, &spec.targets);
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

/// Puts a variant on the Experiment's targets: a DaemonSet on the target nodes with the targets'
/// tolerations, whatever the variant's own placement says, so both variants see the same nodes.
fn place(spec: &mut PipelineSpec, targets: &Targets) {
    spec.deployment.mode = DeploymentMode::DaemonSet;
    spec.deployment.node_selector = targets.node_selector.clone();
    spec.deployment.tolerations = targets.tolerations.clone();
}

/// What [`pipeline`] overrides in one variant's own placement, one line per field, for status and
/// an Event. Empty when the variant already runs as the targets say.
pub fn placement_overrides(side: Side, resolved: &PipelineSpec, targets: &Targets) -> Vec<String> {
    let mut placed = resolved.clone();
    place(&mut placed, targets);
    let (own, placed) = (&resolved.deployment, &placed.deployment);
    let side = side.as_str();
    let mut out = vec![];
    if own.mode != placed.mode {
        out.push(format!(
            "{side} deployment.mode {:?} -> {:?}",
            own.mode, placed.mode
        ));
    }
    if own.node_selector != placed.node_selector {
        out.push(format!(
            "{side} deployment.nodeSelector {:?} -> {:?} (spec.targets)",
            own.node_selector, placed.node_selector
        ));
    }
    if own.tolerations != placed.tolerations {
        out.push(format!(
            "{side} deployment.tolerations ({} given) -> spec.targets.tolerations ({})",
            own.tolerations.len(),
            placed.tolerations.len()
        ));
    }
    out
}

/// How long the child Simulation's load runs: at least the Experiment's whole run plus `lead`
/// (the longest the collectors may become ready after the load started, i.e. the deploy
/// timeout), so the load outlasts the analysis window; capped at [`MAX_LOAD`].
pub fn load_duration(spec: &ExperimentSpec, own: &SpecDuration, lead: Duration) -> SpecDuration {
    let needed = spec.duration.get().saturating_add(lead).min(MAX_LOAD);
    if own.get() >= needed {
        own.clone()
    } else {
        SpecDuration::from_secs(needed.as_secs())
    }
}

/// The child Simulation, when the Experiment has one, on the Experiment's target nodes, lasting at
/// least [`load_duration`].
pub fn simulation(
    experiment: &str,
    namespace: &str,
    owner: &OwnerReference,
    spec: &ExperimentSpec,
    lead: Duration,
) -> Option<Simulation> {
    let mut sim_spec = spec.simulation.as_deref()?.clone();
    sim_spec.node_selector = spec.targets.node_selector.clone();
    sim_spec.tolerations = spec.targets.tolerations.clone();
    sim_spec.duration = load_duration(spec, &sim_spec.duration, lead);
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
            crate::crd::StringMap::from([("type".into(), "kwok".into())])
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
        let sim = simulation("e", "ns", &owner(), &s, Duration::from_secs(300))
            .expect("has a simulation");
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
                remote_write_secret: None,
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
    fn both_variants_run_as_daemonsets_on_the_targets_and_the_override_is_reported() {
        let mut s = spec();
        let mut candidate = s.candidate.pipeline.clone().expect("inline");
        candidate.deployment.mode = DeploymentMode::Deployment;
        candidate.deployment.tolerations = vec![Default::default()];
        s.targets.node_selector.clear();
        let baseline = s.baseline.pipeline.clone().expect("inline");
        let b = pipeline("e", "ns", &owner(), &s, Side::Baseline, &baseline, None);
        let c = pipeline("e", "ns", &owner(), &s, Side::Candidate, &candidate, None);
        // The same placement on both sides: the baseline's own zone selector and the candidate's
        // Deployment mode are both gone, even with empty targets.
        assert_eq!(b.spec.deployment.mode, DeploymentMode::DaemonSet);
        assert_eq!(c.spec.deployment.mode, DeploymentMode::DaemonSet);
        assert!(b.spec.deployment.node_selector.is_empty());
        assert_eq!(
            (
                &b.spec.deployment.node_selector,
                &b.spec.deployment.tolerations
            ),
            (
                &c.spec.deployment.node_selector,
                &c.spec.deployment.tolerations
            )
        );
        let overrides = placement_overrides(Side::Candidate, &candidate, &s.targets);
        assert_eq!(overrides.len(), 2, "{overrides:?}");
        assert!(overrides[0].contains("candidate deployment.mode Deployment -> DaemonSet"));
        assert!(overrides[1].contains("tolerations"));
        let overrides = placement_overrides(Side::Baseline, &baseline, &s.targets);
        // Word for word, with the selector printed as a map (`{"k": "v"}`), as users read it.
        let own = baseline.deployment.node_selector.to_btree();
        assert!(!own.is_empty());
        assert_eq!(
            overrides,
            vec![format!(
                "baseline deployment.nodeSelector {own:?} -> {{}} (spec.targets)"
            )]
        );
        assert!(placement_overrides(Side::Baseline, &b.spec, &s.targets).is_empty());
    }

    #[test]
    fn the_load_outlasts_the_run() {
        let mut s = spec();
        s.duration = SpecDuration::from_secs(600);
        let lead = Duration::from_secs(300);
        // Equal durations: the load is stretched by the deploy lead.
        let own = SpecDuration::from_secs(600);
        assert_eq!(
            load_duration(&s, &own, lead).get(),
            Duration::from_secs(900)
        );
        // A longer load is kept as written.
        let own = SpecDuration::from_secs(3600);
        assert_eq!(load_duration(&s, &own, lead), own);
        // Never beyond what a Simulation admits.
        s.duration = SpecDuration::from_secs(24 * 3600);
        assert_eq!(load_duration(&s, &own, lead).get(), MAX_LOAD);
        let sim = simulation("e", "ns", &owner(), &spec(), lead).expect("has a simulation");
        assert!(sim.spec.duration.get() >= spec().duration.get() + lead);
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
