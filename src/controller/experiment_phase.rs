//! The Experiment lifecycle as a pure function: given the spec, the stored status, what the
//! children report and the time, decide the next status, what to do, and when to look again.
//! Every timer is computed from timestamps in status, so a restarted operator resumes any phase.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::PipelineSpec;
use crate::crd::conditions::{self, Condition, ConditionStatus, Progress};
use crate::crd::duration::SpecDuration;
use crate::crd::experiment::{
    AnalysisInputs, ExperimentPhase, ExperimentSpec, ExperimentStatus, TopKSelection,
};

/// How long children may take to become ready before the Experiment fails.
pub const DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);
/// Consecutive failed Prometheus attempts before the Experiment fails `PrometheusUnavailable`.
pub const PROMETHEUS_BUDGET: u32 = 8;
/// First retry delay after a failed Prometheus attempt; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Re-check interval while waiting for a referenced Pipeline to exist.
pub const MISSING_REF_RECHECK: Duration = Duration::from_secs(30);

/// What a child reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Child {
    Missing,
    Progressing,
    Ready,
    /// Ran to its end (a load whose duration is over): no longer running.
    Finished,
    /// Can never become ready (invalid config, failed load): the reason and message.
    Broken(String, String),
}

/// Operator-wide bounds on a run (flags `--deploy-timeout-seconds`, `--analysis-retries`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub deploy_timeout: Duration,
    pub prometheus_budget: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deploy_timeout: DEPLOY_TIMEOUT,
            prometheus_budget: PROMETHEUS_BUDGET,
        }
    }
}

/// Everything the decision needs besides spec and status.
#[derive(Clone, Debug)]
pub struct Observed {
    pub now: Timestamp,
    pub generation: Option<i64>,
    pub baseline: Child,
    pub candidate: Child,
    /// `None` when the spec has no simulation.
    pub simulation: Option<Child>,
    /// Names of referenced Pipelines that do not exist.
    pub missing_refs: Vec<String>,
    /// Why the operator's settings refuse the spec's Prometheus URL, if they do.
    pub prometheus_refused: Option<String>,
    /// A `topk` candidate's refresh interval (its top K is re-chosen from the baseline's data).
    pub topk_refresh: Option<Duration>,
    /// Objects that carry a child's name but are not controlled by this Experiment, e.g.
    /// `Pipeline exp-candidate`. They are never read, changed or deleted.
    pub conflicts: Vec<String>,
    /// What the analysis would read now; `None` while either child Pipeline is missing.
    pub basis: Option<AnalysisBasis>,
    /// What creating the children overrides in the variants' own placement (see
    /// [`crate::desired::children::placement_overrides`]); known while `Pending`.
    pub placement_overrides: Vec<String>,
}

/// The live inputs of the analysis, read from the Experiment's own children and settings. They
/// are copied into [`AnalysisInputs`] when the run enters `Analyzing`.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalysisBasis {
    /// The Prometheus the analysis queries (the Experiment's or the operator's).
    pub prometheus_url: String,
    /// The `phoenix_experiment` label value of both variants' series.
    pub experiment_label: String,
    /// The critical-process patterns of both child Pipelines (union, sorted).
    pub critical_processes: Vec<String>,
    /// The slower child Pipeline's collection interval, seconds.
    pub collection_interval_seconds: f64,
    /// The candidate child's spec as it runs.
    pub candidate: PipelineSpec,
}

/// Side effects the driver performs. The driver writes status first (with optimistic
/// concurrency) and performs `EnsureChildren` / `ReleaseChildren` only once it is stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Create whichever children are missing (never re-apply existing ones).
    EnsureChildren,
    /// Delete the children this Experiment controls: the run is over, results stay in status.
    ReleaseChildren,
    /// Re-choose a `topk` candidate's top K from the baseline's data since `since`.
    RefreshTopK { since: Timestamp },
    /// Measure in Prometheus with exactly these stored inputs and finish (see [`finish`]).
    Analyze(Box<AnalysisInputs>),
}

/// An Event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// The decision of one reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: ExperimentStatus,
    pub effects: Vec<Effect>,
    pub events: Vec<Note>,
    pub requeue: Option<Duration>,
}

fn secs(spec_duration: &SpecDuration) -> SignedDuration {
    SignedDuration::try_from(spec_duration.get()).unwrap_or(SignedDuration::ZERO)
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    let left = at.duration_since(now);
    // At least one second, so a timer that is due now is re-checked promptly, not in a hot loop.
    Duration::try_from(left)
        .unwrap_or_default()
        .max(Duration::from_secs(1))
}

fn ts(t: &Option<Time>) -> Option<Timestamp> {
    t.as_ref().map(|t| t.0)
}

fn set(
    status: &mut ExperimentStatus,
    type_: &str,
    s: ConditionStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    conditions::set_condition(
        &mut status.conditions,
        Condition::new(type_, s, reason, message, generation, Time(now)),
    );
}

/// Moves `status` into `phase` with `reason`/`message`, keeping conditions kstatus-style.
fn enter(
    status: &mut ExperimentStatus,
    phase: ExperimentPhase,
    reason: &str,
    message: String,
    obs: &Observed,
) -> Note {
    status.phase = Some(phase);
    status.message = Some(message.clone());
    let ready = match phase {
        ExperimentPhase::Completed => ConditionStatus::True,
        _ => ConditionStatus::False,
    };
    set(
        status,
        "Ready",
        ready,
        reason,
        &message,
        obs.generation,
        obs.now,
    );
    let progress = match phase {
        ExperimentPhase::Completed | ExperimentPhase::Aborted => Progress::Current,
        ExperimentPhase::Failed => Progress::Stalled,
        _ => Progress::InProgress,
    };
    conditions::set_progress(
        &mut status.conditions,
        progress,
        reason,
        &message,
        obs.generation,
        Time(obs.now),
    );
    if phase.is_terminal() {
        status.completion_time = Some(Time(obs.now));
        set(
            status,
            "Completed",
            ConditionStatus::True,
            reason,
            &message,
            obs.generation,
            obs.now,
        );
    }
    Note {
        warning: matches!(phase, ExperimentPhase::Failed),
        reason: reason.to_string(),
        message,
    }
}

/// The analysis window: from the end of warmup to the end of the run. Fixed by status timestamps.
pub fn window(spec: &ExperimentSpec, running_since: Timestamp) -> (Timestamp, Timestamp) {
    let start = running_since
        .checked_add(secs(&spec.warmup))
        .unwrap_or(running_since);
    let end = running_since
        .checked_add(secs(&spec.duration))
        .unwrap_or(running_since);
    (start, end)
}

fn broken(obs: &Observed) -> Option<(String, String)> {
    let named = [
        ("baseline", Some(&obs.baseline)),
        ("candidate", Some(&obs.candidate)),
        ("simulation", obs.simulation.as_ref()),
    ];
    named.into_iter().find_map(|(which, child)| match child {
        Some(Child::Broken(reason, message)) => Some((
            format!("{}{reason}", capitalize(which)),
            format!("{which}: {message}"),
        )),
        _ => None,
    })
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// Decides the next step of an Experiment. Pure: the same inputs give the same decision.
///
/// | phase | next |
/// |---|---|
/// | any, `spec.abort` | `Aborted`, children released ([`aborted`]) |
/// | any, a child's name taken by another object | `Failed` `NameConflict`, the object untouched |
/// | `Pending` | `Deploying` once every `pipelineRef` exists ([`pending`]) |
/// | `Deploying` | `Running` when both collectors are ready and the load runs; `Failed` on a broken child, a finished load or the deploy timeout ([`deploying`]) |
/// | `Running` | `Analyzing` at the end of the run, inputs snapshotted; top-K refreshes during warmup, frozen at the window start ([`running`]) |
/// | `Analyzing` | an analysis attempt over the snapshot, judged by [`finish`] ([`analyzing`]) |
/// | terminal | nothing but releasing the children |
pub fn decide(
    spec: &ExperimentSpec,
    stored: &ExperimentStatus,
    obs: &Observed,
    limits: &Limits,
) -> Decision {
    let mut status = stored.clone();
    status.observed_generation = obs.generation;
    let d = Decision {
        status,
        effects: vec![],
        events: vec![],
        requeue: None,
    };
    let phase = stored.phase.unwrap_or(ExperimentPhase::Pending);
    if phase.is_terminal() {
        return release(d);
    }
    if spec.abort {
        return aborted(d, obs);
    }
    if !obs.conflicts.is_empty() {
        let message = format!(
            "{} already exist(s) and is not controlled by this Experiment; left untouched. Rename the Experiment or remove the object",
            obs.conflicts.join(", ")
        );
        return failed(d, "NameConflict", message, obs);
    }
    match phase {
        ExperimentPhase::Pending => pending(d, obs, limits),
        ExperimentPhase::Deploying => deploying(d, spec, stored, obs, limits),
        ExperimentPhase::Running => running(d, spec, stored, obs),
        ExperimentPhase::Analyzing => analyzing(d, stored, obs),
        ExperimentPhase::Completed | ExperimentPhase::Failed | ExperimentPhase::Aborted => d,
    }
}

/// A terminal Experiment: its children go, nothing else changes.
fn release(mut d: Decision) -> Decision {
    d.effects.push(Effect::ReleaseChildren);
    d
}

/// `spec.abort` is set: `Aborted`, children released.
fn aborted(mut d: Decision, obs: &Observed) -> Decision {
    let note = enter(
        &mut d.status,
        ExperimentPhase::Aborted,
        "Aborted",
        "aborted by spec.abort; collectors and load released".into(),
        obs,
    );
    d.events.push(note);
    release(d)
}

/// `Failed` with `reason`; children released.
fn failed(mut d: Decision, reason: &str, message: String, obs: &Observed) -> Decision {
    let note = enter(&mut d.status, ExperimentPhase::Failed, reason, message, obs);
    d.events.push(note);
    d.effects = vec![Effect::ReleaseChildren];
    d
}

/// `Pending`: refuse a Prometheus the operator does not allow, wait for referenced Pipelines,
/// then start deploying.
fn pending(mut d: Decision, obs: &Observed, limits: &Limits) -> Decision {
    if let Some(message) = &obs.prometheus_refused {
        return failed(d, "PrometheusNotAllowed", message.clone(), obs);
    }
    if !obs.missing_refs.is_empty() {
        let message = format!("waiting for Pipeline(s) {}", obs.missing_refs.join(", "));
        if d.status.message.as_deref() != Some(message.as_str()) {
            d.events.push(Note {
                warning: true,
                reason: "PipelineRefNotFound".into(),
                message: message.clone(),
            });
        }
        d.status.phase = Some(ExperimentPhase::Pending);
        d.status.message = Some(message.clone());
        set(
            &mut d.status,
            "Ready",
            ConditionStatus::False,
            "PipelineRefNotFound",
            &message,
            obs.generation,
            obs.now,
        );
        conditions::set_progress(
            &mut d.status.conditions,
            Progress::InProgress,
            "PipelineRefNotFound",
            &message,
            obs.generation,
            Time(obs.now),
        );
        d.requeue = Some(MISSING_REF_RECHECK);
        return d;
    }
    d.status.start_time = Some(Time(obs.now));
    if !obs.placement_overrides.is_empty() {
        d.status.placement_overrides = obs.placement_overrides.clone();
        d.events.push(Note {
            warning: true,
            reason: "PlacementOverridden".into(),
            message: format!(
                "both variants run as DaemonSets on spec.targets: {}",
                obs.placement_overrides.join("; ")
            ),
        });
    }
    let note = enter(
        &mut d.status,
        ExperimentPhase::Deploying,
        "Deploying",
        "creating baseline and candidate collectors and the load".into(),
        obs,
    );
    d.events.push(note);
    d.effects.push(Effect::EnsureChildren);
    d.requeue = Some(limits.deploy_timeout);
    d
}

/// `Deploying`: the clock starts when both collectors are ready and the load (if any) runs; a
/// broken child, a load that already finished, or the deploy timeout fails the run.
fn deploying(
    mut d: Decision,
    spec: &ExperimentSpec,
    stored: &ExperimentStatus,
    obs: &Observed,
    limits: &Limits,
) -> Decision {
    d.effects.push(Effect::EnsureChildren);
    let started = ts(&stored.start_time).unwrap_or(obs.now);
    let deadline = started
        .checked_add(SignedDuration::try_from(limits.deploy_timeout).unwrap_or_default())
        .unwrap_or(started);
    if let Some((reason, message)) = broken(obs) {
        return failed(d, &reason, message, obs);
    }
    if obs.simulation == Some(Child::Finished) {
        return load_ended_early(d, obs);
    }
    let load_running = obs.simulation.as_ref().is_none_or(|s| *s == Child::Ready);
    if obs.baseline == Child::Ready && obs.candidate == Child::Ready && load_running {
        d.status.running_since = Some(Time(obs.now));
        set(
            &mut d.status,
            "Deployed",
            ConditionStatus::True,
            "CollectorsReady",
            "baseline and candidate collectors are ready and the load runs",
            obs.generation,
            obs.now,
        );
        let note = enter(
            &mut d.status,
            ExperimentPhase::Running,
            "Running",
            format!(
                "both collectors ready and the load running; measuring for {} (warmup {})",
                spec.duration, spec.warmup
            ),
            obs,
        );
        d.events.push(note);
        d.requeue = Some(until(obs.now, window(spec, obs.now).1));
        return d;
    }
    if obs.now >= deadline {
        let message = format!(
            "children not ready within {}s (baseline {:?}, candidate {:?}, load {:?})",
            limits.deploy_timeout.as_secs(),
            obs.baseline,
            obs.candidate,
            obs.simulation
        );
        return failed(d, "DeployTimeout", message, obs);
    }
    d.requeue = Some(until(obs.now, deadline));
    d
}

/// The load stopped before the analysis window ended: the window would measure idle nodes.
fn load_ended_early(d: Decision, obs: &Observed) -> Decision {
    failed(
        d,
        "LoadEndedEarly",
        "the simulation finished before the end of the analysis window".into(),
        obs,
    )
}

/// `Running`: at the end of the run the analysis inputs are snapshotted and the run enters
/// `Analyzing` (analysis happens in the next pass, from the stored snapshot only). A `topk`
/// candidate's selection is refreshed on its interval during warmup and frozen at the window start.
fn running(
    mut d: Decision,
    spec: &ExperimentSpec,
    stored: &ExperimentStatus,
    obs: &Observed,
) -> Decision {
    d.effects.push(Effect::EnsureChildren);
    let since = ts(&stored.running_since).unwrap_or(obs.now);
    let (start, end) = window(spec, since);
    if let Some((reason, message)) = broken(obs) {
        return failed(d, &reason, message, obs);
    }
    if obs.simulation == Some(Child::Finished) && obs.now < end {
        return load_ended_early(d, obs);
    }
    if obs.topk_refresh.is_some() && obs.now >= start {
        freeze_topk(&mut d, stored, obs, start);
    }
    if obs.now >= end {
        let Some(basis) = &obs.basis else {
            return failed(
                d,
                "ChildMissing",
                "a child Pipeline is missing at the end of the run; the window cannot be analyzed"
                    .into(),
                obs,
            );
        };
        d.status.analysis_started = Some(Time(obs.now));
        d.status.analysis_inputs = Some(Box::new(snapshot(spec, basis, start, end)));
        let note = enter(
            &mut d.status,
            ExperimentPhase::Analyzing,
            "Analyzing",
            "run finished; analysis inputs fixed; querying Prometheus".into(),
            obs,
        );
        d.events.push(note);
        // Nothing else this pass: the snapshot is stored before anything reads it.
        d.effects.clear();
        d.requeue = Some(Duration::from_secs(1));
        return d;
    }
    d.requeue = Some(until(obs.now, end));
    if let Some(every) = obs.topk_refresh
        && obs.now < start
    {
        refresh_topk(&mut d, stored, obs, since, start, every);
    }
    d
}

/// The analysis inputs of a run that ends now, from its own children's live state.
pub fn snapshot(
    spec: &ExperimentSpec,
    basis: &AnalysisBasis,
    start: Timestamp,
    end: Timestamp,
) -> AnalysisInputs {
    AnalysisInputs {
        window_start: Time(start),
        window_end: Time(end),
        step_seconds: spec.analysis.interval.as_secs_f64(),
        collection_interval_seconds: basis.collection_interval_seconds,
        prometheus_url: basis.prometheus_url.clone(),
        experiment_label: basis.experiment_label.clone(),
        critical_processes: basis.critical_processes.clone(),
        topk: basis
            .candidate
            .topk
            .as_ref()
            .map(|t| t.processes.clone())
            .unwrap_or_default(),
        candidate: Some(basis.candidate.clone()),
    }
}

/// Freezes a `topk` candidate's selection at the window start (once): the list it runs with is
/// the one it is judged with.
fn freeze_topk(d: &mut Decision, stored: &ExperimentStatus, obs: &Observed, start: Timestamp) {
    let previous = stored.topk.clone().unwrap_or_default();
    if previous.frozen_at.is_some() {
        return;
    }
    let processes = obs
        .basis
        .as_ref()
        .and_then(|b| b.candidate.topk.as_ref())
        .map(|t| t.processes.clone())
        .unwrap_or(previous.processes);
    d.events.push(Note {
        warning: false,
        reason: "TopKFrozen".into(),
        message: format!(
            "top-K selection frozen for the analysis window: {}",
            if processes.is_empty() {
                "(none)".to_string()
            } else {
                processes.join(", ")
            }
        ),
    });
    d.status.topk = Some(TopKSelection {
        processes,
        refreshed_at: previous.refreshed_at,
        frozen_at: Some(Time(start)),
    });
}

/// Schedules the next top-K refresh before the window start, and asks for one when it is due.
fn refresh_topk(
    d: &mut Decision,
    stored: &ExperimentStatus,
    obs: &Observed,
    since: Timestamp,
    start: Timestamp,
    every: Duration,
) {
    let every = SignedDuration::try_from(every).unwrap_or(SignedDuration::from_secs(60));
    let last = stored
        .topk
        .as_ref()
        .and_then(|t| ts(&t.refreshed_at))
        .unwrap_or(since);
    let next = last.checked_add(every).unwrap_or(last);
    // Wake up at the window start in any case, to freeze the selection.
    d.requeue = d.requeue.map(|r| r.min(until(obs.now, start)));
    if obs.now >= next {
        d.effects.push(Effect::RefreshTopK { since: last });
        let after = obs.now.checked_add(every).unwrap_or(obs.now);
        d.requeue = d.requeue.map(|r| r.min(until(obs.now, after)));
    } else {
        d.requeue = d.requeue.map(|r| r.min(until(obs.now, next)));
    }
}

/// `Analyzing`: one analysis attempt over the stored snapshot; [`finish`] judges it. Without a
/// snapshot there is nothing trustworthy to analyze: `Failed`.
fn analyzing(d: Decision, stored: &ExperimentStatus, obs: &Observed) -> Decision {
    match &stored.analysis_inputs {
        Some(inputs) => {
            let mut d = d;
            if let Some(wait) = backoff_left(stored, obs.now) {
                // A failed attempt's backoff has not run out: any other reason to reconcile (the
                // failure's own status write, a restart) waits for it too, so the budget spans
                // the backoff and a short outage cannot spend it in seconds.
                d.requeue = Some(wait);
                return d;
            }
            d.effects.push(Effect::Analyze(inputs.clone()));
            d
        }
        None => failed(
            d,
            "AnalysisInputsMissing",
            "Analyzing without stored analysis inputs; the run cannot be judged".into(),
            obs,
        ),
    }
}

/// How an analysis attempt went.
#[derive(Clone, Debug)]
pub enum AnalysisOutcome {
    /// Measured and judged: the results and verdict go into status.
    Judged {
        results: Box<crate::crd::experiment::Results>,
        verdict: crate::crd::experiment::Verdict,
        recommendation: Option<Box<crate::crd::PipelineSpec>>,
    },
    /// The baseline had no data: a failure, never a verdict.
    NoData(String),
    /// The analysis can never succeed as specified (e.g. a critical pattern Prometheus-side
    /// matching cannot use): a failure with reason `InvalidAnalysis`.
    Invalid(String),
    /// Prometheus could not be reached or answered badly: retry with backoff within the budget.
    Unreachable(String),
    /// Prometheus could not be used for a named reason (unauthorized, TLS, timeout, …; see
    /// `analysis::access::AccessError::reason`): retried like [`AnalysisOutcome::Unreachable`],
    /// with that reason on `PrometheusReachable` and in the final failure.
    Inaccessible { reason: String, message: String },
}

/// Applies an analysis attempt to the decision of an `Analyzing` Experiment.
pub fn finish(
    mut d: Decision,
    outcome: AnalysisOutcome,
    obs: &Observed,
    limits: &Limits,
) -> Decision {
    d.effects.retain(|e| !matches!(e, Effect::Analyze(_)));
    let outcome_kind = match &outcome {
        AnalysisOutcome::NoData(_) => "NoData",
        _ => "other",
    };
    match outcome {
        AnalysisOutcome::Judged {
            results,
            verdict,
            recommendation,
        } => {
            d.status.prometheus_failures = 0;
            set(
                &mut d.status,
                "PrometheusReachable",
                ConditionStatus::True,
                "Queried",
                "analysis queries answered",
                obs.generation,
                obs.now,
            );
            let message = format!(
                "verdict {verdict:?}: series reduction {}, critical retention {}",
                results
                    .series_reduction_percent
                    .map(|v| format!("{v:.1}%"))
                    .unwrap_or_else(|| "n/a".into()),
                results
                    .critical_retention_percent
                    .map(|v| format!("{v:.1}%"))
                    .unwrap_or_else(|| "n/a".into()),
            );
            d.status.results = Some(results);
            d.status.verdict = Some(verdict);
            d.status.recommendation = recommendation;
            let note = enter(
                &mut d.status,
                ExperimentPhase::Completed,
                "Completed",
                message,
                obs,
            );
            d.events.push(note);
            d.effects.push(Effect::ReleaseChildren);
        }
        AnalysisOutcome::NoData(message) | AnalysisOutcome::Invalid(message) => {
            let reason = if outcome_kind == "NoData" {
                "NoData"
            } else {
                "InvalidAnalysis"
            };
            set(
                &mut d.status,
                "PrometheusReachable",
                ConditionStatus::True,
                "Queried",
                "analysis queries answered",
                obs.generation,
                obs.now,
            );
            let note = enter(&mut d.status, ExperimentPhase::Failed, reason, message, obs);
            d.events.push(note);
            d.effects.push(Effect::ReleaseChildren);
        }
        AnalysisOutcome::Unreachable(message) => {
            unreachable(&mut d, "PrometheusUnavailable", message, obs, limits)
        }
        AnalysisOutcome::Inaccessible { reason, message } => {
            unreachable(&mut d, &reason, message, obs, limits)
        }
    }
    d
}

/// A failed Prometheus attempt: `PrometheusReachable=False` with `reason`, a retry with backoff,
/// or `Failed` once the budget is spent.
fn unreachable(d: &mut Decision, reason: &str, message: String, obs: &Observed, limits: &Limits) {
    let failures = d.status.prometheus_failures + 1;
    d.status.prometheus_failures = failures;
    set(
        &mut d.status,
        "PrometheusReachable",
        ConditionStatus::False,
        reason,
        &message,
        obs.generation,
        obs.now,
    );
    if failures >= limits.prometheus_budget {
        let why = if reason == "PrometheusUnavailable" {
            String::new()
        } else {
            format!(" ({reason})")
        };
        let note = enter(
            &mut d.status,
            ExperimentPhase::Failed,
            "PrometheusUnavailable",
            format!("Prometheus unavailable after {failures} attempts{why}: {message}"),
            obs,
        );
        d.events.push(note);
        d.effects.push(Effect::ReleaseChildren);
    } else {
        d.status.message = Some(format!(
            "Prometheus unavailable (attempt {failures} of {}): {message}",
            limits.prometheus_budget
        ));
        if failures == 1 {
            d.events.push(Note {
                warning: true,
                reason: reason.to_string(),
                message,
            });
        }
        d.requeue = Some(backoff(failures));
    }
}

/// How long the next Prometheus attempt must still wait after `stored.prometheus_failures`
/// consecutive failures, if at all. The attempts since the first failure are due at the sums of
/// their backoffs after it; the first failure's time is the `PrometheusReachable=False`
/// transition, which later failures leave as it is. Pure.
pub fn backoff_left(stored: &ExperimentStatus, now: Timestamp) -> Option<Duration> {
    let failures = stored.prometheus_failures;
    if failures == 0 {
        return None;
    }
    let condition = conditions::find(&stored.conditions, "PrometheusReachable")
        .filter(|c| c.status == ConditionStatus::False)?;
    let waited: Duration = (1..=failures).map(backoff).sum();
    let due = condition.last_transition_time.0 + SignedDuration::try_from(waited).ok()?;
    let left = now.duration_until(due);
    (left.is_positive()).then(|| left.unsigned_abs())
}

/// Retry delay after `failures` consecutive failed attempts: 5 s doubling, capped at 60 s.
pub fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1));
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The tests use the default limits.
    fn decide(spec: &ExperimentSpec, stored: &ExperimentStatus, obs: &Observed) -> Decision {
        super::decide(spec, stored, obs, &Limits::default())
    }

    fn finish(d: Decision, outcome: AnalysisOutcome, obs: &Observed) -> Decision {
        super::finish(d, outcome, obs, &Limits::default())
    }
    use crate::crd::experiment::{Results, Verdict};
    use crate::crd::pipeline::PipelineTemplate;

    fn basis() -> AnalysisBasis {
        let mut candidate = PipelineSpec::from_template(PipelineTemplate::Aggregate);
        candidate.critical_processes = vec!["^postgres$".into()];
        AnalysisBasis {
            prometheus_url: "http://prom:9090".into(),
            experiment_label: "ns/e".into(),
            critical_processes: vec!["^nginx$".into(), "^postgres$".into()],
            collection_interval_seconds: 10.0,
            candidate,
        }
    }

    /// The inputs the run of [`basis`] over `[start, end]` is analyzed with.
    fn inputs(start: i64, end: i64) -> AnalysisInputs {
        snapshot(&spec(), &basis(), at(start), at(end))
    }

    fn analyzing_with(start: i64, end: i64) -> ExperimentStatus {
        let mut st = status(ExperimentPhase::Analyzing);
        st.running_since = Some(Time(at(start - 60)));
        st.analysis_inputs = Some(Box::new(inputs(start, end)));
        st
    }

    fn spec() -> ExperimentSpec {
        serde_yaml::from_str(
            "baseline: {pipeline: {template: baseline}}\ncandidate: {pipeline: {template: aggregate}}\nduration: 10m\nwarmup: 1m",
        )
        .expect("parses")
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("valid")
    }

    fn obs(now: i64, baseline: Child, candidate: Child) -> Observed {
        Observed {
            now: at(now),
            generation: Some(1),
            baseline,
            candidate,
            simulation: Some(Child::Ready),
            missing_refs: vec![],
            prometheus_refused: None,
            topk_refresh: None,
            conflicts: vec![],
            basis: Some(basis()),
            placement_overrides: vec![],
        }
    }

    fn status(phase: ExperimentPhase) -> ExperimentStatus {
        ExperimentStatus {
            phase: Some(phase),
            start_time: Some(Time(at(0))),
            ..Default::default()
        }
    }

    #[test]
    fn pending_starts_deploying_and_creates_children() {
        let d = decide(
            &spec(),
            &ExperimentStatus::default(),
            &obs(0, Child::Missing, Child::Missing),
        );
        assert_eq!(d.status.phase, Some(ExperimentPhase::Deploying));
        assert_eq!(d.status.start_time, Some(Time(at(0))));
        assert_eq!(d.effects, vec![Effect::EnsureChildren]);
        assert_eq!(d.events[0].reason, "Deploying");
    }

    #[test]
    fn pending_waits_for_missing_references() {
        let mut o = obs(0, Child::Missing, Child::Missing);
        o.prometheus_refused = Some("not allowed".into());
        let d = decide(&spec(), &ExperimentStatus::default(), &o);
        assert_eq!(d.status.phase, Some(ExperimentPhase::Failed));
        assert_eq!(d.effects, vec![Effect::ReleaseChildren]);
        o.prometheus_refused = None;
        o.missing_refs = vec!["today".into()];
        let d = decide(&spec(), &ExperimentStatus::default(), &o);
        assert_eq!(d.status.phase, Some(ExperimentPhase::Pending));
        assert!(d.effects.is_empty());
        assert_eq!(d.requeue, Some(MISSING_REF_RECHECK));
        // Waiting again does not publish the same event twice.
        let again = decide(&spec(), &d.status, &o);
        assert!(again.events.is_empty());
        assert_eq!(again.status, d.status);
    }

    #[test]
    fn deploying_waits_then_runs_when_both_ready() {
        let d = decide(
            &spec(),
            &status(ExperimentPhase::Deploying),
            &obs(10, Child::Ready, Child::Progressing),
        );
        assert_eq!(d.status.phase, Some(ExperimentPhase::Deploying));
        assert_eq!(d.requeue, Some(Duration::from_secs(290)));
        let d = decide(
            &spec(),
            &status(ExperimentPhase::Deploying),
            &obs(20, Child::Ready, Child::Ready),
        );
        assert_eq!(d.status.phase, Some(ExperimentPhase::Running));
        assert_eq!(d.status.running_since, Some(Time(at(20))));
        assert_eq!(d.requeue, Some(Duration::from_secs(600)));
        assert!(conditions::is_true(&d.status.conditions, "Deployed"));
    }

    #[test]
    fn deploying_times_out_or_fails_on_a_broken_child() {
        let d = decide(
            &spec(),
            &status(ExperimentPhase::Deploying),
            &obs(301, Child::Ready, Child::Progressing),
        );
        assert_eq!(d.status.phase, Some(ExperimentPhase::Failed));
        assert_eq!(d.events[0].reason, "DeployTimeout");
        assert_eq!(d.effects, vec![Effect::ReleaseChildren]);
        let d = decide(
            &spec(),
            &status(ExperimentPhase::Deploying),
            &obs(
                5,
                Child::Ready,
                Child::Broken("InvalidConfig".into(), "bad regex".into()),
            ),
        );
        assert_eq!(d.status.phase, Some(ExperimentPhase::Failed));
        assert_eq!(d.events[0].reason, "CandidateInvalidConfig");
        assert!(d.status.completion_time.is_some());
    }

    #[test]
    fn running_until_duration_then_analyzing_over_the_warm_window() {
        let mut st = status(ExperimentPhase::Running);
        st.running_since = Some(Time(at(100)));
        let d = decide(&spec(), &st, &obs(400, Child::Ready, Child::Ready));
        assert_eq!(d.status.phase, Some(ExperimentPhase::Running));
        assert_eq!(d.requeue, Some(Duration::from_secs(300)));
        let d = decide(&spec(), &st, &obs(700, Child::Ready, Child::Ready));
        assert_eq!(d.status.phase, Some(ExperimentPhase::Analyzing));
        // The inputs are stored first; the analysis reads them in the next pass.
        assert!(d.effects.is_empty(), "{:?}", d.effects);
        assert_eq!(d.status.analysis_inputs, Some(Box::new(inputs(160, 700))));
        let next = decide(&spec(), &d.status, &obs(701, Child::Ready, Child::Ready));
        assert_eq!(
            next.effects,
            vec![Effect::Analyze(Box::new(inputs(160, 700)))]
        );
    }

    fn topk_spec() -> ExperimentSpec {
        let mut s = spec();
        s.warmup = "3m".parse().expect("a duration");
        s
    }

    fn refreshes(d: &Decision) -> bool {
        d.effects
            .iter()
            .any(|e| matches!(e, Effect::RefreshTopK { .. }))
    }

    #[test]
    fn a_topk_candidate_is_refreshed_on_its_interval_during_warmup() {
        let mut st = status(ExperimentPhase::Running);
        st.running_since = Some(Time(at(0)));
        let mut o = obs(30, Child::Ready, Child::Ready);
        o.topk_refresh = Some(Duration::from_secs(60));
        let d = decide(&topk_spec(), &st, &o);
        assert!(!refreshes(&d));
        assert_eq!(
            d.requeue,
            Some(Duration::from_secs(30)),
            "wakes up for the first refresh"
        );
        o.now = at(61);
        let d = decide(&topk_spec(), &st, &o);
        assert!(d.effects.contains(&Effect::RefreshTopK { since: at(0) }));
        st.topk = Some(TopKSelection {
            processes: vec!["java".into()],
            refreshed_at: Some(Time(at(61))),
            frozen_at: None,
        });
        o.now = at(100);
        let d = decide(&topk_spec(), &st, &o);
        assert!(!refreshes(&d));
        assert_eq!(d.requeue, Some(Duration::from_secs(21)));
        // The last refresh due before the window start (180) still wakes up at the start.
        st.topk = Some(TopKSelection {
            processes: vec!["java".into()],
            refreshed_at: Some(Time(at(150))),
            frozen_at: None,
        });
        o.now = at(160);
        let d = decide(&topk_spec(), &st, &o);
        assert_eq!(d.requeue, Some(Duration::from_secs(20)));
    }

    #[test]
    fn the_topk_selection_is_frozen_at_the_window_start() {
        let mut st = status(ExperimentPhase::Running);
        st.running_since = Some(Time(at(0)));
        st.topk = Some(TopKSelection {
            processes: vec!["java".into()],
            refreshed_at: Some(Time(at(120))),
            frozen_at: None,
        });
        let mut o = obs(181, Child::Ready, Child::Ready);
        o.topk_refresh = Some(Duration::from_secs(60));
        if let Some(b) = o.basis.as_mut() {
            b.candidate.topk =
                Some(serde_yaml::from_str("{k: 1, processes: [java]}").expect("parses"));
        }
        // Refresh is due (last at 120, every 60s) but the window has started: frozen, no refresh.
        let d = decide(&topk_spec(), &st, &o);
        assert!(!refreshes(&d), "{:?}", d.effects);
        let frozen = d.status.topk.clone().expect("top-K in status");
        assert_eq!(frozen.processes, vec!["java"]);
        assert_eq!(frozen.frozen_at, Some(Time(at(180))));
        assert!(d.events.iter().any(|e| e.reason == "TopKFrozen"));
        // Later passes neither refresh nor re-freeze.
        o.now = at(400);
        let later = decide(&topk_spec(), &d.status, &o);
        assert!(!refreshes(&later));
        assert!(later.events.is_empty());
        assert_eq!(later.status.topk, d.status.topk);
        // The snapshot carries the frozen list.
        o.now = at(600);
        let end = decide(&topk_spec(), &later.status, &o);
        assert_eq!(
            end.status.analysis_inputs.map(|i| i.topk),
            Some(vec!["java".to_string()])
        );
    }

    #[test]
    fn running_fails_when_the_load_fails() {
        let mut st = status(ExperimentPhase::Running);
        st.running_since = Some(Time(at(0)));
        let mut o = obs(30, Child::Ready, Child::Ready);
        o.simulation = Some(Child::Broken(
            "BackoffLimitExceeded".into(),
            "simulator exited 2".into(),
        ));
        let d = decide(&spec(), &st, &o);
        assert_eq!(d.status.phase, Some(ExperimentPhase::Failed));
        assert_eq!(d.events[0].reason, "SimulationBackoffLimitExceeded");
    }

    #[test]
    fn analyzing_after_restart_analyzes_the_same_window() {
        let st = analyzing_with(160, 700);
        // Whenever the restarted operator looks, the window is the one fixed by status.
        for now in [700, 900, 5000] {
            let d = decide(&spec(), &st, &obs(now, Child::Ready, Child::Ready));
            assert_eq!(d.effects, vec![Effect::Analyze(Box::new(inputs(160, 700)))]);
        }
    }

    #[test]
    fn a_lost_status_write_after_release_does_not_change_the_analysis() {
        // Run ends: the snapshot is taken from the live children.
        let mut st = status(ExperimentPhase::Running);
        st.running_since = Some(Time(at(100)));
        let entering = decide(&spec(), &st, &obs(700, Child::Ready, Child::Ready));
        let analyzing = entering.status;
        // The analysis completes and the children are released ...
        let o = obs(701, Child::Ready, Child::Ready);
        let first = decide(&spec(), &analyzing, &o);
        let judged = finish(
            first.clone(),
            AnalysisOutcome::Judged {
                results: Box::default(),
                verdict: Verdict::Fail,
                recommendation: None,
            },
            &o,
        );
        assert!(judged.effects.contains(&Effect::ReleaseChildren));
        // ... but the Completed status is never stored. The next pass sees Analyzing again, with
        // the children gone: it analyzes exactly the same inputs (critical patterns included).
        let mut gone = obs(760, Child::Missing, Child::Missing);
        gone.basis = None;
        gone.simulation = Some(Child::Missing);
        let again = decide(&spec(), &analyzing, &gone);
        assert_eq!(again.effects, first.effects);
        let Some(Effect::Analyze(inputs)) = again.effects.first() else {
            panic!("analyzes again: {:?}", again.effects)
        };
        assert_eq!(inputs.critical_processes, vec!["^nginx$", "^postgres$"]);
        assert!(inputs.candidate.is_some());
    }

    #[test]
    fn analyzing_without_a_snapshot_fails_rather_than_guess() {
        let mut st = status(ExperimentPhase::Analyzing);
        st.running_since = Some(Time(at(100)));
        let d = decide(&spec(), &st, &obs(700, Child::Ready, Child::Ready));
        assert_eq!(d.status.phase, Some(ExperimentPhase::Failed));
        assert_eq!(d.events[0].reason, "AnalysisInputsMissing");
        assert_eq!(d.status.verdict, None);
    }

    #[test]
    fn a_run_whose_children_vanished_is_not_analyzed() {
        let mut st = status(ExperimentPhase::Running);
        st.running_since = Some(Time(at(100)));
        let mut o = obs(700, Child::Missing, Child::Ready);
        o.basis = None;
        let d = decide(&spec(), &st, &o);
        assert_eq!(d.status.phase, Some(ExperimentPhase::Failed));
        assert_eq!(d.events[0].reason, "ChildMissing");
        assert!(d.status.analysis_inputs.is_none());
    }

    #[test]
    fn a_name_taken_by_another_object_fails_name_conflict_in_any_live_phase() {
        for phase in [
            ExperimentPhase::Pending,
            ExperimentPhase::Deploying,
            ExperimentPhase::Running,
            ExperimentPhase::Analyzing,
        ] {
            let mut st = analyzing_with(160, 700);
            st.phase = Some(phase);
            let mut o = obs(50, Child::Ready, Child::Missing);
            o.conflicts = vec!["Pipeline e-candidate".into()];
            let d = decide(&spec(), &st, &o);
            assert_eq!(d.status.phase, Some(ExperimentPhase::Failed), "{phase:?}");
            let ready = conditions::find(&d.status.conditions, "Ready").expect("Ready");
            assert_eq!(ready.reason, "NameConflict");
            assert!(
                ready.message.contains("Pipeline e-candidate"),
                "{}",
                ready.message
            );
            // Only the children it controls are released; never created, never analyzed.
            assert_eq!(d.effects, vec![Effect::ReleaseChildren]);
        }
    }

    #[test]
    fn placement_overrides_are_reported_when_deploying() {
        let mut o = obs(0, Child::Missing, Child::Missing);
        o.placement_overrides = vec!["candidate deployment.mode Deployment -> DaemonSet".into()];
        let d = decide(&spec(), &ExperimentStatus::default(), &o);
        assert_eq!(d.status.phase, Some(ExperimentPhase::Deploying));
        assert_eq!(d.status.placement_overrides, o.placement_overrides);
        let e = d
            .events
            .iter()
            .find(|e| e.reason == "PlacementOverridden")
            .expect("an Event says what was overridden");
        assert!(
            e.message
                .contains("candidate deployment.mode Deployment -> DaemonSet")
        );
    }

    #[test]
    fn the_clock_waits_for_the_load() {
        let mut o = obs(10, Child::Ready, Child::Ready);
        o.simulation = Some(Child::Progressing);
        let d = decide(&spec(), &status(ExperimentPhase::Deploying), &o);
        assert_eq!(d.status.phase, Some(ExperimentPhase::Deploying));
        assert_eq!(d.status.running_since, None);
        // A load that already finished is not a running load.
        o.simulation = Some(Child::Finished);
        let d = decide(&spec(), &status(ExperimentPhase::Deploying), &o);
        assert_eq!(d.status.phase, Some(ExperimentPhase::Failed));
        assert_eq!(d.events[0].reason, "LoadEndedEarly");
        o.simulation = Some(Child::Ready);
        let d = decide(&spec(), &status(ExperimentPhase::Deploying), &o);
        assert_eq!(d.status.phase, Some(ExperimentPhase::Running));
        // No simulation in the spec: the collectors alone start the clock.
        o.simulation = None;
        let d = decide(&spec(), &status(ExperimentPhase::Deploying), &o);
        assert_eq!(d.status.phase, Some(ExperimentPhase::Running));
    }

    #[test]
    fn a_load_that_ends_inside_the_window_fails_the_run() {
        let mut st = status(ExperimentPhase::Running);
        st.running_since = Some(Time(at(100)));
        let mut o = obs(650, Child::Ready, Child::Ready);
        o.simulation = Some(Child::Finished);
        let d = decide(&spec(), &st, &o);
        assert_eq!(d.status.phase, Some(ExperimentPhase::Failed));
        assert_eq!(d.events[0].reason, "LoadEndedEarly");
        // Finishing after the window is fine.
        o.now = at(700);
        let d = decide(&spec(), &st, &o);
        assert_eq!(d.status.phase, Some(ExperimentPhase::Analyzing));
    }

    #[test]
    fn judged_analysis_completes_with_results() {
        let st = analyzing_with(60, 600);
        let o = obs(700, Child::Ready, Child::Ready);
        let d = decide(&spec(), &st, &o);
        let results = Results {
            series_reduction_percent: Some(92.0),
            critical_retention_percent: Some(100.0),
            ..Default::default()
        };
        let d = finish(
            d,
            AnalysisOutcome::Judged {
                results: Box::new(results),
                verdict: Verdict::Pass,
                recommendation: None,
            },
            &o,
        );
        assert_eq!(d.status.phase, Some(ExperimentPhase::Completed));
        assert_eq!(d.status.verdict, Some(Verdict::Pass));
        assert!(conditions::is_true(&d.status.conditions, "Ready"));
        assert_eq!(d.effects, vec![Effect::ReleaseChildren]);
        assert!(
            d.status
                .message
                .as_deref()
                .is_some_and(|m| m.contains("92.0%"))
        );
    }

    #[test]
    fn no_data_fails_never_passes() {
        let st = analyzing_with(60, 600);
        let o = obs(700, Child::Ready, Child::Ready);
        let d = finish(
            decide(&spec(), &st, &o),
            AnalysisOutcome::NoData("no baseline series".into()),
            &o,
        );
        assert_eq!(d.status.phase, Some(ExperimentPhase::Failed));
        assert_eq!(d.status.verdict, None);
        assert_eq!(d.events[0].reason, "NoData");
    }

    #[test]
    fn prometheus_failures_back_off_then_fail_after_the_budget() {
        let mut st = analyzing_with(60, 600);
        let o = obs(700, Child::Ready, Child::Ready);
        let mut delays = vec![];
        for attempt in 1..PROMETHEUS_BUDGET {
            let d = finish(
                decide(&spec(), &st, &o),
                AnalysisOutcome::Unreachable("connection refused".into()),
                &o,
            );
            assert_eq!(
                d.status.phase,
                Some(ExperimentPhase::Analyzing),
                "attempt {attempt}"
            );
            assert_eq!(d.status.prometheus_failures, attempt);
            assert!(!conditions::is_true(
                &d.status.conditions,
                "PrometheusReachable"
            ));
            delays.push(d.requeue.expect("retries"));
            st = d.status;
        }
        assert_eq!(delays[..4], [5, 10, 20, 40].map(Duration::from_secs));
        assert!(delays.iter().all(|d| *d <= MAX_BACKOFF));
        let d = finish(
            decide(&spec(), &st, &o),
            AnalysisOutcome::Unreachable("connection refused".into()),
            &o,
        );
        assert_eq!(d.status.phase, Some(ExperimentPhase::Failed));
        assert_eq!(d.events[0].reason, "PrometheusUnavailable");
    }

    #[test]
    fn no_attempt_before_the_backoff_runs_out_whatever_triggers_the_reconcile() {
        let analyze = |d: &Decision| d.effects.iter().any(|e| matches!(e, Effect::Analyze(_)));
        let mut st = analyzing_with(60, 600);
        let failed_at = obs(700, Child::Ready, Child::Ready);
        assert!(analyze(&decide(&spec(), &st, &failed_at)), "first attempt");
        st = finish(
            decide(&spec(), &st, &failed_at),
            AnalysisOutcome::Unreachable("connection refused".into()),
            &failed_at,
        )
        .status;
        // The failure's own status write reconciles at once: no attempt, a wait for the rest.
        let d = decide(&spec(), &st, &obs(701, Child::Ready, Child::Ready));
        assert!(!analyze(&d));
        assert_eq!(d.requeue, Some(Duration::from_secs(4)));
        assert_eq!(d.status, st, "nothing to write while waiting");
        let second = obs(705, Child::Ready, Child::Ready);
        assert!(analyze(&decide(&spec(), &st, &second)), "due after 5 s");
        st = finish(
            decide(&spec(), &st, &second),
            AnalysisOutcome::Unreachable("connection refused".into()),
            &second,
        )
        .status;
        // The second backoff (10 s) counts from the second attempt: due 15 s after the first
        // failure, which the condition's transition time keeps.
        let d = decide(&spec(), &st, &obs(714, Child::Ready, Child::Ready));
        assert_eq!(d.requeue, Some(Duration::from_secs(1)));
        assert!(!analyze(&d));
        assert!(analyze(&decide(
            &spec(),
            &st,
            &obs(715, Child::Ready, Child::Ready)
        )));
    }

    #[test]
    fn recovery_resets_the_failure_count() {
        let mut st = analyzing_with(60, 600);
        st.prometheus_failures = 3;
        let o = obs(700, Child::Ready, Child::Ready);
        let d = finish(
            decide(&spec(), &st, &o),
            AnalysisOutcome::Judged {
                results: Box::default(),
                verdict: Verdict::Inconclusive,
                recommendation: None,
            },
            &o,
        );
        assert_eq!(d.status.prometheus_failures, 0);
        assert!(conditions::is_true(
            &d.status.conditions,
            "PrometheusReachable"
        ));
    }

    #[test]
    fn abort_ends_any_live_phase() {
        let mut s = spec();
        s.abort = true;
        for phase in [
            ExperimentPhase::Pending,
            ExperimentPhase::Deploying,
            ExperimentPhase::Running,
            ExperimentPhase::Analyzing,
        ] {
            let d = decide(&s, &status(phase), &obs(50, Child::Ready, Child::Ready));
            assert_eq!(d.status.phase, Some(ExperimentPhase::Aborted), "{phase:?}");
            assert_eq!(d.effects, vec![Effect::ReleaseChildren]);
        }
    }

    #[test]
    fn terminal_phases_never_change() {
        let mut s = spec();
        s.abort = true;
        for phase in [
            ExperimentPhase::Completed,
            ExperimentPhase::Failed,
            ExperimentPhase::Aborted,
        ] {
            let mut st = status(phase);
            st.observed_generation = Some(1);
            let d = decide(&s, &st, &obs(99_999, Child::Ready, Child::Ready));
            assert_eq!(d.status, st);
            assert!(d.events.is_empty());
            assert_eq!(d.effects, vec![Effect::ReleaseChildren]);
            assert_eq!(d.requeue, None);
        }
    }

    #[test]
    fn a_repeated_decision_is_a_fixed_point() {
        // Restart in Deploying/Running: deciding twice on the same observation changes nothing
        // the second time (no status write, no duplicate events).
        let mut st = status(ExperimentPhase::Running);
        st.running_since = Some(Time(at(0)));
        let o = obs(100, Child::Ready, Child::Ready);
        let first = decide(&spec(), &st, &o);
        let second = decide(&spec(), &first.status, &o);
        assert_eq!(first.status, second.status);
        assert!(second.events.is_empty());
    }
}
