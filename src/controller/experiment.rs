//! The Experiment controller: observes the children it controls, lets [`experiment_phase::decide`]
//! choose the next step, analyzes in Prometheus from the stored inputs, writes status with
//! optimistic concurrency, then performs the effects (create or release children) and Events.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use tracing::{debug, info, instrument, warn};

use super::experiment_phase::{
    self, AnalysisBasis, AnalysisOutcome, Child, Decision, Effect, Observed,
};
use super::{Context, StatusWrite, apply, create_unless_exists, namespaced_api, write_status_at};
use crate::analysis::measure::{self, MeasureError, Window};
use crate::analysis::queries::VariantSelector;
use crate::analysis::verdict::{self, Outcome};
use crate::crd::experiment::{
    AnalysisInputs, Experiment, ExperimentPhase, ExperimentSpec, ExperimentStatus, TopKSelection,
    Verdict,
};
use crate::crd::pipeline::PipelinePhase;
use crate::crd::simulation::SimulationPhase;
use crate::crd::{Pipeline, PipelineSpec, Simulation, conditions};
use crate::desired::children::{self, Side};
use crate::telemetry::ResultLabels;
use crate::{Error, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The controller's name in metrics and logs.
pub const NAME: &str = "experiment";

fn pipeline_child(p: Option<&Pipeline>) -> Child {
    let Some(p) = p else { return Child::Missing };
    let Some(status) = &p.status else {
        return Child::Progressing;
    };
    if status.observed_generation != p.metadata.generation {
        return Child::Progressing;
    }
    // Collector pods refused by admission (Pod Security, a webhook, a quota) never come without
    // a change to the namespace or its policies: fail with the apiserver's words, not a timeout.
    if let Some(c) = conditions::find(&status.conditions, "Available")
        .filter(|c| c.reason == super::pod_admission::PODS_REFUSED)
    {
        return Child::Broken(c.reason.clone(), c.message.clone());
    }
    // Collectors whose remote-write endpoint refuses their credentials or certificates would
    // measure nothing: fail with the reason, not with no data.
    if let Some(c) = conditions::find(&status.conditions, super::remote_write_check::CONDITION)
        .filter(|c| {
            c.status == conditions::ConditionStatus::False
                && super::remote_write_check::needs_a_fix(&c.reason)
        })
    {
        return Child::Broken(c.reason.clone(), c.message.clone());
    }
    match status.phase {
        Some(PipelinePhase::Ready) => Child::Ready,
        Some(PipelinePhase::Invalid) => {
            let c = conditions::find(&status.conditions, "ConfigValid");
            Child::Broken(
                c.map(|c| c.reason.clone())
                    .unwrap_or_else(|| "InvalidConfig".into()),
                status.message.clone().unwrap_or_default(),
            )
        }
        _ => Child::Progressing,
    }
}

fn simulation_child(s: Option<&Simulation>) -> Child {
    let Some(s) = s else { return Child::Missing };
    match s.status.as_ref().and_then(|st| st.phase) {
        Some(SimulationPhase::Failed) => {
            let st = s.status.as_ref();
            let reason = st
                .and_then(|st| conditions::find(&st.conditions, "Complete"))
                .map(|c| c.reason.clone())
                .unwrap_or_else(|| "Failed".into());
            Child::Broken(
                reason,
                st.and_then(|st| st.message.clone()).unwrap_or_default(),
            )
        }
        Some(SimulationPhase::Running) => Child::Ready,
        Some(SimulationPhase::Succeeded) => Child::Finished,
        _ => Child::Progressing,
    }
}

/// The Pipeline spec of one side: inline, or the referenced Pipeline's (None when it is missing),
/// read from the Pipeline controller's cache.
fn resolve(
    ctx: &Context,
    namespace: &str,
    variant: &crate::crd::experiment::Variant,
) -> Option<PipelineSpec> {
    if let Some(inline) = &variant.pipeline {
        return Some(inline.clone());
    }
    let r = variant.pipeline_ref.as_ref()?;
    ctx.pipelines
        .get(namespace, &r.name)
        .map(|p| p.spec.clone())
}

/// Why the operator's settings refuse the Experiment's own Prometheus URL, if they do.
fn prometheus_refusal(ctx: &Context, exp: &Experiment) -> Option<String> {
    let prometheus = exp.spec.prometheus.as_ref()?;
    let refused = |field: &str, url: &str| {
        format!(
            "spec.prometheus.{field} {url} is not allowed by the operator: only its own Prometheus or a URL under --allowed-prometheus-url-prefixes (chart value allowedPrometheusUrlPrefixes)"
        )
    };
    if !ctx.settings.prometheus_url_allowed(&prometheus.url) {
        return Some(refused("url", &prometheus.url));
    }
    let remote_write = prometheus.remote_write_url.as_deref()?;
    (!ctx.settings.remote_write_url_allowed(remote_write))
        .then(|| refused("remoteWriteUrl", remote_write))
}

fn prometheus_url(ctx: &Context, exp: &Experiment) -> String {
    exp.spec
        .prometheus
        .as_ref()
        .map(|p| p.url.clone())
        .unwrap_or_else(|| ctx.settings.prometheus_url.clone())
}

/// Whether `obj` is controlled by the object with `uid` (a controller ownerReference with its UID).
pub fn controlled_by<K: Resource>(obj: &K, uid: &str) -> bool {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// Keeps `obj` when this Experiment controls it; otherwise records it as a name conflict
/// (`<Kind> <name>`) and forgets it, so it is never read, changed or deleted.
fn owned<K: Resource<DynamicType = ()>>(
    obj: Option<Arc<K>>,
    uid: &str,
    conflicts: &mut Vec<String>,
) -> Option<Arc<K>> {
    let obj = obj?;
    if controlled_by(obj.as_ref(), uid) {
        return Some(obj);
    }
    conflicts.push(format!(
        "{} {}",
        K::kind(&()),
        obj.meta().name.as_deref().unwrap_or("")
    ));
    None
}

/// [`analyze`] when a turn for an analysis is free (`--max-concurrent-analyses`); `None` when
/// every turn is taken. Records the duration and the Prometheus requests of the analysis.
async fn analyze_in_turn(
    ctx: &Context,
    exp: &Experiment,
    inputs: &AnalysisInputs,
) -> Option<AnalysisOutcome> {
    let key = format!("{}/{}", exp.namespace().unwrap_or_default(), exp.name_any());
    let turn = ctx.analyses.try_turn(&key);
    ctx.metrics
        .analyses_waiting
        .set(ctx.analyses.waiting() as i64);
    let _turn = turn?;
    let start = std::time::Instant::now();
    let (outcome, queries) =
        crate::telemetry::outbound::count_prometheus_queries(analyze(ctx, exp, inputs)).await;
    ctx.metrics
        .analysis_duration
        .observe(start.elapsed().as_secs_f64());
    ctx.metrics.analysis_queries.observe(queries as f64);
    Some(outcome)
}

/// Measures the window described by `inputs` (and nothing else: not the live children).
async fn analyze(ctx: &Context, exp: &Experiment, inputs: &AnalysisInputs) -> AnalysisOutcome {
    let prom = match ctx.prometheus.client(&inputs.prometheus_url) {
        Ok(p) => p,
        Err(e) => {
            return AnalysisOutcome::Inaccessible {
                reason: e.reason().to_string(),
                message: e.to_string(),
            };
        }
    };
    // Each step looks back over the slower variant's two collection intervals.
    let window = Window::new(
        inputs.window_start.0.as_second(),
        inputs.window_end.0.as_second(),
        inputs.step_seconds,
        inputs.collection_interval_seconds,
    );
    let sel = |side: Side| VariantSelector {
        experiment: inputs.experiment_label.clone(),
        variant: side.as_str().to_string(),
    };
    let critical = &inputs.critical_processes;
    let measured = futures::future::try_join(
        measure::measure(&prom, &sel(Side::Baseline), &window, critical),
        measure::measure(&prom, &sel(Side::Candidate), &window, critical),
    )
    .await;
    let (baseline, candidate) = match measured {
        Ok(pair) => pair,
        Err(MeasureError::Invalid(e)) => return AnalysisOutcome::Invalid(e),
        Err(MeasureError::Access(e)) => {
            return AnalysisOutcome::Inaccessible {
                reason: e.reason().to_string(),
                message: e.to_string(),
            };
        }
        Err(e) => return AnalysisOutcome::Unreachable(e.to_string()),
    };
    let evaluation = verdict::evaluate(&exp.spec, &baseline, &candidate);
    match evaluation.outcome {
        Outcome::NoData(message) => AnalysisOutcome::NoData(message),
        Outcome::Verdict(v) => {
            let recommendation = (v == Verdict::Pass)
                .then(|| inputs.candidate.clone())
                .flatten();
            AnalysisOutcome::Judged {
                results: Box::new(evaluation.results),
                verdict: v,
                recommendation: recommendation.map(Box::new),
            }
        }
    }
}

/// The analysis inputs as the Experiment's own children hold them now; `None` unless both child
/// Pipelines exist.
fn basis(
    ctx: &Context,
    exp: &Experiment,
    baseline: Option<&Pipeline>,
    candidate: Option<&Pipeline>,
) -> Option<AnalysisBasis> {
    let (baseline, candidate) = (baseline?, candidate?);
    let mut critical_processes = baseline.spec.critical_processes.clone();
    critical_processes.extend(candidate.spec.critical_processes.iter().cloned());
    critical_processes.sort();
    critical_processes.dedup();
    Some(AnalysisBasis {
        prometheus_url: prometheus_url(ctx, exp),
        experiment_label: children::experiment_label(
            &exp.namespace().unwrap_or_default(),
            &exp.name_any(),
        ),
        critical_processes,
        collection_interval_seconds: baseline
            .spec
            .collection_interval
            .as_secs_f64()
            .max(candidate.spec.collection_interval.as_secs_f64()),
        candidate: candidate.spec.clone(),
    })
}

/// What creating the children overrides in the variants' own placement (both sides resolved).
fn placement_overrides(ctx: &Context, namespace: &str, exp: &Experiment) -> Vec<String> {
    let mut out = vec![];
    for (side, variant) in [
        (Side::Baseline, &exp.spec.baseline),
        (Side::Candidate, &exp.spec.candidate),
    ] {
        if let Some(resolved) = resolve(ctx, namespace, variant) {
            out.extend(children::placement_overrides(
                side,
                &resolved,
                &exp.spec.targets,
            ));
        }
    }
    out
}

async fn ensure_children(
    ctx: &Context,
    exp: &Experiment,
    pipelines: &Api<Pipeline>,
    existing: [Option<&Pipeline>; 2],
    sim: Option<&Simulation>,
) -> Result<()> {
    let name = exp.name_any();
    let namespace = exp
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let owner = exp
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let remote_write = children::remote_write_url(&exp.spec);
    // The children are independent of each other: created concurrently, so the chain
    // Experiment → workloads waits for one create, not three.
    let pipeline = |side: Side| {
        let (name, namespace, owner) = (&name, &namespace, &owner);
        let remote_write = remote_write.as_deref();
        let (exists, variant) = match side {
            Side::Baseline => (existing[0].is_some(), &exp.spec.baseline),
            Side::Candidate => (existing[1].is_some(), &exp.spec.candidate),
        };
        async move {
            if exists {
                return Ok(()); // Created once; never re-applied, so a referenced Pipeline's later edits don't leak in.
            }
            let Some(resolved) = resolve(ctx, namespace, variant) else {
                return Ok(());
            };
            let child = children::pipeline(
                name,
                namespace,
                owner,
                &exp.spec,
                side,
                &resolved,
                remote_write,
            );
            let created = create_unless_exists(pipelines, &child, "create child Pipeline").await?;
            if let Some(created) = created {
                ctx.pipelines.created(created);
            }
            Ok(())
        }
    };
    let lead = Duration::from_secs(ctx.settings.deploy_timeout_seconds);
    let simulation = async {
        if sim.is_none()
            && let Some(child) = children::simulation(&name, &namespace, &owner, &exp.spec, lead)
        {
            let sims: Api<Simulation> = Api::namespaced(ctx.client.clone(), &namespace);
            if let Some(created) =
                create_unless_exists(&sims, &child, "create child Simulation").await?
            {
                ctx.simulations.created(created);
            }
        }
        Ok(())
    };
    futures::future::try_join3(
        pipeline(Side::Baseline),
        pipeline(Side::Candidate),
        simulation,
    )
    .await?;
    Ok(())
}

/// A background delete that only removes the object with this exact UID.
fn delete_params<K: Resource>(obj: &K) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: obj.meta().uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    }
}

/// Deletes the children this Experiment controls (the callers pass only controlled ones), each
/// with a UID precondition so an object re-created under the same name is never hit.
async fn release_children(
    ctx: &Context,
    exp: &Experiment,
    existing: [Option<&Pipeline>; 2],
    sim: Option<&Simulation>,
) -> Result<()> {
    let namespace = exp
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let pipelines: Api<Pipeline> = Api::namespaced(ctx.client.clone(), &namespace);
    for p in existing.into_iter().flatten() {
        ignore_gone(
            pipelines
                .delete(&p.name_any(), &delete_params(p))
                .await
                .map(|_| ()),
        )?;
    }
    if let Some(s) = sim {
        let sims: Api<Simulation> = Api::namespaced(ctx.client.clone(), &namespace);
        ignore_gone(
            sims.delete(&s.name_any(), &delete_params(s))
                .await
                .map(|_| ()),
        )?;
    }
    Ok(())
}

/// Re-chooses a `topk` candidate's K heaviest processes from the baseline's data since `since` and
/// re-applies the candidate with them when they changed (its collectors roll by config hash).
async fn refresh_topk(
    ctx: &Context,
    exp: &Experiment,
    pipelines: &Api<Pipeline>,
    candidate: &Pipeline,
    since: k8s_openapi::jiff::Timestamp,
    now: k8s_openapi::jiff::Timestamp,
) -> Result<TopKSelection> {
    let previous = exp
        .status
        .as_ref()
        .and_then(|s| s.topk.clone())
        .unwrap_or_default();
    let k = candidate.spec.topk.as_ref().map_or(10, |t| t.k);
    let label = children::experiment_label(&exp.namespace().unwrap_or_default(), &exp.name_any());
    let sel = VariantSelector {
        experiment: label,
        variant: Side::Baseline.as_str().to_string(),
    };
    let step = exp.spec.analysis.interval.as_secs_f64();
    let window = Window::new(since.as_second(), now.as_second(), step, 0.0);
    let url = prometheus_url(ctx, exp);
    let names = match ctx.prometheus.client(&url) {
        Ok(prom) => measure::topk_names(&prom, &sel, k, &window)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let names = match names {
        Ok(names) if !names.is_empty() => names,
        Ok(_) => {
            warn!("no baseline data for the top-K yet; keeping the current selection");
            return Ok(TopKSelection {
                refreshed_at: Some(Time(now)),
                ..previous
            });
        }
        Err(e) => {
            warn!(error = %e, "top-K refresh failed; keeping the current selection");
            return Ok(TopKSelection {
                refreshed_at: Some(Time(now)),
                ..previous
            });
        }
    };
    let current = candidate
        .spec
        .topk
        .as_ref()
        .map(|t| t.processes.clone())
        .unwrap_or_default();
    if current != names {
        let mut spec = candidate.spec.clone();
        if let Some(t) = spec.topk.as_mut() {
            t.processes = names.clone();
        }
        let owner = exp
            .controller_owner_ref(&())
            .ok_or(Error::MissingField("metadata.uid"))?;
        let remote_write = children::remote_write_url(&exp.spec);
        let mut child = children::pipeline(
            &exp.name_any(),
            &exp.namespace().unwrap_or_default(),
            &owner,
            &exp.spec,
            Side::Candidate,
            &spec,
            remote_write.as_deref(),
        );
        // Only the controlled child this pass observed: the apiserver refuses another UID.
        child.metadata.uid = candidate.metadata.uid.clone();
        apply(pipelines, &child, "apply topk candidate").await?;
        ctx.event(
            exp,
            EventType::Normal,
            "TopKRefreshed",
            "Refresh",
            format!("candidate keeps {}", names.join(", ")),
        )
        .await;
    }
    Ok(TopKSelection {
        processes: names,
        refreshed_at: Some(Time(now)),
        frozen_at: None,
    })
}

/// A delete that found nothing, or found another object under the name (UID precondition
/// failed, 409), has nothing left to do.
fn ignore_gone(r: std::result::Result<(), kube::Error>) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(Error::Kube {
            step: "release children",
            source: e,
        }),
    }
}

/// How long a finished Experiment has left before `spec.ttlSecondsAfterFinished` deletes it
/// (zero: now); `None` when it has no TTL or has not finished. Pure.
pub fn expires_in(
    spec: &ExperimentSpec,
    status: &ExperimentStatus,
    now: k8s_openapi::jiff::Timestamp,
) -> Option<Duration> {
    let ttl = spec.ttl_seconds_after_finished?;
    if !status.phase.is_some_and(ExperimentPhase::is_terminal) {
        return None;
    }
    let finished = status.completion_time.as_ref()?.0;
    let expiry = finished
        .checked_add(Duration::from_secs(u64::from(ttl)))
        .ok()?;
    let left = now.duration_until(expiry);
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

/// Deletes an expired Experiment (UID precondition: never a newer one of the same name).
async fn delete_expired(api: &Api<Experiment>, exp: &Experiment) -> Result<()> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: exp.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    info!("ttlSecondsAfterFinished passed: deleting the Experiment");
    match api.delete(&exp.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(Error::Kube {
            step: "delete expired Experiment",
            source: e,
        }),
    }
}

fn record_metrics(ctx: &Context, exp: &Experiment, d: &Decision) {
    let namespace = exp.namespace().unwrap_or_default();
    let name = exp.name_any();
    ctx.metrics.track_experiment(&namespace, &name);
    let phase = d
        .status
        .phase
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "Pending".into());
    ctx.metrics.set_experiment_phase(&namespace, &name, &phase);
    if let (Some(results), Some(verdict)) = (&d.status.results, d.status.verdict) {
        let labels = ResultLabels {
            namespace,
            experiment: name,
        };
        if let Some(r) = results.series_reduction_percent {
            ctx.metrics
                .result_series_reduction
                .get_or_create(&labels)
                .set(r);
        }
        if let Some(r) = results.critical_retention_percent {
            ctx.metrics.result_retention.get_or_create(&labels).set(r);
        }
        let v = match verdict {
            Verdict::Pass => 1,
            Verdict::Fail => 0,
            Verdict::Inconclusive => -1,
        };
        ctx.metrics.result_verdict.get_or_create(&labels).set(v);
    }
}

#[instrument(skip_all, fields(experiment = %exp.name_any(), namespace = exp.namespace().unwrap_or_default()))]
async fn reconcile(exp: Arc<Experiment>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(NAME);
    let name = exp.name_any();
    let namespace = exp
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<Experiment> = namespaced_api(&ctx.client, exp.as_ref())?;
    let pipelines: Api<Pipeline> = Api::namespaced(ctx.client.clone(), &namespace);
    let stored = exp.status.clone().unwrap_or_default();

    // Observe: only what this Experiment controls; a taken name is a conflict. The children come
    // from their controllers' caches, whose events reconcile this Experiment once cached.
    let uid = exp.uid().ok_or(Error::MissingField("metadata.uid"))?;
    if !(ctx.pipelines.ready(&namespace).await && ctx.simulations.ready(&namespace).await) {
        // Stopped before the children's caches synced (shutdown): nothing can be decided.
        return Err(Error::CachesStopped);
    }
    let mut conflicts = vec![];
    let child = |side| {
        ctx.pipelines
            .get(&namespace, &children::pipeline_name(&name, side))
    };
    let baseline = owned(child(Side::Baseline), &uid, &mut conflicts);
    let candidate = owned(child(Side::Candidate), &uid, &mut conflicts);
    // Whether the spec has a simulation cannot change (a CRD rule): an Experiment without one
    // never created a Simulation, and one of that name is none of its business.
    let sim = exp.spec.simulation.as_ref().and_then(|_| {
        ctx.simulations
            .get(&namespace, &children::simulation_name(&name))
    });
    let sim = owned(sim, &uid, &mut conflicts);
    let mut missing_refs = vec![];
    let mut overrides = vec![];
    if stored.phase.is_none_or(|p| p == ExperimentPhase::Pending) {
        overrides = placement_overrides(&ctx, &namespace, &exp);
        for variant in [&exp.spec.baseline, &exp.spec.candidate] {
            if let Some(r) = &variant.pipeline_ref
                && ctx.pipelines.get(&namespace, &r.name).is_none()
            {
                missing_refs.push(r.name.clone());
            }
        }
    }
    let observed = Observed {
        now: k8s_openapi::jiff::Timestamp::now(),
        generation: exp.metadata.generation,
        baseline: pipeline_child(baseline.as_deref()),
        candidate: pipeline_child(candidate.as_deref()),
        simulation: exp
            .spec
            .simulation
            .as_ref()
            .map(|_| simulation_child(sim.as_deref())),
        missing_refs,
        prometheus_refused: prometheus_refusal(&ctx, &exp),
        topk_refresh: candidate
            .as_ref()
            .filter(|c| c.spec.template == crate::crd::pipeline::PipelineTemplate::Topk)
            .and_then(|c| c.spec.topk.as_ref())
            .map(|t| t.refresh_interval.get()),
        basis: basis(&ctx, &exp, baseline.as_deref(), candidate.as_deref()),
        conflicts,
        placement_overrides: overrides,
    };

    // Decide (pure), then act.
    let limits = experiment_phase::Limits {
        deploy_timeout: Duration::from_secs(ctx.settings.deploy_timeout_seconds),
        prometheus_budget: ctx.settings.analysis_retries,
    };
    let mut decision = experiment_phase::decide(&exp.spec, &stored, &observed, &limits);
    if let Some(Effect::Analyze(inputs)) = decision
        .effects
        .iter()
        .find(|e| matches!(e, Effect::Analyze(_)))
        .cloned()
    {
        let Some(outcome) = analyze_in_turn(&ctx, &exp, &inputs).await else {
            // Every turn is taken: nothing is written (the next pass decides the same again) and
            // the reconcile slot goes to other Experiments meanwhile.
            debug!("every analysis turn is taken; retrying");
            return Ok(Action::requeue(ANALYSIS_TURN_RETRY));
        };
        decision = experiment_phase::finish(decision, outcome, &observed, &limits);
    }
    if let Some(Effect::RefreshTopK { since }) = decision
        .effects
        .iter()
        .find(|e| matches!(e, Effect::RefreshTopK { .. }))
        .cloned()
        && let Some(child) = &candidate
    {
        decision.status.topk =
            Some(refresh_topk(&ctx, &exp, &pipelines, child, since, observed.now).await?);
    }
    decision.status.summary = crate::crd::summary::of(&decision.status).map(Box::new);
    // Status first, guarded by the resourceVersion this pass read: a stale cached Experiment can
    // neither move the run backwards nor act on children (creating or releasing them) for it.
    let version = exp.resource_version();
    let written = write_status_at(
        &api,
        exp.as_ref(),
        version.as_deref(),
        exp.status.as_ref(),
        &decision.status,
    )
    .await?;
    if written == StatusWrite::Conflict {
        info!("status changed since this pass read it; looking again");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // Events once the transition is stored (never duplicated by a retried write), and the effects
    // alongside them: an Event is best effort and nothing waits on it, so the children are not
    // created one Event round trip (or two) later than they could be.
    let events = publish_events(&ctx, &exp, &decision.events);
    let effects = perform_effects(
        &ctx,
        &exp,
        &pipelines,
        [baseline.as_deref(), candidate.as_deref()],
        sim.as_deref(),
        &decision.effects,
    );
    futures::future::join(events, effects).await.1?;
    record_metrics(&ctx, &exp, &decision);
    if let Some(left) = expires_in(&exp.spec, &decision.status, observed.now) {
        if left.is_zero() {
            delete_expired(&api, &exp).await?;
            return Ok(Action::await_change());
        }
        return Ok(Action::requeue(
            decision.requeue.map_or(left, |r| r.min(left)),
        ));
    }
    Ok(match decision.requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Publishes the Events of a stored transition, in order.
async fn publish_events(ctx: &Context, exp: &Experiment, notes: &[experiment_phase::Note]) {
    for note in notes {
        let type_ = if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.event(exp, type_, &note.reason, "Reconcile", note.message.clone())
            .await;
        info!(reason = %note.reason, message = %note.message, "experiment transition");
    }
}

/// Performs the effects of a stored decision on the children this Experiment controls.
async fn perform_effects(
    ctx: &Context,
    exp: &Experiment,
    pipelines: &Api<Pipeline>,
    existing: [Option<&Pipeline>; 2],
    sim: Option<&Simulation>,
    effects: &[Effect],
) -> Result<()> {
    for effect in effects {
        match effect {
            Effect::EnsureChildren => ensure_children(ctx, exp, pipelines, existing, sim).await?,
            Effect::ReleaseChildren => release_children(ctx, exp, existing, sim).await?,
            Effect::Analyze(_) | Effect::RefreshTopK { .. } => {}
        }
    }
    Ok(())
}

fn error_policy(_exp: Arc<Experiment>, error: &Error, ctx: Arc<Context>) -> Action {
    super::retry_after_error(&ctx, NAME, error)
}

/// Runs the Experiment controller until `shutdown` resolves. `pipelines` and `simulations` are
/// the events of the shared watches whose stores ([`Context::pipelines`],
/// [`Context::simulations`]) the reconciles read children from.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    pipelines: impl futures::Stream<Item = Arc<Pipeline>> + Send + 'static,
    simulations: impl futures::Stream<Item = Arc<Simulation>> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let exps = super::scoped_api::<Experiment>(&ctx.client, namespace);
    let controller = super::trimmed_controller(exps, &ctx.settings);
    // Every change the children's watches report settles what this process expected of them
    // (see `shared::Stores::created`): a child created and deleted before any pass looked is not
    // taken for existing until the expectation would expire.
    let (seen_pipelines, seen_simulations) = (ctx.clone(), ctx.clone());
    let pipelines = pipelines.inspect(move |p| seen_pipelines.pipelines.observed(p.as_ref()));
    let simulations =
        simulations.inspect(move |s| seen_simulations.simulations.observed(s.as_ref()));
    let pruner = tokio::spawn(prune_metrics(ctx.clone(), controller.store()));
    ctx.metrics.state.watch_experiments(controller.store());
    ctx.experiments.register(namespace, controller.store());
    controller
        .owns_shared_stream(pipelines)
        .owns_shared_stream(simulations)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "experiment controller event");
            }
        })
        .await;
    pruner.abort();
}

/// How soon an Experiment whose analysis found every turn taken asks again.
const ANALYSIS_TURN_RETRY: Duration = Duration::from_secs(1);

/// How often the series of deleted Experiments are removed from /metrics.
const METRICS_PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// Removes the /metrics series of Experiments that are no longer in the controller's cache
/// (deleted), every [`METRICS_PRUNE_INTERVAL`]. Deletions reach no reconcile, so this is where an
/// Experiment's per-object state ends.
async fn prune_metrics(ctx: Arc<Context>, store: Store<Experiment>) {
    // No wait for the cache's first list: series exist only for Experiments that were reconciled,
    // so were in the cache, and a relist swaps the cache's contents at once.
    let mut tick = tokio::time::interval(METRICS_PRUNE_INTERVAL);
    loop {
        tick.tick().await;
        let live: std::collections::BTreeSet<(String, String)> = store
            .state()
            .iter()
            .map(|e| (e.namespace().unwrap_or_default(), e.name_any()))
            .collect();
        ctx.metrics.retain_experiments(&live);
        ctx.analyses.retain(|key| {
            key.split_once('/')
                .is_some_and(|(ns, name)| live.contains(&(ns.to_string(), name.to_string())))
        });
        ctx.metrics
            .analyses_waiting
            .set(ctx.analyses.waiting() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_whose_pods_admission_refuses_is_a_broken_child() {
        let mut pipeline = Pipeline::new(
            "exp-baseline",
            serde_yaml::from_str("template: baseline").expect("spec"),
        );
        let mut status = crate::crd::pipeline::PipelineStatus {
            phase: Some(PipelinePhase::Pending),
            ..Default::default()
        };
        super::super::pod_admission::mark_refused(&mut status, "violates PodSecurity", None);
        pipeline.status = Some(status);
        assert_eq!(
            pipeline_child(Some(&pipeline)),
            Child::Broken(
                super::super::pod_admission::PODS_REFUSED.into(),
                "violates PodSecurity".into()
            )
        );
    }

    #[test]
    fn finished_experiments_expire_only_with_a_ttl() {
        let mut spec: ExperimentSpec = serde_yaml::from_str(
            "baseline: {pipeline: {template: baseline}}\ncandidate: {pipeline: {template: baseline}}",
        )
        .expect("parses");
        let finished: k8s_openapi::jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let at = |secs: i64| finished + k8s_openapi::jiff::SignedDuration::from_secs(secs);
        let mut status = ExperimentStatus {
            phase: Some(ExperimentPhase::Completed),
            completion_time: Some(Time(finished)),
            ..Default::default()
        };
        assert_eq!(expires_in(&spec, &status, at(5)), None, "no TTL: kept");
        spec.ttl_seconds_after_finished = Some(60);
        assert_eq!(
            expires_in(&spec, &status, at(20)),
            Some(Duration::from_secs(40))
        );
        assert_eq!(expires_in(&spec, &status, at(61)), Some(Duration::ZERO));
        status.phase = Some(ExperimentPhase::Running);
        assert_eq!(expires_in(&spec, &status, at(61)), None, "not finished");
    }

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn pipeline_owned_by(uid: &str, controller: Option<bool>) -> Pipeline {
        let mut p = Pipeline::new(
            "e-candidate",
            PipelineSpec::from_template(crate::crd::pipeline::PipelineTemplate::Baseline),
        );
        p.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "phoenix.io/v1alpha1".into(),
            kind: "Experiment".into(),
            name: "e".into(),
            uid: uid.into(),
            controller,
            block_owner_deletion: Some(true),
        }]);
        p
    }

    #[test]
    fn only_a_controller_reference_with_this_uid_makes_a_child() {
        let mut conflicts = vec![];
        let mine = owned(
            Some(Arc::new(pipeline_owned_by("u1", Some(true)))),
            "u1",
            &mut conflicts,
        );
        assert!(mine.is_some() && conflicts.is_empty());
        // Same name, an earlier Experiment of the same name (another UID): not ours.
        let theirs = owned(
            Some(Arc::new(pipeline_owned_by("u0", Some(true)))),
            "u1",
            &mut conflicts,
        );
        // Our UID, but not as controller: not ours either.
        let shared = owned(
            Some(Arc::new(pipeline_owned_by("u1", None))),
            "u1",
            &mut conflicts,
        );
        // A user's object without owners.
        let users = owned(
            Some(Arc::new(Pipeline::new(
                "e-candidate",
                PipelineSpec::from_template(crate::crd::pipeline::PipelineTemplate::Baseline),
            ))),
            "u1",
            &mut conflicts,
        );
        assert!(theirs.is_none() && shared.is_none() && users.is_none());
        assert_eq!(conflicts, vec!["Pipeline e-candidate"; 3]);
        assert!(owned::<Pipeline>(None, "u1", &mut conflicts).is_none());
        assert_eq!(conflicts.len(), 3, "a missing child is no conflict");
    }
}
