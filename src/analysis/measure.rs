//! Takes one variant's measurements from Prometheus over the analysis window (thin: the queries
//! come from [`super::queries`], the judgement is [`super::verdict`]'s).

use std::collections::BTreeSet;

use prometheus_http_query::{Client, reqwest};
use regex::Regex;
use serde::Deserialize;

use super::access::{self, AccessError};
use super::queries::{self, LabelValuesRequest, VariantSelector, what};

/// Most points one range query asks for; Prometheus refuses more than 11,000 per series, and a
/// 24h experiment at a 5s step has 17,280, so longer windows are split.
const MAX_POINTS_PER_RANGE_QUERY: i64 = 10_000;

/// The analysis window: `[start, end]` in Unix seconds, evaluated every `step_secs`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// First evaluation time, Unix seconds (running since + warmup).
    pub start: i64,
    /// Last evaluation time, Unix seconds.
    pub end: i64,
    /// The analysis interval, seconds.
    pub step_secs: f64,
}

impl Window {
    /// Length of the window in seconds.
    pub fn seconds(&self) -> i64 {
        self.end - self.start
    }
}

/// One variant's measurements over a window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Measurements {
    /// Active process series at each step that had any (steps without data are absent).
    pub per_step_series: Vec<f64>,
    /// Distinct process series with a sample in the window.
    pub distinct_series: f64,
    /// Process samples stored per second over the window.
    pub datapoints_per_second: f64,
    /// Collector CPU cores at each step with data.
    pub per_step_cpu: Vec<f64>,
    /// Collector resident memory bytes at each step with data.
    pub per_step_memory: Vec<f64>,
    /// Executable names seen in the window that match a critical pattern.
    pub critical_names: BTreeSet<String>,
    /// The critical patterns the names were filtered by.
    pub critical_patterns: Vec<String>,
    /// What was measured and the PromQL (or API request) that measured it; keys in
    /// [`queries::what`].
    pub queries: Vec<(String, String)>,
}

impl Measurements {
    /// The recorded query for `what`, if any.
    pub fn query(&self, what: &str) -> Option<&str> {
        self.queries
            .iter()
            .find(|(w, _)| w == what)
            .map(|(_, q)| q.as_str())
    }
}

/// Why a measurement could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// Prometheus could not be reached or is temporarily failing (connection refused, timeout,
    /// HTTP 5xx or 429, `unavailable`/`timeout` errors). Retry with backoff.
    #[error("Prometheus unreachable: {0}")]
    Unreachable(String),
    /// Prometheus answered, but not with what was asked (bad query, unexpected shape).
    #[error("unexpected Prometheus response: {0}")]
    BadResponse(String),
    /// The request itself is wrong (empty window, invalid critical pattern); retrying won't help.
    #[error("invalid measurement request: {0}")]
    Invalid(String),
    /// Prometheus could not be used for a reason a person must fix or wait out: refused
    /// credentials, a failed TLS handshake, a timeout. Retried like `Unreachable`.
    #[error("{0}")]
    Access(AccessError),
}

impl MeasureError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, MeasureError::Unreachable(_) | MeasureError::Access(_))
    }
}

/// Measures one variant over `window`. `critical` are regexes (RE2 syntax, unanchored like the
/// collector's `IsMatch`) on the executable name.
pub async fn measure(
    prom: &Client,
    sel: &VariantSelector,
    window: &Window,
    critical: &[String],
) -> Result<Measurements, MeasureError> {
    validate(window)?;
    let patterns = critical
        .iter()
        .map(|p| {
            Regex::new(p)
                .map_err(|e| MeasureError::Invalid(format!("critical process pattern {p:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (start, end, seconds) = (window.start, window.end, window.seconds());
    let mut recorded = Vec::new();
    let mut record = |what: &str, query: String| recorded.push((what.to_string(), query));

    let series_query = queries::active_series(sel);
    let per_step_series = range(prom, &series_query, window).await?;
    record(what::SERIES, series_query);

    let names_request = queries::metric_names(sel, start, end);
    let mut names = label_values(prom, &names_request).await?;
    names.sort();
    names.dedup();
    record(what::METRIC_NAMES, names_request.to_string());

    let distinct_query = queries::distinct_series(sel, &names, seconds);
    let distinct_series = instant_sum(prom, &distinct_query, end).await?;
    record(what::DISTINCT_SERIES, distinct_query);

    let datapoints_query = queries::datapoints_per_second(sel, &names, seconds);
    let datapoints_per_second = instant_sum(prom, &datapoints_query, end).await?;
    record(what::DATAPOINTS_PER_SECOND, datapoints_query);

    let cpu_query = queries::collector_cpu(sel, window.step_secs);
    let per_step_cpu = range(prom, &cpu_query, window).await?;
    record(what::COLLECTOR_CPU, cpu_query);

    let memory_query = queries::collector_memory(sel);
    let per_step_memory = range(prom, &memory_query, window).await?;
    record(what::COLLECTOR_MEMORY, memory_query);

    let executables_request = queries::executable_names(sel, start, end);
    let critical_names = label_values(prom, &executables_request)
        .await?
        .into_iter()
        .filter(|name| patterns.iter().any(|p| p.is_match(name)))
        .collect();
    record(what::CRITICAL_PROCESSES, executables_request.to_string());

    Ok(Measurements {
        per_step_series,
        distinct_series,
        datapoints_per_second,
        per_step_cpu,
        per_step_memory,
        critical_names,
        critical_patterns: critical.to_vec(),
        queries: recorded,
    })
}

/// The `k` executable names of `sel` using the most CPU over `window`, heaviest first (ties by
/// name), for the `topk` template.
pub async fn topk_names(
    prom: &Client,
    sel: &VariantSelector,
    k: u32,
    window: &Window,
) -> Result<Vec<String>, MeasureError> {
    validate(window)?;
    if k == 0 {
        return Ok(Vec::new());
    }
    let query = queries::topk_by_cpu(sel, k, window.seconds());
    let result = prom
        .query(&query)
        .at(window.end)
        .post()
        .await
        .map_err(classify)?;
    let vector = result
        .data()
        .as_vector()
        .ok_or_else(|| bad_shape(&query, "an instant vector"))?;
    let mut ranked: Vec<(f64, String)> = vector
        .iter()
        .filter(|v| v.sample().value().is_finite())
        .filter_map(|v| {
            let name = v.metric().get(queries::EXECUTABLE_LABEL)?;
            (!name.is_empty()).then(|| (v.sample().value(), name.clone()))
        })
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Ok(ranked.into_iter().map(|(_, name)| name).collect())
}

/// Whether Prometheus answers queries (a `vector(1)` query, which also works behind
/// Prometheus-compatible APIs without `/-/ready`).
pub async fn reachable(prom: &Client) -> bool {
    prom.query("vector(1)").get().await.is_ok()
}

fn validate(window: &Window) -> Result<(), MeasureError> {
    let step_ok = window.step_secs.is_finite() && window.step_secs > 0.0;
    if window.end <= window.start || !step_ok {
        return Err(MeasureError::Invalid(format!(
            "empty analysis window [{}, {}] step {}s",
            window.start, window.end, window.step_secs
        )));
    }
    Ok(())
}

/// Values of a range query over the window, in time order, non-finite values dropped. Split into
/// several queries when the window has more steps than one query may return.
async fn range(prom: &Client, query: &str, window: &Window) -> Result<Vec<f64>, MeasureError> {
    let step = window.step_secs;
    // Whole seconds per chunk; a fractional step may shift later chunks' steps by under a second.
    let span = (((MAX_POINTS_PER_RANGE_QUERY - 1) as f64) * step).floor() as i64;
    let advance = (step.ceil() as i64).max(1);
    let mut values = Vec::new();
    let mut from = window.start;
    while from <= window.end {
        let to = (from + span).min(window.end);
        let result = prom
            .query_range(query, from, to, step)
            .post()
            .await
            .map_err(classify)?;
        let matrix = result
            .data()
            .as_matrix()
            .ok_or_else(|| bad_shape(query, "a range vector"))?;
        let mut points: Vec<(f64, f64)> = matrix
            .iter()
            .flat_map(|series| series.samples())
            .map(|s| (s.timestamp(), s.value()))
            .filter(|(_, v)| v.is_finite())
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        values.extend(points.into_iter().map(|(_, v)| v));
        from = to + advance;
    }
    Ok(values)
}

/// The sum of an instant query's values at `time` (the queries here return one element; an
/// empty result is 0).
async fn instant_sum(prom: &Client, query: &str, time: i64) -> Result<f64, MeasureError> {
    let result = prom.query(query).at(time).post().await.map_err(classify)?;
    let vector = result
        .data()
        .as_vector()
        .ok_or_else(|| bad_shape(query, "an instant vector"))?;
    let sum: f64 = vector.iter().map(|v| v.sample().value()).sum();
    if sum.is_finite() {
        Ok(sum)
    } else {
        Err(MeasureError::BadResponse(format!(
            "{query} returned a non-finite value"
        )))
    }
}

/// The body of every Prometheus API answer.
#[derive(Deserialize)]
struct ApiResponse<T> {
    status: String,
    data: Option<T>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

/// Sends a label-values request. Not through the client's own builder, which takes only its
/// structured `Selector` (unescaped); this sends the exact `match[]` string built and tested in
/// [`queries`].
async fn label_values(
    prom: &Client,
    request: &LabelValuesRequest,
) -> Result<Vec<String>, MeasureError> {
    let mut url = prom.base_url().clone();
    let path = format!("{}/{}", url.path().trim_end_matches('/'), request.path());
    url.set_path(&path);
    let response = prom
        .inner()
        .get(url)
        .query(&request.params())
        .send()
        .await
        .map_err(|e| classify_reqwest(&e, error_chain(&e)))?;
    let status = response.status();
    if matches!(status.as_u16(), 401 | 403) {
        return Err(MeasureError::Access(AccessError::Unauthorized {
            status: status.as_u16(),
        }));
    }
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(MeasureError::Unreachable(format!(
            "{request}: HTTP {status}"
        )));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| classify_reqwest(&e, error_chain(&e)))?;
    let parsed: ApiResponse<Vec<String>> = serde_json::from_slice(&body).map_err(|e| {
        MeasureError::BadResponse(format!("{request}: HTTP {status}, undecodable body: {e}"))
    })?;
    match (parsed.status.as_str(), parsed.data) {
        ("success", Some(values)) => Ok(values),
        _ => {
            let kind = parsed.error_type.unwrap_or_default();
            let message = format!(
                "{request}: {kind}: {}",
                parsed.error.unwrap_or_else(|| format!("HTTP {status}"))
            );
            Err(if transient_error_type(&kind) {
                MeasureError::Unreachable(message)
            } else {
                MeasureError::BadResponse(message)
            })
        }
    }
}

/// Sorts a client error into retry-later or give-up; credentials, TLS and timeouts are named.
fn classify(error: prometheus_http_query::Error) -> MeasureError {
    let access = access::classify(&error);
    if matches!(
        access,
        AccessError::Unauthorized { .. } | AccessError::Tls(_) | AccessError::Timeout
    ) {
        return MeasureError::Access(access);
    }
    let message = error_chain(&error);
    match &error {
        prometheus_http_query::Error::Client(client) => match client.inner() {
            Some(inner) => classify_reqwest(inner, message),
            None => MeasureError::BadResponse(message),
        },
        prometheus_http_query::Error::Prometheus(e) => {
            if transient_error_type(&e.error_type().to_string()) {
                MeasureError::Unreachable(message)
            } else {
                MeasureError::BadResponse(message)
            }
        }
        _ => MeasureError::BadResponse(message),
    }
}

fn classify_reqwest(error: &reqwest::Error, message: String) -> MeasureError {
    let access = access::classify_reqwest(error);
    if matches!(
        access,
        AccessError::Unauthorized { .. } | AccessError::Tls(_) | AccessError::Timeout
    ) {
        return MeasureError::Access(access);
    }
    let transient_status = error
        .status()
        .is_some_and(|s| s.is_server_error() || s == reqwest::StatusCode::TOO_MANY_REQUESTS);
    if error.is_connect()
        || error.is_timeout()
        || error.is_request()
        || error.is_body()
        || transient_status
    {
        MeasureError::Unreachable(message)
    } else {
        MeasureError::BadResponse(message)
    }
}

/// Prometheus API error types worth retrying.
fn transient_error_type(kind: &str) -> bool {
    matches!(kind, "timeout" | "canceled" | "unavailable" | "internal")
}

fn bad_shape(query: &str, expected: &str) -> MeasureError {
    MeasureError::BadResponse(format!("{query} did not return {expected}"))
}

/// An error and its sources, `outer: inner: …` (reqwest hides "connection refused" two levels
/// down).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
