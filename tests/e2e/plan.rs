//! `kubectl phoenix plan` against what really happens: real simulator processes, real collectors
//! (run by the local pod runner) and the real Prometheus. For each reducing template an
//! Experiment runs to the end; then `plan` predicts that Experiment's candidate from its
//! baseline's series over the same window, and the prediction must be within a few percentage
//! points of the reduction the Experiment measured.

use std::time::Duration;

use kube::api::PostParams;
use phoenix::crd::experiment::{Experiment, ExperimentStatus};

use crate::harness::{Operator, TestNamespace, cluster, eventually, workspace_bin};
use crate::podrunner_test::Runner;

/// Largest gap between the predicted and the measured series reduction, percentage points. The
/// model itself is exact on the series it reads; what remains is the machine's short-lived
/// processes (builds, other tests), which two collectors scraping at different moments do not
/// see alike (runs so far: up to 3.0 points on a busy machine, for `aggregate`, which keeps a
/// series per name).
const TOLERANCE_POINTS: f64 = 4.0;

const CRITICAL: &str = "criticalProcesses: ['^postgres$', '^nginx$', '^redis-server$']";

/// The candidates, one Experiment each.
const CANDIDATES: &[(&str, &str)] = &[
    (
        "pf",
        "template: priority-filter, keepPatterns: ['^(java|node)$']",
    ),
    ("agg", "template: aggregate"),
    ("topk", "template: topk, topk: {k: 3}"),
];

fn experiment(name: &str, node: &str, candidate: &str, simulation: bool) -> Experiment {
    let simulation = if simulation {
        "  simulation: {profile: realistic, processes: 60, duration: 5m, seed: 11, criticalProcesses: [postgres, nginx, redis-server]}\n"
    } else {
        ""
    };
    serde_yaml::from_str(&format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Experiment\nmetadata: {{name: {name}}}\nspec:\n  targets:\n    nodeSelector: {{kubernetes.io/hostname: {node}}}\n    tolerations: [{{key: phoenix.io/local, operator: Exists, effect: NoSchedule}}]\n  baseline: {{pipeline: {{template: baseline, collectionInterval: 5s, {CRITICAL}}}}}\n  candidate: {{pipeline: {{{candidate}, collectionInterval: 5s, {CRITICAL}}}}}\n{simulation}  duration: 75s\n  warmup: 20s\n  analysis: {{interval: 5s}}\n  successCriteria: {{minCriticalRetentionPercent: 100}}\n"
    ))
    .expect("test Experiment parses")
}

/// Runs `kubectl-phoenix plan` for the finished Experiment `exp` over its analysis window and
/// returns the JSON report.
fn plan(exp: &Experiment, status: &ExperimentStatus, dir: &std::path::Path) -> serde_json::Value {
    let inputs = status
        .analysis_inputs
        .as_ref()
        .expect("analysis inputs snapshotted");
    let file = dir.join(format!(
        "{}.yaml",
        exp.metadata.name.as_deref().unwrap_or("exp")
    ));
    std::fs::write(&file, serde_yaml::to_string(exp).expect("yaml")).expect("written");
    let output = std::process::Command::new(workspace_bin("kubectl-phoenix"))
        .arg("plan")
        .arg("-f")
        .arg(&file)
        .args(["--prometheus", &inputs.prometheus_url])
        .args(["--start", &inputs.window_start.0.as_second().to_string()])
        .args(["--end", &inputs.window_end.0.as_second().to_string()])
        .args(["-o", "json"])
        .output()
        .expect("kubectl-phoenix runs");
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "plan failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a JSON plan")
}

#[tokio::test]
async fn a_plan_predicts_what_the_experiment_then_measures_for_every_template() {
    let ns = TestNamespace::new("plan").await;
    let (_runner, node) = Runner::on_own_node(&ns).await;
    let _operator = Operator::start(&ns.name, &[]);
    let _ = cluster();
    let api = ns.api::<Experiment>();
    let mut experiments = vec![];
    for (i, (name, candidate)) in CANDIDATES.iter().enumerate() {
        let mut exp = experiment(name, &node, candidate, i == 0);
        exp.metadata.namespace = Some(ns.name.clone());
        api.create(&PostParams::default(), &exp)
            .await
            .expect("created");
        experiments.push(exp);
    }
    let dir = tempdir();
    for exp in &experiments {
        let name = exp.metadata.name.clone().expect("name");
        let status = eventually(
            &format!("Experiment {name} finished"),
            Duration::from_secs(360),
            || async {
                let s = api.get(&name).await.ok()?.status?;
                s.phase.filter(|p| p.is_terminal()).map(|_| s.clone())
            },
        )
        .await;
        let measured = status
            .results
            .as_ref()
            .and_then(|r| r.series_reduction_percent)
            .unwrap_or_else(|| panic!("{name}: no measured reduction: {:?}", status.message));
        let report = plan(exp, &status, &dir);
        let predicted = report["seriesReductionPercent"]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}: no predicted reduction: {report}"));
        eprintln!(
            "plan {name}: predicted {predicted:.2}% ({} → {} series), measured {measured:.2}% ({:?} → {:?}), retention predicted {} measured {:?}",
            report["baseline"]["series"],
            report["candidate"]["series"],
            status.results.as_ref().and_then(|r| r.baseline.series),
            status.results.as_ref().and_then(|r| r.candidate.series),
            report["criticalRetentionPercent"],
            status
                .results
                .as_ref()
                .and_then(|r| r.critical_retention_percent),
        );
        assert!(
            (predicted - measured).abs() <= TOLERANCE_POINTS,
            "{name}: predicted {predicted}% vs measured {measured}%"
        );
        assert_eq!(
            report["criticalRetentionPercent"].as_f64(),
            status
                .results
                .as_ref()
                .and_then(|r| r.critical_retention_percent),
            "{name}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    ns.cleanup().await;
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("phoenix-plan-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
