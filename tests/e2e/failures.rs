//! Runs that cannot finish end `Failed` with the reason, never with a verdict: a candidate whose
//! collector config is invalid, and a load whose simulator keeps dying mid-run (real simulator
//! processes on the pod runner, killed as an OOM kill would). The deploy timeout is
//! `experiment::the_clock_does_not_start_while_the_load_cannot_start`.

use std::time::Duration;

use kube::api::PostParams;
use phoenix::crd::conditions;
use phoenix::crd::experiment::{Experiment, ExperimentPhase, ExperimentStatus};

use crate::experiment::{FINAL, experiment, phase};
use crate::harness::{Operator, TestNamespace, eventually};
use crate::podrunner_test::{Runner, on_local};

/// The Experiment's `Ready` condition, which carries the reason a run failed.
fn failed_because(status: &ExperimentStatus) -> (String, String) {
    assert_eq!(status.phase, Some(ExperimentPhase::Failed), "{status:?}");
    assert_eq!(status.verdict, None, "a failed run has no verdict");
    let ready = conditions::find(&status.conditions, "Ready").expect("Ready condition");
    (ready.reason.clone(), ready.message.clone())
}

#[tokio::test]
async fn an_invalid_candidate_fails_the_run_with_the_reason() {
    let ns = TestNamespace::new("exp-invalid").await;
    let _operator = Operator::start(&ns.name, &[]);
    let api = ns.api::<Experiment>();
    let mut exp = experiment("exp", "", "");
    // Valid YAML the apiserver accepts, but its pipeline names a processor it never defines.
    exp.spec.candidate.pipeline = Some(
        serde_yaml::from_str(
            "{template: custom, custom: {processors: {'filter/noise': {error_mode: ignore, metrics: {datapoint: ['resource.attributes[\"process.executable.name\"] == \"sleep\"']}}}, pipeline: [filter/missing]}}",
        )
        .expect("candidate parses"),
    );
    api.create(&PostParams::default(), &exp)
        .await
        .expect("the apiserver admits it");
    let status = phase(&api, "exp", FINAL, 120).await;
    let (reason, message) = failed_because(&status);
    assert!(reason.starts_with("Candidate"), "{reason}: {message}");
    assert!(message.contains("filter/missing"), "{reason}: {message}");
    assert_eq!(status.running_since, None, "the clock never started");
    ns.cleanup().await;
}

/// The simulator processes of the load whose pods are named `<pod_prefix>…` (their `HOSTNAME`,
/// which the pod runner sets to the pod name).
fn simulator_pids(pod_prefix: &str) -> Vec<i32> {
    let wanted = format!("HOSTNAME={pod_prefix}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|v| v.starts_with(wanted.as_bytes()))
            })
        })
        .collect()
}

#[tokio::test]
async fn a_load_that_keeps_failing_mid_run_fails_the_run() {
    let ns = TestNamespace::new("exp-loadfail").await;
    let (_runner, node) = Runner::on_own_node(&ns).await;
    let _operator = Operator::start(&ns.name, &[]);
    let api = ns.api::<Experiment>();
    let mut exp = experiment(
        "loadfail",
        "",
        &format!(
            "  simulation: {{profile: realistic, processes: 5, duration: 10m}}\n  targets: {}\n",
            on_local(&node)
        ),
    );
    exp.spec.duration = "10m".parse().expect("duration");
    api.create(&PostParams::default(), &exp)
        .await
        .expect("created");
    let running = phase(&api, "loadfail", &[ExperimentPhase::Running], 120).await;
    assert!(running.running_since.is_some());

    // Every simulator pod of the load is killed as soon as it runs, past the Job's retries.
    let mut killed = 0;
    let status = eventually(
        "the Experiment fails after its load does",
        Duration::from_secs(300),
        || {
            for pid in simulator_pids("loadfail-load-load-") {
                // SAFETY: kill(2) has no memory effects; a pid gone meanwhile just fails.
                if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                    killed += 1;
                }
            }
            let api = api.clone();
            async move {
                let s = api.get("loadfail").await.ok()?.status?;
                s.phase.filter(|p| FINAL.contains(p)).map(|_| s)
            }
        },
    )
    .await;
    assert!(killed > 0, "simulator processes were found and killed");
    let (reason, message) = failed_because(&status);
    eprintln!("{killed} simulator processes killed; {reason}: {message}");
    assert!(reason.starts_with("Simulation"), "{reason}: {message}");
    assert!(status.completion_time.is_some());
    ns.cleanup().await;
}
