//! The Helm chart (charts/phoenix) on the real control plane: it lints and renders least-privilege
//! RBAC and a restricted Pod; its Deployment is admitted under Pod Security "restricted"; the
//! operator completes an Experiment under the chart's own ServiceAccount token; and requests
//! outside the chart's rules are denied.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use phoenix::analysis::remote_write::{self, TimeSeries};
use phoenix::crd::Pipeline;
use phoenix::crd::experiment::{Experiment, ExperimentPhase, Verdict};
use phoenix::crd::pipeline::PipelinePhase;
use prometheus_http_query::reqwest;
use serde::Deserialize;
use serde_yaml::Value;

use crate::harness::{
    Operator, TestNamespace, cluster, eventually, helm, repo_root, run_with_stdin,
};

/// The rules the chart grants, as `group/resource verb` (`core` for the core group), per object.
/// They are exactly the requests the operator makes; see charts/phoenix/templates/rbac.yaml.
const NAMESPACED_RULES: &[(&str, &str)] = &[
    ("phoenix.io/experiments", "get list watch delete"),
    ("phoenix.io/pipelines", "get list watch create patch delete"),
    (
        "phoenix.io/simulations",
        "get list watch create patch delete",
    ),
    ("phoenix.io/experiments/status", "patch"),
    ("phoenix.io/pipelines/status", "patch"),
    ("phoenix.io/simulations/status", "patch"),
    ("phoenix.io/experiments/finalizers", "update"),
    ("phoenix.io/pipelines/finalizers", "update"),
    ("phoenix.io/simulations/finalizers", "update"),
    ("core/configmaps", "get list watch create patch delete"),
    ("core/secrets", "get"),
    ("apps/daemonsets", "get list watch create patch delete"),
    ("apps/deployments", "get list watch create patch delete"),
    ("batch/jobs", "get list watch create patch"),
    ("core/events", "list"),
    ("events.k8s.io/events", "create patch"),
];
const CLUSTER_RULES: &[(&str, &str)] = &[("core/nodes", "list")];
/// The leader-election Role; `{lease}` is the Lease's name.
const LEASE_RULES: &[(&str, &str)] = &[
    ("coordination.k8s.io/leases", "create"),
    ("coordination.k8s.io/leases[{lease}]", "get patch"),
];

/// The collector UID ledger's Role; `{lease}` is the ledger ConfigMap's name.
const UID_LEDGER_RULES: &[(&str, &str)] = &[
    ("core/configmaps", "create"),
    ("core/configmaps[{lease}]", "get update"),
];

const RBAC_KINDS: &[&str] = &[
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

fn chart_dir() -> PathBuf {
    repo_root().join("charts/phoenix")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm template <release> charts/phoenix --namespace <namespace> --set …`.
fn template(release: &str, namespace: &str, sets: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(helm());
    cmd.args(["template", release])
        .arg(chart_dir())
        .args(["--namespace", namespace]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("helm runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(text(&out))
    }
}

pub(crate) fn render(release: &str, namespace: &str, sets: &[&str]) -> Vec<Value> {
    let yaml = template(release, namespace, sets)
        .unwrap_or_else(|e| panic!("helm template {sets:?} failed: {e}"));
    serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

fn find<'a>(docs: &'a [Value], kind_: &str, name_: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind(d) == kind_ && name(d) == name_)
        .unwrap_or_else(|| panic!("the chart renders no {kind_} {name_}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A Role's or ClusterRole's rules as `group/resource[names] verb` lines.
fn rules(role: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_sequence().expect("rules") {
        let names = strings(&rule["resourceNames"]);
        let names = if names.is_empty() {
            String::new()
        } else {
            format!("[{}]", names.join(","))
        };
        for group in strings(&rule["apiGroups"]) {
            let group = if group.is_empty() { "core" } else { group };
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    out.insert(format!("{group}/{resource}{names} {verb}"));
                }
            }
        }
    }
    out
}

fn expected(table: &[(&str, &str)], lease: &str) -> BTreeSet<String> {
    table
        .iter()
        .flat_map(|(resource, verbs)| {
            let resource = resource.replace("{lease}", lease);
            verbs
                .split_whitespace()
                .map(move |v| format!("{resource} {v}"))
        })
        .collect()
}

fn yaml_stream(docs: &[&Value]) -> String {
    docs.iter()
        .map(|d| serde_yaml::to_string(d).expect("YAML serializes"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn kubectl_apply(docs: &[&Value]) {
    let mut cmd = cluster().kubectl();
    cmd.args(["apply", "-f", "-"]);
    let out = run_with_stdin(cmd, &yaml_stream(docs));
    assert!(out.status.success(), "kubectl apply failed: {}", text(&out));
}

/// Deletes, when dropped (also when a test fails), what namespace deletion does not: the chart's
/// cluster-scoped ClusterRoles and ClusterRoleBindings.
struct ClusterScoped(String);

impl ClusterScoped {
    fn of(docs: &[Value]) -> ClusterScoped {
        let docs: Vec<&Value> = docs
            .iter()
            .filter(|d| matches!(kind(d), "ClusterRole" | "ClusterRoleBinding"))
            .collect();
        ClusterScoped(yaml_stream(&docs))
    }
}

impl Drop for ClusterScoped {
    fn drop(&mut self) {
        let mut cmd = cluster().kubectl();
        cmd.args(["delete", "--ignore-not-found", "--wait=false", "-f", "-"]);
        let out = run_with_stdin(cmd, &self.0);
        if !out.status.success() {
            eprintln!(
                "deleting the chart's cluster-scoped RBAC failed: {}",
                text(&out)
            );
        }
    }
}

/// Applies the chart's ServiceAccount and RBAC, mints a token for the ServiceAccount with the
/// TokenRequest API and writes a kubeconfig that uses it (server and CA from the admin's).
fn install_rbac_and_login(docs: &[Value], namespace: &str, sa: &str) -> PathBuf {
    let rbac: Vec<&Value> = docs
        .iter()
        .filter(|d| RBAC_KINDS.contains(&kind(d)))
        .collect();
    kubectl_apply(&rbac);
    let out = cluster()
        .kubectl()
        .args(["create", "token", sa, "-n", namespace, "--duration", "1h"])
        .output()
        .expect("kubectl runs");
    assert!(out.status.success(), "token request failed: {}", text(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let admin: Value = serde_yaml::from_str(
        &std::fs::read_to_string(&cluster().kubeconfig).expect("admin kubeconfig readable"),
    )
    .expect("admin kubeconfig parses");
    let server = admin["clusters"][0]["cluster"].clone();
    assert!(
        server["server"].is_string() && server["certificate-authority-data"].is_string(),
        "the admin kubeconfig names the server and embeds the CA"
    );
    let kubeconfig = serde_yaml::to_string(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {
            "server": server["server"].as_str(),
            "certificate-authority-data": server["certificate-authority-data"].as_str(),
        }}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": sa}}],
        "current-context": "e2e",
    }))
    .expect("kubeconfig serializes");
    let path = repo_root().join(format!("target/e2e/kubeconfig-{namespace}-{sa}"));
    std::fs::write(&path, kubeconfig).expect("kubeconfig written");
    path
}

/// `kubectl auth can-i <args>` with `kubeconfig`: true for "yes".
fn can_i(kubeconfig: &Path, args: &[&str]) -> bool {
    let out = Command::new(&cluster().kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["auth", "can-i"])
        .args(args)
        .output()
        .expect("kubectl runs");
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        answer == "yes" || answer == "no",
        "kubectl auth can-i {args:?}: {}",
        text(&out)
    );
    answer == "yes"
}

/// `group/resource[/sub]` of the tables → kubectl's `resource.group` and `--subresource`.
fn can_i_args(resource: &str) -> (String, Option<String>) {
    let (group, rest) = resource.split_once('/').expect("group/resource");
    let (resource, sub) = match rest.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (rest, None),
    };
    let full = if group == "core" {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    (full, sub)
}

#[test]
fn the_chart_lints_and_renders_least_privilege() {
    for sets in [
        vec![],
        vec!["replicas=3", "serviceMonitor.enabled=true"],
        vec!["watchNamespaces={a,b}", "leaderElection.enabled=false"],
        vec!["watchNamespaces={a,b}", "networkPolicy.enabled=true"],
    ] {
        let mut cmd = Command::new(helm());
        cmd.args(["lint", "--strict"]).arg(chart_dir());
        for s in &sets {
            cmd.args(["--set", s]);
        }
        let out = cmd.output().expect("helm runs");
        assert!(out.status.success(), "helm lint {sets:?}: {}", text(&out));
    }

    // The CRDs ship in crds/ (tests/chart.rs keeps them equal to the repository's crds/).
    let out = Command::new(helm())
        .args(["template", "phoenix", "--include-crds"])
        .arg(chart_dir())
        .output()
        .expect("helm runs");
    let crds = String::from_utf8_lossy(&out.stdout)
        .matches("kind: CustomResourceDefinition")
        .count();
    assert_eq!(crds, 3, "helm template --include-crds: {}", text(&out));

    let docs = render("phoenix", "phoenix-system", &[]);
    let kinds: BTreeSet<&str> = docs.iter().map(kind).collect();
    let want = [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ];
    assert_eq!(kinds, want.into_iter().collect(), "the default render");

    // RBAC: exactly the table above, never a wildcard.
    for doc in docs
        .iter()
        .filter(|d| matches!(kind(d), "Role" | "ClusterRole"))
    {
        assert!(
            rules(doc).iter().all(|r| !r.contains('*')),
            "{} {} has a wildcard: {:?}",
            kind(doc),
            name(doc),
            rules(doc)
        );
    }
    assert_eq!(
        rules(find(&docs, "ClusterRole", "phoenix")),
        expected(NAMESPACED_RULES, "")
    );
    assert_eq!(
        rules(find(&docs, "ClusterRole", "phoenix-nodes")),
        expected(CLUSTER_RULES, "")
    );
    assert_eq!(
        rules(find(&docs, "Role", "phoenix-leader-election")),
        expected(LEASE_RULES, "phoenix")
    );
    assert_eq!(
        rules(find(&docs, "Role", "phoenix-collector-uids")),
        expected(UID_LEDGER_RULES, "phoenix-collector-uids")
    );
    // The user-facing roles, aggregated into view / edit / admin.
    let view = find(&docs, "ClusterRole", "phoenix-view");
    let edit = find(&docs, "ClusterRole", "phoenix-edit");
    let kinds3 = ["experiments", "pipelines", "simulations"];
    let mut want_view: BTreeSet<String> = BTreeSet::new();
    for r in kinds3 {
        for sub in [r.to_string(), format!("{r}/status")] {
            for v in ["get", "list", "watch"] {
                want_view.insert(format!("phoenix.io/{sub} {v}"));
            }
        }
    }
    assert_eq!(rules(view), want_view);
    let want_edit: BTreeSet<String> = kinds3
        .iter()
        .flat_map(|r| {
            ["create", "update", "patch", "delete", "deletecollection"]
                .map(|v| format!("phoenix.io/{r} {v}"))
        })
        .collect();
    assert_eq!(rules(edit), want_edit);
    for (role, aggregates) in [
        (view, &["view", "edit", "admin"][..]),
        (edit, &["edit", "admin"][..]),
    ] {
        for a in aggregates {
            assert_eq!(
                role["metadata"]["labels"][format!("rbac.authorization.k8s.io/aggregate-to-{a}")],
                "true"
            );
        }
    }
    let binding = find(&docs, "ClusterRoleBinding", "phoenix");
    assert_eq!(binding["subjects"][0]["name"], "phoenix");
    assert_eq!(binding["subjects"][0]["namespace"], "phoenix-system");

    // The Deployment: restricted Pod Security, settings from values, probes on the http port.
    let deployment = find(&docs, "Deployment", "phoenix");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "phoenix");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"], "ghcr.io/phoenix-operator/phoenix-operator:0.1.0",
        "the operator image `just images` builds"
    );
    let sc = &container["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{sc:?}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{sc:?}");
    assert_eq!(sc["runAsNonRoot"], true, "{sc:?}");
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{sc:?}");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{sc:?}");
    assert!(sc["capabilities"]["add"].is_null() && sc["privileged"].is_null());
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "http");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["ports"][0]["name"], "http");
    let env = |doc: &Value, key: &str| -> Value {
        doc["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_sequence()
            .and_then(|env| env.iter().find(|e| e["name"] == key).cloned())
            .unwrap_or_else(|| panic!("env {key} not set"))
    };
    assert_eq!(env(deployment, "PHOENIX_LEADER_ELECTION")["value"], "true");
    assert_eq!(env(deployment, "PHOENIX_LEASE_NAME")["value"], "phoenix");
    assert_eq!(
        env(deployment, "PHOENIX_LEASE_NAMESPACE")["value"],
        "phoenix-system"
    );
    assert_eq!(
        env(deployment, "PHOENIX_HTTP_ADDR")["value"],
        "0.0.0.0:8080"
    );
    assert_eq!(
        env(deployment, "PHOENIX_SIMULATOR_IMAGE")["value"],
        "ghcr.io/phoenix-operator/phoenix-simulator:0.1.0",
        "the simulator image `just images` builds"
    );
    assert_eq!(
        env(deployment, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env(deployment, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env(deployment, "PHOENIX_COLLECTOR_UID_LEDGER")["value"],
        "phoenix-system/phoenix-collector-uids"
    );
    assert_eq!(
        env(deployment, "PHOENIX_COLLECTOR_UID_RANGE")["value"],
        "2000000000-2000099999"
    );
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");

    // Values reach the Deployment.
    let docs = render(
        "phoenix",
        "phoenix-system",
        &[
            "prometheusUrl=http://prom:9090",
            "remoteWriteUrl=http://rw/api/v1/write",
            "http.port=9000",
            "logLevel=debug",
            "deployTimeoutSeconds=60",
            "analysisRetries=3",
            "watchNamespaces={a,b}",
            "allowedPrometheusUrlPrefixes={http://team-prom,http://thanos}",
            "allowedCollectorImages={registry.example/otelcol:2}",
            "image.tag=v9",
            "nodeSelector.disk=ssd",
        ],
    );
    let d = find(&docs, "Deployment", "phoenix");
    for (key, value) in [
        ("PHOENIX_PROMETHEUS_URL", "http://prom:9090"),
        ("PHOENIX_REMOTE_WRITE_URL", "http://rw/api/v1/write"),
        ("PHOENIX_HTTP_ADDR", "0.0.0.0:9000"),
        ("PHOENIX_LOG_LEVEL", "debug"),
        ("PHOENIX_DEPLOY_TIMEOUT_SECONDS", "60"),
        ("PHOENIX_ANALYSIS_RETRIES", "3"),
        ("PHOENIX_WATCH_NAMESPACES", "a,b"),
        (
            "PHOENIX_ALLOWED_PROMETHEUS_URL_PREFIXES",
            "http://team-prom,http://thanos",
        ),
        (
            "PHOENIX_ALLOWED_COLLECTOR_IMAGES",
            "registry.example/otelcol:2",
        ),
        (
            "PHOENIX_SIMULATOR_IMAGE",
            "ghcr.io/phoenix-operator/phoenix-simulator:v9",
        ),
    ] {
        assert_eq!(env(d, key)["value"], value, "{key}");
    }
    assert_eq!(d["spec"]["template"]["spec"]["nodeSelector"]["disk"], "ssd");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/phoenix-operator/phoenix-operator:v9"
    );
    // A registry of one's own: repository and tag of each image.
    let own = render(
        "phoenix",
        "phoenix-system",
        &[
            "image.repository=registry.example/ops/phoenix-operator",
            "image.tag=1.2",
            "simulatorImage.repository=registry.example/ops/phoenix-simulator",
            "simulatorImage.tag=1.3",
        ],
    );
    let own = find(&own, "Deployment", "phoenix");
    assert_eq!(
        own["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/ops/phoenix-operator:1.2"
    );
    assert_eq!(
        env(own, "PHOENIX_SIMULATOR_IMAGE")["value"],
        "registry.example/ops/phoenix-simulator:1.3"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        9000
    );
    // Watched namespaces: a RoleBinding in each, no cluster-wide binding of the namespaced rules.
    for ns in ["a", "b"] {
        let rb = docs
            .iter()
            .find(|d| kind(d) == "RoleBinding" && d["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no RoleBinding in watched namespace {ns}"));
        assert_eq!(rb["roleRef"]["kind"], "ClusterRole");
        assert_eq!(rb["roleRef"]["name"], "phoenix");
    }
    let cluster_bindings: Vec<&str> = docs
        .iter()
        .filter(|d| kind(d) == "ClusterRoleBinding")
        .map(|d| d["roleRef"]["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(cluster_bindings, ["phoenix-nodes"]);

    // Several replicas: leader election is required, readiness must not wait for the Lease.
    let err = template(
        "phoenix",
        "phoenix-system",
        &["replicas=2", "leaderElection.enabled=false"],
    )
    .expect_err("two replicas without leader election are refused");
    assert!(err.contains("requires leaderElection.enabled"), "{err}");
    let docs = render("phoenix", "phoenix-system", &["replicas=2"]);
    let d = find(&docs, "Deployment", "phoenix");
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"],
        "/healthz"
    );
    // No leader election: no Lease Role (the UID ledger's stays).
    let docs = render(
        "phoenix",
        "phoenix-system",
        &["leaderElection.enabled=false"],
    );
    let roles: Vec<&str> = docs
        .iter()
        .filter(|d| kind(d) == "Role")
        .map(name)
        .collect();
    assert_eq!(roles, ["phoenix-collector-uids"]);

    // The ServiceMonitor only on request.
    let docs = render(
        "phoenix",
        "phoenix-system",
        &["serviceMonitor.enabled=true"],
    );
    let sm = find(&docs, "ServiceMonitor", "phoenix");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    let service = find(&docs, "Service", "phoenix-metrics");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"],
        service["spec"]["selector"]
    );
}

/// Labels `ns` so that Pod Security admission enforces the restricted profile there.
async fn enforce_restricted(ns: &TestNamespace) {
    let patch = serde_json::json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
    }}});
    Api::<Namespace>::all(ns.client.clone())
        .patch(&ns.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("namespace labelled");
}

#[tokio::test]
async fn the_chart_installs_under_restricted_pod_security() {
    let ns = TestNamespace::new("rbac-install").await;
    enforce_restricted(&ns).await;
    // On the kwok nodes (kwok fakes the pod; no image is pulled): admission is what is tested.
    let docs = render(&ns.name, &ns.name, &["nodeSelector.type=kwok"]);
    let _cleanup = ClusterScoped::of(&docs);
    let all: Vec<&Value> = docs.iter().collect();
    let mut cmd = cluster().kubectl();
    cmd.args(["apply", "-f", "-"]);
    let out = run_with_stdin(cmd, &yaml_stream(&all));
    assert!(out.status.success(), "kubectl apply: {}", text(&out));
    assert!(
        !text(&out).contains("PodSecurity"),
        "Pod Security warnings: {}",
        text(&out)
    );
    let fullname = format!("{}-phoenix", ns.name);
    let deployments = ns.api::<Deployment>();
    eventually(
        "the operator Deployment available under the restricted profile",
        Duration::from_secs(60),
        || async {
            let d = deployments.get(&fullname).await.ok()?;
            (d.status?.available_replicas? == 1).then_some(())
        },
    )
    .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn requests_outside_the_charts_rules_are_denied() {
    let ns = TestNamespace::new("rbac-deny").await;
    let release = ns.name.clone();
    let fullname = format!("{release}-phoenix");
    // Cluster-wide mode (watchNamespaces empty): the widest grant the chart makes.
    let docs = render(&release, &ns.name, &[]);
    let _cleanup = ClusterScoped::of(&docs);
    let kubeconfig = install_rbac_and_login(&docs, &ns.name, &fullname);
    let n = ns.name.as_str();

    // Everything in the tables is allowed ...
    for (table, scope) in [(NAMESPACED_RULES, Some(n)), (CLUSTER_RULES, None)] {
        for (resource, verbs) in table {
            let (resource, sub) = can_i_args(resource);
            for verb in verbs.split_whitespace() {
                let mut args = vec![verb, resource.as_str()];
                if let Some(sub) = &sub {
                    args.extend(["--subresource", sub]);
                }
                if let Some(n) = scope {
                    args.extend(["-n", n]);
                }
                assert!(can_i(&kubeconfig, &args), "{args:?} should be allowed");
            }
        }
    }
    let lease = format!("leases.coordination.k8s.io/{fullname}");
    let ledger = format!("configmaps/{fullname}-collector-uids");
    for args in [
        ["create", "leases.coordination.k8s.io", "-n", n],
        ["get", &lease, "-n", n],
        ["patch", &lease, "-n", n],
        ["get", &ledger, "-n", n],
        ["update", &ledger, "-n", n],
    ] {
        assert!(can_i(&kubeconfig, &args), "{args:?} should be allowed");
    }

    // ... and nothing else.
    let denied: &[&[&str]] = &[
        &["delete", "nodes"],
        &["get", "nodes"],
        &["list", "secrets", "--all-namespaces"],
        &["list", "secrets", "-n", n],
        &["watch", "secrets", "-n", n],
        &["create", "secrets", "-n", n],
        &["create", "clusterroles.rbac.authorization.k8s.io"],
        &["create", "rolebindings.rbac.authorization.k8s.io", "-n", n],
        &["get", "pods", "-n", n],
        &["create", "pods", "-n", n],
        &[
            "create",
            "serviceaccounts",
            "--subresource",
            "token",
            "-n",
            n,
        ],
        // (delete on experiments is granted: spec.ttlSecondsAfterFinished.)
        &["create", "experiments.phoenix.io", "-n", n],
        &["update", "pipelines.phoenix.io", "-n", n],
        &[
            "update",
            "experiments.phoenix.io",
            "--subresource",
            "status",
            "-n",
            n,
        ],
        &["update", "daemonsets.apps", "-n", n],
        &["delete", "jobs.batch", "-n", n],
        // (list on core events is granted: a collector DaemonSet's FailedCreate Events.)
        &["list", "events.events.k8s.io", "-n", n],
        &["watch", "events", "-n", n],
        &["delete", "customresourcedefinitions.apiextensions.k8s.io"],
        &["get", "leases.coordination.k8s.io/someone-else", "-n", n],
        &["patch", "leases.coordination.k8s.io/someone-else", "-n", n],
        &["create", "leases.coordination.k8s.io", "-n", "default"],
        &["update", "configmaps/someone-else", "-n", n],
        &[
            "update",
            "configmaps/phoenix-collector-uids",
            "-n",
            "default",
        ],
    ];
    for args in denied {
        assert!(!can_i(&kubeconfig, args), "{args:?} should be denied");
    }
    let out = Command::new(&cluster().kubectl)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "pods", "--all-namespaces"])
        .output()
        .expect("kubectl runs");
    assert!(!out.status.success(), "listing pods must fail");
    assert!(text(&out).contains("Forbidden"), "{}", text(&out));

    ns.cleanup().await;
}

/// The analysis step of the test Experiment, and the spacing of fed samples.
const STEP: i64 = 5;
/// The test Experiment's run length.
const DURATION: i64 = 60;
const CRITICAL: [&str; 2] = ["postgres", "nginx"];

/// Remote-writes one variant's process series (`executables` names × `pids`, plus the critical
/// processes) and collector usage over `[from, from + DURATION]`.
async fn feed(experiment: &str, variant: &str, executables: usize, pids: usize, from: i64) {
    let base = [
        ("phoenix_experiment", experiment),
        ("phoenix_variant", variant),
        ("phoenix_pipeline", variant),
        ("phoenix_node", "kwok-node-0"),
    ];
    let steps: Vec<i64> = (0..=DURATION / STEP)
        .map(|k| (from + k * STEP) * 1000)
        .collect();
    let names: Vec<String> = (0..executables)
        .map(|i| format!("svc-{i:04}"))
        .chain(CRITICAL.iter().map(|c| c.to_string()))
        .collect();
    let mut series = vec![];
    for name in &names {
        for pid in 0..pids {
            let pid = pid.to_string();
            for metric in [
                "process_cpu_time_seconds_total",
                "process_memory_usage_bytes",
            ] {
                let mut labels = base.to_vec();
                labels.extend([
                    ("process_executable_name", name.as_str()),
                    ("process_pid", pid.as_str()),
                ]);
                let ts = steps
                    .iter()
                    .enumerate()
                    .fold(TimeSeries::new(metric, &labels), |ts, (i, t)| {
                        ts.sample(*t, i as f64)
                    });
                series.push(ts);
            }
        }
    }
    series.extend(crate::experiment::collector_telemetry(&base, &steps, 100e6));
    let url = cluster().var("PROMETHEUS_REMOTE_WRITE_URL");
    let client = reqwest::Client::new();
    for chunk in series.chunks(500) {
        remote_write::push(&client, url, chunk)
            .await
            .expect("Prometheus accepts the remote write");
    }
}

#[tokio::test]
async fn the_operator_completes_an_experiment_under_the_charts_rbac() {
    let ns = TestNamespace::new("rbac-run").await;
    let release = ns.name.clone();
    let fullname = format!("{release}-phoenix");
    // Namespaced mode, the narrowest grant: RoleBinding in the watched namespace, Nodes cluster-wide.
    let docs = render(
        &release,
        &ns.name,
        &[&format!("watchNamespaces={{{}}}", ns.name)],
    );
    let _cleanup = ClusterScoped::of(&docs);
    let kubeconfig = install_rbac_and_login(&docs, &ns.name, &fullname);
    assert!(
        !can_i(
            &kubeconfig,
            &["list", "pipelines.phoenix.io", "-n", "default"]
        ),
        "namespaced mode grants nothing outside the watched namespace"
    );
    let log = repo_root().join(format!("target/e2e/operator-{}.log", ns.name));
    let operator = Operator::start_with_kubeconfig(
        &ns.name,
        &kubeconfig,
        &[
            "--leader-election",
            "--lease-namespace",
            &ns.name,
            "--lease-name",
            &fullname,
            "--identity",
            "rbac-e2e",
            "--collector-uid-ledger",
            &format!("{}/{fullname}-collector-uids", ns.name),
        ],
    );

    // A standalone Pipeline in Deployment mode whose exporter reads a header Secret's key names.
    let secret: Secret = serde_yaml::from_str(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: otlp-headers, labels: {phoenix.io/exporter-credentials: 'true'}}\nstringData: {api-key: x}",
    )
    .expect("Secret parses");
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .expect("Secret created");
    let pipeline: Pipeline = serde_yaml::from_str(
        "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {name: exporting}\nspec:\n  template: baseline\n  deployment: {mode: Deployment}\n  exporters: [{name: vendor, endpoint: 'https://otlp.example.com', headersSecretRef: {name: otlp-headers}}]\n",
    )
    .expect("Pipeline parses");
    let pipelines = ns.api::<Pipeline>();
    pipelines
        .create(&PostParams::default(), &pipeline)
        .await
        .expect("Pipeline created");

    // An Experiment with load: Pipelines, Simulation, collectors, a simulator Job, analysis.
    let experiment: Experiment = serde_yaml::from_str(&format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Experiment\nmetadata: {{name: exp}}\nspec:\n  baseline: {{pipeline: {{template: baseline, criticalProcesses: ['^postgres$', '^nginx$']}}}}\n  candidate: {{pipeline: {{template: aggregate, criticalProcesses: ['^postgres$', '^nginx$']}}}}\n  duration: {DURATION}s\n  warmup: 0s\n  analysis: {{interval: {STEP}s}}\n  successCriteria: {{minSeriesReductionPercent: 80}}\n  simulation: {{profile: high-cardinality, processes: 10, duration: 1m}}\n"
    ))
    .expect("Experiment parses");
    let experiments = ns.api::<Experiment>();
    experiments
        .create(&PostParams::default(), &experiment)
        .await
        .expect("Experiment created");
    let since = eventually(
        "the Experiment Running",
        Duration::from_secs(90),
        || async {
            let s = experiments.get("exp").await.ok()?.status?;
            (s.phase == Some(ExperimentPhase::Running)).then_some(s.running_since?.0.as_second())
        },
    )
    .await;
    let jobs = ns.api::<Job>().list(&ListParams::default()).await;
    assert_eq!(
        jobs.expect("Jobs listed").items.len(),
        1,
        "the simulator Job runs"
    );
    let label = format!("{}/exp", ns.name);
    feed(&label, "baseline", 50, 2, since).await;
    feed(&label, "candidate", 3, 1, since).await;
    let status = eventually(
        "the Experiment finished",
        Duration::from_secs(180),
        || async {
            let s = experiments.get("exp").await.ok()?.status?;
            matches!(
                s.phase,
                Some(
                    ExperimentPhase::Completed | ExperimentPhase::Failed | ExperimentPhase::Aborted
                )
            )
            .then_some(s)
        },
    )
    .await;
    assert_eq!(status.phase, Some(ExperimentPhase::Completed), "{status:?}");
    assert_eq!(status.verdict, Some(Verdict::Pass), "{:?}", status.results);
    eventually(
        "the Experiment's children released",
        Duration::from_secs(60),
        || async {
            let left = pipelines.list(&ListParams::default()).await.ok()?.items;
            left.iter()
                .all(|p| p.name_any() == "exporting")
                .then_some(())
        },
    )
    .await;
    let exporting = pipelines.get("exporting").await.expect("Pipeline exists");
    let phase = exporting.status.as_ref().and_then(|s| s.phase);
    assert_eq!(phase, Some(PipelinePhase::Ready), "{:?}", exporting.status);

    // The Lease and the Events were written with the token too.
    let lease = ns
        .api::<Lease>()
        .get(&fullname)
        .await
        .expect("Lease exists");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("rbac-e2e")
    );
    let events =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(ns.client.clone(), &ns.name)
            .list(&ListParams::default())
            .await
            .expect("Events listed");
    let reasons: BTreeSet<&str> = events
        .items
        .iter()
        .filter(|e| {
            e.reporting_controller.as_deref() == Some(phoenix::desired::labels::FIELD_MANAGER)
        })
        .filter_map(|e| e.reason.as_deref())
        .collect();
    for reason in [
        "ConfigChanged",
        "RolledOut",
        "LoadStarted",
        "Running",
        "Completed",
    ] {
        assert!(
            reasons.contains(reason),
            "no {reason} Event among {reasons:?}"
        );
    }
    drop(operator);
    let log = std::fs::read_to_string(&log).expect("operator log readable");
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator was denied something:\n{}",
        log.lines()
            .filter(|l| l.to_lowercase().contains("forbidden"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    ns.cleanup().await;
}
