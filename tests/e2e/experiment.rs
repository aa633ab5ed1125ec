//! The Experiment controller on the real control plane and a real Prometheus fed deterministic
//! data by remote write: verdicts, failures that are not verdicts, restarts, abort and deletion.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use phoenix::analysis::queries::{COLLECTOR_CPU_METRIC, COLLECTOR_MEMORY_METRIC};
use phoenix::analysis::remote_write::{self, TimeSeries};
use phoenix::crd::experiment::{
    Experiment, ExperimentPhase, ExperimentStatus, InconclusiveReason, Verdict,
};
use phoenix::crd::pipeline::SensitiveAttributes;
use phoenix::crd::{Pipeline, Simulation, conditions};
use prometheus_http_query::reqwest;

use crate::harness::{
    Operator, TestNamespace, cluster, eventually, free_port, repo_root, spawn_prometheus,
};

/// The analysis step of every test Experiment, and the spacing of fed samples.
const STEP: i64 = 5;
/// The run length of every test Experiment.
const DURATION: i64 = 60;

pub(crate) fn experiment(name: &str, criteria: &str, extra: &str) -> Experiment {
    serde_yaml::from_str(&format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Experiment\nmetadata: {{name: {name}}}\nspec:\n  baseline: {{pipeline: {{template: baseline, criticalProcesses: ['^postgres$', '^nginx$']}}}}\n  candidate: {{pipeline: {{template: aggregate, sensitiveAttributes: Drop, criticalProcesses: ['^postgres$', '^nginx$']}}}}\n  duration: {DURATION}s\n  warmup: 0s\n  analysis: {{interval: {STEP}s}}\n  successCriteria: {{{criteria}}}\n{extra}"
    ))
    .expect("test Experiment parses")
}

/// What one fake variant reports: executable names, and series per name per metric.
struct Shape<'a> {
    executables: Vec<String>,
    pids_per_executable: usize,
    critical: &'a [&'a str],
    collector_rss: f64,
    /// Seconds after `from` during which the variant sends nothing (a crash-looping collector).
    gap: Option<(i64, i64)>,
}

fn shape(executables: usize, pids: usize, critical: &'static [&'static str]) -> Shape<'static> {
    Shape {
        executables: (0..executables).map(|i| format!("svc-{i:04}")).collect(),
        pids_per_executable: pids,
        critical,
        collector_rss: 100e6,
        gap: None,
    }
}

/// A collector's own telemetry at `steps` (ms): CPU, memory, and points scraped and sent (what the
/// analysis reads to know the collector really scraped and exported).
pub(crate) fn collector_telemetry(
    base: &[(&str, &str)],
    steps: &[i64],
    rss_bytes: f64,
) -> Vec<TimeSeries> {
    let with = |key: &'static str, value: &'static str| {
        let mut labels = base.to_vec();
        labels.push((key, value));
        labels
    };
    let mut cpu = TimeSeries::new(COLLECTOR_CPU_METRIC, base);
    let mut rss = TimeSeries::new(COLLECTOR_MEMORY_METRIC, base);
    let mut accepted = TimeSeries::new(
        "otelcol_receiver_accepted_metric_points_total",
        &with("receiver", "hostmetrics"),
    );
    let mut sent = TimeSeries::new(
        "otelcol_exporter_sent_metric_points_total",
        &with("exporter", "prometheusremotewrite"),
    );
    for (i, t) in steps.iter().enumerate() {
        cpu = cpu.sample(*t, i as f64 * 0.05 * STEP as f64);
        rss = rss.sample(*t, rss_bytes);
        accepted = accepted.sample(*t, i as f64 * 100.0);
        sent = sent.sample(*t, i as f64 * 100.0);
    }
    vec![cpu, rss, accepted, sent]
}

/// Remote-writes `shape` for one variant over `[from, from + DURATION]` (future samples are fine:
/// nothing else writes these series), so the analysis window is fully covered.
async fn feed(url: &str, experiment: &str, variant: &str, shape: &Shape<'_>, from: i64) {
    let base = [
        ("phoenix_experiment", experiment),
        ("phoenix_variant", variant),
        ("phoenix_pipeline", variant),
        ("phoenix_node", "kwok-node-0"),
    ];
    let steps: Vec<i64> = (0..=DURATION / STEP)
        .map(|k| k * STEP)
        .filter(|offset| !shape.gap.is_some_and(|(a, b)| (a..=b).contains(offset)))
        .map(|offset| (from + offset) * 1000)
        .collect();
    let mut series = vec![];
    let names: Vec<&str> = shape
        .executables
        .iter()
        .map(String::as_str)
        .chain(shape.critical.iter().copied())
        .collect();
    for (rank, name) in names.into_iter().enumerate() {
        for pid in 0..shape.pids_per_executable {
            let pid = pid.to_string();
            for metric in [
                "process_cpu_time_seconds_total",
                "process_memory_usage_bytes",
            ] {
                let mut labels = base.to_vec();
                labels.extend([
                    ("process_executable_name", name),
                    ("process_pid", pid.as_str()),
                ]);
                let mut ts = TimeSeries::new(metric, &labels);
                // CPU grows faster for later names: the top K of the baseline is predictable.
                for (i, t) in steps.iter().enumerate() {
                    ts = ts.sample(*t, (i * (rank + 1)) as f64);
                }
                series.push(ts);
            }
        }
    }
    series.extend(collector_telemetry(&base, &steps, shape.collector_rss));
    let client = reqwest::Client::new();
    for chunk in series.chunks(500) {
        remote_write::push(&client, url, chunk)
            .await
            .expect("Prometheus accepts the remote write");
    }
}

/// A baseline of 208 process series and a candidate of 10 that keeps both critical processes.
pub(crate) async fn feed_reducing(url: &str, label: &str, since: i64) {
    feed(
        url,
        label,
        "baseline",
        &shape(50, 2, &["postgres", "nginx"]),
        since,
    )
    .await;
    feed(
        url,
        label,
        "candidate",
        &shape(3, 1, &["postgres", "nginx"]),
        since,
    )
    .await;
}

/// Creates the Experiment `exp` (criteria `minSeriesReductionPercent: 80`, `extra` appended to its
/// spec), feeds a reducing candidate's data to `prometheus_url` once it runs, and returns its
/// status once it has Completed.
pub(crate) async fn complete_reducing(
    ns: &TestNamespace,
    prometheus_url: &str,
    extra: &str,
) -> ExperimentStatus {
    let api = ns.api::<Experiment>();
    api.create(
        &PostParams::default(),
        &experiment("exp", "minSeriesReductionPercent: 80", extra),
    )
    .await
    .expect("Experiment created");
    let since = running_since(&api, "exp").await;
    feed_reducing(
        &format!("{prometheus_url}/api/v1/write"),
        &format!("{}/exp", ns.name),
        since,
    )
    .await;
    completed(&api, "exp").await
}

pub(crate) async fn running_since(api: &Api<Experiment>, name: &str) -> i64 {
    let status = phase(api, name, &[ExperimentPhase::Running], 90).await;
    status
        .running_since
        .expect("runningSince set when Running")
        .0
        .as_second()
}

pub(crate) async fn phase(
    api: &Api<Experiment>,
    name: &str,
    phases: &[ExperimentPhase],
    secs: u64,
) -> ExperimentStatus {
    let what = format!("Experiment {name} in {phases:?}");
    eventually(&what, Duration::from_secs(secs), || async {
        let s = api.get(name).await.ok()?.status?;
        s.phase.filter(|p| phases.contains(p)).map(|_| s.clone())
    })
    .await
}

/// The status of Experiment `name` once it has ended, asserting it Completed.
pub(crate) async fn completed(api: &Api<Experiment>, name: &str) -> ExperimentStatus {
    let status = phase(api, name, FINAL, 180).await;
    assert_eq!(
        status.phase,
        Some(ExperimentPhase::Completed),
        "{:?}",
        status.message
    );
    status
}

pub(crate) const FINAL: &[ExperimentPhase] = &[
    ExperimentPhase::Completed,
    ExperimentPhase::Failed,
    ExperimentPhase::Aborted,
];

/// Runs one Experiment against the cluster's Prometheus with the given variant shapes.
async fn run(
    prefix: &str,
    criteria: &str,
    baseline: Shape<'_>,
    candidate: Shape<'_>,
) -> (TestNamespace, ExperimentStatus) {
    let (ns, _operator, status, _) =
        run_keeping_configs(prefix, criteria, baseline, candidate).await;
    (ns, status)
}

/// The collector config (ConfigMap text) the Pipeline `name` runs, once it is Ready.
async fn running_config(ns: &TestNamespace, name: &str) -> String {
    let pipelines = ns.api::<Pipeline>();
    let config_map = eventually(
        &format!("Pipeline {name} Ready"),
        Duration::from_secs(90),
        || async {
            let s = pipelines.get(name).await.ok()?.status?;
            let ready = s.phase == Some(phoenix::crd::pipeline::PipelinePhase::Ready);
            ready.then_some(s.config_map).flatten()
        },
    )
    .await;
    ns.api::<ConfigMap>()
        .get(&config_map)
        .await
        .expect("the Pipeline's ConfigMap")
        .data
        .and_then(|d| d.get(phoenix::desired::workload::CONFIG_FILE).cloned())
        .expect("the collector config")
}

/// [`run`], also returning the operator (still running: what it does after the verdict, such as
/// releasing the children, can be awaited) and the baseline's and the candidate's collector
/// configs as they ran.
async fn run_keeping_configs(
    prefix: &str,
    criteria: &str,
    baseline: Shape<'_>,
    candidate: Shape<'_>,
) -> (TestNamespace, Operator, ExperimentStatus, [String; 2]) {
    let ns = TestNamespace::new(prefix).await;
    let operator = Operator::start(&ns.name, &[]);
    let api = ns.api::<Experiment>();
    api.create(&PostParams::default(), &experiment("exp", criteria, ""))
        .await
        .expect("Experiment created");
    let since = running_since(&api, "exp").await;
    let configs = [
        running_config(&ns, "exp-baseline").await,
        running_config(&ns, "exp-candidate").await,
    ];
    let label = format!("{}/exp", ns.name);
    let url = cluster().var("PROMETHEUS_REMOTE_WRITE_URL").to_string();
    feed(&url, &label, "baseline", &baseline, since).await;
    feed(&url, &label, "candidate", &candidate, since).await;
    let status = phase(&api, "exp", FINAL, 180).await;
    eventually(
        "the operator's /metrics counts experiment reconciles",
        Duration::from_secs(60),
        || async {
            operator
                .metrics()
                .contains("phoenix_reconciles_total{controller=\"experiment\"}")
                .then_some(())
        },
    )
    .await;
    (ns, operator, status, configs)
}

/// A collector config with the labels naming its Pipeline, Experiment and variant blanked: what
/// is left is what the collector does.
fn without_names(config: &str) -> serde_yaml::Value {
    fn blank(v: &mut serde_yaml::Value) {
        match v {
            serde_yaml::Value::Mapping(m) => {
                let naming = m.get("key").and_then(|k| k.as_str()).is_some_and(|k| {
                    ["phoenix_experiment", "phoenix_variant", "phoenix_pipeline"].contains(&k)
                });
                if naming {
                    m.insert("value".into(), "-".into());
                }
                m.values_mut().for_each(blank);
            }
            serde_yaml::Value::Sequence(items) => items.iter_mut().for_each(blank),
            _ => {}
        }
    }
    let mut value = serde_yaml::from_str(config).expect("collector config parses");
    blank(&mut value);
    value
}

#[tokio::test]
async fn a_reducing_candidate_passes_and_releases_its_children() {
    let (ns, _operator, status, [baseline_config, candidate_config]) = run_keeping_configs(
        "exp-pass",
        "minSeriesReductionPercent: 80",
        shape(50, 2, &["postgres", "nginx"]),
        shape(3, 1, &["postgres", "nginx"]),
    )
    .await;
    assert_eq!(status.phase, Some(ExperimentPhase::Completed), "{status:?}");
    assert_eq!(status.verdict, Some(Verdict::Pass), "{:?}", status.results);
    let r = status.results.clone().expect("results");
    // baseline 52 executables × 2 pids × 2 metrics = 208; candidate 5 × 1 × 2 = 10.
    assert_eq!(r.baseline.series, Some(208.0));
    assert_eq!(r.candidate.series, Some(10.0));
    assert!(
        (r.series_reduction_percent.expect("reduction") - (1.0 - 10.0 / 208.0) * 100.0).abs()
            < 1e-6
    );
    assert_eq!(r.critical_retention_percent, Some(100.0));
    assert!(
        r.confidence
            .as_ref()
            .and_then(|c| c.p_value)
            .is_some_and(|p| p < 0.05)
    );
    assert!(
        r.criteria.iter().all(|c| c.passed && c.query.is_some()),
        "{:?}",
        r.criteria
    );
    let cost = r.estimated_monthly_cost.expect("cost");
    assert!(cost.candidate < cost.baseline);
    let recommendation = status
        .recommendation
        .clone()
        .expect("a Pass recommends the candidate spec");
    // The inline candidate's non-default setting survives the apiserver (schema) and the run.
    assert_eq!(
        recommendation.sensitive_attributes,
        SensitiveAttributes::Drop
    );
    assert!(conditions::is_true(&status.conditions, "Ready"));
    // Finished experiments release their collectors while the results stay in status.
    let pipelines = ns.api::<Pipeline>();
    eventually("children released", Duration::from_secs(60), || async {
        pipelines
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    // Applied as a Pipeline, the recommendation runs the collector config the candidate ran (its
    // own name and labels aside).
    let promoted = Pipeline::new("promoted", *recommendation);
    ns.api::<Pipeline>()
        .create(&PostParams::default(), &promoted)
        .await
        .expect("the recommendation is a valid Pipeline");
    let promoted_config = running_config(&ns, "promoted").await;
    assert_eq!(
        without_names(&promoted_config),
        without_names(&candidate_config),
        "the recommendation renders the candidate's collector config"
    );
    assert_ne!(
        without_names(&promoted_config),
        without_names(&baseline_config),
        "and not the baseline's"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn a_reduction_below_the_threshold_fails() {
    let (ns, status) = run(
        "exp-fail",
        "minSeriesReductionPercent: 90",
        shape(50, 2, &["postgres", "nginx"]),
        shape(40, 2, &["postgres", "nginx"]),
    )
    .await;
    assert_eq!(status.phase, Some(ExperimentPhase::Completed));
    assert_eq!(status.verdict, Some(Verdict::Fail));
    let r = status.results.expect("results");
    let c = r
        .criteria
        .iter()
        .find(|c| c.name == "minSeriesReductionPercent")
        .expect("criterion");
    assert!(!c.passed && c.threshold == 90.0);
    assert!(status.recommendation.is_none());
    ns.cleanup().await;
}

#[tokio::test]
async fn a_missing_critical_process_fails() {
    let (ns, status) = run(
        "exp-critical",
        "minSeriesReductionPercent: 50",
        shape(50, 2, &["postgres", "nginx"]),
        shape(3, 1, &["postgres"]),
    )
    .await;
    assert_eq!(status.verdict, Some(Verdict::Fail));
    assert_eq!(
        status.results.expect("results").critical_retention_percent,
        Some(50.0)
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn an_a_a_experiment_is_inconclusive() {
    let (ns, status) = run(
        "exp-aa",
        "",
        shape(50, 2, &["postgres", "nginx"]),
        shape(50, 2, &["postgres", "nginx"]),
    )
    .await;
    assert_eq!(status.phase, Some(ExperimentPhase::Completed));
    assert_eq!(
        status.verdict,
        Some(Verdict::Inconclusive),
        "{:?}",
        status.results
    );
    assert_eq!(
        status.results.and_then(|r| r.inconclusive_reason),
        Some(InconclusiveReason::NotSignificant)
    );
    ns.cleanup().await;
}

/// Issue 13 path 4: a candidate whose processors drop every process metric runs, reports itself,
/// and writes no process series. That is not a 100% reduction.
#[tokio::test]
async fn a_candidate_that_drops_everything_is_inconclusive() {
    let (ns, status) = run(
        "exp-dropall",
        "minSeriesReductionPercent: 50",
        shape(50, 2, &["postgres", "nginx"]),
        shape(0, 0, &[]),
    )
    .await;
    assert_eq!(status.phase, Some(ExperimentPhase::Completed), "{status:?}");
    assert_eq!(
        status.verdict,
        Some(Verdict::Inconclusive),
        "{:?}",
        status.results
    );
    let results = status.results.expect("results");
    assert_eq!(
        results.inconclusive_reason,
        Some(InconclusiveReason::CandidateNoData)
    );
    assert_eq!(results.coverage.map(|c| c.candidate_steps), Some(0));
    assert!(status.recommendation.is_none());
    ns.cleanup().await;
}

/// Issue 13 path 4: a crash-looping candidate sends nothing for a third of the window; the steps
/// it missed must not vanish from the comparison.
#[tokio::test]
async fn a_candidate_with_gaps_is_inconclusive() {
    let mut crashing = shape(3, 1, &["postgres", "nginx"]);
    crashing.gap = Some((25, 45));
    let (ns, status) = run(
        "exp-gaps",
        "minSeriesReductionPercent: 50",
        shape(50, 2, &["postgres", "nginx"]),
        crashing,
    )
    .await;
    assert_eq!(status.phase, Some(ExperimentPhase::Completed), "{status:?}");
    assert_eq!(
        status.verdict,
        Some(Verdict::Inconclusive),
        "{:?}",
        status.results
    );
    let results = status.results.expect("results");
    assert_eq!(
        results.inconclusive_reason,
        Some(InconclusiveReason::DataGaps)
    );
    let coverage = results.coverage.expect("coverage");
    assert!(coverage.percent < 90.0, "{coverage:?}");
    ns.cleanup().await;
}

/// Issue 13 path 5: a critical process the candidate reported only 30 minutes before the window
/// (an earlier run of a same-named Experiment, say) is not retained.
#[tokio::test]
async fn critical_names_from_before_the_window_do_not_count() {
    let ns = TestNamespace::new("exp-leak").await;
    let _operator = Operator::start(&ns.name, &[]);
    let api = ns.api::<Experiment>();
    api.create(
        &PostParams::default(),
        &experiment("exp", "minSeriesReductionPercent: 50", ""),
    )
    .await
    .expect("Experiment created");
    let since = running_since(&api, "exp").await;
    let label = format!("{}/exp", ns.name);
    let url = cluster().var("PROMETHEUS_REMOTE_WRITE_URL").to_string();
    let old = (since - 1800) * 1000;
    let early = TimeSeries::new(
        "process_memory_usage_bytes",
        &[
            ("phoenix_experiment", label.as_str()),
            ("phoenix_variant", "candidate"),
            ("phoenix_pipeline", "candidate"),
            ("phoenix_node", "kwok-node-0"),
            ("process_executable_name", "postgres"),
            ("process_pid", "1"),
        ],
    )
    .sample(old, 1e6)
    .sample(old + 5_000, 1e6);
    remote_write::push(&reqwest::Client::new(), &url, &[early])
        .await
        .expect("Prometheus accepts samples 30 minutes old");
    feed(
        &url,
        &label,
        "baseline",
        &shape(50, 2, &["postgres", "nginx"]),
        since,
    )
    .await;
    feed(&url, &label, "candidate", &shape(3, 1, &["nginx"]), since).await;
    let status = phase(&api, "exp", FINAL, 180).await;
    assert_eq!(status.verdict, Some(Verdict::Fail), "{:?}", status.results);
    let results = status.results.expect("results");
    assert_eq!(results.critical_retention_percent, Some(50.0));
    assert_eq!(results.candidate.critical_processes_seen, Some(1));
    ns.cleanup().await;
}

/// A Prometheus of the test's own, so it can be stopped and restarted.
struct OwnPrometheus {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl OwnPrometheus {
    fn start(dir: PathBuf, port: u16) -> OwnPrometheus {
        let child = spawn_prometheus(&dir, port, "global: {scrape_interval: 1m}\n");
        OwnPrometheus {
            child: Some(child),
            dir,
            port,
        }
    }

    async fn ready(&self) {
        let port = self.port;
        eventually(
            "own Prometheus ready",
            Duration::from_secs(60),
            || async move {
                crate::harness::http_get(port, "/-/ready")
                    .filter(|r| r.starts_with("HTTP/1.1 200"))
                    .map(|_| ())
            },
        )
        .await;
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM so the TSDB closes cleanly and the restart replays the same data.
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnPrometheus {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn prometheus_down_mid_run_then_back_recovers() {
    let ns = TestNamespace::new("exp-promdown").await;
    let port = free_port();
    let mut prom = OwnPrometheus::start(
        repo_root().join(format!("target/e2e/prom-{}", ns.name)),
        port,
    );
    prom.ready().await;
    // The Experiment's own Prometheus must be allowed by the operator's settings.
    let allowed = format!("http://127.0.0.1:{port}");
    let allow = ["--allowed-prometheus-url-prefixes", allowed.as_str()];
    let operator = Operator::start(&ns.name, &allow);
    let api = ns.api::<Experiment>();
    let extra = format!("  prometheus: {{url: '{allowed}'}}\n");
    api.create(
        &PostParams::default(),
        &experiment("exp", "minSeriesReductionPercent: 80", &extra),
    )
    .await
    .expect("created");
    let since = running_since(&api, "exp").await;
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let label = format!("{}/exp", ns.name);
    feed_reducing(&url, &label, since).await;
    prom.stop();

    // The run ends while Prometheus is down: the analysis retries with PrometheusReachable=False.
    let unreachable = eventually(
        "PrometheusReachable=False",
        Duration::from_secs(120),
        || async {
            let s = api.get("exp").await.ok()?.status?;
            let c = conditions::find(&s.conditions, "PrometheusReachable")?;
            (c.status == phoenix::crd::ConditionStatus::False).then_some(s)
        },
    )
    .await;
    assert_eq!(unreachable.phase, Some(ExperimentPhase::Analyzing));
    assert!(unreachable.prometheus_failures >= 1);

    // The operator is killed while Analyzing; the restarted one resumes the same analysis window.
    operator.kill();
    let _operator = Operator::start(&ns.name, &allow);
    let prom = OwnPrometheus::start(prom.dir.clone(), port);
    prom.ready().await;
    let status = completed(&api, "exp").await;
    assert_eq!(status.verdict, Some(Verdict::Pass));
    assert!(conditions::is_true(
        &status.conditions,
        "PrometheusReachable"
    ));
    assert_eq!(status.prometheus_failures, 0);
    ns.cleanup().await;
}

#[tokio::test]
async fn prometheus_down_past_the_budget_fails_unavailable() {
    let ns = TestNamespace::new("exp-promgone").await;
    let gone = format!("http://127.0.0.1:{}", free_port());
    let _operator = Operator::start(
        &ns.name,
        &[
            "--analysis-retries",
            "2",
            "--allowed-prometheus-url-prefixes",
            &gone,
        ],
    );
    let api = ns.api::<Experiment>();
    let extra = format!("  prometheus: {{url: '{gone}'}}\n");
    api.create(&PostParams::default(), &experiment("exp", "", &extra))
        .await
        .expect("created");
    let status = phase(&api, "exp", FINAL, 180).await;
    assert_eq!(status.phase, Some(ExperimentPhase::Failed));
    assert_eq!(status.verdict, None, "a failure is not a verdict");
    let ready = conditions::find(&status.conditions, "Ready").expect("Ready condition");
    assert_eq!(ready.reason, "PrometheusUnavailable");
    // The second attempt waited out the first one's 5 s backoff, although the first failure's
    // own status write reconciled the Experiment at once (before, the budget was spent in as many
    // round trips, and a Prometheus restarting for a few seconds failed the run).
    let first_failure = conditions::find(&status.conditions, "PrometheusReachable")
        .expect("PrometheusReachable")
        .last_transition_time
        .0;
    let failed_at = status.completion_time.as_ref().expect("completionTime").0;
    assert!(
        failed_at.duration_since(first_failure) >= k8s_openapi::jiff::SignedDuration::from_secs(5),
        "attempts {first_failure} and {failed_at} are the backoff apart"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn no_baseline_data_fails_no_data() {
    let ns = TestNamespace::new("exp-nodata").await;
    let _operator = Operator::start(&ns.name, &[]);
    let api = ns.api::<Experiment>();
    api.create(&PostParams::default(), &experiment("exp", "", ""))
        .await
        .expect("created");
    let status = phase(&api, "exp", FINAL, 180).await;
    assert_eq!(status.phase, Some(ExperimentPhase::Failed));
    assert_eq!(
        conditions::find(&status.conditions, "Ready").map(|c| c.reason.as_str()),
        Some("NoData")
    );
    assert_eq!(status.verdict, None);
    ns.cleanup().await;
}

async fn children_count(ns: &TestNamespace) -> (usize, usize, usize, usize) {
    let p = ns
        .api::<Pipeline>()
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .len();
    let s = ns
        .api::<Simulation>()
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .len();
    let d = ns
        .api::<DaemonSet>()
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .len();
    let c = ns
        .api::<ConfigMap>()
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=phoenix"))
        .await
        .expect("list")
        .items
        .len();
    (p, s, d, c)
}

#[tokio::test]
async fn a_restarted_operator_resumes_without_duplicates() {
    let ns = TestNamespace::new("exp-restart").await;
    let api = ns.api::<Experiment>();
    let operator = Operator::start(&ns.name, &[]);
    api.create(
        &PostParams::default(),
        &experiment(
            "exp",
            "minSeriesReductionPercent: 80",
            "  simulation: {profile: high-cardinality, processes: 20, duration: 2m}\n",
        ),
    )
    .await
    .expect("created");
    // Killed while Deploying or just after.
    phase(
        &api,
        "exp",
        &[ExperimentPhase::Deploying, ExperimentPhase::Running],
        60,
    )
    .await;
    operator.kill();
    let operator = Operator::start(&ns.name, &[]);
    let since = running_since(&api, "exp").await;
    let label = format!("{}/exp", ns.name);
    let url = cluster().var("PROMETHEUS_REMOTE_WRITE_URL").to_string();
    feed_reducing(&url, &label, since).await;
    // Killed while Running: the restarted one keeps the same clock and children (counted once
    // it has reconciled the Running Experiment).
    operator.nudge(&api, "exp", "experiment").await;
    assert_eq!(
        children_count(&ns).await,
        (2, 1, 2, 2),
        "2 Pipelines, 1 Simulation, 2 DaemonSets, 2 ConfigMaps"
    );
    let versions = |ns: &TestNamespace| {
        let (p, d) = (ns.api::<Pipeline>(), ns.api::<DaemonSet>());
        async move {
            let mut v: Vec<String> = p
                .list(&ListParams::default())
                .await
                .expect("list")
                .items
                .iter()
                .filter_map(|o| o.metadata.resource_version.clone())
                .collect();
            v.extend(
                d.list(&ListParams::default())
                    .await
                    .expect("list")
                    .items
                    .iter()
                    .filter_map(|o| o.metadata.resource_version.clone()),
            );
            v
        }
    };
    let before = versions(&ns).await;
    operator.kill();
    let operator = Operator::start(&ns.name, &[]);
    // The restarted operator has resynced every child (both Pipelines, the Simulation) and
    // reconciled the Experiment before anything is compared.
    eventually(
        "the restarted operator reconciled both Pipelines and the Simulation",
        Duration::from_secs(60),
        || async {
            (operator.reconciled("pipeline") >= 2 && operator.reconciled("simulation") >= 1)
                .then_some(())
        },
    )
    .await;
    operator.nudge(&api, "exp", "experiment").await;
    assert_eq!(
        children_count(&ns).await,
        (2, 1, 2, 2),
        "no duplicate children after restart"
    );
    assert_eq!(
        versions(&ns).await,
        before,
        "the restarted operator resynced without writing to Pipelines or DaemonSets"
    );
    let load = ns
        .api::<Simulation>()
        .get("exp-load")
        .await
        .expect("child Simulation");
    assert!(
        load.spec.duration.get() >= Duration::from_secs(DURATION as u64 + 300),
        "the load outlasts the run plus the deploy timeout: {}",
        load.spec.duration
    );
    let job = ns
        .api::<k8s_openapi::api::batch::v1::Job>()
        .get("exp-load-load")
        .await
        .expect("simulator Job");
    let job_spec = job.spec.expect("Job spec");
    assert!(job_spec.backoff_limit_per_index.is_some_and(|n| n > 0));
    assert!(job_spec.pod_failure_policy.is_some());
    let running = api.get("exp").await.expect("get").status.expect("status");
    assert_eq!(
        running.running_since.map(|t| t.0.as_second()),
        Some(since),
        "the clock survives restarts"
    );
    let status = phase(&api, "exp", FINAL, 180).await;
    assert_eq!(status.verdict, Some(Verdict::Pass), "{:?}", status.message);
    drop(operator);
    ns.cleanup().await;
}

#[tokio::test]
async fn abort_ends_the_run_and_releases_children() {
    let ns = TestNamespace::new("exp-abort").await;
    let operator = Operator::start(&ns.name, &[]);
    let api = ns.api::<Experiment>();
    api.create(&PostParams::default(), &experiment("exp", "", ""))
        .await
        .expect("created");
    running_since(&api, "exp").await;
    let patch = serde_json::json!({"spec": {"abort": true}});
    api.patch("exp", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("abort patched");
    let status = phase(&api, "exp", FINAL, 60).await;
    assert_eq!(status.phase, Some(ExperimentPhase::Aborted));
    assert!(status.completion_time.is_some());
    eventually("children released", Duration::from_secs(60), || async {
        let (p, s, d, _) = children_count(&ns).await;
        (p + s + d == 0).then_some(())
    })
    .await;
    // Terminal phases never change, reconciled again or not.
    operator.nudge(&api, "exp", "experiment").await;
    assert_eq!(
        api.get("exp")
            .await
            .expect("get")
            .status
            .and_then(|s| s.phase),
        Some(ExperimentPhase::Aborted)
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn deleting_mid_run_garbage_collects_everything() {
    let ns = TestNamespace::new("exp-delete").await;
    let _operator = Operator::start(&ns.name, &[]);
    let api = ns.api::<Experiment>();
    api.create(
        &PostParams::default(),
        &experiment(
            "exp",
            "",
            "  simulation: {profile: spike, processes: 10, duration: 2m}\n",
        ),
    )
    .await
    .expect("created");
    running_since(&api, "exp").await;
    assert_eq!(children_count(&ns).await.0, 2);
    api.delete("exp", &Default::default())
        .await
        .expect("deleted");
    eventually(
        "everything garbage-collected",
        Duration::from_secs(90),
        || async {
            let (p, s, d, c) = children_count(&ns).await;
            let jobs = ns
                .api::<k8s_openapi::api::batch::v1::Job>()
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .len();
            (p + s + d + c + jobs == 0).then_some(())
        },
    )
    .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn a_topk_candidate_keeps_the_baselines_heaviest_processes() {
    let ns = TestNamespace::new("exp-topk").await;
    let _operator = Operator::start(&ns.name, &[]);
    let api = ns.api::<Experiment>();
    let mut exp = experiment("exp", "", "");
    exp.spec.duration = "90s".parse().expect("a duration");
    // Refreshed during warmup only; frozen at the window start (since + 60s).
    exp.spec.warmup = "60s".parse().expect("a duration");
    let mut candidate =
        phoenix::crd::PipelineSpec::from_template(phoenix::crd::pipeline::PipelineTemplate::Topk);
    candidate.critical_processes = vec!["^postgres$".into()];
    candidate.topk = Some(serde_yaml::from_str("{k: 3, refreshInterval: 30s}").expect("parses"));
    exp.spec.candidate.pipeline = Some(candidate);
    api.create(&PostParams::default(), &exp)
        .await
        .expect("created");
    let since = running_since(&api, "exp").await;
    let url = cluster().var("PROMETHEUS_REMOTE_WRITE_URL").to_string();
    feed(
        &url,
        &format!("{}/exp", ns.name),
        "baseline",
        &shape(20, 1, &["postgres", "nginx"]),
        since,
    )
    .await;
    // The heaviest three by CPU are the last three names fed.
    let chosen = eventually(
        "top K chosen from the baseline",
        Duration::from_secs(90),
        || async {
            let t = api.get("exp").await.ok()?.status?.topk?;
            (!t.processes.is_empty()).then_some(t.processes)
        },
    )
    .await;
    assert_eq!(chosen, vec!["nginx", "postgres", "svc-0019"]);
    let child = ns
        .api::<Pipeline>()
        .get("exp-candidate")
        .await
        .expect("candidate Pipeline");
    assert_eq!(
        child.spec.topk.map(|t| t.processes),
        Some(chosen.clone()),
        "the candidate was re-rendered with the top K"
    );
    // At the window start the selection is frozen and reported; the candidate is judged with it.
    let frozen = eventually(
        "top K frozen at the window start",
        Duration::from_secs(90),
        || async {
            let t = api.get("exp").await.ok()?.status?.topk?;
            t.frozen_at.is_some().then_some(t)
        },
    )
    .await;
    assert_eq!(
        frozen.frozen_at.map(|t| t.0.as_second()),
        Some(since + 60),
        "frozen at runningSince + warmup"
    );
    assert_eq!(frozen.processes, chosen);
    let analyzed = phase(
        &api,
        "exp",
        &[
            ExperimentPhase::Analyzing,
            ExperimentPhase::Completed,
            ExperimentPhase::Failed,
        ],
        120,
    )
    .await;
    let inputs = analyzed
        .analysis_inputs
        .expect("analysis inputs snapshotted when Analyzing");
    assert_eq!(inputs.topk, chosen, "the snapshot carries the frozen list");
    ns.cleanup().await;
}

/// A Pipeline of the user's, not made by any Experiment.
fn user_pipeline(name: &str) -> Pipeline {
    serde_yaml::from_str(&format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {{name: {name}}}\nspec: {{template: priority-filter, criticalProcesses: ['^postgres$']}}\n"
    ))
    .expect("test Pipeline parses")
}

#[tokio::test]
async fn a_child_name_taken_by_a_users_pipeline_fails_name_conflict_and_leaves_it_alone() {
    let ns = TestNamespace::new("exp-conflict").await;
    let operator = Operator::start(&ns.name, &[]);
    let pipelines = ns.api::<Pipeline>();
    pipelines
        .create(&PostParams::default(), &user_pipeline("exp-candidate"))
        .await
        .expect("user Pipeline created");
    // Let the Pipeline controller settle it, so only the Experiment could still touch it: Ready,
    // then a reconcile begun once nothing was in flight has finished (no write still pending).
    eventually(
        "the user's Pipeline is Ready",
        Duration::from_secs(60),
        || async {
            let p = pipelines.get("exp-candidate").await.ok()?;
            let ready =
                p.status.as_ref()?.phase == Some(phoenix::crd::pipeline::PipelinePhase::Ready);
            ready.then_some(p)
        },
    )
    .await;
    operator
        .nudge(&pipelines, "exp-candidate", "pipeline")
        .await;
    let before = pipelines
        .get("exp-candidate")
        .await
        .expect("the user's Pipeline");
    let api = ns.api::<Experiment>();
    api.create(&PostParams::default(), &experiment("exp", "", ""))
        .await
        .expect("Experiment created");
    let status = phase(&api, "exp", FINAL, 60).await;
    assert_eq!(status.phase, Some(ExperimentPhase::Failed), "{status:?}");
    let ready = conditions::find(&status.conditions, "Ready").expect("Ready condition");
    assert_eq!(ready.reason, "NameConflict");
    assert!(
        ready.message.contains("Pipeline exp-candidate"),
        "{}",
        ready.message
    );
    assert_eq!(status.verdict, None);
    // The terminal Experiment keeps reconciling (releasing what it controls): once it has been
    // reconciled again, the user's Pipeline is still untouched.
    operator.nudge(&api, "exp", "experiment").await;
    let after = pipelines
        .get("exp-candidate")
        .await
        .expect("the user's Pipeline still exists");
    assert_eq!(after.metadata.uid, before.metadata.uid, "not re-created");
    assert_eq!(after.spec, before.spec);
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert!(after.metadata.owner_references.is_none());
    // Nothing of the Experiment's own was left behind either.
    assert!(
        pipelines
            .get_opt("exp-baseline")
            .await
            .expect("get")
            .is_none()
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn a_candidate_in_deployment_mode_runs_on_the_baselines_nodes() {
    let ns = TestNamespace::new("exp-placement").await;
    let _operator = Operator::start(&ns.name, &[]);
    let api = ns.api::<Experiment>();
    let mut exp = experiment("exp", "", "");
    if let Some(c) = exp.spec.candidate.pipeline.as_mut() {
        c.deployment.mode = phoenix::crd::pipeline::DeploymentMode::Deployment;
    }
    api.create(&PostParams::default(), &exp)
        .await
        .expect("created");
    let status = phase(&api, "exp", &[ExperimentPhase::Running], 90).await;
    assert!(
        status
            .placement_overrides
            .iter()
            .any(|o| o.contains("candidate deployment.mode Deployment -> DaemonSet")),
        "{:?}",
        status.placement_overrides
    );
    let daemonsets = ns.api::<DaemonSet>();
    let placed = |side: &'static str| {
        let daemonsets = daemonsets.clone();
        async move {
            let ds = daemonsets
                .get(&format!("exp-{side}-collector"))
                .await
                .unwrap_or_else(|e| panic!("the {side} runs as a DaemonSet: {e}"));
            let pod = ds.spec.template.spec.expect("pod spec");
            let desired = ds.status.map(|s| s.desired_number_scheduled);
            (desired, pod.node_selector, pod.tolerations)
        }
    };
    let (baseline, candidate) = (placed("baseline").await, placed("candidate").await);
    assert_eq!(
        baseline, candidate,
        "same nodes, same selector, same tolerations"
    );
    assert!(
        baseline.0.is_some_and(|n| n >= 2),
        "on at least two kwok nodes: {:?}",
        baseline.0
    );
    assert!(
        ns.api::<k8s_openapi::api::apps::v1::Deployment>()
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty(),
        "no Deployment-mode candidate"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn the_clock_does_not_start_while_the_load_cannot_start() {
    let ns = TestNamespace::new("exp-noload").await;
    // The simulator container's CPU limit (2) is above what this namespace admits (1), the
    // collectors' (500m) is not: the load's pods are refused, the collectors run.
    let limits: k8s_openapi::api::core::v1::LimitRange = serde_yaml::from_str(
        "metadata: {name: small}\nspec: {limits: [{type: Container, max: {cpu: '1'}}]}",
    )
    .expect("LimitRange parses");
    ns.api::<k8s_openapi::api::core::v1::LimitRange>()
        .create(&PostParams::default(), &limits)
        .await
        .expect("LimitRange created");
    let _operator = Operator::start(&ns.name, &["--deploy-timeout-seconds", "30"]);
    let api = ns.api::<Experiment>();
    api.create(
        &PostParams::default(),
        &experiment(
            "exp",
            "",
            "  simulation: {profile: spike, processes: 10, duration: 1m}\n",
        ),
    )
    .await
    .expect("created");
    // Both collectors become ready, the load does not: never Running, the deploy timeout fails it.
    let status = phase(&api, "exp", FINAL, 120).await;
    assert_eq!(status.phase, Some(ExperimentPhase::Failed), "{status:?}");
    let ready = conditions::find(&status.conditions, "Ready").expect("Ready condition");
    assert_eq!(ready.reason, "DeployTimeout", "{}", ready.message);
    assert_eq!(status.running_since, None, "the clock never started");
    ns.cleanup().await;
}

#[tokio::test]
async fn released_children_do_not_change_a_pending_analysis() {
    let ns = TestNamespace::new("exp-reanalyze").await;
    let port = free_port();
    let mut prom = OwnPrometheus::start(
        repo_root().join(format!("target/e2e/prom-{}", ns.name)),
        port,
    );
    prom.ready().await;
    // The Experiment's own Prometheus must be allowed by the operator's settings.
    let allowed = format!("http://127.0.0.1:{port}");
    let _operator = Operator::start(&ns.name, &["--allowed-prometheus-url-prefixes", &allowed]);
    // Both variants by reference: their critical patterns live only in the child Pipelines.
    let pipelines = ns.api::<Pipeline>();
    for (name, template) in [("today", "baseline"), ("cheaper", "aggregate")] {
        let p: Pipeline = serde_yaml::from_str(&format!(
            "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {{name: {name}}}\nspec: {{template: {template}, criticalProcesses: ['^postgres$', '^nginx$']}}\n"
        ))
        .expect("parses");
        pipelines
            .create(&PostParams::default(), &p)
            .await
            .expect("referenced Pipeline created");
    }
    let api = ns.api::<Experiment>();
    let mut exp = experiment(
        "exp",
        "minSeriesReductionPercent: 80",
        &format!("  prometheus: {{url: 'http://127.0.0.1:{port}'}}\n"),
    );
    exp.spec.baseline = serde_yaml::from_str("{pipelineRef: {name: today}}").expect("parses");
    exp.spec.candidate = serde_yaml::from_str("{pipelineRef: {name: cheaper}}").expect("parses");
    api.create(&PostParams::default(), &exp)
        .await
        .expect("created");
    let since = running_since(&api, "exp").await;
    // The candidate loses nginx: retention 50%, a Fail.
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let label = format!("{}/exp", ns.name);
    feed(
        &url,
        &label,
        "baseline",
        &shape(50, 2, &["postgres", "nginx"]),
        since,
    )
    .await;
    feed(
        &url,
        &label,
        "candidate",
        &shape(3, 1, &["postgres"]),
        since,
    )
    .await;
    prom.stop();
    let analyzing = phase(&api, "exp", &[ExperimentPhase::Analyzing], 120).await;
    let inputs = analyzing
        .analysis_inputs
        .expect("inputs stored when Analyzing");
    assert_eq!(inputs.critical_processes, vec!["^nginx$", "^postgres$"]);
    // The children go while the analysis is pending, as after a release whose status write was
    // lost: the analysis must not change.
    for side in ["baseline", "candidate"] {
        pipelines
            .delete(&format!("exp-{side}"), &Default::default())
            .await
            .expect("child deleted");
    }
    let prom = OwnPrometheus::start(prom.dir.clone(), port);
    prom.ready().await;
    let status = completed(&api, "exp").await;
    assert_eq!(status.verdict, Some(Verdict::Fail), "{:?}", status.results);
    assert_eq!(
        status.results.and_then(|r| r.critical_retention_percent),
        Some(50.0)
    );
    // The referenced Pipelines are the user's: untouched.
    assert_eq!(
        pipelines
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        2
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn a_status_decided_from_a_stale_read_is_not_stored() {
    use phoenix::controller::{StatusWrite, write_status_at};
    let ns = TestNamespace::new("exp-stale").await;
    // No operator: this test is the only writer.
    let api = ns.api::<Experiment>();
    let stale = api
        .create(&PostParams::default(), &experiment("exp", "", ""))
        .await
        .expect("created");
    let version = stale.metadata.resource_version.clone();
    let completed = ExperimentStatus {
        phase: Some(ExperimentPhase::Completed),
        verdict: Some(Verdict::Fail),
        ..Default::default()
    };
    let written = write_status_at(&api, &stale, version.as_deref(), None, &completed)
        .await
        .expect("first write");
    assert_eq!(written, StatusWrite::Written);
    // A pass that read the object before that write decides from the old version: refused.
    let running = ExperimentStatus {
        phase: Some(ExperimentPhase::Running),
        ..Default::default()
    };
    let written = write_status_at(&api, &stale, version.as_deref(), None, &running)
        .await
        .expect("second write answers");
    assert_eq!(written, StatusWrite::Conflict);
    let stored = api.get("exp").await.expect("get").status.expect("status");
    assert_eq!(stored.phase, Some(ExperimentPhase::Completed));
    assert_eq!(stored.verdict, Some(Verdict::Fail));
    ns.cleanup().await;
}
