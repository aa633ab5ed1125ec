//! The operator on the local control plane: apply → objects latency, scale (peak RSS, CPU,
//! apiserver requests per Experiment, time until all are Running), steady-state writes, and a
//! restart with every resource present (resync time, writes made while resyncing).
//!
//! Creation times come from watches (DaemonSets, Jobs, Experiments) timestamped as each event
//! arrives, never from polling the apiserver; request counts come from the apiserver's own
//! `apiserver_request_total`.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use phoenix::crd::experiment::{Experiment, ExperimentPhase};
use phoenix::crd::{Pipeline, Simulation};
use phoenix::desired::children::{self, Side};
use phoenix::desired::labels;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::{self, Cluster};
use crate::support::{
    Met, Proc, Report, Result, cpu_seconds, http_get, mib, ms, quantile, status_bytes,
};

/// What the control-plane parts are asked to do (from `PHOENIX_BENCH_*`).
#[derive(Clone, Debug)]
pub struct Plan {
    pub operator_bin: std::path::PathBuf,
    pub crds: std::path::PathBuf,
    pub out: std::path::PathBuf,
    /// Sequential Experiments for apply → objects.
    pub apply: usize,
    /// Concurrent Experiments for the scale test: each step adds Experiments up to its total.
    pub experiments: Vec<usize>,
    /// Whether scale-test Experiments carry a Simulation (a Job of 3 pods each).
    pub simulation: bool,
    /// Experiments applied before the timed ones (first-use costs: not counted).
    pub apply_warmup: usize,
    /// kwok nodes the scale Experiments target: 1 (kwok-node-0) or 3 (all).
    pub scale_nodes: usize,
    /// Creates in flight during the scale burst.
    pub concurrency: usize,
    /// Longest wait for every scale Experiment to be Running.
    pub running_timeout: Duration,
    /// Steady-state window after the scale step with pods (writes only).
    pub pods_steady: Duration,
    /// Steady-state window of the scale part without pods (writes and RSS over time).
    pub steady: Duration,
    /// Scale without pods: each step adds Experiments (targets matching no node) up to its total.
    pub objects: Vec<usize>,
    /// Whether the Experiments of the scale part without pods carry a Simulation (a Job whose one
    /// pod stays unscheduled).
    pub objects_simulation: bool,
    /// Longest wait for a step of the scale part without pods to have all its objects.
    pub objects_timeout: Duration,
    /// Experiments of the analysis-cost part, all ending their run within about a minute.
    pub analysis: usize,
    /// Their run length (`spec.duration`), seconds.
    pub analysis_duration_secs: u64,
    /// The scale test stops when etcd + kube-apiserver grow past this.
    pub max_control_plane_bytes: u64,
    /// … or when the machine's MemAvailable falls below this.
    pub min_available_bytes: u64,
}

const APPLY_NS: &str = "bench-apply";
const SCALE_NS: &str = "bench-scale";
/// A node selector no node matches: the apply test's Experiments get all their objects (2
/// DaemonSets scheduling nowhere, a Job whose one pod stays Pending) without thousands of pods.
pub const NO_NODES: &str = "{phoenix.io/bench: no-such-node}";
const ALL_KWOK_NODES: &str = "{type: kwok}";
pub const ONE_KWOK_NODE: &str = "{kubernetes.io/hostname: kwok-node-0}";

// -------------------------------------------------------------------------------------------------
// The operator process

/// The real `phoenix-operator` binary, watching all namespaces.
pub struct Operator {
    proc: Proc,
    pub port: u16,
}

impl Operator {
    pub fn start(plan: &Plan, cluster: &Cluster, log: &Path) -> Result<Operator> {
        let port = crate::support::free_port();
        let mut cmd = Command::new(&plan.operator_bin);
        cmd.env("KUBECONFIG", &cluster.kubeconfig)
            .env("PHOENIX_LOG_LEVEL", "info")
            .args(["--prometheus-url", &cluster.prometheus_url])
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .args(["--collector-image", "otelcol-phoenix:bench"])
            .args(["--simulator-image", "phoenix-simulator:bench"])
            // kwok's pods come up at the pace of kube-controller-manager's client rate limit
            // (20 requests/s per controller): thousands of collector pods take minutes, longer than
            // the default 300 s deploy timeout would allow.
            .args(["--deploy-timeout-seconds", "7200"]);
        let mut proc = Proc::spawn("phoenix-operator", cmd, log)?;
        crate::support::wait_http_ok(&mut proc, port, "/readyz", Duration::from_secs(60))?;
        Ok(Operator { proc, port })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid())
    }

    /// Peak resident set size (VmHWM), bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        status_bytes(self.pid(), "VmHWM")
    }

    pub fn rss(&self) -> Option<u64> {
        status_bytes(self.pid(), "VmRSS")
    }

    /// The sum of the samples on the operator's /metrics whose line starts with `prefix`
    /// (e.g. `phoenix_prometheus_query_duration_seconds_count{`).
    pub fn metric_sum(&self, prefix: &str) -> Option<f64> {
        let (status, body) = http_get(self.port, "/metrics").ok()?;
        (status == 200).then(|| {
            body.lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
                .sum()
        })
    }

    /// (reconciles started, reconciles finished), summed over the controllers.
    pub fn reconciles(&self) -> Option<(f64, f64)> {
        let (status, body) = http_get(self.port, "/metrics").ok()?;
        (status == 200).then(|| {
            let sum = |prefix: &str| -> f64 {
                body.lines()
                    .filter(|l| l.starts_with(prefix))
                    .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
                    .sum()
            };
            (
                sum("phoenix_reconciles_total{"),
                sum("phoenix_reconcile_duration_seconds_count{"),
            )
        })
    }

    pub fn check_running(&mut self) -> Result<()> {
        self.proc.check_running()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(mut self) {
        self.proc.kill();
    }

    pub fn stop(mut self) {
        self.proc.stop(Duration::from_secs(10));
    }
}

// -------------------------------------------------------------------------------------------------
// Watches

#[derive(Default)]
pub struct Seen {
    /// `ns/name` → when the DaemonSet was first seen.
    pub daemonsets: HashMap<String, Instant>,
    pub jobs: HashMap<String, Instant>,
    pub pipelines: HashMap<String, Instant>,
    pub simulations: HashMap<String, Instant>,
    /// `ns/name` → current phase of each Experiment.
    pub phases: HashMap<String, Option<ExperimentPhase>>,
    /// `ns/name` → when the Experiment was first seen Running.
    pub running: HashMap<String, Instant>,
    /// `ns/name` → `status.runningSince` (Unix seconds), once set.
    pub running_since: HashMap<String, i64>,
    /// `ns/name` → when the Experiment was first seen Analyzing.
    pub analyzing: HashMap<String, Instant>,
    /// `ns/name` → when the Experiment was first seen in a terminal phase (monotonic and wall
    /// clock), and that phase with its verdict.
    pub finished: HashMap<String, (Instant, std::time::SystemTime, String)>,
}

/// Watches on DaemonSets, Jobs (Phoenix-managed) and Experiments, timestamping each first sight.
pub struct Tracker {
    seen: Arc<Mutex<Seen>>,
    tick: watch::Receiver<u64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Tracker {
    pub async fn start(client: &Client) -> Result<Tracker> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (tx, tick) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let managed = watcher::Config::default().labels("app.kubernetes.io/managed-by=phoenix");
        let mut tasks = Vec::new();

        let (s, t) = (seen.clone(), tx.clone());
        let ds = watcher::watcher(
            Api::<PartialObjectMeta<DaemonSet>>::all(client.clone()),
            managed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            record_first_seen(ds, s, t, |seen| &mut seen.daemonsets).await
        }));
        let (s, t) = (seen.clone(), tx.clone());
        let jobs = watcher::watcher(
            Api::<PartialObjectMeta<Job>>::all(client.clone()),
            managed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            record_first_seen(jobs, s, t, |seen| &mut seen.jobs).await
        }));
        let (s, t) = (seen.clone(), tx.clone());
        let pipelines = watcher::watcher(
            Api::<PartialObjectMeta<Pipeline>>::all(client.clone()),
            managed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            record_first_seen(pipelines, s, t, |seen| &mut seen.pipelines).await
        }));
        let (s, t) = (seen.clone(), tx.clone());
        let sims = watcher::watcher(
            Api::<PartialObjectMeta<Simulation>>::all(client.clone()),
            managed,
        );
        tasks.push(tokio::spawn(async move {
            record_first_seen(sims, s, t, |seen| &mut seen.simulations).await
        }));
        let (s, t) = (seen.clone(), tx.clone());
        let exps = watcher::watcher(
            Api::<Experiment>::all(client.clone()),
            watcher::Config::default(),
        );
        tasks.push(tokio::spawn(async move {
            let mut events = std::pin::pin!(exps.default_backoff());
            while let Some(event) = events.next().await {
                let now = Instant::now();
                let exp = match event {
                    Ok(Event::Apply(e) | Event::InitApply(e)) => e,
                    _ => continue,
                };
                let key = key_of(&exp);
                let status = exp.status.as_ref();
                let phase = status.and_then(|s| s.phase);
                if let Ok(mut seen) = s.lock() {
                    if phase == Some(ExperimentPhase::Running) {
                        seen.running.entry(key.clone()).or_insert(now);
                    }
                    if let Some(t) = status.and_then(|s| s.running_since.as_ref()) {
                        seen.running_since.insert(key.clone(), t.0.as_second());
                    }
                    if phase == Some(ExperimentPhase::Analyzing) {
                        seen.analyzing.entry(key.clone()).or_insert(now);
                    }
                    if let Some(p) = phase.filter(|p| p.is_terminal()) {
                        let verdict = status.and_then(|s| s.verdict);
                        let outcome = match verdict {
                            Some(v) => format!("{p:?}/{v:?}"),
                            None => format!("{p:?}"),
                        };
                        seen.finished.entry(key.clone()).or_insert((
                            now,
                            std::time::SystemTime::now(),
                            outcome,
                        ));
                    }
                    seen.phases.insert(key, phase);
                }
                t.send_modify(|n| *n += 1);
            }
        }));
        let tracker = Tracker { seen, tick, tasks };
        // Let the watches list before anything is timed.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(tracker)
    }

    /// Waits until `done` holds on the seen state, or `timeout`; returns whether it held.
    pub async fn wait(&mut self, timeout: Duration, done: impl Fn(&Seen) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.seen.lock().map(|s| done(&s)).unwrap_or(false) {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.tick.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.seen.lock().map(|s| done(&s)).unwrap_or(false),
            }
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&Seen) -> T) -> Option<T> {
        self.seen.lock().ok().map(|s| f(&s))
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn record_first_seen<K, S>(
    stream: S,
    seen: Arc<Mutex<Seen>>,
    tick: Arc<watch::Sender<u64>>,
    map: fn(&mut Seen) -> &mut HashMap<String, Instant>,
) where
    K: Resource + Clone,
    S: futures::Stream<Item = std::result::Result<Event<PartialObjectMeta<K>>, watcher::Error>>
        + Send,
{
    let mut events = std::pin::pin!(stream.default_backoff());
    while let Some(event) = events.next().await {
        let now = Instant::now();
        let meta = match event {
            Ok(Event::Apply(m) | Event::InitApply(m)) => m,
            _ => continue,
        };
        let key = format!(
            "{}/{}",
            meta.namespace().unwrap_or_default(),
            meta.name_any()
        );
        if let Ok(mut s) = seen.lock() {
            map(&mut s).entry(key).or_insert(now);
        }
        tick.send_modify(|n| *n += 1);
    }
}

fn key_of<K: ResourceExt>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The keys of what one Experiment must produce: two collector DaemonSets and the simulator Job.
fn child_keys(ns: &str, exp: &str) -> ([String; 2], String) {
    let ds = |side| {
        format!(
            "{ns}/{}",
            labels::collector_name(&children::pipeline_name(exp, side))
        )
    };
    (
        [ds(Side::Baseline), ds(Side::Candidate)],
        format!("{ns}/{}", labels::job_name(&children::simulation_name(exp))),
    )
}

/// When all of one Experiment's objects had been seen (the latest of the three), if they had.
pub fn children_seen(seen: &Seen, ns: &str, exp: &str, with_job: bool) -> Option<Instant> {
    let ([b, c], job) = child_keys(ns, exp);
    let mut t = seen
        .daemonsets
        .get(&b)?
        .max(seen.daemonsets.get(&c)?)
        .to_owned();
    if with_job {
        t = t.max(*seen.jobs.get(&job)?);
    }
    Some(t)
}

/// Seconds from `t0` to each stage of one Experiment: (both Pipelines and the Simulation exist,
/// both DaemonSets exist after the later Pipeline, the Job exists after the Simulation).
fn stages(seen: &Seen, ns: &str, exp: &str, t0: Instant) -> Option<(f64, f64, f64)> {
    let p = |side| {
        seen.pipelines
            .get(&format!("{ns}/{}", children::pipeline_name(exp, side)))
    };
    let pipelines = *p(Side::Baseline)?.max(p(Side::Candidate)?);
    let sim = *seen
        .simulations
        .get(&format!("{ns}/{}", children::simulation_name(exp)))?;
    let ([b, c], job) = child_keys(ns, exp);
    let ds = *seen.daemonsets.get(&b)?.max(seen.daemonsets.get(&c)?);
    let job = *seen.jobs.get(&job)?;
    let secs =
        |later: Instant, earlier: Instant| later.saturating_duration_since(earlier).as_secs_f64();
    Some((
        secs(pipelines.max(sim), t0),
        secs(ds, pipelines),
        secs(job, sim),
    ))
}

// -------------------------------------------------------------------------------------------------
// The Experiments

pub fn experiment(name: &str, node_selector: &str, simulation: bool) -> Result<Experiment> {
    let critical = "['^postgres$', '^nginx$', '^redis-server$']";
    let sim = if simulation {
        "  simulation: {profile: high-cardinality, processes: 50, duration: 1h, seed: 7, criticalProcesses: [postgres, nginx, redis-server]}\n"
    } else {
        ""
    };
    Ok(serde_yaml::from_str(&format!(
        "apiVersion: phoenix.io/v1alpha1
kind: Experiment
metadata: {{name: {name}}}
spec:
  targets: {{nodeSelector: {node_selector}}}
  baseline: {{pipeline: {{template: baseline, collectionInterval: 10s, criticalProcesses: {critical}}}}}
  candidate: {{pipeline: {{template: aggregate, collectionInterval: 10s, criticalProcesses: {critical}}}}}
  duration: 1h
  warmup: 1m
  analysis: {{interval: 30s}}
  successCriteria: {{minSeriesReductionPercent: 90}}
{sim}"
    ))?)
}

// -------------------------------------------------------------------------------------------------
// The parts

/// Everything the control-plane parts measured, for the report.
pub async fn run(plan: &Plan, cluster: &Cluster, report: &mut Report) -> Result<()> {
    let client = cluster.client().await?;
    cluster.install_crds(&plan.crds)?;
    let nodes = cluster::raise_node_capacity(&client).await?;
    eprintln!(
        "bench: kwok nodes {nodes:?}: capacity raised to 1k CPUs / 1 TiB / 1M pods (this cluster only)"
    );
    for ns in [APPLY_NS, SCALE_NS] {
        cluster::ensure_namespace(&client, ns).await?;
    }
    let mut tracker = Tracker::start(&client).await?;
    // The operator's own limits first, on a cluster holding nothing else: its objects are
    // deleted at the end of the part, before the parts below start a new operator.
    if !plan.objects.is_empty()
        && let Err(e) = crate::objects::run(plan, cluster, &mut tracker, report).await
    {
        // The parts below still run: they start their own operator on an emptied namespace.
        report.row("scale without pods", format!("failed: {e}"), "-", Met::No);
    }
    let operator = Operator::start(plan, cluster, &plan.out.join("operator.log"))?;
    eprintln!(
        "bench: phoenix-operator pid {} on :{}",
        operator.pid(),
        operator.port
    );
    let cpu_at_start = operator.cpu_seconds().unwrap_or(0.0);

    report.section("1. apply → objects (real operator, local control plane)");
    apply_latency(plan, &client, &mut tracker, report).await?;

    let mut operator = operator;
    let mut created = 0;
    let mut running = 0;
    for (step, &total) in plan.experiments.iter().enumerate() {
        report.section(format!(
            "2{}. scale: {total} concurrent Experiments on {} kwok node(s){}",
            if step == 0 {
                String::new()
            } else {
                format!(".{}", step + 1)
            },
            if plan.scale_nodes >= 3 { 3 } else { 1 },
            if plan.simulation {
                ""
            } else {
                ", no simulation"
            }
        ));
        let from = created;
        created = total.max(from);
        let burst = scale(
            plan,
            cluster,
            &mut tracker,
            &mut operator,
            report,
            from,
            created,
        )
        .await?;
        let total_cpu = operator.cpu_seconds().unwrap_or(0.0) - cpu_at_start;
        report.info(
            "operator CPU seconds since it started",
            format!("{total_cpu:.1} s"),
        );
        match burst {
            Burst::AllRunning => {
                running = created;
                steady_state(plan, cluster, &mut operator, report, created).await?
            }
            Burst::NotAllRunning => {
                report.note(format!(
                    "scale {created}: not every Experiment reached Running within {} s; steady \
                     state not measured, no larger step tried",
                    plan.running_timeout.as_secs()
                ));
                break;
            }
            Burst::Aborted => {
                report.note(format!(
                    "scale {created}: aborted by the memory guard; steady state and restart not \
                     measured"
                ));
                operator.stop();
                return Err("scale test aborted by the memory guard".into());
            }
        }
    }

    report.info(
        "concurrent Experiments with pods, all Running (scale, steady state, restart)",
        running.to_string(),
    );

    report.section(format!(
        "3. restart with every resource present ({created} scale Experiments)"
    ));
    restart(plan, cluster, operator, &tracker, report, created).await?;

    if plan.analysis > 0 {
        crate::analysis_cost::run(plan, cluster, &mut tracker, report).await?;
    }
    Ok(())
}

/// How a resync ended (see [`wait_resynced`]).
pub struct Resync {
    /// Whether it became quiet before the deadline (600 s).
    pub synced: bool,
    /// When the last reconcile started or finished.
    pub last_change: Instant,
    /// Reconciles finished by then.
    pub reconciles: f64,
}

/// Waits until `operator` has resynced: at least one reconcile per resource started, every
/// started one finished, and nothing new for 10 s (at most 600 s).
pub async fn wait_resynced(operator: &mut Operator, resources: f64) -> Result<Resync> {
    let mut last_change = Instant::now();
    let mut last = (0.0, 0.0);
    let quiet = Duration::from_secs(10);
    let deadline = Instant::now() + Duration::from_secs(600);
    let synced = loop {
        operator.check_running()?;
        if let Some(now) = operator.reconciles() {
            if now != last {
                last = now;
                last_change = Instant::now();
            }
            if now.0 >= resources && now.0 == now.1 && last_change.elapsed() >= quiet {
                break true;
            }
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    Ok(Resync {
        synced,
        last_change,
        reconciles: last.1,
    })
}

/// Experiments (apply and scale), their Pipelines and Simulations: what the operator reconciles.
fn resources(plan: &Plan, scale: usize) -> f64 {
    let per_scale = if plan.simulation { 4 } else { 3 };
    ((plan.apply + plan.apply_warmup) * 4 + scale * per_scale) as f64
}

async fn apply_latency(
    plan: &Plan,
    client: &Client,
    tracker: &mut Tracker,
    report: &mut Report,
) -> Result<()> {
    let api: Api<Experiment> = Api::namespaced(client.clone(), APPLY_NS);
    let mut total = Vec::with_capacity(plan.apply);
    let mut create = Vec::with_capacity(plan.apply);
    let mut stage_times = (Vec::new(), Vec::new(), Vec::new());
    let mut timeouts = 0;
    eprintln!(
        "bench: apply → objects: {} Experiments one after another ({} more first, not counted)",
        plan.apply, plan.apply_warmup
    );
    for i in 0..plan.apply + plan.apply_warmup {
        let name = format!("apply-{i:04}");
        let counted = i >= plan.apply_warmup;
        let exp = experiment(&name, NO_NODES, true)?;
        let t0 = Instant::now();
        api.create(&PostParams::default(), &exp).await?;
        let create_secs = t0.elapsed().as_secs_f64();
        let done = tracker
            .wait(Duration::from_secs(30), |s| {
                stages(s, APPLY_NS, &name, t0).is_some()
            })
            .await;
        if !counted {
            continue;
        }
        create.push(create_secs);
        let seen = tracker
            .with(|s| children_seen(s, APPLY_NS, &name, true).zip(stages(s, APPLY_NS, &name, t0)));
        match seen.flatten() {
            Some((t, (a, b, c))) if done => {
                total.push(t.duration_since(t0).as_secs_f64());
                stage_times.0.push(a);
                stage_times.1.push(b);
                stage_times.2.push(c);
            }
            _ => timeouts += 1,
        }
        if (i + 1 - plan.apply_warmup).is_multiple_of(50) {
            eprintln!(
                "bench:   {}/{} applied, p50 so far {}",
                i + 1 - plan.apply_warmup,
                plan.apply,
                quantile(&total, 0.5).map(ms).unwrap_or_default()
            );
        }
    }
    let p50 = quantile(&total, 0.5);
    let p99 = quantile(&total, 0.99);
    let n = total.len();
    report.row(
        format!("apply → 2 DaemonSets + Job, p50 (n={n})"),
        p50.map(ms).unwrap_or("n/a".into()),
        "≤ 50 ms",
        p50.map_or(Met::No, |v| Met::from(v <= 0.050)),
    );
    report.row(
        format!("apply → 2 DaemonSets + Job, p99 (n={n})"),
        p99.map(ms).unwrap_or("n/a".into()),
        "≤ 100 ms",
        p99.map_or(Met::No, |v| Met::from(v <= 0.100)),
    );
    report.phoenix.apply_p50 = p50;
    report.info(
        "  of which the create call itself, p50 / p99",
        format!(
            "{} / {}",
            quantile(&create, 0.5).map(ms).unwrap_or_default(),
            quantile(&create, 0.99).map(ms).unwrap_or_default()
        ),
    );
    let p50s = |v: &[f64]| {
        format!(
            "{} / {}",
            quantile(v, 0.5).map(ms).unwrap_or_default(),
            quantile(v, 0.99).map(ms).unwrap_or_default()
        )
    };
    report.info(
        "  create → both Pipelines + Simulation exist, p50 / p99",
        p50s(&stage_times.0),
    );
    report.info(
        "  later Pipeline → both DaemonSets exist, p50 / p99",
        p50s(&stage_times.1),
    );
    report.info("  Simulation → Job exists, p50 / p99", p50s(&stage_times.2));
    report.info(
        "  apply → objects, min / max",
        format!(
            "{} / {}",
            quantile(&total, 0.0).map(ms).unwrap_or_default(),
            quantile(&total, 1.0).map(ms).unwrap_or_default()
        ),
    );
    if timeouts > 0 {
        report.row(
            "Experiments whose objects did not appear within 30 s",
            timeouts.to_string(),
            "0",
            Met::No,
        );
    }
    report.note(format!(
        "apply → objects: {} Experiments created one after another with kube-rs in namespace \
         {APPLY_NS}; each timed from just before the create call to the arrival of the watch \
         event of the last of its three objects (DaemonSets `<exp>-baseline-collector`, \
         `<exp>-candidate-collector`, Job `<exp>-load-load`). Their targets match no node, so they \
         create every object but no pods (they stay Deploying, idle, for the rest of the run). \
         The first {} are not counted (first-use costs of a fresh apiserver and operator). The \
         stages come from watches on Pipelines and Simulations too: Experiment controller \
         (Experiment → Pipelines, Simulation), Pipeline controller (Pipeline → ConfigMap, \
         DaemonSet), Simulation controller (Simulation → Job).",
        plan.apply, plan.apply_warmup
    ));
    Ok(())
}

/// How the scale burst ended.
enum Burst {
    AllRunning,
    /// The running timeout passed first.
    NotAllRunning,
    /// The memory guard stopped it: the cluster is not fit for more measurements.
    Aborted,
}

/// Creates the scale Experiments and waits until all are Running.
async fn scale(
    plan: &Plan,
    cluster: &Cluster,
    tracker: &mut Tracker,
    operator: &mut Operator,
    report: &mut Report,
    from: usize,
    to: usize,
) -> Result<Burst> {
    let client = cluster.client().await?;
    let n = to - from;
    let api: Api<Experiment> = Api::namespaced(client.clone(), SCALE_NS);
    let before = cluster.request_counts()?;
    let cpu_before = operator.cpu_seconds().unwrap_or(0.0);
    let t0 = Instant::now();
    eprintln!(
        "bench: scale: creating {n} Experiments ({} in flight){}",
        plan.concurrency,
        if plan.simulation {
            ""
        } else {
            " without simulation"
        }
    );
    let names: Vec<String> = (from..to).map(|i| format!("scale-{i:04}")).collect();
    let guard = Guard::start(cluster, plan);
    let nodes = if plan.scale_nodes >= 3 {
        ALL_KWOK_NODES
    } else {
        ONE_KWOK_NODE
    };
    let starts = create_burst(&api, &names, plan.concurrency, &guard, |name| {
        experiment(name, nodes, plan.simulation)
    })
    .await;
    let created = t0.elapsed().as_secs_f64();
    eprintln!("bench:   {} of {n} created in {created:.1} s", starts.len());

    let ns = SCALE_NS;
    let with_job = plan.simulation;
    let mut last_report = Instant::now();
    let running_deadline = t0 + plan.running_timeout;
    let apiserver_port = cluster.apiserver_port();
    let mut most_connections = 0;
    let all_running = loop {
        if let Some(open) = apiserver_port
            .and_then(|port| crate::support::established_connections(operator.pid(), port))
        {
            most_connections = most_connections.max(open);
        }
        let running = tracker
            .with(|s| {
                names
                    .iter()
                    .filter(|e| s.running.contains_key(&format!("{ns}/{e}")))
                    .count()
            })
            .unwrap_or(0);
        if running == n {
            break true;
        }
        if Instant::now() > running_deadline || guard.tripped().is_some() {
            break false;
        }
        operator.check_running()?;
        if last_report.elapsed() > Duration::from_secs(20) {
            let phases = tracker
                .with(|s| {
                    let mut by: HashMap<String, usize> = HashMap::new();
                    for e in &names {
                        let p = s.phases.get(&format!("{ns}/{e}")).copied().flatten();
                        *by.entry(format!("{p:?}")).or_default() += 1;
                    }
                    by
                })
                .unwrap_or_default();
            let (etcd, api) = cluster.control_plane_rss();
            eprintln!(
                "bench:   {:.0} s: {running}/{n} Running; phases {phases:?}; RSS operator {:.0} MiB, etcd {:.0} MiB, apiserver {:.0} MiB",
                t0.elapsed().as_secs_f64(),
                operator.rss().map(mib).unwrap_or(0.0),
                mib(etcd),
                mib(api)
            );
            last_report = Instant::now();
        }
        tracker.wait(Duration::from_secs(2), |_| false).await;
    };
    let guarded = guard.stop();
    let (objects_at, running_at) = tracker
        .with(|s| {
            let latest = |f: &dyn Fn(&String) -> Option<Instant>| -> Option<f64> {
                let times: Vec<Instant> = names.iter().map(f).collect::<Option<_>>()?;
                times
                    .into_iter()
                    .max()
                    .map(|t| t.duration_since(t0).as_secs_f64())
            };
            (
                latest(&|e| children_seen(s, ns, e, with_job)),
                latest(&|e| s.running.get(&format!("{ns}/{e}")).copied()),
            )
        })
        .unwrap_or((None, None));
    report.info(
        "peak RSS of etcd / kube-apiserver during the burst",
        format!(
            "{:.0} MiB / {:.0} MiB",
            mib(guarded.peak_etcd),
            mib(guarded.peak_apiserver)
        ),
    );
    if let Some(why) = &guarded.reason {
        report.row(
            "scale test aborted to protect the machine",
            why.clone(),
            "not aborted",
            Met::No,
        );
        report.info(
            "Experiments created before the abort",
            starts.len().to_string(),
        );
    }
    let after = cluster.request_counts()?;
    let cpu = operator.cpu_seconds().unwrap_or(0.0) - cpu_before;
    let delta = after.since(&before);

    // Per-Experiment apply → objects under the burst.
    let burst = burst_waits(tracker, ns, &starts, with_job);

    let peak = operator.peak_rss();
    report.row(
        "operator peak RSS (VmHWM)",
        peak.map(|b| format!("{:.1} MiB", mib(b)))
            .unwrap_or("n/a".into()),
        "≤ 64 MiB",
        peak.map_or(Met::No, |b| Met::from(mib(b) <= 64.0)),
    );
    report.info(
        "operator TCP connections to the apiserver during the burst, most at once (sampled every 2 s)",
        most_connections.to_string(),
    );
    report.info(
        "operator CPU seconds, burst until all Running",
        format!(
            "{cpu:.1} s ({:.2} ms per Experiment)",
            cpu * 1000.0 / n as f64
        ),
    );
    report.info(
        format!("{n} creates sent (client side)"),
        format!("{created:.1} s"),
    );
    report.info(
        "time until every Experiment's 2 DaemonSets + Job exist",
        match objects_at {
            Some(t) => format!("{t:.1} s"),
            None => "not all".to_string(),
        },
    );
    report.row(
        if from == 0 {
            format!("time until all {n} Running")
        } else {
            format!("time until the {n} added are Running ({to} in all)")
        },
        match (all_running, running_at) {
            (true, Some(t)) => format!("{t:.1} s"),
            _ => "not all".to_string(),
        },
        "- (pods' pace)",
        if all_running { Met::Info } else { Met::No },
    );
    let burst_p50 = quantile(&burst, 0.5);
    report.row(
        format!("apply → objects during the {n}-Experiment burst, p50 (p99)"),
        format!(
            "{} ({})",
            burst_p50.map(ms).unwrap_or("n/a".into()),
            quantile(&burst, 0.99).map(ms).unwrap_or("n/a".into())
        ),
        "p50 ≤ 5 s",
        burst_p50.map_or(Met::No, |v| Met::from(v <= 5.0)),
    );
    let ours = is_ours;
    let op_requests = delta.sum(ours);
    let op_writes = delta.sum(|l| ours(l) && cluster::is_mutating(l));
    // Each Experiment manages two collectors (its Pipelines' DaemonSets).
    let collectors = 2 * (plan.apply + plan.apply_warmup + to);
    report.phoenix.rss_per_collector = peak.map(|b| b as f64 / collectors as f64);
    report.phoenix.requests_per_collector = Some(op_requests / (2 * n) as f64);
    report.info(
        "apiserver requests per Experiment, Phoenix's resources (reads + writes)",
        format!("{:.1}", op_requests / n as f64),
    );
    report.info(
        "apiserver writes per Experiment, Phoenix's resources",
        format!("{:.1}", op_writes / n as f64),
    );
    report.info(
        "apiserver requests per Experiment, whole cluster (pods, scheduler, kwok…)",
        format!("{:.1}", delta.sum(|_| true) / n as f64),
    );
    report.note(format!(
        "scale: writes on Phoenix's resources during the burst: {}",
        delta.breakdown(|l| ours(l) && cluster::is_mutating(l), 12)
    ));
    report.note(format!(
        "scale: reads on Phoenix's resources during the burst: {}",
        delta.breakdown(|l| ours(l) && !cluster::is_mutating(l), 12)
    ));
    let nodes = if plan.scale_nodes >= 3 { 3 } else { 1 };
    let pods_per = (2 + usize::from(plan.simulation)) * nodes;
    report.note(format!(
        "scale: {n} Experiments = {} Pipelines, {} Simulations, {} DaemonSets, {} ConfigMaps, {} \
         Jobs and {} pods on {nodes} kwok node(s) ({pods_per} per Experiment; Job pods complete \
         at once under kwok). 'Phoenix's resources' counts requests on phoenix.io kinds, the main resource \
         of DaemonSets/Deployments/Jobs (not /status, which the kube controllers write), \
         ConfigMaps, Secrets and Node reads, minus the bench's own {n} Experiment creates; the \
         whole-cluster figure adds pods, bindings, leases, events and every controller's status \
         writes.",
        2 * n,
        if plan.simulation { n } else { 0 },
        2 * n,
        2 * n,
        if plan.simulation { n } else { 0 },
        pods_per * n,
    ));
    Ok(match (all_running, guarded.reason) {
        (_, Some(_)) => Burst::Aborted,
        (true, None) => Burst::AllRunning,
        (false, None) => Burst::NotAllRunning,
    })
}

/// Creates the Experiments `names` (built by `build`), `concurrency` in flight, until `guard`
/// trips; returns each created one with the instant just before its create call.
pub async fn create_burst(
    api: &Api<Experiment>,
    names: &[String],
    concurrency: usize,
    guard: &Guard,
    build: impl Fn(&str) -> Result<Experiment>,
) -> Vec<(String, Instant)> {
    let build = &build;
    futures::stream::iter(names.iter().cloned())
        .map(|name| async move {
            if let Some(why) = guard.tripped() {
                return Err::<_, crate::support::BoxError>(why.into());
            }
            let exp = build(&name)?;
            let t = Instant::now();
            api.create(&PostParams::default(), &exp).await?;
            Ok((name, t))
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .filter_map(|r| r.ok())
        .collect()
}

/// Seconds from each Experiment's create call to the last of its objects, for those whose
/// objects were all seen.
pub fn burst_waits(
    tracker: &Tracker,
    ns: &str,
    starts: &[(String, Instant)],
    with_job: bool,
) -> Vec<f64> {
    tracker
        .with(|s| {
            starts
                .iter()
                .filter_map(|(e, t)| {
                    children_seen(s, ns, e, with_job).map(|c| c.duration_since(*t).as_secs_f64())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Requests on Phoenix's resources, minus the bench's own Experiment creates.
pub fn is_ours(l: &cluster::Labels) -> bool {
    cluster::is_operator_resource(l)
        && !(cluster::label(l, "resource") == "experiments" && cluster::label(l, "verb") == "POST")
}

/// Samples the control plane's memory every second during the scale test and trips when etcd +
/// kube-apiserver grow past the limit or the machine runs short of memory (other work shares it).
pub struct Guard {
    state: Arc<Mutex<GuardState>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Clone, Default)]
pub struct GuardState {
    pub peak_etcd: u64,
    pub peak_apiserver: u64,
    pub reason: Option<String>,
}

impl Guard {
    pub fn start(cluster: &Cluster, plan: &Plan) -> Guard {
        let state = Arc::new(Mutex::new(GuardState::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let dir = cluster.var("E2E_DIR").map(std::path::PathBuf::from);
        let (max_cp, min_free) = (plan.max_control_plane_bytes, plan.min_available_bytes);
        let thread = std::thread::spawn(move || {
            let rss = |component: &str| -> u64 {
                dir.as_ref()
                    .and_then(|d| {
                        std::fs::read_to_string(d.join(format!("pids/{component}.pid"))).ok()
                    })
                    .and_then(|pid| pid.trim().parse::<u32>().ok())
                    .and_then(|pid| status_bytes(pid, "VmRSS"))
                    .unwrap_or(0)
            };
            while !sp.load(std::sync::atomic::Ordering::Relaxed) {
                let (etcd, api) = (rss("etcd"), rss("kube-apiserver"));
                let free = crate::support::mem_available().unwrap_or(u64::MAX);
                if let Ok(mut s) = st.lock() {
                    s.peak_etcd = s.peak_etcd.max(etcd);
                    s.peak_apiserver = s.peak_apiserver.max(api);
                    if s.reason.is_none() {
                        if etcd + api > max_cp {
                            s.reason = Some(format!(
                                "etcd + kube-apiserver RSS reached {:.0} MiB (limit {:.0} MiB)",
                                mib(etcd + api),
                                mib(max_cp)
                            ));
                        } else if free < min_free {
                            s.reason = Some(format!(
                                "machine MemAvailable fell to {:.0} MiB (floor {:.0} MiB)",
                                mib(free),
                                mib(min_free)
                            ));
                        }
                        if let Some(r) = &s.reason {
                            eprintln!("bench: GUARD TRIPPED: {r}");
                        }
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        Guard {
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn tripped(&self) -> Option<String> {
        self.state.lock().ok().and_then(|s| s.reason.clone())
    }

    pub fn stop(mut self) -> GuardState {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Waits until 10 s pass without a write on Phoenix's resources (at most 3 minutes); returns the
/// seconds it took.
pub async fn settle(cluster: &Cluster) -> Result<f64> {
    let ten = Duration::from_secs(10);
    let (waited, _) = quiet(cluster, is_our_write, ten, ten, Duration::from_secs(180)).await?;
    Ok(waited)
}

/// Waits until the apiserver counts no new request that `keep` selects for `quiet_for`
/// (sampling every `every`), at most `max`: the seconds waited, and whether it went quiet.
pub async fn quiet(
    cluster: &Cluster,
    keep: impl Fn(&cluster::Labels) -> bool,
    every: Duration,
    quiet_for: Duration,
    max: Duration,
) -> Result<(f64, bool)> {
    let count = || -> Result<f64> { Ok(cluster.request_counts()?.sum(&keep)) };
    let t0 = Instant::now();
    let (mut last, mut changed) = (count()?, Instant::now());
    while t0.elapsed() < max {
        tokio::time::sleep(every).await;
        let now = count()?;
        if now != last {
            (last, changed) = (now, Instant::now());
        } else if changed.elapsed() >= quiet_for {
            return Ok((t0.elapsed().as_secs_f64(), true));
        }
    }
    Ok((t0.elapsed().as_secs_f64(), false))
}

/// A mutating request on Phoenix's resources (what settling waits out).
fn is_our_write(l: &cluster::Labels) -> bool {
    cluster::is_operator_resource(l) && cluster::is_mutating(l)
}

async fn steady_state(
    plan: &Plan,
    cluster: &Cluster,
    operator: &mut Operator,
    report: &mut Report,
    scale: usize,
) -> Result<()> {
    // Let the last transitions (Job pods completing → Simulations Succeeded) finish: wait until
    // 10 s pass without a write on Phoenix's resources (at most 3 minutes).
    let settled = settle(cluster).await?;
    let window = plan.pods_steady;
    eprintln!(
        "bench: steady state: settled after {settled:.0} s; measuring {} s",
        window.as_secs()
    );
    let before = cluster.request_counts()?;
    let cpu_before = operator.cpu_seconds().unwrap_or(0.0);
    tokio::time::sleep(window).await;
    operator.check_running()?;
    let delta = cluster.request_counts()?.since(&before);
    let cpu = operator.cpu_seconds().unwrap_or(0.0) - cpu_before;
    let minutes = window.as_secs_f64() / 60.0;
    let resources = resources(plan, scale);
    let writes = delta.sum(|l| cluster::is_operator_resource(l) && cluster::is_mutating(l));
    let per = writes / resources / minutes;
    report.row(
        format!("steady state: writes per idle resource per minute ({resources:.0} resources)"),
        format!(
            "{per:.4} ({writes:.0} writes in {:.0} s)",
            window.as_secs_f64()
        ),
        "0",
        Met::from(writes == 0.0),
    );
    report.info(
        "steady state: settle time before the window (no write for 10 s)",
        format!("{settled:.0} s"),
    );
    report.info(
        "steady state: operator CPU",
        format!("{:.2} % of a core", cpu / window.as_secs_f64() * 100.0),
    );
    report.info(
        "steady state: event writes (all writers, incl. scheduler)",
        format!(
            "{:.0}",
            delta.sum(|l| cluster::is_event(l) && cluster::is_mutating(l))
        ),
    );
    report.info(
        "steady state: all mutating requests, whole cluster (kwok heartbeats, leases…)",
        format!("{:.0}", delta.sum(cluster::is_mutating)),
    );
    if writes > 0.0 {
        report.note(format!(
            "steady state writes on Phoenix's resources: {}",
            delta.breakdown(
                |l| cluster::is_operator_resource(l) && cluster::is_mutating(l),
                12
            )
        ));
    }
    Ok(())
}

async fn restart(
    plan: &Plan,
    cluster: &Cluster,
    operator: Operator,
    tracker: &Tracker,
    report: &mut Report,
    scale: usize,
) -> Result<()> {
    let resources = resources(plan, scale);
    let running_before = tracker.with(|s| {
        s.phases
            .values()
            .filter(|p| **p == Some(ExperimentPhase::Running))
            .count()
    });
    operator.kill();
    let before = cluster.request_counts()?;
    let t0 = Instant::now();
    let mut operator = Operator::start(plan, cluster, &plan.out.join("operator-restarted.log"))?;
    let ready_at = t0.elapsed().as_secs_f64();
    let Resync {
        synced,
        last_change,
        reconciles,
    } = wait_resynced(&mut operator, resources).await?;
    let last = (reconciles, reconciles);
    let resync = last_change.duration_since(t0).as_secs_f64();
    let delta = cluster.request_counts()?.since(&before);
    let writes = delta.sum(|l| cluster::is_operator_resource(l) && cluster::is_mutating(l));
    let effective = delta.sum(|l| {
        cluster::is_operator_resource(l)
            && cluster::is_mutating(l)
            && cluster::label(l, "code").starts_with('2')
    });
    report.row(
        format!("resync after kill -9 ({resources:.0} resources present)"),
        if synced {
            format!("{resync:.1} s ({:.0} reconciles)", last.1)
        } else {
            format!("not quiet within 600 s ({:.0} reconciles)", last.1)
        },
        "-",
        if synced { Met::Info } else { Met::No },
    );
    report.info("  of which start → /readyz", format!("{ready_at:.2} s"));
    report.row(
        "writes during resync, Phoenix's resources",
        format!(
            "{writes:.0} ({:.2} per resource; {effective:.0} answered 2xx)",
            writes / resources
        ),
        "0 redundant",
        Met::from(writes == 0.0),
    );
    if writes > 0.0 {
        report.note(format!(
            "resync writes: {}",
            delta.breakdown(
                |l| cluster::is_operator_resource(l) && cluster::is_mutating(l),
                12
            )
        ));
    }
    report.info(
        "restarted operator peak RSS (VmHWM)",
        operator
            .peak_rss()
            .map(|b| format!("{:.1} MiB", mib(b)))
            .unwrap_or("n/a".into()),
    );
    report.info(
        "restarted operator CPU seconds for the resync",
        format!("{:.1} s", operator.cpu_seconds().unwrap_or(0.0)),
    );
    let running_after = tracker.with(|s| {
        s.phases
            .values()
            .filter(|p| **p == Some(ExperimentPhase::Running))
            .count()
    });
    report.info(
        "Experiments Running before kill / after resync",
        format!(
            "{} / {}",
            running_before.unwrap_or(0),
            running_after.unwrap_or(0)
        ),
    );
    operator.stop();
    Ok(())
}
