//! Takes one variant's measurements from Prometheus over the analysis window: thin I/O that
//! sends the queries of [`super::queries`], and the pure [`assemble`] that turns the answers into
//! per-step figures aligned on the window's step grid (the judgement is [`super::verdict`]'s).

use std::collections::{BTreeMap, BTreeSet};

use prometheus_http_query::reqwest;
use prometheus_http_query::response::{PromqlResult, RangeVector};
use regex::Regex;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::access::{self, AccessError, Prometheus};
use super::queries::{self, LabelValuesRequest, Selector, VariantSelector, what};

/// Most points one range query asks for; Prometheus refuses more than 11,000 per series, and a
/// 24h experiment at a 5s step has 17,280, so longer windows are split.
const MAX_POINTS_PER_RANGE_QUERY: usize = 10_000;

/// The analysis window `[start, end]` (Unix seconds) and its step grid.
///
/// Step `k` is evaluated at `start + range_secs + k·step_secs` (up to `end`) and counts what has
/// a sample in the `range_secs` before it, so the first step's range begins at the window start
/// and nothing from before the window counts. Both variants are measured on this same grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Start of the window, Unix seconds (running since + warmup).
    pub start: i64,
    /// End of the window, Unix seconds.
    pub end: i64,
    /// The analysis interval, whole seconds.
    pub step_secs: f64,
    /// How far back each step looks for samples, seconds: see [`Window::new`].
    pub range_secs: i64,
}

impl Window {
    /// The window `[start, end]` stepped every `step_secs` (rounded to whole seconds, at least
    /// 1), where each step looks back `max(step, 2 × collection_interval_secs)`: two collection
    /// intervals, so a scrape that arrives a little late still lands in the step, for the slower
    /// of the two variants (pass the longest collection interval of both).
    pub fn new(start: i64, end: i64, step_secs: f64, collection_interval_secs: f64) -> Window {
        let step = if step_secs.is_finite() {
            step_secs.round().max(1.0)
        } else {
            step_secs
        };
        let collection = if collection_interval_secs.is_finite() {
            collection_interval_secs.max(0.0)
        } else {
            0.0
        };
        // Validated durations (≤ 10m, ≤ 5m) keep these far from i64 limits.
        let range_secs = (2.0 * collection).ceil().max(step) as i64;
        Window {
            start,
            end,
            step_secs: step,
            range_secs,
        }
    }

    /// Length of the window in seconds.
    pub fn seconds(&self) -> i64 {
        self.end - self.start
    }

    /// The evaluation times of the steps, Unix milliseconds; empty when the window is shorter
    /// than one step's range.
    pub fn steps(&self) -> Vec<i64> {
        if !(self.step_secs.is_finite() && self.step_secs >= 1.0) {
            return Vec::new();
        }
        let step_ms = (self.step_secs * 1000.0) as i64;
        let first = (self.start + self.range_secs) * 1000;
        let last = self.end * 1000;
        (0..)
            .map(|k| first + k * step_ms)
            .take_while(|t| *t <= last)
            .collect()
    }
}

/// One variant's measurements over a window. Per-step figures are aligned on
/// [`Measurements::steps`]: `None` where Prometheus had no value for that step.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Measurements {
    /// The window's evaluation times, Unix milliseconds (the same for both variants).
    pub steps: Vec<i64>,
    /// Process series with a sample within each step's range.
    pub series: Vec<Option<f64>>,
    /// Nodes whose collector reported its own telemetry within each step's range.
    pub collectors: Vec<Option<f64>>,
    /// Collector CPU cores at each step.
    pub cpu: Vec<Option<f64>>,
    /// Collector resident memory bytes at each step.
    pub memory: Vec<Option<f64>>,
    /// The nodes (`phoenix_node`) whose collector reported its own telemetry in the window.
    pub nodes: BTreeSet<String>,
    /// What the collectors say about themselves over the window.
    pub telemetry: Telemetry,
    /// Distinct process series with a sample in the window.
    pub distinct_series: f64,
    /// Process samples stored per second over the window.
    pub datapoints_per_second: f64,
    /// Executable names with a sample in the window that match a critical pattern.
    pub critical_names: BTreeSet<String>,
    /// The critical patterns the names were filtered by.
    pub critical_patterns: Vec<String>,
    /// What was measured and the PromQL (or API request) that measured it; keys in
    /// [`queries::what`].
    pub queries: Vec<(String, String)>,
}

/// A variant's collector self-telemetry summed over the window (`None`: no such metric at all).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Telemetry {
    /// Points the `hostmetrics` receiver accepted: the collectors scraped.
    pub scraped_points: Option<f64>,
    /// Points the remote-write exporter sent: the collectors exported.
    pub exported_points: Option<f64>,
    /// Points the remote-write exporter failed to send or enqueue, plus points the receiver
    /// refused (0 when no such counter exists).
    pub failed_points: f64,
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

/// What Prometheus answered for one variant, before alignment: range-query points as
/// `(timestamp seconds, value)`, instant answers as they came.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Answers {
    /// Process series per step.
    pub series: Vec<(f64, f64)>,
    /// Nodes with collector telemetry per step.
    pub collectors: Vec<(f64, f64)>,
    /// Collector CPU cores per step.
    pub cpu: Vec<(f64, f64)>,
    /// Collector memory per step.
    pub memory: Vec<(f64, f64)>,
    /// `phoenix_node` values of the collector telemetry in the window.
    pub nodes: Vec<String>,
    /// Executable names with a sample in the window.
    pub executables: Vec<String>,
    /// See [`Telemetry`].
    pub telemetry: Telemetry,
    /// Distinct process series in the window.
    pub distinct_series: f64,
    /// Process samples per second in the window.
    pub datapoints_per_second: f64,
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
    /// credentials, a failed TLS handshake, a timeout, an answer over the size cap. Retried like
    /// `Unreachable`, so each counts against the analysis retry budget.
    #[error("{0}")]
    Access(AccessError),
}

impl MeasureError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, MeasureError::Unreachable(_) | MeasureError::Access(_))
    }
}

/// Compiles critical-process patterns (RE2 syntax, unanchored like the collector's `IsMatch`),
/// with RE2's ASCII meaning of `\d`, `\w`, `\s`, `\b` (see
/// [`collector_config::with_re2_semantics`](crate::desired::collector_config::with_re2_semantics)),
/// so a name counts as critical here exactly when the collector treats it as critical.
pub fn critical_regexes(critical: &[String]) -> Result<Vec<Regex>, MeasureError> {
    critical
        .iter()
        .map(|p| {
            Regex::new(&crate::desired::collector_config::with_re2_semantics(p))
                .map_err(|e| MeasureError::Invalid(format!("critical process pattern {p:?}: {e}")))
        })
        .collect()
}

/// Turns one variant's answers into its measurements (pure): per-step figures aligned on the
/// window's grid, critical names filtered by `patterns`, nodes deduplicated.
pub fn assemble(
    window: &Window,
    critical: &[String],
    patterns: &[Regex],
    answers: Answers,
    queries: Vec<(String, String)>,
) -> Measurements {
    let steps = window.steps();
    Measurements {
        series: align(&steps, &answers.series),
        collectors: align(&steps, &answers.collectors),
        cpu: align(&steps, &answers.cpu),
        memory: align(&steps, &answers.memory),
        steps,
        nodes: answers
            .nodes
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect(),
        telemetry: answers.telemetry,
        distinct_series: answers.distinct_series,
        datapoints_per_second: answers.datapoints_per_second,
        critical_names: answers
            .executables
            .into_iter()
            .filter(|name| patterns.iter().any(|p| p.is_match(name)))
            .collect(),
        critical_patterns: critical.to_vec(),
        queries,
    }
}

/// The value at each of `steps` (Unix milliseconds): the sum of the finite `points` whose
/// timestamp (seconds) rounds to that millisecond, `None` where there is none. Points off the
/// grid are ignored.
pub fn align(steps: &[i64], points: &[(f64, f64)]) -> Vec<Option<f64>> {
    let mut at: BTreeMap<i64, f64> = BTreeMap::new();
    for &(t, v) in points {
        if t.is_finite() && v.is_finite() {
            *at.entry((t * 1000.0).round() as i64).or_insert(0.0) += v;
        }
    }
    steps.iter().map(|t| at.get(t).copied()).collect()
}

/// Measures one variant over `window`. `critical` are regexes (RE2 syntax, unanchored like the
/// collector's `IsMatch`) on the executable name.
pub async fn measure(
    prom: &Prometheus,
    sel: &VariantSelector,
    window: &Window,
    critical: &[String],
) -> Result<Measurements, MeasureError> {
    validate(window)?;
    let patterns = critical_regexes(critical)?;
    let (start, end, seconds) = (window.start, window.end, window.seconds());
    let mut recorded = Vec::new();
    let mut record = |what: &str, query: String| recorded.push((what.to_string(), query));

    let names_request = queries::metric_names(sel, start, end);
    let mut names = label_values(prom, &names_request).await?;
    names.sort();
    names.dedup();
    record(what::METRIC_NAMES, names_request.to_string());

    let mut answers = Answers::default();
    let series_query = queries::series_per_step(sel, &names, window.range_secs);
    answers.series = range(prom, series_query.as_deref(), window).await?;
    record(what::SERIES, or_nothing(series_query));

    let collectors_query = queries::collectors_per_step(sel, window.range_secs);
    answers.collectors = range(prom, Some(&collectors_query), window).await?;
    record(what::COLLECTORS, collectors_query);

    let nodes_query = queries::collector_nodes(sel, seconds);
    answers.nodes = instant_labels(prom, Some(&nodes_query), queries::NODE_LABEL, end).await?;
    record(what::NODES, nodes_query);

    let distinct_query = queries::distinct_series(sel, &names, seconds);
    answers.distinct_series = instant_sum(prom, &distinct_query, end).await?;
    record(what::DISTINCT_SERIES, distinct_query);

    let datapoints_query = queries::datapoints_per_second(sel, &names, seconds);
    answers.datapoints_per_second = instant_sum(prom, &datapoints_query, end).await?;
    record(what::DATAPOINTS_PER_SECOND, datapoints_query);

    let cpu_query = queries::collector_cpu(sel, window.step_secs);
    answers.cpu = range(prom, Some(&cpu_query), window).await?;
    record(what::COLLECTOR_CPU, cpu_query);

    let memory_query = queries::collector_memory(sel);
    answers.memory = range(prom, Some(&memory_query), window).await?;
    record(what::COLLECTOR_MEMORY, memory_query);

    let scraped_query = queries::scraped_points(sel, seconds);
    let exported_query = queries::exported_points(sel, seconds);
    let failed_query = queries::failed_points(sel, seconds);
    answers.telemetry = Telemetry {
        scraped_points: instant_optional(prom, &scraped_query, end).await?,
        exported_points: instant_optional(prom, &exported_query, end).await?,
        failed_points: instant_sum(prom, &failed_query, end).await?,
    };
    record(what::SCRAPED_POINTS, scraped_query);
    record(what::EXPORTED_POINTS, exported_query);
    record(what::FAILED_POINTS, failed_query);

    let executables_query = queries::executables_in_window(sel, &names, seconds);
    answers.executables = instant_labels(
        prom,
        executables_query.as_deref(),
        queries::EXECUTABLE_LABEL,
        end,
    )
    .await?;
    record(what::CRITICAL_PROCESSES, or_nothing(executables_query));

    Ok(assemble(window, critical, &patterns, answers, recorded))
}

/// The `k` executable names of `sel` using the most CPU over `window`, heaviest first (ties by
/// name), for the `topk` template.
pub async fn topk_names(
    prom: &Prometheus,
    sel: &impl Selector,
    k: u32,
    window: &Window,
) -> Result<Vec<String>, MeasureError> {
    topk_names_matching(prom, &sel.matchers(), k, window).await
}

/// [`topk_names`] over the series matching `matchers` (see [`queries::exact_matchers`]).
pub async fn topk_names_matching(
    prom: &Prometheus,
    matchers: &str,
    k: u32,
    window: &Window,
) -> Result<Vec<String>, MeasureError> {
    validate_bounds(window)?;
    if k == 0 {
        return Ok(Vec::new());
    }
    let query = queries::topk_by_cpu_matching(matchers, k, window.seconds());
    let result = observed(
        "instant",
        promql(
            prom,
            prom.client().query(&query).at(window.end).post_raw(),
            &query,
        ),
    )
    .await?;
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

/// The process metric names of the series under `sel` with samples in `[start, end]` (label
/// values of `__name__`), sorted.
pub async fn process_metric_names(
    prom: &Prometheus,
    sel: &impl Selector,
    start: i64,
    end: i64,
) -> Result<Vec<String>, MeasureError> {
    let mut names = label_values(prom, &queries::metric_names(sel, start, end)).await?;
    names.sort();
    names.dedup();
    Ok(names)
}

/// One series of a range query's answer: its labels (`__name__` included when the query keeps
/// it) and its points `(timestamp seconds, value)`.
pub type LabelledSeries = (BTreeMap<String, String>, Vec<(f64, f64)>);

/// Every series of a range query over the window's step grid, with its labels (split like the
/// analysis' own range queries when the grid is long).
pub async fn range_series(
    prom: &Prometheus,
    query: &str,
    window: &Window,
) -> Result<Vec<LabelledSeries>, MeasureError> {
    validate(window)?;
    let mut out: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
    for_each_range_series(prom, query, window, |series| {
        let labels: BTreeMap<String, String> = series
            .metric()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.entry(labels).or_default().extend(points_of(series));
    })
    .await?;
    Ok(out.into_iter().collect())
}

/// Whether Prometheus answers queries (a `vector(1)` query, which also works behind
/// Prometheus-compatible APIs without `/-/ready`).
pub async fn reachable(prom: &Prometheus) -> bool {
    let probe = "vector(1)";
    observed(
        "probe",
        promql(prom, prom.client().query(probe).get_raw(), probe),
    )
    .await
    .is_ok()
}

/// The query recorded for a measurement that needed none.
fn or_nothing(query: Option<String>) -> String {
    query.unwrap_or_else(|| "(none: the variant wrote no process metric)".to_string())
}

fn validate(window: &Window) -> Result<(), MeasureError> {
    validate_bounds(window)?;
    if window.steps().is_empty() {
        return Err(MeasureError::Invalid(format!(
            "analysis window [{}, {}] is shorter than one step's range of {}s",
            window.start, window.end, window.range_secs
        )));
    }
    Ok(())
}

fn validate_bounds(window: &Window) -> Result<(), MeasureError> {
    let step_ok = window.step_secs.is_finite() && window.step_secs > 0.0;
    if window.end <= window.start || !step_ok {
        return Err(MeasureError::Invalid(format!(
            "empty analysis window [{}, {}] step {}s",
            window.start, window.end, window.step_secs
        )));
    }
    Ok(())
}

/// Points `(timestamp seconds, value)` of a range query over the window's step grid, split into
/// several queries when the grid has more steps than one query may return. `None` query: no
/// points (the variant wrote no process metric at all).
async fn range(
    prom: &Prometheus,
    query: Option<&str>,
    window: &Window,
) -> Result<Vec<(f64, f64)>, MeasureError> {
    let Some(query) = query else {
        return Ok(Vec::new());
    };
    let mut points = Vec::new();
    for_each_range_series(prom, query, window, |series| {
        points.extend(points_of(series))
    })
    .await?;
    Ok(points)
}

/// Runs `query` over the window's step grid, split into several range queries when the grid has
/// more steps than one query may return, and hands every series of every answer to `each`.
async fn for_each_range_series(
    prom: &Prometheus,
    query: &str,
    window: &Window,
    mut each: impl FnMut(&RangeVector),
) -> Result<(), MeasureError> {
    for chunk in window.steps().chunks(MAX_POINTS_PER_RANGE_QUERY) {
        let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
            continue;
        };
        // Grid times are whole seconds (whole-second start, range and step).
        let sent = prom
            .client()
            .query_range(query, first / 1000, last / 1000, window.step_secs)
            .post_raw();
        let result = observed("range", promql(prom, sent, query)).await?;
        let matrix = result
            .data()
            .as_matrix()
            .ok_or_else(|| bad_shape(query, "a range vector"))?;
        matrix.iter().for_each(&mut each);
    }
    Ok(())
}

/// A range series' points `(timestamp seconds, value)`.
fn points_of(series: &RangeVector) -> impl Iterator<Item = (f64, f64)> + '_ {
    series.samples().iter().map(|s| (s.timestamp(), s.value()))
}

/// The values of `label` in an instant query's answer at `time` (empty values dropped).
async fn instant_labels(
    prom: &Prometheus,
    query: Option<&str>,
    label: &str,
    time: i64,
) -> Result<Vec<String>, MeasureError> {
    let Some(query) = query else {
        return Ok(Vec::new());
    };
    let sent = prom.client().query(query).at(time).post_raw();
    let result = observed("instant", promql(prom, sent, query)).await?;
    let vector = result
        .data()
        .as_vector()
        .ok_or_else(|| bad_shape(query, "an instant vector"))?;
    Ok(vector
        .iter()
        .filter_map(|v| v.metric().get(label).filter(|l| !l.is_empty()).cloned())
        .collect())
}

/// The sum of an instant query's finite values at `time`, `None` when it returned nothing.
pub async fn instant_optional(
    prom: &Prometheus,
    query: &str,
    time: i64,
) -> Result<Option<f64>, MeasureError> {
    let sent = prom.client().query(query).at(time).post_raw();
    let result = observed("instant", promql(prom, sent, query)).await?;
    let vector = result
        .data()
        .as_vector()
        .ok_or_else(|| bad_shape(query, "an instant vector"))?;
    let values: Vec<f64> = vector
        .iter()
        .map(|v| v.sample().value())
        .filter(|v| v.is_finite())
        .collect();
    Ok((!values.is_empty()).then(|| values.iter().sum()))
}

/// The sum of an instant query's finite values at `time`; an empty result is 0.
async fn instant_sum(prom: &Prometheus, query: &str, time: i64) -> Result<f64, MeasureError> {
    Ok(instant_optional(prom, query, time).await?.unwrap_or(0.0))
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
    prom: &Prometheus,
    request: &LabelValuesRequest,
) -> Result<Vec<String>, MeasureError> {
    observed("label_values", label_values_unobserved(prom, request)).await
}

async fn label_values_unobserved(
    prom: &Prometheus,
    request: &LabelValuesRequest,
) -> Result<Vec<String>, MeasureError> {
    let mut url = prom.client().base_url().clone();
    let path = format!("{}/{}", url.path().trim_end_matches('/'), request.path());
    url.set_path(&path);
    let response = prom
        .client()
        .inner()
        .get(url)
        .query(&request.params())
        .send()
        .await
        .map_err(|e| classify_reqwest(&e, error_chain(&e)))?;
    decode(response, prom.max_response_bytes(), &request.to_string()).await
}

/// Sends one PromQL request and reads its answer under the client's size cap.
async fn promql(
    prom: &Prometheus,
    sent: impl Future<Output = Result<reqwest::Response, prometheus_http_query::Error>>,
    request: &str,
) -> Result<PromqlResult, MeasureError> {
    let response = sent.await.map_err(classify)?;
    decode(response, prom.max_response_bytes(), request).await
}

/// Reads an API answer of at most `max` bytes and decodes its `data`: refused credentials are
/// named, an overloaded Prometheus (5xx, 429) is worth retrying, an answer over the cap is
/// refused while it streams in (`PrometheusResponseTooLarge`, retried like a timeout).
async fn decode<T: DeserializeOwned>(
    response: reqwest::Response,
    max: u64,
    request: &str,
) -> Result<T, MeasureError> {
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
    let body = access::read_capped(response, max)
        .await
        .map_err(|e| match e {
            AccessError::Other(m) | AccessError::Unreachable(m) => {
                MeasureError::Unreachable(format!("{request}: {m}"))
            }
            named => MeasureError::Access(named),
        })?;
    let parsed: ApiResponse<T> = serde_json::from_slice(&body).map_err(|e| {
        MeasureError::BadResponse(format!("{request}: HTTP {status}, undecodable body: {e}"))
    })?;
    match (parsed.status.as_str(), parsed.data) {
        ("success", Some(data)) => Ok(data),
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

/// Times one Prometheus request of `kind` into `phoenix_prometheus_query_duration_seconds`,
/// labelled with its outcome.
async fn observed<T>(
    kind: &'static str,
    request: impl Future<Output = Result<T, MeasureError>>,
) -> Result<T, MeasureError> {
    crate::telemetry::outbound::observe_prometheus(
        kind,
        |result| match result {
            Ok(_) => "success",
            Err(MeasureError::Unreachable(_)) => "unreachable",
            Err(MeasureError::Access(_)) => "access_error",
            Err(_) => "bad_response",
        },
        request,
    )
    .await
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
