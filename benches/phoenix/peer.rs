//! Peer comparison: the OpenTelemetry Operator (built from the Go module proxy by
//! scripts/bench.sh from benches/peer/go.mod) reconciling OpenTelemetryCollector resources in
//! DaemonSet mode whose config is exactly what Phoenix renders for a baseline Pipeline — the same
//! measurements as Phoenix's Pipeline controller: apply → DaemonSet, scale (peak RSS, CPU,
//! apiserver requests per resource, time until every DaemonSet is ready), steady-state writes and
//! a restart.
//!
//! It runs without its admission webhooks (`ENABLE_WEBHOOKS=false`: no cert-manager here), so the
//! fields its defaulting webhook would set (`upgradeStrategy`, `managementState`) are set in the
//! resources themselves. It watches one namespace (`WATCH_NAMESPACE`), so Phoenix's objects
//! elsewhere in the cluster are not in its caches; Phoenix's operator is stopped by then.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use phoenix::crd::pipeline::{PipelineSpec, PipelineTemplate};
use phoenix::desired::collector_config::{RenderContext, render};

use crate::cluster::{self, Cluster, Labels};
use crate::support::{
    Met, Proc, Report, Result, cpu_seconds, free_port, http_get, mib, ms, quantile, ratio,
    status_bytes,
};

/// What the peer part is asked to do.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The built operator binary, or why there is none.
    pub bin: std::result::Result<PathBuf, String>,
    /// Its CRDs (config/crd/bases of the module).
    pub crds: Option<PathBuf>,
    pub version: String,
    pub out: PathBuf,
    pub apply: usize,
    pub apply_warmup: usize,
    pub collectors: usize,
    pub concurrency: usize,
    pub running_timeout: Duration,
    pub steady: Duration,
}

const NS: &str = "bench-peer";

fn otelcol_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("opentelemetry.io", "v1beta1", "OpenTelemetryCollector"),
        "opentelemetrycollectors",
    )
}

/// Requests on what the OpenTelemetry Operator writes: its own kinds and the main resource of
/// the objects it generates (not `/status`, which the kube controllers write).
fn is_peer_resource(l: &Labels) -> bool {
    let (group, resource, sub) = (
        cluster::label(l, "group"),
        cluster::label(l, "resource"),
        cluster::label(l, "subresource"),
    );
    group == "opentelemetry.io"
        || (sub.is_empty()
            && matches!(
                resource,
                "daemonsets"
                    | "deployments"
                    | "statefulsets"
                    | "configmaps"
                    | "services"
                    | "serviceaccounts"
                    | "poddisruptionbudgets"
                    | "horizontalpodautoscalers"
                    | "ingresses"
                    | "roles"
                    | "rolebindings"
                    | "clusterroles"
                    | "clusterrolebindings"
                    | "networkpolicies"
                    | "servicemonitors"
                    | "podmonitors"
            ))
}

/// The collector config Phoenix renders for a baseline Pipeline, as JSON.
fn phoenix_config(name: &str, remote_write: &str) -> Result<serde_json::Value> {
    let mut spec = PipelineSpec::from_template(PipelineTemplate::Baseline);
    spec.critical_processes = vec!["^postgres$".into(), "^nginx$".into()];
    spec.collection_interval = "10s".parse().expect("a duration");
    let ctx = RenderContext::new(name, remote_write);
    let rendered = render(&spec, &ctx).map_err(|e| format!("render: {e}"))?;
    // Drop the comment line; the YAML body is the config.
    let value: serde_json::Value = serde_yaml::from_str(&rendered.yaml)?;
    Ok(value)
}

fn collector(
    name: &str,
    node_selector: serde_json::Value,
    config: &serde_json::Value,
) -> DynamicObject {
    DynamicObject::new(name, &otelcol_resource())
        .within(NS)
        .data(serde_json::json!({
            "spec": {
                "mode": "daemonset",
                "upgradeStrategy": "automatic",
                "managementState": "managed",
                "image": "otelcol-phoenix:bench",
                "nodeSelector": node_selector,
                "config": config,
            }
        }))
}

/// The peer operator process.
struct PeerOperator {
    proc: Proc,
    metrics_port: u16,
}

impl PeerOperator {
    fn start(bin: &PathBuf, cluster: &Cluster, log: &std::path::Path) -> Result<PeerOperator> {
        let (metrics_port, health_port) = (free_port(), free_port());
        let mut cmd = Command::new(bin);
        cmd.env("KUBECONFIG", &cluster.kubeconfig)
            .env("ENABLE_WEBHOOKS", "false")
            .env("WATCH_NAMESPACE", NS)
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--health-probe-addr", &format!("127.0.0.1:{health_port}")])
            .args(["--collector-image", "otelcol-phoenix:bench"])
            .args(["--zap-log-level", "info"]);
        let mut proc = Proc::spawn("opentelemetry-operator", cmd, log)?;
        crate::support::wait_http_ok(&mut proc, health_port, "/readyz", Duration::from_secs(60))?;
        Ok(PeerOperator { proc, metrics_port })
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Sum of controller-runtime's `controller_runtime_reconcile_total`.
    fn reconciles(&self) -> Option<f64> {
        let (status, body) = http_get(self.metrics_port, "/metrics").ok()?;
        (status == 200).then(|| {
            body.lines()
                .filter(|l| l.starts_with("controller_runtime_reconcile_total{"))
                .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
                .sum::<f64>()
                + 0.0
        })
    }
}

#[derive(Default)]
struct DsSeen {
    first: HashMap<String, Instant>,
    ready: HashMap<String, Instant>,
}

pub async fn run(plan: &Plan, cluster: &Cluster, report: &mut Report) -> Result<()> {
    let bin = match (&plan.bin, &plan.crds) {
        (Ok(bin), Some(_)) => bin.clone(),
        (Err(why), _) => {
            report.info("peer: not measured", why.clone());
            return Ok(());
        }
        (Ok(_), None) => {
            report.info("peer: not measured", "its CRDs were not found");
            return Ok(());
        }
    };
    let crds = plan.crds.clone().unwrap_or_default();
    cluster.install_crds(&crds)?;
    let client = cluster.client().await?;
    cluster::ensure_namespace(&client, NS).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &otelcol_resource());
    let config = phoenix_config("peer", &cluster.remote_write_url)?;

    // DaemonSets of the namespace: first sight and first time all their pods are ready.
    let seen = Arc::new(Mutex::new(DsSeen::default()));
    let s = seen.clone();
    let ds_watch = tokio::spawn(watch_daemonsets(client.clone(), s));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut op = PeerOperator::start(&bin, cluster, &plan.out.join("peer-operator.log"))?;
    eprintln!(
        "bench: peer: OpenTelemetry Operator {} pid {}",
        plan.version,
        op.pid()
    );
    let cpu_start = cpu_seconds(op.pid()).unwrap_or(0.0);

    // apply → DaemonSet, one after another, targets matching no node.
    let mut lat = Vec::new();
    for i in 0..plan.apply + plan.apply_warmup {
        let name = format!("apply-{i:04}");
        let obj = collector(
            &name,
            serde_json::json!({"phoenix.io/bench": "no-such-node"}),
            &config,
        );
        let t0 = Instant::now();
        api.create(&PostParams::default(), &obj).await?;
        let key = format!("{NS}/{name}-collector");
        let deadline = Instant::now() + Duration::from_secs(30);
        let t = loop {
            if let Some(t) = seen.lock().ok().and_then(|s| s.first.get(&key).copied()) {
                break Some(t);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if i >= plan.apply_warmup
            && let Some(t) = t
        {
            lat.push(t.duration_since(t0).as_secs_f64());
        }
    }
    report.info(
        format!("peer apply → DaemonSet, p50 / p99 (n={})", lat.len()),
        format!(
            "{} / {}",
            quantile(&lat, 0.5).map(ms).unwrap_or_default(),
            quantile(&lat, 0.99).map(ms).unwrap_or_default()
        ),
    );

    // Scale: collectors on one kwok node, like Phoenix's scale Experiments' Pipelines.
    let n = plan.collectors;
    let before = cluster.request_counts()?;
    let cpu_before = cpu_seconds(op.pid()).unwrap_or(0.0);
    let t0 = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("scale-{i:04}")).collect();
    let results: Vec<Result<()>> = futures::stream::iter(names.clone())
        .map(|name| {
            let (api, config) = (api.clone(), &config);
            async move {
                let obj = collector(
                    &name,
                    serde_json::json!({"kubernetes.io/hostname": "kwok-node-0"}),
                    config,
                );
                api.create(&PostParams::default(), &obj).await?;
                Ok(())
            }
        })
        .buffer_unordered(plan.concurrency.max(1))
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    let keys: Vec<String> = names
        .iter()
        .map(|e| format!("{NS}/{e}-collector"))
        .collect();
    let deadline = t0 + plan.running_timeout;
    let mut last = Instant::now();
    let all_ready = loop {
        let (created, ready) = seen
            .lock()
            .map(|s| {
                (
                    keys.iter().filter(|k| s.first.contains_key(*k)).count(),
                    keys.iter().filter(|k| s.ready.contains_key(*k)).count(),
                )
            })
            .unwrap_or((0, 0));
        if ready == n {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        op.proc.check_running()?;
        if last.elapsed() > Duration::from_secs(20) {
            eprintln!(
                "bench:   peer {:.0} s: {created}/{n} DaemonSets, {ready}/{n} ready; RSS {:.0} MiB",
                t0.elapsed().as_secs_f64(),
                status_bytes(op.pid(), "VmRSS").map(mib).unwrap_or(0.0)
            );
            last = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (objects_at, ready_at) = seen
        .lock()
        .map(|s| {
            let latest = |m: &HashMap<String, Instant>| -> Option<f64> {
                let t: Vec<Instant> = keys
                    .iter()
                    .map(|k| m.get(k).copied())
                    .collect::<Option<_>>()?;
                t.into_iter()
                    .max()
                    .map(|t| t.duration_since(t0).as_secs_f64())
            };
            (latest(&s.first), latest(&s.ready))
        })
        .unwrap_or((None, None));
    let delta = cluster.request_counts()?.since(&before);
    let cpu = cpu_seconds(op.pid()).unwrap_or(0.0) - cpu_before;
    let ours = |l: &Labels| {
        is_peer_resource(l)
            && !(cluster::label(l, "resource") == "opentelemetrycollectors"
                && cluster::label(l, "verb") == "POST")
    };
    let peak = status_bytes(op.pid(), "VmHWM");
    report.row(
        format!(
            "peer peak RSS with {} collectors",
            n + plan.apply + plan.apply_warmup
        ),
        peak.map(|b| format!("{:.1} MiB", mib(b)))
            .unwrap_or("n/a".into()),
        "(Phoenix: ≤ 64 MiB)",
        Met::Info,
    );
    report.info(
        format!("peer CPU seconds, {n} collectors until all ready"),
        format!(
            "{cpu:.1} s ({:.2} ms per collector)",
            cpu * 1000.0 / n as f64
        ),
    );
    report.info(
        format!("peer time until all {n} DaemonSets exist / are ready"),
        format!(
            "{} / {}",
            objects_at
                .map(|t| format!("{t:.1} s"))
                .unwrap_or("not all".into()),
            ready_at
                .map(|t| format!("{t:.1} s"))
                .unwrap_or("not all".into())
        ),
    );
    report.info(
        "peer apiserver requests / writes per collector, its resources",
        format!(
            "{:.1} / {:.1}",
            delta.sum(ours) / n as f64,
            delta.sum(|l| ours(l) && cluster::is_mutating(l)) / n as f64
        ),
    );
    report.note(format!(
        "peer scale writes: {}",
        delta.breakdown(|l| ours(l) && cluster::is_mutating(l), 10)
    ));
    if failed > 0 {
        report.info("peer creates that failed", failed.to_string());
    }
    let peer = crate::support::PeerFigures {
        apply_p50: quantile(&lat, 0.5),
        rss_per_collector: peak.map(|b| b as f64 / (n + plan.apply + plan.apply_warmup) as f64),
        requests_per_collector: Some(delta.sum(ours) / n.max(1) as f64),
    };
    let ours_figures = report.phoenix.clone();
    let kib = |v: Option<f64>| v.map_or("n/a".to_string(), |b| format!("{:.0} KiB", b / 1024.0));
    let num = |v: Option<f64>| v.map_or("n/a".to_string(), |r| format!("{r:.1}"));
    report.info(
        "Phoenix / peer: apply latency p50 (Experiment → 2 DaemonSets + Job / collector → DaemonSet)",
        format!(
            "{} ({} / {})",
            ratio(ours_figures.apply_p50, peer.apply_p50),
            ours_figures.apply_p50.map(ms).unwrap_or("n/a".into()),
            peer.apply_p50.map(ms).unwrap_or("n/a".into())
        ),
    );
    report.info(
        "Phoenix / peer: peak RSS per managed collector (DaemonSet)",
        format!(
            "{} ({} / {})",
            ratio(ours_figures.rss_per_collector, peer.rss_per_collector),
            kib(ours_figures.rss_per_collector),
            kib(peer.rss_per_collector)
        ),
    );
    report.info(
        "Phoenix / peer: apiserver requests per collector during the burst",
        format!(
            "{} ({} / {})",
            ratio(
                ours_figures.requests_per_collector,
                peer.requests_per_collector
            ),
            num(ours_figures.requests_per_collector),
            num(peer.requests_per_collector)
        ),
    );

    let total = (n + plan.apply + plan.apply_warmup) as f64;
    if all_ready {
        // Its client is rate-limited (client-go's default 20 requests/s), so status and Service
        // updates trail the rollout: wait until 10 s pass without a write (at most 3 minutes).
        let peer_writes =
            |c: &cluster::RequestCounts| c.sum(|l| is_peer_resource(l) && cluster::is_mutating(l));
        let settle = Instant::now();
        let mut last = peer_writes(&cluster.request_counts()?);
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let now = peer_writes(&cluster.request_counts()?);
            if now == last || settle.elapsed() > Duration::from_secs(180) {
                break;
            }
            last = now;
        }
        let settled = settle.elapsed().as_secs_f64();
        let before = cluster.request_counts()?;
        tokio::time::sleep(plan.steady).await;
        let delta = cluster.request_counts()?.since(&before);
        let writes = delta.sum(|l| is_peer_resource(l) && cluster::is_mutating(l));
        report.info(
            format!("peer steady state: writes per idle resource per minute ({total:.0})"),
            format!(
                "{:.4} ({writes:.0} writes in {:.0} s, after {settled:.0} s to settle)",
                writes / total / (plan.steady.as_secs_f64() / 60.0),
                plan.steady.as_secs_f64()
            ),
        );
        if writes > 0.0 {
            report.note(format!(
                "peer steady-state writes: {}",
                delta.breakdown(|l| is_peer_resource(l) && cluster::is_mutating(l), 10)
            ));
        }
    }

    // Restart: kill -9, start again, wait until its reconcile counter is quiet for 10 s.
    op.proc.kill();
    let before = cluster.request_counts()?;
    let t0 = Instant::now();
    let mut op = PeerOperator::start(&bin, cluster, &plan.out.join("peer-operator-restarted.log"))?;
    let (mut last_value, mut last_change) = (-1.0, Instant::now());
    let deadline = Instant::now() + Duration::from_secs(300);
    let synced = loop {
        if let Some(v) = op.reconciles() {
            if v != last_value {
                (last_value, last_change) = (v, Instant::now());
            }
            if v >= total && last_change.elapsed() >= Duration::from_secs(10) {
                break true;
            }
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let delta = cluster.request_counts()?.since(&before);
    let writes = delta.sum(|l| is_peer_resource(l) && cluster::is_mutating(l));
    report.info(
        format!("peer resync after kill -9 ({total:.0} collectors)"),
        if synced {
            format!(
                "{:.1} s ({last_value:.0} reconciles)",
                last_change.duration_since(t0).as_secs_f64()
            )
        } else {
            format!("not quiet within 300 s ({last_value:.0} reconciles)")
        },
    );
    report.info(
        "peer writes during resync",
        format!("{writes:.0} ({:.2} per collector)", writes / total),
    );
    if writes > 0.0 {
        report.note(format!(
            "peer resync writes: {}",
            delta.breakdown(|l| is_peer_resource(l) && cluster::is_mutating(l), 10)
        ));
    }
    report.info(
        "peer restarted: peak RSS / CPU seconds",
        format!(
            "{:.1} MiB / {:.1} s",
            status_bytes(op.pid(), "VmHWM").map(mib).unwrap_or(0.0),
            cpu_seconds(op.pid()).unwrap_or(0.0)
        ),
    );
    report.info(
        "peer CPU seconds, first process, whole run",
        format!("{:.1} s", cpu_before - cpu_start + cpu),
    );
    op.proc.stop(Duration::from_secs(10));
    ds_watch.abort();
    report.note(format!(
        "peer: OpenTelemetry Operator {} (Go module proxy, built by scripts/bench.sh from \
         benches/peer/go.mod), webhooks off, watching namespace {NS}; {} OpenTelemetryCollectors \
         (mode daemonset, nodeSelector kwok-node-0, config = Phoenix's rendered baseline config) \
         created {} in flight, after {} created one after another on no node for apply → \
         DaemonSet. Comparable Phoenix figures: the Pipeline controller's stage 'later Pipeline → \
         both DaemonSets' and a scale step with as many Pipelines (each Experiment has 2). \
         'Its resources' = opentelemetry.io kinds and the main resource of the objects it \
         generates (DaemonSets, ConfigMaps, Services, ServiceAccounts, RBAC, …).",
        plan.version, n, plan.concurrency, plan.apply
    ));
    Ok(())
}

async fn watch_daemonsets(client: Client, seen: Arc<Mutex<DsSeen>>) {
    let api: Api<DaemonSet> = Api::namespaced(client, NS);
    let mut events =
        std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    while let Some(event) = events.next().await {
        let now = Instant::now();
        let ds = match event {
            Ok(Event::Apply(d) | Event::InitApply(d)) => d,
            _ => continue,
        };
        let key = format!("{}/{}", ds.namespace().unwrap_or_default(), ds.name_any());
        let ready = ds.status.as_ref().is_some_and(|s| {
            s.desired_number_scheduled > 0 && s.number_ready == s.desired_number_scheduled
        });
        if let Ok(mut s) = seen.lock() {
            s.first.entry(key.clone()).or_insert(now);
            if ready {
                s.ready.entry(key).or_insert(now);
            }
        }
    }
}
