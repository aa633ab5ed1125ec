//! The operator's client for the apiserver: kube-client's own layers (base URI, credentials,
//! extra headers, retries of 429/503/504) over a hyper client that speaks HTTP/2 when the
//! apiserver offers it (TLS ALPN), as client-go does. kube-client's default stack speaks
//! HTTP/1.1 only, so every request in flight holds a TLS connection of its own: 16 reconciles
//! in flight per controller meant dozens of connections and their buffers. Over HTTP/2 one
//! connection carries every request and watch as streams.
//!
//! As kube-client's stack does, the connect timeout covers the TLS handshake too, and `config`'s
//! read and write timeouts apply to the connection. On top of it, HTTP/2 pings find a silent
//! connection ([`PING_INTERVAL`]), and the connection's flow-control window is far larger than a
//! stream's ([`CONNECTION_WINDOW`], as client-go sets it): a watch whose reader falls behind stops
//! only its own stream, never the requests beside it. Left out: kube-client's per-request tracing
//! span (the operator's own spans name each request) and the expiry of exec-plugin client
//! certificates (`Client::valid_until`, which the operator does not read). A kubeconfig that
//! names a proxy goes to kube-client's stack, which refuses it as before (Phoenix builds kube
//! without its proxy features).

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

/// The HTTP/2 connection's flow-control window, 1 GiB as client-go's. Only data received and not
/// yet read counts against it, and each stream is held to hyper's 2 MiB stream window, so this
/// reserves no memory: it keeps the connection from being the limit when several watches lag.
pub const CONNECTION_WINDOW: u32 = 1 << 30;

/// The service under a [`ClientBuilder`]: requests in, responses with hyper's streaming bodies
/// out.
pub type Service = BoxService<
    http::Request<kube::client::Body>,
    http::Response<hyper::body::Incoming>,
    tower::BoxError,
>;

/// Whether the operator builds its own stack for `config` (false when it names a proxy: then
/// kube-client's stack, which refuses it without kube's proxy features, as before).
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
    // The timeouts wrap TCP connect and TLS handshake together, as in kube-client's stack.
    let mut connector =
        hyper_timeout::TimeoutConnector::new(https.enable_all_versions().wrap_connector(http));
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let hyper = hyper_util::client::legacy::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_keep_alive_interval(PING_INTERVAL)
        .http2_keep_alive_timeout(PING_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .http2_initial_connection_window_size(CONNECTION_WINDOW)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn a_server_that_never_finishes_the_tls_handshake_fails_the_request_in_the_connect_timeout()
     {
        // Accepts TCP connections and never answers: the TLS handshake cannot complete.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bound");
        let addr = listener.local_addr().expect("address");
        let _silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let mut config = kube::Config::new(format!("https://{addr}").parse().expect("url"));
        config.connect_timeout = Some(Duration::from_millis(500));
        config.default_retry = false;
        let service = http2_service(&config).expect("service builds");
        let request = http::Request::get("/version")
            .body(kube::client::Body::empty())
            .expect("request");
        let answered = tokio::time::timeout(Duration::from_secs(20), service.oneshot(request))
            .await
            .expect("the connect timeout ends the request, it does not hang");
        assert!(answered.is_err(), "no answer without a handshake");
    }
}
