//! Tracing over OTLP: with `--otlp-endpoint` set, the operator's `tracing` spans become
//! OpenTelemetry spans exported over OTLP/HTTP (one trace per reconcile, rooted at kube-runtime's
//! `reconciling object` span, with child spans for apiserver requests and Prometheus queries), and
//! JSON log lines carry the trace and span IDs. Without an endpoint nothing here runs.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::dispatcher::WeakDispatch;
use tracing::{Span, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The service name spans carry unless `OTEL_SERVICE_NAME` names another.
pub const SERVICE_NAME: &str = "phoenix-operator";

/// Whether spans are exported; read by the outbound-call spans so they cost nothing when off.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// The installed subscriber, for reading a span's trace ID while formatting a log line (the
/// current dispatcher is not reachable from inside an event).
static DISPATCH: OnceLock<WeakDispatch> = OnceLock::new();

/// Whether the operator exports spans (an OTLP endpoint is configured).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The OTLP/HTTP traces URL for an endpoint given like `OTEL_EXPORTER_OTLP_ENDPOINT`: the base
/// URL with the signal path `v1/traces` appended (the OTLP exporter specification's rule for that
/// variable), e.g. `http://otel-collector:4318` → `http://otel-collector:4318/v1/traces`.
pub fn traces_url(endpoint: &str) -> String {
    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    /// The endpoint is not an http(s) URL.
    #[error(
        "--otlp-endpoint {0:?} is not an http:// or https:// URL (the OTLP/HTTP endpoint, port 4318 by default)"
    )]
    Endpoint(String),
    /// The OTLP exporter could not be built.
    #[error("the OTLP exporter for {url} could not be built: {source}")]
    Exporter {
        url: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Shuts the span exporter down when dropped (the end of `main`), flushing the spans still queued.
#[derive(Default)]
pub struct Traces {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Traces {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// A tracer provider exporting in batches to `endpoint` over OTLP/HTTP with protobuf bodies. The
/// batch processor exports from a thread of its own, so the blocking HTTP client is the one that
/// works there (the async one needs a Tokio reactor on that thread).
pub fn provider(endpoint: &str) -> Result<SdkTracerProvider, TracingError> {
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(TracingError::Endpoint(endpoint.to_string()));
    }
    let url = traces_url(endpoint);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|source| TracingError::Exporter { url, source })?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The layer turning `tracing` spans into OpenTelemetry spans of `provider`, and the guard that
/// flushes them at exit. Only spans are exported, never log events: a span carries exactly the
/// fields its code gives it (names, verbs, resources, outcomes), so no log text (which may quote
/// a user's input) leaves through traces.
pub fn layer<S>(provider: SdkTracerProvider) -> (impl Layer<S>, Traces)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let tracer = provider.tracer(SERVICE_NAME);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| meta.is_span()));
    ENABLED.store(true, Ordering::Relaxed);
    (
        layer,
        Traces {
            provider: Some(provider),
        },
    )
}

/// Remembers the installed subscriber for [`WithTraceIds`]; call once after installing it.
pub fn remember_dispatch() {
    tracing::dispatcher::get_default(|d| {
        let _ = DISPATCH.set(d.downgrade());
    });
}

/// A child span for one apiserver request, or a disabled span when tracing is off or no span is
/// current (watches and the Lease run outside reconciles: they would each start a trace).
pub fn kube_request_span(method: &http::Method, verb: &str, resource: &str) -> Span {
    if !enabled() || Span::current().is_none() {
        return Span::none();
    }
    tracing::info_span!(
        "kube.request",
        otel.name = %format!("{verb} {resource}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.response.status_code = tracing::field::Empty,
        k8s.verb = verb,
        k8s.resource = resource,
    )
}

/// Records the outcome of an apiserver request on its span: the HTTP status code, and an error
/// status for a 4xx/5xx answer or no answer (the OpenTelemetry rule for client spans).
pub fn record_kube_response(span: &Span, code: Option<u16>) {
    if span.is_none() {
        return;
    }
    if let Some(code) = code {
        span.record("http.response.status_code", i64::from(code));
    }
    if code.is_none_or(|c| c >= 400) {
        span.record("otel.status_code", "error");
    }
}

/// A child span for one Prometheus API request of `kind`, or a disabled span (as
/// [`kube_request_span`]). Neither the URL (it may hold credentials) nor the PromQL is recorded.
pub fn prometheus_query_span(kind: &'static str) -> Span {
    if !enabled() || Span::current().is_none() {
        return Span::none();
    }
    tracing::info_span!(
        "prometheus.query",
        otel.name = %format!("prometheus {kind}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        phoenix.prometheus.kind = kind,
        phoenix.prometheus.outcome = tracing::field::Empty,
    )
}

/// Records how a Prometheus request ended on its span; anything but `success` is an error.
pub fn record_prometheus_outcome(span: &Span, outcome: &str) {
    if span.is_none() {
        return;
    }
    span.record("phoenix.prometheus.outcome", outcome);
    if outcome != "success" {
        span.record("otel.status_code", "error");
    }
}

/// A JSON log line with `"trace_id"` and `"span_id"` first when the line was written inside an
/// exported span; the line as it is otherwise.
pub fn with_ids(line: &str, ids: Option<(String, String)>) -> String {
    match (ids, line.strip_prefix('{')) {
        (Some((trace, span)), Some(rest)) => {
            let sep = if rest.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            format!("{{\"trace_id\":\"{trace}\",\"span_id\":\"{span}\"{sep}{rest}")
        }
        _ => line.to_string(),
    }
}

/// The OpenTelemetry trace and span IDs of the `tracing` span `id`, when it is exported.
fn trace_ids(id: &tracing::span::Id) -> Option<(String, String)> {
    let dispatch = DISPATCH.get()?.upgrade()?;
    let cx = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// An event formatter adding the trace and span IDs to the lines another formatter (the JSON
/// one) writes, so a log line leads to its trace.
pub struct WithTraceIds<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let id = ctx.parent_span().map(|span| span.id());
        let ids = id.as_ref().and_then(trace_ids);
        writer.write_str(&with_ids(&line, ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_url_appends_the_signal_path() {
        assert_eq!(
            traces_url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otlp.example/base/"),
            "https://otlp.example/base/v1/traces"
        );
    }

    #[test]
    fn an_endpoint_that_is_not_http_is_refused() {
        for bad in ["collector:4317", "grpc://collector:4317", ""] {
            assert!(
                matches!(provider(bad), Err(TracingError::Endpoint(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn ids_lead_a_json_line_only_inside_a_span() {
        let ids = Some((
            "0af7651916cd43dd8448eb211c80319c".into(),
            "b7ad6b7169203331".into(),
        ));
        assert_eq!(
            with_ids("{\"level\":\"INFO\"}\n", ids.clone()),
            "{\"trace_id\":\"0af7651916cd43dd8448eb211c80319c\",\"span_id\":\"b7ad6b7169203331\",\"level\":\"INFO\"}\n"
        );
        assert_eq!(
            with_ids("{}\n", ids.clone()),
            "{\"trace_id\":\"0af7651916cd43dd8448eb211c80319c\",\"span_id\":\"b7ad6b7169203331\"}\n"
        );
        assert_eq!(with_ids("{\"a\":1}\n", None), "{\"a\":1}\n");
        assert_eq!(with_ids("plain text\n", ids), "plain text\n");
    }

    #[test]
    fn outbound_spans_cost_nothing_when_tracing_is_off() {
        // No exporter in unit tests: even inside a span, no child span is made.
        let _outer = tracing::info_span!("outer").entered();
        assert!(kube_request_span(&http::Method::PATCH, "patch", "pods").is_none());
        assert!(prometheus_query_span("range").is_none());
    }
}
