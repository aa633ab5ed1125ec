//! The Pipeline controller on the real control plane: generated ConfigMap and DaemonSet, config
//! rollouts by hash, invalid configs that leave the running collectors alone, garbage collection,
//! and quiet once Ready.

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use phoenix::crd::pipeline::PipelinePhase;
use phoenix::crd::{Pipeline, conditions};

use crate::harness::{Operator, TestNamespace, eventually};

fn pipeline(yaml: &str) -> Pipeline {
    serde_yaml::from_str(yaml).expect("test Pipeline parses")
}

async fn ready(api: &Api<Pipeline>, name: &str, hash_not: Option<&str>) -> Pipeline {
    let what = format!("Pipeline {name} Ready");
    eventually(&what, Duration::from_secs(60), || async {
        let p = api.get(name).await.ok()?;
        let s = p.status.as_ref()?;
        let fresh =
            s.observed_generation == p.metadata.generation && s.config_hash.as_deref() != hash_not;
        (fresh && s.phase == Some(PipelinePhase::Ready)).then_some(p)
    })
    .await
}

/// The config hash a DaemonSet's pod template carries.
pub(crate) fn template_hash(ds: &DaemonSet) -> Option<String> {
    ds.spec
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get("phoenix.io/config-hash")
        .cloned()
}

#[tokio::test]
async fn pipeline_deploys_rolls_rejects_and_garbage_collects() {
    let ns = TestNamespace::new("pipeline").await;
    let operator = Operator::start(&ns.name, &[]);
    let pipelines = ns.api::<Pipeline>();
    let config_maps = ns.api::<ConfigMap>();
    let daemonsets = ns.api::<DaemonSet>();

    let p = pipeline(
        "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {name: agg}\nspec:\n  template: custom\n  criticalProcesses: ['^postgres$']\n  custom:\n    processors:\n      filter/noise: {error_mode: ignore, metrics: {datapoint: ['resource.attributes[\"process.executable.name\"] == \"sleep\"']}}\n    pipeline: [filter/noise]",
    );
    pipelines
        .create(&PostParams::default(), &p)
        .await
        .expect("Pipeline created");

    // ConfigMap + DaemonSet, owned, Ready on the three kwok nodes.
    let first = ready(&pipelines, "agg", None).await;
    let status = first.status.clone().expect("status");
    let hash = status.config_hash.clone().expect("hash");
    assert_eq!(status.ready.as_deref(), Some("3/3"));
    assert!(conditions::is_true(&status.conditions, "ConfigValid"));
    assert!(conditions::is_true(&status.conditions, "Available"));
    assert!(conditions::is_true(&status.conditions, "Ready"));
    let cm = config_maps
        .get(&format!("agg-{hash}"))
        .await
        .expect("hash-named ConfigMap");
    assert_eq!(cm.immutable, Some(true));
    assert_eq!(cm.owner_references()[0].uid, first.uid().expect("uid"));
    let ds = daemonsets.get("agg-collector").await.expect("DaemonSet");
    assert_eq!(ds.owner_references()[0].uid, first.uid().expect("uid"));
    assert_eq!(template_hash(&ds).as_deref(), Some(hash.as_str()));

    // Quiet once Ready: a reconcile with nothing to do writes neither the Pipeline's status nor
    // its DaemonSet (the nudge's own label write aside).
    let nudged = operator.nudge(&pipelines, "agg", "pipeline").await;
    let before = (nudged, ds.resource_version());
    let after = (
        pipelines
            .get("agg")
            .await
            .expect("Pipeline")
            .resource_version(),
        daemonsets
            .get("agg-collector")
            .await
            .expect("DaemonSet")
            .resource_version(),
    );
    assert_eq!(
        before, after,
        "the operator wrote to a Ready Pipeline or its DaemonSet"
    );

    // Editing the spec rolls a new ConfigMap hash into the pod template.
    let patch = serde_json::json!({"spec": {"collectionInterval": "20s"}});
    pipelines
        .patch("agg", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patched");
    let second = ready(&pipelines, "agg", Some(&hash)).await;
    let new_hash = second
        .status
        .as_ref()
        .and_then(|s| s.config_hash.clone())
        .expect("new hash");
    assert_ne!(new_hash, hash);
    config_maps
        .get(&format!("agg-{new_hash}"))
        .await
        .expect("new ConfigMap");
    let ds = daemonsets.get("agg-collector").await.expect("DaemonSet");
    assert_eq!(template_hash(&ds).as_deref(), Some(new_hash.as_str()));

    // Old hash-named ConfigMaps beyond the current one and two others are pruned.
    let mut last = new_hash.clone();
    for interval in ["21s", "22s", "23s"] {
        let patch = serde_json::json!({"spec": {"collectionInterval": interval}});
        pipelines
            .patch("agg", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patched");
        let p = ready(&pipelines, "agg", Some(&last)).await;
        last = p.status.and_then(|s| s.config_hash).expect("hash");
    }
    let new_hash = last;
    let cms = config_maps
        .list(&ListParams::default().labels("phoenix.io/pipeline=agg"))
        .await
        .expect("listed");
    assert_eq!(
        cms.items.len(),
        3,
        "current + 2 previous ConfigMaps kept, older ones pruned"
    );
    assert!(
        cms.items
            .iter()
            .any(|cm| cm.metadata.name.as_deref() == Some(format!("agg-{new_hash}").as_str()))
    );
    let ds = daemonsets.get("agg-collector").await.expect("DaemonSet");

    // An invalid custom config: ConfigValid=False with the reason; the collectors keep running.
    let ds_version = ds.resource_version();
    let patch = serde_json::json!({"spec": {"custom": {"pipeline": ["filter/missing"]}}});
    pipelines
        .patch("agg", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patched");
    let invalid = eventually("Pipeline agg Invalid", Duration::from_secs(60), || async {
        let p = pipelines.get("agg").await.ok()?;
        let s = p.status.clone()?;
        (s.observed_generation == p.metadata.generation && s.phase == Some(PipelinePhase::Invalid))
            .then_some(s)
    })
    .await;
    let cond = conditions::find(&invalid.conditions, "ConfigValid")
        .expect("ConfigValid condition")
        .clone();
    assert_eq!(cond.status, phoenix::crd::ConditionStatus::False);
    assert!(
        cond.message.contains("filter/missing"),
        "message names the processor: {}",
        cond.message
    );
    assert_eq!(
        invalid.config_hash.as_deref(),
        Some(new_hash.as_str()),
        "last good config is still reported"
    );
    let ds = daemonsets
        .get("agg-collector")
        .await
        .expect("DaemonSet still there");
    assert_eq!(
        ds.resource_version(),
        ds_version,
        "running collectors untouched"
    );

    // Deleting the Pipeline garbage-collects ConfigMaps and the DaemonSet.
    pipelines
        .delete("agg", &Default::default())
        .await
        .expect("deleted");
    eventually(
        "generated objects garbage-collected",
        Duration::from_secs(60),
        || async {
            let cms = config_maps
                .list(&ListParams::default().labels("phoenix.io/pipeline=agg"))
                .await
                .ok()?;
            let gone = daemonsets.get_opt("agg-collector").await.ok()?.is_none();
            (cms.items.is_empty() && gone).then_some(())
        },
    )
    .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn deployment_mode_runs_one_replica() {
    let ns = TestNamespace::new("pipeline-deploy").await;
    let _operator = Operator::start(&ns.name, &[]);
    let pipelines = ns.api::<Pipeline>();
    let p = pipeline(
        "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {name: one}\nspec:\n  template: priority-filter\n  criticalProcesses: ['^postgres$']\n  keepPatterns: ['^java$']\n  deployment: {mode: Deployment}",
    );
    pipelines
        .create(&PostParams::default(), &p)
        .await
        .expect("Pipeline created");
    let p = ready(&pipelines, "one", None).await;
    assert_eq!(p.status.and_then(|s| s.ready).as_deref(), Some("1/1"));
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = ns.api();
    deployments.get("one-collector").await.expect("Deployment");
    ns.cleanup().await;
}
