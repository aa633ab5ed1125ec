//! Pipeline edge cases on the real control plane: switching the collectors between DaemonSet and
//! Deployment (the old workload goes, the new one runs), old ConfigMaps listed for pruning only
//! when the config hash changes (counted in the operator's own apiserver request metrics, over a
//! restart's resync and over reconciles that change nothing), and the printer columns as the real
//! `kubectl get` prints them.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use phoenix::crd::Pipeline;
use phoenix::crd::pipeline::PipelinePhase;

use crate::harness::{Operator, TestNamespace, cluster, eventually, gone};

/// The Pipeline `edge` once Ready for its current generation with `ready` collectors.
async fn ready(api: &Api<Pipeline>, ready: &str) -> Pipeline {
    eventually(
        &format!("Pipeline edge Ready {ready}"),
        Duration::from_secs(90),
        || async {
            let p = api.get("edge").await.ok()?;
            let s = p.status.as_ref()?;
            let done = s.observed_generation == p.metadata.generation
                && s.phase == Some(PipelinePhase::Ready)
                && s.ready.as_deref() == Some(ready);
            done.then_some(p)
        },
    )
    .await
}

/// A counter of the operator's /metrics (0 when absent), `series` being its full name and labels.
fn counter(operator: &Operator, series: &str) -> f64 {
    operator
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Reason, type, note and count of every Event about Pipeline `edge`, in a stable order.
async fn events(ns: &TestNamespace) -> Vec<(String, String, String, i32)> {
    let list = ns
        .api::<Event>()
        .list(&Default::default())
        .await
        .expect("Events listed");
    let mut out: Vec<_> = list
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("edge"))
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.type_.unwrap_or_default(),
                e.note.unwrap_or_default(),
                e.series.map_or(1, |s| s.count),
            )
        })
        .collect();
    out.sort();
    out
}

const LIST_CONFIGMAPS: &str = "phoenix_kube_request_duration_seconds_count{verb=\"list\",resource=\"configmaps\",code=\"200\"}";

#[tokio::test]
async fn pipeline_switches_workload_kind_prunes_only_on_a_new_hash_and_prints_its_columns() {
    let ns = TestNamespace::new("pipeline-edges").await;
    let operator = Operator::start(&ns.name, &[]);
    let pipelines = ns.api::<Pipeline>();
    let daemonsets = ns.api::<DaemonSet>();
    let deployments = ns.api::<Deployment>();
    let p: Pipeline = serde_yaml::from_str(
        "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {name: edge}\nspec:\n  template: priority-filter\n  criticalProcesses: ['^postgres$']\n  keepPatterns: ['^java$']\n",
    )
    .expect("test Pipeline parses");
    pipelines
        .create(&PostParams::default(), &p)
        .await
        .expect("Pipeline created");
    ready(&pipelines, "3/3").await;
    daemonsets.get("edge-collector").await.expect("DaemonSet");

    // The printer columns, as the real kubectl prints them.
    let out = cluster()
        .kubectl()
        .args(["get", "pl", "edge", "-n", &ns.name])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(
        rows[0],
        ["NAME", "TEMPLATE", "PHASE", "READY", "AGE"],
        "{text}"
    );
    assert_eq!(
        rows[1][..4],
        ["edge", "priority-filter", "Ready", "3/3"],
        "{text}"
    );
    assert!(
        rows[1][4].ends_with('s') || rows[1][4].ends_with('m'),
        "AGE is a kubectl age: {text}"
    );

    // A restart resyncs without pruning (the only ConfigMap LIST is the new operator's watch) and
    // without a single new Event.
    let events_before = eventually("the RolledOut Event", Duration::from_secs(60), || async {
        let e = events(&ns).await;
        e.iter()
            .any(|(reason, ..)| reason == "RolledOut")
            .then_some(e)
    })
    .await;
    operator.kill();
    let operator = Operator::start(&ns.name, &[]);
    // The new watch's LIST, then a reconcile that began once the startup ones had finished: the
    // resync is over, whatever the machine's speed.
    eventually(
        "the new operator's ConfigMap watch",
        Duration::from_secs(60),
        || async { (counter(&operator, LIST_CONFIGMAPS) >= 1.0).then_some(()) },
    )
    .await;
    operator.nudge(&pipelines, "edge", "pipeline").await;
    assert_eq!(events(&ns).await, events_before, "no Event on resync");
    let lists = counter(&operator, LIST_CONFIGMAPS);
    assert_eq!(
        lists, 1.0,
        "one LIST, the ConfigMap watch's; no prune on resync"
    );

    // A reconcile that changes nothing (an annotation wakes it) lists nothing.
    let patch = serde_json::json!({"metadata": {"annotations": {"example.com/poke": "1"}}});
    pipelines
        .patch("edge", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotated");
    operator.nudge(&pipelines, "edge", "pipeline").await;
    assert_eq!(
        counter(&operator, LIST_CONFIGMAPS),
        lists,
        "same hash: no LIST"
    );

    // A new config hash: one prune LIST.
    let hash = |p: &Pipeline| p.status.as_ref().and_then(|s| s.config_hash.clone());
    let before = hash(&pipelines.get("edge").await.expect("Pipeline"));
    let patch = serde_json::json!({"spec": {"collectionInterval": "20s"}});
    pipelines
        .patch("edge", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("edited");
    let edited = ready(&pipelines, "3/3").await;
    assert_ne!(hash(&edited), before);
    operator.nudge(&pipelines, "edge", "pipeline").await;
    assert_eq!(
        counter(&operator, LIST_CONFIGMAPS),
        lists + 1.0,
        "a new hash: one prune LIST"
    );

    // DaemonSet → Deployment (the same config): the DaemonSet goes, one replica runs.
    let patch = serde_json::json!({"spec": {"deployment": {"mode": "Deployment"}}});
    pipelines
        .patch("edge", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("switched to Deployment");
    ready(&pipelines, "1/1").await;
    deployments.get("edge-collector").await.expect("Deployment");
    gone(&daemonsets, "edge-collector", Duration::from_secs(60)).await;
    operator.nudge(&pipelines, "edge", "pipeline").await;
    assert_eq!(
        counter(&operator, LIST_CONFIGMAPS),
        lists + 1.0,
        "the mode is not in the config: no LIST"
    );

    // … and back: the Deployment goes, the DaemonSet runs on every node again.
    let patch = serde_json::json!({"spec": {"deployment": {"mode": "DaemonSet"}}});
    pipelines
        .patch("edge", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("switched to DaemonSet");
    ready(&pipelines, "3/3").await;
    daemonsets.get("edge-collector").await.expect("DaemonSet");
    gone(&deployments, "edge-collector", Duration::from_secs(60)).await;
    ns.cleanup().await;
}
