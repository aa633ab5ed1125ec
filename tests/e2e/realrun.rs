//! The demo as a test: real simulator processes, real collectors (run by the local pod runner),
//! the real Prometheus. A reducing candidate on the high-cardinality profile passes with ≥ 90%
//! fewer series and every critical process kept; an A/A run does not pass.

use std::time::Duration;

use kube::api::PostParams;
use phoenix::crd::experiment::{Experiment, ExperimentPhase, Verdict};

use crate::harness::{Operator, TestNamespace, cluster, eventually};
use crate::podrunner_test::Runner;

fn experiment(name: &str, node: &str, candidate: &str, simulation: bool) -> Experiment {
    let simulation = if simulation {
        "  simulation: {profile: high-cardinality, processes: 150, duration: 5m, seed: 7, criticalProcesses: [postgres, nginx, redis-server]}\n"
    } else {
        ""
    };
    let critical = "criticalProcesses: ['^postgres$', '^nginx$', '^redis-server$']";
    serde_yaml::from_str(&format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Experiment\nmetadata: {{name: {name}}}\nspec:\n  targets:\n    nodeSelector: {{kubernetes.io/hostname: {node}}}\n    tolerations: [{{key: phoenix.io/local, operator: Exists, effect: NoSchedule}}]\n  baseline: {{pipeline: {{template: baseline, collectionInterval: 5s, {critical}}}}}\n  candidate: {{pipeline: {{{candidate}, collectionInterval: 5s, {critical}}}}}\n{simulation}  duration: 90s\n  warmup: 20s\n  analysis: {{interval: 5s}}\n  successCriteria: {{minCriticalRetentionPercent: 100}}\n"
    ))
    .expect("test Experiment parses")
}

#[tokio::test]
async fn real_processes_real_collectors_pass_and_a_a_does_not() {
    let ns = TestNamespace::new("realrun").await;
    // Its node's own processes only, as on a real node: the other tests' processes (thousands on
    // a busy machine, started and stopped at any moment) neither weigh on the scrapes nor change
    // what the two variants of the A/A run see between their scrapes.
    let (_runner, node) = Runner::on_own_machine(&ns).await;
    let _operator = Operator::start(&ns.name, &[]);
    let _ = cluster();
    let api = ns.api::<Experiment>();
    let aggregate =
        "template: aggregate, aggregate: {groupBy: category, categories: {simulated: '^svc-'}}";
    api.create(
        &PostParams::default(),
        &experiment("real", &node, aggregate, true),
    )
    .await
    .expect("created");
    api.create(
        &PostParams::default(),
        &experiment("aa", &node, "template: baseline", false),
    )
    .await
    .expect("created");

    let done = |name: &'static str| {
        let api = api.clone();
        async move {
            eventually(
                &format!("Experiment {name} finished"),
                Duration::from_secs(300),
                || async {
                    let s = api.get(name).await.ok()?.status?;
                    s.phase.filter(|p| p.is_terminal()).map(|_| s.clone())
                },
            )
            .await
        }
    };
    let (real, aa) = tokio::join!(done("real"), done("aa"));

    assert_eq!(
        real.phase,
        Some(ExperimentPhase::Completed),
        "{:?}",
        real.message
    );
    let r = real.results.clone().expect("results");
    eprintln!(
        "real run: baseline {:?} series, candidate {:?} series, reduction {:?}%, retention {:?}%, p {:?}",
        r.baseline.series,
        r.candidate.series,
        r.series_reduction_percent,
        r.critical_retention_percent,
        r.confidence.as_ref().and_then(|c| c.p_value)
    );
    assert!(
        r.series_reduction_percent.is_some_and(|v| v >= 90.0),
        "{r:?}"
    );
    assert_eq!(r.critical_retention_percent, Some(100.0));
    assert_eq!(
        r.baseline.critical_processes_seen,
        Some(3),
        "the simulator's critical processes were measured"
    );
    assert_eq!(real.verdict, Some(Verdict::Pass), "{:?}", real.message);

    assert_eq!(
        aa.phase,
        Some(ExperimentPhase::Completed),
        "{:?}",
        aa.message
    );
    assert_ne!(
        aa.verdict,
        Some(Verdict::Pass),
        "an A/A run must not pass: {:?}",
        aa.results
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn a_simulation_only_the_simulator_can_refuse_goes_failed_with_the_reason() {
    use phoenix::crd::Simulation;
    use phoenix::crd::simulation::SimulationPhase;
    let ns = TestNamespace::new("simrefused").await;
    let (_runner, node) = Runner::on_own_node(&ns).await;
    let _operator = Operator::start(&ns.name, &[]);
    // Admission accepts it (each field in range), but 100 × 256 MiB is over the simulator's total
    // memory cap: the real simulator refuses it at start (exit code 2).
    let sim: Simulation = serde_yaml::from_str(&format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Simulation\nmetadata: {{name: greedy}}\nspec:\n  profile: custom\n  duration: 1m\n  nodeSelector: {{kubernetes.io/hostname: {node}}}\n  tolerations: [{{key: phoenix.io/local, operator: Exists, effect: NoSchedule}}]\n  custom: {{patterns: [{{nameTemplate: 'hog-{{i}}', count: 100, memory: {{megabytes: 256}}}}]}}\n"
    ))
    .expect("parses");
    let sims = ns.api::<Simulation>();
    sims.create(&PostParams::default(), &sim)
        .await
        .expect("admitted");
    let status = eventually(
        "Simulation greedy Failed",
        Duration::from_secs(90),
        || async {
            let s = sims.get("greedy").await.ok()?.status?;
            (s.phase == Some(SimulationPhase::Failed)).then_some(s)
        },
    )
    .await;
    let ready =
        phoenix::crd::conditions::find(&status.conditions, "Ready").expect("Ready condition");
    assert_eq!(ready.status, phoenix::crd::ConditionStatus::False);
    assert!(
        !ready.reason.is_empty() && status.message.is_some(),
        "{status:?}"
    );
    assert!(status.completion_time.is_some());
    ns.cleanup().await;
}
