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

/// Every `phoenix_reconcile_errors_total` series of the Pipeline controller, and their sum.
fn pipeline_errors(operator: &Operator) -> (Vec<String>, f64) {
    let lines = operator.reconcile_errors("pipeline");
    let sum = lines
        .iter()
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    (lines, sum)
}

/// A namespace being deleted is waited out, not retried: the namespace controller deletes a
/// Pipeline's ConfigMap while the Pipeline itself is still there (held here by a finalizer of the
/// test's own, as any finalizer or a slow garbage collector would), its reconcile's create is
/// refused (403, cause NamespaceTerminating), and the operator waits for the Pipeline's deletion
/// instead of retrying every 5 s, which for every object of a big namespace hammered the
/// apiserver for minutes (`just bench` measured ~300 refused creates a second after deleting a
/// namespace of 2,000 Experiments).
#[tokio::test]
async fn a_namespace_being_deleted_is_waited_out_not_retried() {
    let ns = TestNamespace::new("ns-terminating").await;
    let operator = Operator::start(&ns.name, &[]);
    let pipelines = ns.api::<Pipeline>();
    const HOLD: &str = "e2e.phoenix.io/hold";
    let p: Pipeline = serde_yaml::from_str(&format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {{name: held, finalizers: ['{HOLD}']}}\nspec:\n  template: baseline\n  deployment: {{nodeSelector: {{phoenix.io/e2e: no-such-node}}}}\n",
    ))
    .expect("test Pipeline parses");
    pipelines
        .create(&PostParams::default(), &p)
        .await
        .expect("Pipeline created");
    let config_map = eventually(
        "the Pipeline's ConfigMap recorded",
        Duration::from_secs(60),
        || async { pipelines.get("held").await.ok()?.status?.config_map },
    )
    .await;
    let config_maps = ns.api::<k8s_openapi::api::core::v1::ConfigMap>();
    config_maps
        .get(&config_map)
        .await
        .expect("ConfigMap exists");

    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ns.client.clone());
    namespaces
        .delete(&ns.name, &Default::default())
        .await
        .expect("namespace deleted");
    gone(&config_maps, &config_map, Duration::from_secs(60)).await;
    gone(
        &ns.api::<DaemonSet>(),
        "held-collector",
        Duration::from_secs(60),
    )
    .await;
    eventually(
        "the Pipeline marked for deletion",
        Duration::from_secs(60),
        || async {
            let p = pipelines.get("held").await.ok()?;
            p.metadata.deletion_timestamp.map(|_| ())
        },
    )
    .await;
    let terminating =
        "phoenix_reconcile_errors_total{controller=\"pipeline\",reason=\"NamespaceTerminating\"}";
    eventually(
        "the Pipeline's refused re-create counted as NamespaceTerminating",
        Duration::from_secs(60),
        || async { (counter(&operator, terminating) >= 1.0).then_some(()) },
    )
    .await;
    // Everything the namespace's deletion changes has been reconciled; from then on, three of the
    // old 5 s retry periods pass without another refused reconcile (a window, because what is
    // shown is that a periodic retry no longer happens).
    operator.idle("pipeline").await;
    let (_, before) = pipeline_errors(&operator);
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (lines, now) = pipeline_errors(&operator);
        assert_eq!(
            now, before,
            "a refused create in a terminating namespace is not retried: {lines:?}"
        );
    }
    assert!(
        config_maps
            .get_opt(&config_map)
            .await
            .ok()
            .flatten()
            .is_none(),
        "nothing re-created"
    );

    // The test's own finalizer goes; the namespace's deletion then completes.
    pipelines
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("finalizer removed");
    gone(&namespaces, &ns.name, Duration::from_secs(120)).await;
}
