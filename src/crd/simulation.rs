//! The Simulation kind: reproducible process load on the target nodes, run by the
//! `phoenix-simulator` binary in a Job.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::conditions::Condition;
use super::duration::{self, SpecDuration};

/// Hard cap on simulated processes per node (the simulator enforces it too).
pub const MAX_PROCESSES: u32 = 5000;
/// Hard cap on spawns per minute (100 per second).
pub const MAX_CHURN_PER_MINUTE: u32 = 6000;
/// Longest Simulation name: the Job `<name>-load` must fit 63 characters.
pub const MAX_NAME_LEN: usize = 58;

/// Process load for an experiment: many real processes with real names, CPU, memory and churn.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "phoenix.io",
    version = "v1alpha1",
    kind = "Simulation",
    namespaced,
    doc = "Simulation runs reproducible process load (real processes with real names, CPU, memory and churn) on the target nodes.",
    status = "SimulationStatus",
    shortname = "sim",
    category = "phoenix",
    printcolumn = r#"{"name":"Profile","type":"string","jsonPath":".spec.profile"}"#,
    printcolumn = r#"{"name":"Processes","type":"integer","jsonPath":".spec.processes"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = kube::core::Rule::new("size(self.metadata.name) <= 58").message("metadata.name must be at most 58 characters (the Job is named <name>-load)"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("(self.profile == 'custom') == has(self.custom)").message("spec.custom is required with profile custom and only allowed with it").field_path(".custom"),
    validation = kube::core::Rule::new("!has(self.churnPerMinute) || self.churnPerMinute <= 60 * self.processes").message("spec.churnPerMinute cannot exceed 60 × spec.processes (lifetimes under 1s)").field_path(".churnPerMinute"),
)]
pub struct SimulationSpec {
    /// Load shape. `realistic`: a mix of web workers, databases, caches, app runtimes and short
    /// cron jobs. `high-cardinality`: many distinct long-lived processes with unique names.
    /// `high-churn`: tens of spawns per second with short lifetimes. `spike`: bursts.
    /// `custom`: your own patterns in `custom.patterns`.
    pub profile: SimulationProfile,

    /// Processes to keep running per node (besides the critical ones), 1 to 5000. Default: 100.
    /// Profile `custom` runs the sum of its patterns' counts instead.
    #[serde(default = "default_processes")]
    #[schemars(range(min = 1, max = 5000))]
    pub processes: u32,

    /// Processes replaced per minute, 0 to 6000. Default: the profile's own rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 6000))]
    pub churn_per_minute: Option<u32>,

    /// How long the load runs. Duration between 30s and 24h. Default: 10m. Inside an Experiment
    /// the load runs at least the Experiment's `duration` plus the operator's deploy timeout (a
    /// longer value is kept), so it outlasts the analysis window.
    #[serde(default = "default_duration")]
    #[x_kube(validation = duration::between("30s", "24h"))]
    pub duration: SpecDuration,

    /// Nodes to load (one simulator pod per matching node). Inside an Experiment the Experiment's
    /// targets apply.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 63, "pattern": "^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"}))]
    #[x_kube(validation = crate::crd::validation::node_selector_keys())]
    pub node_selector: crate::crd::StringMap,

    /// Tolerations of the simulator pods, for tainted target nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::crd::validation::tolerations_schema")]
    pub tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,

    /// Seed of the simulator's random choices; the same seed gives the same names and schedules.
    /// Default: 1.
    #[serde(default = "default_seed")]
    #[schemars(range(min = 0))]
    pub seed: i64,

    /// Executable names the simulator always runs and keeps alive, so critical-process retention
    /// can be measured. 1 to 15 characters each (the kernel's `comm` limit). At most 50.
    #[serde(default)]
    #[schemars(
        length(max = 50),
        inner(length(min = 1, max = 15), pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]*$"))
    )]
    pub critical_processes: Vec<String>,

    /// Profile `custom` only: the process patterns to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomProfile>,
}

/// The load shapes the simulator knows.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SimulationProfile {
    Realistic,
    HighCardinality,
    HighChurn,
    Spike,
    Custom,
}

impl SimulationProfile {
    /// The name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            SimulationProfile::Realistic => "realistic",
            SimulationProfile::HighCardinality => "high-cardinality",
            SimulationProfile::HighChurn => "high-churn",
            SimulationProfile::Spike => "spike",
            SimulationProfile::Custom => "custom",
        }
    }
}

/// The patterns of the `custom` profile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomProfile {
    /// Process patterns, 1 to 20.
    #[schemars(length(min = 1, max = 20))]
    pub patterns: Vec<ProcessPattern>,
}

/// A group of simulated processes that share a name template and behaviour.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessPattern {
    /// Name template; `{i}` is replaced by the process index and `{rand}` by 4 seeded hex digits.
    /// The expanded name is cut to 15 characters (the kernel's `comm` limit).
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9._{}-]+$"))]
    pub name_template: String,
    /// Processes of this pattern, 1 to 5000.
    #[schemars(range(min = 1, max = 5000))]
    pub count: u32,
    /// How long each process lives before it is replaced; absent means as long as the run.
    /// Duration between 1s and 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = duration::between("1s", "24h"))]
    pub lifetime: Option<SpecDuration>,
    /// CPU behaviour over time.
    #[serde(default)]
    pub cpu: CpuPattern,
    /// Memory behaviour over time.
    #[serde(default)]
    pub memory: MemoryPattern,
}

/// How a simulated process uses CPU.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuPattern {
    /// `steady`, `spiky`, `growing` or `random`. Default: steady.
    #[serde(default)]
    pub pattern: LoadPattern,
    /// Peak CPU per process in millicores, 0 to 1000. Default: 10.
    #[serde(default = "default_millicores")]
    #[schemars(range(min = 0, max = 1000))]
    pub millicores: u32,
}

impl Default for CpuPattern {
    fn default() -> Self {
        CpuPattern {
            pattern: LoadPattern::Steady,
            millicores: default_millicores(),
        }
    }
}

/// How a simulated process uses memory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryPattern {
    /// `steady`, `spiky`, `growing` or `random`. Default: steady.
    #[serde(default)]
    pub pattern: LoadPattern,
    /// Peak resident memory per process in MiB, 0 to 256. Default: 4.
    #[serde(default = "default_megabytes")]
    #[schemars(range(min = 0, max = 256))]
    pub megabytes: u32,
}

impl Default for MemoryPattern {
    fn default() -> Self {
        MemoryPattern {
            pattern: LoadPattern::Steady,
            megabytes: default_megabytes(),
        }
    }
}

/// The shape of a resource's use over time.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum LoadPattern {
    #[default]
    Steady,
    Spiky,
    Growing,
    Random,
}

/// Observed state of a Simulation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimulationStatus {
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SimulationPhase>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and `Complete`.
    /// `Reconciling` (`True` while in progress) and `Stalled` (`True` when stopped on an error)
    /// are present only while true (kstatus, read by Argo CD and Flux health checks).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// When the load Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the load Job finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Worker processes alive now, as the simulators report them (their
    /// `phoenix_simulator_active_processes`, read from the operator's Prometheus every 30 s while
    /// the load runs; absent when Prometheus does not scrape the simulator pods). 0 once the load
    /// has finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_processes: Option<i64>,
    /// Name of the Job running the simulator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Human-readable summary of the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Lifecycle phase of a Simulation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum SimulationPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

fn default_processes() -> u32 {
    100
}

fn default_duration() -> SpecDuration {
    SpecDuration::from_secs(600)
}

fn default_seed() -> i64 {
    1
}

fn default_millicores() -> u32 {
    10
}

fn default_megabytes() -> u32 {
    4
}
