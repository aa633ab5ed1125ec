//! The Simulation controller: one simulator Job per Simulation (one pod per target node), status
//! followed from the Job, and `status.activeProcesses` from what the simulators report (their
//! `phoenix_simulator_active_processes`, read from the operator's Prometheus).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::core::Selector;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tracing::instrument;

use super::slim::Slim;
use super::{Context, create_unless_exists, namespaced_api, now, write_status};
use crate::crd::conditions::{self, Condition, ConditionStatus, Progress};
use crate::crd::simulation::{Simulation, SimulationPhase, SimulationStatus};
use crate::desired::job::{self, JobParams};
use crate::desired::labels::{self, Ownership};
use crate::{Error, Result};

/// The controller's name in metrics and logs.
pub const NAME: &str = "simulation";

/// How often a running Simulation's `status.activeProcesses` is read again.
pub const ACTIVE_PROCESSES_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// How long one read of `status.activeProcesses` may take before the last known figure stays.
pub const ACTIVE_PROCESSES_QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `status.activeProcesses` for a Simulation in `phase`. Pure. While it runs: the simulators'
/// own figure (`reported`: `Ok(None)` when Prometheus holds none, e.g. nothing scrapes the pods),
/// the last known one when Prometheus could not answer. Finished: 0 (its Job's pods are done).
/// Pending: unknown.
pub fn active_processes(
    phase: Option<SimulationPhase>,
    reported: Result<Option<f64>, ()>,
    previous: Option<i64>,
) -> Option<i64> {
    match phase {
        Some(SimulationPhase::Running) => match reported {
            // A gauge of processes: a whole, non-negative number (the cast saturates).
            Ok(figure) => figure.map(|v| v.round().max(0.0) as i64),
            Err(()) => previous,
        },
        Some(SimulationPhase::Succeeded | SimulationPhase::Failed) => Some(0),
        Some(SimulationPhase::Pending) | None => None,
    }
}

/// What the simulators of Job `job` in `namespace` report alive now, from the operator's
/// Prometheus (`--prometheus-url`, with its access settings); `Err` when it could not answer.
async fn reported_active_processes(
    ctx: &Context,
    namespace: &str,
    job: &str,
) -> Result<Option<f64>, ()> {
    let prom = ctx
        .prometheus
        .client(&ctx.settings.prometheus_url)
        .map_err(|e| tracing::debug!(error = %e, "no Prometheus client for activeProcesses"))?;
    let query = crate::analysis::queries::simulator_active_processes(namespace, job);
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    // An informational figure: a slow Prometheus must not hold up following the Job.
    let answer = tokio::time::timeout(
        ACTIVE_PROCESSES_QUERY_TIMEOUT,
        crate::analysis::measure::instant_optional(&prom, &query, now),
    )
    .await
    .map_err(|_| tracing::debug!("activeProcesses: Prometheus did not answer in time"))?;
    answer.map_err(|e| tracing::debug!(error = %e, "activeProcesses not read from Prometheus"))
}

/// The Simulation's status as read from its Job. Pure.
pub fn status_from_job(
    sim: &Simulation,
    job: Option<&Job>,
    previous: &SimulationStatus,
) -> SimulationStatus {
    let generation = sim.metadata.generation;
    let job_status = job.and_then(|j| j.status.as_ref());
    let finished = |type_: &str| {
        job_status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == "True"))
    };
    let (phase, reason, message) = if let Some(c) = finished("Complete") {
        let _ = c;
        (
            SimulationPhase::Succeeded,
            "Completed".to_string(),
            "the load ran for its whole duration".to_string(),
        )
    } else if let Some(c) = finished("Failed") {
        let reason = c.reason.clone().unwrap_or_else(|| "JobFailed".to_string());
        let message = c
            .message
            .clone()
            .unwrap_or_else(|| "the simulator Job failed".to_string());
        (SimulationPhase::Failed, reason, message)
    } else if job_status.and_then(|s| s.ready).unwrap_or(0) > 0 {
        // Ready pods, not merely active ones: an unscheduled or starting pod is no load yet.
        let ready = job_status.and_then(|s| s.ready).unwrap_or(0);
        (
            SimulationPhase::Running,
            "Running".to_string(),
            format!("{ready} simulator pod(s) running"),
        )
    } else {
        (
            SimulationPhase::Pending,
            "Starting".to_string(),
            "waiting for simulator pods to start".to_string(),
        )
    };
    let mut conds = previous.conditions.clone();
    let t = now();
    let ready = if matches!(phase, SimulationPhase::Running | SimulationPhase::Succeeded) {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    conditions::set_condition(
        &mut conds,
        Condition::new(
            "Ready",
            ready,
            &reason,
            message.clone(),
            generation,
            t.clone(),
        ),
    );
    let progress = match phase {
        SimulationPhase::Pending => Progress::InProgress,
        SimulationPhase::Failed => Progress::Stalled,
        SimulationPhase::Running | SimulationPhase::Succeeded => Progress::Current,
    };
    conditions::set_progress(
        &mut conds,
        progress,
        &reason,
        &message,
        generation,
        t.clone(),
    );
    let complete = match phase {
        SimulationPhase::Succeeded | SimulationPhase::Failed => ConditionStatus::True,
        _ => ConditionStatus::False,
    };
    conditions::set_condition(
        &mut conds,
        Condition::new(
            "Complete",
            complete,
            &reason,
            message.clone(),
            generation,
            t,
        ),
    );
    SimulationStatus {
        phase: Some(phase),
        observed_generation: generation,
        conditions: conds,
        start_time: job_status.and_then(|s| s.start_time.clone()),
        completion_time: job_status
            .and_then(|s| s.completion_time.clone())
            .or_else(|| {
                matches!(phase, SimulationPhase::Failed)
                    .then(|| previous.completion_time.clone().unwrap_or_else(now))
            }),
        active_processes: previous.active_processes,
        job: job.map(|j| j.name_any()),
        message: Some(message),
    }
}

/// The status of a Simulation that can never run as written (its node selector is invalid, or
/// the apiserver refused its Job for good: 400/422): `Failed`,
/// reason `Invalid`, with the apiserver's message. Pure.
pub fn refused_status(
    sim: &Simulation,
    message: &str,
    previous: &SimulationStatus,
) -> SimulationStatus {
    let generation = sim.metadata.generation;
    let mut conds = previous.conditions.clone();
    let t = now();
    conditions::set_progress(
        &mut conds,
        Progress::Stalled,
        "Invalid",
        message,
        generation,
        t.clone(),
    );
    for (type_, status) in [
        ("Ready", ConditionStatus::False),
        ("Complete", ConditionStatus::True),
    ] {
        conditions::set_condition(
            &mut conds,
            Condition::new(type_, status, "Invalid", message, generation, t.clone()),
        );
    }
    SimulationStatus {
        phase: Some(SimulationPhase::Failed),
        observed_generation: generation,
        conditions: conds,
        completion_time: Some(previous.completion_time.clone().unwrap_or(t)),
        message: Some(format!("the simulator Job was refused: {message}")),
        ..previous.clone()
    }
}

#[instrument(skip_all, fields(simulation = %sim.name_any(), namespace = sim.namespace().unwrap_or_default()))]
async fn reconcile(sim: Arc<Simulation>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(NAME);
    let name = sim.name_any();
    let namespace = sim
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<Simulation> = namespaced_api(&ctx.client, sim.as_ref())?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let previous = sim.status.clone().unwrap_or_default();

    // A run is one-shot: once its Job exists, the Job is the truth; spec edits do not restart it.
    let finished = matches!(
        previous.phase,
        Some(SimulationPhase::Succeeded | SimulationPhase::Failed)
    );
    let checked =
        crate::crd::validation::check_tolerations("spec.tolerations", &sim.spec.tolerations)
            .and_then(|()| labels::node_selector(&sim.spec.node_selector));
    // The Job as the controller's cache holds it (a slim copy: see `job_cache`); one the cache
    // has not heard of yet is found by its create (409, below).
    if !ctx.jobs.ready(&namespace).await {
        return Err(Error::CachesStopped);
    }
    let mut job = ctx
        .jobs
        .get(&namespace, &labels::job_name(&name))
        .map(|j| j.full());
    if job.is_none() && !finished {
        let selector = match checked {
            Ok(selector) => selector,
            Err(message) => {
                let status = refused_status(&sim, &message, &previous);
                ctx.event(
                    sim.as_ref(),
                    EventType::Warning,
                    "Invalid",
                    "Validate",
                    message,
                )
                .await;
                write_status(&api, &sim, sim.status.as_ref(), &status).await?;
                return Ok(Action::await_change());
            }
        };
        let nodes = count_target_nodes(&ctx, &selector).await?;
        let params = JobParams {
            name: &name,
            namespace: &namespace,
            owner: sim
                .controller_owner_ref(&())
                .ok_or(Error::MissingField("metadata.uid"))?,
            ownership: Ownership::from_labels(sim.metadata.labels.as_ref()),
            image: &ctx.settings.simulator_image,
            nodes,
        };
        // Created, never applied over: a Job the cache has not heard of yet (409) is read as it
        // is. Its pod template and completions are immutable, so applying today's spec over it
        // could be refused for good.
        match create_unless_exists(&jobs, &job::job(&sim.spec, &params), "create Job").await {
            Ok(Some(created)) => {
                ctx.event(
                    sim.as_ref(),
                    EventType::Normal,
                    "LoadStarted",
                    "Apply",
                    format!(
                        "simulator Job {} created for {nodes} node(s)",
                        created.name_any()
                    ),
                )
                .await;
                job = Some(created);
            }
            Ok(None) => {
                job = jobs
                    .get_opt(&labels::job_name(&name))
                    .await
                    .map_err(Error::kube("get Job"))?;
            }
            Err(e) => {
                let Some(message) = e.refused_permanently() else {
                    return Err(e);
                };
                // Failed is terminal: the refused Job is never retried.
                let status = refused_status(&sim, &message, &previous);
                ctx.event(
                    sim.as_ref(),
                    EventType::Warning,
                    "Invalid",
                    "Apply",
                    message,
                )
                .await;
                write_status(&api, &sim, sim.status.as_ref(), &status).await?;
                return Ok(Action::await_change());
            }
        }
    }

    let mut status = status_from_job(&sim, job.as_ref(), &previous);
    let running = status.phase == Some(SimulationPhase::Running);
    let reported = match (&status.job, running) {
        (Some(job), true) => reported_active_processes(&ctx, &namespace, job).await,
        _ => Ok(None),
    };
    status.active_processes = active_processes(status.phase, reported, previous.active_processes);
    if status.phase != previous.phase {
        let (type_, reason) = match status.phase {
            Some(SimulationPhase::Failed) => (EventType::Warning, "LoadFailed"),
            Some(SimulationPhase::Succeeded) => (EventType::Normal, "LoadCompleted"),
            _ => (EventType::Normal, "LoadRunning"),
        };
        ctx.event(
            sim.as_ref(),
            type_,
            reason,
            "Observe",
            status.message.clone().unwrap_or_default(),
        )
        .await;
    }
    write_status(&api, &sim, sim.status.as_ref(), &status).await?;
    // A running load's figure changes as its simulators churn: look again on a timer.
    Ok(if running {
        Action::requeue(ACTIVE_PROCESSES_REFRESH)
    } else {
        Action::await_change()
    })
}

/// The schedulable nodes `selector` matches (at least 1: the Job's parallelism), as the
/// apiserver's watch cache holds them. A consistent LIST would wait until that cache has caught up
/// with etcd's latest revision, which every write to any other kind moves on: on a busy apiserver
/// tens of milliseconds on the way to the Job. Nodes come and go on a scale of minutes; a node
/// joined within the cache's lag (milliseconds) gets no simulator pod, like one joined just after.
async fn count_target_nodes(ctx: &Context, selector: &Selector) -> Result<i32> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let list = nodes
        .list(&ListParams::default().match_any().labels_from(selector))
        .await
        .map_err(Error::kube("list Nodes"))?;
    let schedulable = list
        .items
        .iter()
        .filter(|n| {
            !n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
        })
        .count();
    Ok(i32::try_from(schedulable).unwrap_or(i32::MAX).max(1))
}

fn error_policy(_sim: Arc<Simulation>, error: &Error, ctx: Arc<Context>) -> Action {
    super::retry_after_error(&ctx, NAME, error)
}

/// Runs the Simulation controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    store: Store<Simulation>,
    applied: impl futures::Stream<Item = Arc<Simulation>> + Send + 'static,
    jobs: futures::channel::mpsc::UnboundedReceiver<Arc<Slim<Job>>>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    super::shared_controller(store, applied, &ctx.settings)
        .owns_shared_stream(jobs)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "simulation controller event");
            }
        })
        .await;
}

/// Starts the cache of the simulator Jobs in `namespace` (`None`: all), trimmed, for the
/// reconciles to read instead of GETs ([`Context::jobs`]); returns its changes for [`run`] and
/// the future that drives it.
pub fn job_cache(
    ctx: &Context,
    namespace: Option<&str>,
) -> (
    futures::channel::mpsc::UnboundedReceiver<Arc<Slim<Job>>>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let jobs = super::scoped_api::<Slim<Job>>(&ctx.client, namespace);
    let (cache, driver) = super::shared::owned_cache(
        watcher::watcher(
            jobs,
            super::owned_children(
                "app.kubernetes.io/managed-by=phoenix,app.kubernetes.io/name=phoenix-simulator",
            ),
        ),
        super::slim::trim::<Job>,
    );
    ctx.jobs
        .register_synced(namespace, cache.store, cache.synced);
    (cache.changes, driver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobStatus;

    fn sim() -> Simulation {
        Simulation::new(
            "load",
            serde_yaml::from_str("profile: spike").expect("parses"),
        )
    }

    fn job(active: i32, ready: i32) -> Job {
        Job {
            status: Some(JobStatus {
                active: Some(active),
                ready: Some(ready),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn active_processes_come_from_the_simulators_while_the_load_runs() {
        let running = Some(SimulationPhase::Running);
        assert_eq!(active_processes(running, Ok(Some(41.6)), Some(7)), Some(42));
        assert_eq!(active_processes(running, Ok(Some(-1.0)), None), Some(0));
        // Prometheus holds no figure (nothing scrapes the pods): unknown, not a stale number.
        assert_eq!(active_processes(running, Ok(None), Some(7)), None);
        // Prometheus did not answer: the last known figure stays.
        assert_eq!(active_processes(running, Err(()), Some(7)), Some(7));
        for done in [SimulationPhase::Succeeded, SimulationPhase::Failed] {
            assert_eq!(active_processes(Some(done), Ok(None), Some(7)), Some(0));
        }
        assert_eq!(
            active_processes(Some(SimulationPhase::Pending), Ok(None), Some(7)),
            None
        );
    }

    #[test]
    fn the_load_runs_only_once_a_simulator_pod_is_ready() {
        let previous = SimulationStatus::default();
        // Pods exist (active) but none runs yet: unscheduled or starting is not load.
        let s = status_from_job(&sim(), Some(&job(3, 0)), &previous);
        assert_eq!(s.phase, Some(SimulationPhase::Pending));
        let s = status_from_job(&sim(), Some(&job(3, 2)), &previous);
        assert_eq!(s.phase, Some(SimulationPhase::Running));
    }
}
