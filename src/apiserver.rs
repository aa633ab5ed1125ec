//! The operator's client for the apiserver: kube-client's own layers (base URI, credentials,
//! extra headers, retries of 429/503/504) over a hyper client that speaks HTTP/2 when the
//! apiserver offers it (TLS ALPN), as client-go does. kube-client's default stack speaks
//! HTTP/1.1 only, so every request in flight holds a TLS connection of its own: 16 reconciles
//! in flight per controller meant dozens of connections and their buffers. Over HTTP/2 one
//! connection carries every request and watch as streams.
//!
//! Differences from kube-client's stack: `config.read_timeout`/`write_timeout` (unset unless a
//! program sets them) are not applied, since one connection carries long watches alongside short
//! requests; a silent connection is found by HTTP/2 pings instead ([`PING_INTERVAL`]). There is
//! no per-request tracing span (the operator's own spans name each request). A kubeconfig that
//! names a proxy keeps kube-client's own stack, which handles the proxy.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::{ClientBuilder, ConfigExt};
use tower::ServiceBuilder;
use tower::util::BoxService;

/// How long an HTTP/2 connection may stay silent before it is pinged, and how long the ping may
/// go unanswered before the connection is dropped and its requests fail (client-go's
/// `ReadIdleTimeout` and `PingTimeout`): a dead connection is found in under a minute.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
pub const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// The service under a [`ClientBuilder`]: requests in, responses with hyper's streaming bodies
/// out.
pub type Service = BoxService<
    http::Request<kube::client::Body>,
    http::Response<hyper::body::Incoming>,
    tower::BoxError,
>;

/// Whether the operator builds its own stack for `config` (false: kube-client's, for a proxy).
pub fn speaks_http2(config: &kube::Config) -> bool {
    config.proxy_url.is_none()
}

/// A client builder for `config` whose connections negotiate HTTP/2 (falling back to HTTP/1.1
/// when the server offers only that), with kube-client's layers and `config`'s timeouts.
pub fn http2_builder(config: &kube::Config) -> Result<ClientBuilder<Service>, kube::Error> {
    Ok(ClientBuilder::new(
        http2_service(config)?,
        config.default_namespace.clone(),
    ))
}

/// The service under [`http2_builder`]: kube-client's layers (base URI, retries, credentials,
/// extra headers such as impersonation) over the HTTP/2-capable hyper client.
pub fn http2_service(config: &kube::Config) -> Result<Service, kube::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    http.set_nodelay(true);
    let tls = config.rustls_client_config()?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let https = match &config.tls_server_name {
        Some(name) => https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
            name.clone().try_into().map_err(|e| {
                kube::Error::Service(format!("tls-server-name {name:?}: {e}").into())
            })?,
        )),
        None => https,
    };
    let connector = https.enable_all_versions().wrap_connector(http);
    let hyper = hyper_util::client::legacy::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_keep_alive_interval(PING_INTERVAL)
        .http2_keep_alive_timeout(PING_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| {
            tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry())
        }))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(hyper);
    Ok(BoxService::new(service))
}
