//! A standalone `topk` Pipeline on the real control plane, a real collector (run by the local pod
//! runner on this machine's /proc) and real Prometheus: it ranks the series of its
//! `selectionSource`, writes `status.topkProcesses`, the collector keeps exactly those processes
//! (critical ones besides, the rest summed into `other`), a changed ranking re-renders it with one
//! `TopKRefreshed` Event per change, and a Prometheus outage keeps the old selection with a
//! condition saying why.
//!
//! The source is a Prometheus of the test's own, fed CPU counters by remote write, so the ranking
//! is known; the names are real processes of this machine (the control plane's), so the real
//! collector has them to keep.

use std::collections::BTreeSet;
use std::process::Child;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, PostParams};
use phoenix::analysis::remote_write::{self, TimeSeries};
use phoenix::crd::pipeline::PipelinePhase;
use phoenix::crd::{ConditionStatus, Pipeline, conditions};
use prometheus_http_query::reqwest;
use tokio::sync::watch;

use crate::harness::{
    Operator, TestNamespace, cluster, eventually, free_port, http_get, repo_root, spawn_prometheus,
};
use crate::podrunner_test::{Runner, node_ready};

/// CPU seconds per second of each fed executable name.
type Rates = Vec<(&'static str, f64)>;

/// Remote-writes one CPU counter per name to `url` every second, at `rates` (changeable while it
/// runs), labelled as a collector `source` on `node` would label them.
fn feed(url: String, node: String, rates: watch::Receiver<Rates>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut totals: Vec<f64> = vec![];
        loop {
            let current = rates.borrow().clone();
            totals.resize(current.len(), 0.0);
            let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
            let series: Vec<TimeSeries> = current
                .iter()
                .zip(totals.iter_mut())
                .map(|((name, rate), total)| {
                    *total += rate;
                    let labels = [
                        ("phoenix_pipeline", "source"),
                        ("phoenix_experiment", "none"),
                        ("phoenix_node", node.as_str()),
                        ("process_executable_name", *name),
                    ];
                    TimeSeries::new("process_cpu_time_seconds_total", &labels).sample(now, *total)
                })
                .collect();
            // A stopped Prometheus refuses the push: that is the outage under test.
            let _ = remote_write::push(&client, &url, &series).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// The executable names the `top` collector on `node` wrote in the last 15 s (cluster Prometheus).
async fn names_written(node: &str) -> Option<BTreeSet<String>> {
    let prom = prometheus_http_query::Client::try_from(cluster().prometheus_url.as_str()).ok()?;
    let query = format!(
        "count by (process_executable_name) (count_over_time(process_cpu_time_seconds_total{{phoenix_pipeline=\"top\",phoenix_node=\"{node}\"}}[15s]))"
    );
    let result = prom.query(query).get().await.ok()?;
    Some(
        result
            .data()
            .as_vector()?
            .iter()
            .filter_map(|v| v.metric().get("process_executable_name").cloned())
            .collect(),
    )
}

/// The notes of the `reason` Events the operator published about Pipeline `top`, oldest first,
/// each as often as it occurred (a repeated Event counts its series).
async fn events(ns: &TestNamespace, reason: &str) -> Vec<String> {
    let list = ns
        .api::<Event>()
        .list(&Default::default())
        .await
        .expect("Events listed");
    let mut found: Vec<&Event> = list
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("top"))
        .collect();
    found.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    found
        .into_iter()
        .flat_map(|e| {
            let times = e.series.as_ref().map_or(1, |s| s.count.max(1)) as usize;
            std::iter::repeat_n(e.note.clone().unwrap_or_default(), times)
        })
        .collect()
}

/// The Pipeline once `check` holds on its status (same generation observed).
async fn pipeline_when(
    api: &Api<Pipeline>,
    what: &str,
    secs: u64,
    check: impl Fn(&phoenix::crd::PipelineStatus) -> bool,
) -> phoenix::crd::PipelineStatus {
    eventually(what, Duration::from_secs(secs), || async {
        let p = api.get("top").await.ok()?;
        let s = p.status?;
        (s.observed_generation == p.metadata.generation && check(&s)).then_some(s)
    })
    .await
}

struct Stopped(Option<Child>);

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test]
async fn a_standalone_topk_pipeline_selects_refreshes_and_keeps_its_selection_when_prometheus_fails()
 {
    let ns = TestNamespace::new("topk").await;
    let node = format!("local-{}", ns.name);
    let _runner = Runner::start(&node);
    let nodes: Api<Node> = Api::all(ns.client.clone());
    node_ready(&nodes, &node).await;

    // The selection source: a Prometheus of the test's own, allowed by the operator.
    let port = free_port();
    let dir = repo_root().join(format!("target/e2e/prom-{}", ns.name));
    let mut source = Stopped(Some(spawn_prometheus(
        &dir,
        port,
        "global: {scrape_interval: 1m}\n",
    )));
    eventually(
        "source Prometheus ready",
        Duration::from_secs(60),
        || async {
            http_get(port, "/-/ready")
                .filter(|r| r.starts_with("HTTP/1.1 200"))
                .map(|_| ())
        },
    )
    .await;
    let source_url = format!("http://127.0.0.1:{port}");
    // kwok is critical and the heaviest: excluded from the ranking, kept by the bypass.
    let phase_a: Rates = vec![
        ("kwok", 50.0),
        ("etcd", 3.0),
        ("kube-apiserver", 2.0),
        ("prometheus", 1.0),
        ("kube-scheduler", 0.5),
        ("svc-idle", 0.1),
    ];
    let (rates, rx) = watch::channel(phase_a);
    let feeder = feed(format!("{source_url}/api/v1/write"), node.clone(), rx);
    let operator = Operator::start(
        &ns.name,
        &["--allowed-prometheus-url-prefixes", &source_url],
    );

    // The source holds a few samples of every fed name before the Pipeline exists, so its first
    // ranking has a rate for each (a NoData Warning would be a defect here).
    let source_prom =
        prometheus_http_query::Client::try_from(source_url.as_str()).expect("source client");
    eventually("the source has rates", Duration::from_secs(60), || async {
        let result = source_prom
            .query("count(count_over_time(process_cpu_time_seconds_total[1m]) >= 5)")
            .get()
            .await
            .ok()?;
        let count = result.data().as_vector()?.first()?.sample().value();
        (count >= 6.0).then_some(())
    })
    .await;

    let pipeline: Pipeline = serde_yaml::from_str(&format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {{name: top}}\nspec:\n  template: topk\n  collectionInterval: 5s\n  criticalProcesses: ['^kwok$']\n  topk:\n    k: 3\n    refreshInterval: 30s\n    selectionSource:\n      matchLabels: {{phoenix_pipeline: source, phoenix_node: {node}}}\n      prometheusUrl: '{source_url}'\n  deployment:\n    nodeSelector: {{kubernetes.io/hostname: {node}}}\n    tolerations: [{{key: phoenix.io/local, operator: Exists, effect: NoSchedule}}]\n"
    ))
    .expect("test Pipeline parses");
    let api = ns.api::<Pipeline>();
    api.create(&PostParams::default(), &pipeline)
        .await
        .expect("Pipeline created");

    // The K heaviest non-critical names of the source, heaviest first, rendered and rolled out.
    let first = ["etcd", "kube-apiserver", "prometheus"];
    let selected = pipeline_when(&api, "the top 3 selected and rolled out", 120, |s| {
        s.topk_processes == first
            && s.phase == Some(PipelinePhase::Ready)
            && conditions::is_true(&s.conditions, "TopKSelected")
    })
    .await;
    let hash = selected.config_hash.clone().expect("config hash");
    let config = ns
        .api::<ConfigMap>()
        .get(&format!("top-{hash}"))
        .await
        .expect("the deployed ConfigMap");
    let yaml = config
        .data
        .and_then(|d| d.into_values().next())
        .expect("collector config");
    for name in first {
        assert!(
            yaml.contains(name),
            "{name} is in the rendered include list"
        );
    }
    assert!(!yaml.contains("kube-scheduler"), "not selected, not kept");

    // The real collector keeps exactly the selection and the critical process; every other
    // process of this machine is summed into `other`.
    let expected: BTreeSet<String> = ["etcd", "kube-apiserver", "prometheus", "kwok", "other"]
        .map(String::from)
        .into();
    eventually(
        "the collector writes only the selection, kwok and other",
        Duration::from_secs(120),
        || async { (names_written(&node).await? == expected).then_some(()) },
    )
    .await;

    // A ranking with the same outcome changes nothing but the refresh time: no Event, no rollout.
    let refreshed_at = selected.topk_refreshed_at.clone().expect("refreshedAt");
    let again = pipeline_when(&api, "a second ranking", 90, |s| {
        s.topk_refreshed_at.as_ref() > Some(&refreshed_at)
    })
    .await;
    assert_eq!(again.topk_processes, first);
    assert_eq!(again.config_hash.as_deref(), Some(hash.as_str()));
    // The operator publishes a reconcile's Events after its status write: wait for that
    // reconcile to end before reading them.
    operator.idle("pipeline").await;
    assert_eq!(
        events(&ns, "TopKRefreshed").await,
        ["keeps etcd, kube-apiserver, prometheus"],
        "one Event per change"
    );

    // The load shifts: kube-scheduler becomes the heaviest, etcd idles. The selection follows
    // and the collectors roll to a new config.
    rates.send_modify(|r| {
        for (name, rate) in r.iter_mut() {
            match *name {
                "kube-scheduler" => *rate = 10.0,
                "etcd" => *rate = 0.0,
                _ => {}
            }
        }
    });
    let second = ["kube-scheduler", "kube-apiserver", "prometheus"];
    let shifted = pipeline_when(&api, "the new top 3 rolled out", 180, |s| {
        s.topk_processes == second
            && s.config_hash.as_deref() != Some(hash.as_str())
            && s.phase == Some(PipelinePhase::Ready)
    })
    .await;
    let hash = shifted.config_hash.clone().expect("config hash");
    operator.idle("pipeline").await;
    // etcd's rate decays over the ranking's one-minute range, so the selection may pass through
    // an intermediate set on its way: one Event per change, never two for the same selection.
    let refreshed = events(&ns, "TopKRefreshed").await;
    assert!(refreshed.len() >= 2, "{refreshed:?}");
    assert!(
        refreshed.windows(2).all(|w| w[0] != w[1]),
        "an Event without a change: {refreshed:?}"
    );
    assert_eq!(
        refreshed.last().map(String::as_str),
        Some("keeps kube-scheduler, kube-apiserver, prometheus")
    );
    let expected: BTreeSet<String> = [
        "kube-scheduler",
        "kube-apiserver",
        "prometheus",
        "kwok",
        "other",
    ]
    .map(String::from)
    .into();
    eventually(
        "the collector writes the new selection",
        Duration::from_secs(120),
        || async { (names_written(&node).await? == expected).then_some(()) },
    )
    .await;

    // The source Prometheus goes away: the selection and the collectors stay, the condition and
    // a Warning say why.
    if let Some(mut c) = source.0.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let failed = pipeline_when(&api, "TopKSelected=False", 90, |s| {
        conditions::find(&s.conditions, "TopKSelected")
            .is_some_and(|c| c.status == ConditionStatus::False)
    })
    .await;
    let condition = conditions::find(&failed.conditions, "TopKSelected").expect("condition");
    assert_eq!(condition.reason, "PrometheusUnavailable", "{condition:?}");
    assert!(
        condition.message.contains("keeping the previous selection"),
        "{condition:?}"
    );
    assert_eq!(failed.topk_processes, second, "the old selection stands");
    assert_eq!(failed.config_hash.as_deref(), Some(hash.as_str()));
    assert_eq!(
        failed.phase,
        Some(PipelinePhase::Ready),
        "collectors unaffected"
    );
    assert!(conditions::is_true(&failed.conditions, "Ready"));
    operator.idle("pipeline").await;
    assert_eq!(
        events(&ns, "TopKRefreshed").await,
        refreshed,
        "no Event without a change"
    );
    let warnings = eventually(
        "a TopKRefreshFailed Warning",
        Duration::from_secs(60),
        || async {
            let w = events(&ns, "TopKRefreshFailed").await;
            (!w.is_empty()).then_some(w)
        },
    )
    .await;
    assert_eq!(
        warnings.len(),
        1,
        "only the outage, reported once: {warnings:?}"
    );
    assert!(
        warnings[0].starts_with("PrometheusUnavailable: "),
        "{warnings:?}"
    );
    // Later rankings fail the same way: no second Warning.
    let failed_at = failed.topk_refreshed_at.clone().expect("refreshedAt");
    let later = pipeline_when(&api, "a later failed ranking", 90, |s| {
        s.topk_refreshed_at.as_ref() > Some(&failed_at)
    })
    .await;
    assert_eq!(later.topk_processes, second);
    operator.idle("pipeline").await;
    assert_eq!(events(&ns, "TopKRefreshFailed").await, warnings);

    feeder.abort();
    drop(source);
    let _ = std::fs::remove_dir_all(&dir);
    ns.cleanup().await;
}
