//! `suggest`: the smallest change to a running collector's pipeline that reaches a series
//! reduction while keeping every critical process, found with `plan`'s model over the series that
//! collector already sends. Changes are tried from the smallest up ([`LEVELS`]): a `topk`
//! candidate first, with the largest K that still reaches the target; only when no K does, the
//! next level also sums CPU states and disk directions of the rolled-up processes, then of every
//! process, then leaves out the metrics least looked at. The answer is a Pipeline manifest (its
//! top-K names listed in `spec.topk.processes`, so it deploys standalone exactly as planned) with
//! its plan.

use std::io::Write;

use regex::Regex;
use serde::Serialize;

use crate::analysis::measure::{self, Window};
use crate::crd::duration::SpecDuration;
use crate::crd::pipeline::{
    ExcludableMetric, Pipeline, PipelineSpec, PipelineTemplate, SummableAttribute, TopKSpec,
};

use super::plan::{self, PlanInput, PlanReport, SourceArgs, SourceData};
use super::{CliError, GlobalArgs, Outcome, Output};

/// `suggest --help` examples.
pub const EXAMPLES: &str = "Examples:\n  # A Pipeline with ≥ 90% fewer series than the production agents, keeping postgres and nginx\n  kubectl phoenix suggest --prometheus http://prometheus:9090 --from 'job=\"otel-agent\"' \\\n    --target-reduction 90 --critical '^postgres$' --critical '^nginx$' > pipelines/suggested.yaml\n\nExit codes: 0 a candidate reaches the target, 1 none does (the closest is printed), 2 usage or connection error.";

/// Largest K a `topk` Pipeline may have (the CRD's bound).
pub const MAX_K: u32 = 200;

/// `suggest` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Fewest series the candidate must drop, percent of the source's (0–100, exclusive).
    #[arg(long, value_parser = parse_target)]
    pub target_reduction: f64,
    /// Critical processes (RE2 on the executable name; repeatable): never dropped or rolled up,
    /// and retention must stay 100%.
    #[arg(long = "critical", value_name = "PATTERN")]
    pub critical: Vec<String>,
    /// Name of the suggested Pipeline.
    #[arg(long, default_value = "suggested")]
    pub name: String,
    /// The suggested Pipeline's collection interval.
    #[arg(long, default_value = "10s")]
    pub collection_interval: SpecDuration,
}

fn parse_target(text: &str) -> Result<f64, String> {
    let v: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if v > 0.0 && v < 100.0 {
        Ok(v)
    } else {
        Err("must be between 0 and 100, exclusive".into())
    }
}

/// One rung of the ladder of changes, smallest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    /// What this level changes, for people.
    pub description: &'static str,
    /// Sum CPU states and disk directions of the rolled-up processes (`dropAttributes`).
    pub sum_rolled_up: bool,
    /// Sum them on every process, critical ones included (`sumAttributes`).
    pub sum_everywhere: bool,
    /// Metrics left out (`excludeMetrics`).
    pub exclude: &'static [ExcludableMetric],
}

/// The ladder of changes `suggest` climbs.
pub const LEVELS: &[Level] = &[
    Level {
        description: "top-K: critical processes as they are, the K heaviest summed per name, the rest summed into other",
        sum_rolled_up: false,
        sum_everywhere: false,
        exclude: &[],
    },
    Level {
        description: "top-K, with CPU states and disk directions summed for the rolled-up processes",
        sum_rolled_up: true,
        sum_everywhere: false,
        exclude: &[],
    },
    Level {
        description: "top-K, with CPU states and disk directions summed for every process (critical ones keep their own series)",
        sum_rolled_up: true,
        sum_everywhere: true,
        exclude: &[],
    },
    Level {
        description: "top-K, states and directions summed for every process, virtual memory not collected",
        sum_rolled_up: true,
        sum_everywhere: true,
        exclude: &[ExcludableMetric::MemoryVirtual],
    },
    Level {
        description: "top-K, states and directions summed for every process, virtual memory and disk I/O not collected",
        sum_rolled_up: true,
        sum_everywhere: true,
        exclude: &[ExcludableMetric::MemoryVirtual, ExcludableMetric::DiskIo],
    },
];

/// The `topk` spec of `level` keeping `names` (K = their number, at least 1).
pub fn candidate(
    level: &Level,
    critical: &[String],
    names: &[String],
    interval: &SpecDuration,
) -> PipelineSpec {
    let mut spec = PipelineSpec::from_template(PipelineTemplate::Topk);
    spec.critical_processes = critical.to_vec();
    spec.collection_interval = interval.clone();
    spec.topk = Some(Box::new(TopKSpec {
        k: u32::try_from(names.len()).unwrap_or(MAX_K).clamp(1, MAX_K),
        refresh_interval: SpecDuration::from_secs(60),
        processes: names.to_vec(),
        selection_source: None,
    }));
    let sums = [SummableAttribute::State, SummableAttribute::Direction];
    if level.sum_rolled_up {
        for a in sums {
            spec.drop_attributes.push(a.as_str().to_string());
        }
    }
    if level.sum_everywhere {
        spec.sum_attributes = sums.to_vec();
    }
    spec.exclude_metrics = level.exclude.to_vec();
    spec
}

/// What `suggest` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Suggestion {
    /// Whether the candidate reaches the target with 100% critical retention.
    pub reached: bool,
    /// The change, for people.
    pub change: String,
    /// The candidate's spec.
    #[serde(skip)]
    pub spec: PipelineSpec,
    /// Its plan.
    pub plan: PlanReport,
}

/// The plan of `spec` against `data` with `target` as the series criterion.
fn plan_of(
    spec: &PipelineSpec,
    data: &SourceData,
    source: &str,
    target: f64,
) -> Result<PlanReport, CliError> {
    let mut experiment = plan::default_experiment();
    experiment.success_criteria.min_series_reduction_percent = Some(target);
    let input = PlanInput {
        candidate: spec.clone(),
        baseline: plan::identity_baseline(),
        experiment,
        default_source: None,
        ranks_topk: false,
        source_baseline: true,
    };
    plan::report(&input, source, data, &[])
}

fn reaches(report: &PlanReport, target: f64) -> bool {
    report.series_reduction_percent.is_some_and(|r| r >= target)
        && report
            .critical_retention_percent
            .is_some_and(|r| r >= 100.0)
}

/// The smallest change reaching `target`: the first level where K = 1 reaches it, with the
/// largest K there that still does (reductions only shrink as K grows, so a binary search over
/// `ranked`, heaviest first, finds it). When no level reaches it, the last level with K = 1.
pub fn search(
    data: &SourceData,
    source: &str,
    ranked: &[String],
    critical: &[String],
    interval: &SpecDuration,
    target: f64,
) -> Result<Suggestion, CliError> {
    let max_k = ranked.len().clamp(1, MAX_K as usize);
    let names = |k: usize| ranked[..k.min(ranked.len())].to_vec();
    let mut last = None;
    for level in LEVELS {
        let at = |k: usize| -> Result<(PipelineSpec, PlanReport), CliError> {
            let spec = candidate(level, critical, &names(k), interval);
            let report = plan_of(&spec, data, source, target)?;
            Ok((spec, report))
        };
        let (spec, report) = at(1)?;
        if !reaches(&report, target) {
            last = Some((level, spec, report));
            continue;
        }
        // Invariant: lo reaches the target; hi + 1 does not (or is past max_k).
        let (mut lo, mut hi) = (1, max_k);
        let mut best = (spec, report);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            let (spec, report) = at(mid)?;
            if reaches(&report, target) {
                lo = mid;
                best = (spec, report);
            } else {
                hi = mid - 1;
            }
        }
        let (spec, plan) = best;
        let k = spec.topk.as_ref().map_or(1, |t| t.k);
        return Ok(Suggestion {
            reached: true,
            change: format!("{} (K = {k})", level.description),
            spec,
            plan,
        });
    }
    let (level, spec, plan) = last.ok_or_else(|| CliError::Input("no change to try".into()))?;
    Ok(Suggestion {
        reached: false,
        change: format!("{} (K = 1); the target is out of reach", level.description),
        spec,
        plan,
    })
}

/// `ranked` without the names matching a critical pattern (they are kept anyway).
pub fn without_critical(ranked: Vec<String>, critical: &[String]) -> Result<Vec<String>, CliError> {
    let patterns: Vec<Regex> =
        measure::critical_regexes(critical).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(ranked
        .into_iter()
        .filter(|n| !patterns.iter().any(|p| p.is_match(n)))
        .collect())
}

/// The manifest: YAML comments with the plan's summary, then the Pipeline.
pub fn manifest(name: &str, s: &Suggestion) -> Result<String, CliError> {
    let pipeline = Pipeline::new(name, s.spec.clone());
    let yaml = serde_yaml::to_string(&pipeline).map_err(|e| CliError::Input(e.to_string()))?;
    let p = &s.plan;
    let pct = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1}%"));
    Ok(format!(
        "# Suggested by kubectl phoenix suggest from {} ({}):\n#   {}\n# Predicted: series {:.0} -> {:.0} ({} fewer), datapoints/s {:.1} -> {:.1} ({} fewer),\n#   monthly cost {:.2} -> {:.2} {} ({} less), critical retention {}.\n{yaml}",
        p.source,
        if s.reached {
            "target reached"
        } else {
            "TARGET NOT REACHED"
        },
        s.change,
        p.baseline.series,
        p.candidate.series,
        pct(p.series_reduction_percent),
        p.baseline.datapoints_per_second,
        p.candidate.datapoints_per_second,
        pct(p.datapoint_reduction_percent),
        p.baseline.monthly_cost,
        p.candidate.monthly_cost,
        p.currency,
        pct(p.cost_reduction_percent),
        pct(p.critical_retention_percent),
    ))
}

/// Runs `suggest`.
pub async fn run(
    args: &Args,
    global: &GlobalArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let source = args
        .source
        .from
        .clone()
        .ok_or_else(|| CliError::Usage("--from SELECTOR is required".into()))?;
    measure::critical_regexes(&args.critical).map_err(|e| CliError::Usage(e.to_string()))?;
    let step = args
        .source
        .step
        .as_ref()
        .map_or(30.0, SpecDuration::as_secs_f64);
    let window: Window = plan::window(
        &args.source,
        plan::now(),
        step,
        args.collection_interval.as_secs_f64(),
    );
    let prom = plan::client(&args.source.prometheus)?;
    let data = plan::read_source(&prom, &source, &window)
        .await
        .map_err(plan::connection)?;
    if data.series.is_empty() {
        return Err(CliError::Connection(format!(
            "no process series match {source} in the window: nothing to suggest from"
        )));
    }
    let ranked = measure::topk_names(&prom, &source, MAX_K + 50, &window)
        .await
        .map_err(plan::connection)?;
    let ranked = without_critical(ranked, &args.critical)?;
    let suggestion = search(
        &data,
        &source.to_string(),
        &ranked,
        &args.critical,
        &args.collection_interval,
        args.target_reduction,
    )?;
    match global.output.unwrap_or(Output::Yaml) {
        Output::Json => {
            let pipeline = Pipeline::new(&args.name, suggestion.spec.clone());
            let value = serde_json::json!({
                "pipeline": pipeline,
                "change": suggestion.change,
                "reached": suggestion.reached,
                "plan": suggestion.plan,
            });
            plan::write_structured(out, &value, Output::Json)?;
        }
        Output::Table => {
            writeln!(out, "{}", suggestion.change)?;
            out.write_all(plan::format_table(&suggestion.plan, 20).as_bytes())?;
        }
        _ => out.write_all(manifest(&args.name, &suggestion)?.as_bytes())?,
    }
    Ok(if suggestion.reached {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::plan::tests::source;
    use crate::desired::collector_config::{RenderContext, render};

    fn ranked() -> Vec<String> {
        (0..30).map(|i| format!("svc{i:02}")).collect()
    }

    fn data() -> SourceData {
        let names = ranked();
        let mut shape: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 10)).collect();
        shape.push(("postgres", 3));
        source(&shape, 10, false)
    }

    fn interval() -> SpecDuration {
        SpecDuration::from_secs(10)
    }

    /// The suggestion for `target`, postgres critical.
    fn search_at(target: f64) -> Suggestion {
        let critical = vec!["^postgres$".to_string()];
        search(
            &data(),
            "{x=\"y\"}",
            &ranked(),
            &critical,
            &interval(),
            target,
        )
        .expect("searches")
    }

    #[test]
    fn the_largest_k_reaching_the_target_is_chosen() {
        let critical = vec!["^postgres$".to_string()];
        // Source: 303 pids × 4 = 1212 series. Top-K: postgres 12 + 4 per name + other 4.
        let s = search_at(90.0);
        assert!(s.reached);
        let k = s.spec.topk.as_ref().expect("topk").k as usize;
        // 12 + 4k + 4 ≤ 121.2 → k ≤ 26.
        assert_eq!(k, 26, "{}", s.change);
        assert_eq!(
            s.spec.topk.as_ref().expect("topk").processes,
            ranked()[..26]
        );
        assert!(s.plan.series_reduction_percent.expect("reduction") >= 90.0);
        assert_eq!(s.plan.critical_retention_percent, Some(100.0));
        // One more name would miss the target: the chosen K is the largest.
        let more = candidate(&LEVELS[0], &critical, &ranked()[..27], &interval());
        let r = plan_of(&more, &data(), "x", 90.0).expect("plans");
        assert!(r.series_reduction_percent.expect("reduction") < 90.0);
        assert!(s.change.starts_with("top-K:"), "{}", s.change);
    }

    #[test]
    fn a_harder_target_climbs_the_ladder() {
        let critical = vec!["^postgres$".to_string()];
        // K = 1 at level 0: 12 + 4 + 4 = 20 of 1212 (98.3%); 99% needs summed states.
        let s = search(&data(), "x", &ranked(), &critical, &interval(), 99.0).expect("searches");
        assert!(s.reached, "{}", s.change);
        assert!(
            !s.spec.sum_attributes.is_empty()
                || s.spec.drop_attributes.contains(&"state".to_string())
        );
        // Out of reach: the last level is returned, marked.
        let s = search(&data(), "x", &ranked(), &critical, &interval(), 99.99).expect("searches");
        assert!(!s.reached);
        assert!(s.change.contains("out of reach"));
    }

    #[test]
    fn every_level_renders_and_the_manifest_is_a_pipeline() {
        let critical = vec!["^postgres$".to_string()];
        for level in LEVELS {
            let spec = candidate(level, &critical, &ranked()[..3], &interval());
            render(
                &spec,
                &RenderContext::new("suggested", "http://p/api/v1/write"),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", level.description));
        }
        let s = search_at(90.0);
        let text = manifest("suggested", &s).expect("manifest");
        assert!(
            text.starts_with("# Suggested by kubectl phoenix suggest"),
            "{text}"
        );
        let docs = crate::cli::documents::parse("m.yaml", &text).expect("yaml");
        let back: Pipeline = serde_json::from_value(docs[0].value.clone()).expect("a Pipeline");
        assert_eq!(back.spec, s.spec);
        assert_eq!(back.metadata.name.as_deref(), Some("suggested"));
    }

    #[test]
    fn critical_names_are_not_ranked_and_targets_are_bounded() {
        let r = without_critical(
            vec!["postgres".into(), "java".into()],
            &["^postgres$".into()],
        )
        .expect("ok");
        assert_eq!(r, vec!["java"]);
        assert!(parse_target("100").is_err());
        assert!(parse_target("0").is_err());
        assert_eq!(parse_target("90"), Ok(90.0));
    }
}
