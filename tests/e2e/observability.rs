//! The chart's observability objects: the PrometheusRule renders exactly the plain rules file and
//! only when asked for.

use serde_yaml::Value;

use crate::harness::repo_root;
use crate::rbac::render;

fn kinds(docs: &[Value]) -> Vec<&str> {
    docs.iter().filter_map(|d| d["kind"].as_str()).collect()
}

#[test]
fn the_prometheus_rule_renders_the_rules_file_only_when_enabled() {
    assert!(
        !kinds(&render("obs", "monitoring", &[])).contains(&"PrometheusRule"),
        "prometheusRule.enabled is off by default"
    );
    let docs = render(
        "obs",
        "monitoring",
        &[
            "prometheusRule.enabled=true",
            "prometheusRule.labels.release=kps",
        ],
    );
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule when enabled");
    assert_eq!(rule["metadata"]["namespace"], "monitoring");
    assert_eq!(rule["metadata"]["labels"]["release"], "kps");
    let file: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("charts/phoenix/files/alerts.yaml"))
            .expect("rules file readable"),
    )
    .expect("rules file is YAML");
    assert_eq!(
        rule["spec"], file,
        "the PrometheusRule holds the rules file's groups unchanged"
    );
}

#[test]
fn the_service_monitor_keeps_the_operators_namespace_label() {
    let docs = render("obs", "monitoring", &["serviceMonitor.enabled=true"]);
    let monitor = docs
        .iter()
        .find(|d| d["kind"] == "ServiceMonitor")
        .expect("a ServiceMonitor when enabled");
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true);
}
