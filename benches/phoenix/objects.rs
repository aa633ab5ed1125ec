//! Scale without pods: the operator's own limits, not kwok's. Experiments whose targets match no
//! node get every object (Pipelines, DaemonSets, ConfigMaps; Simulations and Jobs when asked)
//! but no pods, step by step up to 1,000 and 2,000; then a steady-state window (writes per idle
//! object and RSS over time) and a `kill -9` restart (resync time, writes, restart peak RSS
//! against the steady state). A fresh operator runs this part alone; its namespace is deleted at
//! the end so the parts after it start from an empty cluster again.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::DeleteParams;
use phoenix::crd::experiment::Experiment;

use crate::cluster::{self, Cluster};
use crate::control_plane::{
    Guard, NO_NODES, Operator, Plan, Tracker, burst_waits, children_seen, create_burst, experiment,
    is_ours, quiet, wait_resynced,
};
use crate::support::{Met, Report, Result, mib, ms, quantile};

const NS: &str = "bench-objects";

/// The target for the operator's peak RSS, MiB.
const RSS_TARGET_MIB: f64 = 64.0;

/// Runs the part, then deletes its namespace whatever happened (an operator of a later part must
/// not find these objects), waiting up to 10 minutes for the namespace to be gone.
pub async fn run(
    plan: &Plan,
    cluster: &Cluster,
    tracker: &mut Tracker,
    report: &mut Report,
) -> Result<()> {
    let client = cluster.client().await?;
    let result = measure(plan, cluster, tracker, report).await;
    let namespaces: Api<Namespace> = Api::all(client);
    let _ = namespaces.delete(NS, &DeleteParams::background()).await;
    // Until the namespace itself is gone: its 12,000 objects' deletion (the namespace and garbage
    // collectors) must not load the apiserver while the next part measures apply latency.
    let t0 = Instant::now();
    let mut gone = false;
    while !gone && t0.elapsed() < Duration::from_secs(600) {
        gone = matches!(namespaces.get_opt(NS).await, Ok(None));
        if !gone {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    eprintln!(
        "bench: scale without pods: namespace {NS} {} after {:.0} s",
        if gone { "deleted" } else { "still terminating" },
        t0.elapsed().as_secs_f64()
    );
    // The namespace gone, kube-controller-manager's garbage collector still works through the
    // deleted objects' graph, GETting each (answered 404) and its owner: thousands of requests
    // on Phoenix's resources that would fall inside the next part's measurements.
    let second = Duration::from_secs(1);
    let (five, max) = (Duration::from_secs(5), Duration::from_secs(300));
    match quiet(cluster, cluster::is_operator_resource, second, five, max).await {
        Ok((waited, true)) => eprintln!(
            "bench: scale without pods: no request on Phoenix's resources for 5 s, after {waited:.0} s"
        ),
        Ok((waited, false)) => eprintln!(
            "bench: scale without pods: requests on Phoenix's resources still after {waited:.0} s"
        ),
        Err(e) => eprintln!("bench: scale without pods: cannot read the apiserver's counters: {e}"),
    }
    result
}

async fn measure(
    plan: &Plan,
    cluster: &Cluster,
    tracker: &mut Tracker,
    report: &mut Report,
) -> Result<()> {
    let client = cluster.client().await?;
    cluster::ensure_namespace(&client, NS).await?;
    let mut operator = Operator::start(plan, cluster, &plan.out.join("operator-objects.log"))?;
    eprintln!(
        "bench: scale without pods: phoenix-operator pid {} on :{}",
        operator.pid(),
        operator.port
    );
    let api: Api<Experiment> = Api::namespaced(client.clone(), NS);
    let sim = plan.objects_simulation;
    // Pipelines, DaemonSets and ConfigMaps (2 each), and a Simulation and its Job when asked.
    let per_experiment = if sim { 8 } else { 6 };
    let mut created = 0usize;
    for (step, &total) in plan.objects.iter().enumerate() {
        let from = created;
        created = total.max(from);
        let n = created - from;
        report.section(format!(
            "6.{} scale without pods: {created} Experiments, targets matching no node",
            step + 1
        ));
        let names: Vec<String> = (from..created).map(|i| format!("obj-{i:05}")).collect();
        let before = cluster.request_counts()?;
        let guard = Guard::start(cluster, plan);
        let t0 = Instant::now();
        eprintln!(
            "bench: scale without pods: creating {n} Experiments ({} in flight)",
            plan.concurrency
        );
        let starts = create_burst(&api, &names, plan.concurrency, &guard, |name| {
            experiment(name, NO_NODES, sim)
        })
        .await;
        let sent = t0.elapsed().as_secs_f64();
        let all_objects = tracker
            .wait(plan.objects_timeout, |s| {
                guard.tripped().is_some()
                    || names.iter().all(|e| children_seen(s, NS, e, sim).is_some())
            })
            .await
            && guard.tripped().is_none();
        let objects_at = t0.elapsed().as_secs_f64();
        // Let the reconciles the objects' own watch events cause finish before reading RSS (not
        // after the guard tripped: then the machine comes first).
        let resources = (created * if sim { 4 } else { 3 }) as f64;
        let quiet = if guard.tripped().is_none() {
            Some(wait_resynced(&mut operator, resources).await?)
        } else {
            None
        };
        let guarded = guard.stop();
        let delta = cluster.request_counts()?.since(&before);
        let waits = burst_waits(tracker, NS, &starts, sim);

        let peak = operator.peak_rss();
        report.row(
            format!(
                "operator peak RSS (VmHWM), {created} Experiments = {} Phoenix-managed objects",
                created * per_experiment
            ),
            peak.map(|b| format!("{:.1} MiB", mib(b)))
                .unwrap_or("n/a".into()),
            format!("≤ {RSS_TARGET_MIB:.0} MiB"),
            peak.map_or(Met::No, |b| Met::from(mib(b) <= RSS_TARGET_MIB)),
        );
        report.info(
            "operator RSS held once quiet (VmRSS)",
            operator
                .rss()
                .map(|b| format!("{:.1} MiB", mib(b)))
                .unwrap_or("n/a".into()),
        );
        report.info(
            format!("{n} creates sent / every object exists / reconciles quiet"),
            format!(
                "{sent:.1} s / {} / {}",
                if all_objects {
                    format!("{objects_at:.1} s")
                } else {
                    "not all".into()
                },
                match &quiet {
                    Some(q) if q.synced => {
                        format!("{:.1} s", q.last_change.duration_since(t0).as_secs_f64())
                    }
                    Some(_) => "not within 600 s".into(),
                    None => "not awaited (guard tripped)".into(),
                }
            ),
        );
        report.info(
            "apply → objects during this burst, p50 / p99",
            format!(
                "{} / {}",
                quantile(&waits, 0.5).map(ms).unwrap_or_default(),
                quantile(&waits, 0.99).map(ms).unwrap_or_default()
            ),
        );
        let ours = is_ours;
        report.info(
            "apiserver requests / writes per Experiment, Phoenix's resources",
            format!(
                "{:.1} / {:.1}",
                delta.sum(ours) / n.max(1) as f64,
                delta.sum(|l| ours(l) && cluster::is_mutating(l)) / n.max(1) as f64
            ),
        );
        report.note(format!(
            "scale without pods, {created}: writes on Phoenix's resources: {}",
            delta.breakdown(|l| ours(l) && cluster::is_mutating(l), 12)
        ));
        report.note(format!(
            "scale without pods, {created}: reads on Phoenix's resources: {}",
            delta.breakdown(|l| ours(l) && !cluster::is_mutating(l), 12)
        ));
        report.info(
            "peak RSS of etcd / kube-apiserver",
            format!(
                "{:.0} MiB / {:.0} MiB",
                mib(guarded.peak_etcd),
                mib(guarded.peak_apiserver)
            ),
        );
        if let Some(why) = guarded.reason {
            report.row(
                "scale without pods aborted to protect the machine",
                why,
                "not aborted",
                Met::No,
            );
            operator.stop();
            return Err("scale without pods aborted by the memory guard".into());
        }
        if !all_objects {
            report.note(format!(
                "scale without pods, {created}: not every object appeared within {} s; no larger \
                 step tried",
                plan.objects_timeout.as_secs()
            ));
            break;
        }
    }
    report.note(format!(
        "scale without pods: Experiments created {} in flight in namespace {NS} by a fresh \
         operator, targets `{NO_NODES}`: each has 2 Pipelines, 2 DaemonSets and 2 ConfigMaps{} \
         and no pod, so the figures are the operator's and the apiserver's, not kwok's. Peak RSS \
         is VmHWM of /proc/<pid>/status after the step's reconciles are quiet.",
        plan.concurrency,
        if sim {
            ", 1 Simulation and 1 Job (whose one pod stays unscheduled)"
        } else {
            " (no Simulation)"
        }
    ));

    let resources = (created * if sim { 4 } else { 3 }) as f64;
    let steady_rss = steady(plan, cluster, &mut operator, report, resources, created).await?;
    restart(plan, cluster, operator, report, resources, steady_rss).await
}

/// The steady-state window: writes per idle object per minute and the operator's RSS sampled
/// every 5 s. Returns the RSS at the end of the window (bytes).
async fn steady(
    plan: &Plan,
    cluster: &Cluster,
    operator: &mut Operator,
    report: &mut Report,
    resources: f64,
    experiments: usize,
) -> Result<u64> {
    report.section(format!(
        "6.8 steady state without pods ({experiments} Experiments, {} s window)",
        plan.steady.as_secs()
    ));
    let settled = crate::control_plane::settle(cluster).await?;
    eprintln!(
        "bench: steady state without pods: settled after {settled:.0} s; measuring {} s",
        plan.steady.as_secs()
    );
    let before = cluster.request_counts()?;
    let cpu_before = operator.cpu_seconds().unwrap_or(0.0);
    let start_rss = operator.rss().unwrap_or(0);
    let mut samples = vec![start_rss];
    let t0 = Instant::now();
    while t0.elapsed() < plan.steady {
        let left = plan.steady.saturating_sub(t0.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(5))).await;
        operator.check_running()?;
        samples.push(operator.rss().unwrap_or(0));
    }
    let delta = cluster.request_counts()?.since(&before);
    let cpu = operator.cpu_seconds().unwrap_or(0.0) - cpu_before;
    let window = plan.steady.as_secs_f64();
    let writes = delta.sum(|l| cluster::is_operator_resource(l) && cluster::is_mutating(l));
    report.row(
        format!(
            "steady state: writes per idle object per minute ({resources:.0} objects reconciled)"
        ),
        format!(
            "{:.4} ({writes:.0} writes in {window:.0} s)",
            writes / resources / (window / 60.0)
        ),
        "0",
        Met::from(writes == 0.0),
    );
    let end_rss = samples.last().copied().unwrap_or(0);
    let max_rss = samples.iter().copied().max().unwrap_or(0);
    // Flat: the window's highest sample at most 1 MiB or 2% above its first.
    let growth = max_rss.saturating_sub(start_rss);
    let flat = mib(growth) <= 1.0_f64.max(mib(start_rss) * 0.02);
    report.row(
        format!("steady state: operator RSS over {window:.0} s, start → end (max)"),
        format!(
            "{:.1} → {:.1} MiB (max {:.1})",
            mib(start_rss),
            mib(end_rss),
            mib(max_rss)
        ),
        "flat (max ≤ start + max(1 MiB, 2%))",
        Met::from(flat),
    );
    report.info(
        "steady state: operator CPU",
        format!("{:.2} % of a core", cpu / window * 100.0),
    );
    if plan.steady < Duration::from_secs(600) {
        report.note(format!(
            "steady state without pods: a {window:.0} s window (PHOENIX_BENCH_STEADY_SECS), \
             shorter than the 10 minutes the target names"
        ));
    }
    if writes > 0.0 {
        report.note(format!(
            "steady-state writes without pods: {}",
            delta.breakdown(
                |l| cluster::is_operator_resource(l) && cluster::is_mutating(l),
                12
            )
        ));
    }
    Ok(end_rss)
}

/// `kill -9` with every object present; a new operator resyncs.
async fn restart(
    plan: &Plan,
    cluster: &Cluster,
    operator: Operator,
    report: &mut Report,
    resources: f64,
    steady_rss: u64,
) -> Result<()> {
    report.section(format!(
        "6.9 restart without pods ({resources:.0} objects reconciled)"
    ));
    operator.kill();
    let before = cluster.request_counts()?;
    let t0 = Instant::now();
    let mut operator = Operator::start(
        plan,
        cluster,
        &plan.out.join("operator-objects-restarted.log"),
    )?;
    let resync = wait_resynced(&mut operator, resources).await?;
    let secs = resync.last_change.duration_since(t0).as_secs_f64();
    let delta = cluster.request_counts()?.since(&before);
    let writes = delta.sum(|l| cluster::is_operator_resource(l) && cluster::is_mutating(l));
    report.row(
        "resync after kill -9 (start → last reconcile)",
        if resync.synced {
            format!("{secs:.1} s ({:.0} reconciles)", resync.reconciles)
        } else {
            format!(
                "not quiet within 600 s ({:.0} reconciles)",
                resync.reconciles
            )
        },
        "≤ 10 s",
        Met::from(resync.synced && secs <= 10.0),
    );
    report.row(
        "writes during resync, Phoenix's resources",
        format!("{writes:.0}"),
        "0",
        Met::from(writes == 0.0),
    );
    if writes > 0.0 {
        report.note(format!(
            "resync writes without pods: {}",
            delta.breakdown(
                |l| cluster::is_operator_resource(l) && cluster::is_mutating(l),
                12
            )
        ));
    }
    let peak = operator.peak_rss();
    report.row(
        "restarted operator peak RSS / steady-state RSS before the kill",
        match peak {
            Some(p) if steady_rss > 0 => format!(
                "{:.1} MiB / {:.1} MiB = {:.2}×",
                mib(p),
                mib(steady_rss),
                p as f64 / steady_rss as f64
            ),
            _ => "n/a".into(),
        },
        "≤ 1.2×",
        match peak {
            Some(p) if steady_rss > 0 => Met::from(p as f64 <= 1.2 * steady_rss as f64),
            _ => Met::No,
        },
    );
    report.row(
        "restarted operator peak RSS",
        peak.map(|b| format!("{:.1} MiB", mib(b)))
            .unwrap_or("n/a".into()),
        format!("≤ {RSS_TARGET_MIB:.0} MiB"),
        peak.map_or(Met::No, |b| Met::from(mib(b) <= RSS_TARGET_MIB)),
    );
    report.info(
        "restarted operator CPU seconds for the resync",
        format!("{:.1} s", operator.cpu_seconds().unwrap_or(0.0)),
    );
    operator.stop();
    Ok(())
}
