//! The PromQL and Prometheus API requests behind an Experiment's measurements (pure builders).
//!
//! Everything here only renders strings; [`super::measure`] sends them. The metric contract
//! (DESIGN §3): process metrics are named `process_*` and carry `process_executable_name`; every
//! series a variant's collector writes carries `phoenix_experiment="<namespace>/<name>"` and
//! `phoenix_variant`, and so does the collector's own telemetry ([`COLLECTOR_CPU_METRIC`],
//! [`COLLECTOR_MEMORY_METRIC`]).
//!
//! Prometheus 2.x `*_over_time` functions drop the metric name, so a range function over
//! `{__name__=~"process_.*"}` fails with "vector cannot contain metrics with the same labelset"
//! as soon as two metrics share their other labels. The window-wide measurements therefore take
//! the metric names first (label values of `__name__`) and add one term per name.

use std::fmt::Write as _;

/// Regex over `__name__` selecting the process metrics (the name set is data, not code).
pub const PROCESS_METRICS_REGEX: &str = "process_.*";
/// The process CPU counter the top-K ranking uses (hostmetrics `process.cpu.time`, seconds).
pub const PROCESS_CPU_METRIC: &str = "process_cpu_time_seconds_total";
/// The label holding a process's executable name.
pub const EXECUTABLE_LABEL: &str = "process_executable_name";
/// The label naming the experiment, `<namespace>/<name>`.
pub const EXPERIMENT_LABEL: &str = "phoenix_experiment";
/// The label naming the variant, `baseline` or `candidate`.
pub const VARIANT_LABEL: &str = "phoenix_variant";
/// The collector's own CPU counter, seconds (its `process_cpu_seconds` self-metric as written by
/// the `prometheusremotewrite` exporter). The only place this name is spelled.
pub const COLLECTOR_CPU_METRIC: &str = "otelcol_process_cpu_seconds_total";
/// The collector's own resident memory gauge, bytes (its `process_memory_rss` self-metric). The
/// only place this name is spelled.
pub const COLLECTOR_MEMORY_METRIC: &str = "otelcol_process_memory_rss_bytes";
/// The label naming the node a collector runs on.
pub const NODE_LABEL: &str = "phoenix_node";
/// The id of the process-metrics receiver in every rendered collector config.
pub const SCRAPE_RECEIVER: &str = "hostmetrics";
/// The id of the remote-write exporter in every rendered collector config.
pub const REMOTE_WRITE_EXPORTER: &str = "prometheusremotewrite";
/// Points a receiver accepted (the collector's `otelcol_receiver_accepted_metric_points`
/// counter as the remote-write exporter names it), label `receiver`.
pub const ACCEPTED_POINTS_METRIC: &str = "otelcol_receiver_accepted_metric_points_total";
/// Points a receiver refused (e.g. the memory limiter pushed back), label `receiver`.
pub const REFUSED_POINTS_METRIC: &str = "otelcol_receiver_refused_metric_points_total";
/// Points an exporter sent, label `exporter`.
pub const SENT_POINTS_METRIC: &str = "otelcol_exporter_sent_metric_points_total";
/// Points an exporter failed to send (e.g. Prometheus rejected them), label `exporter`.
pub const SEND_FAILED_POINTS_METRIC: &str = "otelcol_exporter_send_failed_metric_points_total";
/// Points an exporter could not queue (queue full), label `exporter`.
pub const ENQUEUE_FAILED_POINTS_METRIC: &str =
    "otelcol_exporter_enqueue_failed_metric_points_total";
/// Shortest range `rate()` gets for the collector CPU, seconds: the collector's self-telemetry
/// may arrive less often than the analysis step, and `rate()` needs two samples in its range.
pub const MIN_RATE_RANGE_SECS: i64 = 60;

/// Keys of [`super::measure::Measurements::queries`]: what each recorded query measured. They
/// are the field names of `VariantResults` where one exists.
pub mod what {
    /// Process series with a sample in each step's range (range query).
    pub const SERIES: &str = "series";
    /// Nodes whose collector reported itself in each step's range (range query).
    pub const COLLECTORS: &str = "collectors";
    /// Nodes whose collector reported itself in the window (instant query at the window's end).
    pub const NODES: &str = "nodes";
    /// Points the process receiver accepted in the window.
    pub const SCRAPED_POINTS: &str = "scrapedPoints";
    /// Points the remote-write exporter sent in the window.
    pub const EXPORTED_POINTS: &str = "exportedPoints";
    /// Points that failed to reach Prometheus or were refused in the window.
    pub const FAILED_POINTS: &str = "failedPoints";
    /// The process metric names present in the window (label values of `__name__`).
    pub const METRIC_NAMES: &str = "metricNames";
    /// Distinct process series over the window (instant query at the window's end).
    pub const DISTINCT_SERIES: &str = "distinctSeries";
    /// Process samples per second over the window (instant query at the window's end).
    pub const DATAPOINTS_PER_SECOND: &str = "datapointsPerSecond";
    /// Collector CPU cores per step (range query).
    pub const COLLECTOR_CPU: &str = "collectorCpuCores";
    /// Collector resident memory per step (range query).
    pub const COLLECTOR_MEMORY: &str = "collectorMemoryBytes";
    /// Executable names with a sample in the window (instant query at the window's end).
    pub const CRITICAL_PROCESSES: &str = "criticalProcessesSeen";
}

/// The series of one variant of one experiment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantSelector {
    /// `<namespace>/<experiment>`, the value of `phoenix_experiment`.
    pub experiment: String,
    /// `baseline` or `candidate`, the value of `phoenix_variant`.
    pub variant: String,
}

/// Any set of series the analysis can read: label matchers (without braces) that every query
/// adds to its metric. [`VariantSelector`] is one; `kubectl phoenix plan --from` gives others.
pub trait Selector {
    /// The label matchers, without braces, ready to paste into PromQL.
    fn matchers(&self) -> String;
}

impl Selector for VariantSelector {
    fn matchers(&self) -> String {
        VariantSelector::matchers(self)
    }
}

/// The series of one metric under `matchers`: `name{<matchers>}`, or
/// `{__name__="name",<matchers>}` when the name is not a plain PromQL identifier.
pub fn metric_selector(matchers: &str, name: &str) -> String {
    if is_plain_metric_name(name) {
        format!("{name}{{{matchers}}}")
    } else {
        format!("{{__name__=\"{}\",{matchers}}}", escape_label_value(name))
    }
}

/// The process series under `matchers`: `{__name__=~"process_.*",<matchers>}`.
pub fn process_series_selector(matchers: &str) -> String {
    format!("{{__name__=~\"{PROCESS_METRICS_REGEX}\",{matchers}}}")
}

impl VariantSelector {
    /// The label matchers, without braces:
    /// `phoenix_experiment="ns/exp",phoenix_variant="baseline"`.
    pub fn matchers(&self) -> String {
        format!(
            "{EXPERIMENT_LABEL}=\"{}\",{VARIANT_LABEL}=\"{}\"",
            escape_label_value(&self.experiment),
            escape_label_value(&self.variant)
        )
    }

    /// The variant's process series:
    /// `{__name__=~"process_.*",phoenix_experiment="ns/exp",phoenix_variant="baseline"}`.
    pub fn process_series(&self) -> String {
        process_series_selector(&self.matchers())
    }

    /// The variant's series of one metric: `name{<matchers>}`, or
    /// `{__name__="name",<matchers>}` when the name is not a plain PromQL identifier.
    pub fn metric(&self, name: &str) -> String {
        metric_selector(&self.matchers(), name)
    }
}

/// A request to `/api/v1/label/<label>/values` with one `match[]` over `[start, end]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelValuesRequest {
    /// The label whose values are wanted.
    pub label: &'static str,
    /// The series selector (`match[]`).
    pub matcher: String,
    /// Window start, Unix seconds.
    pub start: i64,
    /// Window end, Unix seconds.
    pub end: i64,
}

impl LabelValuesRequest {
    /// The API path, relative to the Prometheus base URL.
    pub fn path(&self) -> String {
        format!("api/v1/label/{}/values", self.label)
    }

    /// Query parameters, in order.
    pub fn params(&self) -> [(&'static str, String); 3] {
        [
            ("match[]", self.matcher.clone()),
            ("start", self.start.to_string()),
            ("end", self.end.to_string()),
        ]
    }
}

impl std::fmt::Display for LabelValuesRequest {
    /// Written like Grafana's `label_values(<selector>, <label>)`, with the window.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "label_values({}, {}) over [{}, {}]",
            self.matcher, self.label, self.start, self.end
        )
    }
}

/// The process metric names the variant wrote (label values of `__name__`). The API may answer
/// with names from outside `[start, end]` (it answers per head block); a name without samples in
/// the window only adds a term that finds nothing.
pub fn metric_names(sel: &impl Selector, start: i64, end: i64) -> LabelValuesRequest {
    LabelValuesRequest {
        label: "__name__",
        matcher: process_series_selector(&sel.matchers()),
        start,
        end,
    }
}

/// Process series of the variant with a sample in the `range_secs` before each step, one term
/// per metric name, for a range query at step = the analysis interval:
/// `count(label_replace(count_over_time(m1{<sel>}[Rs]), "phoenix_metric_name", "m1", "", "")
/// or …)`. Counting samples inside each step's range (not the 5-minute lookback of an instant
/// selector) keeps a step about that step. The metric name goes back in as a label because
/// `count_over_time` drops it and `or` would otherwise merge equal label sets of two metrics.
/// A step where the variant wrote nothing has no value (absent, not 0). `None` without names.
pub fn series_per_step(sel: &VariantSelector, names: &[String], range_secs: i64) -> Option<String> {
    if names.is_empty() {
        return None;
    }
    let union = names
        .iter()
        .map(|name| {
            format!(
                "label_replace(count_over_time({}[{range_secs}s]), \"phoenix_metric_name\", \"{}\", \"\", \"\")",
                sel.metric(name),
                escape_label_value(&name.replace('$', "$$"))
            )
        })
        .collect::<Vec<_>>()
        .join(" or ");
    Some(format!("count({union})"))
}

/// Nodes whose collector reported its own telemetry in the `range_secs` before each step:
/// `count(count by (phoenix_node) (count_over_time(otelcol_process_memory_rss_bytes{<sel>}[Rs])))`.
/// Absent where no collector of the variant reported.
pub fn collectors_per_step(sel: &VariantSelector, range_secs: i64) -> String {
    format!(
        "count(count by ({NODE_LABEL}) (count_over_time({}[{range_secs}s])))",
        sel.metric(COLLECTOR_MEMORY_METRIC)
    )
}

/// The nodes whose collector reported its own telemetry in the window ending at the evaluation
/// time: `count by (phoenix_node) (count_over_time(otelcol_process_memory_rss_bytes{<sel>}[Ws]))`.
pub fn collector_nodes(sel: &VariantSelector, window_secs: i64) -> String {
    format!(
        "count by ({NODE_LABEL}) (count_over_time({}[{window_secs}s]))",
        sel.metric(COLLECTOR_MEMORY_METRIC)
    )
}

/// Executable names with a sample in the window ending at the evaluation time, one term per
/// metric name: `count by (process_executable_name) (count_over_time(m1{<sel>}[Ws])) or …`.
/// Only samples inside the window count (the label-values API answers with every name in the
/// head block, whatever range it is asked for). The names are filtered by the critical patterns
/// in Rust, so the patterns never have to be RE2-escaped into PromQL. `None` without names.
pub fn executables_in_window(
    sel: &VariantSelector,
    names: &[String],
    window_secs: i64,
) -> Option<String> {
    if names.is_empty() {
        return None;
    }
    Some(
        names
            .iter()
            .map(|name| {
                format!(
                    "count by ({EXECUTABLE_LABEL}) (count_over_time({}[{window_secs}s]))",
                    sel.metric(name)
                )
            })
            .collect::<Vec<_>>()
            .join(" or "),
    )
}

/// Points the variant's `hostmetrics` receivers accepted over the window:
/// `sum(increase(otelcol_receiver_accepted_metric_points_total{<sel>,receiver="hostmetrics"}[Ws]))`.
pub fn scraped_points(sel: &VariantSelector, window_secs: i64) -> String {
    counter_increase(
        sel,
        ACCEPTED_POINTS_METRIC,
        "receiver",
        SCRAPE_RECEIVER,
        window_secs,
    )
}

/// Points the variant's remote-write exporters sent over the window (process and self metrics).
pub fn exported_points(sel: &VariantSelector, window_secs: i64) -> String {
    counter_increase(
        sel,
        SENT_POINTS_METRIC,
        "exporter",
        REMOTE_WRITE_EXPORTER,
        window_secs,
    )
}

/// Points that did not reach Prometheus over the window: the remote-write exporter's send and
/// enqueue failures plus the process receiver's refusals, each term 0 when its counter is absent.
pub fn failed_points(sel: &VariantSelector, window_secs: i64) -> String {
    [
        (SEND_FAILED_POINTS_METRIC, "exporter", REMOTE_WRITE_EXPORTER),
        (
            ENQUEUE_FAILED_POINTS_METRIC,
            "exporter",
            REMOTE_WRITE_EXPORTER,
        ),
        (REFUSED_POINTS_METRIC, "receiver", SCRAPE_RECEIVER),
    ]
    .iter()
    .map(|(metric, label, value)| {
        format!(
            "({} or vector(0))",
            counter_increase(sel, metric, label, value, window_secs)
        )
    })
    .collect::<Vec<_>>()
    .join(" + ")
}

/// `sum(increase(<metric>{<sel>,<label>="<value>"}[Ws]))`.
fn counter_increase(
    sel: &VariantSelector,
    metric: &str,
    label: &str,
    value: &str,
    window_secs: i64,
) -> String {
    format!(
        "sum(increase({metric}{{{},{label}=\"{}\"}}[{window_secs}s]))",
        sel.matchers(),
        escape_label_value(value)
    )
}

/// Process samples per second over the window ending at the evaluation time:
/// `((sum(count_over_time(m1{<sel>}[Ws])) or vector(0)) + … ) / W`, one term per metric name
/// (`vector(0)` when there are none). `count_over_time` counts the raw samples stored, so this is
/// exactly what the backend ingested, whatever the collection interval. Evaluate it at the window
/// end. Prometheus 2.x ranges include both ends: a sample exactly on the window start counts too
/// (negligible with real, jittered timestamps).
pub fn datapoints_per_second(sel: &VariantSelector, names: &[String], window_secs: i64) -> String {
    if names.is_empty() {
        return "vector(0)".to_string();
    }
    let sum = sum_of_terms(names, |name| {
        format!("sum(count_over_time({}[{window_secs}s]))", sel.metric(name))
    });
    format!("({sum}) / {window_secs}")
}

/// Distinct process series with at least one sample in the window ending at the evaluation time:
/// `(count(count_over_time(m1{<sel>}[Ws])) or vector(0)) + …`. Exact, unlike the series API,
/// which answers at the granularity of whole chunks.
pub fn distinct_series(sel: &VariantSelector, names: &[String], window_secs: i64) -> String {
    if names.is_empty() {
        return "vector(0)".to_string();
    }
    sum_of_terms(names, |name| {
        format!(
            "count(count_over_time({}[{window_secs}s]))",
            sel.metric(name)
        )
    })
}

/// Collector CPU in cores at each step: `sum(rate(otelcol_process_cpu_seconds_total{<sel>}[R]))`
/// with `R` = twice the step, at least [`MIN_RATE_RANGE_SECS`].
pub fn collector_cpu(sel: &VariantSelector, step_secs: f64) -> String {
    format!(
        "sum(rate({}[{}s]))",
        sel.metric(COLLECTOR_CPU_METRIC),
        rate_range_secs(step_secs)
    )
}

/// Collector resident memory in bytes at each step: `sum(otelcol_process_memory_rss_bytes{<sel>})`.
pub fn collector_memory(sel: &VariantSelector) -> String {
    format!("sum({})", sel.metric(COLLECTOR_MEMORY_METRIC))
}

/// The `k` executable names using the most CPU in the window ending at the evaluation time:
/// `topk(k, sum by (process_executable_name) (rate(process_cpu_time_seconds_total{<sel>}[Ws])))`.
/// Meant for the baseline's selector (it sees every process).
pub fn topk_by_cpu(sel: &impl Selector, k: u32, window_secs: i64) -> String {
    topk_by_cpu_matching(&sel.matchers(), k, window_secs)
}

/// [`topk_by_cpu`] over the series matching `matchers` (label matchers without braces, already
/// escaped, e.g. from [`exact_matchers`]).
pub fn topk_by_cpu_matching(matchers: &str, k: u32, window_secs: i64) -> String {
    format!(
        "topk({k}, sum by ({EXECUTABLE_LABEL}) (rate({}[{window_secs}s])))",
        metric_selector(matchers, PROCESS_CPU_METRIC)
    )
}

/// Samples of each series of one metric in the `range_secs` before each step, for a range
/// query: `count_over_time(name{<matchers>}[Rs])`. Unlike [`series_per_step`] it keeps every
/// series apart (their labels are what `kubectl phoenix plan` models).
pub fn samples_per_series(sel: &impl Selector, name: &str, range_secs: i64) -> String {
    format!(
        "count_over_time({}[{range_secs}s])",
        metric_selector(&sel.matchers(), name)
    )
}

/// Whether `name` is a Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Equality matchers `name="value",…` for `labels` (values escaped), plus, when `exclude` is
/// given, `process_executable_name!~".*(?:<exclude>).*"` (Prometheus anchors its regexes; the
/// wrapping gives the unanchored match the collector's `IsMatch` uses, both Go RE2). The name of
/// the first label that is not a Prometheus label name is the error.
pub fn exact_matchers<'a>(
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    exclude: Option<&str>,
) -> Result<String, String> {
    let mut out = vec![];
    for (name, value) in labels {
        if !is_label_name(name) {
            return Err(name.to_string());
        }
        out.push(format!("{name}=\"{}\"", escape_label_value(value)));
    }
    if let Some(pattern) = exclude {
        out.push(format!(
            "{EXECUTABLE_LABEL}!~\".*(?:{}).*\"",
            escape_label_value(pattern)
        ));
    }
    Ok(out.join(","))
}

/// The `rate()` range for a step: `max(2 × step, 60s)`, whole seconds.
pub fn rate_range_secs(step_secs: f64) -> i64 {
    let doubled = (2.0 * step_secs).ceil();
    // Steps come from validated durations (5s..10m), so the cast cannot saturate in practice.
    (doubled as i64).max(MIN_RATE_RANGE_SECS)
}

/// The simulator's gauge of worker processes alive (`--metrics-addr`, scraped by Prometheus through
/// the pod's `prometheus.io/*` annotations).
pub const SIMULATOR_ACTIVE_METRIC: &str = "phoenix_simulator_active_processes";

/// The worker processes alive across the pods of the simulator Job `job` in `namespace`:
/// `sum(phoenix_simulator_active_processes{namespace="ns",pod=~"<job>-…"})`. `namespace` and `pod`
/// are the target labels the usual annotation-based pod scrape config sets from service
/// discovery, so a pod cannot claim another's figure by exporting them; the pod regex matches
/// only the Job's pod names (`<job>-<5 characters>`, indexed `<job>-<index>-<5 characters>`),
/// never those of a Job whose name merely starts the same.
pub fn simulator_active_processes(namespace: &str, job: &str) -> String {
    let pods = format!("{}-([0-9]+-)?[a-z0-9]{{5}}", regex::escape(job));
    format!(
        "sum({SIMULATOR_ACTIVE_METRIC}{{namespace=\"{}\",pod=~\"{}\"}})",
        escape_label_value(namespace),
        escape_label_value(&pods)
    )
}

/// Escapes a label value for a double-quoted PromQL string (Go string-literal rules).
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Whether `name` can stand bare in PromQL: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn is_plain_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `(t1 or vector(0)) + (t2 or vector(0)) + …`: every term a one-element vector without labels,
/// kept present when its metric has no sample in the window.
fn sum_of_terms(names: &[String], term: impl Fn(&str) -> String) -> String {
    names
        .iter()
        .map(|name| format!("({} or vector(0))", term(name)))
        .collect::<Vec<_>>()
        .join(" + ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulators_figure_is_read_for_the_jobs_own_pods() {
        let q = simulator_active_processes("team-a", "load.x-load");
        assert_eq!(
            q,
            r#"sum(phoenix_simulator_active_processes{namespace="team-a",pod=~"load\\.x\\-load-([0-9]+-)?[a-z0-9]{5}"})"#
        );
        // The regex Prometheus compiles (after unquoting) matches the Job's pods only.
        let pattern = format!("^(?:{})$", r"load\.x\-load-([0-9]+-)?[a-z0-9]{5}");
        let re = regex::Regex::new(&pattern).expect("valid regex");
        for pod in [
            "load.x-load-7kq2z",
            "load.x-load-0-7kq2z",
            "load.x-load-12-abcde",
        ] {
            assert!(re.is_match(pod), "{pod}");
        }
        for pod in [
            "load.x-load-more-7kq2z",
            "loadxx-load-7kq2z",
            "load.x-load-7kq2",
        ] {
            assert!(!re.is_match(pod), "{pod}");
        }
    }

    fn baseline() -> VariantSelector {
        VariantSelector {
            experiment: "shop/reduce-cardinality".into(),
            variant: "baseline".into(),
        }
    }

    const SEL: &str = r#"phoenix_experiment="shop/reduce-cardinality",phoenix_variant="baseline""#;

    #[test]
    fn selector_renders_the_contract_labels() {
        assert_eq!(baseline().matchers(), SEL);
        assert_eq!(
            baseline().process_series(),
            format!(r#"{{__name__=~"process_.*",{SEL}}}"#)
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label_value("x\ny\tz\r"), r"x\ny\tz\r");
        assert_eq!(escape_label_value("\u{1}é"), "\\x01é");
        let odd = VariantSelector {
            experiment: "ns/\"}) or vector(1) #".into(),
            variant: "candidate".into(),
        };
        assert_eq!(
            odd.matchers(),
            r#"phoenix_experiment="ns/\"}) or vector(1) #",phoenix_variant="candidate""#
        );
    }

    #[test]
    fn metric_names_that_are_not_identifiers_use_the_name_label() {
        let sel = baseline();
        assert_eq!(
            sel.metric("process_memory_usage_bytes"),
            format!("process_memory_usage_bytes{{{SEL}}}")
        );
        assert_eq!(
            sel.metric("process.cpu.time"),
            format!(r#"{{__name__="process.cpu.time",{SEL}}}"#)
        );
        assert_eq!(sel.metric("1x"), format!(r#"{{__name__="1x",{SEL}}}"#));
    }

    #[test]
    fn label_value_requests_carry_the_window() {
        let names = metric_names(&baseline(), 100, 400);
        assert_eq!(names.path(), "api/v1/label/__name__/values");
        assert_eq!(
            names.params(),
            [
                ("match[]", format!(r#"{{__name__=~"process_.*",{SEL}}}"#)),
                ("start", "100".into()),
                ("end", "400".into()),
            ]
        );
        assert_eq!(
            names.to_string(),
            format!(r#"label_values({{__name__=~"process_.*",{SEL}}}, __name__) over [100, 400]"#)
        );
    }

    #[test]
    fn series_per_step_counts_samples_inside_each_step() {
        let names = vec!["process_a".to_string(), "process.b$1".to_string()];
        assert_eq!(
            series_per_step(&baseline(), &names, 30).as_deref(),
            Some(
                format!(
                    r#"count(label_replace(count_over_time(process_a{{{SEL}}}[30s]), "phoenix_metric_name", "process_a", "", "") or label_replace(count_over_time({{__name__="process.b$1",{SEL}}}[30s]), "phoenix_metric_name", "process.b$$1", "", ""))"#
                )
                .as_str()
            )
        );
        assert_eq!(series_per_step(&baseline(), &[], 30), None);
    }

    #[test]
    fn executables_come_from_samples_in_the_window() {
        let names = vec!["process_a".to_string(), "process_b".to_string()];
        assert_eq!(
            executables_in_window(&baseline(), &names, 600).as_deref(),
            Some(
                format!(
                    "count by (process_executable_name) (count_over_time(process_a{{{SEL}}}[600s])) or \
                     count by (process_executable_name) (count_over_time(process_b{{{SEL}}}[600s]))"
                )
                .as_str()
            )
        );
        assert_eq!(executables_in_window(&baseline(), &[], 600), None);
    }

    #[test]
    fn collector_health_queries() {
        assert_eq!(
            collectors_per_step(&baseline(), 30),
            format!(
                "count(count by (phoenix_node) (count_over_time(otelcol_process_memory_rss_bytes{{{SEL}}}[30s])))"
            )
        );
        assert_eq!(
            collector_nodes(&baseline(), 600),
            format!(
                "count by (phoenix_node) (count_over_time(otelcol_process_memory_rss_bytes{{{SEL}}}[600s]))"
            )
        );
        assert_eq!(
            scraped_points(&baseline(), 600),
            format!(
                r#"sum(increase(otelcol_receiver_accepted_metric_points_total{{{SEL},receiver="hostmetrics"}}[600s]))"#
            )
        );
        assert_eq!(
            exported_points(&baseline(), 600),
            format!(
                r#"sum(increase(otelcol_exporter_sent_metric_points_total{{{SEL},exporter="prometheusremotewrite"}}[600s]))"#
            )
        );
        let failed = failed_points(&baseline(), 600);
        assert_eq!(failed.matches(" or vector(0))").count(), 3, "{failed}");
        for metric in [
            "otelcol_exporter_send_failed_metric_points_total",
            "otelcol_exporter_enqueue_failed_metric_points_total",
            "otelcol_receiver_refused_metric_points_total",
        ] {
            assert!(failed.contains(metric), "{failed}");
        }
    }

    #[test]
    fn datapoints_per_second_sums_one_term_per_metric_name() {
        let names = vec![
            "process_cpu_time_seconds_total".to_string(),
            "process_memory_usage_bytes".to_string(),
        ];
        assert_eq!(
            datapoints_per_second(&baseline(), &names, 540),
            format!(
                "((sum(count_over_time(process_cpu_time_seconds_total{{{SEL}}}[540s])) or vector(0)) + \
                 (sum(count_over_time(process_memory_usage_bytes{{{SEL}}}[540s])) or vector(0))) / 540"
            )
        );
        assert_eq!(datapoints_per_second(&baseline(), &[], 540), "vector(0)");
    }

    #[test]
    fn distinct_series_counts_series_per_metric_name() {
        let names = vec!["process_a".to_string(), "process_b".to_string()];
        assert_eq!(
            distinct_series(&baseline(), &names, 300),
            format!(
                "(count(count_over_time(process_a{{{SEL}}}[300s])) or vector(0)) + \
                 (count(count_over_time(process_b{{{SEL}}}[300s])) or vector(0))"
            )
        );
        assert_eq!(distinct_series(&baseline(), &[], 300), "vector(0)");
    }

    #[test]
    fn collector_queries_use_the_self_metric_names() {
        assert_eq!(
            collector_cpu(&baseline(), 15.0),
            format!("sum(rate(otelcol_process_cpu_seconds_total{{{SEL}}}[60s]))")
        );
        assert_eq!(
            collector_cpu(&baseline(), 45.0),
            format!("sum(rate(otelcol_process_cpu_seconds_total{{{SEL}}}[90s]))")
        );
        assert_eq!(
            collector_memory(&baseline()),
            format!("sum(otelcol_process_memory_rss_bytes{{{SEL}}})")
        );
    }

    #[test]
    fn rate_range_is_twice_the_step_and_at_least_a_minute() {
        assert_eq!(rate_range_secs(5.0), 60);
        assert_eq!(rate_range_secs(30.0), 60);
        assert_eq!(rate_range_secs(30.5), 61);
        assert_eq!(rate_range_secs(600.0), 1200);
    }

    #[test]
    fn topk_ranks_executables_by_cpu() {
        assert_eq!(
            topk_by_cpu(&baseline(), 10, 900),
            format!(
                "topk(10, sum by (process_executable_name) (rate(process_cpu_time_seconds_total{{{SEL}}}[900s])))"
            )
        );
    }

    #[test]
    fn selection_source_matchers_are_escaped_and_names_checked() {
        let labels = [("phoenix_pipeline", "full"), ("job", "a\"b\\")];
        assert_eq!(
            exact_matchers(labels, Some("^postgres$|(?:\"x)")).as_deref(),
            Ok(
                "phoenix_pipeline=\"full\",job=\"a\\\"b\\\\\",process_executable_name!~\".*(?:^postgres$|(?:\\\"x)).*\""
            )
        );
        assert_eq!(
            exact_matchers([("_ok9", "")], None).as_deref(),
            Ok("_ok9=\"\"")
        );
        for bad in ["9lead", "a-b", "a\"}or{x", "", "é"] {
            assert_eq!(exact_matchers([(bad, "v")], None), Err(bad.to_string()));
        }
    }
}
