//! The analysis against a real Prometheus: deterministic data pushed by remote write, measured by
//! `analysis::measure` and judged by `analysis::verdict`.
//!
//! Each test starts its own `prometheus` (Debian's 2.42 in CI; `PHOENIX_PROMETHEUS_BIN` overrides)
//! on a free loopback port with the remote-write receiver on and a throwaway TSDB, and stops it on
//! drop. Without the binary the tests are skipped, unless `PHOENIX_REQUIRE_E2E=1` (as in CI).

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use phoenix::analysis::access::{self, PrometheusAccess};
use phoenix::analysis::measure::{self, MeasureError, Measurements, Window};
use phoenix::analysis::queries::{self, VariantSelector, what};
use phoenix::analysis::remote_write::{self, TimeSeries};
use phoenix::analysis::verdict::{self, Outcome};
use phoenix::crd::experiment::{ExperimentSpec, InconclusiveReason, Verdict};
use prometheus_http_query::{Client, reqwest};
use serde_json::json;

/// Seconds between samples of the fake collectors, and the analysis step.
const STEP: i64 = 15;
/// Samples per series: 24 × 15 s = the last 6 minutes.
const SAMPLES: i64 = 24;
/// Samples sit 7 s after each 15 s boundary, so no sample lands exactly on a window edge.
const OFFSET: i64 = 7;

const CRITICAL: [&str; 2] = ["^postgres$", "^nginx$"];

// ---------------------------------------------------------------------------------------------
// A private Prometheus.

struct Prometheus {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Prometheus {
    /// Starts Prometheus, or returns None (test skipped) when the binary is missing.
    fn start() -> Option<Prometheus> {
        let Some(binary) = prometheus_binary() else {
            assert!(
                std::env::var("PHOENIX_REQUIRE_E2E").as_deref() != Ok("1"),
                "prometheus not found (PATH, /usr/bin/prometheus or PHOENIX_PROMETHEUS_BIN); \
                 tests/e2e/build.sh prometheus installs it"
            );
            eprintln!("skipped: no prometheus binary");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!(
            "phoenix-analysis-{}-{port}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(dir.join("data")).expect("temp dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            "# Scrapes nothing: the test pushes by remote write.\nscrape_configs: []\n",
        )
        .expect("write config");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Some(Prometheus {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    async fn wait_ready(&self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = http
                .get(format!("{}/-/ready", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 60s; log:\n{}",
                std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn client(&self, http: &reqwest::Client) -> access::Prometheus {
        let client = Client::from(http.clone(), &self.url).expect("prometheus client");
        access::Prometheus::new(
            client,
            PrometheusAccess::default().prometheus_max_response_bytes,
        )
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn prometheus_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("PHOENIX_PROMETHEUS_BIN") {
        return Some(path.into());
    }
    let in_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("prometheus"))
            .find(|p| p.is_file())
    });
    in_path.or_else(|| {
        let debian = Path::new("/usr/bin/prometheus");
        debian.is_file().then(|| debian.to_path_buf())
    })
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

// ---------------------------------------------------------------------------------------------
// Deterministic data.

/// The 15 s boundary 6 minutes before now: samples at `base + 7 + 15k` for k in 0..24 all lie
/// in the past, the newest at least 8 s ago.
fn base_time() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    now / STEP * STEP - SAMPLES * STEP
}

/// The analysis window `[base+60, base+345]` for a 15 s collection interval: each step looks back
/// 30 s (two samples of every series), and every rate() range of 60 s holds four samples.
/// 18 steps: base+90, base+105, …, base+345.
fn window(base: i64) -> Window {
    Window::new(base + 60, base + 345, STEP as f64, STEP as f64)
}

/// Steps of [`window`].
const STEPS: usize = 18;

fn timestamps(base: i64) -> impl Iterator<Item = (i64, i64)> {
    (0..SAMPLES).map(move |k| (k, (base + OFFSET + k * STEP) * 1000))
}

/// `postgres`, `nginx`, then `app-00`… up to `count` executables.
fn executables(count: usize) -> Vec<String> {
    let mut names = vec!["postgres".to_string(), "nginx".to_string()];
    names.extend((0..count.saturating_sub(2)).map(|i| format!("app-{i:02}")));
    names
}

/// Four process series per executable (CPU user and system, resident and virtual memory), each
/// with 24 samples; process `i` burns `0.001·(i+1)` cores per CPU state.
fn process_series(
    base: i64,
    experiment: &str,
    variant: &str,
    exes: &[String],
    cpu_rank: impl Fn(&str) -> usize,
) -> Vec<TimeSeries> {
    let pipeline = format!("{}-{variant}", experiment.replace('/', "-"));
    let mut out = Vec::new();
    for exe in exes {
        let rank = cpu_rank(exe);
        let pid = (1000 + rank).to_string();
        let common = [
            ("phoenix_experiment", experiment),
            ("phoenix_variant", variant),
            ("phoenix_pipeline", pipeline.as_str()),
            ("phoenix_node", "node-1"),
            ("process_executable_name", exe.as_str()),
            ("process_pid", pid.as_str()),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut labels = common.to_vec();
            labels.extend_from_slice(extra);
            labels
        };
        let cores = 0.001 * (rank as f64 + 1.0);
        let mut user = TimeSeries::new(
            "process_cpu_time_seconds_total",
            &with(&[("state", "user")]),
        );
        let mut system = TimeSeries::new(
            "process_cpu_time_seconds_total",
            &with(&[("state", "system")]),
        );
        let mut rss = TimeSeries::new("process_memory_usage_bytes", &with(&[]));
        let mut virt = TimeSeries::new("process_memory_virtual_bytes", &with(&[]));
        for (k, ts) in timestamps(base) {
            let cpu = 100.0 + cores * (k * STEP) as f64;
            user = user.sample(ts, cpu);
            system = system.sample(ts, cpu / 2.0);
            rss = rss.sample(ts, 1e6 * (rank as f64 + 1.0));
            virt = virt.sample(ts, 4e6 * (rank as f64 + 1.0));
        }
        out.extend([user, system, rss, virt]);
    }
    out
}

/// The collector's own telemetry on `node`: CPU counter (`cores` per second), resident memory
/// gauge, and the points its `hostmetrics` receiver accepted and its remote-write exporter sent
/// (100 per collection).
fn collector_series_on(
    base: i64,
    experiment: &str,
    variant: &str,
    node: &str,
    cores: f64,
    rss: f64,
) -> Vec<TimeSeries> {
    let labels = [
        ("phoenix_experiment", experiment),
        ("phoenix_variant", variant),
        ("phoenix_node", node),
    ];
    let with = |key: &'static str, value: &'static str| {
        let mut l = labels.to_vec();
        l.push((key, value));
        l
    };
    let mut cpu = TimeSeries::new("otelcol_process_cpu_seconds_total", &labels);
    let mut memory = TimeSeries::new("otelcol_process_memory_rss_bytes", &labels);
    let mut accepted = TimeSeries::new(
        queries::ACCEPTED_POINTS_METRIC,
        &with("receiver", "hostmetrics"),
    );
    let mut sent = TimeSeries::new(
        queries::SENT_POINTS_METRIC,
        &with("exporter", "prometheusremotewrite"),
    );
    for (k, ts) in timestamps(base) {
        cpu = cpu.sample(ts, 1000.0 + cores * (k * STEP) as f64);
        memory = memory.sample(ts, rss);
        accepted = accepted.sample(ts, 100.0 * k as f64);
        sent = sent.sample(ts, 100.0 * k as f64);
    }
    vec![cpu, memory, accepted, sent]
}

/// [`collector_series_on`] `node-1`.
fn collector_series(
    base: i64,
    experiment: &str,
    variant: &str,
    cores: f64,
    rss: f64,
) -> Vec<TimeSeries> {
    collector_series_on(base, experiment, variant, "node-1", cores, rss)
}

/// Rank of an executable in [`executables`] order (postgres 0, nginx 1, app-00 2, …).
fn rank(exe: &str) -> usize {
    match exe {
        "postgres" => 0,
        "nginx" => 1,
        app => {
            app.trim_start_matches("app-")
                .parse::<usize>()
                .expect("app-NN")
                + 2
        }
    }
}

/// Feeds one experiment: the baseline sees 50 executables (200 series), the candidate `kept`.
fn experiment(base: i64, name: &str, kept: &[String]) -> Vec<TimeSeries> {
    let mut series = process_series(base, name, "baseline", &executables(50), rank);
    series.extend(process_series(base, name, "candidate", kept, rank));
    series.extend(collector_series(base, name, "baseline", 0.2, 200e6));
    series.extend(collector_series(base, name, "candidate", 0.1, 100e6));
    series
}

fn selector(experiment: &str, variant: &str) -> VariantSelector {
    VariantSelector {
        experiment: experiment.to_string(),
        variant: variant.to_string(),
    }
}

fn spec(criteria: serde_json::Value) -> ExperimentSpec {
    serde_json::from_value(json!({
        "baseline": {"pipelineRef": {"name": "baseline"}},
        "candidate": {"pipelineRef": {"name": "candidate"}},
        "analysis": {"interval": "15s", "significanceLevel": 0.05},
        "successCriteria": criteria,
    }))
    .expect("valid spec")
}

async fn measure_both(
    prom: &access::Prometheus,
    experiment: &str,
    window: &Window,
) -> (Measurements, Measurements) {
    let critical: Vec<String> = CRITICAL.iter().map(|s| s.to_string()).collect();
    let baseline = measure::measure(prom, &selector(experiment, "baseline"), window, &critical)
        .await
        .expect("measure baseline");
    let candidate = measure::measure(prom, &selector(experiment, "candidate"), window, &critical)
        .await
        .expect("measure candidate");
    (baseline, candidate)
}

fn verdict_of(outcome: &Outcome) -> Verdict {
    match outcome {
        Outcome::Verdict(v) => *v,
        Outcome::NoData(reason) => panic!("no data: {reason}"),
    }
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0),
        "{what}: {actual} != {expected}"
    );
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measures_and_judges_real_prometheus_data() {
    let Some(prometheus) = Prometheus::start() else {
        return;
    };
    let http = http();
    prometheus.wait_ready(&http).await;
    let prom = prometheus.client(&http);
    assert!(measure::reachable(&prom).await);

    let base = base_time();
    let pass_keeps = executables(5); // postgres, nginx, app-00..app-02: 20 series
    let lost_keeps: Vec<String> = ["postgres", "app-00", "app-01", "app-02", "app-03"]
        .map(String::from)
        .to_vec();
    let mut feed = experiment(base, "shop/pass", &pass_keeps);
    feed.extend(experiment(base, "shop/a-a", &executables(50)));
    feed.extend(experiment(base, "shop/lost", &lost_keeps));
    remote_write::push(&http, &format!("{}/api/v1/write", prometheus.url), &feed)
        .await
        .expect("remote write accepted");
    let window = window(base);

    // A clear reduction: 200 → 20 series, critical processes kept.
    let (baseline, candidate) = measure_both(&prom, "shop/pass", &window).await;
    assert_eq!(baseline.series, vec![Some(200.0); STEPS]);
    assert_eq!(candidate.series, vec![Some(20.0); STEPS]);
    assert_eq!(candidate.collectors, vec![Some(1.0); STEPS]);
    assert_eq!(candidate.nodes, names(&["node-1"]));
    // 17 collections of 100 points in the window: increase() extrapolates to its edges.
    let scraped = candidate.telemetry.scraped_points.expect("scraped");
    assert!((1700.0..=1900.0).contains(&scraped), "{scraped}");
    assert!(candidate.telemetry.exported_points.is_some_and(|p| p > 0.0));
    assert_eq!(candidate.telemetry.failed_points, 0.0);
    assert_eq!(
        (baseline.distinct_series, candidate.distinct_series),
        (200.0, 20.0)
    );
    // 19 samples per series in the 285 s window: one per 15 s.
    assert_close(baseline.datapoints_per_second, 200.0 / 15.0, "baseline dps");
    assert_close(
        candidate.datapoints_per_second,
        20.0 / 15.0,
        "candidate dps",
    );
    assert_eq!(baseline.cpu.len(), STEPS);
    for (cpu, expected) in [(&baseline.cpu, 0.2), (&candidate.cpu, 0.1)] {
        for value in cpu {
            assert_close(value.expect("cpu at every step"), expected, "collector cpu");
        }
    }
    assert_eq!(baseline.memory, vec![Some(200e6); STEPS]);
    assert_eq!(candidate.memory, vec![Some(100e6); STEPS]);
    assert_eq!(baseline.critical_names, names(&["nginx", "postgres"]));
    assert_eq!(candidate.critical_names, names(&["nginx", "postgres"]));
    let datapoints_query = candidate.query(what::DATAPOINTS_PER_SECOND).unwrap();
    for metric in [
        "process_cpu_time_seconds_total",
        "process_memory_usage_bytes",
        "process_memory_virtual_bytes",
    ] {
        assert!(datapoints_query.contains(metric), "{datapoints_query}");
    }

    let criteria = json!({
        "minSeriesReductionPercent": 80,
        "maxCollectorCpuIncreasePercent": 0,
        "maxCollectorMemoryIncreasePercent": 0,
        "minCostReductionPercent": 50,
    });
    let evaluation = verdict::evaluate(&spec(criteria.clone()), &baseline, &candidate);
    assert_eq!(
        verdict_of(&evaluation.outcome),
        Verdict::Pass,
        "{}",
        evaluation.summary()
    );
    let r = &evaluation.results;
    assert_eq!(r.series_reduction_percent, Some(90.0));
    assert_eq!(r.datapoint_reduction_percent, Some(90.0));
    assert_eq!(r.cost_reduction_percent, Some(90.0));
    // 200/1000 × 8 + 13.33 dps × 2,592,000 / 1e6 × 0.5 = 1.6 + 17.28; the candidate a tenth.
    let cost = r.estimated_monthly_cost.as_ref().unwrap();
    assert_eq!((cost.baseline, cost.candidate), (18.88, 1.888));
    assert_eq!(r.critical_retention_percent, Some(100.0));
    assert_eq!(
        (r.baseline.series, r.candidate.series),
        (Some(200.0), Some(20.0))
    );
    assert_eq!(r.baseline.critical_processes_seen, Some(2));
    assert_eq!(r.criteria.len(), 5);
    assert!(r.criteria.iter().all(|c| c.passed), "{:?}", r.criteria);
    let series_query = r.criteria[0].query.as_deref().expect("series query");
    assert!(
        series_query.starts_with(
            r#"count(label_replace(count_over_time(process_cpu_time_seconds_total{phoenix_experiment="shop/pass",phoenix_variant="candidate"}[30s])"#
        ),
        "{series_query}"
    );
    let confidence = r.confidence.as_ref().unwrap();
    assert_eq!(confidence.samples, STEPS as u32);
    assert!(confidence.p_value.unwrap() < 1e-6, "{confidence:?}");
    assert_eq!(r.coverage.as_ref().unwrap().percent, 100.0);

    // A/A: identical variants never pass.
    let (baseline, candidate) = measure_both(&prom, "shop/a-a", &window).await;
    assert_eq!(baseline.series, candidate.series);
    let evaluation = verdict::evaluate(&spec(json!({})), &baseline, &candidate);
    assert_eq!(verdict_of(&evaluation.outcome), Verdict::Inconclusive);
    assert_eq!(
        evaluation.results.inconclusive_reason,
        Some(InconclusiveReason::NotSignificant)
    );
    assert_eq!(evaluation.results.series_reduction_percent, Some(0.0));
    assert_eq!(evaluation.results.confidence.unwrap().p_value, Some(1.0));
    let evaluation = verdict::evaluate(&spec(criteria.clone()), &baseline, &candidate);
    assert_eq!(verdict_of(&evaluation.outcome), Verdict::Fail);

    // The candidate drops nginx: half the critical processes lost.
    let (baseline, candidate) = measure_both(&prom, "shop/lost", &window).await;
    assert_eq!(candidate.series, vec![Some(20.0); STEPS]);
    assert_eq!(candidate.critical_names, names(&["postgres"]));
    let evaluation = verdict::evaluate(&spec(criteria), &baseline, &candidate);
    assert_eq!(verdict_of(&evaluation.outcome), Verdict::Fail);
    assert_eq!(evaluation.results.critical_retention_percent, Some(50.0));
    let retention = evaluation
        .results
        .criteria
        .iter()
        .find(|c| c.name == "minCriticalRetentionPercent")
        .unwrap();
    assert_eq!((retention.observed, retention.passed), (Some(50.0), false));

    // An experiment nobody wrote: no data, never a verdict.
    let (baseline, candidate) = measure_both(&prom, "shop/absent", &window).await;
    assert_eq!(baseline.series, vec![None; STEPS]);
    assert_eq!(baseline.distinct_series, 0.0);
    assert_eq!(baseline.datapoints_per_second, 0.0);
    let evaluation = verdict::evaluate(&spec(json!({})), &baseline, &candidate);
    assert!(matches!(evaluation.outcome, Outcome::NoData(_)));

    // Top-K by CPU over the baseline: the heaviest are the last apps (app-47 burns the most).
    let top = measure::topk_names(&prom, &selector("shop/pass", "baseline"), 3, &window)
        .await
        .expect("topk");
    assert_eq!(top, ["app-47", "app-46", "app-45"]);
}

#[tokio::test]
async fn a_stopped_prometheus_is_unreachable() {
    let Some(mut prometheus) = Prometheus::start() else {
        return;
    };
    let http = http();
    prometheus.wait_ready(&http).await;
    let prom = prometheus.client(&http);
    assert!(measure::reachable(&prom).await);
    prometheus.stop();

    assert!(!measure::reachable(&prom).await);
    let base = base_time();
    let result = measure::measure(
        &prom,
        &selector("shop/pass", "baseline"),
        &window(base),
        &[],
    )
    .await;
    match result {
        Err(e @ MeasureError::Unreachable(_)) => assert!(e.is_transient()),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    let top =
        measure::topk_names(&prom, &selector("shop/pass", "baseline"), 3, &window(base)).await;
    assert!(matches!(top, Err(MeasureError::Unreachable(_))), "{top:?}");
}

#[tokio::test]
async fn bad_requests_are_not_retried() {
    let client = Client::from(http(), "http://127.0.0.1:9").expect("client");
    let prom = access::Prometheus::new(client, 1 << 20);
    let window = Window::new(100, 100, 15.0, 10.0);
    let result = measure::measure(&prom, &selector("a/b", "baseline"), &window, &[]).await;
    assert!(
        matches!(result, Err(MeasureError::Invalid(_))),
        "{result:?}"
    );
    let window = Window::new(100, 200, 15.0, 10.0);
    let result = measure::measure(
        &prom,
        &selector("a/b", "baseline"),
        &window,
        &["(unclosed".to_string()],
    )
    .await;
    match result {
        Err(e @ MeasureError::Invalid(_)) => assert!(!e.is_transient()),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// Path 5 of issue 13: a critical name the candidate wrote only before the window (warmup, or an
/// earlier run of a same-named Experiment) is not retained. The label-values API answers with
/// every name in the head block whatever the range, so this needs samples from the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_names_come_from_samples_inside_the_window() {
    let Some(prometheus) = Prometheus::start() else {
        return;
    };
    let http = http();
    prometheus.wait_ready(&http).await;
    let prom = prometheus.client(&http);
    let base = base_time();
    // The candidate keeps nginx and apps inside the window; postgres only 30 minutes earlier.
    let kept: Vec<String> = ["nginx", "app-00", "app-01", "app-02"]
        .map(String::from)
        .to_vec();
    let mut feed = experiment(base, "shop/leak", &kept);
    let early = [
        ("phoenix_experiment", "shop/leak"),
        ("phoenix_variant", "candidate"),
        ("phoenix_pipeline", "shop-leak-candidate"),
        ("phoenix_node", "node-1"),
        ("process_executable_name", "postgres"),
        ("process_pid", "1000"),
    ];
    let before = (window(base).start - 1800) * 1000;
    feed.push(
        TimeSeries::new("process_memory_usage_bytes", &early)
            .sample(before, 1e6)
            .sample(before + 15_000, 1e6),
    );
    remote_write::push(&http, &format!("{}/api/v1/write", prometheus.url), &feed)
        .await
        .expect("remote write accepted");
    let (baseline, candidate) = measure_both(&prom, "shop/leak", &window(base)).await;
    assert_eq!(baseline.critical_names, names(&["nginx", "postgres"]));
    assert_eq!(
        candidate.critical_names,
        names(&["nginx"]),
        "postgres was only seen 30 minutes before the window"
    );
    let evaluation = verdict::evaluate(&spec(json!({})), &baseline, &candidate);
    assert_eq!(evaluation.results.critical_retention_percent, Some(50.0));
    assert_eq!(verdict_of(&evaluation.outcome), Verdict::Fail);
}

/// Path 4 of issue 13: missing candidate data never counts as a reduction. Each case goes through
/// the real queries on real Prometheus data and ends `Inconclusive` with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_partial_candidate_data_is_inconclusive_with_its_reason() {
    let Some(prometheus) = Prometheus::start() else {
        return;
    };
    let http = http();
    prometheus.wait_ready(&http).await;
    let prom = prometheus.client(&http);
    let base = base_time();
    let kept = executables(5);
    let baseline_of = |name: &str| {
        let mut s = process_series(base, name, "baseline", &executables(50), rank);
        s.extend(collector_series(base, name, "baseline", 0.2, 200e6));
        s
    };
    let mut feed = Vec::new();

    // Drop-everything processors: the collector reports itself, no process series at all.
    feed.extend(baseline_of("shop/drop"));
    feed.extend(collector_series(base, "shop/drop", "candidate", 0.1, 100e6));

    // A crash-looping candidate: nothing, not even its own telemetry, for samples 8..=13.
    feed.extend(baseline_of("shop/crash"));
    let mut crashing = process_series(base, "shop/crash", "candidate", &kept, rank);
    crashing.extend(collector_series(
        base,
        "shop/crash",
        "candidate",
        0.1,
        100e6,
    ));
    let gap = ((base + OFFSET + 8 * STEP) * 1000)..=((base + OFFSET + 13 * STEP) * 1000);
    for series in &mut crashing {
        series.samples.retain(|s| !gap.contains(&s.timestamp_ms));
    }
    feed.extend(crashing);

    // Wrong node: the baseline's collectors run on two nodes, the candidate's on one of them.
    feed.extend(baseline_of("shop/nodes"));
    feed.extend(collector_series_on(
        base,
        "shop/nodes",
        "baseline",
        "node-2",
        0.2,
        200e6,
    ));
    feed.extend(process_series(base, "shop/nodes", "candidate", &kept, rank));
    feed.extend(collector_series(
        base,
        "shop/nodes",
        "candidate",
        0.1,
        100e6,
    ));

    // Prometheus refuses some of the candidate's samples: its exporter counts send failures.
    feed.extend(baseline_of("shop/fails"));
    feed.extend(process_series(base, "shop/fails", "candidate", &kept, rank));
    feed.extend(collector_series(
        base,
        "shop/fails",
        "candidate",
        0.1,
        100e6,
    ));
    let mut failed = TimeSeries::new(
        queries::SEND_FAILED_POINTS_METRIC,
        &[
            ("phoenix_experiment", "shop/fails"),
            ("phoenix_variant", "candidate"),
            ("phoenix_node", "node-1"),
            ("exporter", "prometheusremotewrite"),
        ],
    );
    for (k, ts) in timestamps(base) {
        failed = failed.sample(ts, 10.0 * k as f64);
    }
    feed.push(failed);

    remote_write::push(&http, &format!("{}/api/v1/write", prometheus.url), &feed)
        .await
        .expect("remote write accepted");
    let criteria = json!({"minSeriesReductionPercent": 50});
    for (experiment, reason) in [
        ("shop/drop", InconclusiveReason::CandidateNoData),
        ("shop/crash", InconclusiveReason::DataGaps),
        ("shop/nodes", InconclusiveReason::NodeMismatch),
        ("shop/fails", InconclusiveReason::ExportFailures),
    ] {
        let (baseline, candidate) = measure_both(&prom, experiment, &window(base)).await;
        let evaluation = verdict::evaluate(&spec(criteria.clone()), &baseline, &candidate);
        assert_eq!(
            (
                verdict_of(&evaluation.outcome),
                evaluation.results.inconclusive_reason
            ),
            (Verdict::Inconclusive, Some(reason)),
            "{experiment}: {}",
            evaluation.summary()
        );
        if experiment == "shop/crash" {
            // Steps whose 30 s range holds only missing samples: base+150 … base+210.
            let missing = candidate.series.iter().filter(|s| s.is_none()).count();
            assert_eq!(missing, 5, "{:?}", candidate.series);
            assert_eq!(evaluation.results.coverage.unwrap().paired_steps, 13);
        }
    }
}
