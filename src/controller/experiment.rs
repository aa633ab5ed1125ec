//! The Experiment controller: observes the children, lets [`experiment_phase::decide`] choose the
//! next step, performs its effects (create or release children, analyze in Prometheus) and writes
//! status and Events.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tracing::{info, instrument, warn};

use super::experiment_phase::{self, AnalysisOutcome, Child, Decision, Effect, Observed};
use super::{Context, apply, namespaced_api, write_status};
use crate::analysis::measure::{self, MeasureError, Window};
use crate::analysis::queries::VariantSelector;
use crate::analysis::verdict::{self, Outcome};
use crate::crd::experiment::{Experiment, ExperimentPhase, TopKSelection, Verdict};
use crate::crd::pipeline::PipelinePhase;
use crate::crd::simulation::SimulationPhase;
use crate::crd::{Pipeline, PipelineSpec, Simulation, conditions};
use crate::desired::children::{self, Side};
use crate::telemetry::{PhaseLabels, ResultLabels};
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
        Some(SimulationPhase::Running | SimulationPhase::Succeeded) => Child::Ready,
        _ => Child::Progressing,
    }
}

/// The Pipeline spec of one side: inline, or the referenced Pipeline's (None when it is missing).
async fn resolve(
    pipelines: &Api<Pipeline>,
    variant: &crate::crd::experiment::Variant,
) -> Result<Option<PipelineSpec>> {
    if let Some(inline) = &variant.pipeline {
        return Ok(Some(inline.clone()));
    }
    let Some(r) = &variant.pipeline_ref else {
        return Ok(None);
    };
    Ok(pipelines
        .get_opt(&r.name)
        .await
        .map_err(Error::kube("get referenced Pipeline"))?
        .map(|p| p.spec))
}

fn prometheus_url(ctx: &Context, exp: &Experiment) -> String {
    exp.spec
        .prometheus
        .as_ref()
        .map(|p| p.url.clone())
        .unwrap_or_else(|| ctx.settings.prometheus_url.clone())
}

async fn analyze(
    ctx: &Context,
    exp: &Experiment,
    specs: [Option<PipelineSpec>; 2],
    start: k8s_openapi::jiff::Timestamp,
    end: k8s_openapi::jiff::Timestamp,
) -> AnalysisOutcome {
    let url = prometheus_url(ctx, exp);
    let prom = match ctx.settings.prometheus.client(&url) {
        Ok(p) => p,
        Err(e) => {
            return AnalysisOutcome::Inaccessible {
                reason: e.reason().to_string(),
                message: e.to_string(),
            };
        }
    };
    let step = exp.spec.analysis.interval.as_secs_f64();
    // Each step looks back over the slower variant's two collection intervals.
    let collection = specs
        .iter()
        .flatten()
        .map(|s| s.collection_interval.as_secs_f64())
        .fold(0.0, f64::max);
    let window = Window::new(start.as_second(), end.as_second(), step, collection);
    let label = children::experiment_label(&exp.namespace().unwrap_or_default(), &exp.name_any());
    let sel = |side: Side| VariantSelector {
        experiment: label.clone(),
        variant: side.as_str().to_string(),
    };
    let critical = |spec: Option<&PipelineSpec>| {
        spec.map(|s| s.critical_processes.clone())
            .unwrap_or_default()
    };
    let critical_regexes = {
        let mut c = critical(specs[0].as_ref());
        c.extend(critical(specs[1].as_ref()));
        c.sort();
        c.dedup();
        c
    };
    let measured = futures::future::try_join(
        measure::measure(&prom, &sel(Side::Baseline), &window, &critical_regexes),
        measure::measure(&prom, &sel(Side::Candidate), &window, &critical_regexes),
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
            let [_, candidate_spec] = specs;
            let recommendation = (v == Verdict::Pass).then_some(candidate_spec).flatten();
            AnalysisOutcome::Judged {
                results: Box::new(evaluation.results),
                verdict: v,
                recommendation: recommendation.map(Box::new),
            }
        }
    }
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
    for (side, current, variant) in [
        (Side::Baseline, existing[0], &exp.spec.baseline),
        (Side::Candidate, existing[1], &exp.spec.candidate),
    ] {
        if current.is_some() {
            continue; // Created once; never re-applied, so a referenced Pipeline's later edits don't leak in.
        }
        let Some(resolved) = resolve(pipelines, variant).await? else {
            continue;
        };
        let child = children::pipeline(
            &name,
            &namespace,
            &owner,
            &exp.spec,
            side,
            &resolved,
            remote_write.as_deref(),
        );
        apply(pipelines, &child, "apply child Pipeline").await?;
    }
    if sim.is_none()
        && let Some(child) = children::simulation(&name, &namespace, &owner, &exp.spec)
    {
        let sims: Api<Simulation> = Api::namespaced(ctx.client.clone(), &namespace);
        apply(&sims, &child, "apply child Simulation").await?;
    }
    Ok(())
}

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
        ignore_not_found(
            pipelines
                .delete(&p.name_any(), &DeleteParams::background())
                .await
                .map(|_| ()),
        )?;
    }
    if let Some(s) = sim {
        let sims: Api<Simulation> = Api::namespaced(ctx.client.clone(), &namespace);
        ignore_not_found(
            sims.delete(&s.name_any(), &DeleteParams::background())
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
    let names = match ctx.settings.prometheus.client(&url) {
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
        let child = children::pipeline(
            &exp.name_any(),
            &exp.namespace().unwrap_or_default(),
            &owner,
            &exp.spec,
            Side::Candidate,
            &spec,
            remote_write.as_deref(),
        );
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
    })
}

fn ignore_not_found(r: std::result::Result<(), kube::Error>) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::Kube {
            step: "release children",
            source: e,
        }),
    }
}

fn record_metrics(ctx: &Context, exp: &Experiment, d: &Decision) {
    let namespace = exp.namespace().unwrap_or_default();
    let name = exp.name_any();
    for phase in [
        "Pending",
        "Deploying",
        "Running",
        "Analyzing",
        "Completed",
        "Failed",
        "Aborted",
    ] {
        let current = d
            .status
            .phase
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|| "Pending".into());
        let labels = PhaseLabels {
            namespace: namespace.clone(),
            experiment: name.clone(),
            phase: phase.to_string(),
        };
        ctx.metrics
            .experiment_phase
            .get_or_create(&labels)
            .set(i64::from(current == phase));
    }
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
    let sims: Api<Simulation> = Api::namespaced(ctx.client.clone(), &namespace);
    let stored = exp.status.clone().unwrap_or_default();

    // Observe.
    let baseline = pipelines
        .get_opt(&children::pipeline_name(&name, Side::Baseline))
        .await
        .map_err(Error::kube("get baseline Pipeline"))?;
    let candidate = pipelines
        .get_opt(&children::pipeline_name(&name, Side::Candidate))
        .await
        .map_err(Error::kube("get candidate Pipeline"))?;
    let sim = sims
        .get_opt(&children::simulation_name(&name))
        .await
        .map_err(Error::kube("get Simulation"))?;
    let mut missing_refs = vec![];
    if stored.phase.is_none_or(|p| p == ExperimentPhase::Pending) {
        for variant in [&exp.spec.baseline, &exp.spec.candidate] {
            if let Some(r) = &variant.pipeline_ref
                && pipelines
                    .get_opt(&r.name)
                    .await
                    .map_err(Error::kube("get referenced Pipeline"))?
                    .is_none()
            {
                missing_refs.push(r.name.clone());
            }
        }
    }
    let observed = Observed {
        now: k8s_openapi::jiff::Timestamp::now(),
        generation: exp.metadata.generation,
        baseline: pipeline_child(baseline.as_ref()),
        candidate: pipeline_child(candidate.as_ref()),
        simulation: exp
            .spec
            .simulation
            .as_ref()
            .map(|_| simulation_child(sim.as_ref())),
        missing_refs,
        topk_refresh: candidate
            .as_ref()
            .filter(|c| c.spec.template == crate::crd::pipeline::PipelineTemplate::Topk)
            .and_then(|c| c.spec.topk.as_ref())
            .map(|t| t.refresh_interval.get()),
    };

    // Decide (pure), then act.
    let limits = experiment_phase::Limits {
        deploy_timeout: Duration::from_secs(ctx.settings.deploy_timeout_seconds),
        prometheus_budget: ctx.settings.analysis_retries,
    };
    let mut decision = experiment_phase::decide(&exp.spec, &stored, &observed, &limits);
    if let Some(Effect::Analyze { start, end }) = decision
        .effects
        .iter()
        .find(|e| matches!(e, Effect::Analyze { .. }))
        .cloned()
    {
        let specs = [
            baseline
                .as_ref()
                .map(|p| p.spec.clone())
                .or_else(|| exp.spec.baseline.pipeline.clone()),
            candidate
                .as_ref()
                .map(|p| p.spec.clone())
                .or_else(|| exp.spec.candidate.pipeline.clone()),
        ];
        let outcome = analyze(&ctx, &exp, specs, start, end).await;
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
    for effect in &decision.effects {
        match effect {
            Effect::EnsureChildren => {
                ensure_children(
                    &ctx,
                    &exp,
                    &pipelines,
                    [baseline.as_ref(), candidate.as_ref()],
                    sim.as_ref(),
                )
                .await?
            }
            Effect::ReleaseChildren => {
                release_children(
                    &ctx,
                    &exp,
                    [baseline.as_ref(), candidate.as_ref()],
                    sim.as_ref(),
                )
                .await?
            }
            Effect::Analyze { .. } | Effect::RefreshTopK { .. } => {}
        }
    }
    // Status before Events: a failed status write is retried and must not duplicate Events.
    write_status(&api, &exp, exp.status.as_ref(), &decision.status).await?;
    for note in &decision.events {
        let type_ = if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.event(
            exp.as_ref(),
            type_,
            &note.reason,
            "Reconcile",
            note.message.clone(),
        )
        .await;
        info!(reason = %note.reason, message = %note.message, "experiment transition");
    }
    record_metrics(&ctx, &exp, &decision);
    Ok(match decision.requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

fn error_policy(_exp: Arc<Experiment>, error: &Error, ctx: Arc<Context>) -> Action {
    super::retry_after_error(&ctx, NAME, error)
}

/// Runs the Experiment controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (exps, pipelines, sims) = match namespace {
        Some(ns) => (
            Api::<Experiment>::namespaced(client.clone(), ns),
            Api::<Pipeline>::namespaced(client.clone(), ns),
            Api::<Simulation>::namespaced(client, ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client),
        ),
    };
    let children = watcher::Config::default().labels("app.kubernetes.io/managed-by=phoenix");
    Controller::new(exps, watcher::Config::default())
        .owns(pipelines, children.clone())
        .owns(sims, children)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "experiment controller event");
            }
        })
        .await;
}
