//! The simulator's input, [`SimulatorConfig`]: JSON shaped like the Simulation CRD's spec (so the
//! operator can pass `spec` through as is; `nodeSelector` and other unknown fields are ignored),
//! plus optional [`LimitsOverride`] caps. Also the hard caps themselves ([`Limits`]).

use serde::{Deserialize, Serialize};

use super::Error;
use super::load::LoadPattern;

/// Environment variable the operator's Job sets to the configuration JSON.
pub const ENV_VAR: &str = "PHOENIX_SIMULATION";

/// What to simulate. See the module documentation of [`crate::simulator`] for the JSON shape.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
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
    pub fn from_json(json: &str) -> Result<Self, Error> {
        serde_json::from_str(json)
            .map_err(|e| Error::InvalidConfig(format!("configuration JSON: {e}")))
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
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Profile::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Profile::ALL.iter().map(|p| p.as_str()).collect();
                Error::Usage(format!(
                    "unknown profile {s:?} (one of {})",
                    known.join(", ")
                ))
            })
    }
}

/// The patterns of the `custom` profile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CustomProfile {
    pub patterns: Vec<ProcessPattern>,
}

/// A group of processes sharing a name template and behaviour.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
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
#[serde(rename_all = "camelCase")]
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
#[serde(rename_all = "camelCase")]
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
#[serde(rename_all = "camelCase")]
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

/// The caps a plan must respect. Built-in profiles scale their CPU and memory down to fit the
/// totals; anything else over a cap is refused.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Processes besides the critical ones (and the sum of custom pattern counts).
    pub max_processes: u32,
    /// Process starts per second, initial ramp-up and churn included.
    pub max_spawns_per_second: u32,
    /// Peak CPU of one process.
    pub max_cpu_millicores_per_process: u32,
    /// Sum of the peak CPU of all processes.
    pub max_total_cpu_millicores: u32,
    /// Peak memory of one process.
    pub max_memory_mib_per_process: u32,
    /// Sum of the peak memory of all processes.
    pub max_total_memory_mib: u32,
}

/// Most critical processes a configuration may name.
pub const MAX_CRITICAL_PROCESSES: usize = 50;
/// Longest run.
pub const MAX_DURATION_SECS: u64 = 24 * 3_600;

impl Limits {
    /// The hard caps: no configuration goes above these.
    pub const HARD: Limits = Limits {
        max_processes: 5_000,
        max_spawns_per_second: 100,
        max_cpu_millicores_per_process: 1_000,
        max_total_cpu_millicores: 16_000,
        max_memory_mib_per_process: 256,
        max_total_memory_mib: 16_384,
    };

    /// The caps when the configuration sets none: the hard caps, with modest totals.
    pub const DEFAULT: Limits = Limits {
        max_total_cpu_millicores: 2_000,
        max_total_memory_mib: 2_048,
        ..Limits::HARD
    };

    /// The defaults with the configuration's overrides applied, each checked against its hard cap.
    pub fn resolve(overrides: Option<&LimitsOverride>) -> Result<Limits, Error> {
        let Some(o) = overrides else {
            return Ok(Limits::DEFAULT);
        };
        let pick = |field: &str, value: Option<u32>, default: u32, hard: u32| match value {
            None => Ok(default),
            Some(0) => Err(Error::InvalidConfig(format!(
                "limits.{field} must be at least 1"
            ))),
            Some(v) if v > hard => Err(Error::OverCaps(format!(
                "limits.{field} {v} is above the hard cap {hard}"
            ))),
            Some(v) => Ok(v),
        };
        let (d, h) = (Limits::DEFAULT, Limits::HARD);
        Ok(Limits {
            max_processes: pick(
                "maxProcesses",
                o.max_processes,
                d.max_processes,
                h.max_processes,
            )?,
            max_spawns_per_second: pick(
                "maxSpawnsPerSecond",
                o.max_spawns_per_second,
                d.max_spawns_per_second,
                h.max_spawns_per_second,
            )?,
            max_cpu_millicores_per_process: pick(
                "maxCpuMillicoresPerProcess",
                o.max_cpu_millicores_per_process,
                d.max_cpu_millicores_per_process,
                h.max_cpu_millicores_per_process,
            )?,
            max_total_cpu_millicores: pick(
                "maxTotalCpuMillicores",
                o.max_total_cpu_millicores,
                d.max_total_cpu_millicores,
                h.max_total_cpu_millicores,
            )?,
            max_memory_mib_per_process: pick(
                "maxMemoryMibPerProcess",
                o.max_memory_mib_per_process,
                d.max_memory_mib_per_process,
                h.max_memory_mib_per_process,
            )?,
            max_total_memory_mib: pick(
                "maxTotalMemoryMib",
                o.max_total_memory_mib,
                d.max_total_memory_mib,
                h.max_total_memory_mib,
            )?,
        })
    }
}

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
    fn the_simulation_spec_passes_through() {
        // The operator may hand over the Simulation spec as is: same field names, extra fields ignored.
        let spec: crate::crd::SimulationSpec = serde_json::from_str(
            r#"{"profile":"spike","processes":40,"churnPerMinute":12,"duration":"5m","seed":9,
                "nodeSelector":{"kubernetes.io/os":"linux"},"criticalProcesses":["redis-server"]}"#,
        )
        .expect("a valid Simulation spec");
        let json = serde_json::to_string(&spec).expect("serializable");
        let config = SimulatorConfig::from_json(&json).expect("the simulator reads the spec");
        assert_eq!(config.profile, Profile::Spike);
        assert_eq!(
            (config.processes, config.churn_per_minute, config.seed),
            (40, Some(12), 9)
        );
        assert_eq!(config.duration, "5m");
        assert_eq!(config.critical_processes, ["redis-server"]);
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
    fn profiles_parse_from_their_names() {
        for profile in Profile::ALL {
            assert_eq!(profile.as_str().parse::<Profile>().ok(), Some(profile));
        }
        assert!("bursty".parse::<Profile>().is_err());
    }

    #[test]
    fn overrides_may_not_exceed_the_hard_caps() {
        assert_eq!(Limits::resolve(None).ok(), Some(Limits::DEFAULT));
        let tighter = LimitsOverride {
            max_processes: Some(10),
            max_total_cpu_millicores: Some(8_000),
            ..Default::default()
        };
        let limits = Limits::resolve(Some(&tighter)).expect("within caps");
        assert_eq!(
            (limits.max_processes, limits.max_total_cpu_millicores),
            (10, 8_000)
        );
        let over = LimitsOverride {
            max_spawns_per_second: Some(500),
            ..Default::default()
        };
        assert!(
            matches!(Limits::resolve(Some(&over)), Err(Error::OverCaps(m)) if m.contains("maxSpawnsPerSecond"))
        );
        let zero = LimitsOverride {
            max_processes: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            Limits::resolve(Some(&zero)),
            Err(Error::InvalidConfig(_))
        ));
    }
}
