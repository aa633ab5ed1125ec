//! Extra OTLP/HTTP exporters end to end: real collectors (run by the pod runner) send to a local
//! OTLP/HTTP receiver — a plain HTTP server that records each request's headers, the peer a vendor
//! backend would be — with headers from an opted-in Secret: a missing Secret is a condition, a
//! rotated value reaches the receiver, and an Experiment's variants send only when it allows them.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use phoenix::crd::experiment::{Experiment, ExperimentPhase};
use phoenix::crd::pipeline::PipelinePhase;
use phoenix::crd::{Pipeline, conditions};

use crate::experiment::phase;
use crate::harness::{Operator, TestNamespace, cluster, eventually};
use crate::podrunner_test::{Runner, on_local};

/// The header the test Secret's key becomes.
const HEADER: &str = "api-key";

/// One request as received: its path and headers (names lowercased).
type Request = (String, BTreeMap<String, String>);

/// A local OTLP/HTTP receiver: answers every request 200 and records its path and headers.
#[derive(Clone, Default)]
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("receiver binds");
        let receiver = Receiver {
            port: listener.local_addr().expect("bound address").port(),
            ..Default::default()
        };
        let requests = receiver.requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let requests = requests.clone();
                std::thread::spawn(move || serve(stream, &requests));
            }
        });
        receiver
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The values of [`HEADER`] on the OTLP metrics requests received so far, in order.
    fn keys(&self) -> Vec<String> {
        self.requests
            .lock()
            .expect("receiver lock")
            .iter()
            .filter(|(path, _)| path == "/v1/metrics")
            .map(|(_, headers)| headers.get(HEADER).cloned().unwrap_or_default())
            .collect()
    }

    fn count(&self) -> usize {
        self.requests.lock().expect("receiver lock").len()
    }
}

/// Serves one keep-alive connection: reads each request (head and body), records it, answers 200.
fn serve(stream: TcpStream, requests: &Mutex<Vec<Request>>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        requests
            .lock()
            .expect("receiver lock")
            .push((path, headers));
        let answer =
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// An exporter-credentials Secret (opted in) whose [`HEADER`] key holds `value`.
fn secret(name: &str, value: &str) -> Secret {
    serde_yaml::from_str(&format!(
        "metadata: {{name: {name}, labels: {{phoenix.io/exporter-credentials: 'true'}}}}\nstringData: {{{HEADER}: {value}}}"
    ))
    .expect("Secret parses")
}

fn exporting_pipeline(name: &str, node: &str, endpoint: &str, secret: &str) -> Pipeline {
    serde_yaml::from_str(&format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {{name: {name}}}\nspec:\n  template: baseline\n  collectionInterval: 2s\n  deployment: {}\n  exporters: [{{name: vendor, endpoint: '{endpoint}', headersSecretRef: {{name: {secret}}}}}]",
        on_local(node)
    ))
    .expect("test Pipeline parses")
}

async fn pipeline_status(
    api: &kube::Api<Pipeline>,
    name: &str,
    wanted: PipelinePhase,
) -> phoenix::crd::pipeline::PipelineStatus {
    eventually(
        &format!("Pipeline {name} {wanted:?}"),
        Duration::from_secs(90),
        || async {
            let s = api.get(name).await.ok()?.status?;
            (s.phase == Some(wanted)).then_some(s)
        },
    )
    .await
}

/// Waits until the receiver got `value` in [`HEADER`].
async fn arrives(receiver: &Receiver, value: &str) {
    eventually(
        &format!("{HEADER}: {value} at the receiver"),
        Duration::from_secs(150),
        || async { receiver.keys().iter().any(|k| k == value).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn secret_headers_reach_the_receiver_and_a_rotated_key_replaces_the_old_one() {
    let ns = TestNamespace::new("exporters").await;
    let (_runner, node) = Runner::on_own_node(&ns).await;
    let _operator = Operator::start(&ns.name, &[]);
    let receiver = Receiver::start();
    let pipelines = ns.api::<Pipeline>();
    let secrets = ns.api::<Secret>();

    // The Secret does not exist yet: a condition says so, and nothing is deployed or sent.
    pipelines
        .create(
            &PostParams::default(),
            &exporting_pipeline("vendor", &node, &receiver.endpoint(), "vendor-key"),
        )
        .await
        .expect("Pipeline created");
    let status = pipeline_status(&pipelines, "vendor", PipelinePhase::Invalid).await;
    let valid = conditions::find(&status.conditions, "ConfigValid").expect("ConfigValid");
    assert_eq!(valid.reason, "SecretNotFound", "{}", valid.message);
    assert!(valid.message.contains("vendor-key"), "{}", valid.message);
    assert_eq!(receiver.count(), 0, "nothing sent without the Secret");

    // The Secret appears: the collectors start and send its value as the header.
    secrets
        .create(&PostParams::default(), &secret("vendor-key", "first-key"))
        .await
        .expect("Secret created");
    pipeline_status(&pipelines, "vendor", PipelinePhase::Ready).await;
    arrives(&receiver, "first-key").await;
    assert!(
        receiver.keys().iter().all(|k| k == "first-key"),
        "every request carries the Secret's value: {:?}",
        receiver.keys()
    );

    // The key is rotated: the new value arrives, and from then on only the new value.
    let rotated = serde_json::json!({"stringData": {HEADER: "second-key"}});
    secrets
        .patch(
            "vendor-key",
            &PatchParams::default(),
            &Patch::Merge(&rotated),
        )
        .await
        .expect("Secret rotated");
    arrives(&receiver, "second-key").await;
    let since = receiver.keys().len();
    eventually(
        "three more requests after the rotation",
        Duration::from_secs(120),
        || async { (receiver.keys().len() >= since + 3).then_some(()) },
    )
    .await;
    let after: Vec<String> = receiver.keys().split_off(since);
    assert!(
        after.iter().all(|k| k == "second-key"),
        "the old key is no longer sent once the new one arrived: {after:?}"
    );
    ns.cleanup().await;
}

/// An Experiment whose candidate has an extra exporter, allowed or not.
fn experiment(name: &str, node: &str, endpoint: &str, allow: bool) -> Experiment {
    serde_yaml::from_str(&format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Experiment\nmetadata: {{name: {name}}}\nspec:\n  targets: {}\n  baseline: {{pipeline: {{template: baseline, collectionInterval: 2s}}}}\n  candidate: {{pipeline: {{template: aggregate, collectionInterval: 2s, exporters: [{{name: vendor, endpoint: '{endpoint}', headersSecretRef: {{name: vendor-key}}}}]}}}}\n  allowExtraExporters: {allow}\n  duration: 10m\n  warmup: 0s\n  analysis: {{interval: 5s}}\n  successCriteria: {{}}",
        on_local(node)
    ))
    .expect("test Experiment parses")
}

#[tokio::test]
async fn an_experiment_sends_to_extra_exporters_only_when_it_allows_them() {
    let ns = TestNamespace::new("exp-exporters").await;
    let (_runner, node) = Runner::on_own_node(&ns).await;
    let _operator = Operator::start(&ns.name, &[]);
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret("vendor-key", "exp-key"))
        .await
        .expect("Secret created");
    let (denied, allowed) = (Receiver::start(), Receiver::start());
    let experiments = ns.api::<Experiment>();
    for (name, receiver, allow) in [("denied", &denied, false), ("allowed", &allowed, true)] {
        experiments
            .create(
                &PostParams::default(),
                &experiment(name, &node, &receiver.endpoint(), allow),
            )
            .await
            .expect("Experiment created");
    }
    for name in ["denied", "allowed"] {
        phase(&experiments, name, &[ExperimentPhase::Running], 120).await;
    }
    // Both candidates' collectors export: the denied one's data is in Prometheus, the allowed
    // one's reaches its receiver with the header.
    let prometheus = prometheus_http_query::Client::try_from(cluster().prometheus_url.as_str())
        .expect("Prometheus client");
    let exported = format!(
        "count({{__name__=~\"process_.+\", phoenix_experiment=\"{}/denied\", phoenix_variant=\"candidate\"}})",
        ns.name
    );
    eventually(
        "the denied Experiment's candidate exports to Prometheus",
        Duration::from_secs(120),
        || async {
            let answer = prometheus.query(exported.as_str()).get().await.ok()?;
            let exported = answer
                .data()
                .as_vector()
                .is_some_and(|v| v.iter().any(|s| s.sample().value() > 0.0));
            exported.then_some(())
        },
    )
    .await;
    arrives(&allowed, "exp-key").await;
    // Yet the denied one's receiver saw nothing: the exporter was never rendered.
    let candidate = ns
        .api::<Pipeline>()
        .get("denied-candidate")
        .await
        .expect("the denied Experiment's candidate");
    let hash = candidate
        .status
        .and_then(|s| s.config_map)
        .expect("the candidate's ConfigMap");
    let config = ns
        .api::<k8s_openapi::api::core::v1::ConfigMap>()
        .get(&hash)
        .await
        .expect("ConfigMap");
    let yaml = config
        .data
        .and_then(|d| d.into_values().next())
        .unwrap_or_default();
    assert!(
        !yaml.contains("otlphttp"),
        "no extra exporter rendered without the Experiment's permission:\n{yaml}"
    );
    assert_eq!(denied.count(), 0, "nothing sent to the denied receiver");
    ns.cleanup().await;
}
