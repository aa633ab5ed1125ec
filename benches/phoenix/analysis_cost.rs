//! Analysis cost: many Experiments ending their run within about a minute, each analyzed from
//! data remote-written into the cluster's Prometheus (kwok's collectors write nothing): Prometheus
//! queries per analysis, analysis latency (Analyzing → a terminal phase, from the Experiment
//! watch), and how long after its run's end the last one had its result.

use std::collections::HashMap;
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures::StreamExt;
use kube::Api;
use kube::api::PostParams;
use phoenix::analysis::queries::{COLLECTOR_CPU_METRIC, COLLECTOR_MEMORY_METRIC};
use phoenix::analysis::remote_write::{self, TimeSeries};
use phoenix::crd::experiment::Experiment;
use phoenix::desired::children;

use crate::cluster::{self, Cluster};
use crate::control_plane::{ONE_KWOK_NODE, Operator, Plan, Tracker};
use crate::support::{Met, Report, Result, ms, quantile};

const NS: &str = "bench-analysis";
/// The analysis step, seconds, and the spacing of the fed samples.
const STEP: i64 = 5;
/// The prefix of the operator's Prometheus request counter on /metrics.
const QUERIES: &str = "phoenix_prometheus_query_duration_seconds_count{";

fn analysis_experiment(name: &str, duration: u64) -> Result<Experiment> {
    let critical = "['^postgres$', '^nginx$']";
    Ok(serde_yaml::from_str(&format!(
        "apiVersion: phoenix.io/v1alpha1
kind: Experiment
metadata: {{name: {name}}}
spec:
  targets: {{nodeSelector: {ONE_KWOK_NODE}}}
  baseline: {{pipeline: {{template: baseline, collectionInterval: 5s, criticalProcesses: {critical}}}}}
  candidate: {{pipeline: {{template: aggregate, collectionInterval: 5s, criticalProcesses: {critical}}}}}
  duration: {duration}s
  warmup: 0s
  analysis: {{interval: {STEP}s}}
  successCriteria: {{minSeriesReductionPercent: 90}}
"
    ))?)
}

/// Series of one variant as a real collector would write them: `executables` names with `pids`
/// processes each (CPU and memory per process) plus the collector's own telemetry, every
/// [`STEP`] seconds over `[from, from + secs]` (future samples are fine: nothing else writes
/// these series).
fn variant_series(
    label: &str,
    variant: &str,
    executables: usize,
    pids: usize,
    from: i64,
    secs: i64,
) -> Vec<TimeSeries> {
    let base = [
        ("phoenix_experiment", label),
        ("phoenix_variant", variant),
        ("phoenix_pipeline", variant),
        ("phoenix_node", "kwok-node-0"),
    ];
    let steps: Vec<i64> = (0..=secs / STEP)
        .map(|k| (from + k * STEP) * 1000)
        .collect();
    let mut names: Vec<String> = (0..executables).map(|i| format!("svc-{i:04}")).collect();
    names.extend(["postgres".to_string(), "nginx".to_string()]);
    let mut series = Vec::new();
    for (rank, name) in names.iter().enumerate() {
        for pid in 0..pids {
            let pid = pid.to_string();
            for metric in [
                "process_cpu_time_seconds_total",
                "process_memory_usage_bytes",
            ] {
                let mut labels = base.to_vec();
                labels.extend([
                    ("process_executable_name", name.as_str()),
                    ("process_pid", pid.as_str()),
                ]);
                let mut ts = TimeSeries::new(metric, &labels);
                for (i, t) in steps.iter().enumerate() {
                    ts = ts.sample(*t, (i * (rank + 1)) as f64);
                }
                series.push(ts);
            }
        }
    }
    let with = |key: &'static str, value: &'static str| {
        let mut labels = base.to_vec();
        labels.push((key, value));
        labels
    };
    let mut cpu = TimeSeries::new(COLLECTOR_CPU_METRIC, &base);
    let mut rss = TimeSeries::new(COLLECTOR_MEMORY_METRIC, &base);
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
        rss = rss.sample(*t, 100e6);
        accepted = accepted.sample(*t, i as f64 * 100.0);
        sent = sent.sample(*t, i as f64 * 100.0);
    }
    series.extend([cpu, rss, accepted, sent]);
    series
}

/// Feeds one Experiment's window: a baseline of 50 executables × 2 processes and a candidate of
/// 3 × 1, both with the critical processes.
async fn feed(
    client: &reqwest::Client,
    url: &str,
    label: &str,
    from: i64,
    secs: i64,
) -> Result<()> {
    let mut series = variant_series(label, "baseline", 50, 2, from, secs);
    series.extend(variant_series(label, "candidate", 3, 1, from, secs));
    for chunk in series.chunks(500) {
        remote_write::push(client, url, chunk).await?;
    }
    Ok(())
}

pub async fn run(
    plan: &Plan,
    cluster: &Cluster,
    tracker: &mut Tracker,
    report: &mut Report,
) -> Result<()> {
    let n = plan.analysis;
    let duration = plan.analysis_duration_secs;
    report.section(format!(
        "7. analysis cost: {n} Experiments ending within about a minute"
    ));
    let client = cluster.client().await?;
    cluster::ensure_namespace(&client, NS).await?;
    let mut operator = Operator::start(plan, cluster, &plan.out.join("operator-analysis.log"))?;
    let queries_before = operator.metric_sum(QUERIES).unwrap_or(0.0);
    let api: Api<Experiment> = Api::namespaced(client.clone(), NS);
    let names: Vec<String> = (0..n).map(|i| format!("analysis-{i:04}")).collect();
    let t0 = Instant::now();
    let create_errors: Vec<String> = futures::stream::iter(names.clone())
        .map(|name| {
            let api = api.clone();
            async move {
                let exp = analysis_experiment(&name, duration)?;
                api.create(&PostParams::default(), &exp).await?;
                Ok::<_, crate::support::BoxError>(())
            }
        })
        .buffer_unordered(plan.concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    eprintln!(
        "bench: analysis cost: {} of {n} created in {:.1} s",
        n - create_errors.len(),
        t0.elapsed().as_secs_f64()
    );
    if let Some(first) = create_errors.first() {
        report.info(
            "analysis cost: creates that failed",
            format!("{} (first: {first})", create_errors.len()),
        );
        if create_errors.len() == n {
            operator.stop();
            return Err(format!("analysis cost: no Experiment could be created: {first}").into());
        }
    }

    // Feed each Experiment's window once it is Running; wait until all have a result.
    let keys: Vec<String> = names.iter().map(|e| format!("{NS}/{e}")).collect();
    let http = reqwest::Client::new();
    let mut fed: HashMap<String, i64> = HashMap::new();
    let deadline = t0 + plan.running_timeout + Duration::from_secs(duration + 120);
    let mut last_report = Instant::now();
    let all_done = loop {
        let (to_feed, done) = tracker
            .with(|s| {
                (
                    keys.iter()
                        .filter(|k| !fed.contains_key(*k))
                        .filter_map(|k| s.running_since.get(k).map(|t| (k.clone(), *t)))
                        .collect::<Vec<_>>(),
                    keys.iter().filter(|k| s.finished.contains_key(*k)).count(),
                )
            })
            .unwrap_or_default();
        for (key, since) in to_feed {
            let label = key
                .split_once('/')
                .map_or(key.clone(), |(ns, e)| children::experiment_label(ns, e));
            feed(
                &http,
                &cluster.remote_write_url,
                &label,
                since,
                duration as i64,
            )
            .await?;
            fed.insert(key, since);
        }
        if done == n {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        operator.check_running()?;
        if last_report.elapsed() > Duration::from_secs(20) {
            eprintln!(
                "bench:   analysis cost {:.0} s: {} Running or later, {done}/{n} finished",
                t0.elapsed().as_secs_f64(),
                fed.len()
            );
            last_report = Instant::now();
        }
        tracker.wait(Duration::from_secs(1), |_| false).await;
    };
    let queries = operator.metric_sum(QUERIES).unwrap_or(0.0) - queries_before;

    let (latency, after_end, outcomes) = tracker
        .with(|s| {
            let mut latency = Vec::new();
            let mut after_end = Vec::new();
            let mut outcomes: HashMap<String, usize> = HashMap::new();
            for k in &keys {
                let Some((at, wall, outcome)) = s.finished.get(k) else {
                    continue;
                };
                *outcomes.entry(outcome.clone()).or_default() += 1;
                if let Some(a) = s.analyzing.get(k) {
                    latency.push(at.saturating_duration_since(*a).as_secs_f64());
                }
                if let (Some(since), Ok(w)) = (fed.get(k), wall.duration_since(UNIX_EPOCH)) {
                    after_end.push(w.as_secs_f64() - (*since + duration as i64) as f64);
                }
            }
            (latency, after_end, outcomes)
        })
        .unwrap_or_default();
    let ends: Vec<i64> = fed.values().map(|s| s + duration as i64).collect();
    let spread = ends.iter().max().zip(ends.iter().min()).map(|(a, b)| a - b);
    let analyzed = latency.len();

    report.row(
        "Prometheus queries per analysis (operator's /metrics)",
        if analyzed > 0 {
            format!(
                "{:.1} ({queries:.0} queries, {analyzed} analyses)",
                queries / analyzed as f64
            )
        } else {
            "n/a".into()
        },
        "-",
        Met::Info,
    );
    report.row(
        "analysis latency (Analyzing → result), p50 / p99",
        format!(
            "{} / {}",
            quantile(&latency, 0.5).map(ms).unwrap_or("n/a".into()),
            quantile(&latency, 0.99).map(ms).unwrap_or("n/a".into())
        ),
        "-",
        Met::Info,
    );
    let worst = after_end
        .iter()
        .copied()
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    report.row(
        format!("all {n} analyzed: latest result after its run's end"),
        match (all_done, worst) {
            (true, Some(w)) => format!("{w:.1} s"),
            _ => format!("not all ({} of {n} finished)", after_end.len()),
        },
        "≤ 60 s",
        Met::from(all_done && worst.is_some_and(|w| w <= 60.0)),
    );
    report.info(
        "spread of the runs' ends (latest − earliest)",
        spread.map_or("n/a".into(), |s| format!("{s} s")),
    );
    let mut outcomes: Vec<_> = outcomes.into_iter().collect();
    outcomes.sort();
    report.info(
        "outcomes",
        outcomes
            .iter()
            .map(|(o, c)| format!("{o} {c}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    report.note(format!(
        "analysis cost: {n} Experiments (baseline vs aggregate, no Simulation, duration \
         {duration}s, warmup 0s, analysis step {STEP}s) on kwok node 0, created {} in flight; \
         each window is fed by remote write as soon as the Experiment is Running (a baseline of \
         52 executables × up to 2 processes, a candidate of 5, and collector telemetry), so each \
         analysis queries real series. Latency is from the watch events (first seen Analyzing → \
         first seen in a terminal phase); 'after its run's end' is the wall clock of that \
         terminal event minus runningSince + duration. Queries are the operator's own count of \
         Prometheus requests over the part divided by the analyses.",
        plan.concurrency
    ));
    operator.stop();
    Ok(())
}
