//! How the operator reaches a production Prometheus (or Mimir, Cortex, Thanos): bearer token or
//! basic auth and custom headers (a tenant's `X-Scope-OrgID`) read from mounted Secret files,
//! TLS with a custom CA and an optional client certificate, a timeout on every request and a cap
//! on the size of an answer; and what went wrong, in words a person can act on.
//!
//! Credentials are files (the chart mounts Secrets). The operator's queries share one HTTP client
//! ([`SharedClient`]), built again from the files once it is a minute old, so a rotated token or
//! certificate is picked up without a restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

/// How to reach Prometheus for queries (flags with environment fallbacks).
#[derive(Clone, Debug, Args)]
pub struct PrometheusAccess {
    /// File holding a bearer token sent as `Authorization: Bearer …` on every query.
    #[arg(long, env = "PHOENIX_PROMETHEUS_BEARER_TOKEN_FILE")]
    pub prometheus_bearer_token_file: Option<PathBuf>,
    /// Basic-auth user name for queries (the password comes from
    /// `--prometheus-basic-auth-password-file`).
    #[arg(long, env = "PHOENIX_PROMETHEUS_BASIC_AUTH_USERNAME")]
    pub prometheus_basic_auth_username: Option<String>,
    /// File holding the basic-auth password.
    #[arg(long, env = "PHOENIX_PROMETHEUS_BASIC_AUTH_PASSWORD_FILE")]
    pub prometheus_basic_auth_password_file: Option<PathBuf>,
    /// Extra header on every query, `Name=value` (repeatable; comma-separated in the env), e.g.
    /// `X-Scope-OrgID=team-a` for a multi-tenant Mimir or Cortex.
    #[arg(
        long = "prometheus-header",
        env = "PHOENIX_PROMETHEUS_HEADERS",
        value_delimiter = ','
    )]
    pub prometheus_headers: Vec<String>,
    /// PEM file of the CA that signs Prometheus's certificate (added to the system roots).
    #[arg(long, env = "PHOENIX_PROMETHEUS_CA_FILE")]
    pub prometheus_ca_file: Option<PathBuf>,
    /// PEM file of a client certificate for mutual TLS (with `--prometheus-client-key-file`).
    #[arg(long, env = "PHOENIX_PROMETHEUS_CLIENT_CERT_FILE")]
    pub prometheus_client_cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[arg(long, env = "PHOENIX_PROMETHEUS_CLIENT_KEY_FILE")]
    pub prometheus_client_key_file: Option<PathBuf>,
    /// Seconds one Prometheus request may take, connection included; a hung Prometheus costs
    /// one timeout and counts against the analysis retry budget.
    #[arg(long, env = "PHOENIX_PROMETHEUS_TIMEOUT_SECONDS", default_value_t = 30)]
    pub prometheus_timeout_seconds: u64,
    /// Largest answer accepted from Prometheus, in bytes; a larger one is refused while it
    /// streams in, so memory stays bounded.
    #[arg(
        long,
        env = "PHOENIX_PROMETHEUS_MAX_RESPONSE_BYTES",
        default_value_t = 64 * 1024 * 1024
    )]
    pub prometheus_max_response_bytes: u64,
}

impl Default for PrometheusAccess {
    fn default() -> Self {
        PrometheusAccess {
            prometheus_bearer_token_file: None,
            prometheus_basic_auth_username: None,
            prometheus_basic_auth_password_file: None,
            prometheus_headers: vec![],
            prometheus_ca_file: None,
            prometheus_client_cert_file: None,
            prometheus_client_key_file: None,
            prometheus_timeout_seconds: 30,
            prometheus_max_response_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why Prometheus could not be used, named so a person knows what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The operator's own Prometheus settings are wrong (a file missing, a malformed header).
    #[error("Prometheus client settings: {0}")]
    Settings(String),
    /// Prometheus refused the credentials (HTTP 401 or 403).
    #[error(
        "Prometheus refused the credentials (HTTP {status}): check the bearer token, basic auth or tenant header"
    )]
    Unauthorized { status: u16 },
    /// The TLS handshake failed (unknown CA, wrong name, expired or missing client certificate).
    #[error("TLS handshake with Prometheus failed: {0}")]
    Tls(String),
    /// No answer within the request timeout.
    #[error("Prometheus did not answer within the request timeout (--prometheus-timeout-seconds)")]
    Timeout,
    /// Nothing listens, or the name does not resolve.
    #[error("cannot connect to Prometheus: {0}")]
    Unreachable(String),
    /// The answer was larger than the cap.
    #[error("Prometheus answered with more than {0} bytes (the operator's cap)")]
    TooLarge(u64),
    /// Any other failure (an HTTP error, a malformed answer, a query Prometheus rejected).
    #[error("{0}")]
    Other(String),
}

impl AccessError {
    /// The condition reason for `PrometheusReachable=False`.
    pub fn reason(&self) -> &'static str {
        match self {
            AccessError::Settings(_) => "PrometheusSettingsInvalid",
            AccessError::Unauthorized { .. } => "PrometheusUnauthorized",
            AccessError::Tls(_) => "PrometheusTLSError",
            AccessError::Timeout => "PrometheusTimeout",
            AccessError::Unreachable(_) => "PrometheusUnreachable",
            AccessError::TooLarge(_) => "PrometheusResponseTooLarge",
            AccessError::Other(_) => "PrometheusError",
        }
    }
}

fn read_secret(path: &Path, what: &str) -> Result<String, AccessError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| AccessError::Settings(format!("{what} {}: {e}", path.display())))
}

fn read_bytes(path: &Path, what: &str) -> Result<Vec<u8>, AccessError> {
    std::fs::read(path)
        .map_err(|e| AccessError::Settings(format!("{what} {}: {e}", path.display())))
}

fn header_value(value: &str, what: &str) -> Result<HeaderValue, AccessError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| AccessError::Settings(format!("{what} is not a valid header value")))?;
    v.set_sensitive(true);
    Ok(v)
}

impl PrometheusAccess {
    /// The headers every query carries: credentials and the configured extra headers.
    pub fn headers(&self) -> Result<HeaderMap, AccessError> {
        let mut headers = HeaderMap::new();
        if let Some(path) = &self.prometheus_bearer_token_file {
            let token = read_secret(path, "bearer token file")?;
            headers.insert(
                AUTHORIZATION,
                header_value(&format!("Bearer {token}"), "the bearer token")?,
            );
        }
        match (
            &self.prometheus_basic_auth_username,
            &self.prometheus_basic_auth_password_file,
        ) {
            (Some(user), Some(path)) => {
                use base64::Engine as _;
                let password = read_secret(path, "basic-auth password file")?;
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                headers.insert(
                    AUTHORIZATION,
                    header_value(&format!("Basic {encoded}"), "basic auth")?,
                );
            }
            (None, None) => {}
            _ => {
                return Err(AccessError::Settings(
                    "basic auth needs both a user name and a password file".into(),
                ));
            }
        }
        for pair in self.prometheus_headers.iter().filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').ok_or_else(|| {
                AccessError::Settings(format!("header {pair:?} is not Name=value"))
            })?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| AccessError::Settings(format!("{name:?} is not a header name")))?;
            headers.insert(name, header_value(value.trim(), "a header")?);
        }
        Ok(headers)
    }

    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.prometheus_timeout_seconds.max(1))
    }

    /// An HTTP client carrying these settings.
    pub fn http_client(&self) -> Result<reqwest::Client, AccessError> {
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout())
            .connect_timeout(self.timeout())
            .default_headers(self.headers()?);
        if let Some(path) = &self.prometheus_ca_file {
            let pem = read_bytes(path, "CA file")?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| AccessError::Settings(format!("CA file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(AccessError::Settings(format!(
                    "CA file {} holds no PEM certificate",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        match (
            &self.prometheus_client_cert_file,
            &self.prometheus_client_key_file,
        ) {
            (Some(cert), Some(key)) => {
                let mut pem = read_bytes(cert, "client certificate file")?;
                pem.push(b'\n');
                pem.extend(read_bytes(key, "client key file")?);
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| AccessError::Settings(format!("client certificate: {e}")))?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => {
                return Err(AccessError::Settings(
                    "a client certificate needs both --prometheus-client-cert-file and --prometheus-client-key-file".into(),
                ));
            }
        }
        builder
            .build()
            .map_err(|e| AccessError::Settings(format!("HTTP client: {e}")))
    }

    /// A Prometheus API client for `url` with these settings, answers capped at
    /// `--prometheus-max-response-bytes`, over an HTTP client of its own (for one-off use, such as
    /// the CLI's; the operator's reconciles share a [`SharedClient`]).
    pub fn client(&self, url: &str) -> Result<Prometheus, AccessError> {
        self.client_over(self.http_client()?, url)
    }

    /// A Prometheus API client for `url` over `http`, answers capped at
    /// `--prometheus-max-response-bytes`.
    fn client_over(&self, http: reqwest::Client, url: &str) -> Result<Prometheus, AccessError> {
        let client = prometheus_http_query::Client::from(http, url)
            .map_err(|e| AccessError::Settings(format!("Prometheus URL {url:?}: {e}")))?;
        Ok(Prometheus::new(client, self.prometheus_max_response_bytes))
    }
}

/// How long a [`Rebuilt`] HTTP client is reused before the credential and certificate files are read
/// again (kube-client re-reads its in-cluster CA as often).
pub const REBUILD_AFTER: Duration = Duration::from_secs(60);

/// A value built at its first use and again once it is [`REBUILD_AFTER`] old: an HTTP client
/// whose build reads files (credentials, the system's CA certificates) that may change while the
/// operator runs.
pub struct Rebuilt<T> {
    built: Mutex<Option<(Instant, T)>>,
}

impl<T> Default for Rebuilt<T> {
    fn default() -> Self {
        Rebuilt {
            built: Mutex::new(None),
        }
    }
}

impl<T: Clone> Rebuilt<T> {
    /// The value as of `now`: the one built less than [`REBUILD_AFTER`] before, or a new one from
    /// `build`. A failed build is returned as is and stores nothing, so the next call builds
    /// again (the old value, being old, is never handed out again).
    pub fn get<E>(&self, now: Instant, build: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        {
            let built = self.built.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, value)) = built.as_ref()
                && now.saturating_duration_since(*at) < REBUILD_AFTER
            {
                return Ok(value.clone());
            }
        }
        // Built without the lock (it reads files): other reconciles are not held up meanwhile.
        // Two that find the value old at the same moment may both build; the later one stays.
        let value = build()?;
        *self.built.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, value.clone()));
        Ok(value)
    }
}

/// The operator's HTTP client for Prometheus, shared by every query and rebuilt from the settings'
/// files once it is [`REBUILD_AFTER`] old. Building one reads the credential files and the
/// system's CA certificates (a few milliseconds of CPU and file reads), which the reconciles that
/// query Prometheus must not pay each time; one client also keeps its connections to Prometheus
/// open between queries.
pub struct SharedClient {
    access: PrometheusAccess,
    http: Rebuilt<reqwest::Client>,
}

impl SharedClient {
    /// A client for `access`, built at its first use.
    pub fn new(access: PrometheusAccess) -> SharedClient {
        SharedClient {
            access,
            http: Rebuilt::default(),
        }
    }

    /// A Prometheus API client for `url` over the shared HTTP client, answers capped at
    /// `--prometheus-max-response-bytes`.
    pub fn client(&self, url: &str) -> Result<Prometheus, AccessError> {
        self.client_at(url, Instant::now())
    }

    fn client_at(&self, url: &str, now: Instant) -> Result<Prometheus, AccessError> {
        let http = self.http.get(now, || self.access.http_client())?;
        self.access.client_over(http, url)
    }
}

/// A Prometheus API client and the largest answer the operator reads from it. Every request the
/// analysis sends goes through [`super::measure`], which reads answers with [`read_capped`]
/// under this cap.
#[derive(Clone)]
pub struct Prometheus {
    client: prometheus_http_query::Client,
    max_response_bytes: u64,
}

impl Prometheus {
    /// `client` whose answers are refused past `max_response_bytes` (at least 1).
    pub fn new(client: prometheus_http_query::Client, max_response_bytes: u64) -> Prometheus {
        Prometheus {
            client,
            max_response_bytes: max_response_bytes.max(1),
        }
    }

    /// The API client (requests are built with it; answers are read with [`read_capped`]).
    pub fn client(&self) -> &prometheus_http_query::Client {
        &self.client
    }

    /// The largest answer read, in bytes.
    pub fn max_response_bytes(&self) -> u64 {
        self.max_response_bytes
    }
}

/// The first `reqwest::Error` in an error's source chain.
fn reqwest_source<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a reqwest::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<reqwest::Error>() {
            return Some(r);
        }
        current = e.source();
    }
    None
}

/// Every message in an error's source chain, joined.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut current = error.source();
    while let Some(e) = current {
        parts.push(e.to_string());
        current = e.source();
    }
    parts.join(": ")
}

/// Names what went wrong with a request, from the error and its sources.
pub fn classify(error: &prometheus_http_query::Error) -> AccessError {
    use prometheus_http_query::Error as E;
    let source = match error {
        E::Client(c) => std::error::Error::source(c).and_then(reqwest_source),
        _ => None,
    };
    match source {
        Some(r) => classify_reqwest(r),
        None => AccessError::Other(chain(error)),
    }
}

/// Names what went wrong with an HTTP request to Prometheus.
pub fn classify_reqwest(error: &reqwest::Error) -> AccessError {
    let text = chain(error);
    if let Some(status) = error.status()
        && matches!(status.as_u16(), 401 | 403)
    {
        return AccessError::Unauthorized {
            status: status.as_u16(),
        };
    }
    if error.is_timeout() {
        return AccessError::Timeout;
    }
    let lower = text.to_lowercase();
    if ["certificate", "tls", "handshake", "unknownissuer"]
        .iter()
        .any(|w| lower.contains(w))
    {
        return AccessError::Tls(text);
    }
    if error.is_connect() {
        return AccessError::Unreachable(text);
    }
    AccessError::Other(text)
}

/// Reads a response body, refusing it once it passes `max` bytes: a declared length over the
/// cap is refused before any of the body is read, an undeclared one as soon as the bytes read
/// pass it, so memory stays bounded by the cap (plus one chunk) whatever Prometheus sends. A
/// failure while reading is named like a failed request (a stalled body is a `Timeout`).
pub async fn read_capped(
    mut response: reqwest::Response,
    max: u64,
) -> Result<Vec<u8>, AccessError> {
    if response.content_length().is_some_and(|len| len > max) {
        return Err(AccessError::TooLarge(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| match classify_reqwest(&e) {
            AccessError::Other(text) => {
                AccessError::Other(format!("reading Prometheus's answer: {text}"))
            }
            named => named,
        })?
    {
        if body.len() as u64 + chunk.len() as u64 > max {
            return Err(AccessError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("phoenix-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("written");
        path
    }

    /// The Authorization header of the next request `listener` accepts (answered with an empty
    /// Prometheus result, connection closed).
    /// Accepts one connection on `listener`, answers its request (200, then closes) and returns
    /// the request's `Authorization` header ("" without one).
    pub(crate) async fn authorization_of_next_request(
        listener: &tokio::net::TcpListener,
    ) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut conn, _) = listener.accept().await.expect("accepted");
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.expect("read");
            assert!(n > 0, "request ended before its headers");
            request.extend_from_slice(&buf[..n]);
        }
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(answer.as_bytes()).await.expect("answered");
        String::from_utf8_lossy(&request)
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("authorization:")
                    .then(|| l["authorization:".len()..].trim().to_string())
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn the_shared_client_reads_a_rotated_token_once_it_is_a_minute_old() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bound");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let token = temp_file("shared-token", "first");
        let shared = SharedClient::new(PrometheusAccess {
            prometheus_bearer_token_file: Some(token.clone()),
            ..Default::default()
        });
        let start = Instant::now();
        let sent_at = |at: Instant| {
            let prom = shared.client_at(&url, at).expect("client");
            async move { prom.client().query("up").get_raw().await.map(|_| ()) }
        };
        let (sent, seen) = tokio::join!(sent_at(start), authorization_of_next_request(&listener));
        sent.expect("answered");
        assert_eq!(seen, "Bearer first");

        std::fs::write(&token, "second").expect("rotated");
        let within = start + REBUILD_AFTER - Duration::from_secs(1);
        let (sent, seen) = tokio::join!(sent_at(within), authorization_of_next_request(&listener));
        sent.expect("answered");
        assert_eq!(
            seen, "Bearer first",
            "reused within the minute: the files are not read again"
        );

        let after = start + REBUILD_AFTER;
        let (sent, seen) = tokio::join!(sent_at(after), authorization_of_next_request(&listener));
        sent.expect("answered");
        assert_eq!(seen, "Bearer second", "rebuilt from the rotated file");

        std::fs::remove_file(&token).expect("removed");
        let later = after + REBUILD_AFTER;
        assert!(
            matches!(shared.client_at(&url, later), Err(AccessError::Settings(m)) if m.contains("bearer token file")),
            "a file that went missing is reported, not hidden by the old client"
        );
    }

    #[test]
    fn credentials_and_tenant_headers_come_from_files_and_flags() {
        let access = PrometheusAccess {
            prometheus_bearer_token_file: Some(temp_file("token", "s3cr3t\n")),
            prometheus_headers: vec!["X-Scope-OrgID=team-a".into()],
            ..Default::default()
        };
        let headers = access.headers().expect("valid settings");
        assert_eq!(headers[AUTHORIZATION], "Bearer s3cr3t");
        assert!(headers[AUTHORIZATION].is_sensitive());
        assert_eq!(headers["x-scope-orgid"], "team-a");

        let basic = PrometheusAccess {
            prometheus_basic_auth_username: Some("phoenix".into()),
            prometheus_basic_auth_password_file: Some(temp_file("password", "pw")),
            ..Default::default()
        };
        // base64("phoenix:pw")
        assert_eq!(
            basic.headers().expect("valid")[AUTHORIZATION],
            "Basic cGhvZW5peDpwdw=="
        );
    }

    #[test]
    fn broken_settings_are_named() {
        let missing = PrometheusAccess {
            prometheus_bearer_token_file: Some("/nonexistent/token".into()),
            ..Default::default()
        };
        assert!(
            matches!(missing.headers(), Err(AccessError::Settings(m)) if m.contains("/nonexistent/token"))
        );
        let half = PrometheusAccess {
            prometheus_basic_auth_username: Some("u".into()),
            ..Default::default()
        };
        assert!(matches!(half.headers(), Err(AccessError::Settings(_))));
        let bad_header = PrometheusAccess {
            prometheus_headers: vec!["no-equals-sign".into()],
            ..Default::default()
        };
        assert!(matches!(
            bad_header.headers(),
            Err(AccessError::Settings(_))
        ));
        let bad_ca = PrometheusAccess {
            prometheus_ca_file: Some(temp_file("ca.pem", "not a certificate")),
            ..Default::default()
        };
        assert!(
            matches!(bad_ca.http_client(), Err(AccessError::Settings(m)) if m.contains("no PEM certificate"))
        );
    }

    #[test]
    fn reasons_are_distinct() {
        let all = [
            AccessError::Settings(String::new()),
            AccessError::Unauthorized { status: 401 },
            AccessError::Tls(String::new()),
            AccessError::Timeout,
            AccessError::Unreachable(String::new()),
            AccessError::TooLarge(1),
            AccessError::Other(String::new()),
        ];
        let reasons: std::collections::BTreeSet<_> = all.iter().map(|e| e.reason()).collect();
        assert_eq!(reasons.len(), all.len());
    }
}
