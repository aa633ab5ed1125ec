//! The verdict study (`just verdict-study`): runs Phoenix's real analysis — the pure half of
//! `analysis::measure` (`assemble`: Prometheus answers to per-step figures on the window's grid)
//! and `analysis::verdict::evaluate` with its statistics — over many synthetic experiments, and
//! prints how often each kind of candidate passes. docs/verdict.md explains the model and holds
//! the table of a run.
//!
//! The synthetic world, per run (seeded, so a run is reproducible):
//! - 3 nodes; each node's process population follows an AR(1) process with ρ = 0.9 per analysis
//!   step around 150 processes (10% standard deviation); 70% of the processes live through the
//!   run, the rest churn with exponential lifetimes (mean 3 minutes), born to track the
//!   population; every process has 20 series.
//! - Each variant's collector on each node starts at its own offset (0–20 s after the clock
//!   starts) and scrapes every collection interval at its own phase; a process counts in a step
//!   when one of the collector's scrapes saw it within the step's range — what the per-step
//!   `count_over_time` query answers. Each collector also misses a slowly varying share of the
//!   processes (AR(1), ρ = 0.9, mean 0.5%), independently per variant: the paired differences of
//!   an A/A run are autocorrelated, which is what the test must be honest about.
//! - The candidate keeps `20·(1 − r)` of each process's 20 series: a true reduction `r`.
//! - Broken candidates: drop-everything (collectors run, no process series), crash-looping (up
//!   30–60 s, then down for a growing back-off), wrong node (collectors on one of the three
//!   nodes), and rejected samples (Prometheus refuses a third of them; the exporter counts the
//!   failures).
//!
//! Flags: `--runs N` (per scenario, default 400), `--seed S` (default 1), `--duration-mins M`
//! (the Experiment's duration, warmup included; default 10), `--warmup-secs W` (default 120).

use std::collections::BTreeMap;
use std::f64::consts::PI;

use phoenix::analysis::measure::{Answers, Telemetry, Window, assemble, critical_regexes};
use phoenix::analysis::stats::autocorrelation_corrected_test;
use phoenix::analysis::verdict::{self, Outcome};
use phoenix::crd::experiment::{ExperimentSpec, InconclusiveReason, Verdict};

/// Analysis interval, seconds (the CRD default).
const STEP: i64 = 30;
/// Collection interval, seconds (the Pipeline default).
const COLLECTION: i64 = 10;
/// Nodes the experiment runs on.
const NODES: usize = 3;
/// Mean processes per node.
const PROCESSES: f64 = 150.0;
/// Series per process.
const SERIES_PER_PROCESS: u32 = 20;
/// Share of processes that live through the run.
const LONG_LIVED: f64 = 0.7;
/// Mean lifetime of a churning process, seconds.
const LIFETIME: f64 = 180.0;
/// Autocorrelation of the load and of the collectors' misses, per step.
const RHO: f64 = 0.9;
/// The Experiment's significance level.
const ALPHA: f64 = 0.05;
/// Clock zero of every run, Unix seconds.
const T0: i64 = 1_800_000_000;

/// What the candidate is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Candidate {
    /// Keeps `1 − r` of every process's series.
    Reducing(f64),
    /// Its processors drop every process metric; the collectors run and report themselves.
    DropEverything,
    /// A 20% reduction whose collectors crash-loop.
    CrashLooping,
    /// A 20% reduction whose collectors run on one node of three.
    WrongNode,
    /// A 20% reduction of which Prometheus rejects a third of the samples.
    Rejected,
}

/// One row of the table.
struct Scenario {
    name: String,
    candidate: Candidate,
    /// `minSeriesReductionPercent`, if set.
    criterion: Option<f64>,
}

fn main() {
    let args = Args::parse();
    let warmup = args.warmup_secs;
    let duration = args.duration_mins * 60;
    let window = Window::new(T0 + warmup, T0 + duration, STEP as f64, COLLECTION as f64);
    println!(
        "verdict study: {} runs per scenario, seed {}, duration {}m (warmup {}s), step {STEP}s, \
         collection {COLLECTION}s, {} steps per run, α = {ALPHA}",
        args.runs,
        args.seed,
        args.duration_mins,
        warmup,
        window.steps().len()
    );
    let mut scenarios = vec![Scenario {
        name: "A/A (identical pipelines)".into(),
        candidate: Candidate::Reducing(0.0),
        criterion: None,
    }];
    for r in [0.01, 0.02, 0.05, 0.10, 0.20, 0.50] {
        scenarios.push(Scenario {
            name: format!("true {:.0}% reduction, no criterion", r * 100.0),
            candidate: Candidate::Reducing(r),
            criterion: None,
        });
    }
    for r in [0.15, 0.17, 0.20] {
        scenarios.push(Scenario {
            name: format!("true {:.0}% reduction, criterion 15%", r * 100.0),
            candidate: Candidate::Reducing(r),
            criterion: Some(15.0),
        });
    }
    for (name, candidate) in [
        ("drop-everything candidate", Candidate::DropEverything),
        ("crash-looping candidate (20%)", Candidate::CrashLooping),
        ("wrong-node candidate (20%)", Candidate::WrongNode),
        ("rejected samples (20%)", Candidate::Rejected),
    ] {
        scenarios.push(Scenario {
            name: name.into(),
            candidate,
            criterion: Some(15.0),
        });
    }

    println!(
        "\n| {:<36} | {:>6} | {:>6} | {:>6} | {:>6} | {:>7} | {:>7} | main Inconclusive reason |",
        "scenario", "Pass", "Fail", "Incon.", "NoData", "p < α", "p₀ < α"
    );
    println!(
        "|{:-<38}|{:->8}|{:->8}|{:->8}|{:->8}|{:->9}|{:->9}|{:-<26}|",
        "", "", "", "", "", "", "", ""
    );
    for (index, scenario) in scenarios.iter().enumerate() {
        let mut tally = Tally::default();
        for run in 0..args.runs {
            let seed = args.seed ^ ((index as u64) << 40) ^ run;
            let (evaluation, no_margin) = simulate(scenario, &window, seed);
            tally.add(&evaluation, no_margin);
        }
        tally.print(&scenario.name, args.runs);
    }
}

/// Outcomes of one scenario's runs.
#[derive(Default)]
struct Tally {
    pass: u64,
    fail: u64,
    inconclusive: u64,
    no_data: u64,
    significant: u64,
    significant_without_margin: u64,
    reasons: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, e: &verdict::Evaluation, no_margin: Option<f64>) {
        if no_margin.is_some_and(|p| p < ALPHA) {
            self.significant_without_margin += 1;
        }
        match e.outcome {
            Outcome::Verdict(Verdict::Pass) => self.pass += 1,
            Outcome::Verdict(Verdict::Fail) => self.fail += 1,
            Outcome::Verdict(Verdict::Inconclusive) => self.inconclusive += 1,
            Outcome::NoData(_) => self.no_data += 1,
        }
        let p = e.results.confidence.as_ref().and_then(|c| c.p_value);
        if p.is_some_and(|p| p < ALPHA) {
            self.significant += 1;
        }
        if let Some(reason) = e.results.inconclusive_reason {
            *self.reasons.entry(reason_name(reason)).or_default() += 1;
        }
    }

    fn print(&self, name: &str, runs: u64) {
        let pct = |n: u64| format!("{:.1}%", n as f64 / runs as f64 * 100.0);
        let reason = self
            .reasons
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(r, n)| format!("{r} {}", pct(*n)))
            .unwrap_or_else(|| "-".into());
        println!(
            "| {name:<36} | {:>6} | {:>6} | {:>6} | {:>6} | {:>7} | {:>7} | {reason:<24} |",
            pct(self.pass),
            pct(self.fail),
            pct(self.inconclusive),
            pct(self.no_data),
            pct(self.significant),
            pct(self.significant_without_margin),
        );
    }
}

fn reason_name(reason: InconclusiveReason) -> String {
    format!("{reason:?}")
}

/// One synthetic experiment, judged by the real analysis; also the p-value of the same test
/// against a 0 margin.
fn simulate(scenario: &Scenario, window: &Window, seed: u64) -> (verdict::Evaluation, Option<f64>) {
    let mut rng = Rng(seed);
    let steps = window.steps();
    let end = window.end;
    let world = World::generate(&mut rng, end);
    let candidate = scenario.candidate;
    let kept = match candidate {
        Candidate::Reducing(r) => 1.0 - r,
        Candidate::DropEverything => 0.0,
        _ => 0.8,
    };
    let baseline_collectors = Collectors::steady(&mut rng, end, NODES);
    let candidate_collectors = match candidate {
        Candidate::CrashLooping => Collectors::crash_looping(&mut rng, end, NODES),
        Candidate::WrongNode => Collectors::steady(&mut rng, end, 1),
        _ => Collectors::steady(&mut rng, end, NODES),
    };
    let baseline = answers(&world, &baseline_collectors, window, &steps, 1.0, &mut rng);
    let accepted = match candidate {
        Candidate::Rejected => 2.0 / 3.0,
        _ => 1.0,
    };
    let mut cand = answers(
        &world,
        &candidate_collectors,
        window,
        &steps,
        kept * accepted,
        &mut rng,
    );
    if candidate == Candidate::Rejected {
        cand.telemetry.failed_points = cand.telemetry.exported_points.unwrap_or(0.0) / 2.0;
    }
    let critical = vec!["^postgres$".to_string()];
    let patterns = critical_regexes(&critical).unwrap_or_default();
    let b = assemble(window, &critical, &patterns, baseline, vec![]);
    let c = assemble(window, &critical, &patterns, cand, vec![]);
    // The same test without the verdict's 1% margin, to show why it has one.
    let no_margin = autocorrelation_corrected_test(
        &verdict::Pairing::of(&b, &c).relative_reductions(),
        0.0,
        ALPHA,
    )
    .map(|t| t.p_value);
    (
        verdict::evaluate(&spec(scenario.criterion), &b, &c),
        no_margin,
    )
}

fn spec(criterion: Option<f64>) -> ExperimentSpec {
    let criteria = match criterion {
        Some(c) => format!("{{minSeriesReductionPercent: {c}}}"),
        None => "{}".to_string(),
    };
    let yaml = format!(
        "baseline: {{pipelineRef: {{name: b}}}}\ncandidate: {{pipelineRef: {{name: c}}}}\n\
         analysis: {{interval: {STEP}s, significanceLevel: {ALPHA}}}\nsuccessCriteria: {criteria}"
    );
    serde_yaml::from_str(&yaml).expect("the study's spec parses")
}

/// The processes of every node: `(birth, death)` in seconds since T0.
struct World {
    nodes: Vec<Vec<(f64, f64)>>,
}

impl World {
    fn generate(rng: &mut Rng, end: i64) -> World {
        let horizon = (end - T0) as f64;
        let nodes = (0..NODES)
            .map(|_| {
                // Target population per step, AR(1) around PROCESSES with 10% sd.
                let steps = (horizon / STEP as f64).ceil() as usize + 1;
                let mut level = rng.normal();
                let target: Vec<f64> = (0..steps)
                    .map(|_| {
                        let t = PROCESSES * (1.0 + 0.1 * level);
                        level = RHO * level + (1.0 - RHO * RHO).sqrt() * rng.normal();
                        t.max(10.0)
                    })
                    .collect();
                let long_lived = (PROCESSES * LONG_LIVED).round() as usize;
                let mut processes: Vec<(f64, f64)> = (0..long_lived).map(|_| (-1e6, 1e9)).collect();
                // Churners: born every 5 s tick to reach the step's target.
                let mut alive: Vec<f64> = Vec::new(); // death times
                let mut t = -300.0;
                while t < horizon {
                    alive.retain(|death| *death > t);
                    let step = ((t.max(0.0)) / STEP as f64) as usize;
                    let want = target[step.min(steps - 1)] - long_lived as f64;
                    let missing = (want - alive.len() as f64).round().max(0.0) as usize;
                    for _ in 0..missing {
                        let birth = t + 5.0 * rng.uniform();
                        let death = birth + rng.exponential(LIFETIME);
                        alive.push(death);
                        processes.push((birth, death));
                    }
                    t += 5.0;
                }
                processes
            })
            .collect();
        World { nodes }
    }
}

/// One variant's collectors.
struct Collectors {
    nodes: Vec<Collector>,
}

/// A collector on one node: `(node, intervals it runs (seconds since T0), scrape phase)`.
type Collector = (usize, Vec<(f64, f64)>, f64);

impl Collectors {
    /// Collectors on the first `count` nodes, each started 0–20 s after T0, running throughout.
    fn steady(rng: &mut Rng, end: i64, count: usize) -> Collectors {
        Collectors {
            nodes: (0..count)
                .map(|node| {
                    let start = 20.0 * rng.uniform();
                    (
                        node,
                        vec![(start, (end - T0) as f64 + 1.0)],
                        COLLECTION as f64 * rng.uniform(),
                    )
                })
                .collect(),
        }
    }

    /// Collectors that run 30–60 s, crash, and restart after a back-off doubling from 10 s up to
    /// 5 minutes (Kubernetes' CrashLoopBackOff).
    fn crash_looping(rng: &mut Rng, end: i64, count: usize) -> Collectors {
        let horizon = (end - T0) as f64;
        Collectors {
            nodes: (0..count)
                .map(|node| {
                    let mut up = Vec::new();
                    let mut t = 20.0 * rng.uniform();
                    let mut backoff: f64 = 10.0;
                    while t < horizon {
                        let run = 30.0 + 30.0 * rng.uniform();
                        up.push((t, t + run));
                        t += run + backoff;
                        backoff = (backoff * 2.0).min(300.0);
                    }
                    (node, up, COLLECTION as f64 * rng.uniform())
                })
                .collect(),
        }
    }

    /// Scrape times (seconds since T0) of the collector on one of its nodes.
    fn scrapes(up: &[(f64, f64)], phase: f64) -> Vec<f64> {
        let mut times = Vec::new();
        for &(from, to) in up {
            let mut k = ((from - phase) / COLLECTION as f64).ceil();
            loop {
                let t = phase + k * COLLECTION as f64;
                if t >= to {
                    break;
                }
                times.push(t);
                k += 1.0;
            }
        }
        times
    }
}

/// What Prometheus would answer for one variant that keeps (and gets stored) the share `kept` of
/// every process's series: per-step series (each collector misses a slowly varying share of
/// processes), collectors per step, telemetry.
fn answers(
    world: &World,
    collectors: &Collectors,
    window: &Window,
    steps: &[i64],
    kept: f64,
    rng: &mut Rng,
) -> Answers {
    let range = window.range_secs as f64;
    // Step times in seconds since T0.
    let at: Vec<f64> = steps.iter().map(|t| (*t / 1000 - T0) as f64).collect();
    let mut series = vec![0.0; steps.len()];
    let mut reporting = vec![0.0; steps.len()];
    let mut nodes = Vec::new();
    let mut scraped = 0.0;
    for (node, up, phase) in &collectors.nodes {
        let scrapes = Collectors::scrapes(up, *phase);
        // Scrapes within each step's range: [first, end) indexes into `scrapes`.
        let in_step: Vec<(usize, usize)> = at
            .iter()
            .map(|t| {
                let first = scrapes.partition_point(|s| *s <= t - range);
                let end = scrapes.partition_point(|s| *s <= *t);
                (first, end)
            })
            .collect();
        let window_start = (window.start - T0) as f64;
        let window_end = (window.end - T0) as f64;
        if scrapes
            .iter()
            .any(|s| *s > window_start && *s <= window_end)
        {
            nodes.push(format!("node-{node}"));
        }
        let mut counts = vec![0u32; steps.len()];
        for &(birth, death) in &world.nodes[*node] {
            let first = scrapes.partition_point(|s| *s < birth);
            let last = scrapes.partition_point(|s| *s < death);
            if first >= last {
                continue; // never scraped
            }
            for (k, (a, b)) in in_step.iter().enumerate() {
                if *a < last && first < *b {
                    counts[k] += 1;
                }
            }
        }
        // This collector's misses: AR(1) share around 0.5%.
        let mut miss = rng.normal();
        for (k, count) in counts.iter().enumerate() {
            let share = (0.005 + 0.005 * miss).clamp(0.0, 0.05);
            miss = RHO * miss + (1.0 - RHO * RHO).sqrt() * rng.normal();
            let seen = (f64::from(*count) * (1.0 - share)).round();
            series[k] += seen * f64::from(SERIES_PER_PROCESS) * kept;
            scraped += seen * f64::from(SERIES_PER_PROCESS);
            if in_step[k].1 > in_step[k].0 {
                reporting[k] += 1.0;
            }
        }
    }
    let points = |values: &[f64]| -> Vec<(f64, f64)> {
        steps
            .iter()
            .zip(values)
            .filter(|(_, v)| **v > 0.0)
            .map(|(t, v)| (*t as f64 / 1000.0, v.round()))
            .collect()
    };
    let memory: Vec<f64> = reporting.iter().map(|n| n * 100e6).collect();
    let cpu: Vec<f64> = reporting.iter().map(|n| n * 0.02).collect();
    let total_series: f64 = series.iter().sum();
    let reported = !nodes.is_empty();
    Answers {
        series: points(&series),
        collectors: points(&reporting),
        cpu: points(&cpu),
        memory: points(&memory),
        executables: if total_series > 0.0 {
            vec!["postgres".to_string(), "nginx".to_string()]
        } else {
            vec![]
        },
        nodes,
        telemetry: Telemetry {
            scraped_points: reported.then_some(scraped),
            // The self-metrics go through the same exporter, so it always sends something.
            exported_points: reported.then_some(total_series + 100.0),
            failed_points: 0.0,
        },
        distinct_series: total_series / steps.len().max(1) as f64,
        datapoints_per_second: total_series / steps.len().max(1) as f64 / COLLECTION as f64,
    }
}

/// Command-line flags.
struct Args {
    runs: u64,
    seed: u64,
    duration_mins: i64,
    warmup_secs: i64,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            runs: 400,
            seed: 1,
            duration_mins: 10,
            warmup_secs: 120,
        };
        let argv: Vec<String> = std::env::args().skip(1).collect();
        for pair in argv.chunks(2) {
            let value = pair.get(1).map(String::as_str).unwrap_or("");
            let number = || -> u64 {
                value.parse().unwrap_or_else(|_| {
                    eprintln!("{} needs a whole number, got {value:?}", pair[0]);
                    std::process::exit(2)
                })
            };
            match pair[0].as_str() {
                "--runs" => args.runs = number(),
                "--seed" => args.seed = number(),
                "--duration-mins" => args.duration_mins = number() as i64,
                "--warmup-secs" => args.warmup_secs = number() as i64,
                other => {
                    eprintln!(
                        "unknown flag {other}; flags: --runs N --seed S --duration-mins M --warmup-secs W"
                    );
                    std::process::exit(2)
                }
            }
        }
        args
    }
}

/// SplitMix64 with Box-Muller normals and exponential draws.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos()
    }

    fn exponential(&mut self, mean: f64) -> f64 {
        -self.uniform().ln() * mean
    }
}
