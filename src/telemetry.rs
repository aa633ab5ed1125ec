//! The operator's own telemetry: Prometheus metrics, the /metrics /healthz /readyz endpoint, and
//! log setup. Outbound-call metrics (apiserver, Prometheus) live in [`outbound`], span export
//! over OTLP in [`traces`].

pub mod exposition;
pub mod outbound;
pub mod process;
pub mod state;
pub mod traces;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::settings::{LogFormat, Settings};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub namespace: String,
    pub experiment: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub namespace: String,
    pub experiment: String,
}

/// Every metric the operator exports, under the `phoenix_` prefix.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ControllerLabel, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<ControllerLabel, Histogram>,
    /// Reconciles running now, per controller. kube-runtime does not expose its scheduler's
    /// queue, so this is the nearest honest measure of a controller's backlog.
    pub in_flight: Family<ControllerLabel, Gauge>,
    /// `phoenix_analysis_duration_seconds`: one Experiment's analysis (both variants' queries),
    /// from its turn (see `phoenix_analyses_waiting`) to its result.
    pub analysis_duration: Histogram,
    /// `phoenix_analysis_queries`: Prometheus requests per analysis.
    pub analysis_queries: Histogram,
    /// `phoenix_analyses_waiting`: analyses waiting for a turn (`--max-concurrent-analyses`).
    pub analyses_waiting: Gauge,
    /// 1 for the phase each Experiment is in.
    pub experiment_phase: Family<PhaseLabels, Gauge>,
    pub result_series_reduction: Family<ResultLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub result_retention: Family<ResultLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// 1 Pass, 0 Fail, -1 Inconclusive.
    pub result_verdict: Family<ResultLabels, Gauge>,
    /// The Experiments (namespace, name) that have series in the families above.
    experiments: std::sync::Mutex<std::collections::BTreeSet<(String, String)>>,
    /// The controllers' caches, exported at scrape time (see [`state`]).
    pub state: state::State,
    /// The length of the last [`Metrics::render`].
    rendered_len: std::sync::atomic::AtomicUsize,
}

/// The values of the `phase` label of `experiment_phase`.
pub const EXPERIMENT_PHASES: &[&str] = &[
    "Pending",
    "Deploying",
    "Running",
    "Analyzing",
    "Completed",
    "Failed",
    "Aborted",
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("phoenix");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        let in_flight = Family::<ControllerLabel, Gauge>::default();
        // 50 ms … 410 s.
        let analysis_duration = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        // 1 … 256 requests.
        let analysis_queries = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        let analyses_waiting = Gauge::default();
        registry.register(
            "analysis_duration_seconds",
            "Duration of one Experiment's analysis (its Prometheus queries), once its turn came",
            analysis_duration.clone(),
        );
        registry.register(
            "analysis_queries",
            "Prometheus requests made by one Experiment's analysis",
            analysis_queries.clone(),
        );
        registry.register(
            "analyses_waiting",
            "Analyses waiting for a turn (--max-concurrent-analyses)",
            analyses_waiting.clone(),
        );
        let experiment_phase = Family::<PhaseLabels, Gauge>::default();
        let result_series_reduction = Family::default();
        let result_retention = Family::default();
        let result_verdict = Family::<ResultLabels, Gauge>::default();
        registry.register(
            "reconciles",
            "Reconciles per controller",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles per controller and reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration per controller",
            duration.clone(),
        );
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now per controller",
            in_flight.clone(),
        );
        let outbound = outbound::outbound();
        registry.register(
            "kube_request_duration_seconds",
            "Duration of apiserver requests (to the response headers) by verb, resource and code",
            outbound.kube_requests.clone(),
        );
        registry.register(
            "prometheus_query_duration_seconds",
            "Duration of Prometheus API requests by kind and outcome",
            outbound.prometheus_queries.clone(),
        );
        registry.register(
            "experiment_phase",
            "1 for the phase each Experiment is in",
            experiment_phase.clone(),
        );
        registry.register(
            "experiment_series_reduction_percent",
            "Series reduction of each completed Experiment",
            result_series_reduction.clone(),
        );
        registry.register(
            "experiment_critical_retention_percent",
            "Critical-process retention of each completed Experiment",
            result_retention.clone(),
        );
        registry.register(
            "experiment_verdict",
            "Verdict of each completed Experiment: 1 Pass, 0 Fail, -1 Inconclusive",
            result_verdict.clone(),
        );
        let state = state::State::default();
        registry.register_collector(Box::new(state.clone()));
        registry.register_collector(Box::new(process::ProcessCollector));
        let build = prometheus_client::metrics::info::Info::new(vec![(
            "version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        )]);
        registry.register(
            "build",
            "The operator's version; present while the operator is up",
            build,
        );
        Metrics {
            registry,
            state,
            reconciles,
            errors,
            duration,
            in_flight,
            analysis_duration,
            analysis_queries,
            analyses_waiting,
            experiment_phase,
            result_series_reduction,
            result_retention,
            result_verdict,
            experiments: Default::default(),
            rendered_len: Default::default(),
        }
    }
}

impl Metrics {
    /// Starts timing one reconcile of `controller`; the returned guard records it when dropped.
    pub fn reconcile(&self, controller: &str) -> ReconcileTimer<'_> {
        let label = ControllerLabel {
            controller: controller.to_string(),
        };
        self.reconciles.get_or_create(&label).inc();
        self.in_flight.get_or_create(&label).inc();
        ReconcileTimer {
            metrics: self,
            label,
            start: Instant::now(),
        }
    }

    /// Sets the Experiment's phase: its series for `phase` is 1, and it has no series for the
    /// others (removed, not kept at 0: 2,000 Experiments would otherwise hold 12,000 idle label
    /// sets, and `== 1` reads the same).
    pub fn set_experiment_phase(&self, namespace: &str, experiment: &str, phase: &str) {
        for p in EXPERIMENT_PHASES {
            let labels = PhaseLabels {
                namespace: namespace.to_string(),
                experiment: experiment.to_string(),
                phase: p.to_string(),
            };
            if *p == phase {
                self.experiment_phase.get_or_create(&labels).set(1);
            } else {
                self.experiment_phase.remove(&labels);
            }
        }
    }

    /// Removes the series of every Experiment `live` does not hold (namespace, name): a deleted
    /// Experiment stops reporting, and /metrics stays bounded by the live objects.
    pub fn retain_experiments(&self, live: &std::collections::BTreeSet<(String, String)>) {
        let mut known = self
            .experiments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let gone: Vec<(String, String)> = known.difference(live).cloned().collect();
        for (namespace, experiment) in gone {
            for phase in EXPERIMENT_PHASES {
                self.experiment_phase.remove(&PhaseLabels {
                    namespace: namespace.clone(),
                    experiment: experiment.clone(),
                    phase: phase.to_string(),
                });
            }
            let labels = ResultLabels {
                namespace: namespace.clone(),
                experiment: experiment.clone(),
            };
            self.result_series_reduction.remove(&labels);
            self.result_retention.remove(&labels);
            self.result_verdict.remove(&labels);
            known.remove(&(namespace, experiment));
        }
    }

    /// Notes that the Experiment `namespace/name` has series (see [`Metrics::retain_experiments`]).
    pub fn track_experiment(&self, namespace: &str, name: &str) {
        self.experiments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((namespace.to_string(), name.to_string()));
    }

    pub fn error(&self, controller: &str, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller: controller.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The metrics in the OpenMetrics text format. The text is sized from the previous one, so it
    /// is not grown by doubling (megabytes at thousands of Experiments).
    pub fn render(&self) -> String {
        let last = self.rendered_len.load(std::sync::atomic::Ordering::Relaxed);
        let mut out = String::with_capacity(last + last / 8);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        self.rendered_len
            .store(out.len(), std::sync::atomic::Ordering::Relaxed);
        out
    }
}

/// Records a reconcile's duration, and that it is no longer in flight, on drop.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    label: ControllerLabel,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.get_or_create(&self.label).dec();
        self.metrics
            .duration
            .get_or_create(&self.label)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// What /readyz reports: ready once the watches have synced and (with leader election) this
/// replica leads.
#[derive(Default)]
pub struct Readiness {
    pub synced: AtomicBool,
    pub leading: AtomicBool,
    pub needs_lease: AtomicBool,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
            && (!self.needs_lease.load(Ordering::Relaxed) || self.leading.load(Ordering::Relaxed))
    }
}

fn response(status: &str, content_type: &str, body: &str) -> String {
    head(status, content_type, body.len()) + body
}

/// The head of a response whose body is `length` bytes.
fn head(status: &str, content_type: &str, length: usize) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n"
    )
}

/// How long a client may take to send its request head.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest request head read; what a longer one holds past it is not read.
const MAX_HEAD: usize = 8 * 1024;

/// The request head (up to its blank line, at most [`MAX_HEAD`] bytes), however many reads it
/// takes: a client may send it in pieces (a `write!` to a socket writes each formatted part on its
/// own). Lines may end in a bare LF, as HTTP/1.1 tolerates (`printf 'GET /metrics\n\n' | nc`).
/// `None` when the connection ends or fails first.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let ended = |head: &[u8]| {
        head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
    };
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !ended(&head) && head.len() < MAX_HEAD {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// Bytes of the classic text format written to the socket at once.
const PIECE: usize = 64 * 1024;

/// Answers a GET /metrics: OpenMetrics as rendered, or the classic text converted in pieces of
/// [`PIECE`] bytes, first to count its length, then to send it (never a second copy of the whole
/// exposition, which at thousands of Experiments is megabytes).
async fn send_metrics(
    stream: &mut TcpStream,
    metrics: &Metrics,
    openmetrics: bool,
) -> std::io::Result<()> {
    let text = metrics.render();
    if openmetrics {
        stream
            .write_all(head("200 OK", exposition::OPENMETRICS, text.len()).as_bytes())
            .await?;
        return stream.write_all(text.as_bytes()).await;
    }
    let length = exposition::classic_pieces(&text, PIECE)
        .map(|piece| piece.len())
        .sum();
    stream
        .write_all(head("200 OK", exposition::PROMETHEUS_TEXT, length).as_bytes())
        .await?;
    for piece in exposition::classic_pieces(&text, PIECE) {
        stream.write_all(piece.as_bytes()).await?;
    }
    Ok(())
}

/// Serves GET /metrics, /healthz and /readyz until the process ends. A plain HTTP/1.1 responder:
/// three read-only endpoints do not justify a web framework.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, readiness: Arc<Readiness>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let Ok(Some(head)) =
                tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await
            else {
                return;
            };
            let request = String::from_utf8_lossy(&head);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let reply = match path {
                "/metrics" => {
                    let openmetrics = exposition::wants_openmetrics(&request);
                    let _ = send_metrics(&mut stream, &metrics, openmetrics).await;
                    return;
                }
                "/healthz" => response("200 OK", "text/plain", "ok\n"),
                "/readyz" if readiness.is_ready() => response("200 OK", "text/plain", "ready\n"),
                "/readyz" => response("503 Service Unavailable", "text/plain", "not ready\n"),
                _ => response("404 Not Found", "text/plain", "not found\n"),
            };
            let _ = stream.write_all(reply.as_bytes()).await;
        });
    }
}

/// Sets up logs from the settings' format and filter and, with `--otlp-endpoint`, span export
/// (JSON log lines then carry trace and span IDs). Keep the returned guard until exit: dropping
/// it flushes the spans still queued.
pub fn init_logging(settings: &Settings) -> Result<traces::Traces, traces::TracingError> {
    use tracing_subscriber::fmt::{self, format};
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, Layer, Registry};
    let filter = EnvFilter::try_new(&settings.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = match settings.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        Some(endpoint) => Some(traces::provider(endpoint)?),
        None => None,
    };
    let exporting = provider.is_some();
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match settings.log_format {
        LogFormat::Json if exporting => fmt::layer()
            .json()
            .event_format(traces::WithTraceIds(format().json()))
            .boxed(),
        LogFormat::Json => fmt::layer().json().boxed(),
        LogFormat::Text => fmt::layer().boxed(),
    };
    let subscriber = tracing_subscriber::registry().with(logs).with(filter);
    let guard = match provider {
        Some(provider) => {
            let (spans, guard) = traces::layer(provider);
            subscriber.with(spans).init();
            guard
        }
        None => {
            subscriber.init();
            traces::Traces::default()
        }
    };
    traces::remember_dispatch();
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_sent_in_pieces_is_answered_as_a_whole() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bound");
        let addr = listener.local_addr().expect("address");
        let readiness = Arc::new(Readiness::default());
        tokio::spawn(serve(listener, Arc::new(Metrics::default()), readiness));
        for (path, end) in [
            ("/metrics", "\r\n"),
            ("/healthz", "\r\n"),
            ("/metrics", "\n"),
        ] {
            let mut stream = TcpStream::connect(addr).await.expect("connected");
            let request =
                format!("GET {path} HTTP/1.1{end}Host: x{end}Connection: close{end}{end}");
            for piece in [&request[..4], &request[4..20], &request[20..]] {
                stream.write_all(piece.as_bytes()).await.expect("sent");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.expect("answered");
            assert!(
                answer.starts_with("HTTP/1.1 200 OK"),
                "{path}: {answer:.200}"
            );
            let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
            let length = format!("content-length: {}", body.len());
            assert!(head.contains(&length), "{path}: {head}");
        }
    }

    #[test]
    fn series_of_experiments_no_longer_live_are_removed() {
        let m = Metrics::default();
        for name in ["kept", "gone"] {
            m.track_experiment("ns", name);
            let labels = PhaseLabels {
                namespace: "ns".into(),
                experiment: name.into(),
                phase: "Running".into(),
            };
            m.experiment_phase.get_or_create(&labels).set(1);
            let result = ResultLabels {
                namespace: "ns".into(),
                experiment: name.into(),
            };
            m.result_verdict.get_or_create(&result).set(1);
        }
        m.retain_experiments(&[("ns".to_string(), "kept".to_string())].into());
        let text = m.render();
        assert!(text.contains("experiment=\"kept\""), "{text}");
        assert!(!text.contains("experiment=\"gone\""), "{text}");
    }

    #[test]
    fn an_experiment_has_one_phase_series_its_current_phase() {
        let m = Metrics::default();
        m.set_experiment_phase("ns", "e", "Running");
        m.set_experiment_phase("ns", "e", "Completed");
        let text = m.render();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("phoenix_experiment_phase{"))
            .collect();
        assert_eq!(
            series,
            vec![r#"phoenix_experiment_phase{namespace="ns",experiment="e",phase="Completed"} 1"#],
            "{text}"
        );
    }

    #[test]
    fn reconciles_errors_and_durations_are_exported() {
        let m = Metrics::default();
        let running = m.reconcile("pipeline");
        assert!(
            m.render()
                .contains("phoenix_reconciles_in_flight{controller=\"pipeline\"} 1")
        );
        drop(running);
        m.error("pipeline", "KubeApi");
        let text = m.render();
        assert!(
            text.contains("phoenix_reconciles_total{controller=\"pipeline\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "phoenix_reconcile_errors_total{controller=\"pipeline\",reason=\"KubeApi\"} 1"
        ));
        assert!(
            text.contains("phoenix_reconcile_duration_seconds_count{controller=\"pipeline\"} 1")
        );
        assert!(text.contains("phoenix_reconciles_in_flight{controller=\"pipeline\"} 0"));
    }

    #[test]
    fn readiness_needs_sync_and_lease_when_electing() {
        let r = Readiness::default();
        assert!(!r.is_ready());
        r.synced.store(true, Ordering::Relaxed);
        assert!(r.is_ready());
        r.needs_lease.store(true, Ordering::Relaxed);
        assert!(!r.is_ready());
        r.leading.store(true, Ordering::Relaxed);
        assert!(r.is_ready());
    }
}
