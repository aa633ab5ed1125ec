//! The main use case on the real control plane: an Experiment whose baseline is a `pipelineRef`
//! to a Pipeline the user already runs. The spec is copied when the run starts; an edit of the
//! user's Pipeline mid-run reaches that Pipeline's own collectors but not the Experiment's
//! baseline copy (same spec, same config hash, same pod template); the user's Pipeline outlives
//! the Experiment; and the operator never writes the spec of the user's objects (the Experiment,
//! the Pipeline, a Simulation of their own): generation and the spec's managedFields unchanged by
//! it through the whole run.

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use phoenix::crd::experiment::{Experiment, ExperimentPhase, PipelineRef, Verdict};
use phoenix::crd::pipeline::PipelinePhase;
use phoenix::crd::{Condition, ConditionStatus, Pipeline, PipelineStatus, Simulation, conditions};
use phoenix::desired::labels::FIELD_MANAGER;

use crate::experiment::{FINAL, experiment, feed_reducing, phase, running_since};
use crate::harness::{Operator, TestNamespace, cluster, eventually};
use crate::pipeline::template_hash;

/// The spec-side managedFields of `obj` (every entry but the status subresource's), after
/// checking that the operator's field manager owns nothing there.
fn spec_managers<K: Resource>(obj: &K) -> Vec<ManagedFieldsEntry> {
    let entries = obj.meta().managed_fields.clone().unwrap_or_default();
    for e in &entries {
        if e.manager.as_deref() == Some(FIELD_MANAGER) {
            assert_eq!(
                e.subresource.as_deref(),
                Some("status"),
                "the operator owns spec fields of {}: {e:?}",
                obj.meta().name.as_deref().unwrap_or_default()
            );
        }
    }
    entries
        .into_iter()
        .filter(|e| e.subresource.as_deref() != Some("status"))
        .collect()
}

/// `Ready`'s status and the reasons of `Reconciling` and `Stalled` where they are present (kstatus
/// reads the latter two only when `True`: both are asserted `True` when present).
fn kstatus(conds: &[Condition]) -> (Option<ConditionStatus>, Option<String>, Option<String>) {
    let abnormal = |type_: &str| {
        conditions::find(conds, type_).map(|c| {
            assert_eq!(c.status, ConditionStatus::True, "{c:?}");
            c.reason.clone()
        })
    };
    (
        conditions::find(conds, "Ready").map(|c| c.status),
        abnormal("Reconciling"),
        abnormal("Stalled"),
    )
}

/// The Pipeline once its status describes its current generation and `check` holds.
async fn observed(
    api: &Api<Pipeline>,
    name: &str,
    check: impl Fn(&PipelineStatus) -> bool,
) -> Pipeline {
    eventually(
        &format!("Pipeline {name} reconciled"),
        Duration::from_secs(90),
        || async {
            let p = api.get(name).await.ok()?;
            let s = p.status.as_ref()?;
            (s.observed_generation == p.metadata.generation && check(s)).then_some(p)
        },
    )
    .await
}

#[tokio::test]
async fn a_pipeline_ref_baseline_is_copied_at_start_and_an_edit_mid_run_does_not_reach_it() {
    let ns = TestNamespace::new("exp-ref").await;
    let _operator = Operator::start(&ns.name, &[]);
    let pipelines = ns.api::<Pipeline>();
    let experiments = ns.api::<Experiment>();

    // The Pipeline the user already runs.
    let current: Pipeline = serde_yaml::from_str(
        "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {name: current}\nspec:\n  template: baseline\n  collectionInterval: 10s\n  criticalProcesses: ['^postgres$', '^nginx$']\n",
    )
    .expect("test Pipeline parses");
    pipelines
        .create(&PostParams::default(), &current)
        .await
        .expect("Pipeline created");
    let current = observed(&pipelines, "current", |s| {
        s.phase == Some(PipelinePhase::Ready)
    })
    .await;
    let current_spec = current.spec.clone();

    // A Simulation of the user's own, reconciled by the operator through the whole run.
    let sims = ns.api::<Simulation>();
    let sim: Simulation = serde_yaml::from_str(
        "apiVersion: phoenix.io/v1alpha1\nkind: Simulation\nmetadata: {name: own-load}\nspec:\n  profile: realistic\n  processes: 20\n  duration: 10m\n  nodeSelector: {type: kwok}\n",
    )
    .expect("test Simulation parses");
    sims.create(&PostParams::default(), &sim)
        .await
        .expect("Simulation created");
    let sim = eventually(
        "Simulation own-load reconciled",
        Duration::from_secs(60),
        || async {
            let s = sims.get("own-load").await.ok()?;
            let status = s.status.as_ref()?;
            (status.observed_generation == s.metadata.generation && status.phase.is_some())
                .then_some(s)
        },
    )
    .await;
    let sim_generation = sim.metadata.generation;
    let sim_spec_managers = spec_managers(&sim);

    let mut exp = experiment("exp", "minSeriesReductionPercent: 80", "");
    exp.spec.baseline.pipeline = None;
    exp.spec.baseline.pipeline_ref = Some(PipelineRef {
        name: "current".into(),
    });
    experiments
        .create(&PostParams::default(), &exp)
        .await
        .expect("Experiment created");
    let exp = experiments.get("exp").await.expect("Experiment");
    let exp_generation = exp.metadata.generation;
    let exp_spec_managers = spec_managers(&exp);

    // The baseline child is a copy of the user's spec (placement aside), up and running.
    let since = running_since(&experiments, "exp").await;
    // The window's data now, not after the edit's rollout below: on a slow machine that rollout
    // can take much of the run, and data fed after the window's end is not analyzed.
    let url = cluster().var("PROMETHEUS_REMOTE_WRITE_URL").to_string();
    feed_reducing(&url, &format!("{}/exp", ns.name), since).await;
    // kstatus while running: in progress, not ready, for the current generation.
    let running = experiments.get("exp").await.expect("Experiment");
    let s = running.status.clone().expect("status");
    assert_eq!(s.observed_generation, running.metadata.generation);
    assert_eq!(
        kstatus(&s.conditions),
        (Some(ConditionStatus::False), Some("Running".into()), None),
        "{:?}",
        s.conditions
    );
    let child = observed(&pipelines, "exp-baseline", |s| {
        s.phase == Some(PipelinePhase::Ready)
    })
    .await;
    assert_eq!(child.spec.template, current_spec.template);
    assert_eq!(
        child.spec.collection_interval,
        current_spec.collection_interval
    );
    assert_eq!(
        child.spec.critical_processes,
        current_spec.critical_processes
    );
    let child_status = child.status.clone().expect("status");
    assert_eq!(
        kstatus(&child_status.conditions),
        (Some(ConditionStatus::True), None, None)
    );
    let child_hash = child_status.config_hash.clone().expect("config hash");
    let config_maps = ns.api::<ConfigMap>();
    let child_config = config_maps
        .get(&format!("exp-baseline-{child_hash}"))
        .await
        .expect("the baseline's ConfigMap")
        .data;
    let daemonsets = ns.api::<DaemonSet>();
    let child_ds = daemonsets
        .get("exp-baseline-collector")
        .await
        .expect("the baseline's DaemonSet");

    // The user edits their Pipeline mid-run; the operator rolls the user's own collectors to it
    // (so the edit was seen and acted on) ...
    let old_hash = current
        .status
        .as_ref()
        .and_then(|s| s.config_hash.clone())
        .expect("hash");
    let patch = serde_json::json!({"spec": {
        "collectionInterval": "20s",
        "criticalProcesses": ["^postgres$", "^nginx$", "^redis-server$"],
    }});
    pipelines
        .patch("current", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("user edit");
    let edited = observed(&pipelines, "current", |s| {
        s.config_hash.as_deref() != Some(old_hash.as_str()) && s.phase == Some(PipelinePhase::Ready)
    })
    .await;
    let edited_generation = edited.metadata.generation;
    let edited_spec_managers = spec_managers(&edited);
    let phase_now = experiments
        .get("exp")
        .await
        .expect("Experiment")
        .status
        .and_then(|s| s.phase);
    assert_eq!(
        phase_now,
        Some(ExperimentPhase::Running),
        "the edit landed mid-run"
    );

    // ... but the Experiment's baseline stays the copy taken at start.
    let child_now = pipelines.get("exp-baseline").await.expect("baseline child");
    assert_eq!(child_now.spec, child.spec, "the copy's spec is unchanged");
    assert_eq!(child_now.metadata.generation, child.metadata.generation);
    let status_now = child_now.status.expect("status");
    assert_eq!(status_now.config_hash.as_deref(), Some(child_hash.as_str()));
    let config_now = config_maps
        .get(&format!("exp-baseline-{child_hash}"))
        .await
        .expect("the baseline's ConfigMap")
        .data;
    assert_eq!(config_now, child_config, "the baseline collector config");
    let ds_now = daemonsets
        .get("exp-baseline-collector")
        .await
        .expect("the baseline's DaemonSet");
    assert_eq!(template_hash(&ds_now), template_hash(&child_ds));
    assert_eq!(ds_now.metadata.generation, child_ds.metadata.generation);

    // The run completes on the data of the copy (fed at its start: see above).
    let status = phase(&experiments, "exp", FINAL, 180).await;
    assert_eq!(status.phase, Some(ExperimentPhase::Completed), "{status:?}");
    assert_eq!(status.verdict, Some(Verdict::Pass), "{:?}", status.results);
    let inputs = status.analysis_inputs.expect("analysis inputs");
    assert_eq!(
        inputs.critical_processes,
        ["^nginx$", "^postgres$"],
        "judged by the critical processes copied at start, not the edit's"
    );

    // The user's Pipeline outlives the Experiment, untouched: the children are released, it is not.
    eventually("children released", Duration::from_secs(60), || async {
        let gone = pipelines.get_opt("exp-baseline").await.ok()?.is_none()
            && pipelines.get_opt("exp-candidate").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    let user = pipelines
        .get("current")
        .await
        .expect("the user's Pipeline stays");
    assert!(user.owner_references().is_empty());
    assert_eq!(user.metadata.generation, edited_generation);
    assert_eq!(spec_managers(&user), edited_spec_managers);
    assert_eq!(
        user.status.and_then(|s| s.phase),
        Some(PipelinePhase::Ready)
    );
    let sim = sims.get("own-load").await.expect("the user's Simulation");
    assert_eq!(sim.metadata.generation, sim_generation);
    assert_eq!(spec_managers(&sim), sim_spec_managers);
    let exp = experiments.get("exp").await.expect("Experiment");
    // kstatus when done: ready, neither reconciling nor stalled, for the current generation.
    let s = exp.status.clone().expect("status");
    assert_eq!(s.observed_generation, exp.metadata.generation);
    assert_eq!(
        kstatus(&s.conditions),
        (Some(ConditionStatus::True), None, None),
        "{:?}",
        s.conditions
    );
    assert_eq!(
        exp.metadata.generation, exp_generation,
        "spec never written"
    );
    assert_eq!(spec_managers(&exp), exp_spec_managers);
    ns.cleanup().await;
}
