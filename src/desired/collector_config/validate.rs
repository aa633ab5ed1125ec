//! Validation before and after rendering: the spec's template parameters and patterns
//! ([`validate_spec`]), and the rendered config's structure ([`validate_structure`]).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{CollectorConfig, ConfigError, RESERVED_PROCESSOR_IDS};
use crate::crd::pipeline::{AggregateGroupBy, PipelineSpec, PipelineTemplate};

/// Receiver types our collector build (tests/e2e/otelcol/manifest.yaml) includes.
pub const RECEIVER_TYPES: &[&str] = &["hostmetrics", "otlp"];
/// Processor types our collector build includes.
pub const PROCESSOR_TYPES: &[&str] = &[
    "attributes",
    "batch",
    "cumulativetodelta",
    "filter",
    "groupbyattrs",
    "memory_limiter",
    "metricstransform",
    "resource",
    "transform",
];
/// Exporter types our collector build includes.
pub const EXPORTER_TYPES: &[&str] = &["debug", "otlphttp", "prometheusremotewrite"];
/// Extension types our collector build includes.
pub const EXTENSION_TYPES: &[&str] = &["basicauth", "health_check"];

/// Checks what the CRD's CEL rules already enforce at admission (template parameters) and what
/// they cannot (regexes compile, the custom processors block is consistent), so a spec that got
/// past admission some other way still never reaches a collector.
pub fn validate_spec(spec: &PipelineSpec) -> Result<(), ConfigError> {
    let template = spec.template.as_str();
    let unknown = |field| Err(ConfigError::UnknownParameter { field, template });
    let missing = |field, why| {
        Err(ConfigError::MissingParameter {
            field,
            template,
            why,
        })
    };
    use PipelineTemplate::*;
    if spec.aggregate.is_some() && spec.template != Aggregate {
        return unknown("spec.aggregate");
    }
    if spec.topk.is_some() && spec.template != Topk {
        return unknown("spec.topk");
    }
    if spec.custom.is_some() && spec.template != Custom {
        return unknown("spec.custom");
    }
    if !spec.keep_patterns.is_empty() && spec.template != PriorityFilter {
        return unknown("spec.keepPatterns");
    }
    match spec.template {
        Topk if spec.topk.is_none() => return missing("spec.topk", "the number of processes k"),
        Custom if spec.custom.is_none() => {
            return missing("spec.custom", "the processors and their order");
        }
        PriorityFilter if spec.critical_processes.is_empty() && spec.keep_patterns.is_empty() => {
            return missing(
                "spec.criticalProcesses or spec.keepPatterns",
                "without a pattern it would drop every process",
            );
        }
        _ => {}
    }
    if let Some(aggregate) = &spec.aggregate {
        match aggregate.group_by {
            AggregateGroupBy::Executable if !aggregate.categories.is_empty() => {
                return unknown("spec.aggregate.categories (only with groupBy: category)");
            }
            AggregateGroupBy::Category if aggregate.categories.is_empty() => {
                return missing(
                    "spec.aggregate.categories",
                    "groupBy: category needs at least one category",
                );
            }
            _ => {}
        }
        for (name, pattern) in &aggregate.categories {
            check_regex(format!("spec.aggregate.categories[{name:?}]"), pattern)?;
        }
    }
    for (i, p) in spec.critical_processes.iter().enumerate() {
        check_regex(format!("spec.criticalProcesses[{i}]"), p)?;
    }
    for (i, p) in spec.keep_patterns.iter().enumerate() {
        check_regex(format!("spec.keepPatterns[{i}]"), p)?;
    }
    if spec.collection_interval.get().as_millis() < 1 {
        return Err(ConfigError::InvalidDuration {
            field: "spec.collectionInterval",
            value: spec.collection_interval.to_string(),
        });
    }
    let mut exporter_names = BTreeSet::new();
    for e in &spec.exporters {
        if !exporter_names.insert(e.name.as_str()) {
            return Err(ConfigError::DuplicateExporter {
                name: e.name.clone(),
            });
        }
        check_component_id(
            &format!("spec.exporters[{:?}].name", e.name),
            &format!("otlphttp/{}", e.name),
        )?;
    }
    if let Some(custom) = &spec.custom {
        validate_custom(custom)?;
    }
    Ok(())
}

fn validate_custom(custom: &crate::crd::pipeline::CustomSpec) -> Result<(), ConfigError> {
    for (id, config) in &custom.processors {
        let field = format!("spec.custom.processors[{id:?}]");
        check_component_id(&field, id)?;
        if RESERVED_PROCESSOR_IDS.contains(&id.as_str()) || name_of(id).starts_with("phoenix") {
            return Err(ConfigError::ReservedProcessorId {
                field,
                id: id.clone(),
            });
        }
        check_known_type(&field, "processor", id, PROCESSOR_TYPES)?;
        let got = match &config.0 {
            Value::Object(_) | Value::Null => continue,
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "a list",
        };
        return Err(ConfigError::InvalidProcessorConfig {
            id: id.clone(),
            got,
        });
    }
    let mut seen = BTreeSet::new();
    for (i, id) in custom.pipeline.iter().enumerate() {
        let pipeline = format!("spec.custom.pipeline[{i}]");
        if !custom.processors.contains_key(id) {
            return Err(ConfigError::UndefinedProcessor {
                pipeline: format!("{pipeline} (not in spec.custom.processors)"),
                id: id.clone(),
            });
        }
        if !seen.insert(id.as_str()) {
            return Err(ConfigError::DuplicateProcessor {
                pipeline,
                id: id.clone(),
            });
        }
    }
    if let Some(id) = custom
        .processors
        .keys()
        .find(|id| !seen.contains(id.as_str()))
    {
        return Err(ConfigError::UnusedProcessor {
            field: "spec.custom.processors (not listed in spec.custom.pipeline)",
            id: id.clone(),
        });
    }
    Ok(())
}

fn check_regex(field: String, pattern: &str) -> Result<(), ConfigError> {
    let invalid = |message: String| ConfigError::InvalidRegex {
        field: field.clone(),
        pattern: pattern.to_string(),
        message,
    };
    regex::Regex::new(pattern).map_err(|e| {
        invalid(
            e.to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_string(),
        )
    })?;
    match rust_only_syntax(pattern) {
        Some(why) => Err(invalid(why.to_string())),
        None => Ok(()),
    }
}

/// Syntax that Rust's regex crate (which validates here) and Go's RE2 (which the collector
/// evaluates with) both accept but read differently, so the pattern would not mean in the
/// collector what it meant here: nested classes and class set operations (`[a-z&&[^p]]` is an
/// intersection in Rust, a class followed by a literal `]` in RE2).
fn rust_only_syntax(pattern: &str) -> Option<&'static str> {
    use regex_syntax::ast::{self, ClassSetBinaryOp, ClassSetItem, Visitor};
    struct Find(Option<&'static str>);
    impl Visitor for Find {
        type Output = Option<&'static str>;
        type Err = std::convert::Infallible;
        fn finish(self) -> Result<Self::Output, Self::Err> {
            Ok(self.0)
        }
        fn visit_class_set_binary_op_pre(&mut self, _: &ClassSetBinaryOp) -> Result<(), Self::Err> {
            self.0.get_or_insert(
                "class set operations (&&, --, ~~) mean something else in the collector's RE2, which reads them as literal characters",
            );
            Ok(())
        }
        fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), Self::Err> {
            if matches!(item, ClassSetItem::Bracketed(_)) {
                self.0.get_or_insert(
                    "nested character classes mean something else in the collector's RE2, which reads '[' inside a class as a literal",
                );
            }
            Ok(())
        }
    }
    let ast = ast::parse::Parser::new().parse(pattern).ok()?;
    ast::visit(&ast, Find(None)).ok().flatten()
}

/// `pattern` rewritten so that Rust's `regex` crate reads it as Go's RE2 does, for the places
/// Phoenix itself evaluates a pattern the collector also evaluates (the analysis's
/// critical-process names): Rust's `\d`, `\w`, `\s` and `\b` are Unicode-aware, RE2's are
/// ASCII-only. Each Perl class becomes RE2's ASCII class (`\d` → `[0-9]`, `\w` →
/// `[0-9A-Za-z_]`, `\s` → `[\t\n\f\r ]` — RE2's `\s` has no `\v` —, negated ones `[^…]`; a
/// nested class where it sits inside brackets, which Rust reads as a union) and `\b`/`\B` the
/// ASCII `(?-u:\b)`/`(?-u:\B)`. Everything else, Unicode classes such as `\pL` included, means
/// the same in both. A pattern that does not parse is returned unchanged (validation refuses it
/// earlier). Pure.
pub fn with_re2_semantics(pattern: &str) -> String {
    use regex_syntax::ast::{
        self, Assertion, AssertionKind, Ast, ClassPerl, ClassPerlKind, ClassSetItem, Visitor,
    };
    fn perl(c: &ClassPerl) -> (usize, usize, String) {
        let set = match c.kind {
            ClassPerlKind::Digit => "0-9",
            ClassPerlKind::Word => "0-9A-Za-z_",
            ClassPerlKind::Space => r"\t\n\f\r ",
        };
        let neg = if c.negated { "^" } else { "" };
        (
            c.span.start.offset,
            c.span.end.offset,
            format!("[{neg}{set}]"),
        )
    }
    fn assertion(a: &Assertion) -> Option<(usize, usize, String)> {
        let text = match a.kind {
            AssertionKind::WordBoundary => r"(?-u:\b)",
            AssertionKind::NotWordBoundary => r"(?-u:\B)",
            _ => return None,
        };
        Some((a.span.start.offset, a.span.end.offset, text.to_string()))
    }
    struct Edits(Vec<(usize, usize, String)>);
    impl Visitor for Edits {
        type Output = Vec<(usize, usize, String)>;
        type Err = std::convert::Infallible;
        fn finish(self) -> Result<Self::Output, Self::Err> {
            Ok(self.0)
        }
        fn visit_pre(&mut self, ast: &Ast) -> Result<(), Self::Err> {
            match ast {
                Ast::ClassPerl(c) => self.0.push(perl(c)),
                Ast::Assertion(a) => self.0.extend(assertion(a)),
                _ => {}
            }
            Ok(())
        }
        fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), Self::Err> {
            if let ClassSetItem::Perl(c) = item {
                self.0.push(perl(c));
            }
            Ok(())
        }
    }
    let Ok(parsed) = ast::parse::Parser::new().parse(pattern) else {
        return pattern.to_string();
    };
    let Ok(mut edits) = ast::visit(&parsed, Edits(Vec::new()));
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut out = pattern.to_string();
    for (start, end, text) in edits {
        if out.is_char_boundary(start) && out.is_char_boundary(end) && start <= end {
            out.replace_range(start..end, &text);
        }
    }
    out
}

/// The type part of a component id `type[/name]`.
pub fn type_of(id: &str) -> &str {
    id.split_once('/').map_or(id, |(t, _)| t)
}

fn name_of(id: &str) -> &str {
    id.split_once('/').map_or("", |(_, n)| n)
}

/// A component id as the collector parses it: a type of letters, digits and `_` starting with a
/// letter, and an optional `/name` without spaces, control characters or further `/`.
fn check_component_id(field: &str, id: &str) -> Result<(), ConfigError> {
    let (ty, name) = match id.split_once('/') {
        Some((t, n)) => (t, Some(n)),
        None => (id, None),
    };
    let type_ok = ty.len() <= 63
        && ty.starts_with(|c: char| c.is_ascii_alphabetic())
        && ty.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let name_ok = name.is_none_or(|n| {
        !n.is_empty()
            && n.len() <= 1024
            && n.chars()
                .all(|c| !(c.is_whitespace() || c.is_control() || c == '/' || c == '$'))
    });
    if type_ok && name_ok {
        Ok(())
    } else {
        Err(ConfigError::InvalidComponentId {
            field: field.to_string(),
            id: id.to_string(),
        })
    }
}

fn check_known_type(
    field: &str,
    kind: &'static str,
    id: &str,
    known: &[&str],
) -> Result<(), ConfigError> {
    if known.contains(&type_of(id)) {
        Ok(())
    } else {
        Err(ConfigError::UnknownComponentType {
            field: field.to_string(),
            kind,
            id: id.to_string(),
            component_type: type_of(id).to_string(),
            known: known.join(", "),
        })
    }
}

fn check_components(
    section: &str,
    kind: &'static str,
    components: &BTreeMap<String, super::Component>,
    known: &[&str],
) -> Result<(), ConfigError> {
    for id in components.keys() {
        let field = format!("{section}[{id:?}]");
        check_component_id(&field, id)?;
        check_known_type(&field, kind, id, known)?;
    }
    Ok(())
}

/// Structural checks of a collector config: every component a pipeline references is defined,
/// every defined component is used, every component type is one our collector build has, every
/// pipeline is a metrics pipeline with receivers and exporters, starting with `memory_limiter`
/// and ending with `batch`, and every extension the service enables is defined.
pub fn validate_structure(config: &CollectorConfig) -> Result<(), ConfigError> {
    check_components("receivers", "receiver", &config.receivers, RECEIVER_TYPES)?;
    check_components(
        "processors",
        "processor",
        &config.processors,
        PROCESSOR_TYPES,
    )?;
    check_components("exporters", "exporter", &config.exporters, EXPORTER_TYPES)?;
    check_components(
        "extensions",
        "extension",
        &config.extensions,
        EXTENSION_TYPES,
    )?;
    if config.service.pipelines.is_empty() {
        return Err(ConfigError::InvalidPipeline {
            pipeline: "service.pipelines".into(),
            message: "no pipeline defined".into(),
        });
    }
    let mut used_receivers = BTreeSet::new();
    let mut used_processors = BTreeSet::new();
    let mut used_exporters = BTreeSet::new();
    for (name, p) in &config.service.pipelines {
        let pipeline = format!("service.pipelines[{name:?}]");
        let invalid = |message: &str| {
            Err(ConfigError::InvalidPipeline {
                pipeline: pipeline.clone(),
                message: message.to_string(),
            })
        };
        if type_of(name) != "metrics" {
            return invalid("Phoenix renders metrics pipelines only (metrics or metrics/<name>)");
        }
        check_component_id(&pipeline, name)?;
        if p.receivers.is_empty() || p.exporters.is_empty() {
            return invalid("a pipeline needs at least one receiver and one exporter");
        }
        if p.processors.first().map(String::as_str) != Some(super::MEMORY_LIMITER) {
            return invalid("the first processor must be memory_limiter");
        }
        if p.processors.last().map(String::as_str) != Some(super::BATCH) {
            return invalid("the last processor must be batch");
        }
        for id in &p.receivers {
            if !config.receivers.contains_key(id) {
                return Err(ConfigError::UndefinedReceiver {
                    pipeline,
                    id: id.clone(),
                });
            }
            used_receivers.insert(id.as_str());
        }
        let mut seen = BTreeSet::new();
        for id in &p.processors {
            if !config.processors.contains_key(id) {
                return Err(ConfigError::UndefinedProcessor {
                    pipeline,
                    id: id.clone(),
                });
            }
            if !seen.insert(id.as_str()) {
                return Err(ConfigError::DuplicateProcessor {
                    pipeline,
                    id: id.clone(),
                });
            }
            used_processors.insert(id.as_str());
        }
        for id in &p.exporters {
            if !config.exporters.contains_key(id) {
                return Err(ConfigError::UndefinedExporter {
                    pipeline,
                    id: id.clone(),
                });
            }
            used_exporters.insert(id.as_str());
        }
    }
    if let Some(id) = config
        .processors
        .keys()
        .find(|id| !used_processors.contains(id.as_str()))
    {
        return Err(ConfigError::UnusedProcessor {
            field: "processors",
            id: id.clone(),
        });
    }
    if let Some(id) = config
        .receivers
        .keys()
        .find(|id| !used_receivers.contains(id.as_str()))
    {
        return Err(ConfigError::UnusedReceiver { id: id.clone() });
    }
    if let Some(id) = config
        .exporters
        .keys()
        .find(|id| !used_exporters.contains(id.as_str()))
    {
        return Err(ConfigError::UnusedExporter { id: id.clone() });
    }
    if let Some(id) = config
        .service
        .extensions
        .iter()
        .find(|id| !config.extensions.contains_key(*id))
    {
        return Err(ConfigError::UndefinedExtension { id: id.clone() });
    }
    Ok(())
}
