//! Tenancy (issue 15) on the real control plane: what a namespace user writes into their own
//! objects cannot reach past their own RBAC through the operator.

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use phoenix::crd::Pipeline;
use phoenix::crd::pipeline::PipelinePhase;
use phoenix::desired::collector_config::CollectorConfig;

use crate::harness::{Operator, TestNamespace, cluster, eventually};

/// The Pipeline `name` once Ready, with its rendered collector config.
async fn ready_config(ns: &TestNamespace, name: &str) -> (Pipeline, CollectorConfig) {
    let pipelines = ns.api::<Pipeline>();
    let p = eventually(
        &format!("Pipeline {name} Ready"),
        Duration::from_secs(60),
        || async {
            let p = pipelines.get(name).await.ok()?;
            (p.status.as_ref()?.phase == Some(PipelinePhase::Ready)).then_some(p)
        },
    )
    .await;
    let cm_name = p
        .status
        .as_ref()
        .and_then(|s| s.config_map.clone())
        .expect("status names the ConfigMap");
    let cm = ns
        .api::<ConfigMap>()
        .get(&cm_name)
        .await
        .expect("the ConfigMap exists");
    let yaml = cm
        .data
        .as_ref()
        .and_then(|d| d.values().next().cloned())
        .expect("the ConfigMap holds the config");
    (p, CollectorConfig::from_yaml(&yaml).expect("config parses"))
}

/// Path 4: the annotations and labels the Experiment controller puts on its children
/// (`phoenix.io/remote-write-url`, `phoenix.io/allow-extra-exporters`, `phoenix.io/experiment`,
/// `phoenix.io/variant`) are ignored on a Pipeline that no Experiment controls: a user cannot
/// point collectors elsewhere through them, nor forge another Experiment's series labels.
#[tokio::test]
async fn experiment_annotations_on_a_users_own_pipeline_are_ignored() {
    let ns = TestNamespace::new("forged").await;
    let _operator = Operator::start(&ns.name, &[]);
    let forged: Pipeline = serde_yaml::from_str(
        "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata:\n  name: forged\n  labels: {phoenix.io/experiment: victim, phoenix.io/variant: candidate}\n  annotations: {phoenix.io/remote-write-url: 'http://attacker.invalid/api/v1/write', phoenix.io/allow-extra-exporters: 'true'}\nspec: {template: baseline}",
    )
    .expect("test Pipeline parses");
    ns.api::<Pipeline>()
        .create(&PostParams::default(), &forged)
        .await
        .expect("Pipeline created");

    let (_, config) = ready_config(&ns, "forged").await;
    let rw = &config.exporters["prometheusremotewrite"].0;
    assert_eq!(
        rw["endpoint"].as_str(),
        Some(cluster().var("PROMETHEUS_REMOTE_WRITE_URL")),
        "the operator's remote-write URL, not the annotation's"
    );
    let labels = &config.processors["resource/phoenix"].0["attributes"];
    let label = |key: &str| {
        labels
            .as_array()
            .and_then(|a| a.iter().find(|l| l["key"] == key))
            .and_then(|l| l["value"].as_str())
            .map(str::to_string)
    };
    assert_eq!(label("phoenix_experiment").as_deref(), Some("none"));
    assert_eq!(label("phoenix_variant").as_deref(), Some("none"));
    let ds: DaemonSet = ns
        .api::<DaemonSet>()
        .get("forged-collector")
        .await
        .expect("DaemonSet");
    let ds_labels = ds.metadata.labels.unwrap_or_default();
    assert_eq!(
        ds_labels.get("phoenix.io/experiment").map(String::as_str),
        Some("")
    );
    ns.cleanup().await;
}
