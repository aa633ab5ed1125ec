//! The API at admission: every example is accepted by the real apiserver, and malformed resources
//! are rejected with a message that names the offending field — and are never stored.

use std::io::Write;
use std::process::{Output, Stdio};

use crate::harness::{TestNamespace, cluster, repo_root};

fn kubectl_stdin(ns: &str, verb: &[&str], yaml: &str) -> Output {
    let mut child = cluster()
        .kubectl()
        .args(["-n", ns])
        .args(verb)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(yaml.as_bytes())
        .expect("manifest written");
    child.wait_with_output().expect("kubectl exits")
}

fn pipeline(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

fn simulation(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Simulation\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

fn experiment(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Experiment\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

const VARIANTS: &str = "  baseline: {pipeline: {template: baseline}}\n  candidate: {pipeline: {template: aggregate}}\n";

/// (what is wrong, manifest, the field the apiserver's message must name)
fn malformed() -> Vec<(&'static str, String, &'static str)> {
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

#[tokio::test]
async fn every_example_is_accepted() {
    let ns = TestNamespace::new("examples").await;
    let dir = repo_root().join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for file in &files {
        let out = cluster()
            .kubectl()
            .args(["-n", &ns.name, "create", "-f"])
            .arg(file)
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "{} rejected: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = cluster()
        .kubectl()
        .args([
            "-n",
            &ns.name,
            "get",
            "pipelines,simulations,experiments",
            "-o",
            "name",
        ])
        .output()
        .expect("kubectl runs");
    let stored = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(stored, files.len(), "every example stored");
    ns.cleanup().await;
}

#[tokio::test]
async fn malformed_resources_are_rejected_naming_the_field() {
    let ns = TestNamespace::new("malformed").await;
    let cases = malformed();
    assert!(cases.len() >= 25);
    let mut failures = vec![];
    for (what, manifest, field) in &cases {
        let out = kubectl_stdin(&ns.name, &["create"], manifest);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!("{what}: accepted"));
        } else if !stderr.contains(field) {
            failures.push(format!("{what}: message does not name {field}: {stderr}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let out = cluster()
        .kubectl()
        .args([
            "-n",
            &ns.name,
            "get",
            "pipelines,simulations,experiments",
            "-o",
            "name",
        ])
        .output()
        .expect("kubectl runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "",
        "nothing malformed is stored"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn immutable_fields_cannot_change() {
    let ns = TestNamespace::new("immutable").await;
    let original = experiment("frozen", VARIANTS);
    let out = kubectl_stdin(&ns.name, &["create"], &original);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let changed = experiment(
        "frozen",
        "  baseline: {pipeline: {template: priority-filter}}\n  candidate: {pipeline: {template: aggregate}}\n",
    );
    let out = kubectl_stdin(
        &ns.name,
        &["apply", "--server-side", "--force-conflicts"],
        &changed,
    );
    assert!(
        !out.status.success(),
        "changing the baseline must be refused"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("spec.baseline"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The verdict is judged by the criteria and analysis the run was planned with.
    for (field, extra) in [
        (
            "spec.successCriteria",
            "  successCriteria: {minSeriesReductionPercent: 1}\n",
        ),
        ("spec.analysis", "  analysis: {significanceLevel: 0.2}\n"),
    ] {
        let loosened = experiment("frozen", &format!("{VARIANTS}{extra}"));
        let out = kubectl_stdin(
            &ns.name,
            &["apply", "--server-side", "--force-conflicts"],
            &loosened,
        );
        assert!(!out.status.success(), "changing {field} must be refused");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(field),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let aborted = experiment("frozen", &format!("{VARIANTS}  abort: true"));
    let out = kubectl_stdin(
        &ns.name,
        &["apply", "--server-side", "--force-conflicts"],
        &aborted,
    );
    assert!(
        out.status.success(),
        "abort is allowed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resumed = experiment("frozen", &format!("{VARIANTS}  abort: false"));
    let out = kubectl_stdin(
        &ns.name,
        &["apply", "--server-side", "--force-conflicts"],
        &resumed,
    );
    assert!(!out.status.success(), "un-aborting must be refused");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("spec.abort"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = cluster()
        .kubectl()
        .args([
            "-n",
            &ns.name,
            "get",
            "experiment",
            "frozen",
            "-o",
            "jsonpath={.spec.baseline.pipeline.template}",
        ])
        .output()
        .expect("kubectl runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "baseline",
        "the stored spec is unchanged"
    );
    ns.cleanup().await;
}
