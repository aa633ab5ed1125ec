//! Phoenix observed like any production system: the chart's PrometheusRule renders exactly the
//! plain rules file, its dashboards render as Grafana-sidecar ConfigMaps, every dashboard panel
//! shows data from a real Prometheus after a real Experiment, and the status reads rounded.

use std::time::Duration;

use phoenix::crd::summary::{p_value, percent};
use serde_yaml::Value;

use crate::experiment::complete_reducing;
use crate::harness::{
    Operator, TestNamespace, cluster, eventually, free_port, http_get, repo_root, spawn_prometheus,
};
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

/// A Prometheus of a test's own: scrapes the operator every second (job `phoenix-operator`) and
/// accepts remote writes, so the operator's metrics and an Experiment's collector data meet in
/// one place, as in production. Killed on drop; its directory is removed.
pub(crate) struct ScrapingPrometheus {
    child: std::process::Child,
    dir: std::path::PathBuf,
    pub port: u16,
}

impl ScrapingPrometheus {
    pub(crate) async fn start(name: &str, operator_port: u16) -> ScrapingPrometheus {
        ScrapingPrometheus::start_on(free_port(), name, operator_port).await
    }

    /// Like [`ScrapingPrometheus::start`], on a port chosen beforehand (e.g. to allow its URL in
    /// the operator's settings).
    pub(crate) async fn start_on(port: u16, name: &str, operator_port: u16) -> ScrapingPrometheus {
        let dir = repo_root().join(format!("target/e2e/prom-{name}"));
        let config = format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: phoenix-operator\n    honor_labels: true\n    static_configs: [{{targets: ['127.0.0.1:{operator_port}']}}]\n"
        );
        let child = spawn_prometheus(&dir, port, &config);
        let prom = ScrapingPrometheus { child, dir, port };
        eventually("own Prometheus ready", Duration::from_secs(60), || async {
            http_get(port, "/-/ready").filter(|r| r.starts_with("HTTP/1.1 200"))
        })
        .await;
        prom
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ScrapingPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn dashboard(name: &str) -> serde_json::Value {
    let path = repo_root().join(format!("charts/phoenix/files/dashboards/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard readable"))
        .expect("dashboard is JSON")
}

/// Every PromQL expression of a dashboard: panel targets and annotation queries, with a name.
fn expressions(d: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((format!("panel {}", p["title"]), e.to_string()));
            }
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(e) = a["expr"].as_str() {
            out.push((format!("annotation {}", a["name"]), e.to_string()));
        }
    }
    out
}

/// Whether a range query over `[start, now]` returns at least one sample.
async fn has_data(prom: &prometheus_http_query::Client, expr: &str, start: i64) -> bool {
    let end = k8s_openapi::jiff::Timestamp::now().as_second();
    match prom.query_range(expr, start, end, 2.0).get().await {
        Ok(r) => r
            .data()
            .as_matrix()
            .is_some_and(|m| m.iter().any(|s| !s.samples().is_empty())),
        Err(e) => panic!("{expr}: {e}"),
    }
}

#[tokio::test]
async fn every_dashboard_panel_shows_data_after_an_experiment() {
    let ns = TestNamespace::new("dashboards").await;
    // The Experiment's own Prometheus must be allowed by the operator's settings.
    let port = free_port();
    let allowed = format!("http://127.0.0.1:{port}");
    let operator = Operator::start(
        &ns.name,
        &["--allowed-prometheus-url-prefixes", allowed.as_str()],
    );
    let prom = ScrapingPrometheus::start_on(port, &ns.name, operator.http_port).await;
    let start = k8s_openapi::jiff::Timestamp::now().as_second();
    let extra = format!("  prometheus: {{url: '{}'}}\n", prom.url());
    let status = complete_reducing(&ns, &prom.url(), &extra).await;

    // Readable status: the summary rounds what results hold precisely, and kubectl shows it.
    let results = status.results.clone().expect("results");
    let summary = status.summary.clone().expect("summary");
    let reduction = results.series_reduction_percent.expect("reduction");
    assert_eq!(summary.series_reduction, Some(percent(reduction)));
    assert_eq!(summary.critical_retention.as_deref(), Some("100%"));
    let p = results.confidence.and_then(|c| c.p_value).expect("p-value");
    assert_eq!(summary.p_value, Some(p_value(p)));
    let out = cluster()
        .kubectl()
        .args(["-n", &ns.name, "get", "exp", "exp", "-o", "wide"])
        .output()
        .expect("kubectl runs");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("COST-SAVED"), "{table}");
    let row = table.lines().nth(1).unwrap_or_default();
    for cell in [percent(reduction), "100%".to_string(), p_value(p)] {
        assert!(
            row.split_whitespace().any(|c| c == cell),
            "{cell} in {table}"
        );
    }

    // Every panel and annotation of every dashboard has data, variables substituted.
    let client = prometheus_http_query::Client::try_from(prom.url().as_str()).expect("client");
    for name in ["experiments", "experiment-detail", "operator"] {
        for (what, expr) in expressions(&dashboard(name)) {
            let expr = expr
                .replace("$namespace", &ns.name)
                .replace("$experiment", "exp");
            eventually(
                &format!("{name}: {what} has data: {expr}"),
                Duration::from_secs(60),
                || async { has_data(&client, &expr, start).await.then_some(()) },
            )
            .await;
        }
    }
    // The Experiment detail's variables list this Experiment.
    for (label, matcher, value) in [
        (
            "namespace",
            "phoenix_experiment_info".to_string(),
            ns.name.clone(),
        ),
        (
            "experiment",
            format!("phoenix_experiment_info{{namespace=\"{}\"}}", ns.name),
            "exp".to_string(),
        ),
    ] {
        let path = format!(
            "/api/v1/label/{label}/values?match[]={}",
            urlencode(&matcher)
        );
        let body = http_get(prom.port, &path).unwrap_or_default();
        assert!(body.contains(&format!("\"{value}\"")), "{path}: {body}");
    }
    drop(operator);
    ns.cleanup().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn the_dashboards_render_as_labelled_config_maps_only_when_enabled() {
    assert!(
        !render("obs", "monitoring", &[])
            .iter()
            .any(|d| d["metadata"]["labels"]["grafana_dashboard"] == "1"),
        "dashboards.enabled is off by default"
    );
    let docs = render(
        "obs",
        "monitoring",
        &["dashboards.enabled=true", "dashboards.namespace=grafana"],
    );
    let maps: Vec<&Value> = docs
        .iter()
        .filter(|d| d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .collect();
    assert_eq!(maps.len(), 3);
    for name in ["experiments", "experiment-detail", "operator"] {
        let map = maps
            .iter()
            .find(|m| m["data"][format!("phoenix-{name}.json").as_str()].is_string())
            .unwrap_or_else(|| panic!("a ConfigMap holding {name}.json"));
        assert_eq!(map["kind"], "ConfigMap");
        assert_eq!(map["metadata"]["namespace"], "grafana");
        let held: serde_json::Value = serde_json::from_str(
            map["data"][format!("phoenix-{name}.json").as_str()]
                .as_str()
                .unwrap_or_default(),
        )
        .expect("the ConfigMap holds JSON");
        assert_eq!(held, dashboard(name));
    }
}
