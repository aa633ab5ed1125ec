//! Metrics of the operator's outbound calls: every apiserver request (a tower layer on the kube
//! client's service stack) and every Prometheus query (timed at the call sites in
//! `crate::analysis::measure` through [`observe_prometheus`]).

use std::future::Future;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use http::{Method, Request, Response, Uri};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tower::{Layer, Service};
use tracing::Instrument;

use super::traces;

/// Labels of one apiserver request: the Kubernetes verb, the resource (plural, with the
/// subresource after a `/`, e.g. `experiments/status`) and the HTTP status code (`error` when no
/// response arrived).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubeRequestLabels {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// The resource the URL names, e.g. `pods` or `experiments/status`; `other` for discovery.
    pub resource: String,
    /// The HTTP status code, or `error` for a transport failure.
    pub code: String,
}

/// Labels of one Prometheus API request: what kind of request and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrometheusQueryLabels {
    /// `instant`, `range`, `label_values` or `probe`.
    pub kind: String,
    /// `success`, `unreachable` (connection refused, 5xx/429), `access_error` (credentials,
    /// TLS, timeout) or `bad_response`.
    pub outcome: String,
}

/// The outbound-call metric families. One set per process ([`outbound`]), registered into every
/// [`super::Metrics`] registry, because the Prometheus call sites take no metrics handle.
#[derive(Clone)]
pub struct Outbound {
    /// `phoenix_kube_request_duration_seconds`: apiserver request latency (to the response
    /// headers; for a watch, until the stream opens) by verb, resource and code. Its `_count` is
    /// the request counter.
    pub kube_requests: Family<KubeRequestLabels, Histogram>,
    /// `phoenix_prometheus_query_duration_seconds`: Prometheus API request latency by kind and
    /// outcome. Its `_count` is the query counter.
    pub prometheus_queries: Family<PrometheusQueryLabels, Histogram>,
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound {
            // 1 ms … 16 s.
            kube_requests: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 15))
            }),
            // 5 ms … 41 s.
            prometheus_queries: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
        }
    }
}

/// This process's outbound-call metrics.
pub fn outbound() -> &'static Outbound {
    static OUTBOUND: LazyLock<Outbound> = LazyLock::new(Outbound::default);
    &OUTBOUND
}

/// The Kubernetes verb and resource of an apiserver request, read from its method and URL.
pub fn kube_verb_and_resource(method: &Method, uri: &Uri) -> (&'static str, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/… (core) or /apis/<group>/<version>/…
    let rest = match segments.first() {
        Some(&"api") if segments.len() > 2 => &segments[2..],
        Some(&"apis") if segments.len() > 3 => &segments[3..],
        _ => &[][..],
    };
    // namespaces/<ns>/<resource>/… is namespaced; namespaces[/<name>] is the Namespace itself.
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, named) = match rest {
        [] => ("other".to_string(), false),
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
    };
    let watching = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match *method {
        Method::GET if watching => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    (verb, resource)
}

/// A tower layer timing every request of the service it wraps into
/// [`Outbound::kube_requests`]; added to the kube client with `ClientBuilder::with_layer`.
#[derive(Clone)]
pub struct KubeMetricsLayer {
    family: Family<KubeRequestLabels, Histogram>,
}

impl KubeMetricsLayer {
    /// A layer recording into `family`.
    pub fn new(family: Family<KubeRequestLabels, Histogram>) -> Self {
        KubeMetricsLayer { family }
    }
}

impl Default for KubeMetricsLayer {
    /// A layer recording into this process's [`outbound`] metrics.
    fn default() -> Self {
        KubeMetricsLayer::new(outbound().kube_requests.clone())
    }
}

impl<S> Layer<S> for KubeMetricsLayer {
    type Service = KubeMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        KubeMetrics {
            inner,
            family: self.family.clone(),
        }
    }
}

/// The service [`KubeMetricsLayer`] wraps around the kube client's stack.
#[derive(Clone)]
pub struct KubeMetrics<S> {
    inner: S,
    family: Family<KubeRequestLabels, Histogram>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for KubeMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (verb, resource) = kube_verb_and_resource(request.method(), request.uri());
        let span = traces::kube_request_span(request.method(), verb, &resource);
        let family = self.family.clone();
        let start = Instant::now();
        let response = span.in_scope(|| self.inner.call(request));
        let request_span = span.clone();
        Box::pin(async move {
            let result = response.instrument(request_span).await;
            let status = result.as_ref().ok().map(|r| r.status().as_u16());
            traces::record_kube_response(&span, status);
            let code = match status {
                Some(status) => status.to_string(),
                None => "error".to_string(),
            };
            family
                .get_or_create(&KubeRequestLabels {
                    verb: verb.to_string(),
                    resource,
                    code,
                })
                .observe(start.elapsed().as_secs_f64());
            result
        })
    }
}

/// Times one Prometheus API request of `kind` into [`Outbound::prometheus_queries`], labelled with
/// the `outcome` the caller reads from its result.
pub async fn observe_prometheus<T, E>(
    kind: &'static str,
    outcome: impl FnOnce(&Result<T, E>) -> &'static str,
    request: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let span = traces::prometheus_query_span(kind);
    let start = Instant::now();
    let result = request.instrument(span.clone()).await;
    let outcome = outcome(&result);
    traces::record_prometheus_outcome(&span, outcome);
    outbound()
        .prometheus_queries
        .get_or_create(&PrometheusQueryLabels {
            kind: kind.to_string(),
            outcome: outcome.to_string(),
        })
        .observe(start.elapsed().as_secs_f64());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(method: Method, uri: &str) -> (&'static str, String) {
        let uri: Uri = uri.parse().expect("valid URI");
        kube_verb_and_resource(&method, &uri)
    }

    #[test]
    fn verbs_and_resources_come_from_the_url() {
        let cases = [
            (Method::GET, "/api/v1/namespaces/a/pods", "list", "pods"),
            (Method::GET, "/api/v1/namespaces/a/pods/p", "get", "pods"),
            (
                Method::GET,
                "/api/v1/namespaces/a/pods?watch=true&resourceVersion=1",
                "watch",
                "pods",
            ),
            (Method::GET, "/api/v1/nodes", "list", "nodes"),
            (Method::GET, "/api/v1/namespaces", "list", "namespaces"),
            (
                Method::DELETE,
                "/api/v1/namespaces/a",
                "delete",
                "namespaces",
            ),
            (
                Method::PATCH,
                "/apis/phoenix.io/v1alpha1/namespaces/a/experiments/e/status?fieldManager=x",
                "patch",
                "experiments/status",
            ),
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/a/events",
                "create",
                "events",
            ),
            (
                Method::DELETE,
                "/apis/apps/v1/namespaces/a/daemonsets",
                "deletecollection",
                "daemonsets",
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/l",
                "update",
                "leases",
            ),
            (Method::GET, "/apis/phoenix.io/v1alpha1", "list", "other"),
            (Method::GET, "/version", "list", "other"),
        ];
        for (method, uri, verb, resource) in cases {
            assert_eq!(classify(method, uri), (verb, resource.to_string()), "{uri}");
        }
    }

    #[tokio::test]
    async fn the_layer_records_each_request_with_its_code() {
        use tower::ServiceExt;
        let family = Family::<KubeRequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        let inner = tower::service_fn(|req: Request<()>| async move {
            let status = if req.uri().path().ends_with("/missing") {
                404
            } else {
                200
            };
            Response::builder()
                .status(status)
                .body(())
                .map_err(|e| e.to_string())
        });
        let service = KubeMetricsLayer::new(family.clone()).layer(inner);
        for path in [
            "/api/v1/namespaces/a/configmaps/missing",
            "/api/v1/namespaces/a/configmaps/present",
            "/api/v1/namespaces/a/configmaps/missing",
        ] {
            let request = Request::get(path).body(()).expect("request");
            let _ = service.clone().oneshot(request).await;
        }
        let text = encoded("kube_request_duration_seconds", family);
        assert!(
            text.contains(
                "phoenix_kube_request_duration_seconds_count{verb=\"get\",resource=\"configmaps\",code=\"404\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "phoenix_kube_request_duration_seconds_count{verb=\"get\",resource=\"configmaps\",code=\"200\"} 1"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn prometheus_queries_are_counted_by_kind_and_outcome() {
        let outcome = |r: &Result<u8, u8>| if r.is_ok() { "success" } else { "unreachable" };
        let failed = observe_prometheus("unit_test", outcome, async { Err::<u8, u8>(1) }).await;
        assert_eq!(failed, Err(1));
        let _ = observe_prometheus("unit_test", outcome, async { Ok::<u8, u8>(2) }).await;
        let _ = observe_prometheus("unit_test", outcome, async { Ok::<u8, u8>(3) }).await;
        let text = encoded(
            "prometheus_query_duration_seconds",
            outbound().prometheus_queries.clone(),
        );
        for expected in [
            "phoenix_prometheus_query_duration_seconds_count{kind=\"unit_test\",outcome=\"unreachable\"} 1",
            "phoenix_prometheus_query_duration_seconds_count{kind=\"unit_test\",outcome=\"success\"} 2",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
    }

    /// `family` in the text format, registered as `phoenix_<name>`.
    fn encoded<S, M>(name: &str, family: Family<S, M>) -> String
    where
        Family<S, M>: prometheus_client::registry::Metric,
    {
        let mut registry = prometheus_client::registry::Registry::with_prefix("phoenix");
        registry.register(name, "test", family);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        text
    }
}
