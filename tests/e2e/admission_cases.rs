//! The malformed resources the apiserver must refuse, each with the field its message must name:
//! one table shared by the admission e2e test (tests/e2e/admission.rs, the real apiserver) and
//! the offline parity test of `kubectl phoenix validate` (tests/cli_validate.rs).

pub fn pipeline(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

pub fn simulation(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Simulation\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

pub fn experiment(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Experiment\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

pub const VARIANTS: &str = "  baseline: {pipeline: {template: baseline}}\n  candidate: {pipeline: {template: aggregate}}\n";

/// (what is wrong, manifest, the field the apiserver's message must name)
pub fn malformed() -> Vec<(&'static str, String, &'static str)> {
    let long = |n: usize| "a".repeat(n);
    vec![
        (
            "unknown template",
            pipeline("p1", "  template: fancy"),
            "spec.template",
        ),
        (
            "missing template",
            pipeline("p2", "  collectionInterval: 10s"),
            "spec.template",
        ),
        (
            "interval not a duration",
            pipeline(
                "p3",
                "  template: baseline\n  collectionInterval: 10 seconds",
            ),
            "spec.collectionInterval",
        ),
        (
            "interval wrong type",
            pipeline("p4", "  template: baseline\n  collectionInterval: 10"),
            "spec.collectionInterval",
        ),
        (
            "interval over 5m",
            pipeline("p5", "  template: baseline\n  collectionInterval: 10m"),
            "spec.collectionInterval",
        ),
        (
            "interval under 1s",
            pipeline("p6", "  template: baseline\n  collectionInterval: 500ms"),
            "spec.collectionInterval",
        ),
        (
            "topk without topk",
            pipeline("p7", "  template: topk"),
            "spec.topk",
        ),
        (
            "topk k = 0",
            pipeline("p8", "  template: topk\n  topk: {k: 0}"),
            "spec.topk.k",
        ),
        (
            "topk k over 200",
            pipeline("p9", "  template: topk\n  topk: {k: 500}"),
            "spec.topk.k",
        ),
        (
            "topk params on baseline",
            pipeline("p10", "  template: baseline\n  topk: {k: 5}"),
            "spec.topk",
        ),
        (
            "empty critical regex",
            pipeline("p11", "  template: baseline\n  criticalProcesses: ['']"),
            "spec.criticalProcesses[0]",
        ),
        (
            "custom without processors",
            pipeline("p12", "  template: custom"),
            "spec.custom",
        ),
        (
            "custom empty pipeline",
            pipeline(
                "p13",
                "  template: custom\n  custom: {processors: {batch/x: {}}, pipeline: []}",
            ),
            "spec.custom.pipeline",
        ),
        (
            "exporter endpoint not a URL",
            pipeline(
                "p14",
                "  template: baseline\n  exporters: [{name: nr, endpoint: not-a-url}]",
            ),
            "spec.exporters[0].endpoint",
        ),
        (
            "unknown deployment mode",
            pipeline(
                "p15",
                "  template: baseline\n  deployment: {mode: StatefulSet}",
            ),
            "spec.deployment.mode",
        ),
        (
            "keepPatterns on baseline",
            pipeline("p16", "  template: baseline\n  keepPatterns: ['^java$']"),
            "spec.keepPatterns",
        ),
        (
            "pipeline name over 50",
            pipeline(&long(51), "  template: baseline"),
            "metadata.name",
        ),
        (
            "zero processes",
            simulation("s1", "  profile: realistic\n  processes: 0"),
            "spec.processes",
        ),
        (
            "processes over cap",
            simulation("s2", "  profile: realistic\n  processes: 10000"),
            "spec.processes",
        ),
        (
            "unknown profile",
            simulation("s3", "  profile: chaos"),
            "spec.profile",
        ),
        (
            "duration in days",
            simulation("s4", "  profile: spike\n  duration: 1d"),
            "spec.duration",
        ),
        (
            "duration under 30s",
            simulation("s5", "  profile: spike\n  duration: 10s"),
            "spec.duration",
        ),
        (
            "churn over cap",
            simulation("s6", "  profile: high-churn\n  churnPerMinute: 100000"),
            "spec.churnPerMinute",
        ),
        (
            "critical name over 15 chars",
            simulation(
                "s7",
                "  profile: realistic\n  criticalProcesses: [a-very-long-process-name]",
            ),
            "spec.criticalProcesses[0]",
        ),
        (
            "custom profile without patterns",
            simulation("s8", "  profile: custom"),
            "spec.custom",
        ),
        (
            "cpu over 1000 millicores",
            simulation(
                "s9",
                "  profile: custom\n  custom: {patterns: [{nameTemplate: 'w-{i}', count: 2, cpu: {millicores: 5000}}]}",
            ),
            "spec.custom.patterns[0].cpu.millicores",
        ),
        (
            "unknown cpu pattern",
            simulation(
                "s10",
                "  profile: custom\n  custom: {patterns: [{nameTemplate: 'w-{i}', count: 2, cpu: {pattern: wavy}}]}",
            ),
            "spec.custom.patterns[0].cpu.pattern",
        ),
        (
            "simulation name over 58",
            simulation(&long(59), "  profile: spike"),
            "metadata.name",
        ),
        (
            "both pipelineRef and pipeline",
            experiment(
                "e1",
                "  baseline: {pipelineRef: {name: x}, pipeline: {template: baseline}}\n  candidate: {pipeline: {template: aggregate}}",
            ),
            "spec.baseline",
        ),
        (
            "neither pipelineRef nor pipeline",
            experiment(
                "e2",
                "  baseline: {pipeline: {template: baseline}}\n  candidate: {}",
            ),
            "spec.candidate",
        ),
        (
            "missing candidate",
            experiment("e3", "  baseline: {pipeline: {template: baseline}}"),
            "spec.candidate",
        ),
        (
            "reduction over 100%",
            experiment(
                "e4",
                &format!("{VARIANTS}  successCriteria: {{minSeriesReductionPercent: 150}}"),
            ),
            "spec.successCriteria.minSeriesReductionPercent",
        ),
        (
            "retention negative",
            experiment(
                "e5",
                &format!("{VARIANTS}  successCriteria: {{minCriticalRetentionPercent: -1}}"),
            ),
            "spec.successCriteria.minCriticalRetentionPercent",
        ),
        (
            "warmup not shorter than duration",
            experiment("e6", &format!("{VARIANTS}  duration: 5m\n  warmup: 10m")),
            "spec.warmup",
        ),
        (
            "duration under 1m",
            experiment("e7", &format!("{VARIANTS}  duration: 30s\n  warmup: 0s")),
            "spec.duration",
        ),
        (
            "analysis interval under 5s",
            experiment("e8", &format!("{VARIANTS}  analysis: {{interval: 1s}}")),
            "spec.analysis.interval",
        ),
        (
            "prometheus URL not http",
            experiment(
                "e9",
                &format!("{VARIANTS}  prometheus: {{url: 'ftp://prom'}}"),
            ),
            "spec.prometheus.url",
        ),
        (
            "invalid inline pipeline",
            experiment(
                "e10",
                "  baseline: {pipeline: {template: topk}}\n  candidate: {pipeline: {template: aggregate}}",
            ),
            "spec.baseline.pipeline.topk",
        ),
        (
            "resource quantity that is not a quantity",
            pipeline(
                "p-qty",
                "  template: baseline\n  deployment: {resources: {requests: {cpu: lots}}}",
            ),
            "spec.deployment.resources",
        ),
        (
            "node selector value that would splice a selector",
            simulation("s-sel", "  nodeSelector: {type: 'kwok,zone!=a'}"),
            "spec.nodeSelector",
        ),
        (
            "target node selector value that is not a label value",
            experiment(
                "e-sel",
                &format!("{VARIANTS}  targets: {{nodeSelector: {{zone: 'a b'}}}}"),
            ),
            "spec.targets.nodeSelector",
        ),
        (
            "experiment name over 40",
            experiment(&long(41), VARIANTS),
            "metadata.name",
        ),
        (
            "node selector key that is not a label key",
            pipeline(
                "p-sel-key",
                "  template: baseline\n  deployment: {nodeSelector: {'a,b': v}}",
            ),
            "spec.deployment.nodeSelector",
        ),
        (
            "simulation node selector key that would splice a selector",
            simulation(
                "s-sel-key",
                "  profile: realistic\n  nodeSelector: {'zone!': a}",
            ),
            "spec.nodeSelector",
        ),
        (
            "target node selector key that is not a label key",
            experiment(
                "e-sel-key",
                &format!("{VARIANTS}  targets: {{nodeSelector: {{'-zone': a}}}}"),
            ),
            "spec.targets.nodeSelector",
        ),
        (
            "toleration operator Kubernetes does not know",
            pipeline(
                "p-tol-op",
                "  template: baseline\n  deployment: {tolerations: [{key: k, operator: In}]}",
            ),
            "spec.deployment.tolerations[0].operator",
        ),
        (
            "toleration effect Kubernetes does not know",
            simulation(
                "s-tol-effect",
                "  profile: realistic\n  tolerations: [{operator: Exists, effect: NoRun}]",
            ),
            "spec.tolerations[0].effect",
        ),
        (
            "toleration key that is not a label key",
            experiment(
                "e-tol-key",
                &format!(
                    "{VARIANTS}  targets: {{tolerations: [{{key: 'a b', operator: Exists}}]}}"
                ),
            ),
            "spec.targets.tolerations[0].key",
        ),
        (
            "toleration value that is not a label value",
            pipeline(
                "p-tol-value",
                "  template: baseline\n  deployment: {tolerations: [{key: k, value: 'a,b'}]}",
            ),
            "spec.deployment.tolerations[0].value",
        ),
        (
            "toleration of every key without Exists",
            pipeline(
                "p-tol-all",
                "  template: baseline\n  deployment: {tolerations: [{operator: Equal}]}",
            ),
            "operator must be Exists when key is empty",
        ),
        (
            "toleration with Exists and a value",
            simulation(
                "s-tol-exists",
                "  profile: realistic\n  tolerations: [{key: k, operator: Exists, value: v}]",
            ),
            "value must be empty when operator is Exists",
        ),
        (
            "tolerationSeconds without NoExecute",
            pipeline(
                "p-tol-seconds",
                "  template: baseline\n  deployment: {tolerations: [{key: k, operator: Exists, effect: NoSchedule, tolerationSeconds: 5}]}",
            ),
            "effect must be NoExecute when tolerationSeconds is set",
        ),
    ]
}
