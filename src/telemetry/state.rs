//! Metrics read from the controllers' caches at scrape time (as kube-state-metrics does): what
//! exists now, so a deleted Experiment or Pipeline leaves no stale series behind.

use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet};
use prometheus_client::metrics::MetricType;

use crate::crd::{Experiment, Pipeline};
use crate::desired::labels::{EXPERIMENT as EXPERIMENT_LABEL, VARIANT as VARIANT_LABEL};

/// Label on an Experiment that marks it as scheduled (created on a schedule, e.g. by a CronJob or
/// a CI pipeline), with the schedule's name as value, e.g. `phoenix.io/schedule: nightly`. A
/// scheduled Experiment's `Fail` verdict is a regression worth an alert.
pub const SCHEDULE_LABEL: &str = "phoenix.io/schedule";

/// The controllers' caches, added by each controller when it starts (one per watched namespace).
#[derive(Clone, Default)]
pub struct State {
    experiments: Arc<Mutex<Vec<Store<Experiment>>>>,
    pipelines: Arc<Mutex<Vec<Store<Pipeline>>>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("State")
    }
}

impl State {
    /// Exports the Experiments in `store` from now on.
    pub fn watch_experiments(&self, store: Store<Experiment>) {
        if let Ok(mut stores) = self.experiments.lock() {
            stores.push(store);
        }
    }

    /// Exports the Pipelines in `store` from now on.
    pub fn watch_pipelines(&self, store: Store<Pipeline>) {
        if let Ok(mut stores) = self.pipelines.lock() {
            stores.push(store);
        }
    }

    fn experiments(&self) -> Vec<Arc<Experiment>> {
        self.experiments
            .lock()
            .map(|stores| stores.iter().flat_map(|s| s.state()).collect())
            .unwrap_or_default()
    }

    fn pipelines(&self) -> Vec<Arc<Pipeline>> {
        self.pipelines
            .lock()
            .map(|stores| stores.iter().flat_map(|s| s.state()).collect())
            .unwrap_or_default()
    }
}

/// The state series of a set of Experiments and Pipelines (pure: the collector passes the caches'
/// contents), encoded straight from the objects: label values are borrowed from them, so a scrape
/// allocates nothing per object beyond the text itself. (Through `Family` maps, a scrape at 2,000
/// Experiments built about 50,000 label strings, all alive at once, besides the text.)
pub struct StateSeries<'a> {
    pub experiments: &'a [Arc<Experiment>],
    pub pipelines: &'a [Arc<Pipeline>],
}

/// A family's descriptor, then one series per item of `items` that `series` gives labels and a
/// value for; nothing (not even the descriptor) when none does.
fn encode_gauges<T, L: EncodeLabelSet, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    items: impl Iterator<Item = T>,
    series: impl Fn(T) -> Option<(L, V)>,
) -> Result<(), std::fmt::Error> {
    let mut all = items.filter_map(series).peekable();
    if all.peek().is_none() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in all {
        metric.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

const EXPERIMENT_INFO: (&str, &str) = (
    "experiment_info",
    "1 for every Experiment; label schedule holds its phoenix.io/schedule label",
);
const MONTHLY_COST: (&str, &str) = (
    "experiment_estimated_monthly_cost",
    "Estimated monthly cost of each variant of an analyzed Experiment, in its currency",
);
const TIME_TO_VERDICT: (&str, &str) = (
    "experiment_time_to_verdict_seconds",
    "Seconds from an Experiment's creation to its verdict",
);
const COLLECTORS_READY: (&str, &str) = (
    "pipeline_collectors_ready",
    "Ready collector pods of each Pipeline",
);
const COLLECTORS_DESIRED: (&str, &str) = (
    "pipeline_collectors_desired",
    "Collector pods each Pipeline wants",
);
const COLLECTION_INTERVAL: (&str, &str) = (
    "pipeline_collection_interval_seconds",
    "Seconds between two scrapes of the processes by each Pipeline's collectors: one datapoint \
     per series per interval",
);

/// An object's namespace and name, borrowed.
fn names(meta: &kube::api::ObjectMeta) -> (&str, &str) {
    (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// A Pipeline's labels in its series: namespace, name, and the owning Experiment and variant
/// (empty for a standalone Pipeline).
fn pipeline_labels(p: &Pipeline) -> [(&'static str, &str); 4] {
    let (namespace, pipeline) = names(&p.metadata);
    let label = |key: &str| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(key))
            .map_or("", String::as_str)
    };
    [
        ("namespace", namespace),
        ("pipeline", pipeline),
        ("experiment", label(EXPERIMENT_LABEL)),
        ("variant", label(VARIANT_LABEL)),
    ]
}

impl StateSeries<'_> {
    pub fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let experiments = || self.experiments.iter().map(Arc::as_ref);
        encode_gauges(encoder, EXPERIMENT_INFO, experiments(), |exp| {
            let (namespace, experiment) = names(&exp.metadata);
            let schedule = exp.labels().get(SCHEDULE_LABEL).map_or("", String::as_str);
            let labels = [
                ("namespace", namespace),
                ("experiment", experiment),
                ("schedule", schedule),
            ];
            Some((labels, 1i64))
        })?;
        let costs = experiments().filter_map(|exp| {
            let results = exp.status.as_ref()?.results.as_ref()?;
            Some((exp, results.estimated_monthly_cost.as_ref()?))
        });
        let variants = costs.flat_map(|(exp, cost)| {
            [("baseline", cost.baseline), ("candidate", cost.candidate)]
                .map(move |(variant, value)| (exp, cost, variant, value))
        });
        encode_gauges(
            encoder,
            MONTHLY_COST,
            variants,
            |(exp, cost, variant, value)| {
                let (namespace, experiment) = names(&exp.metadata);
                let labels = [
                    ("namespace", namespace),
                    ("experiment", experiment),
                    ("variant", variant),
                    ("currency", cost.currency.as_str()),
                ];
                Some((labels, value))
            },
        )?;
        encode_gauges(encoder, TIME_TO_VERDICT, experiments(), |exp| {
            let status = exp.status.as_ref()?;
            status.verdict?;
            let done = status.completion_time.as_ref()?;
            let created = exp.metadata.creation_timestamp.as_ref()?;
            let millis = done.0.as_millisecond() - created.0.as_millisecond();
            let (namespace, experiment) = names(&exp.metadata);
            let labels = [("namespace", namespace), ("experiment", experiment)];
            Some((labels, millis as f64 / 1000.0))
        })?;
        let pipelines = || self.pipelines.iter().map(Arc::as_ref);
        let collectors = |p: &Pipeline| -> (i64, i64) {
            p.status.as_ref().map_or((0, 0), |s| {
                (s.ready_collectors.into(), s.desired_collectors.into())
            })
        };
        encode_gauges(encoder, COLLECTORS_READY, pipelines(), |p| {
            Some((pipeline_labels(p), collectors(p).0))
        })?;
        encode_gauges(encoder, COLLECTORS_DESIRED, pipelines(), |p| {
            Some((pipeline_labels(p), collectors(p).1))
        })?;
        encode_gauges(encoder, COLLECTION_INTERVAL, pipelines(), |p| {
            let interval = p.spec.collection_interval.as_secs_f64();
            Some((pipeline_labels(p), interval))
        })
    }
}

impl Collector for State {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        StateSeries {
            experiments: &self.experiments(),
            pipelines: &self.pipelines(),
        }
        .encode(&mut encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A collector of fixed contents.
    #[derive(Debug)]
    struct Fixed(Vec<Arc<Experiment>>, Vec<Arc<Pipeline>>);

    impl Collector for Fixed {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            StateSeries {
                experiments: &self.0,
                pipelines: &self.1,
            }
            .encode(&mut encoder)
        }
    }

    fn rendered(experiments: &[Arc<Experiment>], pipelines: &[Arc<Pipeline>]) -> String {
        let mut registry = prometheus_client::registry::Registry::with_prefix("phoenix");
        registry.register_collector(Box::new(Fixed(experiments.to_vec(), pipelines.to_vec())));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        text
    }

    fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> Arc<T> {
        Arc::new(serde_yaml::from_str(text).expect("valid test object"))
    }

    #[test]
    fn experiments_and_pipelines_become_series() {
        let scheduled: Arc<Experiment> = yaml(
            "apiVersion: phoenix.io/v1alpha1\nkind: Experiment\n\
             metadata: {name: nightly, namespace: team, creationTimestamp: '2026-01-01T00:00:00Z', labels: {phoenix.io/schedule: nightly}}\n\
             spec: {baseline: {pipeline: {template: baseline}}, candidate: {pipeline: {template: aggregate}}}\n\
             status: {phase: Completed, verdict: Fail, completionTime: '2026-01-01T00:10:30Z',\n\
               results: {baseline: {}, candidate: {}, estimatedMonthlyCost: {baseline: 120.5, candidate: 30.25, currency: USD}}}",
        );
        let running: Arc<Experiment> = yaml(
            "apiVersion: phoenix.io/v1alpha1\nkind: Experiment\n\
             metadata: {name: adhoc, namespace: team}\n\
             spec: {baseline: {pipeline: {template: baseline}}, candidate: {pipeline: {template: aggregate}}}\n\
             status: {phase: Running}",
        );
        let candidate: Arc<Pipeline> = yaml(
            "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\n\
             metadata: {name: adhoc-candidate, namespace: team, labels: {phoenix.io/experiment: adhoc, phoenix.io/variant: candidate}}\n\
             spec: {template: aggregate}\n\
             status: {readyCollectors: 1, desiredCollectors: 3}",
        );
        let text = rendered(&[scheduled, running], &[candidate]);
        for expected in [
            "phoenix_experiment_info{namespace=\"team\",experiment=\"nightly\",schedule=\"nightly\"} 1",
            "phoenix_experiment_info{namespace=\"team\",experiment=\"adhoc\",schedule=\"\"} 1",
            "phoenix_experiment_estimated_monthly_cost{namespace=\"team\",experiment=\"nightly\",variant=\"baseline\",currency=\"USD\"} 120.5",
            "phoenix_experiment_estimated_monthly_cost{namespace=\"team\",experiment=\"nightly\",variant=\"candidate\",currency=\"USD\"} 30.25",
            "phoenix_experiment_time_to_verdict_seconds{namespace=\"team\",experiment=\"nightly\"} 630.0",
            "phoenix_pipeline_collectors_ready{namespace=\"team\",pipeline=\"adhoc-candidate\",experiment=\"adhoc\",variant=\"candidate\"} 1",
            "phoenix_pipeline_collectors_desired{namespace=\"team\",pipeline=\"adhoc-candidate\",experiment=\"adhoc\",variant=\"candidate\"} 3",
            "phoenix_pipeline_collection_interval_seconds{namespace=\"team\",pipeline=\"adhoc-candidate\",experiment=\"adhoc\",variant=\"candidate\"} 10.0",
        ] {
            assert!(text.contains(expected), "{expected} in\n{text}");
        }
        assert!(
            !text.contains("time_to_verdict_seconds{namespace=\"team\",experiment=\"adhoc\""),
            "no verdict, no time to verdict:\n{text}"
        );
    }

    #[test]
    fn nothing_watched_exports_nothing() {
        let text = rendered(&[], &[]);
        assert_eq!(text.trim(), "# EOF");
    }
}
