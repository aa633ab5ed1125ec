//! `just bench` (scripts/bench.sh → `cargo bench --bench phoenix`): Phoenix measured on this
//! machine and printed as a table of figures next to their targets. Timings are printed, never
//! asserted.
//!
//! 1. apply → objects: Experiment created → both collector DaemonSets and the simulator Job exist,
//!    split per controller stage.
//! 2. scale: many concurrent Experiments on the kwok nodes — operator peak RSS and CPU, apiserver
//!    requests per Experiment, apply → objects during the burst, time until all are Running; then
//!    steady-state writes.
//! 3. restart: kill -9 with everything present — resync time and the writes it made.
//! 4. reduction per template and simulation profile, real collector on real processes.
//! 5. peer comparison (OpenTelemetry Operator), when it can be built here, with Phoenix / peer
//!    ratios.
//! 6. scale without pods (part `control-plane`, first): 1,000 and 2,000 Experiments whose targets
//!    match no node — peak RSS, a steady-state window (writes, RSS over time), restart peak
//!    against steady state, resync time and writes.
//! 7. analysis cost (part `control-plane`, last): Experiments ending together, fed by remote
//!    write — queries per analysis, analysis latency, time until all are analyzed.
//!
//! Needs the local control plane: `PHOENIX_E2E_ENV` names the env file of a cluster that
//! scripts/bench.sh started for this run (and tears down). Sizes come from `PHOENIX_BENCH_*`
//! (see scripts/bench.sh). Writes `$PHOENIX_BENCH_OUT/report.md` (default target/bench).

#[path = "phoenix/analysis_cost.rs"]
mod analysis_cost;
#[path = "phoenix/cluster.rs"]
mod cluster;
#[path = "phoenix/control_plane.rs"]
mod control_plane;
#[path = "phoenix/objects.rs"]
mod objects;
#[path = "phoenix/peer.rs"]
mod peer;
#[path = "phoenix/reduction.rs"]
mod reduction;
#[path = "phoenix/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{Met, Report, Result, env_or};

fn main() -> std::process::ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs bench targets without it.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("phoenix bench: not run under `cargo test`; run `just bench`");
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("bench: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A comma-separated list of sizes from `name` (an empty value: none).
fn sizes(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .filter(|&v| v > 0)
        .collect()
}

fn parts() -> Vec<String> {
    std::env::var("PHOENIX_BENCH_PARTS")
        .unwrap_or_else(|_| "reduction,control-plane,peer".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Runs the parts; `Ok(false)` when one failed (the table still prints what was measured).
async fn run() -> Result<bool> {
    let started = Instant::now();
    let load_at_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let commit_at_start = commit();
    let out = std::env::var("PHOENIX_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target/bench"));
    std::fs::create_dir_all(&out)?;
    let env_file = std::env::var("PHOENIX_E2E_ENV")
        .map_err(|_| "PHOENIX_E2E_ENV is not set: run the bench with `just bench`")?;
    let cluster = cluster::Cluster::from_env_file(Path::new(&env_file))?;
    let release = repo().join("target/release");
    let parts = parts();
    let mut report = Report::default();
    let mut ok = true;

    if parts.iter().any(|p| p == "reduction") {
        let plan = reduction::Plan {
            simulator_bin: release.join("phoenix-simulator"),
            collector_bin: cluster
                .var("COLLECTOR_BIN")
                .map(PathBuf::from)
                .ok_or("cluster env lacks COLLECTOR_BIN")?,
            out: out.clone(),
            profiles: std::env::var("PHOENIX_BENCH_PROFILES")
                .unwrap_or_else(|_| "high-cardinality,realistic,high-churn,spike".into())
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            processes: env_or("PHOENIX_BENCH_PROCESSES", 300),
            simulator_cpu_millicores: env_or("PHOENIX_BENCH_SIMULATOR_MILLICORES", 400),
            warmup: Duration::from_secs(env_or("PHOENIX_BENCH_WARMUP_SECS", 15)),
            run: Duration::from_secs(env_or("PHOENIX_BENCH_REDUCTION_SECS", 40)),
            k: env_or("PHOENIX_BENCH_TOPK", 10),
        };
        if let Err(e) = reduction::run(&plan, &cluster, &mut report).await {
            report.row("reduction part", format!("failed: {e}"), "-", Met::No);
            ok = false;
        }
    }

    if parts.iter().any(|p| p == "control-plane") {
        let plan = control_plane::Plan {
            operator_bin: operator_bin(),
            crds: repo().join("crds"),
            out: out.clone(),
            apply: env_or("PHOENIX_BENCH_APPLY", 200),
            experiments: sizes("PHOENIX_BENCH_EXPERIMENTS", "500"),
            apply_warmup: env_or("PHOENIX_BENCH_APPLY_WARMUP", 5),
            simulation: env_or("PHOENIX_BENCH_SCALE_SIMULATION", 1u8) != 0,
            scale_nodes: env_or("PHOENIX_BENCH_SCALE_NODES", 1),
            concurrency: env_or("PHOENIX_BENCH_CONCURRENCY", 8),
            running_timeout: Duration::from_secs(env_or("PHOENIX_BENCH_RUNNING_TIMEOUT_SECS", 600)),
            pods_steady: Duration::from_secs(env_or("PHOENIX_BENCH_PODS_STEADY_SECS", 60)),
            steady: Duration::from_secs(env_or("PHOENIX_BENCH_STEADY_SECS", 600)),
            objects: sizes("PHOENIX_BENCH_OBJECTS", "1000,2000"),
            objects_simulation: env_or("PHOENIX_BENCH_OBJECTS_SIMULATION", 0u8) != 0,
            objects_timeout: Duration::from_secs(env_or("PHOENIX_BENCH_OBJECTS_TIMEOUT_SECS", 600)),
            analysis: env_or("PHOENIX_BENCH_ANALYSIS", 100),
            analysis_duration_secs: env_or("PHOENIX_BENCH_ANALYSIS_DURATION_SECS", 60),
            max_control_plane_bytes: env_or("PHOENIX_BENCH_MAX_CONTROL_PLANE_MIB", 6144u64) << 20,
            min_available_bytes: env_or("PHOENIX_BENCH_MIN_AVAILABLE_MIB", 4096u64) << 20,
        };
        if let Err(e) = control_plane::run(&plan, &cluster, &mut report).await {
            report.row("control-plane parts", format!("failed: {e}"), "-", Met::No);
            ok = false;
        }
    }

    if parts.iter().any(|p| p == "peer") {
        let version = std::env::var("PHOENIX_BENCH_PEER_VERSION").unwrap_or_default();
        report.section(format!("5. peer: OpenTelemetry Operator {version}"));
        let plan = peer::Plan {
            bin: match (
                std::env::var("PHOENIX_BENCH_PEER_BIN"),
                std::env::var("PHOENIX_BENCH_PEER_SKIP"),
            ) {
                (_, Ok(why)) => Err(why),
                (Ok(bin), _) => Ok(PathBuf::from(bin)),
                (Err(_), _) => {
                    Err("PHOENIX_BENCH_PEER_BIN not set (run through scripts/bench.sh)".into())
                }
            },
            crds: std::env::var("PHOENIX_BENCH_PEER_CRDS")
                .ok()
                .map(PathBuf::from),
            version,
            out: out.clone(),
            apply: env_or("PHOENIX_BENCH_PEER_APPLY", 50),
            apply_warmup: 5,
            collectors: env_or("PHOENIX_BENCH_PEER_COLLECTORS", 250),
            concurrency: env_or("PHOENIX_BENCH_CONCURRENCY", 8),
            running_timeout: Duration::from_secs(env_or("PHOENIX_BENCH_RUNNING_TIMEOUT_SECS", 600)),
            steady: Duration::from_secs(env_or("PHOENIX_BENCH_PODS_STEADY_SECS", 60)),
        };
        if let Err(e) = peer::run(&plan, &cluster, &mut report).await {
            report.row("peer part", format!("failed: {e}"), "-", Met::No);
            ok = false;
        }
    }

    // Sections in their numbered order (the parts run in another order).
    report.sections.sort_by(|a, b| a.0.cmp(&b.0));
    let elapsed = started.elapsed().as_secs_f64();
    let header = environment(&cluster, elapsed, &load_at_start, &commit_at_start);
    let table = report.text_table();
    println!("\n{header}\n{table}");
    if !report.notes.is_empty() {
        println!("notes:");
        for n in &report.notes {
            println!("- {n}");
        }
    }
    let md = format!(
        "# Phoenix benchmark run\n\n```\n{header}```\n{}",
        report.markdown()
    );
    std::fs::write(out.join("report.md"), md)?;
    eprintln!(
        "bench: report written to {}",
        out.join("report.md").display()
    );
    Ok(ok)
}

/// Machine, versions, date and run time, one per line.
/// The operator under test: scripts/bench.sh sets the static binary the image ships; a dev run may
/// use a debug build (its RSS includes debug code and is not comparable).
fn operator_bin() -> PathBuf {
    std::env::var("PHOENIX_BENCH_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target/release/phoenix-operator"))
}

/// The commit measured (read when the run starts: the binaries were built from it, and edits
/// made while the bench runs are not in them).
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(repo())
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let dirty = if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " + uncommitted changes"
    };
    format!("{}{dirty}", git(&["log", "-1", "--format=%h %s"]))
}

fn environment(
    cluster: &cluster::Cluster,
    elapsed: f64,
    load_at_start: &str,
    commit: &str,
) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|x| x.1.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let operator_path = operator_bin();
    // Which binary, and how it is linked (the allocator behind the RSS figures differs).
    let operator = format!(
        "{} ({})",
        operator_path
            .strip_prefix(repo())
            .unwrap_or(&operator_path)
            .display(),
        std::process::Command::new("file")
            .arg("-b")
            .arg(&operator_path)
            .output()
            .map(|o| {
                let d = String::from_utf8_lossy(&o.stdout);
                d.split(", ")
                    .filter(|p| p.contains("linked"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    );
    let v = cluster::version_of;
    let collector = cluster.var("COLLECTOR_BIN").unwrap_or("otelcol");
    let kwok_version = std::env::var("KWOK_BIN")
        .map(|k| v(Path::new(&k), &["--version"]))
        .unwrap_or_else(|_| "unknown".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "date:           {date}\n\
         phoenix:        {commit}\n\
         operator:       {operator}\n\
         machine:        {nproc} CPUs ({model}), {:.1} GiB memory\n\
         load average:   {} at the start, {} at the end (1/5/15 min; other work on the machine counts)\n\
         kube-apiserver: {}\n\
         kwok:           {kwok_version}\n\
         collector:      {}\n\
         prometheus:     {}\n\
         rustc:          {}\n\
         bench run time: {:.1} min\n",
        mem_kib / 1024.0 / 1024.0,
        load_at_start
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        v(&cluster.k8s_bin("kube-apiserver"), &["--version"]),
        v(Path::new(collector), &["--version"]),
        v(Path::new("prometheus"), &["--version"]),
        v(Path::new("rustc"), &["--version"]),
        elapsed / 60.0,
    )
}
