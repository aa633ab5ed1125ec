//! Reduction per template on each simulation profile, with no control plane in the way: the real
//! simulator spawns real processes on this machine, one real collector per template (its config
//! rendered by `collector_config::render`, exactly what a Pipeline would get, but reading this
//! machine's /proc) pushes to the cluster's Prometheus, and `analysis::measure` plus
//! `analysis::verdict` — the operator's own analysis — judge each candidate against the baseline.
//!
//! Per profile: the simulator and the baseline collector start; after a warmup the top K are
//! chosen from the baseline's data (as the operator does for `topk`) and `kubectl phoenix
//! suggest`'s search picks the smallest change reaching [`SUGGEST_TARGET`] from the same data;
//! then the candidates start and all five collectors run side by side over the same processes
//! for the measured window.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use phoenix::analysis::measure::{self, Measurements, Window};
use phoenix::analysis::queries::VariantSelector;
use phoenix::analysis::verdict;
use phoenix::cli::{plan as cli_plan, suggest};
use phoenix::crd::experiment::ExperimentSpec;
use phoenix::crd::pipeline::{AggregateSpec, PipelineSpec, PipelineTemplate, TopKSpec};
use phoenix::desired::collector_config::{RenderContext, render};

use crate::cluster::Cluster;
use crate::support::{Met, Proc, Report, Result, cpu_seconds, free_port, mib, status_bytes};

/// What the reduction part is asked to do (from `PHOENIX_BENCH_*`).
#[derive(Clone, Debug)]
pub struct Plan {
    pub simulator_bin: PathBuf,
    pub collector_bin: PathBuf,
    pub out: PathBuf,
    pub profiles: Vec<String>,
    /// Simulated processes besides the critical ones.
    pub processes: u32,
    /// Cap on the simulator's total CPU, millicores (the machine has 2 cores).
    pub simulator_cpu_millicores: u32,
    /// Baseline-only time before the top K are chosen.
    pub warmup: Duration,
    /// Measured window, all collectors running.
    pub run: Duration,
    /// Top-K size for the `topk` template.
    pub k: u32,
}

/// Collection interval and analysis step.
const INTERVAL_SECS: u64 = 5;
const CRITICAL_NAMES: [&str; 3] = ["postgres", "nginx", "redis-server"];
const TEMPLATES: [PipelineTemplate; 4] = [
    PipelineTemplate::Baseline,
    PipelineTemplate::PriorityFilter,
    PipelineTemplate::Aggregate,
    PipelineTemplate::Topk,
];
/// The target applies to this profile.
const TARGET_PROFILE: &str = "high-cardinality";
const TARGET_REDUCTION: f64 = 90.0;
/// The profiles where the suggested candidate must reach [`TARGET_REDUCTION`] with every critical
/// process (no template does there).
const SUGGEST_PROFILES: [&str; 2] = ["realistic", "spike"];
/// The reduction `suggest` is asked for: the target plus a margin, since it plans from the warmup
/// and is measured over the later window.
const SUGGEST_TARGET: f64 = 92.0;
/// The variant name of the suggested candidate.
const SUGGESTED: &str = "suggested";

fn critical_patterns() -> Vec<String> {
    CRITICAL_NAMES.iter().map(|n| format!("^{n}$")).collect()
}

fn spec(template: PipelineTemplate, k: u32) -> PipelineSpec {
    let mut spec = PipelineSpec::from_template(template);
    spec.critical_processes = critical_patterns();
    spec.collection_interval = phoenix::crd::duration::SpecDuration::from_secs(INTERVAL_SECS);
    match template {
        PipelineTemplate::Aggregate => spec.aggregate = Some(Box::new(AggregateSpec::default())),
        PipelineTemplate::Topk => {
            spec.topk = Some(Box::new(TopKSpec {
                k,
                refresh_interval: "1m".parse().expect("a duration"),
                processes: vec![],
                selection_source: None,
            }))
        }
        _ => {}
    }
    spec
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One running collector.
struct Collector {
    variant: String,
    proc: Proc,
}

#[allow(clippy::too_many_arguments)]
fn start_collector(
    plan: &Plan,
    cluster: &Cluster,
    dir: &Path,
    experiment: &str,
    name: &str,
    spec: &PipelineSpec,
    topk: &[String],
) -> Result<Collector> {
    for attempt in 1..=3 {
        let health = free_port();
        let mut ctx = RenderContext::new(name, &cluster.remote_write_url);
        ctx.experiment = Some(experiment);
        ctx.variant = Some(name);
        ctx.proc_root = "/";
        ctx.health_port = health;
        ctx.self_telemetry_port = free_port();
        ctx.topk_processes = topk;
        let rendered = render(spec, &ctx).map_err(|e| format!("render {name}: {e}"))?;
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, &rendered.yaml)?;
        let mut cmd = Command::new(&plan.collector_bin);
        cmd.arg("--config")
            .arg(&file)
            .env("PHOENIX_NODE_NAME", "bench-node");
        let log = dir.join(format!("{name}-{attempt}.log"));
        let mut proc = Proc::spawn(&format!("collector {name}"), cmd, &log)?;
        match crate::support::wait_http_ok(&mut proc, health, "/", Duration::from_secs(30)) {
            Ok(()) => {
                return Ok(Collector {
                    variant: name.to_string(),
                    proc,
                });
            }
            Err(e) if attempt < 3 && e.to_string().contains("address already in use") => {
                eprintln!("bench: collector {name}: port taken, retrying");
            }
            Err(e) => return Err(e),
        }
    }
    Err(format!("collector {name} did not start").into())
}

/// One variant's figures.
struct Figures {
    variant: String,
    measured: Measurements,
    cpu_cores: f64,
    peak_rss: u64,
    errors: usize,
}

pub async fn run(plan: &Plan, cluster: &Cluster, report: &mut Report) -> Result<()> {
    report.section(format!(
        "4. reduction per template: real collector {}, real processes, {} s window",
        cluster
            .var("COLLECTOR_BIN")
            .and_then(|p| Path::new(p).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        plan.run.as_secs()
    ));
    let prom =
        phoenix::analysis::access::PrometheusAccess::default().client(&cluster.prometheus_url)?;
    for profile in &plan.profiles {
        if let Err(e) = run_profile(plan, cluster, &prom, profile, report).await {
            report.row(
                format!("{profile}: run failed"),
                e.to_string().lines().next().unwrap_or_default().to_string(),
                "-",
                Met::No,
            );
        }
    }
    report.note(format!(
        "reduction: per profile, phoenix-simulator --profile P --processes {} (CPU capped at {} \
         millicores in total) plus the critical {:?}; the baseline collector first, the top {} \
         chosen from its data after {} s (measure::topk_names, as the operator does), then \
         priority-filter, aggregate and topk beside it, all with collectionInterval {INTERVAL_SECS}s \
         and hostmetrics on this machine's /proc (so every process of the machine counts, not \
         only the simulator's). Series = mean active process series per {INTERVAL_SECS} s step \
         (analysis::measure), reduction and critical retention from analysis::verdict::evaluate, \
         collector CPU (utime+stime over the window) and peak RSS (VmHWM) from /proc.",
        plan.processes,
        plan.simulator_cpu_millicores,
        CRITICAL_NAMES,
        plan.k,
        plan.warmup.as_secs()
    ));
    Ok(())
}

async fn run_profile(
    plan: &Plan,
    cluster: &Cluster,
    prom: &phoenix::analysis::access::Prometheus,
    profile: &str,
    report: &mut Report,
) -> Result<()> {
    let dir = plan.out.join(format!("reduction-{profile}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let experiment = format!("bench/{profile}-{}", unix_now());
    eprintln!("bench: reduction on profile {profile} (label phoenix_experiment={experiment})");

    let total = plan.warmup + plan.run + Duration::from_secs(90);
    let limits =
        serde_json::json!({"limits": {"maxTotalCpuMillicores": plan.simulator_cpu_millicores}});
    let mut cmd = Command::new(&plan.simulator_bin);
    cmd.arg("--config-json")
        .arg(limits.to_string())
        .args(["--profile", profile])
        .args(["--processes", &plan.processes.to_string()])
        .args(["--duration", &format!("{}s", total.as_secs())])
        .args(["--seed", "42"])
        .args(["--critical", &CRITICAL_NAMES.join(",")]);
    let mut simulator = Proc::spawn("phoenix-simulator", cmd, &dir.join("simulator.log"))?;

    let start = unix_now();
    let mut collectors = vec![start_collector(
        plan,
        cluster,
        &dir,
        &experiment,
        PipelineTemplate::Baseline.as_str(),
        &spec(PipelineTemplate::Baseline, plan.k),
        &[],
    )?];
    tokio::time::sleep(plan.warmup).await;
    simulator.check_running()?;
    let sel = |variant: &str| VariantSelector {
        experiment: experiment.clone(),
        variant: variant.to_string(),
    };
    let warm = Window::new(
        start,
        unix_now(),
        INTERVAL_SECS as f64,
        INTERVAL_SECS as f64,
    );
    let baseline = sel(PipelineTemplate::Baseline.as_str());
    let topk = measure::topk_names(prom, &baseline, plan.k, &warm)
        .await
        .unwrap_or_default();
    eprintln!("bench:   top {} from the baseline: {topk:?}", plan.k);
    let suggestion = suggested(prom, &baseline, &warm).await;
    for t in &TEMPLATES[1..] {
        collectors.push(start_collector(
            plan,
            cluster,
            &dir,
            &experiment,
            t.as_str(),
            &spec(*t, plan.k),
            &topk,
        )?);
    }
    match &suggestion {
        Ok(s) => {
            eprintln!("bench:   suggested: {}", s.change);
            collectors.push(start_collector(
                plan,
                cluster,
                &dir,
                &experiment,
                SUGGESTED,
                &s.spec,
                &[],
            )?);
        }
        Err(e) => eprintln!("bench:   suggest failed: {e}"),
    }
    let window_start = unix_now() + INTERVAL_SECS as i64 * 2;
    let t0 = Instant::now();
    let cpu0: Vec<f64> = collectors
        .iter()
        .map(|c| cpu_seconds(c.proc.pid()).unwrap_or(0.0))
        .collect();
    let deadline = Instant::now() + plan.run;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        simulator.check_running()?;
        for c in &mut collectors {
            c.proc.check_running()?;
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let end = unix_now();
    let mut figures = Vec::new();
    for (c, cpu0) in collectors.iter().zip(cpu0) {
        let cpu = cpu_seconds(c.proc.pid()).unwrap_or(cpu0) - cpu0;
        let peak = status_bytes(c.proc.pid(), "VmHWM").unwrap_or(0);
        figures.push((c.variant.clone(), cpu / elapsed, peak));
    }
    // Let the last batches reach Prometheus before the window is read.
    tokio::time::sleep(Duration::from_secs(INTERVAL_SECS + 2)).await;
    for c in &mut collectors {
        c.proc.stop(Duration::from_secs(5));
    }
    simulator.stop(Duration::from_secs(10));

    let window = Window::new(
        window_start,
        end,
        INTERVAL_SECS as f64,
        INTERVAL_SECS as f64,
    );
    let critical = critical_patterns();
    let mut results = Vec::new();
    for (variant, cpu_cores, peak_rss) in figures {
        let measured = measure::measure(prom, &sel(&variant), &window, &critical).await?;
        let errors = export_errors(&dir, &variant);
        results.push(Figures {
            variant,
            measured,
            cpu_cores,
            peak_rss,
            errors,
        });
    }
    add_rows(profile, &results, &topk, report)?;
    match suggestion {
        Ok(s) => report.info(
            format!("{profile}: suggested candidate"),
            format!(
                "{} (planned from the warmup: −{:.1}% series)",
                s.change,
                s.plan.series_reduction_percent.unwrap_or(f64::NAN)
            ),
        ),
        Err(e) => report.row(
            format!("{profile}: suggested"),
            format!("suggest failed: {e}"),
            "-",
            Met::No,
        ),
    }
    Ok(())
}

/// `kubectl phoenix suggest`'s search over the baseline's warmup data: the smallest change with
/// [`SUGGEST_TARGET`] fewer series and every critical process.
async fn suggested(
    prom: &phoenix::analysis::access::Prometheus,
    baseline: &VariantSelector,
    warm: &Window,
) -> Result<suggest::Suggestion> {
    let data = cli_plan::read_source(prom, baseline, warm).await?;
    let ranked = measure::topk_names(prom, baseline, suggest::MAX_K + 50, warm).await?;
    let critical = critical_patterns();
    let ranked = suggest::without_critical(ranked, &critical).map_err(|e| e.to_string())?;
    let interval = phoenix::crd::duration::SpecDuration::from_secs(INTERVAL_SECS);
    suggest::search(
        &data,
        &baseline.process_series(),
        &ranked,
        &critical,
        &interval,
        SUGGEST_TARGET,
    )
    .map_err(|e| e.to_string().into())
}

/// Export failures a collector logged (a failed remote write would hide series).
fn export_errors(dir: &Path, variant: &str) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(&format!("{variant}-")) && n.ends_with(".log")
        })
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("Exporting failed") || l.contains("Permanent error"))
                .count()
        })
        .sum()
}

fn add_rows(
    profile: &str,
    results: &[Figures],
    topk: &[String],
    report: &mut Report,
) -> Result<()> {
    let Some(base) = results
        .iter()
        .find(|f| f.variant == PipelineTemplate::Baseline.as_str())
    else {
        return Err("no baseline figures".into());
    };
    let mut exp_spec: ExperimentSpec = serde_yaml::from_str(
        "baseline: {pipeline: {template: baseline}}\ncandidate: {pipeline: {template: aggregate}}\nanalysis: {interval: 5s}\nsuccessCriteria: {minSeriesReductionPercent: 90, minCriticalRetentionPercent: 100}",
    )?;
    exp_spec.analysis.interval = phoenix::crd::duration::SpecDuration::from_secs(INTERVAL_SECS);
    let base_critical: BTreeSet<&String> = base.measured.critical_names.iter().collect();
    for f in results {
        let series = crate::support::mean(
            &f.measured
                .series
                .iter()
                .flatten()
                .copied()
                .collect::<Vec<_>>(),
        )
        .unwrap_or(0.0);
        let common = format!(
            "{series:.0} series, {:.1} samples/s, CPU {:.1}% core, RSS {:.0} MiB",
            f.measured.datapoints_per_second,
            f.cpu_cores * 100.0,
            mib(f.peak_rss)
        );
        let errors = if f.errors > 0 {
            format!(", {} export errors", f.errors)
        } else {
            String::new()
        };
        if f.variant == PipelineTemplate::Baseline.as_str() {
            report.info(
                format!("{profile}: baseline"),
                format!(
                    "{common}, critical seen {}/{}{errors}",
                    base_critical.len(),
                    CRITICAL_NAMES.len()
                ),
            );
            continue;
        }
        let eval = verdict::evaluate(&exp_spec, &base.measured, &f.measured);
        let r = &eval.results;
        let reduction = r.series_reduction_percent;
        let retention = r.critical_retention_percent;
        let verdict = match eval.outcome {
            verdict::Outcome::Verdict(v) => format!("{v:?}"),
            verdict::Outcome::NoData(m) => format!("no data ({m})"),
        };
        let measured = format!(
            "−{:.1}% series, −{:.1}% samples, critical {:.0}%; {common}; verdict at ≥ 90%: {verdict}{errors}",
            reduction.unwrap_or(f64::NAN),
            r.datapoint_reduction_percent.unwrap_or(f64::NAN),
            retention.unwrap_or(f64::NAN),
        );
        let suggested_target = f.variant == SUGGESTED && SUGGEST_PROFILES.contains(&profile);
        let (target, met) = if profile == TARGET_PROFILE || suggested_target {
            let ok = reduction.is_some_and(|v| v >= TARGET_REDUCTION)
                && retention.is_some_and(|v| v >= 100.0);
            ("≥ 90% series, 100% critical", Met::from(ok))
        } else {
            ("-", Met::Info)
        };
        report.row(format!("{profile}: {}", f.variant), measured, target, met);
    }
    if !topk.is_empty() {
        report.info(format!("{profile}: top K chosen"), topk.join(", "));
    }
    Ok(())
}
