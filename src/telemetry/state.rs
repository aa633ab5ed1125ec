//! Metrics read from the controllers' caches at scrape time (as kube-state-metrics does): what
//! exists now, so a deleted Experiment or Pipeline leaves no stale series behind.

use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::crd::{Experiment, Pipeline};
use crate::desired::labels::Ownership;

/// Label on an Experiment that marks it as scheduled (created on a schedule, e.g. by a CronJob or
/// a CI pipeline), with the schedule's name as value, e.g. `phoenix.io/schedule: nightly`. A
/// scheduled Experiment's `Fail` verdict is a regression worth an alert.
pub const SCHEDULE_LABEL: &str = "phoenix.io/schedule";

/// Labels of `phoenix_experiment_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExperimentInfoLabels {
    pub namespace: String,
    pub experiment: String,
    /// The `phoenix.io/schedule` label's value; empty (absent in Prometheus) when unscheduled.
    pub schedule: String,
}

/// Labels of per-Experiment, per-variant figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExperimentVariantLabels {
    pub namespace: String,
    pub experiment: String,
    pub variant: String,
    pub currency: String,
}

/// Labels of per-Experiment figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExperimentLabels {
    pub namespace: String,
    pub experiment: String,
}

/// Labels of per-Pipeline figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    pub namespace: String,
    pub pipeline: String,
    /// The owning Experiment's name; empty for a standalone Pipeline.
    pub experiment: String,
    /// `baseline` or `candidate` inside an Experiment; empty otherwise.
    pub variant: String,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

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

/// The state families of a set of Experiments and Pipelines (pure: the collector passes the
/// caches' contents).
#[derive(Default, Debug)]
pub struct StateFamilies {
    pub experiment_info: Family<ExperimentInfoLabels, Gauge>,
    pub monthly_cost: Family<ExperimentVariantLabels, FloatGauge>,
    pub time_to_verdict: Family<ExperimentLabels, FloatGauge>,
    pub collectors_ready: Family<PipelineLabels, Gauge>,
    pub collectors_desired: Family<PipelineLabels, Gauge>,
    pub collection_interval: Family<PipelineLabels, FloatGauge>,
}

impl StateFamilies {
    /// The families describing `experiments` and `pipelines`.
    pub fn of(experiments: &[Arc<Experiment>], pipelines: &[Arc<Pipeline>]) -> Self {
        let families = StateFamilies::default();
        for exp in experiments {
            families.add_experiment(exp);
        }
        for p in pipelines {
            families.add_pipeline(p);
        }
        families
    }

    fn add_experiment(&self, exp: &Experiment) {
        let namespace = exp.namespace().unwrap_or_default();
        let experiment = exp.name_any();
        let schedule = exp
            .labels()
            .get(SCHEDULE_LABEL)
            .cloned()
            .unwrap_or_default();
        self.experiment_info
            .get_or_create(&ExperimentInfoLabels {
                namespace: namespace.clone(),
                experiment: experiment.clone(),
                schedule,
            })
            .set(1);
        let Some(status) = &exp.status else { return };
        if let Some(cost) = status
            .results
            .as_ref()
            .and_then(|r| r.estimated_monthly_cost.as_ref())
        {
            for (variant, value) in [("baseline", cost.baseline), ("candidate", cost.candidate)] {
                self.monthly_cost
                    .get_or_create(&ExperimentVariantLabels {
                        namespace: namespace.clone(),
                        experiment: experiment.clone(),
                        variant: variant.to_string(),
                        currency: cost.currency.clone(),
                    })
                    .set(value);
            }
        }
        if let (Some(_), Some(done), Some(created)) = (
            status.verdict,
            &status.completion_time,
            &exp.metadata.creation_timestamp,
        ) {
            let millis = done.0.as_millisecond() - created.0.as_millisecond();
            self.time_to_verdict
                .get_or_create(&ExperimentLabels {
                    namespace,
                    experiment,
                })
                .set(millis as f64 / 1000.0);
        }
    }

    fn add_pipeline(&self, p: &Pipeline) {
        let ownership = Ownership::from_labels(p.metadata.labels.as_ref());
        let labels = PipelineLabels {
            namespace: p.namespace().unwrap_or_default(),
            pipeline: p.name_any(),
            experiment: ownership.experiment.unwrap_or_default(),
            variant: ownership.variant.unwrap_or_default(),
        };
        let (ready, desired) = p.status.as_ref().map_or((0, 0), |s| {
            (s.ready_collectors.into(), s.desired_collectors.into())
        });
        self.collectors_ready.get_or_create(&labels).set(ready);
        self.collectors_desired.get_or_create(&labels).set(desired);
        self.collection_interval
            .get_or_create(&labels)
            .set(p.spec.collection_interval.as_secs_f64());
    }
}

impl Collector for StateFamilies {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_family(
            &mut encoder,
            "experiment_info",
            "1 for every Experiment; label schedule holds its phoenix.io/schedule label",
            &self.experiment_info,
        )?;
        encode_family(
            &mut encoder,
            "experiment_estimated_monthly_cost",
            "Estimated monthly cost of each variant of an analyzed Experiment, in its currency",
            &self.monthly_cost,
        )?;
        encode_family(
            &mut encoder,
            "experiment_time_to_verdict_seconds",
            "Seconds from an Experiment's creation to its verdict",
            &self.time_to_verdict,
        )?;
        encode_family(
            &mut encoder,
            "pipeline_collectors_ready",
            "Ready collector pods of each Pipeline",
            &self.collectors_ready,
        )?;
        encode_family(
            &mut encoder,
            "pipeline_collectors_desired",
            "Collector pods each Pipeline wants",
            &self.collectors_desired,
        )?;
        encode_family(
            &mut encoder,
            "pipeline_collection_interval_seconds",
            "Seconds between two scrapes of the processes by each Pipeline's collectors: one \
             datapoint per series per interval",
            &self.collection_interval,
        )
    }
}

fn encode_family<S, M>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    family: &Family<S, M>,
) -> Result<(), std::fmt::Error>
where
    Family<S, M>: EncodeMetric,
{
    if family.is_empty() {
        return Ok(());
    }
    let metric = encoder.encode_descriptor(name, help, None, family.metric_type())?;
    family.encode(metric)
}

impl Collector for State {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        StateFamilies::of(&self.experiments(), &self.pipelines()).encode(encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(families: StateFamilies) -> String {
        let mut registry = prometheus_client::registry::Registry::with_prefix("phoenix");
        registry.register_collector(Box::new(families));
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
        let text = rendered(StateFamilies::of(&[scheduled, running], &[candidate]));
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
        let text = rendered(StateFamilies::of(&[], &[]));
        assert_eq!(text.trim(), "# EOF");
    }
}
