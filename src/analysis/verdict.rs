//! The verdict of an Experiment: checks that both variants covered the window, compares them
//! step by step, checks the success criteria and tests the series reduction (pure).
//!
//! Rules (DESIGN §4 and §6), in order:
//! - No baseline process series in the window: [`Outcome::NoData`], never a verdict.
//! - `Inconclusive` when the data cannot support a comparison, whatever else: the candidate wrote
//!   no process series or its collectors' own telemetry shows no scraping or exporting
//!   (`CandidateNoData`); a collector of either variant failed to export or refused points
//!   (`ExportFailures`); the variants' collectors reported from different nodes
//!   (`NodeMismatch`); fewer than [`MIN_COVERAGE_PERCENT`] of the steps have process series from
//!   both, from the same number of collectors (`DataGaps`). Missing data is never a reduction.
//! - Fewer than [`MIN_SAMPLES`] paired steps: `Inconclusive` (`TooFewSamples`).
//! - Any criterion with an observed value that misses its threshold: `Fail`.
//! - A criterion that could not be observed: `Inconclusive` (`CriterionNotObserved`).
//! - Baseline per-step series with a coefficient of variation above [`MAX_BASELINE_CV`]:
//!   `Inconclusive` (`BaselineTooNoisy`).
//! - Otherwise `Pass` only when the mean per-step relative reduction is significantly above
//!   [`MIN_REDUCTION_FOR_PASS_PERCENT`] (one-sided p below `analysis.significanceLevel`,
//!   autocorrelation-corrected; see [`super::stats`]), i.e. its lower confidence bound is above
//!   it, and that bound also clears `minSeriesReductionPercent`; else `Inconclusive`
//!   (`NotSignificant` or `ReductionUncertain`). Identical variants (A/A) land on
//!   `NotSignificant`.

use std::collections::{BTreeMap, BTreeSet};

use super::measure::Measurements;
use super::queries::what;
use super::stats::{LocationTest, autocorrelation_corrected_test, coefficient_of_variation};
use crate::crd::experiment::{
    Confidence, CostModel, Coverage, CriterionResult, ExperimentSpec, InconclusiveReason,
    MonthlyCost, Results, VariantResults, Verdict,
};

/// Seconds in the month the cost model prices: 30 days.
pub const MONTH_SECONDS: f64 = 2_592_000.0;
/// Largest coefficient of variation of the baseline's per-step series that still gives a verdict.
/// A steady process population sits well below 0.1; above 0.5 the level is dominated by noise or a
/// trend (e.g. a load spike) and the reduction measured against it is not trustworthy.
pub const MAX_BASELINE_CV: f64 = 0.5;
/// The margin of the test, percent: the p-value is that of "the candidate reduces series by at
/// most this much", so a pass needs the lower confidence bound above it. Identical pipelines do
/// not count exactly the same series: collectors that scrape at different phases see different
/// short-lived processes, a difference of a few tenths of a percent that is real within a run and
/// that no test can tell from a pipeline's effect (docs/verdict.md); and a reduction this small
/// is not a cheaper pipeline anyway.
pub const MIN_REDUCTION_FOR_PASS_PERCENT: f64 = 1.0;
/// Fewest paired steps for a verdict.
pub const MIN_SAMPLES: usize = 5;
/// Share of the window's steps that must have process series from both variants, from the same
/// number of collectors, percent.
pub const MIN_COVERAGE_PERCENT: f64 = 90.0;
/// Longest PromQL kept in a criterion (status stays bounded).
pub const MAX_QUERY_CHARS: usize = 512;
/// Longest confidence note.
pub const MAX_NOTE_CHARS: usize = 1024;
/// The method named in `results.confidence.method`.
pub const METHOD: &str = "paired per-step relative series reduction; one-sided Student-t test \
     and bounds on its mean with the effective sample size n/tau (tau: the larger of the AR(1) \
     figure from the bias-corrected lag-1 autocorrelation and Geyer's integrated autocorrelation \
     time); Hodges-Lehmann estimate reported beside it";
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
    /// The verdict, if there is one.
    pub fn verdict(&self) -> Option<Verdict> {
        match self.outcome {
            Outcome::Verdict(v) => Some(v),
            Outcome::NoData(_) => None,
        }
    }

    /// A one-line summary for status messages and Events.
    pub fn summary(&self) -> String {
        let verdict = match &self.outcome {
            Outcome::NoData(reason) => return format!("no data: {reason}"),
            Outcome::Verdict(v) => *v,
        };
        let percent = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1}%"));
        let r = &self.results;
        let mut summary = format!("{verdict:?}");
        if let Some(reason) = r.inconclusive_reason {
            summary.push_str(&format!(" ({reason:?})"));
        }
        summary.push_str(&format!(
            ": series reduction {}, critical retention {}, cost reduction {}",
            percent(r.series_reduction_percent),
            percent(r.critical_retention_percent),
            percent(r.cost_reduction_percent)
        ));
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

/// The steps of the window where both variants can be compared, and why others cannot.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pairing {
    /// Steps in the window.
    pub steps: usize,
    /// Steps with baseline process series.
    pub baseline_steps: usize,
    /// Steps with candidate process series.
    pub candidate_steps: usize,
    /// Steps where both had series but from a different number of collectors.
    pub collector_mismatches: usize,
    /// `(baseline, candidate)` series at each paired step, in time order.
    pub pairs: Vec<(f64, f64)>,
}

impl Pairing {
    /// Pairs the variants' per-step series by timestamp: a step is paired when both have a
    /// positive, finite series count and the same (known) number of collectors reporting.
    pub fn of(baseline: &Measurements, candidate: &Measurements) -> Pairing {
        let data = |m: &Measurements| -> BTreeMap<i64, (f64, Option<f64>)> {
            m.steps
                .iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    let series = positive(m.series.get(i).copied().flatten())?;
                    let collectors = positive(m.collectors.get(i).copied().flatten());
                    Some((*t, (series, collectors)))
                })
                .collect()
        };
        let (base, cand) = (data(baseline), data(candidate));
        let mut pairing = Pairing {
            steps: baseline.steps.len().max(candidate.steps.len()),
            baseline_steps: base.len(),
            candidate_steps: cand.len(),
            ..Pairing::default()
        };
        for (t, (b, b_collectors)) in &base {
            let Some((c, c_collectors)) = cand.get(t) else {
                continue;
            };
            if b_collectors.is_some() && b_collectors == c_collectors {
                pairing.pairs.push((*b, *c));
            } else {
                pairing.collector_mismatches += 1;
            }
        }
        pairing
    }

    /// Paired steps over all steps, percent (0 for an empty window).
    pub fn percent(&self) -> f64 {
        if self.steps == 0 {
            0.0
        } else {
            self.pairs.len() as f64 / self.steps as f64 * 100.0
        }
    }

    /// The candidate's relative reduction at each paired step, `(b − c) / b`.
    pub fn relative_reductions(&self) -> Vec<f64> {
        self.pairs.iter().map(|(b, c)| (b - c) / b).collect()
    }
}

/// Judges the candidate against the baseline under `spec`'s criteria, cost model and
/// significance level.
pub fn evaluate(
    spec: &ExperimentSpec,
    baseline: &Measurements,
    candidate: &Measurements,
) -> Evaluation {
    let pairing = Pairing::of(baseline, candidate);
    let mut results = Results {
        baseline: variant_results(baseline),
        candidate: variant_results(candidate),
        coverage: Some(coverage(&pairing, baseline, candidate)),
        ..Results::default()
    };
    if pairing.baseline_steps == 0 {
        return no_data(
            results,
            "the baseline reported no process series in the analysis window",
        );
    }

    let mut notes = Vec::new();
    let alpha = spec.analysis.significance_level;
    let margin = MIN_REDUCTION_FOR_PASS_PERCENT / 100.0;
    let test = autocorrelation_corrected_test(&pairing.relative_reductions(), margin, alpha);
    let paired_mean =
        |side: fn(&(f64, f64)) -> f64| mean(&pairing.pairs.iter().map(side).collect::<Vec<_>>());
    // Costs compare the variants over the same steps; without any, over what each has.
    let (base_mean, cand_mean) = match (paired_mean(|p| p.0), paired_mean(|p| p.1)) {
        (Some(b), Some(c)) => (b, c),
        _ => (
            results.baseline.series.unwrap_or(0.0),
            results.candidate.series.unwrap_or(0.0),
        ),
    };
    results.series_reduction_percent = test.map(|t| round(t.mean * 100.0));
    results.datapoint_reduction_percent = reduction(
        baseline.datapoints_per_second,
        candidate.datapoints_per_second,
    );
    results.critical_retention_percent = retention(baseline, candidate, &mut notes);
    let model = &spec.cost_model;
    let base_cost = monthly_cost(base_mean, baseline.datapoints_per_second, model);
    let cand_cost = monthly_cost(cand_mean, candidate.datapoints_per_second, model);
    results.cost_reduction_percent = reduction(base_cost, cand_cost);
    results.estimated_monthly_cost = Some(MonthlyCost {
        baseline: round(base_cost),
        candidate: round(cand_cost),
        currency: model.currency.clone(),
    });
    results.criteria = criteria(spec, &results, candidate);

    let (verdict, reason, statement) =
        judge(spec, &results, &pairing, baseline, candidate, test.as_ref());
    notes.insert(0, statement);
    results.inconclusive_reason = reason;
    results.confidence = Some(Confidence {
        method: METHOD.to_string(),
        p_value: test.map(|t| t.p_value),
        reduction_percent: test.map(|t| round(t.mean * 100.0)),
        hodges_lehmann_percent: test.map(|t| round(t.hodges_lehmann * 100.0)),
        lower_bound_percent: test.map(|t| round(t.lower * 100.0)),
        upper_bound_percent: test.map(|t| round(t.upper * 100.0)),
        level_percent: round((1.0 - alpha) * 100.0),
        autocorrelation: test.map(|t| round(t.autocorrelation)),
        effective_samples: test.map(|t| round(t.effective_samples)),
        samples: u32::try_from(pairing.pairs.len()).unwrap_or(u32::MAX),
        note: Some(truncate(&notes.join("; "), MAX_NOTE_CHARS)),
    });
    Evaluation {
        results,
        outcome: Outcome::Verdict(verdict),
    }
}

/// Why the data cannot support a comparison, if they cannot (the coverage rules of the module
/// doc, in order).
pub fn data_problem(
    pairing: &Pairing,
    baseline: &Measurements,
    candidate: &Measurements,
) -> Option<(InconclusiveReason, String)> {
    use InconclusiveReason::*;
    if pairing.candidate_steps == 0 {
        return Some((
            CandidateNoData,
            format!(
                "the candidate wrote no process series in any of the {} steps (processors that \
                 drop everything, collectors not running, or samples Prometheus rejected)",
                pairing.steps
            ),
        ));
    }
    let failed = [
        ("baseline", baseline.telemetry.failed_points),
        ("candidate", candidate.telemetry.failed_points),
    ];
    if let Some((variant, points)) = failed.iter().find(|(_, p)| *p > 0.0) {
        return Some((
            ExportFailures,
            format!("the {variant}'s collectors failed to export or refused {points:.0} points"),
        ));
    }
    let telemetry = &candidate.telemetry;
    let missing = match (telemetry.scraped_points, telemetry.exported_points) {
        (None, _) | (Some(0.0), _) => Some("scraped no process"),
        (_, None) | (_, Some(0.0)) => Some("exported no"),
        _ => None,
    };
    if let Some(what) = missing {
        return Some((
            CandidateNoData,
            format!("the candidate's own telemetry shows it {what} points in the window"),
        ));
    }
    if baseline.nodes.is_empty() || baseline.nodes != candidate.nodes {
        return Some((
            NodeMismatch,
            format!(
                "collectors reported from different nodes: baseline {}, candidate {}",
                node_list(&baseline.nodes),
                node_list(&candidate.nodes)
            ),
        ));
    }
    if pairing.percent() < MIN_COVERAGE_PERCENT {
        return Some((
            DataGaps,
            format!(
                "only {} of {} steps ({:.0}%, need {MIN_COVERAGE_PERCENT}%) have process series \
                 from both variants' collectors: baseline {} steps, candidate {}, {} with a \
                 different number of collectors",
                pairing.pairs.len(),
                pairing.steps,
                pairing.percent(),
                pairing.baseline_steps,
                pairing.candidate_steps,
                pairing.collector_mismatches
            ),
        ));
    }
    None
}

/// The verdict, its reason when `Inconclusive`, and the statement leading the note.
fn judge(
    spec: &ExperimentSpec,
    results: &Results,
    pairing: &Pairing,
    baseline: &Measurements,
    candidate: &Measurements,
    test: Option<&LocationTest>,
) -> (Verdict, Option<InconclusiveReason>, String) {
    use InconclusiveReason::*;
    let inconclusive = |reason, note: String| (Verdict::Inconclusive, Some(reason), note);
    if let Some((reason, note)) = data_problem(pairing, baseline, candidate) {
        return inconclusive(reason, note);
    }
    let n = pairing.pairs.len();
    let test = match test {
        Some(t) if n >= MIN_SAMPLES => t,
        _ => {
            return inconclusive(
                TooFewSamples,
                format!(
                    "too few samples: {n} steps with data from both variants, need {MIN_SAMPLES}"
                ),
            );
        }
    };
    let level = (1.0 - test.alpha) * 100.0;
    let estimate = format!(
        "series reduction {:.1}% ({level:.0}% bounds {:.1}% to {:.1}%, p = {:.2e}, {n} steps worth \
         {:.1} independent ones)",
        test.mean * 100.0,
        test.lower * 100.0,
        test.upper * 100.0,
        test.p_value,
        test.effective_samples
    );
    let failed = results
        .criteria
        .iter()
        .any(|c| c.observed.is_some() && !c.passed);
    if failed {
        return (Verdict::Fail, None, estimate);
    }
    let unobserved: Vec<&str> = results
        .criteria
        .iter()
        .filter(|c| c.observed.is_none())
        .map(|c| c.name.as_str())
        .collect();
    if !unobserved.is_empty() {
        return inconclusive(
            CriterionNotObserved,
            format!("{estimate}; no data for {}", unobserved.join(", ")),
        );
    }
    let base_series: Vec<f64> = pairing.pairs.iter().map(|p| p.0).collect();
    if let Some(cv) = coefficient_of_variation(&base_series).filter(|cv| *cv > MAX_BASELINE_CV) {
        return inconclusive(
            BaselineTooNoisy,
            format!("baseline too noisy: coefficient of variation {cv:.2} > {MAX_BASELINE_CV}"),
        );
    }
    let alpha = spec.analysis.significance_level;
    let significant = test.p_value < alpha; // false for NaN
    if !significant {
        return inconclusive(
            NotSignificant,
            format!(
                "no significant series reduction above {MIN_REDUCTION_FOR_PASS_PERCENT}%: \
                 {estimate}, p ≥ α = {alpha}"
            ),
        );
    }
    let needed = spec
        .success_criteria
        .min_series_reduction_percent
        .unwrap_or(0.0);
    if test.lower * 100.0 < needed - TOLERANCE {
        return inconclusive(
            ReductionUncertain,
            format!(
                "{estimate}: the lower bound is below the {needed}% minSeriesReductionPercent; \
                 a longer run narrows the bounds"
            ),
        );
    }
    (Verdict::Pass, None, format!("significant: {estimate}"))
}

fn coverage(pairing: &Pairing, baseline: &Measurements, candidate: &Measurements) -> Coverage {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Coverage {
        steps: count(pairing.steps),
        baseline_steps: count(pairing.baseline_steps),
        candidate_steps: count(pairing.candidate_steps),
        paired_steps: count(pairing.pairs.len()),
        percent: round(pairing.percent()),
        required_percent: MIN_COVERAGE_PERCENT,
        baseline_nodes: count(baseline.nodes.len()),
        candidate_nodes: count(candidate.nodes.len()),
        candidate_scraped_points: candidate.telemetry.scraped_points,
        candidate_exported_points: candidate.telemetry.exported_points,
        baseline_failed_points: baseline.telemetry.failed_points,
        candidate_failed_points: candidate.telemetry.failed_points,
    }
}

/// Up to 5 node names and how many more.
fn node_list(nodes: &BTreeSet<String>) -> String {
    let shown: Vec<&str> = nodes.iter().take(5).map(String::as_str).collect();
    match nodes.len() {
        0 => "none".to_string(),
        n if n > shown.len() => format!("{} and {} more", shown.join(", "), n - shown.len()),
        _ => shown.join(", "),
    }
}

fn positive(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite() && *v > 0.0)
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

fn variant_results(m: &Measurements) -> VariantResults {
    let series = present(&m.series);
    VariantResults {
        series: mean(&series),
        distinct_series: Some(m.distinct_series),
        datapoints_per_second: Some(m.datapoints_per_second),
        collector_cpu_cores: mean(&finite(&m.cpu)),
        collector_memory_bytes: mean(&finite(&m.memory)),
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

/// The positive, finite values of per-step series (a step without data or with 0 is skipped).
fn present(xs: &[Option<f64>]) -> Vec<f64> {
    xs.iter().filter_map(|x| positive(*x)).collect()
}

/// The finite values of per-step figures.
fn finite(xs: &[Option<f64>]) -> Vec<f64> {
    xs.iter()
        .flatten()
        .copied()
        .filter(|x| x.is_finite())
        .collect()
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
    use crate::analysis::measure::Telemetry;
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

    /// Per-step values around `level` with a small deterministic wobble (CV ≈ 0.01), shifted by
    /// `phase` steps.
    fn wobbly(level: f64, steps: usize, phase: usize) -> Vec<f64> {
        (0..steps)
            .map(|i| level * (1.0 + [0.0, 0.01, -0.01, 0.02, -0.02][(i + phase) % 5]))
            .collect()
    }

    /// A variant with data at every step from one collector on `node-1` that scraped and
    /// exported without failures.
    fn measured(series: Vec<f64>, dps: f64, critical: &[&str]) -> Measurements {
        let steps = series.len();
        Measurements {
            steps: (0..steps as i64).map(|i| 1_000_000 + i * 30_000).collect(),
            distinct_series: mean(&series).unwrap_or(0.0),
            series: series.into_iter().map(Some).collect(),
            collectors: vec![Some(1.0); steps],
            cpu: vec![Some(0.1); steps],
            memory: vec![Some(100e6); steps],
            nodes: ["node-1".to_string()].into(),
            telemetry: Telemetry {
                scraped_points: Some(1e4),
                exported_points: Some(1e4),
                failed_points: 0.0,
            },
            datapoints_per_second: dps,
            critical_names: critical.iter().map(|s| s.to_string()).collect(),
            critical_patterns: vec!["^postgres$".into(), "^nginx$".into()],
            queries: vec![
                (what::SERIES.into(), "count(x)".into()),
                (what::DATAPOINTS_PER_SECOND.into(), "y / 60".into()),
            ],
        }
    }

    fn baseline() -> Measurements {
        measured(wobbly(200.0, 20, 0), 200.0 / 15.0, &["nginx", "postgres"])
    }

    /// A tenth of the baseline, wobbling out of step with it.
    fn candidate() -> Measurements {
        measured(wobbly(20.0, 20, 2), 20.0 / 15.0, &["nginx", "postgres"])
    }

    fn verdict(e: &Evaluation) -> Verdict {
        match &e.outcome {
            Outcome::Verdict(v) => *v,
            Outcome::NoData(reason) => panic!("no data: {reason}"),
        }
    }

    /// `Inconclusive` for `reason`, with the summary on failure.
    fn assert_inconclusive(e: &Evaluation, reason: InconclusiveReason) {
        assert_eq!(
            (verdict(e), e.results.inconclusive_reason),
            (Verdict::Inconclusive, Some(reason)),
            "{}",
            e.summary()
        );
    }

    fn criterion<'a>(e: &'a Evaluation, name: &str) -> &'a CriterionResult {
        e.results
            .criteria
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("criterion {name} missing"))
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    #[test]
    fn a_clear_reduction_passes() {
        let spec = spec(json!({"minSeriesReductionPercent": 80, "minCostReductionPercent": 50}));
        let e = evaluate(&spec, &baseline(), &candidate());
        assert_eq!(verdict(&e), Verdict::Pass, "{}", e.summary());
        assert_eq!(e.results.inconclusive_reason, None);
        let r = &e.results;
        let reduction = r.series_reduction_percent.unwrap();
        assert!((89.0..91.0).contains(&reduction), "{reduction}");
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
            criterion(&e, "minCostReductionPercent").query.as_deref(),
            Some("count(x); y / 60")
        );
        let confidence = r.confidence.as_ref().unwrap();
        assert_eq!(confidence.method, METHOD);
        assert_eq!((confidence.samples, confidence.level_percent), (20, 95.0));
        assert!(confidence.p_value.unwrap() < 1e-6);
        let (lower, upper) = (
            confidence.lower_bound_percent.unwrap(),
            confidence.upper_bound_percent.unwrap(),
        );
        assert!(lower > 80.0 && lower <= reduction && reduction <= upper && upper < 100.0);
        assert!(confidence.effective_samples.unwrap() <= 20.0);
        let note = confidence.note.as_deref().unwrap();
        assert!(note.starts_with("significant: series reduction"), "{note}");
        let coverage = r.coverage.as_ref().unwrap();
        assert_eq!((coverage.steps, coverage.paired_steps), (20, 20));
        assert_eq!(coverage.percent, 100.0);
    }

    #[test]
    fn cost_uses_a_thirty_day_month() {
        // Baseline: 200 series, 200/15 dps. 200/1000 × 8 = 1.6; 13.33… × 2,592,000 / 1e6 × 0.5
        // = 17.28. Candidate: a tenth of each.
        let c = measured(wobbly(20.0, 20, 0), 20.0 / 15.0, &["nginx", "postgres"]);
        let e = evaluate(&spec(json!({})), &baseline(), &c);
        let cost = e.results.estimated_monthly_cost.as_ref().unwrap();
        assert!(close(cost.baseline, 1.6 + 17.28), "{}", cost.baseline);
        assert!(close(cost.candidate, 0.16 + 1.728), "{}", cost.candidate);
        assert_eq!(cost.currency, "USD");
        assert!(close(e.results.cost_reduction_percent.unwrap(), 90.0));
    }

    #[test]
    fn an_a_a_experiment_is_inconclusive() {
        // Identical data at every step: no reduction at all, p = 1.
        let e = evaluate(&spec(json!({})), &baseline(), &baseline());
        assert_inconclusive(&e, InconclusiveReason::NotSignificant);
        let confidence = e.results.confidence.as_ref().unwrap();
        assert_eq!(confidence.p_value, Some(1.0));
        assert!(
            confidence
                .note
                .as_deref()
                .unwrap()
                .starts_with("no significant series reduction")
        );
        assert_eq!(e.results.series_reduction_percent, Some(0.0));
        // Out of step: the per-step differences wobble around 0.
        let other = measured(wobbly(200.0, 20, 3), 200.0 / 15.0, &["nginx", "postgres"]);
        let e = evaluate(&spec(json!({})), &baseline(), &other);
        assert_inconclusive(&e, InconclusiveReason::NotSignificant);
        // With a reduction criterion it fails outright.
        let e = evaluate(
            &spec(json!({"minSeriesReductionPercent": 10})),
            &baseline(),
            &baseline(),
        );
        assert_eq!(verdict(&e), Verdict::Fail);
        assert_eq!(e.results.inconclusive_reason, None);
    }

    #[test]
    fn too_small_a_reduction_fails() {
        let half = measured(wobbly(100.0, 20, 0), 100.0 / 15.0, &["nginx", "postgres"]);
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
    fn a_reduction_whose_lower_bound_misses_the_criterion_is_inconclusive() {
        // Around 20% less, but ±4% from step to step: the estimate clears 15%, its bound not.
        let b = measured(vec![200.0; 20], 10.0, &["nginx", "postgres"]);
        let c = measured(
            (0..20)
                .map(|i| if i % 2 == 0 { 152.0 } else { 168.0 })
                .collect(),
            8.0,
            &["nginx", "postgres"],
        );
        let e = evaluate(&spec(json!({"minSeriesReductionPercent": 19})), &b, &c);
        assert!(criterion(&e, "minSeriesReductionPercent").passed);
        assert_inconclusive(&e, InconclusiveReason::ReductionUncertain);
        let e = evaluate(&spec(json!({"minSeriesReductionPercent": 10})), &b, &c);
        assert_eq!(verdict(&e), Verdict::Pass, "{}", e.summary());
    }

    #[test]
    fn a_lost_critical_process_fails() {
        let without_nginx = measured(wobbly(20.0, 20, 2), 20.0 / 15.0, &["postgres"]);
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
    fn a_candidate_without_process_series_is_candidate_no_data() {
        // Its collector runs and reports itself, but keeps no process series (drop-everything
        // processors, or Prometheus rejects its samples): that is not a 100% reduction.
        let mut empty = candidate();
        empty.series = vec![None; 20];
        empty.critical_names.clear();
        let e = evaluate(&spec(json!({})), &baseline(), &empty);
        assert_inconclusive(&e, InconclusiveReason::CandidateNoData);
        assert_eq!(e.results.series_reduction_percent, None);
        // Zero series at every step is the same.
        empty.series = vec![Some(0.0); 20];
        let e = evaluate(
            &spec(json!({"minSeriesReductionPercent": 50})),
            &baseline(),
            &empty,
        );
        assert_inconclusive(&e, InconclusiveReason::CandidateNoData);
        // Nothing at all from the candidate.
        let silent = measured(vec![], 0.0, &[]);
        let e = evaluate(&spec(json!({})), &baseline(), &silent);
        assert_inconclusive(&e, InconclusiveReason::CandidateNoData);
    }

    #[test]
    fn a_candidate_whose_telemetry_shows_no_scrape_or_export_is_candidate_no_data() {
        for telemetry in [
            Telemetry {
                scraped_points: None,
                ..candidate().telemetry
            },
            Telemetry {
                scraped_points: Some(0.0),
                ..candidate().telemetry
            },
            Telemetry {
                exported_points: None,
                ..candidate().telemetry
            },
        ] {
            let mut c = candidate();
            c.telemetry = telemetry;
            let e = evaluate(&spec(json!({})), &baseline(), &c);
            assert_inconclusive(&e, InconclusiveReason::CandidateNoData);
        }
    }

    #[test]
    fn export_failures_on_either_side_are_inconclusive() {
        let mut c = candidate();
        c.telemetry.failed_points = 12.0;
        let e = evaluate(&spec(json!({})), &baseline(), &c);
        assert_inconclusive(&e, InconclusiveReason::ExportFailures);
        assert_eq!(e.results.coverage.unwrap().candidate_failed_points, 12.0);
        let mut b = baseline();
        b.telemetry.failed_points = 1.0;
        let e = evaluate(&spec(json!({})), &b, &candidate());
        assert_inconclusive(&e, InconclusiveReason::ExportFailures);
    }

    #[test]
    fn gaps_in_either_variant_are_inconclusive() {
        // A crash-looping candidate: data at 15 of 20 steps (75% < 90%).
        let mut c = candidate();
        for step in [3, 4, 5, 11, 12] {
            c.series[step] = None;
        }
        let e = evaluate(&spec(json!({})), &baseline(), &c);
        assert_inconclusive(&e, InconclusiveReason::DataGaps);
        let coverage = e.results.coverage.unwrap();
        assert_eq!(
            (
                coverage.candidate_steps,
                coverage.paired_steps,
                coverage.percent
            ),
            (15, 15, 75.0)
        );
        // One missing step of twenty is within the 90%.
        let mut c = candidate();
        c.series[7] = None;
        let e = evaluate(&spec(json!({})), &baseline(), &c);
        assert_eq!(verdict(&e), Verdict::Pass, "{}", e.summary());
        // Steps where one of the candidate's collectors was down are not compared either.
        let mut c = candidate();
        let mut b = baseline();
        b.collectors = vec![Some(3.0); 20];
        c.collectors = (0..20)
            .map(|i| Some(if i % 4 == 0 { 2.0 } else { 3.0 }))
            .collect();
        let e = evaluate(&spec(json!({})), &b, &c);
        assert_inconclusive(&e, InconclusiveReason::DataGaps);
        assert!(
            e.summary()
                .contains("5 with a different number of collectors")
        );
        // The baseline's gaps count too.
        let mut b = baseline();
        for step in 0..5 {
            b.series[step] = None;
        }
        let e = evaluate(&spec(json!({})), &b, &candidate());
        assert_inconclusive(&e, InconclusiveReason::DataGaps);
    }

    #[test]
    fn collectors_on_other_nodes_are_a_node_mismatch() {
        let mut b = baseline();
        b.nodes = ["node-1", "node-2", "node-3"].map(String::from).into();
        let e = evaluate(&spec(json!({})), &b, &candidate());
        assert_inconclusive(&e, InconclusiveReason::NodeMismatch);
        assert!(
            e.summary()
                .contains("baseline node-1, node-2, node-3, candidate node-1")
        );
        // No node known for the baseline: the placement cannot be checked.
        let mut b = baseline();
        b.nodes.clear();
        let e = evaluate(&spec(json!({})), &b, &candidate());
        assert_inconclusive(&e, InconclusiveReason::NodeMismatch);
    }

    #[test]
    fn too_few_samples_are_inconclusive_even_when_a_criterion_fails() {
        let b = measured(wobbly(200.0, 4, 0), 10.0, &["nginx", "postgres"]);
        let c = measured(wobbly(20.0, 4, 0), 1.0, &["postgres"]);
        let e = evaluate(&spec(json!({"minSeriesReductionPercent": 95})), &b, &c);
        assert_inconclusive(&e, InconclusiveReason::TooFewSamples);
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
        let c = measured(wobbly(5.0, 20, 0), 1.0, &["nginx", "postgres"]);
        let e = evaluate(&spec(json!({})), &b, &c);
        assert_inconclusive(&e, InconclusiveReason::BaselineTooNoisy);
    }

    #[test]
    fn critical_retention_without_critical_names_in_the_baseline() {
        // Patterns configured but the baseline saw none: suspicious, no verdict.
        let b = measured(wobbly(200.0, 20, 0), 10.0, &[]);
        let c = measured(wobbly(20.0, 20, 0), 1.0, &[]);
        let e = evaluate(&spec(json!({})), &b, &c);
        assert_inconclusive(&e, InconclusiveReason::CriterionNotObserved);
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
        c.cpu = vec![Some(0.13); 20]; // +30% over 0.1
        c.memory = vec![Some(90e6); 20]; // −10%
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
        c.cpu = vec![None; 20];
        let e = evaluate(
            &spec(json!({"maxCollectorCpuIncreasePercent": 20})),
            &baseline(),
            &c,
        );
        assert_inconclusive(&e, InconclusiveReason::CriterionNotObserved);
        assert_eq!(
            criterion(&e, "maxCollectorCpuIncreasePercent").observed,
            None
        );
    }

    #[test]
    fn a_reduction_within_the_margin_does_not_pass() {
        // 200 vs 199 at every step: certainly lower, but only 0.5%, within the 1% margin.
        let b = measured(vec![200.0; 20], 10.0, &["nginx", "postgres"]);
        let c = measured(vec![199.0; 20], 10.0, &["nginx", "postgres"]);
        let e = evaluate(&spec(json!({})), &b, &c);
        assert_eq!(e.results.confidence.as_ref().unwrap().p_value, Some(1.0));
        assert_inconclusive(&e, InconclusiveReason::NotSignificant);
        assert_eq!(e.results.series_reduction_percent, Some(0.5));
        assert!(
            e.summary()
                .contains("no significant series reduction above 1%"),
            "{}",
            e.summary()
        );
        // 2% less at every step clears the margin.
        let c = measured(vec![196.0; 20], 10.0, &["nginx", "postgres"]);
        let e = evaluate(&spec(json!({})), &b, &c);
        assert_eq!(verdict(&e), Verdict::Pass, "{}", e.summary());
    }

    #[test]
    fn a_significant_increase_does_not_pass() {
        let e = evaluate(&spec(json!({})), &candidate(), &baseline());
        assert_inconclusive(&e, InconclusiveReason::NotSignificant);
        assert!(e.results.series_reduction_percent.unwrap() < -800.0);
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
