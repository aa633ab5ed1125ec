//! Unit tests of the collector config renderer: per-template shape, golden files
//! (tests/golden/*.yaml, regenerated with `UPDATE_GOLDEN=1`), determinism, and the error reasons.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;

use super::*;
use crate::crd::pipeline::{
    AggregateGroupBy, AggregateSpec, CustomSpec, FreeForm, OtlpHttpExporter, PipelineTemplate,
    SENSITIVE_ATTRIBUTES, SecretRef, SensitiveAttributes, TopKSpec,
};

const RW: &str = "http://prometheus.monitoring:9090/api/v1/write";

fn critical() -> Vec<String> {
    vec!["^postgres$".into(), r"^kube(let|-proxy)$".into()]
}

/// The spec each golden file is rendered from.
fn example(name: &str) -> PipelineSpec {
    let template = match name {
        "baseline" => PipelineTemplate::Baseline,
        "priority-filter" => PipelineTemplate::PriorityFilter,
        "aggregate" | "aggregate-category" => PipelineTemplate::Aggregate,
        "topk" => PipelineTemplate::Topk,
        "custom" => PipelineTemplate::Custom,
        other => panic!("no example {other}"),
    };
    let mut spec = PipelineSpec::from_template(template);
    spec.critical_processes = critical();
    spec.collection_interval = "15s".parse().expect("a duration");
    match name {
        "priority-filter" => spec.keep_patterns = vec!["^(nginx|envoy)$".into(), "^java$".into()],
        "aggregate" => spec.aggregate = Some(Box::new(AggregateSpec::default())),
        "aggregate-category" => {
            spec.aggregate = Some(Box::new(AggregateSpec {
                group_by: AggregateGroupBy::Category,
                categories: BTreeMap::from([
                    ("databases".into(), "^(mysqld|redis-server)$".into()),
                    ("web".into(), r"^(nginx|httpd|envoy)\b".into()),
                ]),
            }))
        }
        "topk" => {
            spec.topk = Some(Box::new(TopKSpec {
                k: 3,
                refresh_interval: "1m".parse().expect("a duration"),
                processes: vec!["nginx".into()],
                selection_source: None,
            }))
        }
        "custom" => {
            spec.custom = Some(Box::new(custom(
                json!({
                    "filter/small": {"error_mode": "ignore", "metrics": {"datapoint": [
                        "metric.name == \"process.memory.usage\" and value_int < 1048576"
                    ]}},
                    "transform/strip": {"metric_statements": [{"context": "resource", "statements": [
                        "delete_key(resource.attributes, \"process.command_line\")"
                    ]}]},
                }),
                &["transform/strip", "filter/small"],
            )));
            spec.exporters = vec![OtlpHttpExporter {
                name: "newrelic".into(),
                endpoint: "https://otlp.nr-data.net".into(),
                headers_secret_ref: Some(SecretRef {
                    name: "nr-license".into(),
                }),
            }];
        }
        _ => {}
    }
    spec
}

fn custom(processors: serde_json::Value, pipeline: &[&str]) -> CustomSpec {
    let processors = processors
        .as_object()
        .expect("an object")
        .iter()
        .map(|(k, v)| (k.clone(), FreeForm(v.clone())))
        .collect();
    CustomSpec {
        processors,
        pipeline: pipeline.iter().map(|s| s.to_string()).collect(),
    }
}

fn topk_names() -> Vec<String> {
    vec!["java".into(), "node".into()]
}

fn secrets() -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([("nr-license".into(), vec!["api-key".into()])])
}

fn render_example(name: &str) -> RenderedConfig {
    let topk = topk_names();
    let secrets = secrets();
    let mut ctx = RenderContext::new(name, RW);
    ctx.experiment = Some("checkout");
    ctx.variant = Some("candidate");
    ctx.topk_processes = &topk;
    ctx.extra_exporters_allowed = true;
    ctx.secret_keys = &secrets;
    render(&example(name), &ctx).unwrap_or_else(|e| panic!("{name}: {e}"))
}

const EXAMPLES: &[&str] = &[
    "baseline",
    "priority-filter",
    "aggregate",
    "aggregate-category",
    "topk",
    "custom",
];

#[test]
fn golden_files_match() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    for name in EXAMPLES {
        let rendered = render_example(name);
        let path = dir.join(format!("{name}.yaml"));
        if update {
            std::fs::create_dir_all(&dir).expect("create tests/golden");
            std::fs::write(&path, &rendered.yaml).expect("write golden file");
            continue;
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run UPDATE_GOLDEN=1 cargo test --lib build::collector_config",
                path.display()
            )
        });
        assert!(
            golden == rendered.yaml,
            "{} differs from the rendered config (review, then UPDATE_GOLDEN=1 cargo test --lib build::collector_config):\n{}",
            path.display(),
            rendered.yaml
        );
    }
}

fn pipeline<'a>(r: &'a RenderedConfig, name: &str) -> &'a PipelineConfig {
    r.config
        .service
        .pipelines
        .get(name)
        .unwrap_or_else(|| panic!("no pipeline {name}"))
}

fn processor<'a>(r: &'a RenderedConfig, id: &str) -> &'a serde_json::Value {
    &r.config
        .processors
        .get(id)
        .unwrap_or_else(|| panic!("no processor {id}"))
        .0
}

#[test]
fn every_pipeline_starts_with_memory_limiter_and_ends_with_resource_and_batch() {
    for name in EXAMPLES {
        let r = render_example(name);
        for (id, p) in &r.config.service.pipelines {
            let n = p.processors.len();
            assert_eq!(p.processors[0], "memory_limiter", "{name} {id}");
            assert_eq!(
                p.processors[n - 2..],
                ["resource/phoenix", "batch"],
                "{name} {id}"
            );
            assert_eq!(p.exporters[0], "prometheusremotewrite", "{name} {id}");
        }
        let self_pipeline = pipeline(&r, SELF_PIPELINE);
        assert_eq!(self_pipeline.receivers, ["otlp/self"]);
    }
}

#[test]
fn baseline_keeps_everything_but_the_clear_text_of_sensitive_attributes() {
    let r = render_example("baseline");
    assert_eq!(
        r.config.service.pipelines.keys().collect::<Vec<_>>(),
        ["metrics/process", "metrics/self"]
    );
    assert_eq!(
        pipeline(&r, "metrics/process").processors,
        [
            "memory_limiter",
            "transform/phoenix_sensitive",
            "resource/phoenix",
            "batch"
        ]
    );
    assert!(
        !r.yaml.contains("delete_key"),
        "baseline ignores dropAttributes"
    );
}

/// Every non-baseline template routes critical processes through `metrics/critical`, whose only
/// own processor keeps exactly them, and drops them from every other process pipeline first.
#[test]
fn critical_processes_bypass_every_reducing_template() {
    let critical_regex = r#"IsMatch(resource.attributes[\"process.executable.name\"], \"(?:^postgres$$)|(?:^kube(let|-proxy)$$)\")"#;
    let critical_regex = critical_regex.replace(r#"\""#, "\"");
    for name in EXAMPLES.iter().filter(|n| **n != "baseline") {
        let r = render_example(name);
        assert_eq!(
            pipeline(&r, "metrics/critical").processors,
            [
                "memory_limiter",
                "filter/phoenix_critical",
                "transform/phoenix_sensitive",
                "resource/phoenix",
                "batch"
            ],
            "{name}"
        );
        assert_eq!(
            processor(&r, "filter/phoenix_critical")["metrics"]["resource"],
            json!([format!("not {critical_regex}")]),
            "{name}"
        );
        for (id, p) in &r.config.service.pipelines {
            if id == "metrics/critical" || id == SELF_PIPELINE {
                continue;
            }
            assert_eq!(p.processors[1], "filter/phoenix_rest", "{name} {id}");
            let rest = &processor(&r, "filter/phoenix_rest")["metrics"]["resource"];
            assert_eq!(rest[0], json!(critical_regex), "{name} {id}");
        }
    }
}

#[test]
fn priority_filter_keeps_patterns_and_sums_what_dropping_attributes_merges() {
    let r = render_example("priority-filter");
    assert_eq!(
        pipeline(&r, "metrics/rest").processors,
        [
            "memory_limiter",
            "filter/phoenix_rest",
            "transform/phoenix_sensitive",
            "transform/phoenix_drop_attributes",
            "groupbyattrs/phoenix_merge",
            "metricstransform/phoenix_sum",
            "transform/phoenix_restamp",
            "resource/phoenix",
            "batch"
        ]
    );
    let rest = &processor(&r, "filter/phoenix_rest")["metrics"]["resource"];
    assert_eq!(
        rest[1],
        json!(
            "not IsMatch(resource.attributes[\"process.executable.name\"], \"(?:^(nginx|envoy)$$)|(?:^java$$)\")"
        )
    );
    let drops = &processor(&r, "transform/phoenix_drop_attributes")["metric_statements"][0];
    assert_eq!(drops["context"], "resource");
    assert_eq!(
        drops["statements"][0],
        "delete_key(resource.attributes, \"process.pid\")"
    );
}

#[test]
fn priority_filter_with_only_critical_processes_is_the_bypass_alone() {
    let mut spec = PipelineSpec::from_template(PipelineTemplate::PriorityFilter);
    spec.critical_processes = critical();
    let r = render(&spec, &RenderContext::new("p", RW)).expect("renders");
    assert_eq!(
        r.config.service.pipelines.keys().collect::<Vec<_>>(),
        ["metrics/critical", "metrics/self"]
    );
}

#[test]
fn aggregate_rolls_up_per_executable_and_sums() {
    let r = render_example("aggregate");
    assert_eq!(
        pipeline(&r, "metrics/rest").processors,
        [
            "memory_limiter",
            "filter/phoenix_rest",
            "transform/phoenix_sensitive",
            "transform/phoenix_rollup",
            "groupbyattrs/phoenix_merge",
            "metricstransform/phoenix_sum",
            "transform/phoenix_restamp",
            "resource/phoenix",
            "batch"
        ]
    );
    let rollup = &processor(&r, "transform/phoenix_rollup")["metric_statements"];
    assert_eq!(
        rollup[0]["statements"],
        json!([
            "set(resource.attributes[\"phoenix.rollup\"], \"executable\") where resource.attributes[\"phoenix.rollup\"] == nil",
            "keep_keys(resource.attributes, [\"process.executable.name\", \"phoenix.rollup\"])"
        ])
    );
    assert_eq!(
        rollup[1]["statements"],
        json!(["set(datapoint.time_unix_nano, 0)"])
    );
    let sum = &processor(&r, "metricstransform/phoenix_sum")["transforms"][0];
    assert_eq!(sum["operations"][0]["action"], "aggregate_labels");
    assert_eq!(sum["operations"][0]["aggregation_type"], "sum");
    assert_eq!(
        sum["operations"][0]["label_set"],
        json!([
            "context_switch_type",
            "direction",
            "paging_fault_type",
            "state"
        ])
    );
}

#[test]
fn aggregate_by_category_renames_first_match_then_other() {
    let r = render_example("aggregate-category");
    let statements =
        &processor(&r, "transform/phoenix_rollup")["metric_statements"][0]["statements"];
    let cat = "resource.attributes[\"phoenix.category\"]";
    assert_eq!(
        statements[0],
        json!(format!(
            "set({cat}, \"databases\") where {cat} == nil and IsMatch(resource.attributes[\"process.executable.name\"], \"^(mysqld|redis-server)$$\")"
        ))
    );
    assert_eq!(
        statements[1],
        json!(format!(
            "set({cat}, \"web\") where {cat} == nil and IsMatch(resource.attributes[\"process.executable.name\"], \"^(nginx|httpd|envoy)\\\\b\")"
        ))
    );
    assert_eq!(
        statements[2],
        json!(format!("set({cat}, \"other\") where {cat} == nil"))
    );
    assert!(statements.to_string().contains("\\\"category\\\""));
}

#[test]
fn topk_keeps_the_union_of_static_and_selected_names() {
    let r = render_example("topk");
    let statements =
        &processor(&r, "transform/phoenix_rollup")["metric_statements"][0]["statements"];
    assert_eq!(
        statements[0],
        json!(
            "set(resource.attributes[\"phoenix.rollup\"], \"other\") where not IsMatch(resource.attributes[\"process.executable.name\"], \"^(?:java|nginx|node)$$\")"
        )
    );
    assert_eq!(
        statements[1],
        json!(
            "set(resource.attributes[\"process.executable.name\"], \"other\") where resource.attributes[\"phoenix.rollup\"] == \"other\""
        )
    );
    // No selection yet and no static list: everything non-critical is `other`.
    let mut spec = example("topk");
    spec.topk.as_mut().expect("topk").processes.clear();
    let r = render(&spec, &RenderContext::new("t", RW)).expect("renders");
    let statements =
        &processor(&r, "transform/phoenix_rollup")["metric_statements"][0]["statements"];
    assert_eq!(
        statements[0],
        json!("set(resource.attributes[\"phoenix.rollup\"], \"other\")")
    );
}

#[test]
fn custom_runs_the_users_processors_in_order_after_the_critical_filter_and_the_sanitizer() {
    let r = render_example("custom");
    assert_eq!(
        pipeline(&r, "metrics/custom").processors,
        [
            "memory_limiter",
            "filter/phoenix_rest",
            "transform/phoenix_sensitive",
            "transform/strip",
            "filter/small",
            "resource/phoenix",
            "batch"
        ]
    );
    assert_eq!(
        pipeline(&r, "metrics/custom").exporters,
        ["prometheusremotewrite", "otlphttp/newrelic"]
    );
    assert_eq!(
        pipeline(&r, SELF_PIPELINE).exporters,
        ["prometheusremotewrite"]
    );
}

#[test]
fn without_critical_processes_there_is_no_bypass() {
    let mut spec = example("aggregate");
    spec.critical_processes.clear();
    let r = render(&spec, &RenderContext::new("a", RW)).expect("renders");
    assert!(!r.config.service.pipelines.contains_key("metrics/critical"));
    assert_eq!(
        pipeline(&r, "metrics/rest").processors[1..3],
        ["transform/phoenix_sensitive", "transform/phoenix_rollup"]
    );
}

const MODES: [SensitiveAttributes; 3] = [
    SensitiveAttributes::Hash,
    SensitiveAttributes::Drop,
    SensitiveAttributes::Keep,
];

/// `render_example(name)` with `spec.sensitiveAttributes = mode`.
fn render_with_mode(name: &str, mode: SensitiveAttributes) -> RenderedConfig {
    let mut spec = example(name);
    spec.sensitive_attributes = mode;
    let mut ctx = RenderContext::new(name, RW);
    let secrets = secrets();
    ctx.extra_exporters_allowed = true;
    ctx.secret_keys = &secrets;
    render(&spec, &ctx).unwrap_or_else(|e| panic!("{name} {mode:?}: {e}"))
}

/// The pipelines that carry process metrics (fed by hostmetrics), by name.
fn process_pipelines(r: &RenderedConfig) -> Vec<(&String, &PipelineConfig)> {
    r.config
        .service
        .pipelines
        .iter()
        .filter(|(_, p)| p.receivers.iter().any(|rc| rc == "hostmetrics"))
        .collect()
}

#[test]
fn sensitive_attributes_default_to_hash_and_round_trip() {
    let spec: PipelineSpec =
        serde_json::from_value(json!({"template": "baseline"})).expect("parses");
    assert_eq!(spec.sensitive_attributes, SensitiveAttributes::Hash);
    // Written out explicitly, so a promoted recommendation says what it does.
    let written = serde_json::to_value(&spec).expect("serializes");
    assert_eq!(written["sensitiveAttributes"], "Hash");
    for (text, mode) in [
        ("Hash", SensitiveAttributes::Hash),
        ("Drop", SensitiveAttributes::Drop),
        ("Keep", SensitiveAttributes::Keep),
    ] {
        let spec: PipelineSpec =
            serde_json::from_value(json!({"template": "baseline", "sensitiveAttributes": text}))
                .expect("parses");
        assert_eq!(spec.sensitive_attributes, mode);
    }
    assert!(
        serde_json::from_value::<PipelineSpec>(
            json!({"template": "baseline", "sensitiveAttributes": "hash"})
        )
        .is_err()
    );
}

/// Hash and Drop: every process pipeline of every template runs the sanitizer before any
/// processor but `memory_limiter` and Phoenix's own executable-name filters, and it hashes or
/// deletes exactly the command line, command and owner. Keep: no sanitizer at all.
#[test]
fn every_process_pipeline_of_every_template_sanitizes_before_anything_else_sees_a_process() {
    let attr = |key: &str| format!("resource.attributes[\"{key}\"]");
    for name in EXAMPLES {
        for mode in MODES {
            let r = render_with_mode(name, mode);
            let pipelines = process_pipelines(&r);
            assert!(!pipelines.is_empty(), "{name}");
            if mode == SensitiveAttributes::Keep {
                assert!(
                    !r.config.processors.contains_key(templates::SENSITIVE),
                    "{name} Keep: {}",
                    r.yaml
                );
                assert!(!r.yaml.contains("SHA256"), "{name} Keep");
                continue;
            }
            for (id, p) in pipelines {
                let at = p
                    .processors
                    .iter()
                    .position(|x| x == templates::SENSITIVE)
                    .unwrap_or_else(|| panic!("{name} {mode:?} {id}: no sanitizer"));
                for before in &p.processors[..at] {
                    assert!(
                        [
                            "memory_limiter",
                            "filter/phoenix_critical",
                            "filter/phoenix_rest"
                        ]
                        .contains(&before.as_str()),
                        "{name} {mode:?} {id}: {before} runs before the sanitizer"
                    );
                }
            }
            let config = processor(&r, templates::SENSITIVE);
            assert_eq!(config["error_mode"], "propagate", "{name} {mode:?}");
            let groups = config["metric_statements"].as_array().expect("groups");
            assert_eq!(groups.len(), 1, "{name} {mode:?}");
            assert_eq!(groups[0]["context"], "resource");
            let expected: Vec<String> = SENSITIVE_ATTRIBUTES
                .iter()
                .map(|key| match mode {
                    SensitiveAttributes::Hash => {
                        format!(
                            "set({a}, SHA256({a})) where {a} != nil and {a} != \"\"",
                            a = attr(key)
                        )
                    }
                    _ => format!("delete_key(resource.attributes, \"{key}\")"),
                })
                .collect();
            assert_eq!(groups[0]["statements"], json!(expected), "{name} {mode:?}");
        }
    }
}

#[test]
fn sensitive_attributes_are_the_command_line_command_and_owner() {
    assert_eq!(
        SENSITIVE_ATTRIBUTES,
        ["process.command_line", "process.command", "process.owner"]
    );
    // Critical matching and every rollup key on the executable name only.
    for name in EXAMPLES {
        let r = render_example(name);
        for id in ["filter/phoenix_critical", "filter/phoenix_rest"] {
            if let Some(c) = r.config.processors.get(id) {
                let text = c.0.to_string();
                assert!(text.contains("process.executable.name"), "{name} {id}");
                assert!(!text.contains("process.command"), "{name} {id}");
                assert!(!text.contains("process.owner"), "{name} {id}");
            }
        }
    }
}

#[test]
fn labels_ports_and_paths_come_from_the_context() {
    let mut ctx = RenderContext::new("pl-1", RW);
    ctx.health_port = 20001;
    ctx.self_telemetry_port = 20002;
    ctx.proc_root = "/";
    let r = render(&example("baseline"), &ctx).expect("renders");
    let attrs = &processor(&r, "resource/phoenix")["attributes"];
    let value = |key: &str| {
        attrs
            .as_array()
            .expect("a list")
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| a["value"].clone())
    };
    assert_eq!(value("phoenix_pipeline"), Some(json!("pl-1")));
    assert_eq!(value("phoenix_experiment"), Some(json!("none")));
    assert_eq!(value("phoenix_variant"), Some(json!("none")));
    assert_eq!(
        value("phoenix_node"),
        Some(json!("${env:PHOENIX_NODE_NAME}"))
    );
    let c = &r.config;
    assert_eq!(c.extensions["health_check"].0["endpoint"], "0.0.0.0:20001");
    assert_eq!(
        c.receivers["otlp/self"].0["protocols"]["http"]["endpoint"],
        "127.0.0.1:20002"
    );
    assert_eq!(c.receivers["hostmetrics"].0["root_path"], "/");
    assert_eq!(c.receivers["hostmetrics"].0["collection_interval"], "15s");
    let reader = &c.service.telemetry.0["metrics"]["readers"][0]["periodic"];
    assert_eq!(reader["interval"], 15000);
    assert_eq!(
        reader["exporter"]["otlp"]["endpoint"],
        "http://127.0.0.1:20002/v1/metrics"
    );
    assert_eq!(c.exporters["prometheusremotewrite"].0["endpoint"], RW);
}

#[test]
fn extra_exporters_take_headers_from_env_vars_only_when_allowed() {
    let r = render_example("custom");
    assert_eq!(
        r.config.exporters["otlphttp/newrelic"].0,
        json!({"endpoint": "https://otlp.nr-data.net", "headers": {"api-key": "${env:PHOENIX_HDR_NEWRELIC_API_KEY}"}})
    );
    assert_eq!(
        r.header_env,
        [HeaderEnv {
            env: "PHOENIX_HDR_NEWRELIC_API_KEY".into(),
            exporter: "newrelic".into(),
            secret: "nr-license".into(),
            key: "api-key".into(),
        }]
    );
    let env = r.header_env[0].env_var();
    let key_ref = env
        .value_from
        .and_then(|v| v.secret_key_ref)
        .expect("a secretKeyRef");
    assert_eq!(
        (key_ref.name.as_str(), key_ref.key.as_str()),
        ("nr-license", "api-key")
    );

    let r = render(&example("custom"), &RenderContext::new("c", RW)).expect("renders");
    assert!(!r.config.exporters.contains_key("otlphttp/newrelic"));
    assert!(r.header_env.is_empty());
}

#[test]
fn same_input_same_hash_and_any_change_changes_it() {
    let a = render_example("aggregate");
    let b = render_example("aggregate");
    assert_eq!(a.yaml, b.yaml);
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.hash.len(), 8);
    assert!(a.hash.chars().all(|c| c.is_ascii_hexdigit()));
    // The hash is the SHA-256 of the rendered text, checked against a published test vector
    // (FIPS 180-2's "abc") rather than against the function itself, and any byte counts.
    assert_eq!(hash8("abc"), "ba7816bf");
    assert_eq!(hash8(""), "e3b0c442");
    assert_eq!(a.hash, hash8(&a.yaml));
    assert_ne!(a.hash, hash8(&format!("{} ", a.yaml)));

    let mut spec = example("aggregate");
    spec.collection_interval = "20s".parse().expect("a duration");
    let ctx = RenderContext::new("aggregate", RW);
    let base = render(&example("aggregate"), &ctx).expect("renders");
    let changed = render(&spec, &ctx).expect("renders");
    assert_ne!(base.hash, changed.hash);
    let mut spec = example("aggregate");
    spec.critical_processes.push("^sshd$".into());
    assert_ne!(base.hash, render(&spec, &ctx).expect("renders").hash);
    let mut spec = example("aggregate");
    spec.sensitive_attributes = SensitiveAttributes::Drop;
    assert_ne!(base.hash, render(&spec, &ctx).expect("renders").hash);
    let topk = ["java".to_string()];
    let mut ctx2 = ctx.clone();
    ctx2.topk_processes = &topk;
    let t1 = render(&example("topk"), &ctx).expect("renders");
    let t2 = render(&example("topk"), &ctx2).expect("renders");
    assert_ne!(t1.hash, t2.hash, "a new top-K selection rolls the pods");
}

#[test]
fn user_processor_key_order_does_not_change_the_output() {
    let mut a = example("custom");
    let mut b = example("custom");
    let one = json!({"error_mode": "ignore", "metrics": {"datapoint": ["true"]}});
    let mut two = serde_json::Map::new();
    two.insert("metrics".into(), json!({"datapoint": ["true"]}));
    two.insert("error_mode".into(), json!("ignore"));
    a.custom
        .as_mut()
        .unwrap()
        .processors
        .insert("filter/small".into(), FreeForm(one));
    b.custom.as_mut().unwrap().processors.insert(
        "filter/small".into(),
        FreeForm(serde_json::Value::Object(two)),
    );
    let ctx = RenderContext::new("c", RW);
    assert_eq!(
        render(&a, &ctx).unwrap().yaml,
        render(&b, &ctx).unwrap().yaml
    );
}

#[test]
fn user_strings_cannot_expand_env_or_files() {
    let mut spec = example("custom");
    spec.critical_processes = vec!["^a$".into()];
    spec.custom.as_mut().unwrap().processors.insert(
        "transform/strip".into(),
        FreeForm(
            json!({"metric_statements": [{"context": "resource", "statements": [
                "set(resource.attributes[\"leak\"], \"${env:PHOENIX_HDR_NEWRELIC_API_KEY}\")"
            ]}]}),
        ),
    );
    let r = render(&spec, &RenderContext::new("c", RW)).expect("renders");
    assert!(r.yaml.contains("$${env:PHOENIX_HDR_NEWRELIC_API_KEY}"));
    assert!(r.yaml.contains("^a$$"));
}

#[test]
fn patterns_that_mean_something_else_in_re2_are_refused() {
    for pattern in [r"^[a-z&&[^p]]+$", r"^[a-z--p]$", r"^[[:alpha:][0-9]]$"] {
        let mut spec = example("priority-filter");
        spec.keep_patterns = vec![pattern.into()];
        let err = render(&spec, &RenderContext::new("p", RW)).expect_err(pattern);
        assert_eq!(err.reason(), "InvalidRegex", "{pattern}");
        assert!(err.to_string().contains("RE2"), "{pattern}: {err}");
    }
    // Classes RE2 reads the same way stay accepted, POSIX classes included.
    let mut spec = example("priority-filter");
    spec.keep_patterns = vec![r"^[a-z0-9_.-]+$".into(), r"^[[:alpha:]]+\d?$".into()];
    render(&spec, &RenderContext::new("p", RW)).expect("accepted");
}

#[test]
fn perl_classes_and_word_boundaries_mean_what_they_mean_in_re2() {
    use crate::analysis::measure::critical_regexes;
    let matches = |pattern: &str, name: &str| {
        critical_regexes(&[pattern.to_string()]).expect("compiles")[0].is_match(name)
    };
    // RE2's \d, \w, \s and \b are ASCII-only; Rust's plain ones are not.
    for (pattern, name) in [
        (r"^worker-\d+$", "worker-٣"),
        (r"^\w+$", "café"),
        (r"^a\sb$", "a\u{a0}b"),
        (r"^a\sb$", "a\u{b}b"),
        (r"^[x\d]+$", "x٣"),
        (r"^[\w-]+$", "naïve-1"),
        (r"é\bfoo", "éfoo"),
    ] {
        assert!(
            regex::Regex::new(pattern).expect("compiles").is_match(name) != (pattern == r"é\bfoo"),
            "Rust alone reads {pattern:?} on {name:?} differently from RE2"
        );
        assert_eq!(
            matches(pattern, name),
            pattern == r"é\bfoo",
            "{pattern:?} on {name:?} as RE2 reads it"
        );
    }
    // ASCII names, negated classes and everything else keep their meaning.
    for (pattern, name, want) in [
        (r"^worker-\d+$", "worker-12", true),
        (r"^\w+$", "kube_proxy", true),
        (r"^a\sb$", "a\tb", true),
        (r"^\D+$", "٣x", true),
        (r"^\W$", "é", true),
        (r"^\S+$", "a\u{a0}b", true),
        (r"^[^\d]+$", "abc", true),
        (r"\bpostgres\b", "postgres: writer", true),
        (r"\Bgres", "postgres", true),
        (r"^\pL+$", "café", true),
        (r"^\\d$", "\\d", true),
        (r"^[\\d]$", "d", true),
    ] {
        assert_eq!(matches(pattern, name), want, "{pattern:?} on {name:?}");
    }
}

#[test]
fn the_remote_write_url_cannot_expand_env_or_files() {
    let url = "http://prom/api/v1/write?t=${env:PHOENIX_HDR_X}${file:/etc/shadow}";
    let r = render(&example("baseline"), &RenderContext::new("c", url)).expect("renders");
    assert_eq!(
        r.config.exporters["prometheusremotewrite"].0["endpoint"],
        json!("http://prom/api/v1/write?t=$${env:PHOENIX_HDR_X}$${file:/etc/shadow}")
    );
}

fn reason(spec: &PipelineSpec) -> &'static str {
    render(spec, &RenderContext::new("x", RW))
        .expect_err("must be refused")
        .reason()
}

#[test]
fn parameters_of_other_templates_are_refused() {
    let mut spec = example("topk");
    spec.aggregate = Some(Box::new(AggregateSpec::default()));
    assert_eq!(reason(&spec), "UnknownParameter");
    let mut spec = example("aggregate");
    spec.topk = example("topk").topk;
    assert_eq!(reason(&spec), "UnknownParameter");
    let mut spec = example("baseline");
    spec.keep_patterns = vec!["x".into()];
    assert_eq!(reason(&spec), "UnknownParameter");
    let mut spec = example("baseline");
    spec.custom = example("custom").custom;
    assert_eq!(reason(&spec), "UnknownParameter");
    let mut spec = example("aggregate");
    spec.aggregate = Some(Box::new(AggregateSpec {
        group_by: AggregateGroupBy::Executable,
        categories: BTreeMap::from([("a".into(), "a".into())]),
    }));
    assert_eq!(reason(&spec), "UnknownParameter");

    let err = render(
        &{
            let mut s = example("topk");
            s.aggregate = Some(Box::new(AggregateSpec::default()));
            s
        },
        &RenderContext::new("x", RW),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.aggregate is not a parameter of template topk"
    );
}

#[test]
fn missing_parameters_are_refused() {
    let mut spec = example("topk");
    spec.topk = None;
    assert_eq!(reason(&spec), "MissingParameter");
    let mut spec = example("custom");
    spec.custom = None;
    assert_eq!(reason(&spec), "MissingParameter");
    let mut spec = PipelineSpec::from_template(PipelineTemplate::PriorityFilter);
    spec.critical_processes.clear();
    assert_eq!(reason(&spec), "MissingParameter");
    let mut spec = example("aggregate");
    spec.aggregate = Some(Box::new(AggregateSpec {
        group_by: AggregateGroupBy::Category,
        categories: BTreeMap::new(),
    }));
    assert_eq!(reason(&spec), "MissingParameter");
}

#[test]
fn invalid_regexes_are_refused_naming_the_field() {
    let mut spec = example("baseline");
    spec.critical_processes.push("(unclosed".into());
    let err = render(&spec, &RenderContext::new("x", RW)).unwrap_err();
    assert_eq!(err.reason(), "InvalidRegex");
    assert!(
        err.to_string()
            .starts_with("spec.criticalProcesses[2]: invalid regular expression \"(unclosed\""),
        "{err}"
    );
    let mut spec = example("priority-filter");
    spec.keep_patterns = vec!["[a-".into()];
    assert_eq!(reason(&spec), "InvalidRegex");
    let mut spec = example("aggregate-category");
    spec.aggregate
        .as_mut()
        .unwrap()
        .categories
        .insert("bad".into(), "*".into());
    let err = render(&spec, &RenderContext::new("x", RW)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("spec.aggregate.categories[\"bad\"]"),
        "{err}"
    );
}

fn custom_reason(processors: serde_json::Value, pipeline: &[&str]) -> (String, String) {
    let mut spec = example("custom");
    spec.custom = Some(Box::new(custom(processors, pipeline)));
    let err = render(&spec, &RenderContext::new("x", RW)).expect_err("must be refused");
    (err.reason().to_string(), err.to_string())
}

#[test]
fn invalid_custom_configs_are_refused_with_the_right_reason() {
    let filter = json!({"metrics": {"datapoint": ["true"]}});
    let (reason, message) = custom_reason(json!({"filter/a": filter}), &["filter/a", "filter/b"]);
    assert_eq!(reason, "UndefinedProcessor");
    assert!(message.contains("\"filter/b\""), "{message}");

    let (reason, message) = custom_reason(
        json!({"filter/a": filter, "filter/b": filter}),
        &["filter/a"],
    );
    assert_eq!(reason, "UnusedProcessor");
    assert!(message.contains("\"filter/b\""), "{message}");

    let (reason, message) = custom_reason(json!({"spanmetrics": {}}), &["spanmetrics"]);
    assert_eq!(reason, "UnknownComponentType");
    assert!(message.contains("\"spanmetrics\""), "{message}");

    let (reason, _) = custom_reason(json!({"batch": {}}), &["batch"]);
    assert_eq!(reason, "ReservedProcessorId");
    let (reason, _) = custom_reason(json!({"filter/phoenix_rest": {}}), &["filter/phoenix_rest"]);
    assert_eq!(reason, "ReservedProcessorId");

    let (reason, _) = custom_reason(json!({"filter/a": filter}), &["filter/a", "filter/a"]);
    assert_eq!(reason, "DuplicateProcessor");

    let (reason, _) = custom_reason(json!({"filter/a b": filter}), &["filter/a b"]);
    assert_eq!(reason, "InvalidComponentId");
    let (reason, _) = custom_reason(json!({"9filter": filter}), &["9filter"]);
    assert_eq!(reason, "InvalidComponentId");

    let (reason, message) = custom_reason(json!({"filter/a": ["x"]}), &["filter/a"]);
    assert_eq!(reason, "InvalidProcessorConfig");
    assert!(message.contains("a list"), "{message}");

    // A null configuration is the collector's "all defaults".
    let mut spec = example("custom");
    spec.custom = Some(Box::new(custom(
        json!({"cumulativetodelta": null}),
        &["cumulativetodelta"],
    )));
    render(&spec, &RenderContext::new("x", RW)).expect("null config is fine");
}

#[test]
fn exporter_problems_are_refused() {
    let mut spec = example("custom");
    spec.exporters.push(spec.exporters[0].clone());
    assert_eq!(reason(&spec), "DuplicateExporter");

    let mut ctx = RenderContext::new("x", RW);
    ctx.extra_exporters_allowed = true;
    let err = render(&example("custom"), &ctx).unwrap_err();
    assert_eq!(err.reason(), "MissingSecretKeys");
    let secrets = BTreeMap::from([("nr-license".into(), vec!["api key".to_string()])]);
    ctx.secret_keys = &secrets;
    assert_eq!(
        render(&example("custom"), &ctx).unwrap_err().reason(),
        "InvalidHeaderName"
    );
    let secrets = BTreeMap::from([(
        "nr-license".into(),
        vec!["api-key".to_string(), "api.key".to_string()],
    )]);
    ctx.secret_keys = &secrets;
    assert_eq!(
        render(&example("custom"), &ctx).unwrap_err().reason(),
        "HeaderKeyCollision"
    );
}

#[test]
fn structure_validation_catches_broken_configs() {
    let good = render_example("aggregate").config;
    validate_structure(&good).expect("rendered configs are valid");
    let check = |f: &dyn Fn(&mut CollectorConfig)| {
        let mut c = good.clone();
        f(&mut c);
        validate_structure(&c)
            .expect_err("must be refused")
            .reason()
    };
    assert_eq!(
        check(&|c| {
            c.processors.remove("groupbyattrs/phoenix_merge");
        }),
        "UndefinedProcessor"
    );
    assert_eq!(
        check(&|c| {
            c.processors
                .insert("filter/spare".into(), Component::default());
        }),
        "UnusedProcessor"
    );
    assert_eq!(
        check(&|c| {
            c.processors
                .insert("tail_sampling".into(), Component::default());
        }),
        "UnknownComponentType"
    );
    assert_eq!(
        check(&|c| {
            c.receivers.remove("otlp/self");
        }),
        "UndefinedReceiver"
    );
    assert_eq!(
        check(&|c| {
            c.exporters.insert("debug".into(), Component::default());
        }),
        "UnusedExporter"
    );
    assert_eq!(
        check(&|c| {
            c.extensions.clear();
        }),
        "UndefinedExtension"
    );
    assert_eq!(
        check(&|c| {
            let p = c.service.pipelines.get_mut("metrics/rest").unwrap();
            p.processors.pop();
        }),
        "InvalidPipeline"
    );
    assert_eq!(
        check(&|c| {
            let p = c.service.pipelines.remove("metrics/rest").unwrap();
            c.service.pipelines.insert("traces/rest".into(), p);
        }),
        "InvalidPipeline"
    );
    assert_eq!(
        check(&|c| {
            let p = c.service.pipelines.get_mut("metrics/rest").unwrap();
            p.processors.insert(1, "filter/phoenix_rest".into());
        }),
        "DuplicateProcessor"
    );
}

#[test]
fn rendered_yaml_parses_back_to_the_same_config() {
    for name in EXAMPLES {
        let r = render_example(name);
        let parsed = CollectorConfig::from_yaml(&r.yaml).expect("parses");
        assert_eq!(parsed, r.config, "{name}");
        validate_structure(&parsed).expect("valid");
    }
}

#[test]
fn error_reasons_are_camel_case_and_messages_name_the_component() {
    let err = ConfigError::UnusedProcessor {
        field: "processors",
        id: "filter/x".into(),
    };
    assert_eq!(err.reason(), "UnusedProcessor");
    assert_eq!(
        err.to_string(),
        "processors: processor \"filter/x\" is defined but not used by any pipeline"
    );
}
