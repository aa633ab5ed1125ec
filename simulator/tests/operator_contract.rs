//! The contract between the operator and the simulator: the configuration the operator's Job puts
//! in `PHOENIX_SIMULATION` (built by `phoenix::desired::job`) is one this simulator accepts and can
//! plan, for every example Simulation and every profile at 10, 100 and 1,000 processes.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use phoenix::crd::simulation::SimulationSpec;
use phoenix::desired::job::{self, JobParams};
use phoenix::desired::labels::Ownership;

/// The configuration JSON the Job hands the simulator.
fn config_env(job: &Job) -> String {
    let pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("the Job has a pod template");
    pod.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == phoenix_simulator::config::ENV_VAR)
        .and_then(|e| e.value.clone())
        .expect("the simulator's configuration is in its env")
}

fn job_for(spec: &SimulationSpec) -> Job {
    job::job(
        spec,
        &JobParams {
            name: "load",
            namespace: "ns",
            owner: OwnerReference {
                api_version: "phoenix.io/v1alpha1".into(),
                kind: "Simulation".into(),
                name: "load".into(),
                uid: "uid".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
            ownership: Ownership::default(),
            image: "phoenix-simulator:test",
            nodes: 1,
        },
    )
}

/// Plans what the operator hands over; panics with the simulator's own refusal otherwise.
fn accepted(spec: &SimulationSpec, what: &str) -> phoenix_simulator::Plan {
    let json = config_env(&job_for(spec));
    let config = phoenix_simulator::config::from_json(&json)
        .unwrap_or_else(|e| panic!("{what}: the simulator refuses {json}: {e}"));
    phoenix_simulator::plan(&config)
        .unwrap_or_else(|e| panic!("{what}: the simulator cannot plan {json}: {e}"))
}

#[test]
fn every_example_simulation_is_accepted() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&examples).expect("examples/") {
        let path = entry.expect("an entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with("simulation-") {
            continue;
        }
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).expect("readable")).expect("YAML");
        let spec: SimulationSpec =
            serde_yaml::from_value(doc["spec"].clone()).expect("a Simulation spec");
        let plan = accepted(&spec, name);
        assert_eq!(plan.profile.as_str(), spec.profile.as_str(), "{name}");
        seen += 1;
    }
    assert!(
        seen >= 5,
        "expected the five example Simulations, saw {seen}"
    );
}

#[test]
fn every_profile_at_every_size_is_accepted() {
    for profile in ["realistic", "high-cardinality", "high-churn", "spike"] {
        for processes in [10u64, 100, 1000] {
            let spec: SimulationSpec = serde_yaml::from_str(&format!(
                "profile: {profile}\nprocesses: {processes}\nduration: 5m\ncriticalProcesses: [postgres, nginx]"
            ))
            .expect("a Simulation spec");
            let plan = accepted(&spec, &format!("{profile} × {processes}"));
            assert!(
                plan.demand().processes >= processes.min(10),
                "{profile} × {processes}: {:?}",
                plan.demand()
            );
        }
    }
}

/// The memory limit the Job gives the simulator container, in KiB.
fn memory_limit_kib(job: &Job) -> u64 {
    let pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("the Job has a pod template");
    let limit = pod.containers[0]
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
        .expect("the simulator container has a memory limit");
    let mib: u64 = limit
        .0
        .strip_suffix("Mi")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a limit in Mi, not {:?}", limit.0));
    mib * 1024
}

/// On a real node the container's cgroup holds the Job's memory limit and the simulator refuses a
/// plan over 80% of it: every profile at every size must fit what the Job gives it (the
/// supervisor's own few MiB already charged to the cgroup).
#[test]
fn every_plan_fits_the_memory_limit_the_job_sets() {
    const SUPERVISOR_KIB: u64 = 16 * 1024;
    let mut cases: Vec<(String, SimulationSpec)> = vec![];
    for profile in ["realistic", "high-cardinality", "high-churn", "spike"] {
        for processes in [10, 100, 1000] {
            let yaml = format!(
                "profile: {profile}\nprocesses: {processes}\nduration: 5m\ncriticalProcesses: [postgres, nginx]"
            );
            cases.push((
                format!("{profile} × {processes}"),
                serde_yaml::from_str(&yaml).expect("a Simulation spec"),
            ));
        }
    }
    let custom = "profile: custom\nduration: 5m\ncustom:\n  patterns:\n  - {nameTemplate: 'big-{i}', count: 6, memory: {megabytes: 256}, cpu: {millicores: 100}}\n  - {nameTemplate: 'small-{i}', count: 300, memory: {megabytes: 2}, cpu: {millicores: 1}}";
    cases.push((
        "custom 6 × 256 MiB + 300 × 2 MiB".into(),
        serde_yaml::from_str(custom).expect("a Simulation spec"),
    ));
    for (what, spec) in cases {
        let job = job_for(&spec);
        let limit = memory_limit_kib(&job);
        let plan = accepted(&spec, &what);
        let node = phoenix_simulator::node::NodeCapacity {
            cgroup_memory_free_kib: Some(limit - SUPERVISOR_KIB),
            ..Default::default()
        };
        if let Err(e) = phoenix_simulator::node::check(&plan.demand(), &node) {
            panic!(
                "{what}: the Job's limit of {} MiB is refused by the simulator: {e}",
                limit / 1024
            );
        }
    }
}
