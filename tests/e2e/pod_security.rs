//! Collectors under Pod Security admission on the real control plane: the collectors mount the
//! host's /proc (hostPath), which the `baseline` level refuses. In a namespace labelled
//! `pod-security.kubernetes.io/enforce=baseline` the DaemonSet controller cannot create them; the
//! Pipeline says so (`PodsRefusedByAdmission`, the apiserver's message, the label to set) and an
//! Experiment there fails with that reason instead of waiting for its deploy timeout.

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use phoenix::controller::pod_admission::{POD_SECURITY_ENFORCE, PODS_REFUSED};
use phoenix::crd::experiment::ExperimentPhase;
use phoenix::crd::{Experiment, Pipeline, conditions};

use crate::harness::{Operator, TestNamespace, eventually};

async fn enforce(ns: &TestNamespace, level: &str) {
    let patch = serde_json::json!({"metadata": {"labels": {POD_SECURITY_ENFORCE: level}}});
    Api::<Namespace>::all(ns.client.clone())
        .patch(&ns.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("namespace labelled");
}

#[tokio::test]
async fn collectors_refused_by_pod_security_are_a_condition_not_a_silent_wait() {
    let ns = TestNamespace::new("podsecurity").await;
    enforce(&ns, "baseline").await;
    // A deploy timeout far beyond the test's deadlines: only the refusal can end the Experiment.
    let _operator = Operator::start(&ns.name, &["--deploy-timeout-seconds", "3600"]);

    let pipelines = ns.api::<Pipeline>();
    let p: Pipeline = serde_yaml::from_str(
        "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {name: refused}\nspec: {template: baseline}",
    )
    .expect("test Pipeline parses");
    pipelines
        .create(&PostParams::default(), &p)
        .await
        .expect("Pipeline created");

    let condition = eventually(
        "Pipeline refused Available=False/PodsRefusedByAdmission",
        Duration::from_secs(90),
        || async {
            let p = pipelines.get("refused").await.ok()?;
            let status = p.status?;
            conditions::find(&status.conditions, "Available")
                .filter(|c| c.reason == PODS_REFUSED)
                .cloned()
        },
    )
    .await;
    assert_eq!(condition.status, conditions::ConditionStatus::False);
    // The apiserver's own words, and what to do about them.
    for expected in [
        "violates PodSecurity \"baseline",
        "hostPath volumes",
        &format!(
            "kubectl label namespace {} pod-security.kubernetes.io/enforce=privileged",
            ns.name
        ),
    ] {
        assert!(
            condition.message.contains(expected),
            "{expected:?} in {:?}",
            condition.message
        );
    }
    let ready = pipelines
        .get("refused")
        .await
        .expect("Pipeline")
        .status
        .expect("status");
    assert!(
        conditions::find(&ready.conditions, "Ready").is_some_and(|c| c.reason == PODS_REFUSED),
        "{:?}",
        ready.conditions
    );
    // The refusal is real: the DaemonSet has no pod.
    let ds = ns
        .api::<DaemonSet>()
        .get("refused-collector")
        .await
        .expect("DaemonSet");
    let ds_status = ds.status.expect("DaemonSet status");
    assert_eq!(ds_status.current_number_scheduled, 0);
    assert!(ds_status.desired_number_scheduled > 0);

    // An Experiment in the same namespace fails with the reason, well before its deploy timeout.
    let experiments = ns.api::<Experiment>();
    let e: Experiment = serde_yaml::from_str(
        "apiVersion: phoenix.io/v1alpha1\nkind: Experiment\nmetadata: {name: refused}\nspec:\n  baseline: {pipeline: {template: baseline}}\n  candidate: {pipeline: {template: baseline}}\n  duration: 60s\n  warmup: 0s",
    )
    .expect("test Experiment parses");
    experiments
        .create(&PostParams::default(), &e)
        .await
        .expect("Experiment created");
    let failed = eventually(
        "Experiment refused Failed",
        Duration::from_secs(90),
        || async {
            let e = experiments.get("refused").await.ok()?;
            let status = e.status?;
            (status.phase == Some(ExperimentPhase::Failed)).then_some(status)
        },
    )
    .await;
    let ready = conditions::find(&failed.conditions, "Ready").expect("Ready condition");
    assert!(
        ready.reason.ends_with(PODS_REFUSED)
            && ["Baseline", "Candidate"]
                .iter()
                .any(|side| ready.reason.starts_with(side)),
        "{ready:?}"
    );
    assert!(
        failed
            .message
            .as_deref()
            .is_some_and(|m| m.contains("violates PodSecurity")),
        "{:?}",
        failed.message
    );
    ns.cleanup().await;
}
