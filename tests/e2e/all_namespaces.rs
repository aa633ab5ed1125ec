//! The chart's default: an operator watching every namespace (no `--watch-namespaces`) handles
//! Pipelines in two namespaces. It runs on a control plane of its own, so it never touches the
//! objects of the other tests, which share the main cluster with namespace-scoped operators.

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use phoenix::crd::Pipeline;
use phoenix::crd::pipeline::PipelinePhase;

use crate::harness::{Operator, eventually, repo_root, start_private_in};

#[tokio::test]
async fn an_operator_watching_all_namespaces_handles_two() {
    let dir = repo_root().join(format!("target/e2e/allns-{}", std::process::id()));
    let (env, mut cluster) = start_private_in(&dir);
    let get = |k: &str| {
        env.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("env lacks {k}"))
    };
    let kubeconfig = std::path::PathBuf::from(get("KUBECONFIG"));
    let out = std::process::Command::new(get("KUBECTL"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["apply", "--server-side", "-f"])
        .arg(repo_root().join("crds"))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig).expect("kubeconfig"),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("kubeconfig valid");
    let client = Client::try_from(config).expect("client");
    let operator = Operator::start_all_namespaces(&kubeconfig, &get("PROMETHEUS_URL"), "allns");

    let pipeline: Pipeline = serde_yaml::from_str(
        "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\nspec: {template: baseline}\n",
    )
    .expect("test Pipeline parses");
    for ns in ["team-a", "team-b"] {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("namespace created");
        // The CRDs may still be settling: retry the create until the apiserver serves the kind.
        let api: Api<Pipeline> = Api::namespaced(client.clone(), ns);
        eventually("Pipeline created", Duration::from_secs(60), || async {
            api.create(&PostParams::default(), &pipeline).await.ok()
        })
        .await;
    }
    for ns in ["team-a", "team-b"] {
        let api: Api<Pipeline> = Api::namespaced(client.clone(), ns);
        let ready = eventually(
            &format!("Pipeline {ns}/p Ready"),
            Duration::from_secs(90),
            || async {
                let p = api.get("p").await.ok()?;
                let s = p.status?;
                (s.phase == Some(PipelinePhase::Ready)).then_some(s)
            },
        )
        .await;
        assert_eq!(ready.ready.as_deref(), Some("3/3"), "{ns}: {ready:?}");
        Api::<DaemonSet>::namespaced(client.clone(), ns)
            .get("p-collector")
            .await
            .expect("the collectors' DaemonSet in the Pipeline's namespace");
    }
    operator.kill();
    // Closing cluster.sh's stdin tears the private control plane down.
    drop(cluster.stdin.take());
    let _ = cluster.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
