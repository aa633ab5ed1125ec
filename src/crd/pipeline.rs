//! The Pipeline kind: one OpenTelemetry collector pipeline for process metrics, deployed as a
//! DaemonSet (or Deployment) with a generated, immutable, hash-named ConfigMap.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::conditions::Condition;
use super::duration::{self, SpecDuration};

/// Longest Pipeline name: `<name>-collector` and `<name>-<hash8>` must stay within the
/// 63-character limit of label values and DNS labels.
pub const MAX_NAME_LEN: usize = 50;

/// A collector pipeline for process metrics, rendered from a template.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "phoenix.io",
    version = "v1alpha1",
    kind = "Pipeline",
    namespaced,
    doc = "Pipeline is one OpenTelemetry collector pipeline for process metrics, rendered from a template and deployed as a DaemonSet or Deployment.",
    status = "PipelineStatus",
    shortname = "pl",
    category = "phoenix",
    printcolumn = r#"{"name":"Template","type":"string","jsonPath":".spec.template"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = kube::core::Rule::new("size(self.metadata.name) <= 50").message("metadata.name must be at most 50 characters (generated names append -collector)"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("self.template == 'topk' || !has(self.topk)").message("spec.topk is only allowed with template topk").field_path(".topk"),
    validation = kube::core::Rule::new("self.template != 'topk' || has(self.topk)").message("template topk needs spec.topk").field_path(".topk"),
    validation = kube::core::Rule::new("(self.template == 'custom') == has(self.custom)").message("spec.custom is required with template custom and only allowed with it").field_path(".custom"),
    validation = kube::core::Rule::new("self.template == 'aggregate' || !has(self.aggregate)").message("spec.aggregate is only allowed with template aggregate").field_path(".aggregate"),
    validation = kube::core::Rule::new("self.template == 'priority-filter' || size(self.keepPatterns) == 0").message("spec.keepPatterns is only allowed with template priority-filter").field_path(".keepPatterns"),
    validation = kube::core::Rule::new("self.template != 'baseline' || !has(self.excludeMetrics) || size(self.excludeMetrics) == 0").message("spec.excludeMetrics is not allowed with template baseline, which keeps everything").field_path(".excludeMetrics"),
    validation = kube::core::Rule::new("!(self.template in ['baseline', 'custom']) || !has(self.sumAttributes) || size(self.sumAttributes) == 0").message("spec.sumAttributes is not allowed with templates baseline and custom").field_path(".sumAttributes"),
)]
pub struct PipelineSpec {
    /// Which pipeline to render. `baseline`: full-fidelity process metrics (the control group).
    /// `priority-filter`: keep only processes matching criticalProcesses or keepPatterns, drop the
    /// rest and high-cardinality attributes. `aggregate`: keep critical processes, sum every other
    /// process per executable name. `topk`: critical processes plus the K heaviest by CPU, the rest
    /// summed into one "other" series. `custom`: your own processors block.
    pub template: PipelineTemplate,

    /// Regular expressions (RE2) on the process executable name. Matching processes are never
    /// dropped or rolled up by any template. At most 50 entries.
    #[serde(default)]
    #[schemars(length(max = 50), inner(length(min = 1, max = 256)))]
    pub critical_processes: Vec<String>,

    /// How often the hostmetrics receiver scrapes processes. Duration between 1s and 5m.
    /// Default: 10s.
    #[serde(default = "default_collection_interval")]
    #[x_kube(validation = duration::between("1s", "5m"))]
    pub collection_interval: SpecDuration,

    /// Template `priority-filter` only: extra RE2 patterns on the executable name to keep besides
    /// the critical processes. At most 100 entries.
    #[serde(default)]
    #[schemars(length(max = 100), inner(length(min = 1, max = 256)))]
    pub keep_patterns: Vec<String>,

    /// Resource/data-point attributes to remove before export (high-cardinality ones). Default:
    /// `process.pid`, `process.parent_pid`, `process.command_line`, `process.command`,
    /// `process.executable.path`, `process.owner`. Ignored by `baseline`, which keeps everything
    /// (after `sensitiveAttributes` has been applied).
    #[serde(default = "default_drop_attributes")]
    #[schemars(length(max = 50), inner(length(min = 1, max = 256)))]
    pub drop_attributes: Vec<String>,

    /// Process metrics not collected at all, for any process, critical ones included (the scraper
    /// does not read them): `process.memory.usage`, `process.memory.virtual`, `process.disk.io`.
    /// `process.cpu.time` always stays: the top-K ranking and every process's presence rely on
    /// it. Not allowed with template `baseline`, which keeps everything. At most 3, no repeats.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3), extend("x-kubernetes-list-type" = "set"))]
    pub exclude_metrics: Vec<ExcludableMetric>,

    /// Data-point attributes summed away on every process, critical ones included: `state`
    /// (`process.cpu.time`: one series per process instead of user, system and wait) and
    /// `direction` (`process.disk.io`: read plus write). Each process keeps its own series, so
    /// critical processes are still never merged with other processes; rolled-up processes are
    /// summed over these as over `dropAttributes`. Not allowed with templates `baseline` and
    /// `custom`. At most 2, no repeats.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2), extend("x-kubernetes-list-type" = "set"))]
    pub sum_attributes: Vec<SummableAttribute>,

    /// Template `aggregate` only: how non-critical processes are rolled up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Box<AggregateSpec>>,

    /// Template `topk` only: how many heavy processes to keep and how often to re-select them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topk: Option<Box<TopKSpec>>,

    /// Template `custom` only: the processors block, as structured YAML. Phoenix still owns the
    /// receivers, exporters and labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Box<CustomSpec>>,

    /// Extra OTLP/HTTP exporters (e.g. a vendor backend) besides the analysis Prometheus. Headers
    /// come from a Secret, never from the spec. At most 5.
    #[serde(default)]
    #[schemars(length(max = 5))]
    pub exporters: Vec<OtlpHttpExporter>,

    /// Where and how the collectors run.
    #[serde(default)]
    pub deployment: CollectorDeployment,

    /// What the collectors export of the attributes that can carry secrets: the process command
    /// line (`process.command_line`), command (`process.command`) and owner (`process.owner`).
    /// Applied in every pipeline of every template, critical processes included, right after
    /// Phoenix's own filters and before any other processor (the `custom` template's too), so
    /// nothing downstream sees the clear text. `Hash` (default): each non-empty value is replaced
    /// by its SHA-256 (64 hex digits); equal values stay equal, so the series count is the same
    /// as with `Keep`, but a hash of a guessable value (a short password in a known command line)
    /// can be confirmed by hashing guesses: use `Drop` where that matters. `Drop`: the attributes
    /// are deleted (series stay distinct by `process.pid`). `Keep`: exported in clear text as the
    /// collector scrapes them. Risk of `Keep`: every command line on the target nodes, with any
    /// password, token or connection string in its arguments, of every tenant on those nodes,
    /// becomes a label value that anyone who can query the metrics backend can read.
    #[serde(default)]
    pub sensitive_attributes: SensitiveAttributes,
}

/// How the process attributes that can carry secrets are exported (see
/// [`SENSITIVE_ATTRIBUTES`]).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum SensitiveAttributes {
    // Plain comments, not doc comments: documented variants would turn the schema's `enum` into
    // a `oneOf`. The field's doc comment is what `kubectl explain` shows.
    // Replace each value with its SHA-256 in hex: one-way, stable, as many distinct values.
    #[default]
    Hash,
    // Delete the attributes.
    Drop,
    // Export them in clear text.
    Keep,
}

/// The process resource attributes `spec.sensitiveAttributes` applies to: the command line, the
/// command (argv\[0\]) and the owner (user name) of each process.
pub const SENSITIVE_ATTRIBUTES: &[&str] =
    &["process.command_line", "process.command", "process.owner"];

/// A process metric `spec.excludeMetrics` can leave out.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema,
)]
pub enum ExcludableMetric {
    // Plain comments: documented variants would turn the schema's `enum` into a `oneOf`.
    // Resident memory.
    #[serde(rename = "process.memory.usage")]
    MemoryUsage,
    // Virtual memory.
    #[serde(rename = "process.memory.virtual")]
    MemoryVirtual,
    // Bytes read and written.
    #[serde(rename = "process.disk.io")]
    DiskIo,
}

impl ExcludableMetric {
    /// The metric's OpenTelemetry name (the hostmetrics process scraper's key).
    pub fn as_str(self) -> &'static str {
        match self {
            ExcludableMetric::MemoryUsage => "process.memory.usage",
            ExcludableMetric::MemoryVirtual => "process.memory.virtual",
            ExcludableMetric::DiskIo => "process.disk.io",
        }
    }
}

/// A data-point attribute `spec.sumAttributes` can sum away.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SummableAttribute {
    // process.cpu.time's user/system/wait.
    State,
    // process.disk.io's read/write.
    Direction,
}

impl SummableAttribute {
    /// The attribute's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SummableAttribute::State => "state",
            SummableAttribute::Direction => "direction",
        }
    }
}

/// The pipeline templates Phoenix can render.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PipelineTemplate {
    Baseline,
    PriorityFilter,
    Aggregate,
    Topk,
    Custom,
}

impl PipelineTemplate {
    /// The name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineTemplate::Baseline => "baseline",
            PipelineTemplate::PriorityFilter => "priority-filter",
            PipelineTemplate::Aggregate => "aggregate",
            PipelineTemplate::Topk => "topk",
            PipelineTemplate::Custom => "custom",
        }
    }
}

/// Roll-up settings of the `aggregate` template.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AggregateSpec {
    /// `executable` (default): one series per executable name. `category`: one series per
    /// category from `categories`; processes matching no category go to `other`.
    #[serde(default)]
    pub group_by: AggregateGroupBy,
    /// `category` grouping only: category name → RE2 pattern on the executable name. At most 50.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 50))]
    pub categories: BTreeMap<String, String>,
}

/// What the `aggregate` template groups non-critical processes by.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum AggregateGroupBy {
    #[default]
    Executable,
    Category,
}

/// Settings of the `topk` template.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopKSpec {
    /// How many of the heaviest processes (by CPU) to keep besides the critical ones. 1 to 200.
    #[schemars(range(min = 1, max = 200))]
    pub k: u32,
    /// How often the operator re-selects the top K from Prometheus. Duration between 30s and 1h.
    /// Default: 1m.
    #[serde(default = "default_topk_refresh")]
    #[x_kube(validation = duration::between("30s", "1h"))]
    pub refresh_interval: SpecDuration,
    /// A fixed include list of executable names, used until (or instead of) a Prometheus-driven
    /// selection. At most 200.
    #[serde(default)]
    #[schemars(length(max = 200), inner(length(min = 1, max = 256)))]
    pub processes: Vec<String>,
    /// Standalone Pipelines only: the series the operator ranks processes by. A `topk` collector
    /// sums every process outside its selection into `other`, so its own output cannot tell which
    /// of them became heavy; the ranking needs series of a collector that sees every process
    /// unfiltered (e.g. a `baseline` Pipeline on the same nodes, or a collector of your own).
    /// Every `refreshInterval` the operator asks Prometheus for the `k` executable names using the
    /// most CPU (`process_cpu_time_seconds_total` matching this source, rate over
    /// max(refreshInterval, 1m)), critical processes excluded, and writes them to
    /// `status.topkProcesses`; the collector config is re-rendered (and the collectors roll) only
    /// when that list changes. When Prometheus fails, the previous selection stays and the
    /// condition `TopKSelected` says why. Without a source only `processes` is kept. Inside an
    /// Experiment this field is ignored: the candidate is ranked by the baseline's series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection_source: Option<TopKSelectionSource>,
}

/// Where a standalone `topk` Pipeline's ranking comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopKSelectionSource {
    /// Prometheus label name → exact value, selecting the `process_cpu_time_seconds_total` series
    /// to rank, e.g. `{phoenix_pipeline: full-fidelity, phoenix_experiment: none}` for the series
    /// of a standalone Pipeline `full-fidelity` (Phoenix collectors label their series with
    /// `phoenix_pipeline` = the Pipeline's name and `phoenix_node`; `phoenix_experiment` is `none`
    /// outside an Experiment). Label names are Prometheus names (`[a-zA-Z_][a-zA-Z0-9_]*`); an
    /// invalid one sets `TopKSelected=False` with reason `InvalidSelectionSource`. 1 to 10
    /// entries. The selected executable names become visible in this Pipeline's status.
    #[schemars(extend("minProperties" = 1, "maxProperties" = 10, "additionalProperties" = {"type": "string", "maxLength": 1024}))]
    pub match_labels: BTreeMap<String, String>,
    /// The Prometheus to query. Default: the operator's. Any other URL must be allowed by the
    /// operator (`--allowed-prometheus-url-prefixes`); otherwise `TopKSelected=False` with reason
    /// `PrometheusUrlNotAllowed` and nothing is queried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub prometheus_url: Option<String>,
}

/// The user's processors for the `custom` template.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomSpec {
    /// Processor id (e.g. `filter/noise`) → its configuration, exactly as in a collector config.
    #[schemars(extend("minProperties" = 1, "maxProperties" = 20))]
    pub processors: BTreeMap<String, FreeForm>,
    /// The processor ids in pipeline order. Every id must be defined in `processors` and every
    /// defined processor used. `memory_limiter` and `batch` are added by Phoenix around them.
    #[schemars(length(min = 1, max = 20), inner(length(min = 1, max = 128)))]
    pub pipeline: Vec<String>,
}

/// An arbitrary YAML/JSON value kept as given (a collector component's configuration).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(transparent)]
pub struct FreeForm(pub serde_json::Value);

impl schemars::JsonSchema for FreeForm {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FreeForm".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
}

/// An extra OTLP/HTTP exporter.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtlpHttpExporter {
    /// Exporter name, used in the component id `otlphttp/<name>`. Lowercase letters, digits, `-`.
    #[schemars(length(min = 1, max = 40), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// OTLP/HTTP endpoint URL, e.g. `https://otlp.nr-data.net`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("isURL(self) && (self.startsWith('http://') || self.startsWith('https://'))").message("must be an http(s) URL"))]
    pub endpoint: String,
    /// A Secret in the Pipeline's namespace whose keys become HTTP headers (key = header name),
    /// e.g. `api-key` for New Relic. The Secret must carry the label
    /// `phoenix.io/exporter-credentials: "true"` (its owner's opt-in): any other Secret is refused
    /// (`ConfigValid=False`, reason `SecretNotOptedIn`), so writing a Pipeline never ships a
    /// Secret you cannot read to an endpoint you choose. The Secret is read again every 30 s: one
    /// that appears is used, and a rotated one rolls the collectors so the new value is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_secret_ref: Option<SecretRef>,
}

/// A reference to a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// How collectors are deployed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectorDeployment {
    /// `DaemonSet` (default): one collector per target node. `Deployment`: one replica.
    #[serde(default)]
    pub mode: DeploymentMode,
    /// Nodes the collectors run on. Inside an Experiment the Experiment's targets apply.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 63, "pattern": "^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"}))]
    #[x_kube(validation = crate::crd::validation::node_selector_keys())]
    pub node_selector: crate::crd::StringMap,
    /// Tolerations for the collector pods.
    #[serde(default)]
    #[schemars(schema_with = "crate::crd::validation::tolerations_schema")]
    pub tolerations: Vec<Toleration>,
    /// CPU/memory requests and limits of the collector container. Default: requests 100m / 128Mi,
    /// limits 500m / 512Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = crate::crd::validation::resources())]
    pub resources: Option<Box<ResourceRequirements>>,
    /// Collector image. Default: the contrib collector image the operator is configured with.
    /// Any other image must be in the operator's `--allowed-collector-images` (collectors mount
    /// the host's /proc); otherwise the Pipeline is `Invalid` with reason `ImageNotAllowed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
}

/// The workload kind that runs the collectors.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum DeploymentMode {
    #[default]
    DaemonSet,
    Deployment,
}

/// Observed state of a Pipeline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    /// `Pending`, `Ready`, `Invalid` (the spec cannot be rendered; the last good collectors keep
    /// running) or `Degraded` (collectors not all ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PipelinePhase>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `ConfigValid`, `Available`, `TopKSelected` (standalone `topk` with a selection
    /// source).
    /// `Reconciling` (`True` while in progress) and `Stalled` (`True` when stopped on an error)
    /// are present only while true (kstatus, read by Argo CD and Flux health checks).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// First 8 hex digits of the SHA-256 of the rendered collector config now deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Name of the ConfigMap holding the deployed collector config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<String>,
    /// Collector pods ready.
    #[serde(default)]
    pub ready_collectors: i32,
    /// Collector pods wanted.
    #[serde(default)]
    pub desired_collectors: i32,
    /// `ready/desired`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// The executable names the `topk` template currently keeps (besides `spec.topk.processes`),
    /// as last selected from `spec.topk.selectionSource`, heaviest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topk_processes: Vec<String>,
    /// When the operator last queried Prometheus for the top-K selection (whether or not it
    /// succeeded; the `TopKSelected` condition says how it went).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topk_refreshed_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Human-readable summary of the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Lifecycle phase of a Pipeline.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum PipelinePhase {
    Pending,
    Ready,
    Invalid,
    Degraded,
}

fn default_collection_interval() -> SpecDuration {
    SpecDuration::from_secs(10)
}

fn default_topk_refresh() -> SpecDuration {
    SpecDuration::from_secs(60)
}

/// Attributes dropped by the reducing templates unless the spec says otherwise.
pub fn default_drop_attributes() -> Vec<String> {
    [
        "process.pid",
        "process.parent_pid",
        "process.command_line",
        "process.command",
        "process.executable.path",
        "process.owner",
    ]
    .map(String::from)
    .to_vec()
}

impl PipelineSpec {
    /// A spec of the given template with every other field at its default.
    pub fn from_template(template: PipelineTemplate) -> Self {
        PipelineSpec {
            template,
            critical_processes: vec![],
            collection_interval: default_collection_interval(),
            keep_patterns: vec![],
            drop_attributes: default_drop_attributes(),
            exclude_metrics: vec![],
            sum_attributes: vec![],
            aggregate: None,
            topk: None,
            custom: None,
            exporters: vec![],
            deployment: CollectorDeployment::default(),
            sensitive_attributes: SensitiveAttributes::default(),
        }
    }
}
