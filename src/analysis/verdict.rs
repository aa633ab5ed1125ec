//! The verdict of an Experiment: compares the two variants' measurements, checks the success
//! criteria and tests the series reduction for significance (pure).
//!
//! Rules (DESIGN §4):
//! - No baseline process series in the window (no step with data, or every step zero) is
//!   [`Outcome::NoData`], never a verdict; so is a candidate that wrote nothing at all (no process
//!   series and no collector telemetry). A candidate whose collector reported itself but no process
//!   series counts as zero series at each of those steps.
//! - Fewer than [`MIN_SAMPLES`] steps with data on either side: `Inconclusive`, whatever else.
//! - Any criterion with an observed value that misses its threshold: `Fail`.
//! - A criterion that could not be observed (e.g. no collector CPU data while
//!   `maxCollectorCpuIncreasePercent` is set, or critical processes configured but none seen by
//!   the baseline): `Inconclusive`.
//! - Baseline per-step series with a coefficient of variation above [`MAX_BASELINE_CV`]:
//!   `Inconclusive` (too noisy for its mean to be a fair reference).
//! - Otherwise `Pass` only when the candidate's per-step series are significantly lower than the
//!   baseline's (one-sided Mann-Whitney U, candidate `Less`, α = `analysis.significanceLevel`)
//!   and the mean reduction is at least [`MIN_REDUCTION_FOR_PASS_PERCENT`]; else `Inconclusive`.
//!   Identical variants (A/A) therefore never pass, not even when chance makes the test fire.

use std::collections::BTreeSet;

use super::measure::Measurements;
use super::queries::what;
use super::stats::{
    Alternative, Significance, SignificanceCriteria, coefficient_of_variation, mann_whitney_u_with,
};
use crate::crd::experiment::{
    Confidence, CostModel, CriterionResult, ExperimentSpec, MonthlyCost, Results, VariantResults,
    Verdict,
};

/// Seconds in the month the cost model prices: 30 days.
pub const MONTH_SECONDS: f64 = 2_592_000.0;
/// Largest coefficient of variation of the baseline's per-step series that still gives a verdict.
/// A steady process population sits well below 0.1; above 0.5 the level is dominated by noise or a
/// trend (e.g. a load spike) and the reduction measured against it is not trustworthy.
pub const MAX_BASELINE_CV: f64 = 0.5;
/// Smallest series reduction that can pass, percent (practical significance). Under the null
/// hypothesis a test at α rejects α of the time, so an A/A run whose steps differ by chance could
/// look "significant"; a reduction this small is not a cheaper pipeline anyway.
pub const MIN_REDUCTION_FOR_PASS_PERCENT: f64 = 1.0;
/// Fewest steps with data per variant for a verdict (the statistics' own minimum).
pub const MIN_SAMPLES: usize = SignificanceCriteria::DEFAULT_MIN_SAMPLES;
/// Longest PromQL kept in a criterion (status stays bounded).
pub const MAX_QUERY_CHARS: usize = 512;
/// Longest confidence note.
pub const MAX_NOTE_CHARS: usize = 1024;
/// The test named in `results.confidence.method`.
pub const METHOD: &str = "mann-whitney-u";
/// Decimal places kept in percentages and costs.
pub const DECIMALS: i32 = 6;
/// Thresholds are compared with this slack (percentage points) against the rounded value.
const TOLERANCE: f64 = 1e-9;

/// Criterion names, as in `spec.successCriteria`.
pub mod criterion {
    pub const MIN_SERIES_REDUCTION: &str = "minSeriesReductionPercent";
    pub const MIN_CRITICAL_RETENTION: &str = "minCriticalRetentionPercent";
    pub const MAX_COLLECTOR_CPU_INCREASE: &str = "maxCollectorCpuIncreasePercent";
    pub const MAX_COLLECTOR_MEMORY_INCREASE: &str = "maxCollectorMemoryIncreasePercent";
    pub const MIN_COST_REDUCTION: &str = "minCostReductionPercent";
}

/// The results for status and what they mean.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Everything measured and compared (partial when the outcome is `NoData`).
    pub results: Results,
    /// The verdict, or why there is none.
    pub outcome: Outcome,
}

/// What an evaluation concluded.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Enough data to judge.
    Verdict(Verdict),
    /// Nothing to judge: the experiment fails with reason `NoData` (never `Pass`).
    NoData(String),
}

impl Evaluation {
    /// A one-line summary for status messages and Events.
    pub fn summary(&self) -> String {
        let verdict = match &self.outcome {
            Outcome::NoData(reason) => return format!("no data: {reason}"),
            Outcome::Verdict(v) => *v,
        };
        let percent = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1}%"));
        let r = &self.results;
        let mut summary = format!(
            "{verdict:?}: series reduction {}, critical retention {}, cost reduction {}",
            percent(r.series_reduction_percent),
            percent(r.critical_retention_percent),
            percent(r.cost_reduction_percent)
        );
        let failed: Vec<&str> = r
            .criteria
            .iter()
            .filter(|c| c.observed.is_some() && !c.passed)
            .map(|c| c.name.as_str())
            .collect();
        if verdict == Verdict::Fail && !failed.is_empty() {
            summary.push_str(&format!("; failed {}", failed.join(", ")));
        }
        if let Some(note) = r.confidence.as_ref().and_then(|c| c.note.as_deref())
            && verdict != Verdict::Fail
        {
            summary.push_str("; ");
            summary.push_str(note);
        }
        summary
    }
}

/// Judges the candidate against the baseline under `spec`'s criteria, cost model and
/// significance level.
pub fn evaluate(
    spec: &ExperimentSpec,
    baseline: &Measurements,
    candidate: &Measurements,
) -> Evaluation {
    let base_series = finite(&baseline.per_step_series);
    let mut cand_series = finite(&candidate.per_step_series);
    let mut results = Results {
        baseline: variant_results(baseline, &base_series),
        candidate: variant_results(candidate, &cand_series),
        ..Results::default()
    };
    if base_series.iter().all(|&v| v == 0.0) {
        return no_data(
            results,
            "the baseline reported no process series in the analysis window",
        );
    }
    if cand_series.is_empty() {
        let alive_steps = finite(&candidate.per_step_cpu)
            .len()
            .max(finite(&candidate.per_step_memory).len());
        if alive_steps == 0 {
            return no_data(
                results,
                "the candidate reported neither process series nor collector telemetry in the \
                 analysis window",
            );
        }
        // The collector ran and reported itself, but kept no process series: zero at those steps.
        cand_series = vec![0.0; alive_steps];
        results.candidate = variant_results(candidate, &cand_series);
    }

    let mut notes = Vec::new();
    let base_mean = mean(&base_series).unwrap_or(0.0);
    let cand_mean = mean(&cand_series).unwrap_or(0.0);
    results.series_reduction_percent = reduction(base_mean, cand_mean);
    results.datapoint_reduction_percent = reduction(
        baseline.datapoints_per_second,
        candidate.datapoints_per_second,
    );
    results.critical_retention_percent = retention(baseline, candidate, &mut notes);
    let model = &spec.cost_model;
    let base_cost = monthly_cost(base_mean, baseline.datapoints_per_second, model);
    let cand_cost = monthly_cost(cand_mean, candidate.datapoints_per_second, model);
    results.cost_reduction_percent = reduction(base_cost, cand_cost);
    let cost = MonthlyCost {
        baseline: round(base_cost),
        candidate: round(cand_cost),
        currency: model.currency.clone(),
    };
    results.estimated_monthly_cost = Some(cost);
    results.criteria = criteria(spec, &results, candidate);

    // The statistics: is the candidate's series count lower, step for step?
    let significance_criteria = SignificanceCriteria {
        alpha: spec.analysis.significance_level,
        min_samples: MIN_SAMPLES,
    };
    let test = mann_whitney_u_with(&cand_series, &base_series, Alternative::Less);
    let significance = test.map(|t| significance_criteria.classify(&t));
    let (n_base, n_cand) = (base_series.len(), cand_series.len());
    let alpha = significance_criteria.alpha;
    let statement = match (&test, significance) {
        (_, Some(Significance::TooFewSamples)) | (None, _) => format!(
            "too few samples: {n_base} baseline and {n_cand} candidate steps with data, need \
             {MIN_SAMPLES} each"
        ),
        (Some(t), Some(Significance::Significant { .. })) => format!(
            "candidate series are significantly lower than the baseline's (p = {:.3e} < α = {alpha})",
            t.p_value
        ),
        (Some(t), _) => format!(
            "no significant reduction of series (p = {:.3e} ≥ α = {alpha})",
            t.p_value
        ),
    };
    notes.insert(0, statement);

    let failed = results
        .criteria
        .iter()
        .any(|c| c.observed.is_some() && !c.passed);
    let unobserved: Vec<&str> = results
        .criteria
        .iter()
        .filter(|c| c.observed.is_none())
        .map(|c| c.name.as_str())
        .collect();
    let noise = coefficient_of_variation(&base_series).filter(|cv| *cv > MAX_BASELINE_CV);
    let verdict = if n_base < MIN_SAMPLES || n_cand < MIN_SAMPLES {
        Verdict::Inconclusive
    } else if failed {
        Verdict::Fail
    } else if !unobserved.is_empty() {
        notes.push(format!("no data for {}", unobserved.join(", ")));
        Verdict::Inconclusive
    } else if let Some(cv) = noise {
        notes.push(format!(
            "baseline too noisy: coefficient of variation {cv:.2} > {MAX_BASELINE_CV}"
        ));
        Verdict::Inconclusive
    } else if !significance.is_some_and(|s| s.is_significant()) {
        Verdict::Inconclusive
    } else if results
        .series_reduction_percent
        .is_none_or(|r| r < MIN_REDUCTION_FOR_PASS_PERCENT)
    {
        notes.push(format!(
            "series reduction below the {MIN_REDUCTION_FOR_PASS_PERCENT}% a pass needs"
        ));
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    };

    results.confidence = Some(Confidence {
        method: METHOD.to_string(),
        p_value: test.map(|t| t.p_value),
        confidence_percent: test.map(|t| (1.0 - t.p_value) * 100.0),
        samples: u32::try_from(n_base.min(n_cand)).unwrap_or(u32::MAX),
        note: Some(truncate(&notes.join("; "), MAX_NOTE_CHARS)),
    });
    Evaluation {
        results,
        outcome: Outcome::Verdict(verdict),
    }
}

/// Estimated monthly cost: `series / 1000 × perThousandSeriesMonth + datapoints/s × 2,592,000
/// (a 30-day month) / 1e6 × perMillionDatapoints`, with `series` the mean active series per step.
/// Results report it rounded to [`DECIMALS`] places.
pub fn monthly_cost(series: f64, datapoints_per_second: f64, model: &CostModel) -> f64 {
    series / 1000.0 * model.per_thousand_series_month
        + datapoints_per_second * MONTH_SECONDS / 1e6 * model.per_million_datapoints
}

fn no_data(results: Results, reason: &str) -> Evaluation {
    Evaluation {
        results,
        outcome: Outcome::NoData(reason.to_string()),
    }
}

fn variant_results(m: &Measurements, series: &[f64]) -> VariantResults {
    VariantResults {
        series: mean(series),
        distinct_series: Some(m.distinct_series),
        datapoints_per_second: Some(m.datapoints_per_second),
        collector_cpu_cores: mean(&finite(&m.per_step_cpu)),
        collector_memory_bytes: mean(&finite(&m.per_step_memory)),
        critical_processes_seen: Some(u32::try_from(m.critical_names.len()).unwrap_or(u32::MAX)),
        samples: u32::try_from(series.len()).unwrap_or(u32::MAX),
    }
}

/// Share of the baseline's critical names the candidate reported. With no critical pattern
/// configured it is 100% (nothing to lose); with patterns configured but none seen by the baseline
/// it cannot be measured (None: the simulation or the baseline is not doing its job).
fn retention(
    baseline: &Measurements,
    candidate: &Measurements,
    notes: &mut Vec<String>,
) -> Option<f64> {
    if baseline.critical_names.is_empty() {
        let patterns: BTreeSet<&str> = baseline
            .critical_patterns
            .iter()
            .chain(&candidate.critical_patterns)
            .map(String::as_str)
            .collect();
        if patterns.is_empty() {
            notes.push("no critical processes configured: retention counts as 100%".to_string());
            return Some(100.0);
        }
        notes.push(format!(
            "the baseline saw no process matching the critical patterns {patterns:?}: retention \
             cannot be measured"
        ));
        return None;
    }
    let kept = baseline
        .critical_names
        .intersection(&candidate.critical_names)
        .count();
    Some(round(
        kept as f64 / baseline.critical_names.len() as f64 * 100.0,
    ))
}

fn criteria(
    spec: &ExperimentSpec,
    results: &Results,
    candidate: &Measurements,
) -> Vec<CriterionResult> {
    let sc = &spec.success_criteria;
    let query = |w: &str| candidate.query(w).map(|q| truncate(q, MAX_QUERY_CHARS));
    let mut out = Vec::new();
    if let Some(threshold) = sc.min_series_reduction_percent {
        out.push(at_least(
            criterion::MIN_SERIES_REDUCTION,
            threshold,
            results.series_reduction_percent,
            query(what::SERIES),
        ));
    }
    out.push(at_least(
        criterion::MIN_CRITICAL_RETENTION,
        sc.min_critical_retention_percent,
        results.critical_retention_percent,
        query(what::CRITICAL_PROCESSES),
    ));
    if let Some(threshold) = sc.max_collector_cpu_increase_percent {
        out.push(at_most(
            criterion::MAX_COLLECTOR_CPU_INCREASE,
            threshold,
            increase(
                results.baseline.collector_cpu_cores,
                results.candidate.collector_cpu_cores,
            ),
            query(what::COLLECTOR_CPU),
        ));
    }
    if let Some(threshold) = sc.max_collector_memory_increase_percent {
        out.push(at_most(
            criterion::MAX_COLLECTOR_MEMORY_INCREASE,
            threshold,
            increase(
                results.baseline.collector_memory_bytes,
                results.candidate.collector_memory_bytes,
            ),
            query(what::COLLECTOR_MEMORY),
        ));
    }
    if let Some(threshold) = sc.min_cost_reduction_percent {
        let cost_query = match (
            candidate.query(what::SERIES),
            candidate.query(what::DATAPOINTS_PER_SECOND),
        ) {
            (Some(s), Some(d)) => Some(truncate(&format!("{s}; {d}"), MAX_QUERY_CHARS)),
            (s, d) => s.or(d).map(|q| truncate(q, MAX_QUERY_CHARS)),
        };
        out.push(at_least(
            criterion::MIN_COST_REDUCTION,
            threshold,
            results.cost_reduction_percent,
            cost_query,
        ));
    }
    out
}

fn at_least(
    name: &str,
    threshold: f64,
    observed: Option<f64>,
    query: Option<String>,
) -> CriterionResult {
    CriterionResult {
        name: name.to_string(),
        threshold,
        observed,
        passed: observed.is_some_and(|o| o >= threshold - TOLERANCE),
        query,
    }
}

fn at_most(
    name: &str,
    threshold: f64,
    observed: Option<f64>,
    query: Option<String>,
) -> CriterionResult {
    CriterionResult {
        name: name.to_string(),
        threshold,
        observed,
        passed: observed.is_some_and(|o| o <= threshold + TOLERANCE),
        query,
    }
}

/// `(1 − candidate/baseline) × 100`, rounded to [`DECIMALS`]; None when the baseline is not
/// positive.
fn reduction(baseline: f64, candidate: f64) -> Option<f64> {
    (baseline > 0.0 && candidate.is_finite())
        .then(|| round((baseline - candidate) / baseline * 100.0))
        .filter(|r| r.is_finite())
}

/// Rounds to [`DECIMALS`] decimal places: status shows `90` rather than `89.99999999999999`, and
/// thresholds are compared with the value shown.
fn round(x: f64) -> f64 {
    let scale = 10f64.powi(DECIMALS);
    (x * scale).round() / scale
}

/// `(candidate/baseline − 1) × 100`; None without both values or with a non-positive baseline.
fn increase(baseline: Option<f64>, candidate: Option<f64>) -> Option<f64> {
    let (b, c) = (baseline?, candidate?);
    reduction(b, c).map(|r| -r)
}

fn finite(xs: &[f64]) -> Vec<f64> {
    xs.iter().copied().filter(|x| x.is_finite()).collect()
}

fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// At most `max` characters, the last one `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(criteria: serde_json::Value) -> ExperimentSpec {
        serde_json::from_value(json!({
            "baseline": {"pipelineRef": {"name": "b"}},
            "candidate": {"pipelineRef": {"name": "c"}},
            "analysis": {"interval": "30s", "significanceLevel": 0.05},
            "successCriteria": criteria,
        }))
        .expect("valid spec")
    }

    /// Per-step values around `level` with a small deterministic wobble (CV ≈ 0.01).
    fn wobbly(level: f64, steps: usize) -> Vec<f64> {
        (0..steps)
            .map(|i| level * (1.0 + [0.0, 0.01, -0.01, 0.02, -0.02][i % 5]))
            .collect()
    }

    fn measured(series: Vec<f64>, dps: f64, critical: &[&str]) -> Measurements {
        let steps = series.len();
        Measurements {
            distinct_series: mean(&series).unwrap_or(0.0),
            per_step_series: series,
            datapoints_per_second: dps,
            per_step_cpu: vec![0.1; steps],
            per_step_memory: vec![100e6; steps],
            critical_names: critical.iter().map(|s| s.to_string()).collect(),
            critical_patterns: vec!["^postgres$".into(), "^nginx$".into()],
            queries: vec![
                (what::SERIES.into(), "count(x)".into()),
                (what::DATAPOINTS_PER_SECOND.into(), "y / 60".into()),
            ],
        }
    }

    fn baseline() -> Measurements {
        measured(wobbly(200.0, 20), 200.0 / 15.0, &["nginx", "postgres"])
    }

    fn candidate() -> Measurements {
        measured(wobbly(20.0, 20), 20.0 / 15.0, &["nginx", "postgres"])
    }

    fn verdict(e: &Evaluation) -> Verdict {
        match &e.outcome {
            Outcome::Verdict(v) => *v,
            Outcome::NoData(reason) => panic!("no data: {reason}"),
        }
    }

    fn criterion<'a>(e: &'a Evaluation, name: &str) -> &'a CriterionResult {
        e.results
            .criteria
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("criterion {name} missing"))
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn a_clear_reduction_passes() {
        let spec = spec(json!({"minSeriesReductionPercent": 80, "minCostReductionPercent": 50}));
        let e = evaluate(&spec, &baseline(), &candidate());
        assert_eq!(verdict(&e), Verdict::Pass, "{}", e.summary());
        let r = &e.results;
        assert!(close(r.series_reduction_percent.unwrap(), 90.0));
        assert!(close(r.datapoint_reduction_percent.unwrap(), 90.0));
        assert_eq!(r.critical_retention_percent, Some(100.0));
        assert_eq!(r.baseline.samples, 20);
        assert_eq!(r.candidate.critical_processes_seen, Some(2));
        let names: Vec<&str> = r.criteria.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "minSeriesReductionPercent",
                "minCriticalRetentionPercent",
                "minCostReductionPercent"
            ]
        );
        assert!(r.criteria.iter().all(|c| c.passed));
        assert_eq!(
            criterion(&e, "minSeriesReductionPercent").query.as_deref(),
            Some("count(x)")
        );
        assert_eq!(
            criterion(&e, "minCostReductionPercent").query.as_deref(),
            Some("count(x); y / 60")
        );
        let confidence = r.confidence.as_ref().unwrap();
        assert_eq!(confidence.method, "mann-whitney-u");
        assert_eq!(confidence.samples, 20);
        assert!(confidence.p_value.unwrap() < 1e-6);
        assert!(confidence.confidence_percent.unwrap() > 99.9999);
        assert!(
            confidence
                .note
                .as_deref()
                .unwrap()
                .starts_with("candidate series are significantly lower")
        );
    }

    #[test]
    fn cost_uses_a_thirty_day_month() {
        // Baseline: 200 series, 200/15 dps. 200/1000 × 8 = 1.6; 13.33… × 2,592,000 / 1e6 × 0.5
        // = 17.28. Candidate: a tenth of each.
        let e = evaluate(&spec(json!({})), &baseline(), &candidate());
        let cost = e.results.estimated_monthly_cost.as_ref().unwrap();
        assert!(close(cost.baseline, 1.6 + 17.28), "{}", cost.baseline);
        assert!(close(cost.candidate, 0.16 + 1.728), "{}", cost.candidate);
        assert_eq!(cost.currency, "USD");
        assert!(close(e.results.cost_reduction_percent.unwrap(), 90.0));
    }

    #[test]
    fn an_a_a_experiment_never_passes() {
        // No reduction criterion: nothing fails, nothing is significant.
        let e = evaluate(&spec(json!({})), &baseline(), &baseline());
        assert_eq!(verdict(&e), Verdict::Inconclusive);
        let confidence = e.results.confidence.as_ref().unwrap();
        assert!(confidence.p_value.unwrap() > 0.4);
        assert!(
            confidence
                .note
                .as_deref()
                .unwrap()
                .starts_with("no significant reduction")
        );
        assert_eq!(e.results.series_reduction_percent, Some(0.0));
        // Constant, identical data: all ties, p = 1.
        let flat = measured(vec![200.0; 10], 10.0, &["nginx"]);
        let e = evaluate(&spec(json!({})), &flat, &flat);
        assert_eq!(verdict(&e), Verdict::Inconclusive);
        assert_eq!(e.results.confidence.unwrap().p_value, Some(1.0));
        // With a reduction criterion it fails outright.
        let e = evaluate(
            &spec(json!({"minSeriesReductionPercent": 10})),
            &baseline(),
            &baseline(),
        );
        assert_eq!(verdict(&e), Verdict::Fail);
    }

    #[test]
    fn too_small_a_reduction_fails() {
        let half = measured(wobbly(100.0, 20), 100.0 / 15.0, &["nginx", "postgres"]);
        let e = evaluate(
            &spec(json!({"minSeriesReductionPercent": 80})),
            &baseline(),
            &half,
        );
        assert_eq!(verdict(&e), Verdict::Fail);
        let c = criterion(&e, "minSeriesReductionPercent");
        assert!(!c.passed);
        assert!(close(c.observed.unwrap(), 50.0));
        assert_eq!(c.threshold, 80.0);
        assert!(e.summary().contains("failed minSeriesReductionPercent"));
    }

    #[test]
    fn a_lost_critical_process_fails() {
        let without_nginx = measured(wobbly(20.0, 20), 20.0 / 15.0, &["postgres"]);
        let e = evaluate(&spec(json!({})), &baseline(), &without_nginx);
        assert_eq!(verdict(&e), Verdict::Fail);
        assert_eq!(e.results.critical_retention_percent, Some(50.0));
        let c = criterion(&e, "minCriticalRetentionPercent");
        assert_eq!((c.threshold, c.passed), (100.0, false));
        // A lower threshold tolerates it.
        let e = evaluate(
            &spec(json!({"minCriticalRetentionPercent": 50})),
            &baseline(),
            &without_nginx,
        );
        assert_eq!(verdict(&e), Verdict::Pass);
    }

    #[test]
    fn no_baseline_data_is_no_data() {
        let empty = measured(vec![], 0.0, &[]);
        let e = evaluate(&spec(json!({})), &empty, &candidate());
        assert!(matches!(e.outcome, Outcome::NoData(_)));
        let zeros = measured(vec![0.0; 20], 0.0, &[]);
        let e = evaluate(&spec(json!({})), &zeros, &candidate());
        assert!(matches!(e.outcome, Outcome::NoData(ref r) if r.contains("baseline")));
        assert_eq!(e.results.criteria, vec![]);
        // Non-finite steps are not data either.
        let nan = measured(vec![f64::NAN; 20], 0.0, &[]);
        let e = evaluate(&spec(json!({})), &nan, &candidate());
        assert!(matches!(e.outcome, Outcome::NoData(_)));
    }

    #[test]
    fn a_silent_candidate_is_no_data_but_an_empty_one_is_measured() {
        let mut silent = measured(vec![], 0.0, &[]);
        silent.per_step_cpu.clear();
        silent.per_step_memory.clear();
        let e = evaluate(&spec(json!({})), &baseline(), &silent);
        assert!(matches!(e.outcome, Outcome::NoData(ref r) if r.contains("candidate")));

        // The collector reports itself (20 steps) but keeps no process series.
        let mut empty = measured(vec![], 0.0, &[]);
        empty.per_step_cpu = vec![0.05; 20];
        let e = evaluate(&spec(json!({})), &baseline(), &empty);
        assert_eq!(verdict(&e), Verdict::Fail); // lost postgres and nginx
        assert_eq!(e.results.series_reduction_percent, Some(100.0));
        assert_eq!(e.results.candidate.samples, 20);
        assert_eq!(e.results.critical_retention_percent, Some(0.0));
    }

    #[test]
    fn too_few_samples_are_inconclusive_even_when_a_criterion_fails() {
        let b = measured(wobbly(200.0, 4), 10.0, &["nginx", "postgres"]);
        let c = measured(wobbly(20.0, 4), 1.0, &["postgres"]);
        let e = evaluate(&spec(json!({"minSeriesReductionPercent": 95})), &b, &c);
        assert_eq!(verdict(&e), Verdict::Inconclusive);
        let confidence = e.results.confidence.as_ref().unwrap();
        assert_eq!(confidence.samples, 4);
        assert!(confidence.p_value.is_some());
        assert!(
            confidence
                .note
                .as_deref()
                .unwrap()
                .starts_with("too few samples")
        );
        // The criteria are still reported.
        assert!(!criterion(&e, "minSeriesReductionPercent").passed);
    }

    #[test]
    fn a_noisy_baseline_is_inconclusive() {
        // Alternating 50 / 350: CV ≈ 0.77.
        let noisy: Vec<f64> = (0..20)
            .map(|i| if i % 2 == 0 { 50.0 } else { 350.0 })
            .collect();
        let b = measured(noisy, 10.0, &["nginx", "postgres"]);
        let c = measured(wobbly(5.0, 20), 1.0, &["nginx", "postgres"]);
        let e = evaluate(&spec(json!({})), &b, &c);
        assert_eq!(verdict(&e), Verdict::Inconclusive);
        assert!(
            e.results
                .confidence
                .unwrap()
                .note
                .unwrap()
                .contains("too noisy"),
            "noise note"
        );
    }

    #[test]
    fn critical_retention_without_critical_names_in_the_baseline() {
        // Patterns configured but the baseline saw none: suspicious, no verdict.
        let b = measured(wobbly(200.0, 20), 10.0, &[]);
        let c = measured(wobbly(20.0, 20), 1.0, &[]);
        let e = evaluate(&spec(json!({})), &b, &c);
        assert_eq!(verdict(&e), Verdict::Inconclusive);
        assert_eq!(e.results.critical_retention_percent, None);
        let retention = criterion(&e, "minCriticalRetentionPercent");
        assert_eq!((retention.observed, retention.passed), (None, false));
        let note = e.results.confidence.unwrap().note.unwrap();
        assert!(note.contains("saw no process matching"), "{note}");
        assert!(
            note.contains("no data for minCriticalRetentionPercent"),
            "{note}"
        );

        // No patterns at all: nothing to lose, 100%.
        let (mut b, mut c) = (b, c);
        b.critical_patterns.clear();
        c.critical_patterns.clear();
        let e = evaluate(&spec(json!({})), &b, &c);
        assert_eq!(verdict(&e), Verdict::Pass);
        assert_eq!(e.results.critical_retention_percent, Some(100.0));
    }

    #[test]
    fn collector_overhead_criteria() {
        let mut c = candidate();
        c.per_step_cpu = vec![0.13; 20]; // +30% over 0.1
        c.per_step_memory = vec![90e6; 20]; // −10%
        let e = evaluate(
            &spec(json!({
                "maxCollectorCpuIncreasePercent": 20,
                "maxCollectorMemoryIncreasePercent": 0,
            })),
            &baseline(),
            &c,
        );
        assert_eq!(verdict(&e), Verdict::Fail);
        let cpu = criterion(&e, "maxCollectorCpuIncreasePercent");
        assert!(close(cpu.observed.unwrap(), 30.0) && !cpu.passed);
        let memory = criterion(&e, "maxCollectorMemoryIncreasePercent");
        assert!(close(memory.observed.unwrap(), -10.0) && memory.passed);
        assert!(close(
            e.results.candidate.collector_cpu_cores.unwrap(),
            0.13
        ));

        // Without the candidate's CPU telemetry the criterion cannot be judged.
        c.per_step_cpu.clear();
        let e = evaluate(
            &spec(json!({"maxCollectorCpuIncreasePercent": 20})),
            &baseline(),
            &c,
        );
        assert_eq!(verdict(&e), Verdict::Inconclusive);
        assert_eq!(
            criterion(&e, "maxCollectorCpuIncreasePercent").observed,
            None
        );
    }

    #[test]
    fn a_negligible_but_significant_reduction_does_not_pass() {
        // 200 vs 199 at every step: completely separated, p tiny, but only 0.5% less.
        let b = measured(vec![200.0; 20], 10.0, &["nginx", "postgres"]);
        let c = measured(vec![199.0; 20], 10.0, &["nginx", "postgres"]);
        let e = evaluate(&spec(json!({})), &b, &c);
        assert!(e.results.confidence.as_ref().unwrap().p_value.unwrap() < 1e-6);
        assert_eq!(verdict(&e), Verdict::Inconclusive);
        assert_eq!(e.results.series_reduction_percent, Some(0.5));
        assert!(
            e.summary().contains("below the 1% a pass needs"),
            "{}",
            e.summary()
        );
    }

    #[test]
    fn a_significant_increase_does_not_pass() {
        let e = evaluate(&spec(json!({})), &candidate(), &baseline());
        assert_eq!(verdict(&e), Verdict::Inconclusive);
        assert!(close(e.results.series_reduction_percent.unwrap(), -900.0));
    }

    #[test]
    fn queries_and_notes_are_bounded() {
        let mut c = candidate();
        c.queries = vec![(what::SERIES.into(), "é".repeat(2000))];
        let e = evaluate(
            &spec(json!({"minSeriesReductionPercent": 1})),
            &baseline(),
            &c,
        );
        let q = criterion(&e, "minSeriesReductionPercent")
            .query
            .clone()
            .unwrap();
        assert_eq!(q.chars().count(), MAX_QUERY_CHARS);
        assert!(q.ends_with('…'));
        assert_eq!(truncate("short", 512), "short");
    }
}
