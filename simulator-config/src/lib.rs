//! The contract between the operator and `phoenix-simulator`: the simulator's configuration
//! document ([`SimulatorConfig`]), JSON shaped like the Simulation CRD's spec, passed in the
//! environment variable [`ENV_VAR`]. The operator builds it (`phoenix::desired::job`) and the
//! simulator reads it; both compile this crate and nothing else of each other.

use serde::{Deserialize, Serialize};

/// Environment variable the operator's Job sets to the configuration JSON.
pub const ENV_VAR: &str = "PHOENIX_SIMULATION";

/// Exit code of a configuration the simulator refused before anything started: permanent, so the
/// operator's Job fails at once instead of retrying it.
pub const EXIT_REFUSED: u8 = 2;

/// What to simulate. The `phoenix-simulator` crate documents the JSON shape and what it does.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Which built-in load shape to run (default `realistic`).
    #[serde(default)]
    pub profile: Profile,
    /// Processes to keep running besides the critical ones (default 100). Not used by `custom`,
    /// whose patterns' counts define the population.
    #[serde(default = "default_processes")]
    pub processes: u32,
    /// Processes replaced per minute; absent means the profile's own rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub churn_per_minute: Option<u32>,
    /// How long the load runs, e.g. `10m`, `30s`, `1h30m` (default `10m`).
    #[serde(default = "default_duration")]
    pub duration: String,
    /// Seed of every random choice: the same configuration and seed give the same plan.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Names always running (respawned when they die), 1 to 15 characters each, at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub critical_processes: Vec<String>,
    /// Profile `custom` only: its process patterns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomProfile>,
    /// Tighter caps than the defaults (never above the hard caps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsOverride>,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            profile: Profile::default(),
            processes: default_processes(),
            churn_per_minute: None,
            duration: default_duration(),
            seed: default_seed(),
            critical_processes: Vec::new(),
            custom: None,
            limits: None,
        }
    }
}

impl SimulatorConfig {
    /// Parses the configuration JSON, naming the offending field on error.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The configuration as one line of JSON (what the operator puts in [`ENV_VAR`]).
    pub fn to_json(&self) -> String {
        // Serializing plain structs with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The built-in load shapes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Web workers, databases, caches, app runtimes and short cron jobs, with their usual names.
    #[default]
    Realistic,
    /// Many distinct long-lived processes with unique names (`svc-a7f3-0042`).
    HighCardinality,
    /// Short-lived processes replaced tens of times per second.
    HighChurn,
    /// A steady half plus periodic bursts of heavy short-lived processes.
    Spike,
    /// The patterns of `custom.patterns`.
    Custom,
}

impl Profile {
    /// Every profile, in documentation order.
    pub const ALL: [Profile; 5] = [
        Profile::Realistic,
        Profile::HighCardinality,
        Profile::HighChurn,
        Profile::Spike,
        Profile::Custom,
    ];

    /// The name as written in configurations.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Realistic => "realistic",
            Profile::HighCardinality => "high-cardinality",
            Profile::HighChurn => "high-churn",
            Profile::Spike => "spike",
            Profile::Custom => "custom",
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, UnknownProfile> {
        Profile::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Profile::ALL.iter().map(|p| p.as_str()).collect();
                UnknownProfile(format!(
                    "unknown profile {s:?} (one of {})",
                    known.join(", ")
                ))
            })
    }
}

/// The patterns of the `custom` profile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomProfile {
    pub patterns: Vec<ProcessPattern>,
}

/// A group of processes sharing a name template and behaviour.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProcessPattern {
    /// Name template: `{i}` becomes the process's sequence number in this pattern (0, 1, …, also
    /// across replacements) and `{rand}` four seeded hex digits. Cut to 15 characters.
    pub name_template: String,
    /// Processes of this pattern running at once.
    pub count: u32,
    /// How long each lives before a fresh one (next `{i}`) replaces it; absent: the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<String>,
    #[serde(default)]
    pub cpu: CpuPattern,
    #[serde(default)]
    pub memory: MemoryPattern,
}

/// CPU behaviour of a custom pattern: the shape and its peak.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CpuPattern {
    #[serde(default)]
    pub pattern: LoadPattern,
    /// Peak CPU per process in millicores (default 10).
    #[serde(default = "default_millicores")]
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

/// Memory behaviour of a custom pattern: the shape and its peak.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemoryPattern {
    #[serde(default)]
    pub pattern: LoadPattern,
    /// Peak resident memory per process in MiB (default 4).
    #[serde(default = "default_megabytes")]
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

/// Optional caps in the configuration; each must be between 1 and the hard cap.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_processes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_spawns_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu_millicores_per_process: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_cpu_millicores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mib_per_process: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_memory_mib: Option<u32>,
}

/// The shape of a resource's use over time; the simulator's `load` module gives each its meaning.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LoadPattern {
    /// Always at the peak.
    #[default]
    Steady,
    /// Idles at 10 % and jumps to the peak for 4 s every 20 s.
    Spiky,
    /// Climbs linearly from 10 % to the peak over the process's lifetime.
    Growing,
    /// A seeded level between 0 and the peak, held for 5 s at a time.
    Random,
}

impl LoadPattern {
    /// Every pattern, for seeded picks.
    pub const ALL: [LoadPattern; 4] = [
        LoadPattern::Steady,
        LoadPattern::Spiky,
        LoadPattern::Growing,
        LoadPattern::Random,
    ];
}

/// Memory a worker uses besides its planned ballast: measured at about 0.25 MiB of private RSS
/// (the binary's pages are shared by all workers), plus page tables and kernel structures;
/// counted generously.
pub const WORKER_OVERHEAD_KIB: u64 = 1024;
/// Share of the memory available to it (the container's cgroup, the machine) a plan may use, in
/// per cent; the simulator refuses a plan above it.
pub const MEMORY_SHARE_PERCENT: u64 = 80;
/// What the supervisor itself may hold, already charged to the container when it plans.
pub const SUPERVISOR_KIB: u64 = 32 * 1024;

/// The memory limit, in MiB, a container needs so that a plan of `processes` workers whose peak
/// ballast adds up to `ballast_mib` passes the simulator's check ([`MEMORY_SHARE_PERCENT`] of what
/// is left once the supervisor runs).
pub fn container_memory_mib(ballast_mib: u64, processes: u64) -> u64 {
    let need_kib = ballast_mib
        .saturating_mul(1024)
        .saturating_add(processes.saturating_mul(WORKER_OVERHEAD_KIB));
    let limit_kib = need_kib
        .div_ceil(MEMORY_SHARE_PERCENT)
        .saturating_mul(100)
        .saturating_add(SUPERVISOR_KIB);
    limit_kib.div_ceil(1024)
}

/// A profile name that is not one of [`Profile::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnknownProfile(String);

fn default_processes() -> u32 {
    100
}

fn default_duration() -> String {
    "10m".to_string()
}

fn default_seed() -> u64 {
    1
}

fn default_millicores() -> u32 {
    10
}

fn default_megabytes() -> u32 {
    4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_field_is_refused_not_ignored() {
        for json in [
            r#"{"profile":"realistic","proceses":10}"#,
            r#"{"profile":"custom","custom":{"patterns":[{"nameTemplate":"a-{i}","count":1,"cpu":{"peakMilicores":5}}]}}"#,
            r#"{"profile":"realistic","limits":{"maxProcesess":5}}"#,
        ] {
            let error = SimulatorConfig::from_json(json).expect_err(json);
            assert!(
                error.to_string().contains("unknown field"),
                "{json}: {error}"
            );
        }
    }

    #[test]
    fn defaults_fill_a_minimal_config() {
        let config =
            SimulatorConfig::from_json(r#"{"profile":"high-cardinality"}"#).expect("valid");
        assert_eq!(
            config,
            SimulatorConfig {
                profile: Profile::HighCardinality,
                ..SimulatorConfig::default()
            }
        );
        assert_eq!(config.processes, 100);
        assert_eq!(config.duration, "10m");
        assert_eq!(config.seed, 1);
    }

    #[test]
    fn full_config_round_trips_in_camel_case() {
        let json = r#"{
            "profile": "custom", "processes": 10, "churnPerMinute": 30, "duration": "1h30m",
            "seed": 7, "criticalProcesses": ["postgres", "nginx"],
            "custom": {"patterns": [{"nameTemplate": "api-{i}", "count": 3, "lifetime": "30s",
                "cpu": {"pattern": "spiky", "millicores": 200},
                "memory": {"pattern": "growing", "megabytes": 64}}]},
            "limits": {"maxProcesses": 100, "maxTotalMemoryMib": 512}
        }"#;
        let config = SimulatorConfig::from_json(json).expect("valid");
        assert_eq!(config.churn_per_minute, Some(30));
        let pattern = &config.custom.as_ref().expect("custom").patterns[0];
        assert_eq!(
            pattern.cpu,
            CpuPattern {
                pattern: LoadPattern::Spiky,
                millicores: 200
            }
        );
        assert_eq!(pattern.memory.megabytes, 64);
        assert_eq!(
            SimulatorConfig::from_json(&config.to_json()).expect("round trip"),
            config
        );
        assert!(
            config
                .to_json()
                .contains("\"criticalProcesses\":[\"postgres\",\"nginx\"]")
        );
    }

    #[test]
    fn errors_name_the_field() {
        let err =
            SimulatorConfig::from_json(r#"{"profile":"everything"}"#).expect_err("bad profile");
        assert!(err.to_string().contains("unknown variant"), "{err}");
        let err = SimulatorConfig::from_json(r#"{"processes":-1}"#).expect_err("negative");
        assert!(err.to_string().contains("invalid value"), "{err}");
    }

    #[test]
    fn the_container_limit_leaves_the_plan_its_share() {
        for (ballast, processes) in [(0, 0), (64, 10), (800, 102), (2048, 1002), (16384, 5050)] {
            let limit_kib = container_memory_mib(ballast, processes) * 1024;
            let need_kib = ballast * 1024 + processes * WORKER_OVERHEAD_KIB;
            let available = limit_kib - SUPERVISOR_KIB;
            assert!(
                need_kib <= available * MEMORY_SHARE_PERCENT / 100,
                "{ballast} MiB × {processes}: limit {limit_kib} KiB"
            );
            // Not wasteful either: at most 1 MiB above what the share needs.
            assert!(limit_kib <= need_kib * 100 / MEMORY_SHARE_PERCENT + SUPERVISOR_KIB + 2048);
        }
    }

    #[test]
    fn profiles_parse_from_their_names() {
        for profile in Profile::ALL {
            assert_eq!(profile.as_str().parse::<Profile>().ok(), Some(profile));
        }
        assert!("bursty".parse::<Profile>().is_err());
    }
}
