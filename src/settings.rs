//! The operator's settings: command-line flags, each with an environment-variable fallback.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

use crate::desired::collector_uid::{LedgerRef, UidRange};

/// The Prometheus URL when neither `--prometheus-url` nor `PHOENIX_PROMETHEUS_URL` is set (the
/// chart's and `kubectl-phoenix render`'s default too).
pub const DEFAULT_PROMETHEUS_URL: &str = "http://prometheus.monitoring:9090";

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Phoenix operator: runs collector-pipeline experiments driven by custom resources.
#[derive(Clone, Debug, Parser)]
#[command(name = "phoenix-operator", version, args_override_self = true)]
pub struct Settings {
    /// Prometheus that experiments query when their spec names none.
    #[arg(
        long,
        env = "PHOENIX_PROMETHEUS_URL",
        default_value = DEFAULT_PROMETHEUS_URL
    )]
    pub prometheus_url: String,
    /// Remote-write URL the collectors push to. Default: <prometheus-url>/api/v1/write.
    #[arg(long, env = "PHOENIX_REMOTE_WRITE_URL")]
    pub remote_write_url: Option<String>,
    /// Collector image when a Pipeline names none.
    #[arg(
        long,
        env = "PHOENIX_COLLECTOR_IMAGE",
        default_value = "otel/opentelemetry-collector-contrib:0.149.0"
    )]
    pub collector_image: String,
    /// Further collector images a Pipeline's `spec.deployment.image` may name, comma-separated
    /// (exact references). Empty (default): only `--collector-image`. Collectors mount the host's
    /// /proc, so the image is the operator's choice, not the Pipeline author's.
    #[arg(
        long,
        env = "PHOENIX_ALLOWED_COLLECTOR_IMAGES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub allowed_collector_images: Vec<String>,
    /// UIDs the collectors run as, `<first>-<last>`: each namespace's collectors get one UID of
    /// their own (also their GID and fsGroup), recorded in `--collector-uid-ledger`. Reserve the
    /// range for Phoenix: no other workload on the target nodes may run as these UIDs.
    #[arg(
        long,
        env = "PHOENIX_COLLECTOR_UID_RANGE",
        default_value = "2000000000-2000099999"
    )]
    pub collector_uid_range: UidRange,
    /// The ConfigMap `<namespace>/<name>` recording which namespace's collectors run as which UID.
    /// The operator creates and updates it; it belongs in the operator's namespace, where
    /// namespace users cannot write.
    #[arg(
        long,
        env = "PHOENIX_COLLECTOR_UID_LEDGER",
        default_value = "default/phoenix-collector-uids"
    )]
    pub collector_uid_ledger: LedgerRef,
    /// Image the simulator Jobs run; its `phoenix-simulator` is on PATH (`just images` builds it).
    #[arg(
        long,
        env = "PHOENIX_SIMULATOR_IMAGE",
        default_value = concat!("ghcr.io/phoenix-operator/phoenix-simulator:", env!("CARGO_PKG_VERSION"))
    )]
    pub simulator_image: String,
    /// Namespaces to watch, comma-separated. Empty: all namespaces.
    #[arg(
        long,
        env = "PHOENIX_WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub watch_namespaces: Vec<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "PHOENIX_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "PHOENIX_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `phoenix=debug,kube=info`.
    #[arg(long, env = "PHOENIX_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Elect a leader on a Lease so only one replica reconciles.
    #[arg(long, env = "PHOENIX_LEADER_ELECTION", default_value_t = false)]
    pub leader_election: bool,
    /// Namespace of the leader-election Lease. Default: the pod's namespace, else `default`.
    #[arg(long, env = "PHOENIX_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, env = "PHOENIX_LEASE_NAME", default_value = "phoenix-operator")]
    pub lease_name: String,
    /// Lease duration in seconds: a dead leader is replaced within this time.
    #[arg(long, env = "PHOENIX_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Seconds between a replica's tries to take the Lease (and the holder's renewals): a released
    /// Lease is taken over within this time.
    #[arg(long, env = "PHOENIX_LEASE_RETRY_SECONDS", default_value_t = 2)]
    pub lease_retry_seconds: u64,
    /// Seconds an Experiment's collectors and load may take to become ready before it fails
    /// `DeployTimeout`.
    #[arg(long, env = "PHOENIX_DEPLOY_TIMEOUT_SECONDS", default_value_t = 300)]
    pub deploy_timeout_seconds: u64,
    /// Consecutive failed Prometheus attempts (5 s backoff doubling to 60 s) before an Experiment
    /// fails `PrometheusUnavailable`.
    #[arg(long, env = "PHOENIX_ANALYSIS_RETRIES", default_value_t = 8)]
    pub analysis_retries: u32,
    /// Analyses (Prometheus query sets) run at the same time; more wait their turn, so many
    /// Experiments ending together do not overload Prometheus. At least 1.
    #[arg(long, env = "PHOENIX_MAX_CONCURRENT_ANALYSES", default_value_t = 8)]
    pub max_concurrent_analyses: usize,
    /// Reconciles each controller (Experiments, Pipelines, Simulations) runs at the same time;
    /// more objects wait in its queue, each once however often it changed. Bounds the memory and
    /// the apiserver connections of a resync or a burst (every object of a 2,000-Experiment
    /// cluster is due at once after a restart). At least 1.
    #[arg(long, env = "PHOENIX_MAX_CONCURRENT_RECONCILES", default_value_t = 16)]
    pub max_concurrent_reconciles: u16,
    /// This replica's identity in the Lease. Default: the pod name (POD_NAME) or the hostname.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// URL prefixes an Experiment's `spec.prometheus.url` may start with, comma-separated (the
    /// operator queries that URL and its collectors push to it, so a user URL is a request the
    /// operator sends on the user's behalf). Empty (default): only `--prometheus-url` itself.
    #[arg(
        long,
        env = "PHOENIX_ALLOWED_PROMETHEUS_URL_PREFIXES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub allowed_prometheus_url_prefixes: Vec<String>,
    /// A Secret, looked up in each Pipeline's namespace, with the collectors' credentials for
    /// `--remote-write-url` (keys as in `kubectl explain experiment.spec.prometheus.remoteWriteSecretRef`:
    /// `bearer-token`, `username`/`password`, `header.<Name>`, `ca.crt`, `tls.crt`/`tls.key`).
    /// Used only for the operator's own remote-write URL, never for an Experiment's own
    /// Prometheus. A Pipeline in a namespace without it reports `RemoteWriteSecretNotFound`.
    #[arg(long, env = "PHOENIX_REMOTE_WRITE_SECRET")]
    pub remote_write_secret: Option<String>,
    /// Extra header on the collectors' remote writes to `--remote-write-url`, `Name=value`
    /// (repeatable; comma-separated in the env), e.g. `X-Scope-OrgID=platform`.
    #[arg(
        long = "remote-write-header",
        env = "PHOENIX_REMOTE_WRITE_HEADERS",
        value_delimiter = ','
    )]
    pub remote_write_headers: Vec<String>,
    /// OTLP/HTTP endpoint to export traces to, e.g. `http://otel-collector:4318` (spans are sent
    /// to `<endpoint>/v1/traces`). Empty (default): no spans are exported.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// How queries reach Prometheus: credentials, TLS, timeout, answer size cap.
    #[command(flatten)]
    pub prometheus: crate::analysis::access::PrometheusAccess,
}

impl Settings {
    /// The remote-write URL collectors push to.
    pub fn remote_write_url(&self) -> String {
        self.remote_write_url.clone().unwrap_or_else(|| {
            format!("{}/api/v1/write", self.prometheus_url.trim_end_matches('/'))
        })
    }

    /// The `--remote-write-header` pairs, split at the first `=`; a pair without `=` is an
    /// error naming it.
    pub fn remote_write_header_pairs(&self) -> Result<Vec<(String, String)>, String> {
        self.remote_write_headers
            .iter()
            .filter(|p| !p.is_empty())
            .map(|pair| {
                pair.split_once('=')
                    .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                    .ok_or_else(|| format!("--remote-write-header {pair:?} is not Name=value"))
            })
            .collect()
    }

    /// Whether an Experiment may name `url` as its collectors' remote-write URL: the operator's
    /// own remote-write URL, or a URL [`Settings::prometheus_url_allowed`] allows.
    pub fn remote_write_url_allowed(&self, url: &str) -> bool {
        let trim = |u: &str| u.trim_end_matches('/').to_string();
        trim(url) == trim(&self.remote_write_url()) || self.prometheus_url_allowed(url)
    }

    /// Whether an Experiment may name `url` as its Prometheus: it is the operator's own, or starts
    /// with an allowed prefix at a path boundary (`http://prom` allows `http://prom/x`, never
    /// `http://prom.evil` or `http://prom@evil`).
    pub fn prometheus_url_allowed(&self, url: &str) -> bool {
        let trim = |u: &str| u.trim_end_matches('/').to_string();
        if trim(url) == trim(&self.prometheus_url) {
            return true;
        }
        self.allowed_prometheus_url_prefixes
            .iter()
            .filter(|p| !p.is_empty())
            .any(|prefix| {
                url.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                    prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/')
                })
            })
    }

    /// Whether a Pipeline may run its collectors from `image`: the configured collector image or
    /// one listed in `--allowed-collector-images` (exact match).
    pub fn collector_image_allowed(&self, image: &str) -> bool {
        image == self.collector_image
            || self
                .allowed_collector_images
                .iter()
                .any(|i| !i.is_empty() && i == image)
    }

    /// The watched namespaces in the order given, without empty entries or repeats (a repeated
    /// one would run its controllers twice); empty means all.
    pub fn namespaces(&self) -> Vec<String> {
        let mut namespaces: Vec<String> = Vec::new();
        for n in &self.watch_namespaces {
            if !n.is_empty() && !namespaces.contains(n) {
                namespaces.push(n.clone());
            }
        }
        namespaces
    }

    /// Settings for tests and embedding: defaults with the given Prometheus URL.
    pub fn for_prometheus(url: &str) -> Settings {
        let mut s = Settings::parse_from(["phoenix-operator"]);
        s.prometheus_url = url.to_string();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_write_url_defaults_from_prometheus() {
        let s = Settings::parse_from(["x", "--prometheus-url", "http://127.0.0.1:9090/"]);
        assert_eq!(s.remote_write_url(), "http://127.0.0.1:9090/api/v1/write");
        let s = Settings::parse_from(["x", "--remote-write-url", "http://rw/api/v1/write"]);
        assert_eq!(s.remote_write_url(), "http://rw/api/v1/write");
    }

    #[test]
    fn remote_write_urls_and_headers_come_from_the_operators_settings() {
        let s = Settings::parse_from([
            "x",
            "--prometheus-url",
            "http://prom:9090",
            "--remote-write-url",
            "http://mimir/api/v1/push",
            "--allowed-prometheus-url-prefixes",
            "http://team-mimir",
            "--remote-write-header",
            "X-Scope-OrgID=platform",
        ]);
        assert!(s.remote_write_url_allowed("http://mimir/api/v1/push"));
        assert!(s.remote_write_url_allowed("http://team-mimir/api/v1/push"));
        assert!(!s.remote_write_url_allowed("http://evil/api/v1/push"));
        assert_eq!(
            s.remote_write_header_pairs(),
            Ok(vec![("X-Scope-OrgID".into(), "platform".into())])
        );
        let bad = Settings::parse_from(["x", "--remote-write-header", "no-equals"]);
        assert!(bad.remote_write_header_pairs().is_err());
    }

    #[test]
    fn experiment_prometheus_urls_need_the_operators_allow_list() {
        let s = Settings::parse_from(["x", "--prometheus-url", "http://prom:9090/"]);
        assert!(s.prometheus_url_allowed("http://prom:9090"));
        assert!(!s.prometheus_url_allowed("http://169.254.169.254/latest"));
        assert!(!s.prometheus_url_allowed("http://prom:9090/other"));
        let s = Settings::parse_from([
            "x",
            "--allowed-prometheus-url-prefixes",
            "http://team-prom,https://thanos.example/tenant/",
        ]);
        for ok in [
            "http://team-prom",
            "http://team-prom/",
            "http://team-prom/prefix",
            "https://thanos.example/tenant/a",
        ] {
            assert!(s.prometheus_url_allowed(ok), "{ok}");
        }
        for refused in [
            "http://team-prom.evil",
            "http://team-prom@evil",
            "http://team-prom:9090",
            "https://thanos.example/tenantx",
        ] {
            assert!(!s.prometheus_url_allowed(refused), "{refused}");
        }
    }

    #[test]
    fn collector_images_come_from_the_operators_settings() {
        let s = Settings::parse_from(["x", "--collector-image", "otel/contrib:1"]);
        assert!(s.collector_image_allowed("otel/contrib:1"));
        assert!(!s.collector_image_allowed("evil/shell:latest"));
        let s = Settings::parse_from([
            "x",
            "--collector-image",
            "otel/contrib:1",
            "--allowed-collector-images",
            "registry.example/otelcol:2",
        ]);
        assert!(s.collector_image_allowed("registry.example/otelcol:2"));
        assert!(!s.collector_image_allowed("registry.example/otelcol:3"));
    }

    #[test]
    fn namespaces_split_and_default_to_all() {
        assert!(Settings::parse_from(["x"]).namespaces().is_empty());
        let s = Settings::parse_from(["x", "--watch-namespaces", "a,b"]);
        assert_eq!(s.namespaces(), vec!["a", "b"]);
        let repeated = Settings::parse_from(["x", "--watch-namespaces", "b,a,,b,a"]);
        assert_eq!(repeated.namespaces(), vec!["b", "a"]);
    }
}
