//! The `phoenix-simulator` command line: parsing ([`parse`], pure) and the entry point ([`main`])
//! that plans, checks the node, runs the supervisor or a worker, and maps the result to an exit
//! code. stdout carries only the final JSON line (or the `--dry-run` plan); messages go to stderr.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::ExitCode;

use super::config::{ENV_VAR, SimulatorConfig};
use super::supervisor::{self, RunOptions};
use super::worker::{self, WorkerSpec};
use super::{Error, node, plan};

/// `--help` text.
pub const USAGE: &str = "\
phoenix-simulator: spawns and supervises real processes with real names, CPU and memory load.

USAGE:
    phoenix-simulator [OPTIONS]

The configuration is JSON (see the phoenix::simulator docs) from --config-json, else from the
PHOENIX_SIMULATION environment variable, else the defaults; the flags below override its fields.

OPTIONS:
    --config-json <JSON>        the whole configuration
    --profile <NAME>            realistic | high-cardinality | high-churn | spike | custom
    --processes <N>             processes besides the critical ones
    --churn-per-minute <N>      processes replaced per minute
    --duration <DURATION>       e.g. 30s, 10m, 1h30m
    --seed <N>                  seed of every random choice
    --critical <A,B,...>        names always kept running (repeatable)
    --metrics-addr <ADDR:PORT>  serve Prometheus text on GET /metrics
    --dry-run                   print the plan summary as JSON and exit
    -h, --help                  print this help

EXIT CODES:
    0 completed, 1 runtime failure, 2 configuration refused (invalid, over the caps, or over the
    node's limits), 130 stopped by SIGINT, 143 stopped by SIGTERM.";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Supervise a simulation.
    Run(RunArgs),
    /// Be one simulated process (started by the supervisor).
    Worker {
        supervisor_pid: u32,
        spec: WorkerSpec,
    },
    Help,
}

/// Arguments of a supervised run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunArgs {
    pub config: SimulatorConfig,
    pub metrics_addr: Option<SocketAddr>,
    pub dry_run: bool,
}

/// Parses the arguments (without the program name). `env_config` is the value of
/// [`ENV_VAR`], used when `--config-json` is absent.
pub fn parse(args: &[String], env_config: Option<&str>) -> Result<Command, Error> {
    if args.first().map(String::as_str) == Some("worker") {
        return parse_worker(&args[1..]);
    }
    let flags = split_flags(args)?;
    if flags
        .iter()
        .any(|(flag, _)| matches!(flag.as_str(), "help" | "h"))
    {
        return Ok(Command::Help);
    }
    let json = flags
        .iter()
        .rev()
        .find(|(flag, _)| flag == "config-json")
        .and_then(|(_, v)| v.as_deref())
        .or(env_config);
    let mut config = match json {
        Some(json) => super::config::from_json(json)?,
        None => SimulatorConfig::default(),
    };
    let mut run = RunArgs {
        config: SimulatorConfig::default(),
        metrics_addr: None,
        dry_run: false,
    };
    for (flag, value) in &flags {
        let value = value.as_deref();
        match (flag.as_str(), value) {
            ("config-json", Some(_)) => {}
            ("dry-run", None) => run.dry_run = true,
            ("profile", Some(v)) => config.profile = super::config::parse_profile(v)?,
            ("processes", Some(v)) => config.processes = number(flag, v)?,
            ("churn-per-minute", Some(v)) => config.churn_per_minute = Some(number(flag, v)?),
            ("duration", Some(v)) => config.duration = v.to_string(),
            ("seed", Some(v)) => config.seed = number(flag, v)?,
            ("critical", Some(v)) => config.critical_processes.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            ),
            ("metrics-addr", Some(v)) => {
                run.metrics_addr = Some(v.parse().map_err(|_| {
                    Error::Usage(format!("--metrics-addr {v:?} is not an IP:port address"))
                })?)
            }
            ("dry-run", Some(_)) => return Err(Error::Usage("--dry-run takes no value".into())),
            (_, None) if takes_value(flag) => {
                return Err(Error::Usage(format!("--{flag} needs a value")));
            }
            _ => return Err(Error::Usage(format!("unknown option --{flag}"))),
        }
    }
    run.config = config;
    Ok(Command::Run(run))
}

/// Runs the simulator with the process's arguments (without the program name) and returns the
/// exit code.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args: Result<Vec<String>, OsString> = args.into_iter().map(OsString::into_string).collect();
    let Ok(args) = args else {
        return fail(&Error::Usage("arguments must be valid UTF-8".into()));
    };
    let env_config = std::env::var(ENV_VAR).ok().filter(|v| !v.trim().is_empty());
    match parse(&args, env_config.as_deref()) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Worker {
            supervisor_pid,
            spec,
        }) => {
            worker::run(&spec, supervisor_pid);
            ExitCode::SUCCESS
        }
        Ok(Command::Run(run)) => supervise(run),
        Err(e) => fail(&e),
    }
}

fn supervise(args: RunArgs) -> ExitCode {
    let plan = match plan::plan(&args.config) {
        Ok(plan) => plan,
        Err(e) => return fail(&e),
    };
    let node_warnings = match node::check(&plan.demand(), &node::read()) {
        Ok(warnings) => warnings,
        Err(e) => return fail(&e),
    };
    for warning in plan.warnings.iter().chain(&node_warnings) {
        eprintln!("phoenix-simulator: warning: {warning}");
    }
    if args.dry_run {
        println!(
            "{}",
            serde_json::to_string(&plan.summary()).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "phoenix-simulator: running profile {} with {} processes for {:.0}s (seed {}, {:.0} spawns/min after ramp-up)",
        plan.profile,
        plan.slots.len(),
        plan.duration.as_secs_f64(),
        plan.seed,
        plan.spawns_per_minute()
    );
    // One thread: workers die with the thread that spawned them (PR_SET_PDEATHSIG), so every
    // spawn must come from a thread that lives as long as the process.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(source) => {
            return fail(&Error::Io {
                context: "cannot start the async runtime".into(),
                source,
            });
        }
    };
    match runtime.block_on(supervisor::run(
        &plan,
        RunOptions {
            metrics_addr: args.metrics_addr,
        },
    )) {
        Ok(summary) => {
            println!("{}", serde_json::to_string(&summary).unwrap_or_default());
            ExitCode::from(summary.outcome.exit_code())
        }
        Err(e) => fail(&e),
    }
}

fn fail(error: &Error) -> ExitCode {
    eprintln!("phoenix-simulator: error: {error}");
    ExitCode::from(error.exit_code())
}

fn parse_worker(args: &[String]) -> Result<Command, Error> {
    let mut supervisor_pid = None;
    let mut spec = None;
    for (flag, value) in split_flags(args)? {
        match (flag.as_str(), value) {
            ("supervisor-pid", Some(v)) => supervisor_pid = Some(number::<u32>(&flag, &v)?),
            ("spec", Some(v)) => {
                spec = Some(
                    serde_json::from_str::<WorkerSpec>(&v)
                        .map_err(|e| Error::Usage(format!("worker --spec: {e}")))?,
                )
            }
            _ => return Err(Error::Usage(format!("unknown worker option --{flag}"))),
        }
    }
    match (supervisor_pid, spec) {
        (Some(supervisor_pid), Some(spec)) => Ok(Command::Worker {
            supervisor_pid,
            spec,
        }),
        _ => Err(Error::Usage(
            "worker needs --supervisor-pid and --spec".into(),
        )),
    }
}

/// `--flag value`, `--flag=value` and bare `--flag` (or `-h`) into (flag, value) pairs.
fn split_flags(args: &[String]) -> Result<Vec<(String, Option<String>)>, Error> {
    let mut flags = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let name = match arg
            .strip_prefix("--")
            .or_else(|| (arg == "-h").then_some("h"))
        {
            Some(name) if !name.is_empty() => name,
            _ => return Err(Error::Usage(format!("unexpected argument {arg:?}"))),
        };
        let (flag, value) = match name.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None if takes_value(name) => (name.to_string(), rest.next().cloned()),
            None => (name.to_string(), None),
        };
        flags.push((flag, value));
    }
    Ok(flags)
}

fn takes_value(flag: &str) -> bool {
    matches!(
        flag,
        "config-json"
            | "profile"
            | "processes"
            | "churn-per-minute"
            | "duration"
            | "seed"
            | "critical"
            | "metrics-addr"
            | "supervisor-pid"
            | "spec"
    )
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, Error> {
    value
        .parse()
        .map_err(|_| Error::Usage(format!("--{flag} {value:?} is not a valid number")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Profile;
    use crate::load::{CpuLoad, LoadPattern, MemoryLoad};

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    fn run_args(line: &str, env: Option<&str>) -> RunArgs {
        match parse(&args(line), env) {
            Ok(Command::Run(run)) => run,
            other => panic!("expected a run, got {other:?}"),
        }
    }

    #[test]
    fn flags_set_the_common_fields() {
        let run = run_args(
            "--profile high-cardinality --processes 200 --duration=60s --seed 7 --critical postgres,nginx --critical redis-server --metrics-addr 127.0.0.1:9464",
            None,
        );
        let c = &run.config;
        assert_eq!(
            (c.profile, c.processes, c.duration.as_str(), c.seed),
            (Profile::HighCardinality, 200, "60s", 7)
        );
        assert_eq!(c.critical_processes, ["postgres", "nginx", "redis-server"]);
        assert_eq!(run.metrics_addr, "127.0.0.1:9464".parse().ok());
        assert!(!run.dry_run);
    }

    #[test]
    fn json_comes_from_the_flag_then_the_environment_and_flags_override_it() {
        let env = r#"{"profile":"spike","processes":12,"seed":3}"#;
        let from_env = run_args("--seed 4", Some(env));
        assert_eq!(
            (
                from_env.config.profile,
                from_env.config.processes,
                from_env.config.seed
            ),
            (Profile::Spike, 12, 4)
        );
        let flag_json = vec![
            "--config-json".to_string(),
            r#"{"profile":"high-churn","processes":5}"#.to_string(),
            "--dry-run".to_string(),
        ];
        match parse(&flag_json, Some(env)) {
            Ok(Command::Run(run)) => {
                assert_eq!(
                    (run.config.profile, run.config.processes),
                    (Profile::HighChurn, 5)
                );
                assert!(run.dry_run);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(run_args("", None).config, SimulatorConfig::default());
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        for line in [
            "--processes many",
            "--profile bursty",
            "--bogus 1",
            "--duration",
            "stray",
            "--metrics-addr localhost",
            "--dry-run=yes",
        ] {
            let err = parse(&args(line), None).expect_err(line);
            assert_eq!(err.exit_code(), 2, "{line}: {err}");
        }
        assert!(matches!(
            parse(&args("--config-json {"), None),
            Err(Error::InvalidConfig(_))
        ));
        assert_eq!(
            parse(&args("--processes 3 -h"), None).ok(),
            Some(Command::Help)
        );
    }

    #[test]
    fn worker_mode_reads_its_spec() {
        let spec = WorkerSpec {
            name: "nginx".into(),
            lifetime_ms: 1_000,
            seed: 1,
            cpu: CpuLoad {
                pattern: LoadPattern::Steady,
                peak_millicores: 5,
            },
            memory: MemoryLoad {
                pattern: LoadPattern::Steady,
                peak_kib: 256,
            },
        };
        let json = serde_json::to_string(&spec).expect("serializable");
        let line = vec![
            "worker".into(),
            "--supervisor-pid".into(),
            "42".into(),
            "--spec".into(),
            json,
        ];
        assert_eq!(
            parse(&line, None).ok(),
            Some(Command::Worker {
                supervisor_pid: 42,
                spec
            })
        );
        assert!(parse(&args("worker --supervisor-pid 42"), None).is_err());
    }
}
