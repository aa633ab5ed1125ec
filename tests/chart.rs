//! The Helm chart (charts/phoenix) stays in step with the code: its crds/ are copies of crds/, its
//! Deployment passes every operator setting, and `helm lint`/`helm template` with non-default
//! values (watched namespaces, leader election with 2 replicas, a ServiceMonitor) render objects
//! that carry those settings. (The default render and its RBAC run in tests/e2e/rbac.rs; the
//! chart installed and run in-cluster in tests/e2e/helm.rs.)

use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

#[path = "e2e/helm_bin.rs"]
mod helm_bin;
use helm_bin::helm;

use clap::CommandFactory;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{} is readable: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn chart_crds_are_copies_of_crds() {
    let (source, chart) = (root().join("crds"), root().join("charts/phoenix/crds"));
    let names = file_names(&source);
    assert_eq!(
        file_names(&chart),
        names,
        "charts/phoenix/crds/ must hold exactly the files of crds/: run `just crds`"
    );
    for name in names {
        let read = |dir: &Path| std::fs::read(dir.join(&name)).expect("CRD file readable");
        assert!(
            read(&source) == read(&chart),
            "charts/phoenix/crds/{name} differs from crds/{name}: run `just crds`"
        );
    }
}

#[test]
fn the_deployment_sets_every_operator_setting() {
    let template = std::fs::read_to_string(root().join("charts/phoenix/templates/deployment.yaml"))
        .expect("deployment template readable");
    let command = phoenix::settings::Settings::command();
    let missing: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .filter(|env| !template.contains(&format!("- name: {env}\n")))
        .collect();
    assert!(
        missing.is_empty(),
        "charts/phoenix/templates/deployment.yaml does not set {missing:?}: add a value to \
         values.yaml and pass it"
    );
    let without_env: Vec<String> = command
        .get_arguments()
        .filter(|a| a.get_env().is_none())
        .filter_map(|a| a.get_long().map(str::to_string))
        .filter(|long| long != "help" && long != "version")
        .collect();
    assert!(
        without_env.is_empty(),
        "flags {without_env:?} have no env fallback the chart could set"
    );
}

/// Non-default values: two watched namespaces, leader election with 2 replicas, a ServiceMonitor
/// with the label a Prometheus selects by and its own interval.
const VALUES: &str = "\
watchNamespaces: [team-a, team-b]
replicas: 2
leaderElection: {enabled: true, leaseName: phoenix-leader, leaseDurationSeconds: 20}
serviceMonitor: {enabled: true, labels: {release: kube-prometheus}, interval: 15s, scrapeTimeout: 5s}
";

fn helm_with_values(args: &[&str]) -> String {
    let values =
        std::env::temp_dir().join(format!("phoenix-chart-values-{}.yaml", std::process::id()));
    std::fs::write(&values, VALUES).expect("values file written");
    let out = Command::new(helm())
        .args(args)
        .arg(root().join("charts/phoenix"))
        .arg("-f")
        .arg(&values)
        .output()
        .expect("helm runs");
    let _ = std::fs::remove_file(&values);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "helm {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn find<'a>(docs: &'a [Value], kind: &str, namespace: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"] == name
                && d["metadata"]["namespace"] == namespace
        })
        .unwrap_or_else(|| panic!("no {kind} {namespace}/{name} rendered"))
}

fn env<'a>(deployment: &'a Value, name: &str) -> &'a str {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("env {name} not set"))
}

#[test]
fn non_default_values_lint_and_render_their_settings() {
    helm_with_values(&["lint", "--strict"]);
    let yaml = helm_with_values(&["template", "phoenix", "--namespace", "phoenix-system"]);
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect();

    // Leader election with 2 replicas: both run, one Lease, rolling updates, and readiness that a
    // standby replica passes (its /readyz waits for the Lease).
    let deployment = find(&docs, "Deployment", "phoenix-system", "phoenix");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(env(deployment, "PHOENIX_LEADER_ELECTION"), "true");
    assert_eq!(env(deployment, "PHOENIX_LEASE_NAME"), "phoenix-leader");
    assert_eq!(env(deployment, "PHOENIX_LEASE_NAMESPACE"), "phoenix-system");
    assert_eq!(env(deployment, "PHOENIX_LEASE_DURATION_SECONDS"), "20");
    let probe = &deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"];
    assert_eq!(probe["httpGet"]["path"], "/healthz");
    let lease_rules = &find(&docs, "Role", "phoenix-system", "phoenix-leader-election")["rules"];
    assert!(
        lease_rules
            .as_sequence()
            .into_iter()
            .flatten()
            .any(|r| r["resources"][0] == "leases"),
        "the leader-election Role grants Leases: {lease_rules:?}"
    );

    // Watched namespaces: passed to the operator, and the namespaced permissions bound only
    // there (a RoleBinding each, no cluster-wide binding of them).
    assert_eq!(env(deployment, "PHOENIX_WATCH_NAMESPACES"), "team-a,team-b");
    for ns in ["team-a", "team-b"] {
        let binding = find(&docs, "RoleBinding", ns, "phoenix");
        assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
        assert_eq!(binding["roleRef"]["name"], "phoenix");
        assert_eq!(binding["subjects"][0]["name"], "phoenix");
        assert_eq!(binding["subjects"][0]["namespace"], "phoenix-system");
    }
    let cluster_bindings: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding")
        .map(|d| &d["metadata"]["name"])
        .collect();
    assert_eq!(cluster_bindings, [&Value::from("phoenix-nodes")]);

    // The ServiceMonitor scrapes the metrics Service's `http` port with the given settings.
    let monitor = find(&docs, "ServiceMonitor", "phoenix-system", "phoenix");
    assert_eq!(monitor["metadata"]["labels"]["release"], "kube-prometheus");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "http");
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["interval"], "15s");
    assert_eq!(endpoint["scrapeTimeout"], "5s");
    let service = find(&docs, "Service", "phoenix-system", "phoenix-metrics");
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("ServiceMonitor selector");
    for (k, v) in selector {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the Service carries {k:?}"
        );
    }
    assert!(
        service["spec"]["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == "http"),
        "the Service has the port the ServiceMonitor scrapes"
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"][0],
        "phoenix-system"
    );
}
