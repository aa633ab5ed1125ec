//! The simulator's input: the configuration document of the `phoenix-simulator-config` crate (the
//! contract with the operator, re-exported here), plus the caps every plan must respect
//! ([`Limits`]).

use serde::Serialize;

pub use phoenix_simulator_config::{
    CpuPattern, CustomProfile, ENV_VAR, LimitsOverride, MemoryPattern, ProcessPattern, Profile,
    SimulatorConfig,
};

use super::Error;

/// Parses the configuration JSON, naming the offending field on error.
pub fn from_json(json: &str) -> Result<SimulatorConfig, Error> {
    SimulatorConfig::from_json(json)
        .map_err(|e| Error::InvalidConfig(format!("configuration JSON: {e}")))
}

/// Parses a profile name given on the command line.
pub fn parse_profile(name: &str) -> Result<Profile, Error> {
    name.parse::<Profile>()
        .map_err(|e| Error::Usage(e.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;

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
