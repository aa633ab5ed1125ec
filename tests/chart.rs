//! The Helm chart (charts/phoenix) stays in step with the code: its crds/ are copies of crds/, its
//! Deployment passes every operator setting, and `helm lint`/`helm template` with non-default
//! values (watched namespaces, leader election with 2 replicas, a ServiceMonitor) render objects
//! that carry those settings; the optional NetworkPolicies render exactly the rules they promise. (The default render and its RBAC run in tests/e2e/rbac.rs; the
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

/// The documents of a rendered YAML stream.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template phoenix charts/phoenix --namespace phoenix-system --set …`, parsed.
fn render(sets: &[&str]) -> Vec<Value> {
    let mut cmd = Command::new(helm());
    cmd.args(["template", "phoenix"])
        .arg(root().join("charts/phoenix"))
        .args(["--namespace", "phoenix-system"]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("helm runs");
    assert!(
        out.status.success(),
        "helm template {sets:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    documents(&String::from_utf8_lossy(&out.stdout))
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
    let docs = documents(&yaml);

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

/// The strings of a YAML sequence.
fn strings(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The TCP ports of a NetworkPolicy rule.
fn rule_ports(rule: &Value) -> Vec<(String, i64)> {
    rule["ports"]
        .as_sequence()
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| Some((p["protocol"].as_str()?.to_string(), p["port"].as_i64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Path 9: optional NetworkPolicies (off by default) for the operator (ingress to its http port;
/// egress to DNS, the apiserver and Prometheus) and the collectors of each watched namespace
/// (ingress to the health port; egress to DNS, the remote-write port and the admin's rules).
/// Rendered only: the local cluster has no CNI that enforces NetworkPolicy.
#[test]
fn the_chart_renders_network_policies_on_request() {
    let none = render(&["watchNamespaces={a,b}"]);
    assert!(
        !none.iter().any(|d| d["kind"] == "NetworkPolicy"),
        "off by default"
    );
    let docs = render(&[
        "networkPolicy.enabled=true",
        "watchNamespaces={a,b}",
        "prometheusUrl=http://prom.monitoring:9090",
        "remoteWriteUrl=https://rw.example/api/v1/write",
        "allowedPrometheusUrlPrefixes={http://thanos:10902}",
        "networkPolicy.operator.apiServer.cidrs={10.0.0.1/32}",
        "networkPolicy.collectors.extraEgress[0].ports[0].port=4318",
        "networkPolicy.collectors.extraEgress[0].ports[0].protocol=TCP",
    ]);
    let policies: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "NetworkPolicy")
        .collect();
    let at = |ns: &str, n: &str| find(&docs, "NetworkPolicy", ns, n);
    assert_eq!(
        policies.len(),
        3,
        "the operator's and one per watched namespace"
    );
    let tcp = |ports: &[i64]| -> Vec<(String, i64)> {
        ports.iter().map(|p| ("TCP".to_string(), *p)).collect()
    };
    let dns = vec![("UDP".to_string(), 53), ("TCP".to_string(), 53)];

    let operator = &at("phoenix-system", "phoenix")["spec"];
    let deployment = find(&docs, "Deployment", "phoenix-system", "phoenix");
    assert_eq!(
        operator["podSelector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"],
        "selects exactly the operator's pods"
    );
    assert_eq!(strings(&operator["policyTypes"]), ["Ingress", "Egress"]);
    let ingress = operator["ingress"].as_sequence().expect("ingress rules");
    assert_eq!(ingress.len(), 1);
    assert_eq!(rule_ports(&ingress[0]), tcp(&[8080]), "only the http port");
    let egress = operator["egress"].as_sequence().expect("egress rules");
    let egress_ports: Vec<Vec<(String, i64)>> = egress.iter().map(rule_ports).collect();
    assert_eq!(
        egress_ports,
        [dns.clone(), tcp(&[443, 6443]), tcp(&[9090, 10902])],
        "DNS, the apiserver, Prometheus and the allowed prefix; nothing else"
    );
    assert_eq!(
        egress[0]["to"][0]["podSelector"]["matchLabels"]["k8s-app"],
        "kube-dns"
    );
    assert_eq!(egress[1]["to"][0]["ipBlock"]["cidr"], "10.0.0.1/32");

    for ns in ["a", "b"] {
        let collectors = &at(ns, "phoenix-collectors")["spec"];
        let selector = &collectors["podSelector"]["matchLabels"];
        assert_eq!(selector["app.kubernetes.io/name"], "phoenix-collector");
        assert_eq!(selector["app.kubernetes.io/managed-by"], "phoenix");
        assert_eq!(strings(&collectors["policyTypes"]), ["Ingress", "Egress"]);
        let ingress = collectors["ingress"].as_sequence().expect("ingress rules");
        assert_eq!(ingress.len(), 1);
        assert_eq!(
            rule_ports(&ingress[0]),
            tcp(&[13133]),
            "only the health port"
        );
        let egress: Vec<Vec<(String, i64)>> = collectors["egress"]
            .as_sequence()
            .expect("egress rules")
            .iter()
            .map(rule_ports)
            .collect();
        assert_eq!(
            egress,
            [
                dns.clone(),
                tcp(&[443, 10902]),
                vec![("TCP".to_string(), 4318)]
            ],
            "DNS, the remote-write port (https), the allowed prefix, the admin's exporter rule"
        );
    }

    // All namespaces: the chart cannot know where collectors run, so it renders none for them.
    let docs = render(&["networkPolicy.enabled=true"]);
    let names: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "NetworkPolicy")
        .map(|d| &d["metadata"]["name"])
        .collect();
    assert_eq!(names, [&Value::from("phoenix")]);
}
