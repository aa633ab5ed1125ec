//! Unit tests of the API types: every example parses into its Rust type and round-trips, and the
//! defaults users rely on are the documented ones.

use std::path::Path;

use phoenix::crd::experiment::{ExperimentPhase, Verdict};
use phoenix::crd::pipeline::{DeploymentMode, PipelineTemplate, SensitiveAttributes};
use phoenix::crd::simulation::SimulationProfile;
use phoenix::crd::{
    Experiment, ExperimentSpec, Pipeline, PipelineSpec, Simulation, SimulationSpec,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T: Serialize + DeserializeOwned>(yaml: &str) -> T {
    let parsed: T = serde_yaml::from_str(yaml).expect("example parses into its type");
    let value = serde_json::to_value(&parsed).expect("serializes");
    let again: T = serde_json::from_value(value.clone()).expect("serialized form parses back");
    assert_eq!(
        value,
        serde_json::to_value(&again).expect("serializes again")
    );
    parsed
}

#[test]
fn every_example_round_trips_through_its_type() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("examples/ exists") {
        let path = entry.expect("readable entry").path();
        let yaml = std::fs::read_to_string(&path).expect("readable example");
        let kind: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("valid YAML");
        match kind["kind"].as_str() {
            Some("Pipeline") => drop(round_trip::<Pipeline>(&yaml)),
            Some("Simulation") => drop(round_trip::<Simulation>(&yaml)),
            Some("Experiment") => drop(round_trip::<Experiment>(&yaml)),
            other => panic!("{}: unexpected kind {other:?}", path.display()),
        }
        seen += 1;
    }
    assert!(
        seen >= 11,
        "one Pipeline per template, one Simulation per profile, an Experiment"
    );
}

#[test]
fn pipeline_defaults() {
    let spec: PipelineSpec = serde_yaml::from_str("template: baseline").expect("parses");
    assert_eq!(spec.template, PipelineTemplate::Baseline);
    assert_eq!(spec.collection_interval, "10s");
    assert_eq!(spec.deployment.mode, DeploymentMode::DaemonSet);
    assert!(spec.drop_attributes.contains(&"process.pid".to_string()));
    assert!(spec.critical_processes.is_empty());
    assert_eq!(spec.sensitive_attributes, SensitiveAttributes::Hash);
    assert_eq!(
        spec,
        PipelineSpec::from_template(PipelineTemplate::Baseline)
    );
}

#[test]
fn simulation_defaults() {
    let spec: SimulationSpec = serde_yaml::from_str("profile: high-cardinality").expect("parses");
    assert_eq!(spec.profile, SimulationProfile::HighCardinality);
    assert_eq!(spec.processes, 100);
    assert_eq!(spec.duration, "10m");
    assert_eq!(spec.seed, 1);
    assert_eq!(spec.churn_per_minute, None);
}

#[test]
fn experiment_defaults() {
    let spec: ExperimentSpec = serde_yaml::from_str(
        "baseline: {pipelineRef: {name: today}}\ncandidate: {pipeline: {template: aggregate}}",
    )
    .expect("parses");
    assert_eq!(spec.duration, "10m");
    assert_eq!(spec.warmup, "2m");
    assert_eq!(spec.analysis.interval, "30s");
    assert_eq!(spec.analysis.significance_level, 0.05);
    assert_eq!(spec.success_criteria.min_critical_retention_percent, 100.0);
    assert_eq!(spec.cost_model.per_thousand_series_month, 8.0);
    assert_eq!(spec.cost_model.currency, "USD");
    assert!(!spec.abort && !spec.allow_extra_exporters);
    assert!(spec.simulation.is_none());
}

#[test]
fn phases_and_verdicts_serialize_as_documented() {
    assert_eq!(
        serde_json::to_value(ExperimentPhase::Analyzing).expect("serializes"),
        "Analyzing"
    );
    assert_eq!(
        serde_json::to_value(Verdict::Inconclusive).expect("serializes"),
        "Inconclusive"
    );
    assert!(ExperimentPhase::Aborted.is_terminal() && !ExperimentPhase::Running.is_terminal());
    assert_eq!(
        serde_json::to_value(PipelineTemplate::PriorityFilter).expect("serializes"),
        "priority-filter"
    );
}

#[test]
fn schema_defaults_match_serde_defaults() {
    // `kubectl explain` and apiserver defaulting read the schema; the controllers read serde.
    let crd = serde_json::to_value(phoenix::crd::all()[1].clone()).expect("serializes");
    let props = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(props["collectionInterval"]["default"], "10s");
    assert!(
        props["collectionInterval"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("Default: 10s"))
    );
}

/// `sensitiveAttributes` is in every schema that holds a Pipeline spec — the Pipeline's, the
/// Experiment's inline variants and `status.recommendation` — with its default and values, so the
/// apiserver neither prunes an explicit `Drop`/`Keep` nor leaves it unset.
#[test]
fn every_pipeline_spec_schema_has_sensitive_attributes_defaulting_to_hash() {
    let schema = |kind: &str| {
        let crd = phoenix::crd::all()
            .into_iter()
            .find(|c| c.spec.names.kind == kind)
            .unwrap_or_else(|| panic!("no CRD of kind {kind}"));
        serde_json::to_value(crd).expect("serializes")["spec"]["versions"][0]["schema"]
            ["openAPIV3Schema"]
            .clone()
    };
    let pipeline = schema("Pipeline");
    let experiment = schema("Experiment");
    let specs = [
        ("Pipeline spec", &pipeline["properties"]["spec"]),
        (
            "Experiment spec.baseline.pipeline",
            &experiment["properties"]["spec"]["properties"]["baseline"]["properties"]["pipeline"],
        ),
        (
            "Experiment spec.candidate.pipeline",
            &experiment["properties"]["spec"]["properties"]["candidate"]["properties"]["pipeline"],
        ),
        (
            "Experiment status.recommendation",
            &experiment["properties"]["status"]["properties"]["recommendation"],
        ),
    ];
    for (at, spec) in specs {
        let field = &spec["properties"]["sensitiveAttributes"];
        assert_eq!(field["default"], "Hash", "{at}: {field}");
        assert_eq!(
            field["enum"],
            serde_json::json!(["Hash", "Drop", "Keep"]),
            "{at}"
        );
        let doc = field["description"].as_str().unwrap_or_default();
        assert!(
            doc.contains("Risk of `Keep`") && doc.contains("SHA-256"),
            "{at}: {doc}"
        );
    }
}
