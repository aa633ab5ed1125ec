//! The Experiment kind: a baseline and a candidate pipeline side by side under the same load,
//! measured in Prometheus and judged against success criteria.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::conditions::Condition;
use super::duration::{self, SpecDuration};
use super::pipeline::PipelineSpec;
use super::simulation::SimulationSpec;

/// Longest Experiment name: the child Pipeline `<name>-candidate` must stay within the Pipeline
/// name limit.
pub const MAX_NAME_LEN: usize = 40;

/// Runs a baseline and a candidate collector pipeline side by side and reports which is cheaper
/// and whether the candidate keeps what matters.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "phoenix.io",
    version = "v1alpha1",
    kind = "Experiment",
    namespaced,
    doc = "Experiment runs a baseline and a candidate OpenTelemetry collector pipeline side by side under the same process load, measures both in Prometheus and reports the reduction, critical-process retention, cost and a verdict.",
    status = "ExperimentStatus",
    shortname = "exp",
    category = "phoenix",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Verdict","type":"string","jsonPath":".status.verdict"}"#,
    printcolumn = r#"{"name":"Reduction","type":"string","description":"Series reduction of the candidate (precise: .status.results.seriesReductionPercent)","jsonPath":".status.summary.seriesReduction"}"#,
    printcolumn = r#"{"name":"Retention","type":"string","description":"Critical processes the candidate kept (precise: .status.results.criticalRetentionPercent)","jsonPath":".status.summary.criticalRetention"}"#,
    printcolumn = r#"{"name":"Cost-Saved","type":"string","priority":1,"description":"Estimated cost reduction (precise: .status.results.costReductionPercent)","jsonPath":".status.summary.costReduction"}"#,
    printcolumn = r#"{"name":"P-Value","type":"string","priority":1,"description":"p-value of the test behind the verdict (precise: .status.results.confidence.pValue)","jsonPath":".status.summary.pValue"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = kube::core::Rule::new("size(self.metadata.name) <= 40").message("metadata.name must be at most 40 characters (child Pipelines are named <name>-candidate)"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("self.baseline == oldSelf.baseline").message("spec.baseline is immutable: create a new Experiment to compare other pipelines").field_path(".baseline"),
    validation = kube::core::Rule::new("self.candidate == oldSelf.candidate").message("spec.candidate is immutable: create a new Experiment to compare other pipelines").field_path(".candidate"),
    validation = kube::core::Rule::new("self.targets == oldSelf.targets").message("spec.targets is immutable").field_path(".targets"),
    validation = kube::core::Rule::new("has(self.simulation) == has(oldSelf.simulation) && (!has(self.simulation) || self.simulation == oldSelf.simulation)").message("spec.simulation is immutable").field_path(".simulation"),
    validation = kube::core::Rule::new("has(self.prometheus) == has(oldSelf.prometheus) && (!has(self.prometheus) || self.prometheus == oldSelf.prometheus)").message("spec.prometheus is immutable: the analysis must query the Prometheus the collectors pushed to").field_path(".prometheus"),
    validation = kube::core::Rule::new("self.duration == oldSelf.duration && self.warmup == oldSelf.warmup").message("spec.duration and spec.warmup are immutable").field_path(".duration"),
    validation = kube::core::Rule::new("self.analysis == oldSelf.analysis").message("spec.analysis is immutable: a run is judged as it was planned").field_path(".analysis"),
    validation = kube::core::Rule::new("self.successCriteria == oldSelf.successCriteria").message("spec.successCriteria is immutable: create a new Experiment to judge by other criteria").field_path(".successCriteria"),
    validation = kube::core::Rule::new("!has(oldSelf.abort) || !oldSelf.abort || self.abort").message("an aborted Experiment cannot be resumed").field_path(".abort"),
    validation = kube::core::Rule::new("duration(self.warmup) < duration(self.duration)").message("spec.warmup must be shorter than spec.duration").field_path(".warmup"),
)]
pub struct ExperimentSpec {
    /// The control group: the pipeline you run today. Its `deployment.mode`, `nodeSelector` and
    /// `tolerations` are overridden by `spec.targets` (see there).
    pub baseline: Variant,
    /// The cheaper pipeline to prove. Its `deployment.mode`, `nodeSelector` and `tolerations` are
    /// overridden by `spec.targets` (see there).
    pub candidate: Variant,
    /// Where both variants (and the simulation) run: the same nodes, so they see the same processes.
    /// Placement comes only from here: both variants run as a DaemonSet on the target nodes with the
    /// targets' tolerations, whatever their own `deployment.mode`, `deployment.nodeSelector` and
    /// `deployment.tolerations` say. What was overridden is listed in `status.placementOverrides`
    /// and announced by a `PlacementOverridden` Event.
    #[serde(default)]
    pub targets: Targets,
    /// Process load to run during the experiment. Absent: measure the nodes' real workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulation: Option<Box<SimulationSpec>>,
    /// How long both variants run, warmup included. Duration between 1m and 24h. Default: 10m.
    #[serde(default = "default_duration")]
    #[x_kube(validation = duration::between("1m", "24h"))]
    pub duration: SpecDuration,
    /// Time after both collectors are ready that analysis ignores. Duration between 0s and 1h.
    /// Default: 2m, so that when the window opens both collectors have been scraping, exporting
    /// and reporting their own telemetry for longer than any range the analysis looks back over
    /// (a step's range: the interval or two collection intervals; the collector CPU rate: 60s).
    #[serde(default = "default_warmup")]
    #[x_kube(validation = duration::between("0s", "1h"))]
    pub warmup: SpecDuration,
    /// How the measurements are taken.
    #[serde(default)]
    pub analysis: AnalysisSpec,
    /// What the candidate must achieve to pass.
    #[serde(default)]
    pub success_criteria: SuccessCriteria,
    /// Prices used to estimate the monthly cost of each variant.
    #[serde(default)]
    pub cost_model: CostModel,
    /// The Prometheus that receives both variants' metrics. Default: the operator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<Box<PrometheusSpec>>,
    /// Let the variants' extra `exporters` send data during the experiment. Default false: an
    /// experiment writes only to the analysis Prometheus, never to a production backend.
    #[serde(default)]
    pub allow_extra_exporters: bool,
    /// Set to true to stop the run; the Experiment ends `Aborted` and keeps what it measured.
    #[serde(default)]
    pub abort: bool,
    /// Seconds after the Experiment finished (`Completed`, `Failed` or `Aborted`) when Phoenix
    /// deletes it, and with it everything it created. Unset (default): finished Experiments are
    /// kept, as GitOps tools expect. At most one year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 31_536_000))]
    pub ttl_seconds_after_finished: Option<u32>,
}

/// One side of the comparison: a reference to an existing Pipeline or a Pipeline spec inline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.pipelineRef) != has(self.pipeline)").message("set exactly one of pipelineRef or pipeline"))]
pub struct Variant {
    /// An existing Pipeline in this namespace whose spec is copied when the Experiment starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_ref: Option<PipelineRef>,
    /// A Pipeline spec inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineSpec>,
}

/// A reference to a Pipeline in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRef {
    /// The Pipeline's name.
    #[schemars(length(min = 1, max = 50))]
    pub name: String,
}

/// The nodes an experiment runs on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Targets {
    /// Node labels selecting the target nodes. Empty: every schedulable node.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 63, "pattern": "^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"}))]
    #[x_kube(validation = crate::crd::validation::node_selector_keys())]
    pub node_selector: crate::crd::StringMap,
    /// Tolerations for tainted target nodes, given to both variants' collectors and the load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::crd::validation::tolerations_schema")]
    pub tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,
}

/// Measurement settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSpec {
    /// Step between measurements (each one is a sample for the statistics). Duration between 5s and
    /// 10m. Default: 30s.
    #[serde(default = "default_interval")]
    #[x_kube(validation = duration::between("5s", "10m"))]
    pub interval: SpecDuration,
    /// Significance level of the verdict's test (see `status.results.confidence`), 0.001 to 0.2:
    /// a Pass needs a one-sided p-value below it, and the confidence bounds are at level
    /// `1 − significanceLevel`. Default: 0.05.
    #[serde(default = "default_alpha")]
    #[schemars(range(min = 0.001, max = 0.2))]
    pub significance_level: f64,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        AnalysisSpec {
            interval: default_interval(),
            significance_level: default_alpha(),
        }
    }
}

/// Thresholds the candidate must meet. A criterion left out is not checked, except critical
/// retention (default 100%).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuccessCriteria {
    /// Minimum reduction of active series versus the baseline, percent (0 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub min_series_reduction_percent: Option<f64>,
    /// Minimum share of the baseline's critical processes the candidate still reports, percent
    /// (0 to 100). Default: 100.
    #[serde(default = "default_retention")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub min_critical_retention_percent: f64,
    /// Maximum increase of collector CPU versus the baseline, percent (0 to 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub max_collector_cpu_increase_percent: Option<f64>,
    /// Maximum increase of collector memory versus the baseline, percent (0 to 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub max_collector_memory_increase_percent: Option<f64>,
    /// Minimum reduction of the estimated monthly cost, percent (0 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub min_cost_reduction_percent: Option<f64>,
}

impl Default for SuccessCriteria {
    fn default() -> Self {
        SuccessCriteria {
            min_series_reduction_percent: None,
            min_critical_retention_percent: default_retention(),
            max_collector_cpu_increase_percent: None,
            max_collector_memory_increase_percent: None,
            min_cost_reduction_percent: None,
        }
    }
}

/// Prices of a metrics backend, in any currency (results use the same one).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostModel {
    /// Price per 1,000 active series per month. Default: 8.0.
    #[serde(default = "default_series_price")]
    #[schemars(range(min = 0.0, max = 1000000.0))]
    pub per_thousand_series_month: f64,
    /// Price per million datapoints ingested. Default: 0.5.
    #[serde(default = "default_datapoint_price")]
    #[schemars(range(min = 0.0, max = 1000000.0))]
    pub per_million_datapoints: f64,
    /// Currency label shown with the results. Default: USD.
    #[serde(default = "default_currency")]
    #[schemars(length(min = 1, max = 8))]
    pub currency: String,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel {
            per_thousand_series_month: default_series_price(),
            per_million_datapoints: default_datapoint_price(),
            currency: default_currency(),
        }
    }
}

/// Where the analysis Prometheus is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSpec {
    /// Base URL, e.g. `http://prometheus.monitoring:9090`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("isURL(self) && (self.startsWith('http://') || self.startsWith('https://'))").message("must be an http(s) URL"))]
    pub url: String,
    /// Where the collectors push, when it is not `<url>/api/v1/write` (Mimir, Cortex and Thanos
    /// take writes on another URL than queries). Like `url`, it must be allowed by the operator's
    /// `--allowed-prometheus-url-prefixes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("isURL(self) && (self.startsWith('http://') || self.startsWith('https://'))").message("must be an http(s) URL"))]
    pub remote_write_url: Option<String>,
    /// A Secret in this namespace with the collectors' remote-write credentials, by key:
    /// `bearer-token`; `username` and `password` (basic auth); `header.<Name>` (one header each,
    /// e.g. `header.X-Scope-OrgID`); `ca.crt` (the CA of the endpoint's certificate), `tls.crt`
    /// and `tls.key` (a client certificate). Values reach the collector pods as environment
    /// variables from the Secret or as files mounted from it, never in the generated ConfigMap.
    /// The Secret must carry the label `phoenix.io/exporter-credentials: "true"`, else the
    /// children report `SecretNotOptedIn`. The operator's global remote-write credentials are
    /// never sent to an Experiment's own Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_write_secret_ref: Option<super::pipeline::SecretRef>,
}

/// Observed state of an Experiment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentStatus {
    /// `Pending` → `Deploying` → `Running` → `Analyzing` → `Completed`, or `Failed` / `Aborted`.
    /// Terminal phases never change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ExperimentPhase>,
    /// `Pass`, `Fail` or `Inconclusive`, once `Completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Deployed`, `PrometheusReachable`, `Completed`.
    /// `Reconciling` (`True` while in progress) and `Stalled` (`True` when stopped on an error)
    /// are present only while true (kstatus, read by Argo CD and Flux health checks).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// When the Experiment started deploying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When both collectors became ready (the measurement clock's zero; warmup follows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since: Option<Time>,
    /// When analysis began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_started: Option<Time>,
    /// When the Experiment reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Consecutive failed Prometheus attempts in the current phase (bounded by the budget).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prometheus_failures: u32,
    /// Human-readable summary of the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The measurements and their comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Box<Results>>,
    /// The results rounded for people (printer columns, `kubectl describe`); `results` keeps
    /// full precision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Box<super::summary::ExperimentSummary>>,
    /// On `Pass`: the candidate Pipeline spec, ready to commit to Git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommendation: Option<Box<PipelineSpec>>,
    /// A `topk` candidate: the executable names last chosen from the baseline's data. Re-chosen
    /// only during warmup; frozen at the start of the analysis window (`frozenAt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topk: Option<TopKSelection>,
    /// What Phoenix changed in the variants' own placement so both run on the same nodes in the
    /// same mode (e.g. `candidate deployment.mode Deployment -> DaemonSet`). Empty: nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_overrides: Vec<String>,
    /// Everything the analysis reads, fixed when the run enters `Analyzing`: the window, the
    /// queries' inputs, the critical patterns and the candidate as it ran. The analysis never reads
    /// the (possibly released) children.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_inputs: Option<Box<AnalysisInputs>>,
}

/// The inputs of an Experiment's analysis, snapshotted into status when it enters `Analyzing`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisInputs {
    /// First instant of the analysis window (`runningSince` + warmup).
    pub window_start: Time,
    /// Last instant of the analysis window (`runningSince` + duration).
    pub window_end: Time,
    /// Step between measurements, seconds (`spec.analysis.interval`).
    pub step_seconds: f64,
    /// The slower variant's collection interval, seconds: each step looks back over two of them.
    #[serde(default)]
    pub collection_interval_seconds: f64,
    /// The Prometheus queried.
    pub prometheus_url: String,
    /// The `phoenix_experiment` label value both variants' series carry.
    pub experiment_label: String,
    /// The critical-process patterns of both variants (union, sorted).
    #[serde(default)]
    pub critical_processes: Vec<String>,
    /// A `topk` candidate's frozen top-K list, as it ran during the window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topk: Vec<String>,
    /// The candidate Pipeline spec as it ran (the recommendation on `Pass`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<PipelineSpec>,
}

/// The top-K selection of a `topk` candidate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopKSelection {
    /// The K heaviest executable names by CPU in the baseline's data, heaviest first.
    #[serde(default)]
    pub processes: Vec<String>,
    /// When they were chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed_at: Option<Time>,
    /// When the selection was frozen (the start of the analysis window): the candidate is judged
    /// with exactly these names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_at: Option<Time>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Lifecycle phase of an Experiment.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ExperimentPhase {
    Pending,
    Deploying,
    Running,
    Analyzing,
    Completed,
    Failed,
    Aborted,
}

impl ExperimentPhase {
    /// Whether the phase is final.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExperimentPhase::Completed | ExperimentPhase::Failed | ExperimentPhase::Aborted
        )
    }
}

/// The outcome of a completed Experiment.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Verdict {
    /// Every criterion holds and the reduction is statistically significant.
    Pass,
    /// At least one criterion does not hold.
    Fail,
    /// Too few or too noisy data to tell.
    Inconclusive,
}

/// Measurements of both variants and their comparison.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Results {
    /// The baseline's measurements.
    pub baseline: VariantResults,
    /// The candidate's measurements.
    pub candidate: VariantResults,
    /// Reduction of process series, candidate versus baseline, percent: the mean per-step
    /// relative reduction `(baseline − candidate) / baseline` over the steps where both variants
    /// had data (see `confidence` for its bounds and the Hodges-Lehmann estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_reduction_percent: Option<f64>,
    /// Reduction of datapoints per second, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapoint_reduction_percent: Option<f64>,
    /// Share of the baseline's critical processes the candidate reports, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_retention_percent: Option<f64>,
    /// Estimated monthly cost of each variant under `spec.costModel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_monthly_cost: Option<MonthlyCost>,
    /// Reduction of the estimated monthly cost, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_reduction_percent: Option<f64>,
    /// The statistics behind the verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<Confidence>,
    /// Whether both variants covered the window, from their process series and their
    /// collectors' own telemetry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Coverage>,
    /// Why the verdict is `Inconclusive` (absent for `Pass` and `Fail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive_reason: Option<InconclusiveReason>,
    /// Each success criterion with its threshold, observed value and outcome.
    #[serde(default)]
    pub criteria: Vec<CriterionResult>,
}

/// Measurements of one variant over the analysis window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariantResults {
    /// Mean active series per step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<f64>,
    /// Distinct series seen over the whole window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct_series: Option<f64>,
    /// Samples ingested per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapoints_per_second: Option<f64>,
    /// Mean collector CPU, cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector_cpu_cores: Option<f64>,
    /// Mean collector resident memory, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector_memory_bytes: Option<f64>,
    /// Distinct critical executable names reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_processes_seen: Option<u32>,
    /// Analysis steps with process series.
    #[serde(default)]
    pub samples: u32,
}

/// Why a completed Experiment's verdict is `Inconclusive`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum InconclusiveReason {
    /// The candidate wrote no process series in the window, or its collectors' own telemetry
    /// shows no scraping or no exporting (drop-everything processors, collectors not running,
    /// samples Prometheus rejects). Missing data is never a reduction.
    CandidateNoData,
    /// Fewer than the required share of steps (`coverage.requiredPercent`) have data from both
    /// variants, from the same number of collectors (a crash-looping or late collector).
    DataGaps,
    /// A collector of either variant failed to send, failed to queue, or refused points.
    ExportFailures,
    /// The variants' collectors reported from different nodes, so they did not see the same
    /// processes.
    NodeMismatch,
    /// Too few steps with data from both variants for the test.
    TooFewSamples,
    /// A configured criterion could not be observed (e.g. no collector CPU data).
    CriterionNotObserved,
    /// The baseline's series count varies too much for a fair reference.
    BaselineTooNoisy,
    /// No significant series reduction above 1% (`confidence.pValue` ≥
    /// `spec.analysis.significanceLevel`); identical variants end here.
    NotSignificant,
    /// The reduction is significant but its lower confidence bound is below the
    /// `minSeriesReductionPercent` criterion.
    ReductionUncertain,
}

/// Coverage of the window by both variants.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    /// Steps in the window.
    pub steps: u32,
    /// Steps where the baseline had process series.
    pub baseline_steps: u32,
    /// Steps where the candidate had process series.
    pub candidate_steps: u32,
    /// Steps where both had process series from the same number of collectors: the steps compared.
    pub paired_steps: u32,
    /// `pairedSteps / steps × 100`.
    pub percent: f64,
    /// The share of paired steps a verdict other than `Inconclusive` needs, percent.
    pub required_percent: f64,
    /// Nodes whose baseline collector reported itself in the window.
    pub baseline_nodes: u32,
    /// Nodes whose candidate collector reported itself in the window.
    pub candidate_nodes: u32,
    /// Points the candidate's process receivers accepted in the window (its own telemetry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_scraped_points: Option<f64>,
    /// Points the candidate's remote-write exporters sent in the window (its own telemetry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_exported_points: Option<f64>,
    /// Points the baseline's collectors failed to send or queue, or refused, in the window.
    pub baseline_failed_points: f64,
    /// Points the candidate's collectors failed to send or queue, or refused, in the window.
    pub candidate_failed_points: f64,
}

/// Estimated monthly cost per variant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonthlyCost {
    /// The baseline's estimated monthly cost.
    pub baseline: f64,
    /// The candidate's estimated monthly cost.
    pub candidate: f64,
    /// Currency of both figures.
    pub currency: String,
}

/// The statistics behind the verdict.
///
/// Each step where both variants had data gives one paired value, the candidate's relative
/// reduction at that step `(baseline − candidate) / baseline`; `reductionPercent` is their mean.
/// Neighbouring steps are correlated, so the steps count as `effectiveSamples` independent
/// values (`samples / τ`, τ the larger of `(1 + ρ)/(1 − ρ)` with ρ = `autocorrelation` and the
/// integrated autocorrelation time), and the p-value and bounds come from a one-sided Student-t
/// test of the mean with that many values.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Confidence {
    /// The method, in words.
    pub method: String,
    /// One-sided p-value of "the candidate reduces series by at most 1%" (a true mean per-step
    /// reduction of 1% or less): how often a mean reduction at least this large would appear by
    /// chance if that were so, with the steps' autocorrelation accounted for. It is not the
    /// probability that the candidate is better. A pass needs it below
    /// `spec.analysis.significanceLevel` (equivalently `lowerBoundPercent` above 1%). The 1%
    /// margin absorbs the small real difference between identical collectors that scrape at
    /// different moments (docs/verdict.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Mean per-step series reduction, percent: the estimate the p-value and bounds are about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduction_percent: Option<f64>,
    /// Hodges-Lehmann estimate of the per-step series reduction (the median of the pairwise
    /// averages of the per-step reductions), percent: a robust effect size, close to
    /// `reductionPercent` unless a few steps are far off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hodges_lehmann_percent: Option<f64>,
    /// Lower confidence bound of the series reduction at `levelPercent`: with that confidence
    /// the true reduction is at least this (intervals computed this way contain the truth that
    /// often; docs/verdict.md publishes the measured rates). A pass needs it at or above
    /// `minSeriesReductionPercent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_bound_percent: Option<f64>,
    /// Upper confidence bound of the series reduction at `levelPercent`; with the lower bound a
    /// two-sided interval at level `100 − 2·(100 − levelPercent)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_bound_percent: Option<f64>,
    /// Confidence level of each bound, percent: `(1 − significanceLevel) × 100`.
    pub level_percent: f64,
    /// Lag-1 autocorrelation of the per-step reductions used (bias-corrected, at least 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autocorrelation: Option<f64>,
    /// How many independent steps the correlated steps are worth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_samples: Option<f64>,
    /// Steps compared (both variants had data).
    #[serde(default)]
    pub samples: u32,
    /// Why the result is (in)conclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One success criterion's evaluation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CriterionResult {
    /// The criterion, e.g. `minSeriesReductionPercent`.
    pub name: String,
    /// The threshold from the spec.
    pub threshold: f64,
    /// The measured value, when there was data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<f64>,
    /// Whether the criterion holds.
    pub passed: bool,
    /// The PromQL behind the observed value (cut to 512 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

fn default_duration() -> SpecDuration {
    SpecDuration::from_secs(600)
}

fn default_warmup() -> SpecDuration {
    SpecDuration::from_secs(120)
}

fn default_interval() -> SpecDuration {
    SpecDuration::from_secs(30)
}

fn default_alpha() -> f64 {
    0.05
}

fn default_retention() -> f64 {
    100.0
}

fn default_series_price() -> f64 {
    8.0
}

fn default_datapoint_price() -> f64 {
    0.5
}

fn default_currency() -> String {
    "USD".to_string()
}
