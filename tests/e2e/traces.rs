//! Tracing on the real control plane: the operator exports its spans over OTLP/HTTP to the
//! collector built in tests/e2e (its `otlp` receiver; the `debug` exporter at detailed verbosity
//! writes every span it receives to the collector's log), a reconcile arrives as one trace with
//! child spans for its apiserver writes and Prometheus queries, and the JSON log names the trace.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::experiment::complete_reducing;
use crate::harness::{Operator, TestNamespace, cluster, eventually, free_port, repo_root};

/// The e2e collector receiving OTLP/HTTP on a port of its own and logging every span; killed on
/// drop.
struct TraceCollector {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl TraceCollector {
    fn start(name: &str) -> TraceCollector {
        let dir = repo_root().join(format!("target/e2e/traces-{name}"));
        std::fs::create_dir_all(&dir).expect("collector dir");
        let port = free_port();
        // No internal metrics: their default port (8888) would clash with other collectors.
        let config = format!(
            "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{port}\nexporters:\n  debug:\n    verbosity: detailed\nservice:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n"
        );
        let config_file = dir.join("config.yaml");
        std::fs::write(&config_file, config).expect("collector config written");
        let log = dir.join("collector.log");
        let out = std::fs::File::create(&log).expect("collector log");
        let child = Command::new(cluster().var("COLLECTOR_BIN"))
            .arg(format!("--config=file:{}", config_file.display()))
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("the e2e collector starts");
        TraceCollector { child, log, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TraceCollector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One span as the debug exporter prints it.
#[derive(Debug, Default, Clone)]
struct SpanRecord {
    trace_id: String,
    parent_id: String,
    id: String,
    name: String,
    attributes: BTreeMap<String, String>,
}

/// The spans in a debug exporter's detailed output: each `Span #n` block's IDs, name and
/// attributes (`-> key: Type(value)`, the value without its type).
fn spans(log: &str) -> Vec<SpanRecord> {
    let mut out: Vec<SpanRecord> = vec![];
    let mut current: Option<SpanRecord> = None;
    for line in log.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("Span #") {
            out.extend(current.take());
            current = Some(SpanRecord::default());
            continue;
        }
        // Resource and scope attributes, and other signals, end the span block.
        if trimmed.starts_with("ResourceSpans #") || trimmed.starts_with("ScopeSpans #") {
            out.extend(current.take());
            continue;
        }
        let Some(span) = current.as_mut() else {
            continue;
        };
        if let Some((key, value)) = trimmed.split_once(':') {
            let value = value.trim().to_string();
            match key.trim() {
                "Trace ID" => span.trace_id = value,
                "Parent ID" => span.parent_id = value,
                "ID" => span.id = value,
                "Name" => span.name = value,
                _ => {}
            }
        }
        if let Some(attr) = trimmed.strip_prefix("-> ")
            && let Some((key, value)) = attr.split_once(": ")
        {
            let value = value
                .split_once('(')
                .map(|(_, v)| v.trim_end_matches(')'))
                .unwrap_or(value);
            span.attributes.insert(key.to_string(), value.to_string());
        }
    }
    out.extend(current);
    out
}

/// The traces of the reconciles of Experiment `exp` that hold, under their `reconcile` span, a
/// status write to the apiserver and a successful Prometheus query, each rooted at kube-runtime's
/// `reconciling object` span: (trace ID, its spans).
fn analysis_traces(all: &[SpanRecord], exp: &str) -> Vec<(String, Vec<SpanRecord>)> {
    let attr = |s: &SpanRecord, key: &str| s.attributes.get(key).cloned().unwrap_or_default();
    all.iter()
        .filter(|s| s.name == "reconcile" && attr(s, "experiment") == exp)
        .filter_map(|reconcile| {
            let trace: Vec<SpanRecord> = all
                .iter()
                .filter(|s| s.trace_id == reconcile.trace_id)
                .cloned()
                .collect();
            let children: Vec<&SpanRecord> = trace
                .iter()
                .filter(|s| s.parent_id == reconcile.id)
                .collect();
            let status_write = children.iter().any(|s| {
                s.name == "patch experiments/status"
                    && attr(s, "http.request.method") == "PATCH"
                    && attr(s, "http.response.status_code") == "200"
            });
            let query = children.iter().any(|s| {
                s.name.starts_with("prometheus ")
                    && attr(s, "phoenix.prometheus.outcome") == "success"
            });
            let rooted = trace.iter().any(|s| {
                s.id == reconcile.parent_id
                    && s.parent_id.is_empty()
                    && s.name == "reconciling object"
            });
            (status_write && query && rooted).then(|| (reconcile.trace_id.clone(), trace))
        })
        .collect()
}

/// The operator's JSON log lines that carry a trace ID: (trace ID, span ID, message).
fn traced_log_lines(log: &str) -> Vec<(String, String, String)> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|l| {
            Some((
                l["trace_id"].as_str()?.to_string(),
                l["span_id"].as_str()?.to_string(),
                l["fields"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ))
        })
        .collect()
}

#[tokio::test]
async fn a_reconcile_arrives_over_otlp_as_one_trace_with_apiserver_and_prometheus_spans() {
    let collector = TraceCollector::start(&format!("{}", std::process::id()));
    let ns = TestNamespace::new("traces").await;
    let endpoint = collector.endpoint();
    let operator = Operator::start(
        &ns.name,
        &["--otlp-endpoint", endpoint.as_str(), "--log-format", "json"],
    );
    complete_reducing(&ns, &cluster().prometheus_url, "").await;

    // The batch exporter sends within seconds: wait for an analysing reconcile's trace that a log
    // line written inside it names.
    let operator_log = repo_root().join(format!("target/e2e/operator-{}.log", ns.name));
    let (trace, line) = eventually(
        "a reconcile trace with a status write and a Prometheus query, named by a log line",
        Duration::from_secs(60),
        || async {
            let traces = analysis_traces(&spans(&collector.log()), "exp");
            let lines = traced_log_lines(&std::fs::read_to_string(&operator_log).ok()?);
            traces.into_iter().find_map(|(trace_id, trace)| {
                let line = lines
                    .iter()
                    .find(|(t, span, _)| *t == trace_id && trace.iter().any(|s| s.id == *span))?;
                Some((trace, line.clone()))
            })
        },
    )
    .await;
    assert!(!line.2.is_empty(), "{line:?}");
    // Every span of the trace hangs off another of it, under a single root: one trace per
    // reconcile.
    let ids: Vec<&str> = trace.iter().map(|s| s.id.as_str()).collect();
    for span in &trace {
        assert!(
            span.parent_id.is_empty() || ids.contains(&span.parent_id.as_str()),
            "{span:?} hangs off a span outside the trace"
        );
    }
    assert_eq!(
        trace.iter().filter(|s| s.parent_id.is_empty()).count(),
        1,
        "one root: {trace:?}"
    );
    // No span says where Prometheus is (a URL may hold credentials) or holds a query's text.
    let log = collector.log();
    let prometheus_host = cluster().prometheus_url.trim_start_matches("http://");
    assert!(
        !log.contains(prometheus_host),
        "a span names {prometheus_host}"
    );
    assert!(
        !log.contains("process_executable_name"),
        "a span holds PromQL"
    );
    drop(operator);
    ns.cleanup().await;
}

/// The chart passes tracing.otlpEndpoint to the operator, and its NetworkPolicy lets the
/// operator reach that port; neither without the value.
#[test]
fn the_chart_sets_the_otlp_endpoint_only_when_given() {
    // (the operator's env, the TCP ports its NetworkPolicy lets it reach)
    let render = |sets: &[&str]| -> (Vec<(String, String)>, Vec<i64>) {
        let mut sets = sets.to_vec();
        sets.push("networkPolicy.enabled=true");
        let docs = crate::rbac::render("phoenix", "phoenix-system", &sets);
        let find = |kind: &str| {
            docs.iter()
                .find(|d| d["kind"] == kind && d["metadata"]["name"] == "phoenix")
                .unwrap_or_else(|| panic!("the chart renders the {kind} phoenix"))
        };
        let env = find("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|e| {
                let get = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                (get("name"), get("value"))
            })
            .collect();
        let ports = find("NetworkPolicy")["spec"]["egress"]
            .as_sequence()
            .into_iter()
            .flatten()
            .flat_map(|rule| rule["ports"].as_sequence().cloned().unwrap_or_default())
            .filter(|p| p["protocol"] == "TCP")
            .filter_map(|p| p["port"].as_i64())
            .collect();
        (env, ports)
    };
    let (env, ports) = render(&[]);
    assert!(
        !env.iter()
            .any(|(name, _)| name == "OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{env:?}"
    );
    assert!(!ports.contains(&4318), "{ports:?}");
    let (env, ports) = render(&["tracing.otlpEndpoint=http://otel-collector.monitoring:4318"]);
    assert!(
        env.contains(&(
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
            "http://otel-collector.monitoring:4318".to_string()
        )),
        "{env:?}"
    );
    assert!(ports.contains(&4318), "{ports:?}");
}

#[test]
fn the_debug_exporters_span_blocks_parse() {
    let log = "ResourceSpans #0\nResource attributes:\n     -> service.name: Str(phoenix-operator)\nScopeSpans #0\nSpan #0\n    Trace ID       : abc\n    Parent ID      : \n    ID             : r1\n    Name           : reconciling object\nAttributes:\n     -> object.ref: Str(Experiment.v1alpha1.phoenix.io/exp.ns)\nSpan #1\n    Trace ID       : abc\n    Parent ID      : r1\n    ID             : s1\n    Name           : patch experiments/status\nAttributes:\n     -> http.response.status_code: Int(200)\n";
    let spans = spans(log);
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].parent_id, "");
    assert_eq!(spans[0].name, "reconciling object");
    assert_eq!(
        spans[0].attributes["object.ref"],
        "Experiment.v1alpha1.phoenix.io/exp.ns"
    );
    assert_eq!(spans[1].parent_id, "r1");
    assert_eq!(spans[1].attributes["http.response.status_code"], "200");
    assert!(!spans[0].attributes.contains_key("service.name"));
}
