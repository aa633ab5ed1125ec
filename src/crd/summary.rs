//! `status.summary` of an Experiment: its results as a person reads them (`98.5%`, `p 0.0031`),
//! for the printer columns and `kubectl describe`. The full-precision numbers stay in
//! `status.results`, where machines read them.

use serde::{Deserialize, Serialize};

use super::experiment::{ExperimentStatus, Results};

/// The results of an Experiment, rounded for people.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentSummary {
    /// Series reduction, one decimal, e.g. `95.2%` (precise: `results.seriesReductionPercent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_reduction: Option<String>,
    /// Datapoint reduction, one decimal (precise: `results.datapointReductionPercent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapoint_reduction: Option<String>,
    /// Critical-process retention, one decimal; never shown as `100%` unless it is 100
    /// (precise: `results.criticalRetentionPercent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_retention: Option<String>,
    /// Cost reduction, one decimal (precise: `results.costReductionPercent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_reduction: Option<String>,
    /// Estimated monthly cost, baseline → candidate, e.g. `USD 120.50 → 30.25`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_cost: Option<String>,
    /// p-value of the test behind the verdict, two significant digits, e.g. `0.0031`, or
    /// `<0.0001` (precise: `results.confidence.pValue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<String>,
}

/// The summary of `status`, or `None` before there are results.
pub fn of(status: &ExperimentStatus) -> Option<ExperimentSummary> {
    status.results.as_deref().map(summarize)
}

/// The summary of `results`.
pub fn summarize(results: &Results) -> ExperimentSummary {
    ExperimentSummary {
        series_reduction: results.series_reduction_percent.map(percent),
        datapoint_reduction: results.datapoint_reduction_percent.map(percent),
        critical_retention: results.critical_retention_percent.map(percent),
        cost_reduction: results.cost_reduction_percent.map(percent),
        monthly_cost: results.estimated_monthly_cost.as_ref().map(|c| {
            format!("{} {:.2} → {:.2}", c.currency, c.baseline, c.candidate)
                .trim_start()
                .to_string()
        }),
        p_value: results
            .confidence
            .as_ref()
            .and_then(|c| c.p_value)
            .map(p_value),
    }
}

/// A percentage with one decimal (`98.5%`, `100%`, `-3.2%`). Rounding never carries a value onto
/// 100 or 0 from the other side: 99.96 shows `99.9%`, not a reassuring `100%`.
pub fn percent(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".to_string();
    }
    let mut rounded = (value * 10.0).round() / 10.0;
    for bound in [0.0, 100.0] {
        if rounded == bound && value != bound {
            rounded = bound + if value < bound { -0.1 } else { 0.1 };
        }
    }
    let text = format!("{rounded:.1}");
    format!("{}%", text.strip_suffix(".0").unwrap_or(&text))
}

/// A p-value with two significant digits (`0.031`, `0.0031`), `<0.0001` below that.
pub fn p_value(p: f64) -> String {
    if !p.is_finite() || p < 0.0 {
        return "n/a".to_string();
    }
    if p < 0.0001 {
        return "<0.0001".to_string();
    }
    let decimals = (1 - p.log10().floor() as i32).max(1) as usize;
    format!("{p:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::experiment::{Confidence, MonthlyCost};

    #[test]
    fn percentages_are_rounded_to_one_decimal() {
        assert_eq!(percent(98.453637), "98.5%");
        assert_eq!(percent(100.0), "100%");
        assert_eq!(percent(42.0), "42%");
        assert_eq!(percent(-3.249), "-3.2%");
        assert_eq!(percent(f64::NAN), "n/a");
    }

    #[test]
    fn rounding_never_reaches_100_or_0_from_the_other_side() {
        assert_eq!(percent(99.96), "99.9%");
        assert_eq!(percent(0.04), "0.1%");
        assert_eq!(percent(-0.04), "-0.1%");
        assert_eq!(percent(0.0), "0%");
    }

    #[test]
    fn p_values_keep_two_significant_digits() {
        assert_eq!(p_value(0.0031234), "0.0031");
        assert_eq!(p_value(0.031234), "0.031");
        assert_eq!(p_value(0.5), "0.50");
        assert_eq!(p_value(1.0), "1.0");
        assert_eq!(p_value(0.00001), "<0.0001");
        assert_eq!(p_value(f64::NAN), "n/a");
    }

    #[test]
    fn the_summary_reads_the_precise_results() {
        let results = Results {
            series_reduction_percent: Some(95.2312),
            critical_retention_percent: Some(100.0),
            cost_reduction_percent: Some(74.87),
            estimated_monthly_cost: Some(MonthlyCost {
                baseline: 120.5,
                candidate: 30.254,
                currency: "USD".into(),
            }),
            confidence: Some(Confidence {
                p_value: Some(0.000_312),
                ..Default::default()
            }),
            ..Default::default()
        };
        let summary = summarize(&results);
        assert_eq!(summary.series_reduction.as_deref(), Some("95.2%"));
        assert_eq!(summary.critical_retention.as_deref(), Some("100%"));
        assert_eq!(summary.cost_reduction.as_deref(), Some("74.9%"));
        assert_eq!(summary.datapoint_reduction, None);
        assert_eq!(summary.monthly_cost.as_deref(), Some("USD 120.50 → 30.25"));
        assert_eq!(summary.p_value.as_deref(), Some("0.00031"));
        assert_eq!(of(&ExperimentStatus::default()), None);
    }
}
