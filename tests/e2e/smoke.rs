//! The control plane itself works: workloads progress on kwok nodes and the garbage collector
//! removes owned objects.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};

use crate::harness::{TestNamespace, cluster, eventually};

fn object<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_yaml::from_str(yaml).expect("test manifest parses")
}

const POD_SPEC: &str = r#"
      containers:
        - name: app
          image: example.invalid/app:1
"#;

#[tokio::test]
async fn deployment_daemonset_job_progress_and_children_are_garbage_collected() {
    let ns = TestNamespace::new("smoke").await;

    let deploy: Deployment = object(&format!(
        "metadata: {{name: web}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:{POD_SPEC}"
    ));
    let deployments = ns.api::<Deployment>();
    deployments
        .create(&PostParams::default(), &deploy)
        .await
        .expect("deployment created");

    let ds: DaemonSet = object(&format!(
        "metadata: {{name: agent}}\nspec:\n  selector: {{matchLabels: {{app: agent}}}}\n  template:\n    metadata: {{labels: {{app: agent}}}}\n    spec:{POD_SPEC}"
    ));
    let daemonsets = ns.api::<DaemonSet>();
    daemonsets
        .create(&PostParams::default(), &ds)
        .await
        .expect("daemonset created");

    let job: Job = object(&format!(
        "metadata: {{name: once}}\nspec:\n  template:\n    spec:\n      restartPolicy: Never{POD_SPEC}"
    ));
    let jobs = ns.api::<Job>();
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("job created");

    eventually(
        "Deployment web Available with 2 ready replicas",
        Duration::from_secs(90),
        || async {
            let d = deployments.get("web").await.ok()?;
            let status = d.status?;
            let available = status.conditions?.iter().any(|c| {
                c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
            });
            (available && status.ready_replicas == Some(2)).then_some(())
        },
    )
    .await;

    eventually(
        "DaemonSet agent ready on every node",
        Duration::from_secs(90),
        || async {
            let s = daemonsets.get("agent").await.ok()?.status?;
            (s.desired_number_scheduled >= 3 && s.number_ready == s.desired_number_scheduled)
                .then_some(())
        },
    )
    .await;

    eventually("Job once Complete", Duration::from_secs(90), || async {
        let s = jobs.get("once").await.ok()?.status?;
        s.conditions?
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
            .then_some(())
    })
    .await;

    // Pods really ran on kwok nodes.
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods listed");
    assert_eq!(pods.items.len(), 2);
    assert!(pods.items.iter().all(|p| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some_and(|n| n.starts_with("kwok-node"))
    }));

    // Deleting the owner garbage-collects ReplicaSets and Pods (real garbage collector).
    deployments
        .delete("web", &DeleteParams::background())
        .await
        .expect("deployment deleted");
    let replicasets = ns.api::<ReplicaSet>();
    let pods_api = ns.api::<Pod>();
    eventually(
        "ReplicaSets and Pods of web garbage-collected",
        Duration::from_secs(90),
        || async {
            let rs = replicasets
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            let pods = pods_api
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            (rs.items.is_empty() && pods.items.is_empty()).then_some(())
        },
    )
    .await;

    let _ = cluster();
    ns.cleanup().await;
}
