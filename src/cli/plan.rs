//! `plan`: what a candidate Pipeline would export, predicted before anything is deployed. It
//! reads the process series a running collector already writes to Prometheus (per series, per
//! step of the window), applies the candidate template's model
//! ([`crate::desired::collector_config::predict`], the logic the renderer renders from) to those
//! label sets, and judges the predicted figures with the operator's own analysis
//! ([`verdict::evaluate`]: reduction, critical retention, cost model). The top K of a `topk`
//! candidate come from [`measure::topk_names`], as in an Experiment.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;

use regex::Regex;
use serde::Serialize;

use crate::analysis::access::{Prometheus, PrometheusAccess};
use crate::analysis::measure::{self, MeasureError, Measurements, Window};
use crate::analysis::queries::{self, Selector};
use crate::analysis::verdict;
use crate::crd::duration::SpecDuration;
use crate::crd::experiment::{CriterionResult, Experiment, ExperimentSpec};
use crate::crd::pipeline::{Pipeline, PipelineSpec, PipelineTemplate, SensitiveAttributes};
use crate::desired::collector_config::predict::{Fate, Model, SeriesKey, executable_label};
use crate::desired::collector_config::templates::TemplateLogic;

use super::documents;
use super::selector::LabelSelector;
use super::{CliError, GlobalArgs, Outcome, Output};

/// `plan --help` examples.
pub const EXAMPLES: &str = "Examples:\n  # Predict an Experiment's candidate from the data its baseline Pipeline already sends\n  kubectl phoenix plan -f experiment.yaml --prometheus http://prometheus:9090\n\n  # Predict a Pipeline against a production collector's series of the last hour\n  kubectl phoenix plan -f pipelines/topk.yaml --prometheus http://prometheus:9090 \\\n    --from 'k8s_cluster=\"prod\",job=\"otel-agent\"' --since 1h\n\nExit codes: 0 the candidate meets the criteria (an Experiment's, else 100% critical retention), 1 it is predicted to miss one, 2 usage or connection error.";

/// `plan` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// An Experiment (its candidate is planned against its baseline) or a Pipeline (planned
    /// against the series of `--from` as they are).
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Processes listed in the table, most series first (0: all).
    #[arg(long, default_value_t = 20)]
    pub processes: usize,
}

/// Where the series come from and over which window (shared with `suggest`).
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Prometheus base URL.
    #[arg(long)]
    pub prometheus: String,
    /// Label matchers of the running collector's process series, e.g.
    /// `job="otel-agent",k8s_cluster="prod"`. Default for an Experiment: its baseline's series
    /// (`phoenix_pipeline=<ref>` for a pipelineRef, else the Experiment's own baseline variant).
    #[arg(long, value_name = "SELECTOR")]
    pub from: Option<LabelSelector>,
    /// Length of the window read, ending at `--end`.
    #[arg(long, default_value = "10m")]
    pub since: SpecDuration,
    /// Window start, Unix seconds (instead of `--since`).
    #[arg(long)]
    pub start: Option<i64>,
    /// Window end, Unix seconds. Default: now.
    #[arg(long)]
    pub end: Option<i64>,
    /// Step of the per-step series count. Default: an Experiment's analysis interval, else 30s.
    #[arg(long)]
    pub step: Option<SpecDuration>,
}

/// One process series over the window's steps.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSeries {
    /// Metric name and labels.
    pub key: SeriesKey,
    /// Whether it had a sample in each step's range (the analysis' notion of active).
    pub present: Vec<bool>,
    /// Samples it had in each step (the `step` before each evaluation time).
    pub samples: Vec<f64>,
}

/// What was read from Prometheus: the window and every process series in it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceData {
    /// The window (its grid is the steps of every series).
    pub window: Window,
    /// The series.
    pub series: Vec<SourceSeries>,
}

/// One executable name and what the candidate does to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessRow {
    /// The executable name.
    pub name: String,
    /// Series it has in the source over the window.
    pub series: usize,
    /// `critical`, `keep`, `roll up` or `drop`.
    pub fate: String,
    /// The name it is summed under when rolled up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub into: Option<String>,
}

/// Predicted figures of one side.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    /// Mean active series per step.
    pub series: f64,
    /// Distinct series over the window.
    pub distinct_series: f64,
    /// Samples per second.
    pub datapoints_per_second: f64,
    /// Estimated monthly cost under the cost model.
    pub monthly_cost: f64,
    /// Critical executable names seen.
    pub critical_processes: usize,
}

/// A plan: both sides' predicted figures, the comparison and every process's fate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    /// The source series selector.
    pub source: String,
    /// Window start, Unix seconds.
    pub start: i64,
    /// Window end, Unix seconds.
    pub end: i64,
    /// Step, seconds.
    pub step_seconds: f64,
    /// The candidate's template.
    pub template: String,
    /// The baseline as predicted (the source itself unless the Experiment's baseline reduces).
    pub baseline: Figures,
    /// The candidate as predicted.
    pub candidate: Figures,
    /// Mean per-step series reduction, percent (as the Experiment computes it).
    pub series_reduction_percent: Option<f64>,
    /// Samples reduction, percent.
    pub datapoint_reduction_percent: Option<f64>,
    /// Cost reduction, percent.
    pub cost_reduction_percent: Option<f64>,
    /// Critical names of the baseline the candidate keeps, percent.
    pub critical_retention_percent: Option<f64>,
    /// Currency of the costs.
    pub currency: String,
    /// The success criteria that can be predicted (series, retention, cost).
    pub criteria: Vec<CriterionResult>,
    /// The top-K names a `topk` candidate keeps.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub topk: Vec<String>,
    /// Every executable name in the source, most series first.
    pub processes: Vec<ProcessRow>,
}

impl PlanReport {
    /// Whether a predictable criterion is predicted to be missed.
    pub fn misses_criteria(&self) -> bool {
        self.criteria
            .iter()
            .any(|c| c.observed.is_some() && !c.passed)
    }
}

/// What to plan: the candidate, the baseline it is compared with and how it is judged.
#[derive(Debug, Clone)]
pub struct PlanInput {
    /// The candidate's spec.
    pub candidate: PipelineSpec,
    /// The baseline's spec (a full-fidelity baseline for a Pipeline file).
    pub baseline: PipelineSpec,
    /// The criteria and cost model (defaults for a Pipeline file).
    pub experiment: ExperimentSpec,
    /// The default source selector, when the input implies one.
    pub default_source: Option<LabelSelector>,
    /// Whether the top K are chosen from Prometheus (an Experiment does that; a standalone
    /// Pipeline keeps only `spec.topk.processes`).
    pub ranks_topk: bool,
    /// Whether the baseline is the source as it is (a Pipeline file, `suggest`): it samples at
    /// the source's interval, not at `baseline.collectionInterval`.
    pub source_baseline: bool,
}

/// A full-fidelity baseline: what the source collector sends, as it is.
pub fn identity_baseline() -> PipelineSpec {
    let mut spec = PipelineSpec::from_template(PipelineTemplate::Baseline);
    spec.sensitive_attributes = SensitiveAttributes::Keep;
    spec
}

/// An ExperimentSpec with default criteria and cost model, for a Pipeline planned alone.
pub fn default_experiment() -> ExperimentSpec {
    serde_yaml::from_str(
        "baseline: {pipeline: {template: baseline}}\ncandidate: {pipeline: {template: baseline}}\nanalysis: {interval: 30s}\n",
    )
    .unwrap_or_else(|e| unreachable!("a constant spec parses: {e}"))
}

/// The plan input of the first Experiment or Pipeline in `docs`.
pub fn plan_input(
    docs: &[documents::Document],
    namespace: Option<&str>,
) -> Result<PlanInput, CliError> {
    let doc = docs
        .iter()
        .find(|d| matches!(d.phoenix_kind(), Some("Experiment" | "Pipeline")))
        .ok_or_else(|| CliError::Input("no Experiment or Pipeline in the input".into()))?;
    let invalid = |e: serde_json::Error| {
        CliError::Input(format!(
            "{}: document {}: {e} (run `kubectl phoenix validate`)",
            doc.file, doc.index
        ))
    };
    if doc.phoenix_kind() == Some("Pipeline") {
        let pipeline: Pipeline = serde_json::from_value(doc.value.clone()).map_err(invalid)?;
        return Ok(PlanInput {
            candidate: pipeline.spec,
            baseline: identity_baseline(),
            experiment: default_experiment(),
            default_source: None,
            ranks_topk: false,
            source_baseline: true,
        });
    }
    let exp: Experiment = serde_json::from_value(doc.value.clone()).map_err(invalid)?;
    let candidate = exp.spec.candidate.pipeline.clone().ok_or_else(|| {
        CliError::Usage(
            "the Experiment's candidate is a pipelineRef: plan the referenced Pipeline's file with --from".into(),
        )
    })?;
    let ns = exp
        .metadata
        .namespace
        .as_deref()
        .or(namespace)
        .unwrap_or("default");
    let name = exp.metadata.name.clone().unwrap_or_default();
    let (baseline, source) = match (&exp.spec.baseline.pipeline, &exp.spec.baseline.pipeline_ref) {
        (Some(spec), _) => (
            spec.clone(),
            format!(
                "{}=\"{}\",{}=\"baseline\"",
                queries::EXPERIMENT_LABEL,
                queries::escape_label_value(&crate::desired::children::experiment_label(ns, &name)),
                queries::VARIANT_LABEL
            ),
        ),
        (None, Some(r)) => (
            identity_baseline(),
            format!(
                "phoenix_pipeline=\"{}\"",
                queries::escape_label_value(&r.name)
            ),
        ),
        (None, None) => return Err(CliError::Input("the Experiment has no baseline".into())),
    };
    Ok(PlanInput {
        candidate,
        baseline,
        default_source: source.parse().ok(),
        experiment: exp.spec,
        ranks_topk: true,
        source_baseline: false,
    })
}

/// The window of `args`: `[start, end]` stepped by `step`, each step looking back like the
/// analysis does for the slower of `collection_secs`.
pub fn window(args: &SourceArgs, now: i64, step_secs: f64, collection_secs: f64) -> Window {
    let end = args.end.unwrap_or(now);
    let start = args
        .start
        .unwrap_or_else(|| end - args.since.as_secs_f64().round() as i64);
    Window::new(start, end, step_secs, collection_secs)
}

/// Every process series of `sel` over `window`: per metric name, one range query for presence
/// (samples in each step's range) and one for samples (in each step).
pub async fn read_source(
    prom: &Prometheus,
    sel: &impl Selector,
    window: &Window,
) -> Result<SourceData, MeasureError> {
    let steps = window.steps();
    let names = measure::process_metric_names(prom, sel, window.start, window.end).await?;
    let step = window.step_secs.round() as i64;
    let mut series = Vec::new();
    for name in names {
        let presence = measure::range_series(
            prom,
            &queries::samples_per_series(sel, &name, window.range_secs),
            window,
        )
        .await?;
        let counts: HashMap<BTreeMap<String, String>, Vec<(f64, f64)>> =
            measure::range_series(prom, &queries::samples_per_series(sel, &name, step), window)
                .await?
                .into_iter()
                .collect();
        for (labels, points) in presence {
            let present = measure::align(&steps, &points)
                .iter()
                .map(|v| v.is_some_and(|v| v > 0.0))
                .collect();
            let samples = counts
                .get(&labels)
                .map(|p| measure::align(&steps, p))
                .unwrap_or_else(|| vec![None; steps.len()])
                .into_iter()
                .map(|v| v.unwrap_or(0.0))
                .collect();
            let mut labels = labels;
            labels.remove("__name__");
            series.push(SourceSeries {
                key: SeriesKey {
                    metric: name.clone(),
                    labels,
                },
                present,
                samples,
            });
        }
    }
    Ok(SourceData {
        window: *window,
        series,
    })
}

/// What `model` makes of `data`, as the analysis would measure it: active series per step,
/// samples per second, distinct series, critical names (matching `critical`). An output series
/// is active in a step when any series summed into it is, and has as many samples as the most
/// sampled of them (they are scraped together).
pub fn predict(model: &Model, data: &SourceData, critical: &[String]) -> Measurements {
    let steps = data.window.steps();
    let outputs: Vec<Option<SeriesKey>> = data.series.iter().map(|s| model.apply(&s.key)).collect();
    let mut series = Vec::with_capacity(steps.len());
    let mut samples = 0.0;
    let mut distinct: BTreeSet<&SeriesKey> = BTreeSet::new();
    for i in 0..steps.len() {
        let mut at: HashMap<&SeriesKey, (bool, f64)> = HashMap::new();
        for (source, output) in data.series.iter().zip(&outputs) {
            let Some(output) = output else { continue };
            let present = source.present.get(i).copied().unwrap_or(false);
            let count = source.samples.get(i).copied().unwrap_or(0.0);
            if !present && count <= 0.0 {
                continue;
            }
            let entry = at.entry(output).or_insert((false, 0.0));
            entry.0 |= present;
            entry.1 = entry.1.max(count);
        }
        let active = at.values().filter(|(p, _)| *p).count();
        samples += at.values().map(|(_, c)| c).sum::<f64>();
        distinct.extend(at.iter().filter(|(_, (p, _))| *p).map(|(k, _)| *k));
        series.push((active > 0).then_some(active as f64));
    }
    let patterns: Vec<Regex> = measure::critical_regexes(critical).unwrap_or_default();
    let executable = executable_label();
    let critical_names = distinct
        .iter()
        .filter_map(|k| k.labels.get(&executable))
        .filter(|n| patterns.iter().any(|p| p.is_match(n)))
        .cloned()
        .collect();
    let seconds = steps.len() as f64 * data.window.step_secs;
    Measurements {
        collectors: series.iter().map(|s| s.map(|_| 1.0)).collect(),
        series,
        steps,
        distinct_series: distinct.len() as f64,
        datapoints_per_second: if seconds > 0.0 {
            samples / seconds
        } else {
            0.0
        },
        critical_names,
        critical_patterns: critical.to_vec(),
        ..Measurements::default()
    }
}

/// The source collector's collection interval, seconds, estimated from the data: a series
/// present through the whole window has `step / interval` samples per step. `None` without such
/// series.
pub fn source_interval(data: &SourceData) -> Option<f64> {
    let steady: Vec<&SourceSeries> = data
        .series
        .iter()
        .filter(|s| !s.present.is_empty() && s.present.iter().all(|p| *p))
        .collect();
    let samples: f64 = steady.iter().flat_map(|s| &s.samples).sum();
    let steps: usize = steady.iter().map(|s| s.samples.len()).sum();
    (samples > 0.0 && steps > 0).then(|| data.window.step_secs * steps as f64 / samples)
}

/// Predicted samples per second at `interval` of what the source sampled at `source_interval`.
fn rescaled(m: &mut Measurements, source_interval: Option<f64>, interval: &SpecDuration) {
    let target = interval.as_secs_f64();
    if let Some(source) = source_interval.filter(|s| s.is_finite() && *s > 0.0)
        && target > 0.0
    {
        m.datapoints_per_second *= source / target;
    }
}

/// Every executable name of `data` with its series count and what `model` does to it, most
/// series first.
pub fn processes(model: &Model, data: &SourceData) -> Vec<ProcessRow> {
    let executable = executable_label();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &data.series {
        if let Some(name) = s.key.labels.get(&executable) {
            *counts.entry(name).or_default() += 1;
        }
    }
    let mut rows: Vec<ProcessRow> = counts
        .into_iter()
        .map(|(name, series)| {
            let (fate, into) = match model.fate(name) {
                Fate::Critical => ("critical", None),
                Fate::Kept => ("keep", None),
                Fate::RolledUp { into } if into == name => ("keep summed", None),
                Fate::RolledUp { into } => ("roll up", Some(into)),
                Fate::Dropped => ("drop", None),
            };
            ProcessRow {
                name: name.to_string(),
                series,
                fate: fate.to_string(),
                into,
            }
        })
        .collect();
    rows.sort_by(|a, b| b.series.cmp(&a.series).then_with(|| a.name.cmp(&b.name)));
    rows
}

/// The critical patterns an Experiment measures retention by: both sides' (union, sorted).
pub fn critical_patterns(baseline: &PipelineSpec, candidate: &PipelineSpec) -> Vec<String> {
    let set: BTreeSet<&String> = baseline
        .critical_processes
        .iter()
        .chain(&candidate.critical_processes)
        .collect();
    set.into_iter().cloned().collect()
}

/// Judges the predicted sides with the operator's analysis and assembles the report.
pub fn report(
    input: &PlanInput,
    source: &str,
    data: &SourceData,
    topk: &[String],
) -> Result<PlanReport, CliError> {
    let model = |spec: &PipelineSpec| {
        Model::new(TemplateLogic::of(spec, topk)).map_err(|e| CliError::Input(e.to_string()))
    };
    let (base_model, cand_model) = (model(&input.baseline)?, model(&input.candidate)?);
    let critical = critical_patterns(&input.baseline, &input.candidate);
    let source_interval = source_interval(data);
    let mut base = predict(&base_model, data, &critical);
    let mut cand = predict(&cand_model, data, &critical);
    // Each side samples at its own collection interval, whatever the source's.
    if !input.source_baseline {
        rescaled(
            &mut base,
            source_interval,
            &input.baseline.collection_interval,
        );
    }
    rescaled(
        &mut cand,
        source_interval,
        &input.candidate.collection_interval,
    );
    let eval = verdict::evaluate(&input.experiment, &base, &cand);
    let r = eval.results;
    let cost = r.estimated_monthly_cost.clone().unwrap_or_default();
    let figures =
        |m: &Measurements, v: &crate::crd::experiment::VariantResults, cost: f64| Figures {
            series: v.series.unwrap_or(0.0),
            distinct_series: m.distinct_series,
            datapoints_per_second: m.datapoints_per_second,
            monthly_cost: cost,
            critical_processes: m.critical_names.len(),
        };
    let predictable = [
        verdict::criterion::MIN_SERIES_REDUCTION,
        verdict::criterion::MIN_CRITICAL_RETENTION,
        verdict::criterion::MIN_COST_REDUCTION,
    ];
    Ok(PlanReport {
        source: source.to_string(),
        start: data.window.start,
        end: data.window.end,
        step_seconds: data.window.step_secs,
        template: input.candidate.template.as_str().to_string(),
        baseline: figures(&base, &r.baseline, cost.baseline),
        candidate: figures(&cand, &r.candidate, cost.candidate),
        series_reduction_percent: r.series_reduction_percent,
        datapoint_reduction_percent: r.datapoint_reduction_percent,
        cost_reduction_percent: r.cost_reduction_percent,
        critical_retention_percent: r.critical_retention_percent,
        currency: input.experiment.cost_model.currency.clone(),
        criteria: r
            .criteria
            .into_iter()
            .filter(|c| predictable.contains(&c.name.as_str()))
            .collect(),
        topk: if input.candidate.template == PipelineTemplate::Topk {
            let mut names = topk.to_vec();
            names.extend(
                input
                    .candidate
                    .topk
                    .iter()
                    .flat_map(|t| t.processes.clone()),
            );
            names.sort();
            names.dedup();
            names
        } else {
            vec![]
        },
        processes: processes(&cand_model, data),
    })
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{:+.1}%", -v))
}

fn time(t: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(t)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| t.to_string())
}

/// The report as aligned text: the comparison, the criteria, then the processes (`limit` rows,
/// 0 for all).
pub fn format_table(r: &PlanReport, limit: usize) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "Plan for candidate template {} from {}",
        r.template, r.source
    ));
    line(format!(
        "Window {} – {}, step {}s",
        time(r.start),
        time(r.end),
        r.step_seconds
    ));
    line(String::new());
    line(format!(
        "{:<22} {:>14} {:>14} {:>9}",
        "", "BASELINE", "CANDIDATE", "CHANGE"
    ));
    line(format!(
        "{:<22} {:>14.0} {:>14.0} {:>9}",
        "active series",
        r.baseline.series,
        r.candidate.series,
        percent(r.series_reduction_percent)
    ));
    line(format!(
        "{:<22} {:>14.1} {:>14.1} {:>9}",
        "datapoints/s",
        r.baseline.datapoints_per_second,
        r.candidate.datapoints_per_second,
        percent(r.datapoint_reduction_percent)
    ));
    line(format!(
        "{:<22} {:>14.2} {:>14.2} {:>9}",
        format!("monthly cost ({})", r.currency),
        r.baseline.monthly_cost,
        r.candidate.monthly_cost,
        percent(r.cost_reduction_percent)
    ));
    line(format!(
        "{:<22} {:>14} {:>14} {:>9}",
        "critical processes",
        r.baseline.critical_processes,
        r.candidate.critical_processes,
        r.critical_retention_percent
            .map_or_else(|| "n/a".to_string(), |v| format!("{v:.0}% kept"))
    ));
    for c in &r.criteria {
        line(format!(
            "criterion {} {}: predicted {} ({})",
            c.name,
            c.threshold,
            c.observed
                .map_or_else(|| "n/a".into(), |v| format!("{v:.1}")),
            if c.passed { "met" } else { "MISSED" }
        ));
    }
    if !r.topk.is_empty() {
        line(format!("top K kept: {}", r.topk.join(", ")));
    }
    let mut by_fate: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for p in &r.processes {
        let e = by_fate.entry(p.fate.as_str()).or_default();
        e.0 += 1;
        e.1 += p.series;
    }
    line(String::new());
    line(format!(
        "Processes: {}",
        by_fate
            .iter()
            .map(|(fate, (names, series))| format!("{fate} {names} ({series} series)"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    line(format!(
        "{:<32} {:>8}  {}",
        "EXECUTABLE", "SERIES", "CANDIDATE"
    ));
    let shown = if limit == 0 { r.processes.len() } else { limit };
    for p in r.processes.iter().take(shown) {
        let fate = match &p.into {
            Some(into) => format!("{} into {into}", p.fate),
            None => p.fate.clone(),
        };
        line(format!("{:<32} {:>8}  {fate}", p.name, p.series));
    }
    if r.processes.len() > shown {
        line(format!(
            "… {} more (--processes 0 lists all)",
            r.processes.len() - shown
        ));
    }
    out
}

/// Writes `value` as JSON or YAML.
pub fn write_structured<T: Serialize>(
    out: &mut dyn Write,
    value: &T,
    output: Output,
) -> Result<(), CliError> {
    let text = match output {
        Output::Yaml => serde_yaml::to_string(value).map_err(|e| CliError::Input(e.to_string()))?,
        _ => {
            let mut s =
                serde_json::to_string_pretty(value).map_err(|e| CliError::Input(e.to_string()))?;
            s.push('\n');
            s
        }
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// A Prometheus client for `url`, with the operator's default settings (timeouts, response
/// size cap).
pub fn client(url: &str) -> Result<Prometheus, CliError> {
    PrometheusAccess::default()
        .client(url)
        .map_err(|e| CliError::Usage(format!("--prometheus {url}: {e}")))
}

/// Maps a measurement error to the CLI's: Prometheus problems are connection errors.
pub fn connection(e: MeasureError) -> CliError {
    match e {
        MeasureError::Invalid(m) => CliError::Usage(m),
        other => CliError::Connection(other.to_string()),
    }
}

/// Now, Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Runs `plan`.
pub async fn run(
    args: &Args,
    global: &GlobalArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let docs = documents::read_all(std::slice::from_ref(&args.file), false)?;
    let input = plan_input(&docs, global.namespace.as_deref())?;
    let source = args
        .source
        .from
        .clone()
        .or_else(|| input.default_source.clone())
        .ok_or_else(|| CliError::Usage("--from SELECTOR is required with a Pipeline".into()))?;
    let step = args.source.step.as_ref().map_or_else(
        || {
            if input.ranks_topk {
                input.experiment.analysis.interval.as_secs_f64()
            } else {
                30.0
            }
        },
        SpecDuration::as_secs_f64,
    );
    let collection = input
        .baseline
        .collection_interval
        .as_secs_f64()
        .max(input.candidate.collection_interval.as_secs_f64());
    let window = window(&args.source, now(), step, collection);
    let prom = client(&args.source.prometheus)?;
    let data = read_source(&prom, &source, &window)
        .await
        .map_err(connection)?;
    if data.series.is_empty() {
        return Err(CliError::Connection(format!(
            "no process series match {source} in the window: nothing to plan from"
        )));
    }
    let topk = match (&input.candidate.topk, input.ranks_topk) {
        (Some(t), true) => measure::topk_names(&prom, &source, t.k, &window)
            .await
            .map_err(connection)?,
        _ => vec![],
    };
    let report = report(&input, &source.to_string(), &data, &topk)?;
    match global.output.unwrap_or(Output::Table) {
        Output::Table | Output::Html => {
            out.write_all(format_table(&report, args.processes).as_bytes())?
        }
        structured => write_structured(out, &report, structured)?,
    }
    Ok(if report.misses_criteria() {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::pipeline::{AggregateSpec, TopKSpec};

    /// A source: `names` with `pids` each, CPU in 3 states + memory per pid, every step, 2
    /// samples per step; `churn` adds a short-lived process every other step.
    pub(crate) fn source(names: &[(&str, usize)], steps: usize, churn: bool) -> SourceData {
        let window = Window::new(1000, 1000 + 30 * steps as i64 + 30, 30.0, 10.0);
        let n = window.steps().len();
        let mut series = vec![];
        let mut pid = 0;
        let mut add = |name: &str, pid: usize, present: Vec<bool>| {
            for (metric, states) in [
                (
                    "process_cpu_time_seconds_total",
                    vec!["user", "system", "wait"],
                ),
                ("process_memory_usage_bytes", vec![""]),
            ] {
                for state in states {
                    let mut labels = BTreeMap::from([
                        ("process_executable_name".to_string(), name.to_string()),
                        ("process_pid".to_string(), pid.to_string()),
                        ("phoenix_node".to_string(), "n1".to_string()),
                    ]);
                    if !state.is_empty() {
                        labels.insert("state".into(), state.into());
                    }
                    series.push(SourceSeries {
                        key: SeriesKey {
                            metric: metric.into(),
                            labels,
                        },
                        samples: present.iter().map(|p| if *p { 3.0 } else { 0.0 }).collect(),
                        present: present.clone(),
                    });
                }
            }
        };
        for (name, pids) in names {
            for _ in 0..*pids {
                pid += 1;
                add(name, pid, vec![true; n]);
            }
        }
        if churn {
            for i in (0..n).step_by(2) {
                pid += 1;
                let mut present = vec![false; n];
                present[i] = true;
                add(&format!("cron-{i}"), pid, present);
            }
        }
        SourceData { window, series }
    }

    fn input(candidate: PipelineSpec) -> PlanInput {
        PlanInput {
            candidate,
            baseline: identity_baseline(),
            experiment: default_experiment(),
            default_source: None,
            ranks_topk: false,
            source_baseline: true,
        }
    }

    fn critical(mut spec: PipelineSpec) -> PipelineSpec {
        spec.critical_processes = vec!["^postgres$".into()];
        spec
    }

    #[test]
    fn a_baseline_candidate_predicts_no_change() {
        let data = source(&[("postgres", 2), ("java", 3)], 10, true);
        let r = report(&input(identity_baseline()), "{x=\"y\"}", &data, &[]).expect("plans");
        assert_eq!(r.series_reduction_percent, Some(0.0));
        assert_eq!(r.datapoint_reduction_percent, Some(0.0));
        assert_eq!(r.baseline.series, r.candidate.series);
    }

    #[test]
    fn per_step_counts_follow_the_analysis_and_churn_counts_only_where_present() {
        let data = source(&[("postgres", 2), ("java", 3)], 10, true);
        let model = Model::new(TemplateLogic::of(&identity_baseline(), &[])).expect("model");
        let m = predict(&model, &data, &["^postgres$".into()]);
        // 5 pids × 4 series every step, plus 4 cron series every other step.
        assert_eq!(m.series[0], Some(24.0));
        assert_eq!(m.series[1], Some(20.0));
        assert_eq!(m.critical_names, BTreeSet::from(["postgres".to_string()]));
        // 3 samples per series per 30 s step.
        let expected = (20.0 * m.steps.len() as f64 + 4.0 * m.steps.len().div_ceil(2) as f64) * 3.0
            / (30.0 * m.steps.len() as f64);
        assert!((m.datapoints_per_second - expected).abs() < 1e-9);
    }

    #[test]
    fn aggregate_predicts_the_rollup_and_keeps_critical_processes() {
        let data = source(&[("postgres", 2), ("java", 30), ("node", 20)], 10, false);
        let mut spec = critical(PipelineSpec::from_template(PipelineTemplate::Aggregate));
        spec.aggregate = Some(Box::new(AggregateSpec::default()));
        let r = report(&input(spec), "{x=\"y\"}", &data, &[]).expect("plans");
        // 52 pids × 4 = 208 → postgres 8 + java 4 + node 4 = 16.
        assert_eq!(r.baseline.series, 208.0);
        assert_eq!(r.candidate.series, 16.0);
        assert_eq!(r.series_reduction_percent, Some(92.307692));
        assert_eq!(r.critical_retention_percent, Some(100.0));
        assert!(!r.misses_criteria());
        assert_eq!(r.processes[0].name, "java");
        assert_eq!(r.processes[0].fate, "keep summed");
        assert_eq!(
            r.processes
                .iter()
                .find(|p| p.name == "postgres")
                .map(|p| p.fate.as_str()),
            Some("critical")
        );
    }

    #[test]
    fn samples_follow_each_sides_collection_interval() {
        // 3 samples per 30 s step: the source scrapes every 10 s.
        let data = source(&[("postgres", 1), ("a", 2)], 10, false);
        assert_eq!(source_interval(&data), Some(10.0));
        let mut slower = identity_baseline();
        slower.collection_interval = SpecDuration::from_secs(20);
        let mut input = input(slower);
        input.baseline.collection_interval = SpecDuration::from_secs(10);
        let r = report(&input, "{x=\"y\"}", &data, &[]).expect("plans");
        assert!((r.baseline.datapoints_per_second - 12.0 * 3.0 / 30.0).abs() < 1e-9);
        assert!((r.candidate.datapoints_per_second - 12.0 * 3.0 / 30.0 / 2.0).abs() < 1e-9);
        assert_eq!(r.series_reduction_percent, Some(0.0));
        assert_eq!(r.datapoint_reduction_percent, Some(50.0));
    }

    #[test]
    fn losing_a_critical_process_is_a_finding() {
        let data = source(&[("postgres", 2), ("java", 3)], 10, false);
        let mut spec = PipelineSpec::from_template(PipelineTemplate::PriorityFilter);
        spec.keep_patterns = vec!["^java$".into()];
        let mut input = input(spec);
        input.baseline.critical_processes = vec!["^postgres$".into()];
        let r = report(&input, "{x=\"y\"}", &data, &[]).expect("plans");
        assert_eq!(r.critical_retention_percent, Some(0.0));
        assert!(r.misses_criteria());
    }

    #[test]
    fn topk_names_come_from_the_ranking_and_the_rest_is_other() {
        let data = source(&[("postgres", 1), ("a", 5), ("b", 5), ("c", 5)], 10, false);
        let mut spec = critical(PipelineSpec::from_template(PipelineTemplate::Topk));
        spec.topk = Some(Box::new(TopKSpec {
            k: 1,
            refresh_interval: "1m".parse().expect("duration"),
            processes: vec![],
            selection_source: None,
        }));
        let r = report(&input(spec), "{x=\"y\"}", &data, &["b".to_string()]).expect("plans");
        assert_eq!(r.candidate.series, 4.0 + 4.0 + 4.0, "postgres, b, other");
        assert_eq!(r.topk, vec!["b"]);
        let table = format_table(&r, 2);
        assert!(table.contains("active series"), "{table}");
        assert!(table.contains("roll up into other"), "{table}");
        assert!(table.contains("… 2 more"), "{table}");
        assert!(table.contains("top K kept: b"), "{table}");
    }

    #[test]
    fn reports_serialize_for_machines() {
        let data = source(&[("postgres", 1), ("a", 2)], 5, false);
        let r = report(&input(identity_baseline()), "{x=\"y\"}", &data, &[]).expect("plans");
        let mut out = Vec::new();
        write_structured(&mut out, &r, Output::Json).expect("json");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("parses");
        assert_eq!(v["baseline"]["series"], 12.0);
        assert_eq!(v["processes"][0]["name"], "a");
    }

    fn doc(text: &str) -> Vec<documents::Document> {
        documents::parse("f.yaml", text).expect("yaml")
    }

    #[test]
    fn an_experiment_plans_its_candidate_against_its_own_baseline() {
        let input = plan_input(
            &doc("apiVersion: phoenix.io/v1alpha1\nkind: Experiment\nmetadata: {name: e, namespace: shop}\nspec:\n  baseline: {pipeline: {template: baseline}}\n  candidate: {pipeline: {template: aggregate}}\n  duration: 5m\n  analysis: {interval: 15s}\n"),
            None,
        )
        .expect("input");
        assert_eq!(input.candidate.template, PipelineTemplate::Aggregate);
        assert!(input.ranks_topk);
        assert_eq!(
            input.default_source.expect("source").to_string(),
            r#"{phoenix_experiment="shop/e",phoenix_variant="baseline"}"#
        );
        let input = plan_input(
            &doc("apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\nspec: {template: baseline}\n"),
            None,
        )
        .expect("input");
        assert!(input.default_source.is_none());
        assert!(plan_input(&doc("apiVersion: v1\nkind: ConfigMap\n"), None).is_err());
    }
}
