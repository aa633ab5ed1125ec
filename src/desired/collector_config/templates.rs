//! The processors of each template, and the process-metric pipelines that chain them.
//!
//! Every non-baseline template has the same shape: critical processes flow through their own
//! pipeline `metrics/critical` (a filter that keeps only them, nothing else), and every other
//! process through the template's pipeline (`metrics/rest` or `metrics/custom`), which starts with
//! a filter that drops the critical ones. Both are fed by the one hostmetrics receiver (the
//! collector fans a receiver out to every pipeline that lists it, cloning the data) and export to
//! the same exporters. So no template, the user's custom processors included, can drop, trim or
//! roll up a critical process.
//!
//! Before anything else sees a process (right after Phoenix's own filters, which only drop
//! processes by executable name), every process-metric pipeline runs `transform/phoenix_sensitive`,
//! which applies `spec.sensitiveAttributes` to the command line, command and owner: hashes them
//! (default) or deletes them; with `Keep` the processor is absent. So the user's processors in
//! `custom`, the rollups and the exporters never see those values in clear text. Its `error_mode`
//! is `propagate`: a statement that fails drops the scrape instead of exporting clear text.
//!
//! Rolling processes up (aggregate, topk, and priority-filter once it drops attributes) is done in
//! four steps, because no single processor sums per-pid series:
//! 1. A transform rewrites the resource so that processes to be merged get identical resource
//!    attributes, and sets every data point's timestamp to 0: the process scraper stamps each
//!    process with its own `time.Now()`, and `metricstransform` only merges points with equal
//!    attributes *and* equal timestamps (verified against the real collector: without this the
//!    "sum" is one pid's value). aggregate/topk: `transform/phoenix_rollup`, whose `keep_keys`
//!    leaves `process.executable.name` (renamed to the category or `other` where needed) plus the
//!    `phoenix.rollup` marker. priority-filter: `transform/phoenix_drop_attributes`, which deletes
//!    `dropAttributes` and keeps the rest.
//! 2. `groupbyattrs/phoenix_merge` merges resources with identical attributes into one resource
//!    (and same-named metrics into one metric): a resource per executable name whose metrics hold
//!    one point per former pid. It does not sum anything.
//! 3. `metricstransform/phoenix_sum` `aggregate_labels` sums those points per remaining data-point
//!    attribute set (`state`, `direction`, ...).
//! 4. `transform/phoenix_restamp` sets the summed points' timestamp to now.
//!
//! One scrape reaches the processors as one batch (the receiver emits one batch per scrape and the
//! pipelines are synchronous up to `batch`, which comes last), so the sums are per scrape.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::escape::{any_of, confmap_value, exactly_one_of, ottl_string};
use super::{EXECUTABLE_NAME, OTHER, ROLLUP_ATTRIBUTE, RenderContext};
use crate::crd::pipeline::{
    AggregateGroupBy, ExcludableMetric, PipelineSpec, PipelineTemplate, SENSITIVE_ATTRIBUTES,
    SensitiveAttributes,
};

/// The one pipeline of `baseline`: every process.
pub const PROCESS_PIPELINE: &str = "metrics/process";
/// The bypass pipeline of critical processes.
pub const CRITICAL_PIPELINE: &str = "metrics/critical";
/// The pipeline of non-critical processes in priority-filter (absent when there are no
/// keepPatterns), aggregate and topk.
pub const REST_PIPELINE: &str = "metrics/rest";
/// The pipeline of non-critical processes in custom.
pub const CUSTOM_PIPELINE: &str = "metrics/custom";

const FILTER_CRITICAL: &str = "filter/phoenix_critical";
const FILTER_REST: &str = "filter/phoenix_rest";
const ROLLUP: &str = "transform/phoenix_rollup";
const DROP_ATTRIBUTES: &str = "transform/phoenix_drop_attributes";
const MERGE: &str = "groupbyattrs/phoenix_merge";
const SUM: &str = "metricstransform/phoenix_sum";
const RESTAMP: &str = "transform/phoenix_restamp";
const SUM_ATTRIBUTES: &str = "metricstransform/phoenix_sum_attributes";

/// The process scraper's metrics Phoenix collects (the scraper's defaults), in its key order.
pub const SCRAPED_METRICS: &[&str] = &[
    "process.cpu.time",
    "process.memory.usage",
    "process.memory.virtual",
    "process.disk.io",
];
/// The processor applying `spec.sensitiveAttributes` (absent with `Keep`).
pub const SENSITIVE: &str = "transform/phoenix_sensitive";

/// Data-point attributes of the process scraper's metrics (`process.cpu.time` `state`,
/// `process.disk.io` `direction`, ...). A rollup keeps them (minus `dropAttributes`) and sums over
/// everything else.
pub const DATAPOINT_ATTRIBUTES: &[&str] = &[
    "context_switch_type",
    "direction",
    "paging_fault_type",
    "state",
];

/// What a template adds between `memory_limiter` and `resource/phoenix` + `batch`.
#[derive(Debug, Default)]
pub struct Plan {
    pub processors: BTreeMap<String, Value>,
    /// Process-metric pipelines (name, processors in order).
    pub pipelines: Vec<(&'static str, Vec<String>)>,
}

impl Plan {
    fn add(&mut self, id: &str, config: Value) -> String {
        self.processors.insert(id.to_string(), config);
        id.to_string()
    }
}

fn executable_name() -> String {
    format!("resource.attributes[{}]", ottl_string(EXECUTABLE_NAME))
}

fn is_match(pattern: &str) -> String {
    format!("IsMatch({}, {})", executable_name(), ottl_string(pattern))
}

/// A filter processor dropping the resources (processes) matching any of `conditions`.
fn drop_resources_where(conditions: Vec<String>) -> Value {
    json!({"error_mode": "ignore", "metrics": {"resource": conditions}})
}

/// A transform processor running `resource` then `datapoint` statements.
fn transform(resource: Vec<String>, datapoint: Vec<String>) -> Value {
    let mut groups = vec![];
    if !resource.is_empty() {
        groups.push(json!({"context": "resource", "statements": resource}));
    }
    if !datapoint.is_empty() {
        groups.push(json!({"context": "datapoint", "statements": datapoint}));
    }
    json!({"error_mode": "ignore", "metric_statements": groups})
}

/// The `resource` statements applying `mode` to [`SENSITIVE_ATTRIBUTES`]: each non-empty value
/// replaced by its SHA-256 in hex (`Hash`), or deleted (`Drop`); none for `Keep`.
pub fn sensitive_statements(mode: SensitiveAttributes) -> Vec<String> {
    SENSITIVE_ATTRIBUTES
        .iter()
        .filter_map(|key| {
            let attr = format!("resource.attributes[{}]", ottl_string(key));
            match mode {
                // An empty value (a kernel thread's command line) stays empty: it holds nothing,
                // and Prometheus drops an empty label just as it would with `Keep`.
                SensitiveAttributes::Hash => Some(format!(
                    "set({attr}, SHA256({attr})) where {attr} != nil and {attr} != \"\""
                )),
                SensitiveAttributes::Drop => Some(format!(
                    "delete_key(resource.attributes, {})",
                    ottl_string(key)
                )),
                SensitiveAttributes::Keep => None,
            }
        })
        .collect()
}

/// Adds `transform/phoenix_sensitive` for `mode` (see the module docs) and returns its id, or
/// nothing for `Keep`.
fn sanitize(plan: &mut Plan, mode: SensitiveAttributes) -> Vec<String> {
    let statements = sensitive_statements(mode);
    if statements.is_empty() {
        return vec![];
    }
    let mut config = transform(statements, vec![]);
    config["error_mode"] = json!("propagate");
    vec![plan.add(SENSITIVE, config)]
}

/// How non-critical processes are renamed before they are merged per name.
#[derive(Clone, Debug, PartialEq)]
pub enum Grouping {
    /// Keep the executable name.
    Executable,
    /// Rename to the first matching category (in the map's order), else `other`.
    Category(BTreeMap<String, String>),
    /// Keep the names in the list (sorted, deduplicated), rename every other process to `other`.
    TopK(Vec<String>),
}

impl Grouping {
    /// The value of the `phoenix.rollup` marker on processes that keep a name of their own (or
    /// their category's).
    pub fn marker(&self) -> &'static str {
        match self {
            Grouping::Executable | Grouping::TopK(_) => "executable",
            Grouping::Category(_) => "category",
        }
    }
}

/// What a template does to the non-critical processes.
#[derive(Clone, Debug, PartialEq)]
pub enum RestLogic {
    /// `baseline`: every process as scraped (there is no critical bypass).
    Everything,
    /// `priority-filter` without `keepPatterns`: only the critical processes are exported.
    DropAll,
    /// `priority-filter`: processes matching `patterns` are kept, the rest dropped; the
    /// `drop_attributes` are deleted from the kept ones (pid-level series that become identical
    /// are summed, as are data-point attributes among them).
    Keep {
        patterns: Vec<String>,
        drop_attributes: Vec<String>,
    },
    /// `aggregate`, `topk`: every process renamed per `grouping` and summed per name; nothing
    /// but the (new) executable name and the marker is left of the resource, and the data-point
    /// attributes among `drop_attributes` are summed too.
    Rollup {
        grouping: Grouping,
        drop_attributes: Vec<String>,
    },
    /// `custom`: the user's processors, which Phoenix does not interpret.
    Custom,
}

/// What a template does to one scrape's processes: the parameters both the renderer ([`plan`])
/// and the model ([`super::predict`]) read, so that what Phoenix predicts and what it deploys
/// cannot drift apart.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateLogic {
    /// Patterns (RE2, unanchored) on the executable name of the processes that bypass the
    /// template untouched; empty for `baseline` (which keeps everything anyway).
    pub critical: Vec<String>,
    /// What happens to the command line, command and owner of every process.
    pub sensitive: SensitiveAttributes,
    /// What happens to every other process.
    pub rest: RestLogic,
    /// Metrics the scraper does not collect (`spec.excludeMetrics`).
    pub excluded_metrics: Vec<ExcludableMetric>,
    /// Data-point attributes summed away on every process, critical ones included
    /// (`spec.sumAttributes`); [`RestLogic::Keep`] and [`RestLogic::Rollup`] carry them in their
    /// `drop_attributes` too.
    pub summed_attributes: Vec<String>,
}

impl TemplateLogic {
    /// The logic of `spec` with `topk_processes` (the names a `topk` Pipeline keeps besides
    /// `spec.topk.processes`; see [`super::RenderContext::topk_processes`]).
    pub fn of(spec: &PipelineSpec, topk_processes: &[String]) -> TemplateLogic {
        let everything = spec.template == PipelineTemplate::Baseline;
        let summed_attributes: Vec<String> = if everything {
            vec![]
        } else {
            spec.sum_attributes
                .iter()
                .map(|a| a.as_str().to_string())
                .collect()
        };
        let mut drop_attributes = spec.drop_attributes.clone();
        for a in &summed_attributes {
            if !drop_attributes.contains(a) {
                drop_attributes.push(a.clone());
            }
        }
        let rest = match spec.template {
            PipelineTemplate::Baseline => RestLogic::Everything,
            PipelineTemplate::PriorityFilter if spec.keep_patterns.is_empty() => RestLogic::DropAll,
            PipelineTemplate::PriorityFilter => RestLogic::Keep {
                patterns: spec.keep_patterns.clone(),
                drop_attributes,
            },
            PipelineTemplate::Aggregate => {
                let aggregate = spec.aggregate.clone().unwrap_or_default();
                let grouping = match aggregate.group_by {
                    AggregateGroupBy::Executable => Grouping::Executable,
                    AggregateGroupBy::Category => Grouping::Category(aggregate.categories),
                };
                RestLogic::Rollup {
                    grouping,
                    drop_attributes,
                }
            }
            PipelineTemplate::Topk => {
                let mut names: Vec<String> = topk_processes.to_vec();
                if let Some(topk) = &spec.topk {
                    names.extend(topk.processes.iter().cloned());
                }
                names.sort();
                names.dedup();
                RestLogic::Rollup {
                    grouping: Grouping::TopK(names),
                    drop_attributes,
                }
            }
            PipelineTemplate::Custom => RestLogic::Custom,
        };
        let critical = match rest {
            RestLogic::Everything => vec![],
            _ => spec.critical_processes.clone(),
        };
        TemplateLogic {
            critical,
            sensitive: spec.sensitive_attributes,
            rest,
            excluded_metrics: if everything {
                vec![]
            } else {
                spec.exclude_metrics.clone()
            },
            summed_attributes,
        }
    }
}

/// The process scraper's `metrics` block: every metric of [`SCRAPED_METRICS`], enabled unless
/// `spec.excludeMetrics` leaves it out.
pub fn scraper_metrics(spec: &PipelineSpec) -> Value {
    let excluded = TemplateLogic::of(spec, &[]).excluded_metrics;
    let metrics: serde_json::Map<String, Value> = SCRAPED_METRICS
        .iter()
        .map(|m| {
            let enabled = !excluded.iter().any(|e| e.as_str() == *m);
            (m.to_string(), json!({"enabled": enabled}))
        })
        .collect();
    Value::Object(metrics)
}

/// A `metricstransform` summing every process metric's points over the data-point attributes
/// not in `label_set`, per resource.
fn sum_over(label_set: Vec<&str>) -> Value {
    json!({"transforms": [{
        "include": r"^process\..*$",
        "match_type": "regexp",
        "action": "update",
        "operations": [{
            "action": "aggregate_labels",
            "label_set": label_set,
            "aggregation_type": "sum",
        }],
    }]})
}

/// The data-point attributes a rollup keeps: [`DATAPOINT_ATTRIBUTES`] minus `drop_attributes`.
pub fn kept_datapoint_attributes(drop_attributes: &[String]) -> Vec<&'static str> {
    DATAPOINT_ATTRIBUTES
        .iter()
        .copied()
        .filter(|a| !drop_attributes.iter().any(|d| d == a))
        .collect()
}

/// The `resource` statements that give every process to be merged the same resource attributes:
/// rename per `grouping`, set the `phoenix.rollup` marker, keep nothing else.
fn rollup_statements(grouping: Grouping, marker: &str) -> Vec<String> {
    let name = executable_name();
    let rollup_attr = format!("resource.attributes[{}]", ottl_string(ROLLUP_ATTRIBUTE));
    let category_attr = format!("resource.attributes[{}]", ottl_string("phoenix.category"));
    let other = ottl_string(OTHER);
    let mut statements = vec![];
    match grouping {
        Grouping::Executable => {}
        Grouping::Category(categories) => {
            let categories = &categories;
            // The first matching category wins (in the map's order); the rest go to `other`.
            for (category, pattern) in categories {
                statements.push(format!(
                    "set({category_attr}, {}) where {category_attr} == nil and {}",
                    ottl_string(category),
                    is_match(pattern)
                ));
            }
            statements.push(format!(
                "set({category_attr}, {other}) where {category_attr} == nil"
            ));
            statements.push(format!("set({name}, {category_attr})"));
        }
        Grouping::TopK(names) => {
            if names.is_empty() {
                statements.push(format!("set({rollup_attr}, {other})"));
            } else {
                statements.push(format!(
                    "set({rollup_attr}, {other}) where not {}",
                    is_match(&exactly_one_of(&names))
                ));
            }
            statements.push(format!(
                "set({name}, {other}) where {rollup_attr} == {other}"
            ));
        }
    }
    statements.push(format!(
        "set({rollup_attr}, {}) where {rollup_attr} == nil",
        ottl_string(marker)
    ));
    statements.push(format!(
        "keep_keys(resource.attributes, [{}, {}])",
        ottl_string(EXECUTABLE_NAME),
        ottl_string(ROLLUP_ATTRIBUTE)
    ));
    statements
}

/// Adds the merge chain of the module docs: `transform_id` runs `resource_statements` (which make
/// the processes to merge identical) and zeroes the timestamps, then merge, sum, restamp. Returns
/// the processor ids in order.
fn merge_and_sum(
    plan: &mut Plan,
    transform_id: &str,
    resource_statements: Vec<String>,
    drop_attributes: &[String],
) -> Vec<String> {
    let label_set = kept_datapoint_attributes(drop_attributes);
    vec![
        plan.add(
            transform_id,
            transform(
                resource_statements,
                vec!["set(datapoint.time_unix_nano, 0)".into()],
            ),
        ),
        plan.add(MERGE, json!({"keys": [EXECUTABLE_NAME]})),
        plan.add(SUM, sum_over(label_set)),
        plan.add(
            RESTAMP,
            transform(vec![], vec!["set(datapoint.time, Now())".into()]),
        ),
    ]
}

/// The template's processors and process-metric pipelines, rendered from its
/// [`TemplateLogic`].
pub fn plan(spec: &PipelineSpec, ctx: &RenderContext) -> Plan {
    let logic = TemplateLogic::of(spec, ctx.topk_processes);
    let mut plan = Plan::default();
    let mode = logic.sensitive;
    if logic.rest == RestLogic::Everything {
        let chain = sanitize(&mut plan, mode);
        plan.pipelines.push((PROCESS_PIPELINE, chain));
        return plan;
    }
    let critical = (!logic.critical.is_empty()).then(|| any_of(&logic.critical));
    // The bypass: critical processes, untouched.
    let mut rest_filter = vec![];
    if let Some(critical) = &critical {
        let keep_critical = plan.add(
            FILTER_CRITICAL,
            drop_resources_where(vec![format!("not {}", is_match(critical))]),
        );
        let mut chain = vec![keep_critical];
        chain.extend(sanitize(&mut plan, mode));
        if !logic.summed_attributes.is_empty() {
            // Each critical process is its own resource: this sums within a process only.
            let label_set = kept_datapoint_attributes(&logic.summed_attributes);
            chain.push(plan.add(SUM_ATTRIBUTES, sum_over(label_set)));
        }
        plan.pipelines.push((CRITICAL_PIPELINE, chain));
        rest_filter.push(is_match(critical));
    }
    match logic.rest {
        RestLogic::Everything => unreachable!("handled above"),
        // Only critical processes are kept: the bypass is the whole pipeline.
        RestLogic::DropAll => {}
        RestLogic::Keep {
            patterns,
            drop_attributes,
        } => {
            rest_filter.push(format!("not {}", is_match(&any_of(&patterns))));
            let mut chain = filter_rest(&mut plan, rest_filter, mode);
            if !drop_attributes.is_empty() {
                // Dropping identifying attributes (pid, command line) leaves same-named processes
                // with identical labels, which Prometheus would reject as duplicate samples: those
                // are summed by the rollup chain, which also drops the attributes.
                let deletes = drop_attributes
                    .iter()
                    .map(|a| format!("delete_key(resource.attributes, {})", ottl_string(a)))
                    .collect();
                chain.extend(merge_and_sum(
                    &mut plan,
                    DROP_ATTRIBUTES,
                    deletes,
                    &drop_attributes,
                ));
            }
            plan.pipelines.push((REST_PIPELINE, chain));
        }
        RestLogic::Rollup {
            grouping,
            drop_attributes,
        } => {
            let mut chain = filter_rest(&mut plan, rest_filter, mode);
            let marker = grouping.marker();
            let statements = rollup_statements(grouping, marker);
            chain.extend(merge_and_sum(
                &mut plan,
                ROLLUP,
                statements,
                &drop_attributes,
            ));
            plan.pipelines.push((REST_PIPELINE, chain));
        }
        RestLogic::Custom => {
            let mut chain = filter_rest(&mut plan, rest_filter, mode);
            if let Some(custom) = &spec.custom {
                for id in &custom.pipeline {
                    let config = custom
                        .processors
                        .get(id)
                        .map(|c| confmap_value(&c.0))
                        .unwrap_or(Value::Null);
                    chain.push(plan.add(id, config));
                }
            }
            plan.pipelines.push((CUSTOM_PIPELINE, chain));
        }
    }
    plan
}

/// The start of a non-critical pipeline: the filter dropping `conditions` (none when empty),
/// then the sanitizer of `mode`.
fn filter_rest(plan: &mut Plan, conditions: Vec<String>, mode: SensitiveAttributes) -> Vec<String> {
    let mut chain = vec![];
    if !conditions.is_empty() {
        chain.push(plan.add(FILTER_REST, drop_resources_where(conditions)));
    }
    chain.extend(sanitize(plan, mode));
    chain
}
