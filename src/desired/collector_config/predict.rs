//! The model of each template: what a rendered collector does to the process series it scrapes,
//! applied to series as Prometheus stores them (label sets). It reads the same
//! [`TemplateLogic`] the renderer renders from ([`super::templates::plan`]), so a prediction
//! (`kubectl phoenix plan`) and the deployed config cannot drift apart.
//!
//! Per template (see [`super::templates`] for the collector side):
//! - `baseline`: every series as scraped.
//! - every other template: a process whose executable name matches a critical pattern is kept as
//!   scraped (its own pid-level series).
//! - `priority-filter`: other processes matching `keepPatterns` are kept, minus the labels of
//!   `dropAttributes` (series that become identical are one summed series); the rest is dropped.
//! - `aggregate`, `topk`: other processes are renamed (category, `other`) and summed per name and
//!   node: the series keeps only the executable name, the `phoenix_rollup` marker, the node and
//!   the data-point attributes not in `dropAttributes`.
//! - `custom`: not modelled (the user's processors are not interpreted).
//!
//! With `sensitiveAttributes: Drop` the command line, command and owner labels are removed from
//! every series; hashing keeps one value per value, so it changes no count. The labels naming
//! the source's experiment, variant and pipeline are replaced by the candidate's own constants.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;

use super::templates::{Grouping, RestLogic, TemplateLogic, kept_datapoint_attributes};
use super::{EXECUTABLE_NAME, OTHER, ROLLUP_ATTRIBUTE};
use crate::crd::pipeline::{SENSITIVE_ATTRIBUTES, SensitiveAttributes};

/// Labels every collector sets to its own constant value: the source's values say nothing about
/// the candidate's series.
pub const REPLACED_LABELS: &[&str] = &["phoenix_experiment", "phoenix_variant", "phoenix_pipeline"];
/// The label of the node a collector runs on: a rollup sums per node, never across nodes.
pub const NODE_LABEL: &str = "phoenix_node";

/// One series as Prometheus stores it: the metric name and the other labels.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    /// `__name__`.
    pub metric: String,
    /// Every other label.
    pub labels: BTreeMap<String, String>,
}

/// What a template does to one process (one executable name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fate {
    /// Kept as scraped because it matches a critical pattern.
    Critical,
    /// Kept, pid by pid (`baseline`; `priority-filter`'s keep patterns).
    Kept,
    /// Summed with the other processes of the same target into series named `into` (its own
    /// name, its category or `other`).
    RolledUp { into: String },
    /// Not exported.
    Dropped,
}

/// Why a template cannot be modelled.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    /// `custom` runs processors Phoenix does not interpret.
    #[error(
        "template custom runs your own processors, which Phoenix does not interpret: its effect cannot be predicted (plan covers baseline, priority-filter, aggregate and topk)"
    )]
    Custom,
    /// A pattern does not compile (the renderer refuses it too).
    #[error("pattern {pattern:?}: {message}")]
    Pattern { pattern: String, message: String },
}

/// A compiled [`TemplateLogic`]: patterns compiled once, applied to many series.
#[derive(Debug)]
pub struct Model {
    logic: TemplateLogic,
    critical: Option<Regex>,
    keep: Option<Regex>,
    categories: Vec<(String, Regex)>,
    topk: BTreeSet<String>,
}

/// The Prometheus label of an OpenTelemetry attribute (the remote-write exporter's translation:
/// every character but letters, digits and `_` becomes `_`).
pub fn prometheus_label(attribute: &str) -> String {
    attribute
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Whether the Prometheus metric `name` is the OpenTelemetry metric `otel`: its translation
/// plus at most a one-word unit (`_bytes`, `_seconds`) and `_total`.
pub fn is_metric(name: &str, otel: &str) -> bool {
    let base = prometheus_label(otel);
    let Some(rest) = name.strip_prefix(&base) else {
        return false;
    };
    let unit = rest.strip_suffix("_total").unwrap_or(rest);
    unit.is_empty()
        || unit
            .strip_prefix('_')
            .is_some_and(|u| !u.is_empty() && u.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// The label holding a process's executable name.
pub fn executable_label() -> String {
    prometheus_label(EXECUTABLE_NAME)
}

fn compile(patterns: &[String]) -> Result<Option<Regex>, ModelError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    // Read as the collector's RE2 reads them (ASCII `\d`, `\w`, `\s`, `\b`).
    let re2: Vec<String> = patterns
        .iter()
        .map(|p| super::with_re2_semantics(p))
        .collect();
    let joined = super::escape::any_of(&re2);
    Regex::new(&joined)
        .map(Some)
        .map_err(|e| ModelError::Pattern {
            pattern: joined,
            message: e.to_string(),
        })
}

impl Model {
    /// Compiles `logic`; `custom` cannot be modelled.
    pub fn new(logic: TemplateLogic) -> Result<Model, ModelError> {
        let mut keep = None;
        let mut categories = vec![];
        let mut topk = BTreeSet::new();
        match &logic.rest {
            RestLogic::Custom => return Err(ModelError::Custom),
            RestLogic::Keep { patterns, .. } => keep = compile(patterns)?,
            RestLogic::Rollup {
                grouping: Grouping::Category(map),
                ..
            } => {
                for (category, pattern) in map {
                    let regex = compile(std::slice::from_ref(pattern))?.ok_or_else(|| {
                        ModelError::Pattern {
                            pattern: pattern.clone(),
                            message: "empty".into(),
                        }
                    })?;
                    categories.push((category.clone(), regex));
                }
            }
            RestLogic::Rollup {
                grouping: Grouping::TopK(names),
                ..
            } => topk = names.iter().cloned().collect(),
            _ => {}
        }
        Ok(Model {
            critical: compile(&logic.critical)?,
            keep,
            categories,
            topk,
            logic,
        })
    }

    /// The logic this model applies.
    pub fn logic(&self) -> &TemplateLogic {
        &self.logic
    }

    /// Whether `name` matches a critical pattern (and the template has a critical bypass).
    pub fn is_critical(&self, name: &str) -> bool {
        self.critical.as_ref().is_some_and(|r| r.is_match(name))
    }

    /// What the template does to the processes named `name`.
    pub fn fate(&self, name: &str) -> Fate {
        if self.logic.rest == RestLogic::Everything {
            return Fate::Kept;
        }
        if self.is_critical(name) {
            return Fate::Critical;
        }
        match &self.logic.rest {
            RestLogic::Everything => Fate::Kept,
            RestLogic::DropAll | RestLogic::Custom => Fate::Dropped,
            RestLogic::Keep { .. } => {
                if self.keep.as_ref().is_some_and(|r| r.is_match(name)) {
                    Fate::Kept
                } else {
                    Fate::Dropped
                }
            }
            RestLogic::Rollup { grouping, .. } => Fate::RolledUp {
                into: self.rollup_name(grouping, name),
            },
        }
    }

    /// The executable name a rolled-up process is summed under.
    fn rollup_name(&self, grouping: &Grouping, name: &str) -> String {
        match grouping {
            Grouping::Executable => name.to_string(),
            Grouping::Category(_) => self
                .categories
                .iter()
                .find(|(_, r)| r.is_match(name))
                .map_or_else(|| OTHER.to_string(), |(c, _)| c.clone()),
            Grouping::TopK(_) if self.topk.contains(name) => name.to_string(),
            Grouping::TopK(_) => OTHER.to_string(),
        }
    }

    /// The series the candidate exports for a scraped `series`, `None` when it is dropped. Series
    /// that map to the same key are one series (summed) in the candidate.
    pub fn apply(&self, series: &SeriesKey) -> Option<SeriesKey> {
        if self
            .logic
            .excluded_metrics
            .iter()
            .any(|m| is_metric(&series.metric, m.as_str()))
        {
            return None;
        }
        let mut labels = series.labels.clone();
        for label in REPLACED_LABELS {
            labels.remove(*label);
        }
        if self.logic.sensitive == SensitiveAttributes::Drop {
            for attribute in SENSITIVE_ATTRIBUTES {
                labels.remove(&prometheus_label(attribute));
            }
        }
        let executable = executable_label();
        let name = labels.get(&executable).cloned().unwrap_or_default();
        let labels = match (self.fate(&name), &self.logic.rest) {
            (Fate::Dropped, _) => return None,
            (_, RestLogic::Everything) => labels,
            (Fate::Critical, _) => {
                for attribute in &self.logic.summed_attributes {
                    labels.remove(&prometheus_label(attribute));
                }
                labels
            }
            (
                Fate::Kept,
                RestLogic::Keep {
                    drop_attributes, ..
                },
            ) => {
                for attribute in drop_attributes {
                    labels.remove(&prometheus_label(attribute));
                }
                labels
            }
            (
                Fate::RolledUp { into },
                RestLogic::Rollup {
                    grouping,
                    drop_attributes,
                },
            ) => {
                let marker = match grouping {
                    Grouping::TopK(_) if into == OTHER && !self.topk.contains(&name) => OTHER,
                    _ => grouping.marker(),
                };
                let mut out: BTreeMap<String, String> = kept_datapoint_attributes(drop_attributes)
                    .into_iter()
                    .filter_map(|a| {
                        let label = prometheus_label(a);
                        labels.get(&label).map(|v| (label, v.clone()))
                    })
                    .collect();
                if let Some(node) = labels.get(NODE_LABEL) {
                    out.insert(NODE_LABEL.to_string(), node.clone());
                }
                out.insert(executable, into);
                out.insert(prometheus_label(ROLLUP_ATTRIBUTE), marker.to_string());
                out
            }
            // Fates and rest logics always pair as above.
            _ => labels,
        };
        Some(SeriesKey {
            metric: series.metric.clone(),
            labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::pipeline::{
        AggregateGroupBy, AggregateSpec, ExcludableMetric, PipelineSpec, PipelineTemplate,
        SummableAttribute, TopKSpec,
    };

    fn series(metric: &str, name: &str, pid: u32, extra: &[(&str, &str)]) -> SeriesKey {
        let mut labels = BTreeMap::from([
            ("process_executable_name".to_string(), name.to_string()),
            ("process_pid".to_string(), pid.to_string()),
            (
                "process_command_line".to_string(),
                format!("{name} --pid {pid}"),
            ),
            ("phoenix_experiment".to_string(), "ns/source".to_string()),
            ("phoenix_variant".to_string(), "baseline".to_string()),
            ("phoenix_pipeline".to_string(), "source".to_string()),
            ("phoenix_node".to_string(), "node-a".to_string()),
        ]);
        labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        SeriesKey {
            metric: metric.to_string(),
            labels,
        }
    }

    /// A scrape: postgres ×2 (critical), nginx ×3, java ×2, cron ×1; CPU in three states and
    /// memory, per pid.
    fn scrape() -> Vec<SeriesKey> {
        let mut out = vec![];
        let mut pid = 100;
        for (name, count) in [("postgres", 2), ("nginx", 3), ("java", 2), ("cron", 1)] {
            for _ in 0..count {
                pid += 1;
                for state in ["user", "system", "wait"] {
                    out.push(series(
                        "process_cpu_time_seconds_total",
                        name,
                        pid,
                        &[("state", state)],
                    ));
                }
                out.push(series("process_memory_usage_bytes", name, pid, &[]));
            }
        }
        out
    }

    fn spec(template: PipelineTemplate) -> PipelineSpec {
        let mut spec = PipelineSpec::from_template(template);
        spec.critical_processes = vec!["^postgres$".into()];
        spec
    }

    fn output(spec: &PipelineSpec, topk: &[String]) -> BTreeSet<SeriesKey> {
        let model = Model::new(TemplateLogic::of(spec, topk)).expect("models");
        scrape().iter().filter_map(|s| model.apply(s)).collect()
    }

    fn names(out: &BTreeSet<SeriesKey>) -> BTreeSet<String> {
        out.iter()
            .filter_map(|s| s.labels.get("process_executable_name").cloned())
            .collect()
    }

    #[test]
    fn the_executable_label_is_the_one_the_queries_read() {
        assert_eq!(
            executable_label(),
            crate::analysis::queries::EXECUTABLE_LABEL
        );
        assert_eq!(prometheus_label("process.parent_pid"), "process_parent_pid");
    }

    #[test]
    fn baseline_keeps_every_series() {
        let out = output(&spec(PipelineTemplate::Baseline), &[]);
        assert_eq!(out.len(), 32);
        let model =
            Model::new(TemplateLogic::of(&spec(PipelineTemplate::Baseline), &[])).expect("models");
        assert_eq!(model.fate("postgres"), Fate::Kept);
    }

    #[test]
    fn priority_filter_keeps_critical_and_pattern_processes_and_sums_what_dropping_merges() {
        let mut s = spec(PipelineTemplate::PriorityFilter);
        assert_eq!(output(&s, &[]).len(), 8, "only postgres' 2 pids × 4 series");
        s.keep_patterns = vec!["^nginx$".into()];
        let out = output(&s, &[]);
        // postgres pid-level (8) + nginx summed over its pids: 3 states + memory.
        assert_eq!(out.len(), 8 + 4);
        assert_eq!(
            names(&out),
            BTreeSet::from(["nginx".into(), "postgres".into()])
        );
        s.drop_attributes = vec![];
        assert_eq!(
            output(&s, &[]).len(),
            8 + 12,
            "nothing dropped: nginx pid by pid"
        );
        s.drop_attributes = vec![
            "process.pid".into(),
            "process.command_line".into(),
            "state".into(),
        ];
        assert_eq!(output(&s, &[]).len(), 8 + 2, "CPU states summed too");
    }

    #[test]
    fn aggregate_sums_per_executable_or_category() {
        let mut s = spec(PipelineTemplate::Aggregate);
        s.aggregate = Some(Box::new(AggregateSpec::default()));
        let out = output(&s, &[]);
        // postgres 8 + nginx, java, cron 4 each.
        assert_eq!(out.len(), 8 + 12);
        let rolled = out
            .iter()
            .find(|k| k.labels.get("process_executable_name").map(String::as_str) == Some("java"))
            .expect("java");
        assert_eq!(
            rolled.labels.get("phoenix_rollup").map(String::as_str),
            Some("executable")
        );
        assert!(!rolled.labels.contains_key("process_pid"));
        assert_eq!(
            rolled.labels.get("phoenix_node").map(String::as_str),
            Some("node-a")
        );
        s.aggregate = Some(Box::new(AggregateSpec {
            group_by: AggregateGroupBy::Category,
            categories: BTreeMap::from([("web".into(), "^nginx$".into())]),
        }));
        let out = output(&s, &[]);
        assert_eq!(out.len(), 8 + 8, "web and other");
        assert_eq!(
            names(&out),
            BTreeSet::from(["other".into(), "postgres".into(), "web".into()])
        );
    }

    #[test]
    fn topk_keeps_its_names_summed_and_rolls_the_rest_into_other() {
        let mut s = spec(PipelineTemplate::Topk);
        s.topk = Some(Box::new(TopKSpec {
            k: 1,
            refresh_interval: "1m".parse().expect("duration"),
            processes: vec!["cron".into()],
            selection_source: None,
        }));
        let out = output(&s, &["java".to_string()]);
        assert_eq!(out.len(), 8 + 4 + 4 + 4, "postgres, java, cron, other");
        let model = Model::new(TemplateLogic::of(&s, &["java".to_string()])).expect("models");
        assert_eq!(model.fate("postgres"), Fate::Critical);
        assert_eq!(
            model.fate("java"),
            Fate::RolledUp {
                into: "java".into()
            }
        );
        assert_eq!(
            model.fate("nginx"),
            Fate::RolledUp {
                into: "other".into()
            }
        );
        let other = out
            .iter()
            .find(|k| k.labels.get("process_executable_name").map(String::as_str) == Some("other"))
            .expect("other");
        assert_eq!(
            other.labels.get("phoenix_rollup").map(String::as_str),
            Some("other")
        );
    }

    #[test]
    fn dropped_sensitive_attributes_and_source_labels_do_not_count() {
        let mut s = spec(PipelineTemplate::Baseline);
        s.sensitive_attributes = SensitiveAttributes::Drop;
        let out = output(&s, &[]);
        assert_eq!(out.len(), 32, "pids keep series apart");
        assert!(
            out.iter()
                .all(|k| !k.labels.contains_key("process_command_line")
                    && !k.labels.contains_key("phoenix_experiment"))
        );
    }

    #[test]
    fn excluded_metrics_and_summed_attributes_apply_to_every_process() {
        let mut s = spec(PipelineTemplate::Topk);
        s.topk = Some(Box::new(TopKSpec {
            k: 1,
            refresh_interval: "1m".parse().expect("duration"),
            processes: vec![],
            selection_source: None,
        }));
        s.sum_attributes = vec![SummableAttribute::State];
        let out = output(&s, &["java".to_string()]);
        // postgres 2 pids × (CPU summed + memory), java and other: CPU summed + memory.
        assert_eq!(out.len(), 4 + 2 + 2);
        assert!(out.iter().all(|k| !k.labels.contains_key("state")));
        s.exclude_metrics = vec![ExcludableMetric::MemoryUsage];
        assert_eq!(output(&s, &["java".to_string()]).len(), 2 + 1 + 1);
        assert!(is_metric(
            "process_memory_usage_bytes",
            "process.memory.usage"
        ));
        assert!(!is_metric("process_memory_usage_bytes", "process.memory"));
        assert!(is_metric(
            "process_cpu_time_seconds_total",
            "process.cpu.time"
        ));
        assert!(is_metric("process_disk_io_bytes_total", "process.disk.io"));
        assert!(!is_metric("process_disk_io_bytes_total", "process.disk"));
        let mut base = spec(PipelineTemplate::Baseline);
        base.sum_attributes = vec![SummableAttribute::State];
        assert_eq!(output(&base, &[]).len(), 32, "baseline keeps everything");
    }

    #[test]
    fn patterns_are_read_as_the_collectors_re2_reads_them() {
        let mut s = spec(PipelineTemplate::PriorityFilter);
        s.critical_processes = vec![r"^db\d$".into()];
        let model = Model::new(TemplateLogic::of(&s, &[])).expect("models");
        assert_eq!(model.fate("db1"), Fate::Critical);
        assert_eq!(model.fate("db\u{663}"), Fate::Dropped, "RE2's \\d is ASCII");
    }

    #[test]
    fn custom_cannot_be_modelled() {
        let mut s = spec(PipelineTemplate::Custom);
        s.custom = Some(
            serde_json::from_value(serde_json::json!({
                "processors": {"batch/x": {}}, "pipeline": ["batch/x"]
            }))
            .expect("custom"),
        );
        assert_eq!(
            Model::new(TemplateLogic::of(&s, &[])).expect_err("custom"),
            ModelError::Custom
        );
    }
}
