//! The Simulation controller on the real control plane: a Job owned by the Simulation, one pod per
//! target node, status following the Job, and deletion stopping the load.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::PostParams;
use phoenix::crd::simulation::SimulationPhase;
use phoenix::crd::{Simulation, conditions};

use crate::harness::{Operator, TestNamespace, eventually};

#[tokio::test]
async fn simulation_runs_a_job_and_follows_it_to_success() {
    let ns = TestNamespace::new("simulation").await;
    let _operator = Operator::start(&ns.name, &[]);
    let sims = ns.api::<Simulation>();
    let jobs = ns.api::<Job>();
    let sim: Simulation = serde_yaml::from_str(
        "apiVersion: phoenix.io/v1alpha1\nkind: Simulation\nmetadata: {name: load}\nspec:\n  profile: high-cardinality\n  processes: 50\n  duration: 30s\n  nodeSelector: {type: kwok}\n  criticalProcesses: [postgres]",
    )
    .expect("parses");
    let created = sims
        .create(&PostParams::default(), &sim)
        .await
        .expect("Simulation created");

    let job = eventually("Job load-load", Duration::from_secs(30), || async {
        jobs.get_opt("load-load").await.ok()?
    })
    .await;
    assert_eq!(job.owner_references()[0].uid, created.uid().expect("uid"));
    let spec = job.spec.clone().expect("job spec");
    assert_eq!(spec.parallelism, Some(3), "one simulator pod per kwok node");
    let env = spec.template.spec.as_ref().expect("pod").containers[0]
        .env
        .clone()
        .unwrap_or_default();
    let config = env
        .iter()
        .find(|e| e.name == "PHOENIX_SIMULATION")
        .and_then(|e| e.value.clone())
        .expect("config env");
    let config: phoenix_simulator_config::SimulatorConfig =
        serde_json::from_str(&config).expect("the simulator parses its config");
    assert_eq!(config.processes, 50);

    // kwok completes simulator pods after their configured duration (30s): the Simulation follows
    // its Job to Succeeded.
    let done = eventually("Simulation Succeeded", Duration::from_secs(120), || async {
        let s = sims.get("load").await.ok()?.status?;
        (s.phase == Some(SimulationPhase::Succeeded)).then_some(s)
    })
    .await;
    assert!(done.start_time.is_some() && done.completion_time.is_some());
    assert_eq!(done.job.as_deref(), Some("load-load"));
    assert!(conditions::is_true(&done.conditions, "Complete"));
    assert_eq!(done.observed_generation, created.metadata.generation);

    // Deleting the Simulation removes its Job.
    sims.delete("load", &Default::default())
        .await
        .expect("deleted");
    eventually("Job garbage-collected", Duration::from_secs(60), || async {
        jobs.get_opt("load-load")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    ns.cleanup().await;
}
