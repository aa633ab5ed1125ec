//! The process simulator behind the `phoenix-simulator` binary: it spawns and supervises real OS
//! processes with real names, CPU and memory load, and churn, so the OpenTelemetry hostmetrics
//! `process` scraper on the node sees a known, reproducible population.
//!
//! # Configuration
//!
//! One JSON object ([`SimulatorConfig`]), shaped like the Simulation CRD's `spec` so the operator
//! can pass the spec through (unknown fields such as `nodeSelector` are ignored). Every field is
//! optional; the defaults are shown.
//!
//! ```json
//! {
//!   "profile": "realistic",          // realistic | high-cardinality | high-churn | spike | custom
//!   "processes": 100,                // besides the critical ones; not used by custom
//!   "churnPerMinute": 30,            // processes replaced per minute; absent: the profile's rate
//!   "duration": "10m",               // 30s, 10m, 1h30m, 500ms, 1.5s (or bare seconds); ≤ 24h
//!   "seed": 1,                       // same config + seed → same names, schedule and loads
//!   "criticalProcesses": ["postgres", "nginx"],  // ≤ 50 names of 1–15 [A-Za-z0-9._-]
//!   "custom": {                      // profile custom only
//!     "patterns": [{
//!       "nameTemplate": "api-{i}",   // {i}: sequence in the pattern; {rand}: 4 seeded hex digits
//!       "count": 10,
//!       "lifetime": "30s",           // absent: the whole run; else replaced every lifetime (≥ 1s)
//!       "cpu": {"pattern": "spiky", "millicores": 200},      // steady|spiky|growing|random; peak
//!       "memory": {"pattern": "growing", "megabytes": 64}    // same patterns; peak MiB
//!     }]
//!   },
//!   "limits": {                      // optional; each at most its hard cap
//!     "maxProcesses": 5000, "maxSpawnsPerSecond": 100,
//!     "maxCpuMillicoresPerProcess": 1000, "maxTotalCpuMillicores": 2000,
//!     "maxMemoryMibPerProcess": 256, "maxTotalMemoryMib": 2048
//!   }
//! }
//! ```
//!
//! The operator passes it in the environment variable `PHOENIX_SIMULATION` ([`config::ENV_VAR`]);
//! `--config-json` does the same on the command line, and flags override single fields:
//!
//! ```text
//! phoenix-simulator --profile high-cardinality --processes 200 --duration 60s --seed 7 \
//!     --critical postgres,nginx --churn-per-minute 30 --metrics-addr 0.0.0.0:9464 [--dry-run]
//! ```
//!
//! The profiles are described in [`profiles`], the load patterns in [`load`].
//!
//! # Caps and refusals
//!
//! Hard caps ([`Limits::HARD`]): 5000 processes (plus up to 50 critical ones), 100 spawns per
//! second, 1000 millicores and 256 MiB per process, 16 cores and 16 GiB in total (defaults
//! 2000 millicores and 2048 MiB). Built-in profiles scale their CPU and memory into the totals;
//! anything else over a cap is refused, and so is a plan that exceeds the node's `RLIMIT_NPROC`,
//! `pid_max`/`threads-max`, the cgroup's `pids.max`, or 80 % of the available memory
//! (`MemAvailable` and the cgroup's `memory.max`). A refusal prints one `phoenix-simulator: error:
//! …` line on stderr and exits with code **2** ([`EXIT_REFUSED`]) before starting any process.
//! Other exit codes: 0 completed, 1 runtime failure, 130/143 stopped by SIGINT/SIGTERM.
//!
//! # What the process scraper sees
//!
//! The hostmetrics `process` scraper (gopsutil on Linux) reports:
//! - `process.executable.name` = the `Name:` of `/proc/<pid>/status`, i.e. the kernel's `comm`
//!   (at most 15 characters); when it is exactly 15 long, gopsutil extends it with the base name
//!   of `argv[0]` if that starts with it;
//! - `process.command` = `argv[0]`, `process.command_line` = the whole command line;
//! - `process.executable.path` = the target of `/proc/<pid>/exe`.
//!
//! Each worker is this binary executed through a symlink named after the process, with
//! `argv[0]` = the name and `PR_SET_NAME` = the name, so `comm`, `Name:` and `argv[0]` all carry
//! it (names are cut to 15 characters up front, so they agree exactly). The command line is
//! `<name> worker --supervisor-pid <pid> --spec <json>`, and the executable path is the
//! simulator binary's, the same for every worker.
//!
//! # Output
//!
//! stdout gets exactly one line, the JSON [`supervisor::Summary`] at exit (or the plan summary
//! with `--dry-run`). With `--metrics-addr`, `GET /metrics` serves Prometheus text:
//! `phoenix_simulator_{info,planned_processes,critical_processes,active_processes,
//! critical_processes_alive,peak_active_processes,spawned_total,exited_total,killed_total,
//! respawned_total,spawn_failures_total,planned_spawns_per_minute,duration_seconds,elapsed_seconds}`.
//!
//! # Layout
//!
//! Planning is pure ([`plan::plan`], [`profiles`], [`load`]) and unit-tested from seeds; the
//! runtime ([`supervisor`], [`worker`]) executes a plan; [`node`] reads and checks the machine.

pub mod cli;
pub mod config;
pub mod duration;
pub mod load;
pub mod metrics;
pub mod node;
pub mod plan;
pub mod profiles;
pub mod rng;
pub mod supervisor;
pub mod worker;

pub use config::{Limits, Profile, SimulatorConfig};
pub use plan::{Plan, Spawn, plan};

/// Exit code of a configuration refused before anything started (the contract's).
pub const EXIT_REFUSED: u8 = phoenix_simulator_config::EXIT_REFUSED;
/// Exit code of a run that failed at runtime.
pub const EXIT_FAILED: u8 = 1;

/// Why the simulator stopped. Its own enum rather than the operator's: the simulator is a separate
/// binary whose errors end in an exit code, never in a Kubernetes condition.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} (see --help)")]
    Usage(String),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("configuration exceeds the simulator's caps: {0}")]
    OverCaps(String),
    #[error("the node cannot host this simulation: {0}")]
    NodeLimits(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl Error {
    /// [`EXIT_REFUSED`] for anything wrong with the request, [`EXIT_FAILED`] otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_)
            | Error::InvalidConfig(_)
            | Error::OverCaps(_)
            | Error::NodeLimits(_) => EXIT_REFUSED,
            Error::Io { .. } => EXIT_FAILED,
        }
    }
}
