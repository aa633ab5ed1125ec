//! `report`: an Experiment's results as a terminal table (what the demo printed with a Python script before),
//! JSON, or a single self-contained HTML page (inline CSS and SVG, no script, no external asset)
//! with the verdict, the criteria, the cost and a chart of active series per variant over the
//! analysis window, range-queried from Prometheus with the analysis' own query
//! ([`measure::measure`] over `status.analysisInputs`). Without an Experiment name: one line per
//! Experiment of the namespace (`-A`: of every namespace).

use std::fmt::Write as _;
use std::io::Write;

use kube::Api;
use kube::api::ListParams;
use serde_json::json;

use crate::analysis::access::PrometheusAccess;
use crate::analysis::measure::{self, Window};
use crate::analysis::queries::VariantSelector;
use crate::crd::Experiment;
use crate::crd::experiment::{ExperimentStatus, Results, VariantResults};
use crate::crd::summary;

use super::cluster::{self, api_error};
use super::table::write_table;
use super::{CliError, GlobalArgs, Outcome, Output};

/// `report --help` examples.
pub const EXAMPLES: &str = "Examples:\n  # The results in the terminal\n  kubectl phoenix report aggregate-vs-baseline\n\n  # A self-contained page to attach to a pull request\n  kubectl phoenix report aggregate-vs-baseline -o html > report.html\n\n  # Every Experiment of every namespace\n  kubectl phoenix report -A";

/// `report` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The Experiment. Without it: every Experiment of the namespace (or all, with -A).
    pub experiment: Option<String>,
    /// Prometheus to range-query for the HTML chart. Default: the one the analysis queried
    /// (`status.analysisInputs.prometheusUrl`).
    #[arg(long)]
    pub prometheus_url: Option<String>,
    #[command(flatten)]
    pub access: PrometheusAccess,
}

/// Active series per variant at each analysis step.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chart {
    /// Step times, Unix milliseconds.
    pub steps: Vec<i64>,
    /// The baseline's active series per step (`None`: no data).
    pub baseline: Vec<Option<f64>>,
    /// The candidate's.
    pub candidate: Vec<Option<f64>>,
}

fn number(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), summary::percent)
}

/// The comparison rows: (what, baseline, candidate).
pub fn rows(results: &Results) -> Vec<[String; 3]> {
    let (b, c) = (&results.baseline, &results.candidate);
    let row = |what: &str, f: &dyn Fn(&VariantResults) -> String| [what.to_string(), f(b), f(c)];
    let mib = |v: Option<f64>| v.map(|x| x / 1_048_576.0);
    let mut rows = vec![
        row("active series (mean)", &|v| number(v.series, 1)),
        row("distinct series", &|v| number(v.distinct_series, 0)),
        row("samples/s", &|v| number(v.datapoints_per_second, 1)),
        row("collector CPU (cores)", &|v| {
            number(v.collector_cpu_cores, 3)
        }),
        row("collector memory (MiB)", &|v| {
            number(mib(v.collector_memory_bytes), 1)
        }),
        row("critical processes seen", &|v| {
            number(v.critical_processes_seen.map(f64::from), 0)
        }),
    ];
    if let Some(cost) = &results.estimated_monthly_cost {
        rows.push([
            format!("monthly cost ({})", cost.currency),
            format!("{:.2}", cost.baseline),
            format!("{:.2}", cost.candidate),
        ]);
    }
    rows
}

fn verdict_line(status: &ExperimentStatus) -> String {
    format!(
        "{} ({}: {})",
        status
            .verdict
            .map_or_else(|| "-".into(), |v| format!("{v:?}")),
        status
            .phase
            .map_or_else(|| "Pending".into(), |p| format!("{p:?}")),
        status.message.as_deref().unwrap_or("")
    )
}

/// The terminal table of one Experiment.
pub fn table(experiment: &Experiment) -> Result<String, std::io::Error> {
    let status = experiment.status.clone().unwrap_or_default();
    let mut out = Vec::new();
    let results = status.results.clone().unwrap_or_default();
    write_table(&mut out, &["", "BASELINE", "CANDIDATE"], &rows(&results))?;
    writeln!(out)?;
    let lines = [
        (
            "series reduction",
            percent(results.series_reduction_percent),
        ),
        (
            "datapoint reduction",
            percent(results.datapoint_reduction_percent),
        ),
        (
            "critical retention",
            percent(results.critical_retention_percent),
        ),
        ("cost reduction", percent(results.cost_reduction_percent)),
        ("verdict", verdict_line(&status)),
    ];
    for (what, value) in lines {
        writeln!(out, "{what:<22}{value}")?;
    }
    if let Some(c) = &results.confidence {
        writeln!(
            out,
            "{:<22}p = {} ({}, {} samples)",
            "confidence",
            c.p_value.map_or_else(|| "-".into(), summary::p_value),
            c.method,
            c.samples
        )?;
    }
    for c in &results.criteria {
        writeln!(
            out,
            "  {} {}: observed {}, threshold {}",
            if c.passed { "PASS" } else { "FAIL" },
            c.name,
            number(c.observed, 1),
            c.threshold
        )?;
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The JSON document of one Experiment's results.
pub fn json_report(experiment: &Experiment) -> serde_json::Value {
    let status = experiment.status.clone().unwrap_or_default();
    json!({
        "namespace": experiment.metadata.namespace,
        "name": experiment.metadata.name,
        "phase": status.phase,
        "verdict": status.verdict,
        "message": status.message,
        "summary": status.summary,
        "results": status.results,
    })
}

/// HTML-escapes text.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 280.0;
const MARGIN: f64 = 48.0;
const BASELINE_COLOUR: &str = "#5b6b7f";
const CANDIDATE_COLOUR: &str = "#d9480f";

/// The chart as inline SVG: one polyline per variant (a gap where a step has no data), axes
/// from 0 to the largest value, the window's minutes along the bottom.
pub fn svg(chart: &Chart) -> String {
    let max = chart
        .baseline
        .iter()
        .chain(&chart.candidate)
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let (first, last) = match (chart.steps.first(), chart.steps.last()) {
        (Some(f), Some(l)) => (*f, *l),
        _ => (0, 0),
    };
    let span = ((last - first) as f64).max(1.0);
    let x = |t: i64| MARGIN + (t - first) as f64 / span * (WIDTH - 2.0 * MARGIN);
    let y = |v: f64| HEIGHT - MARGIN - v / max * (HEIGHT - 2.0 * MARGIN);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="series-chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="Active series per variant">"#
    );
    let _ = write!(
        s,
        r##"<line x1="{MARGIN}" y1="{b}" x2="{r}" y2="{b}" stroke="#999"/><line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{b}" stroke="#999"/>"##,
        b = HEIGHT - MARGIN,
        r = WIDTH - MARGIN
    );
    let _ = write!(
        s,
        r#"<text x="{tx}" y="{ty}" font-size="11" text-anchor="end">{max:.0}</text><text x="{tx}" y="{by}" font-size="11" text-anchor="end">0</text><text x="{r}" y="{ly}" font-size="11" text-anchor="end">{mins:.1} min</text>"#,
        tx = MARGIN - 4.0,
        ty = MARGIN + 4.0,
        by = HEIGHT - MARGIN + 4.0,
        r = WIDTH - MARGIN,
        ly = HEIGHT - MARGIN + 16.0,
        mins = span / 60_000.0
    );
    for (variant, values, colour) in [
        ("baseline", &chart.baseline, BASELINE_COLOUR),
        ("candidate", &chart.candidate, CANDIDATE_COLOUR),
    ] {
        // Consecutive steps with data form one polyline; a missing step breaks the line.
        let mut segments: Vec<Vec<String>> = vec![vec![]];
        for (t, v) in chart.steps.iter().zip(values.iter()) {
            match v.filter(|v| v.is_finite()) {
                Some(v) => segments
                    .last_mut()
                    .map(|seg| seg.push(format!("{:.1},{:.1}", x(*t), y(v))))
                    .unwrap_or_default(),
                None => segments.push(vec![]),
            }
        }
        for points in segments.iter().filter(|p| !p.is_empty()) {
            let _ = write!(
                s,
                r#"<polyline class="series {variant}" data-variant="{variant}" fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
        }
    }
    let _ = write!(
        s,
        r#"<text x="{lx}" y="20" font-size="12" fill="{BASELINE_COLOUR}">■ baseline</text><text x="{cx}" y="20" font-size="12" fill="{CANDIDATE_COLOUR}">■ candidate</text></svg>"#,
        lx = MARGIN,
        cx = MARGIN + 90.0
    );
    s
}

/// The self-contained HTML page of one Experiment; `chart` when Prometheus had the window.
pub fn html(experiment: &Experiment, chart: Option<&Chart>) -> String {
    let status = experiment.status.clone().unwrap_or_default();
    let results = status.results.clone().unwrap_or_default();
    let name = format!(
        "{}/{}",
        experiment.metadata.namespace.as_deref().unwrap_or(""),
        experiment.metadata.name.as_deref().unwrap_or("")
    );
    let verdict = status
        .verdict
        .map_or_else(|| "none".into(), |v| format!("{v:?}"));
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<h1>Experiment {}</h1><p id="verdict" class="verdict {}">Verdict: <strong>{}</strong></p><p>{}</p>"#,
        escape(&name),
        escape(&verdict.to_lowercase()),
        escape(&verdict),
        escape(&verdict_line(&status))
    );
    let _ = write!(
        body,
        "<h2>Reduction</h2><table><tr><th>series</th><td>{}</td></tr><tr><th>datapoints</th><td>{}</td></tr><tr><th>critical retention</th><td>{}</td></tr><tr><th>cost</th><td>{}</td></tr></table>",
        escape(&percent(results.series_reduction_percent)),
        escape(&percent(results.datapoint_reduction_percent)),
        escape(&percent(results.critical_retention_percent)),
        escape(&percent(results.cost_reduction_percent)),
    );
    body.push_str(r#"<h2>Active series over the analysis window</h2>"#);
    match chart {
        Some(chart) if !chart.steps.is_empty() => body.push_str(&svg(chart)),
        _ => body.push_str(
            r#"<p id="no-chart">No chart: Prometheus has no data for the analysis window.</p>"#,
        ),
    }
    body.push_str("<h2>Baseline and candidate</h2><table id=\"comparison\"><tr><th></th><th>baseline</th><th>candidate</th></tr>");
    for [what, b, c] in rows(&results) {
        let _ = write!(
            body,
            "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
            escape(&what),
            escape(&b),
            escape(&c)
        );
    }
    body.push_str("</table><h2>Success criteria</h2><table id=\"criteria\"><tr><th>criterion</th><th>threshold</th><th>observed</th><th>outcome</th></tr>");
    for c in &results.criteria {
        let _ = write!(
            body,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if c.passed { "pass" } else { "fail" },
            escape(&c.name),
            c.threshold,
            escape(&number(c.observed, 2)),
            if c.passed { "PASS" } else { "FAIL" }
        );
    }
    body.push_str("</table>");
    if let Some(c) = &results.confidence {
        let _ = write!(
            body,
            "<p>p = {} ({}, {} samples)</p>",
            escape(&c.p_value.map_or_else(|| "-".into(), summary::p_value)),
            escape(&c.method),
            c.samples
        );
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Phoenix report: {}</title><style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto;color:#222}}table{{border-collapse:collapse;margin:.5rem 0}}th,td{{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}}th{{text-align:left}}.verdict.pass strong,.pass td:last-child{{color:#2b8a3e}}.verdict.fail strong,.fail td:last-child{{color:#c92a2a}}.verdict.inconclusive strong{{color:#e67700}}</style></head><body>{body}</body></html>\n",
        escape(&name)
    )
}

/// The chart's data: the analysis' per-step series query for both variants over the snapshot
/// window.
async fn chart(experiment: &Experiment, args: &Args) -> Result<Option<Chart>, CliError> {
    let Some(inputs) = experiment
        .status
        .as_ref()
        .and_then(|s| s.analysis_inputs.clone())
    else {
        return Ok(None);
    };
    let url = args
        .prometheus_url
        .clone()
        .unwrap_or_else(|| inputs.prometheus_url.clone());
    let prom = args
        .access
        .client(&url)
        .map_err(|e| CliError::Connection(format!("Prometheus {url}: {e}")))?;
    let window = Window::new(
        inputs.window_start.0.as_second(),
        inputs.window_end.0.as_second(),
        inputs.step_seconds,
        inputs.collection_interval_seconds,
    );
    let sel = |variant: &str| VariantSelector {
        experiment: inputs.experiment_label.clone(),
        variant: variant.to_string(),
    };
    let critical = &inputs.critical_processes;
    let (baseline, candidate) = futures::future::try_join(
        measure::measure(&prom, &sel("baseline"), &window, critical),
        measure::measure(&prom, &sel("candidate"), &window, critical),
    )
    .await
    .map_err(|e| CliError::Connection(format!("Prometheus {url}: {e}")))?;
    Ok(Some(Chart {
        steps: baseline.steps,
        baseline: baseline.series,
        candidate: candidate.series,
    }))
}

/// One line per Experiment.
fn list(experiments: &[Experiment], out: &mut dyn Write) -> Result<(), CliError> {
    let rows: Vec<[String; 6]> = experiments
        .iter()
        .map(|e| {
            let s = e.status.clone().unwrap_or_default();
            let sum = s.summary.clone().unwrap_or_default();
            [
                e.metadata.namespace.clone().unwrap_or_default(),
                e.metadata.name.clone().unwrap_or_default(),
                s.phase
                    .map_or_else(|| "Pending".into(), |p| format!("{p:?}")),
                s.verdict.map_or_else(|| "-".into(), |v| format!("{v:?}")),
                sum.series_reduction.unwrap_or_else(|| "-".into()),
                sum.cost_reduction.unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    write_table(
        out,
        &[
            "NAMESPACE",
            "NAME",
            "PHASE",
            "VERDICT",
            "REDUCTION",
            "COST-SAVED",
        ],
        &rows,
    )?;
    Ok(())
}

/// `report`: always exit 0 when the report was printed (the verdict is in it; `promote` is the
/// gate).
pub async fn run(
    args: &Args,
    global: &GlobalArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let output = global.output.unwrap_or(Output::Table);
    let conn = cluster::connect(global).await?;
    let Some(name) = &args.experiment else {
        let api: Api<Experiment> = if global.all_namespaces {
            Api::all(conn.client.clone())
        } else {
            Api::namespaced(conn.client.clone(), &conn.namespace)
        };
        let items = api
            .list(&ListParams::default())
            .await
            .map_err(|e| api_error("Experiments", e))?
            .items;
        match output {
            Output::Json => writeln!(
                out,
                "{}",
                serde_json::Value::Array(items.iter().map(json_report).collect())
            )?,
            _ => list(&items, out)?,
        }
        return Ok(Outcome::Clean);
    };
    let api: Api<Experiment> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let experiment = api
        .get(name)
        .await
        .map_err(|e| api_error(&format!("Experiment {}/{name}", conn.namespace), e))?;
    match output {
        Output::Table => out.write_all(table(&experiment)?.as_bytes())?,
        Output::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json_report(&experiment))
                .map_err(|e| CliError::Input(e.to_string()))?
        )?,
        Output::Yaml => out.write_all(
            serde_yaml::to_string(&json_report(&experiment))
                .map_err(|e| CliError::Input(e.to_string()))?
                .as_bytes(),
        )?,
        Output::Html => {
            let chart = chart(&experiment, args).await?;
            out.write_all(html(&experiment, chart.as_ref()).as_bytes())?;
        }
    }
    Ok(Outcome::Clean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::experiment::{CriterionResult, ExperimentPhase, MonthlyCost, Verdict};

    fn completed() -> Experiment {
        let mut e: Experiment = serde_yaml::from_str(
            "apiVersion: phoenix.io/v1alpha1\nkind: Experiment\nmetadata: {name: exp, namespace: team}\nspec:\n  baseline: {pipeline: {template: baseline}}\n  candidate: {pipeline: {template: aggregate}}\n",
        )
        .expect("Experiment");
        e.status = Some(ExperimentStatus {
            phase: Some(ExperimentPhase::Completed),
            verdict: Some(Verdict::Pass),
            message: Some("candidate <b>passes</b>".into()),
            results: Some(Box::new(Results {
                baseline: VariantResults {
                    series: Some(208.0),
                    collector_memory_bytes: Some(104_857_600.0),
                    ..Default::default()
                },
                candidate: VariantResults {
                    series: Some(10.0),
                    ..Default::default()
                },
                series_reduction_percent: Some(95.19),
                estimated_monthly_cost: Some(MonthlyCost {
                    baseline: 1.66,
                    candidate: 0.08,
                    currency: "USD".into(),
                }),
                criteria: vec![CriterionResult {
                    name: "minSeriesReductionPercent".into(),
                    threshold: 80.0,
                    observed: Some(95.19),
                    passed: true,
                    query: None,
                }],
                ..Default::default()
            })),
            ..Default::default()
        });
        e
    }

    #[test]
    fn the_table_shows_both_variants_reductions_verdict_and_criteria() {
        let text = table(&completed()).expect("table");
        let series = text.lines().nth(1).expect("first row");
        assert!(
            series.starts_with("active series (mean)")
                && series.contains("208.0")
                && series.ends_with("10.0"),
            "{series}"
        );
        assert!(text.contains("collector memory (MiB)    100.0"), "{text}");
        assert!(
            text.contains("monthly cost (USD)") && text.contains("1.66"),
            "{text}"
        );
        assert!(text.contains("series reduction      95.2%"), "{text}");
        assert!(
            text.contains("verdict               Pass (Completed"),
            "{text}"
        );
        assert!(
            text.contains("  PASS minSeriesReductionPercent: observed 95.2, threshold 80"),
            "{text}"
        );
    }

    #[test]
    fn the_svg_draws_one_line_per_variant_and_breaks_at_gaps() {
        let chart = Chart {
            steps: vec![0, 30_000, 60_000, 90_000],
            baseline: vec![Some(200.0), Some(208.0), Some(204.0), Some(208.0)],
            candidate: vec![Some(10.0), None, Some(10.0), Some(12.0)],
        };
        let svg = svg(&chart);
        assert_eq!(svg.matches(r#"data-variant="baseline""#).count(), 1);
        assert_eq!(svg.matches(r#"data-variant="candidate""#).count(), 2);
        // The top of the axis is the largest value; the first baseline point is at the left.
        assert!(svg.contains(">208<"), "{svg}");
        assert!(svg.contains(r#"points="48.0,"#), "{svg}");
        assert!(svg.contains("1.5 min"), "{svg}");
    }

    #[test]
    fn the_page_is_self_contained_and_escapes_what_it_shows() {
        let chart = Chart {
            steps: vec![0, 30_000],
            baseline: vec![Some(208.0), Some(208.0)],
            candidate: vec![Some(10.0), Some(10.0)],
        };
        let page = html(&completed(), Some(&chart));
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(
            page.contains(r#"<p id="verdict" class="verdict pass">Verdict: <strong>Pass</strong>"#)
        );
        assert!(
            page.contains("candidate &lt;b&gt;passes&lt;/b&gt;"),
            "escaped"
        );
        assert!(!page.contains("<b>passes"));
        assert!(page.contains("<svg id=\"series-chart\""));
        for external in ["<script", "<link", "src=", "@import", "url("] {
            assert!(!page.contains(external), "{external}");
        }
        let without = html(&completed(), None);
        assert!(without.contains("id=\"no-chart\"") && !without.contains("<svg"));
    }
}
