//! A standalone `topk` Pipeline's selection: when to rank again, from which series
//! (`spec.topk.selectionSource`), and how the outcome lands in status. The Pipeline controller
//! calls [`refresh`] before rendering; inside an Experiment the Experiment ranks instead.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::Context;
use crate::analysis::measure::{self, MeasureError, Window};
use crate::analysis::queries;
use crate::crd::conditions::{self, Condition, ConditionStatus};
use crate::crd::pipeline::{PipelineStatus, PipelineTemplate, TopKSelectionSource};
use crate::crd::{Pipeline, PipelineSpec};
use crate::desired::collector_config::escape::any_of;

/// The condition reporting the last ranking: `True` (reason [`SELECTED`]) when it succeeded,
/// `False` with the reason when it did not (the previous selection is kept).
pub const CONDITION: &str = "TopKSelected";
/// Reason of a successful ranking.
pub const SELECTED: &str = "Selected";
/// Reason when the source matched no CPU series.
pub const NO_DATA: &str = "NoData";
/// Reason when `selectionSource.matchLabels` holds a name that is not a Prometheus label name.
pub const INVALID_SOURCE: &str = "InvalidSelectionSource";
/// Reason when `selectionSource.prometheusUrl` is not allowed by the operator.
pub const URL_NOT_ALLOWED: &str = "PrometheusUrlNotAllowed";
/// Reason when Prometheus could not answer (unreachable, bad answer).
pub const UNAVAILABLE: &str = "PrometheusUnavailable";
/// Shortest range the ranking's `rate()` looks back over, seconds.
pub const MIN_LOOKBACK_SECS: u64 = 60;

/// The selection a reconcile renders with, and what to store about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// The executable names to keep (besides `spec.topk.processes`).
    pub processes: Vec<String>,
    /// When Prometheus was last asked.
    pub refreshed_at: Option<Time>,
    /// The `TopKSelected` condition; `None` removes it.
    pub condition: Option<Condition>,
    /// When to rank again; `None` when this Pipeline does not rank.
    pub next: Option<Duration>,
}

impl Selection {
    /// Writes the selection into `status`.
    pub fn apply_to(&self, status: &mut PipelineStatus) {
        status.topk_processes = self.processes.clone();
        status.topk_refreshed_at = self.refreshed_at.clone();
        match &self.condition {
            Some(c) => conditions::set_condition(&mut status.conditions, c.clone()),
            None => status.conditions.retain(|c| c.type_ != CONDITION),
        }
    }

    /// Whether the selection differs from the one `previous` stored (the only case that
    /// re-renders the config and earns a `TopKRefreshed` Event).
    pub fn changed(&self, previous: &PipelineStatus) -> bool {
        self.processes != previous.topk_processes
    }

    /// The reason and message of a failed ranking that `previous` did not already report.
    pub fn new_failure(&self, previous: &PipelineStatus) -> Option<(&str, &str)> {
        let c = self.condition.as_ref()?;
        if c.status == ConditionStatus::True {
            return None;
        }
        let old = conditions::find(&previous.conditions, CONDITION);
        let reported = old.is_some_and(|o| o.reason == c.reason && o.message == c.message);
        (!reported).then_some((c.reason.as_str(), c.message.as_str()))
    }
}

/// The source to rank by and the refresh interval, when this Pipeline ranks for itself: a `topk`
/// template with a `selectionSource`, not controlled by an Experiment. Pure.
pub fn source(
    spec: &PipelineSpec,
    in_experiment: bool,
) -> Option<(&TopKSelectionSource, Duration)> {
    if in_experiment || spec.template != PipelineTemplate::Topk {
        return None;
    }
    let topk = spec.topk.as_ref()?;
    Some((topk.selection_source.as_ref()?, topk.refresh_interval.get()))
}

/// How long until the next ranking is due; `None` when it is due now: never ranked, the spec
/// changed since (the condition's observedGeneration), or `interval` has passed. Pure.
pub fn due_in(
    status: &PipelineStatus,
    generation: Option<i64>,
    interval: Duration,
    now: Timestamp,
) -> Option<Duration> {
    let last = status.topk_refreshed_at.as_ref()?.0;
    let condition = conditions::find(&status.conditions, CONDITION)?;
    if condition.observed_generation != generation {
        return None;
    }
    let elapsed = Duration::try_from(last.duration_until(now)).unwrap_or(Duration::ZERO);
    interval.checked_sub(elapsed).filter(|left| !left.is_zero())
}

/// The ranking window ending `now`: `max(interval, MIN_LOOKBACK_SECS)` long. Pure.
pub fn window(interval: Duration, now: Timestamp) -> Window {
    let secs = interval.as_secs().max(MIN_LOOKBACK_SECS) as i64;
    let end = now.as_second();
    Window::new(end - secs, end, secs as f64, 0.0)
}

/// The label matchers of the ranking query (critical processes excluded), or the condition
/// message when the source is invalid. Pure.
pub fn matchers(spec: &PipelineSpec, source: &TopKSelectionSource) -> Result<String, String> {
    let critical = (!spec.critical_processes.is_empty()).then(|| any_of(&spec.critical_processes));
    queries::exact_matchers(
        source
            .match_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
        critical.as_deref(),
    )
    .map_err(|name| {
        format!(
            "spec.topk.selectionSource.matchLabels: {name:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
        )
    })
}

/// Whether `a` and `b` hold the same names (in any order). Pure.
fn same_names(a: &[String], b: &[String]) -> bool {
    use std::collections::BTreeSet;
    a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
}

/// What the ranking of `outcome` makes of the selection `previous` held. Pure.
pub fn outcome(
    previous: &PipelineStatus,
    generation: Option<i64>,
    interval: Duration,
    now: Timestamp,
    outcome: Result<Vec<String>, (&str, String)>,
) -> Selection {
    let condition = |status, reason: &str, message: String| {
        Some(Condition::new(
            CONDITION,
            status,
            reason,
            message,
            generation,
            Time(now),
        ))
    };
    let kept = |reason: &str, message: String| Selection {
        processes: previous.topk_processes.clone(),
        refreshed_at: Some(Time(now)),
        condition: condition(
            ConditionStatus::False,
            reason,
            format!("{message}; keeping the previous selection"),
        ),
        next: Some(interval),
    };
    match outcome {
        Ok(names) if names.is_empty() => kept(
            NO_DATA,
            "no process_cpu_time_seconds_total series match spec.topk.selectionSource".into(),
        ),
        Ok(names) => {
            // The same names in another order render the same config: keep the stored list, so
            // neither status nor Events move for a reordering.
            let processes = if same_names(&names, &previous.topk_processes) {
                previous.topk_processes.clone()
            } else {
                names
            };
            Selection {
                condition: condition(
                    ConditionStatus::True,
                    SELECTED,
                    format!("keeps {}", processes.join(", ")),
                ),
                processes,
                refreshed_at: Some(Time(now)),
                next: Some(interval),
            }
        }
        Err((reason, message)) => kept(reason, message),
    }
}

/// The selection this reconcile of `pipeline` renders with: ranked again from Prometheus when
/// due, otherwise the stored one. Pipelines that do not rank for themselves get an empty one
/// (clearing what a removed `selectionSource` left behind).
pub async fn refresh(
    ctx: &Context,
    pipeline: &Pipeline,
    previous: &PipelineStatus,
    in_experiment: bool,
) -> Selection {
    let Some((source, interval)) = source(&pipeline.spec, in_experiment) else {
        return Selection {
            processes: if in_experiment {
                previous.topk_processes.clone()
            } else {
                vec![]
            },
            refreshed_at: None,
            condition: None,
            next: None,
        };
    };
    let generation = pipeline.metadata.generation;
    let now = Timestamp::now();
    if let Some(left) = due_in(previous, generation, interval, now) {
        return Selection {
            processes: previous.topk_processes.clone(),
            refreshed_at: previous.topk_refreshed_at.clone(),
            condition: conditions::find(&previous.conditions, CONDITION).cloned(),
            next: Some(left),
        };
    }
    let ranked = rank(ctx, &pipeline.spec, source, interval, now).await;
    outcome(previous, generation, interval, now, ranked)
}

/// Asks Prometheus for the `k` heaviest executables of `source`, or says why it could not.
async fn rank(
    ctx: &Context,
    spec: &PipelineSpec,
    source: &TopKSelectionSource,
    interval: Duration,
    now: Timestamp,
) -> Result<Vec<String>, (&'static str, String)> {
    let url = source
        .prometheus_url
        .clone()
        .unwrap_or_else(|| ctx.settings.prometheus_url.clone());
    if !ctx.settings.prometheus_url_allowed(&url) {
        return Err((
            URL_NOT_ALLOWED,
            format!(
                "spec.topk.selectionSource.prometheusUrl {url} is not allowed by the operator: only its own Prometheus or a URL under --allowed-prometheus-url-prefixes (chart value allowedPrometheusUrlPrefixes)"
            ),
        ));
    }
    let matchers = matchers(spec, source).map_err(|m| (INVALID_SOURCE, m))?;
    let prom = ctx
        .prometheus
        .client(&url)
        .map_err(|e| (e.reason(), e.to_string()))?;
    let k = spec.topk.as_ref().map_or(0, |t| t.k);
    let window = window(interval, now);
    let ranked = measure::topk_names_matching(&prom, &matchers, k, &window).await;
    tracing::debug!(%url, %matchers, end = window.end, ?ranked, "top-K ranking");
    ranked.map_err(|e| match e {
        MeasureError::Access(a) => (a.reason(), a.to_string()),
        other => (UNAVAILABLE, other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid timestamp")
    }

    fn topk_spec(yaml: &str) -> PipelineSpec {
        serde_yaml::from_str(yaml).expect("spec parses")
    }

    const WITH_SOURCE: &str = "template: topk\ncriticalProcesses: ['^postgres$', 'nginx']\ntopk: {k: 2, refreshInterval: 30s, selectionSource: {matchLabels: {phoenix_pipeline: full}}}";

    #[test]
    fn only_standalone_topk_pipelines_with_a_source_rank() {
        let spec = topk_spec(WITH_SOURCE);
        let (source, interval) = source(&spec, false).expect("ranks");
        assert_eq!(source.match_labels["phoenix_pipeline"], "full");
        assert_eq!(interval, Duration::from_secs(30));
        assert!(super::source(&spec, true).is_none(), "the Experiment ranks");
        assert!(super::source(&topk_spec("template: topk\ntopk: {k: 2}"), false).is_none());
        assert!(super::source(&topk_spec("template: baseline"), false).is_none());
    }

    #[test]
    fn ranking_is_due_when_never_done_the_spec_changed_or_the_interval_passed() {
        let interval = Duration::from_secs(30);
        let mut status = PipelineStatus::default();
        assert_eq!(due_in(&status, Some(1), interval, at(100)), None, "never");
        let ranked = outcome(&status, Some(1), interval, at(100), Ok(vec!["a".into()]));
        ranked.apply_to(&mut status);
        assert_eq!(
            due_in(&status, Some(1), interval, at(110)),
            Some(Duration::from_secs(20))
        );
        assert_eq!(due_in(&status, Some(1), interval, at(130)), None, "passed");
        assert_eq!(due_in(&status, Some(2), interval, at(110)), None, "edited");
    }

    #[test]
    fn a_failed_ranking_keeps_the_selection_and_says_why_once() {
        let interval = Duration::from_secs(30);
        let mut status = PipelineStatus::default();
        let first = outcome(
            &status,
            Some(1),
            interval,
            at(100),
            Ok(vec!["b".into(), "a".into()]),
        );
        assert!(first.changed(&status));
        assert_eq!(first.new_failure(&status), None);
        first.apply_to(&mut status);
        assert_eq!(status.topk_processes, ["b", "a"]);
        let c = conditions::find(&status.conditions, CONDITION).expect("condition");
        assert_eq!(
            (c.status, c.reason.as_str()),
            (ConditionStatus::True, SELECTED)
        );

        let same = outcome(
            &status,
            Some(1),
            interval,
            at(130),
            Ok(vec!["b".into(), "a".into()]),
        );
        assert!(!same.changed(&status), "same names: no re-render, no Event");
        let reordered = outcome(
            &status,
            Some(1),
            interval,
            at(130),
            Ok(vec!["a".into(), "b".into()]),
        );
        assert!(
            !reordered.changed(&status),
            "a reordering renders the same config"
        );
        assert_eq!(reordered.processes, ["b", "a"]);

        let failed = outcome(
            &status,
            Some(1),
            interval,
            at(160),
            Err((UNAVAILABLE, "connection refused".into())),
        );
        assert!(!failed.changed(&status), "the old selection stands");
        assert_eq!(
            failed.new_failure(&status),
            Some((
                UNAVAILABLE,
                "connection refused; keeping the previous selection"
            ))
        );
        failed.apply_to(&mut status);
        assert_eq!(status.topk_processes, ["b", "a"]);
        assert_eq!(status.topk_refreshed_at, Some(Time(at(160))));
        let again = outcome(
            &status,
            Some(1),
            interval,
            at(190),
            Err((UNAVAILABLE, "connection refused".into())),
        );
        assert_eq!(again.new_failure(&status), None, "already reported");

        let empty = outcome(&status, Some(1), interval, at(220), Ok(vec![]));
        assert!(!empty.changed(&status));
        assert_eq!(empty.condition.map(|c| c.reason), Some(NO_DATA.to_string()));
    }

    #[test]
    fn the_query_excludes_critical_processes_and_refuses_bad_label_names() {
        let spec = topk_spec(WITH_SOURCE);
        let source = spec
            .topk
            .as_ref()
            .and_then(|t| t.selection_source.as_ref())
            .expect("source");
        assert_eq!(
            matchers(&spec, source).as_deref(),
            Ok(
                r#"phoenix_pipeline="full",process_executable_name!~".*(?:(?:^postgres$)|(?:nginx)).*""#
            )
        );
        let mut bad = source.clone();
        bad.match_labels.insert("job\"} or up{".into(), "x".into());
        assert!(matchers(&spec, &bad).is_err_and(|m| m.contains("not a Prometheus label name")));
    }

    #[test]
    fn the_window_looks_back_at_least_a_minute() {
        let w = window(Duration::from_secs(30), at(1000));
        assert_eq!((w.start, w.end), (940, 1000));
        let w = window(Duration::from_secs(300), at(1000));
        assert_eq!((w.start, w.end), (700, 1000));
    }
}
