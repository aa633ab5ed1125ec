//! The operator in-cluster, installed by Helm: `helm install` of charts/phoenix runs the
//! `phoenix-operator` image (target/images/phoenix-operator.tar, `just images`) as a pod on the
//! local pod runner, which unpacks the image and runs it chrooted with a real bound
//! ServiceAccount token, the cluster CA and `KUBERNETES_SERVICE_HOST/PORT` — so the operator uses
//! kube-rs' in-cluster config and the chart's RBAC exactly as on a real node. The pod becomes
//! Ready through the chart's readiness probe, runs an Experiment to a verdict, `helm upgrade`
//! rolls it without touching the Experiment's status, and `helm uninstall` removes the operator
//! and leaves the CRDs and the Experiments.
//!
//! The archive is needed only when `PHOENIX_REQUIRE_IMAGES` is set (`just test` sets it when it
//! built the images): then a missing archive fails; without it the test says it skipped.
//!
//! Values the test sets beyond the defaults, and why: `prometheusUrl` (the cluster's Prometheus);
//! `watchNamespaces` (the test's namespace: other tests run their own operators on this shared
//! cluster); `nodeSelector` and `tolerations` (the pod must land on the runner's node, tainted
//! so that nothing else does). The images are the chart's defaults.

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use phoenix::crd::experiment::{Experiment, ExperimentPhase, Verdict};

use crate::experiment::{FINAL, experiment, feed_reducing, phase, running_since};
use crate::harness::{TestNamespace, cluster, eventually, helm, image_archive, repo_root};
use crate::podrunner_test::{
    Runner, TAINT_KEY, cgroup_memory_limit, container_pid, node_ready, process_uid,
};

/// `helm <args> --namespace <ns> --kubeconfig <cluster>`; panics with helm's output on failure.
fn run_helm(namespace: &str, args: &[&str]) -> String {
    let out = Command::new(helm())
        .args(args)
        .args(["--namespace", namespace, "--kubeconfig"])
        .arg(&cluster().kubeconfig)
        .output()
        .expect("helm runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "helm {args:?} failed: {text}");
    text
}

/// The release's operator pod that is Ready (its readiness probe passed) and not `except`.
async fn ready_operator_pod(pods: &Api<Pod>, release: &str, except: Option<&str>) -> Pod {
    let selector =
        format!("app.kubernetes.io/instance={release},app.kubernetes.io/component=operator");
    eventually(
        "the operator pod Ready through its readiness probe",
        Duration::from_secs(120),
        || async {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            list.items.into_iter().find(|p| {
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                ready
                    && p.metadata.deletion_timestamp.is_none()
                    && Some(p.name_any().as_str()) != except
            })
        },
    )
    .await
}

/// Who the apiserver says the token of the pod's projected ServiceAccount volume is.
async fn token_identity(
    client: &kube::Client,
    runner_dir: &std::path::Path,
    pod: &Pod,
) -> (String, Vec<String>) {
    let volume = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|v| v.iter().find(|v| v.name.starts_with("kube-api-access-")))
        .map(|v| v.name.clone())
        .expect("the ServiceAccount admission plugin added a kube-api-access volume");
    let token_file = runner_dir
        .join("pods")
        .join(format!(
            "{}_{}",
            pod.namespace().unwrap_or_default(),
            pod.name_any()
        ))
        .join("volumes")
        .join(volume)
        .join("token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap_or_else(|e| panic!("{}: {e}", token_file.display()));
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.trim().to_string(),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("TokenReview answers");
    let user = answer
        .status
        .and_then(|s| s.authenticated.filter(|a| *a).and(s.user))
        .expect("the pod's token authenticates");
    let pod_names = user
        .extra
        .unwrap_or_default()
        .remove("authentication.kubernetes.io/pod-name")
        .unwrap_or_default();
    (user.username.unwrap_or_default(), pod_names)
}

#[tokio::test]
async fn helm_install_runs_the_operator_in_cluster_to_a_verdict_and_upgrades_and_uninstalls() {
    let Some(archive) = image_archive("phoenix-operator") else {
        return;
    };
    let c = cluster();
    let ns = TestNamespace::new("helm").await;
    let node = format!("local-{}", ns.name);
    let runner_dir = repo_root().join(format!("target/e2e/podrunner-{node}"));
    let _runner = Runner::start_with(
        &node,
        &[
            "--image-archive".into(),
            format!("phoenix-operator={}", archive.display()),
        ],
    );
    node_ready(&Api::<Node>::all(ns.client.clone()), &node).await;

    let release = ns.name.clone();
    let fullname = format!("{release}-phoenix");
    let values = runner_dir.join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "prometheusUrl: {url}\nwatchNamespaces: [{ns}]\n\
             nodeSelector: {{kubernetes.io/hostname: {node}}}\n\
             tolerations: [{{key: {TAINT_KEY}, operator: Exists, effect: NoSchedule}}]\n",
            url = c.prometheus_url,
            ns = ns.name,
        ),
    )
    .expect("values file written");
    let values = values.display().to_string();
    let chart = repo_root().join("charts/phoenix").display().to_string();

    // Install → the operator pod Ready through its readiness probe (/readyz: watches synced and
    // the Lease held), under the chart's ServiceAccount with a token bound to the pod.
    let started = Instant::now();
    run_helm(&ns.name, &["install", &release, &chart, "-f", &values]);
    let pods = ns.api::<Pod>();
    let first = ready_operator_pod(&pods, &release, None).await;
    let spec = first.spec.clone().expect("pod spec");
    assert_eq!(spec.node_name.as_deref(), Some(node.as_str()));
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some(fullname.as_str())
    );
    let status = first.status.clone().expect("pod status");
    let container = &status.container_statuses.expect("container statuses")[0];
    assert!(container.ready, "{container:?}");
    assert_eq!(container.restart_count, 0, "{container:?}");
    assert!(
        container
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .is_some(),
        "{container:?}"
    );
    // The image's process, chrooted, as the chart's runAsUser, under the chart's memory limit.
    let pid = container_pid(&first).expect("the operator's pid");
    let root = std::fs::read_link(format!("/proc/{pid}/root")).expect("the process's root");
    assert!(root.ends_with("rootfs/operator"), "{}", root.display());
    assert_eq!(process_uid(pid), Some(65532));
    assert_eq!(cgroup_memory_limit(pid), Some(256 << 20));
    let (user, bound_pods) = token_identity(&ns.client, &runner_dir, &first).await;
    assert_eq!(
        user,
        format!("system:serviceaccount:{}:{fullname}", ns.name),
        "the operator's token is the chart's ServiceAccount's"
    );
    assert_eq!(
        bound_pods,
        [first.name_any()],
        "the token is bound to the pod"
    );
    let lease = Api::<Lease>::namespaced(ns.client.clone(), &ns.name)
        .get(&fullname)
        .await
        .expect("the operator took its Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(first.name_any().as_str())
    );

    // An Experiment to a verdict, judged by the in-cluster operator.
    let experiments = ns.api::<Experiment>();
    experiments
        .create(
            &PostParams::default(),
            &experiment("exp", "minSeriesReductionPercent: 80", ""),
        )
        .await
        .expect("Experiment created");
    let since = running_since(&experiments, "exp").await;
    let label = format!("{}/exp", ns.name);
    feed_reducing(c.var("PROMETHEUS_REMOTE_WRITE_URL"), &label, since).await;
    let verdict = phase(&experiments, "exp", FINAL, 180).await;
    println!(
        "helm install → Experiment verdict: {:.1}s (60s run)",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        verdict.phase,
        Some(ExperimentPhase::Completed),
        "{verdict:?}"
    );
    assert_eq!(
        verdict.verdict,
        Some(Verdict::Pass),
        "{:?}",
        verdict.results
    );

    // Upgrade with a changed value: a new pod (Recreate: the old one goes first), Ready and
    // holding the Lease; the finished Experiment's status is untouched, and a new Experiment is
    // reconciled by the new pod.
    run_helm(
        &ns.name,
        &[
            "upgrade",
            &release,
            &chart,
            "-f",
            &values,
            "--set",
            "logLevel=debug",
        ],
    );
    let second = ready_operator_pod(&pods, &release, Some(&first.name_any())).await;
    assert!(
        second
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.env.iter().flatten())
            .any(|e| e.name == "PHOENIX_LOG_LEVEL" && e.value.as_deref() == Some("debug")),
        "the new pod carries the changed value"
    );
    eventually(
        "the old operator pod gone",
        Duration::from_secs(60),
        || async {
            pods.get_opt(&first.name_any())
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    let leases = Api::<Lease>::namespaced(ns.client.clone(), &ns.name);
    eventually(
        "the new pod holds the Lease",
        Duration::from_secs(60),
        || async {
            let holder = leases.get(&fullname).await.ok()?.spec?.holder_identity?;
            (holder == second.name_any()).then_some(())
        },
    )
    .await;
    experiments
        .create(
            &PostParams::default(),
            &experiment("after-upgrade", "minSeriesReductionPercent: 80", ""),
        )
        .await
        .expect("second Experiment created");
    phase(
        &experiments,
        "after-upgrade",
        &[ExperimentPhase::Running],
        120,
    )
    .await;
    let after = experiments.get("exp").await.expect("Experiment").status;
    assert_eq!(
        after.as_ref(),
        Some(&verdict),
        "the finished Experiment's status survived"
    );

    // Uninstall: the operator's objects go; the CRDs and the users' Experiments stay.
    run_helm(&ns.name, &["uninstall", &release]);
    let deployments = ns.api::<Deployment>();
    eventually(
        "the operator's objects removed",
        Duration::from_secs(60),
        || async {
            let gone = deployments.get_opt(&fullname).await.ok()?.is_none()
                && ns
                    .api::<ServiceAccount>()
                    .get_opt(&fullname)
                    .await
                    .ok()?
                    .is_none()
                && ns
                    .api::<Role>()
                    .get_opt(&format!("{fullname}-leader-election"))
                    .await
                    .ok()?
                    .is_none()
                && ns
                    .api::<RoleBinding>()
                    .get_opt(&fullname)
                    .await
                    .ok()?
                    .is_none()
                && Api::<ClusterRole>::all(ns.client.clone())
                    .get_opt(&fullname)
                    .await
                    .ok()?
                    .is_none()
                && Api::<ClusterRoleBinding>::all(ns.client.clone())
                    .get_opt(&format!("{fullname}-nodes"))
                    .await
                    .ok()?
                    .is_none();
            gone.then_some(())
        },
    )
    .await;
    eventually("the operator pod gone", Duration::from_secs(60), || async {
        pods.get_opt(&second.name_any())
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let crds = Api::<CustomResourceDefinition>::all(ns.client.clone());
    for crd in [
        "experiments.phoenix.io",
        "pipelines.phoenix.io",
        "simulations.phoenix.io",
    ] {
        assert!(
            crds.get_opt(crd).await.expect("CRD lookup").is_some(),
            "{crd} kept"
        );
    }
    let kept = experiments
        .get("exp")
        .await
        .expect("the Experiment is kept");
    assert_eq!(kept.status.as_ref(), Some(&verdict), "with its results");
    assert!(
        experiments
            .get_opt("after-upgrade")
            .await
            .expect("lookup")
            .is_some()
    );
    ns.cleanup().await;
}
