//! The Simulation controller on the real control plane: a Job owned by the Simulation, one pod per
//! target node, status following the Job, deletion stopping the load, and `status.activeProcesses`
//! read from what a real simulator reports.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use phoenix::crd::simulation::SimulationPhase;
use phoenix::crd::{Simulation, conditions};

use crate::harness::{
    Operator, TestNamespace, eventually, free_port, http_get_from, repo_root, spawn_prometheus,
};
use crate::podrunner_test::Runner;

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

    let job = eventually("Job load-load", Duration::from_secs(60), || async {
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

/// A Prometheus scraping the pods listed in `targets.json` of its directory (file-based
/// discovery); killed on drop. Debian's Prometheus is built without Kubernetes discovery, so the
/// test lists the pods as `kubernetes_sd_configs` with the usual annotation relabelling (the
/// prometheus-community chart's `kubernetes-pods` job) would: [`pod_targets`].
struct PodScrapingPrometheus {
    child: std::process::Child,
    dir: std::path::PathBuf,
    url: String,
}

impl PodScrapingPrometheus {
    fn start(name: &str) -> PodScrapingPrometheus {
        let dir = repo_root().join(format!("target/e2e/prom-{name}"));
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        std::fs::write(dir.join("targets.json"), "[]").expect("targets written");
        let port = free_port();
        let config = format!(
            "global: {{scrape_interval: 2s}}\nscrape_configs:\n  - job_name: kubernetes-pods\n    file_sd_configs: [{{files: ['{}'], refresh_interval: 2s}}]\n",
            dir.join("targets.json").display()
        );
        let child = spawn_prometheus(&dir, port, &config);
        PodScrapingPrometheus {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    fn set_targets(&self, targets: &serde_json::Value) {
        // Written whole, then renamed: Prometheus never reads half a file.
        let tmp = self.dir.join("targets.json.tmp");
        std::fs::write(&tmp, targets.to_string()).expect("targets written");
        std::fs::rename(&tmp, self.dir.join("targets.json")).expect("targets renamed");
    }
}

impl Drop for PodScrapingPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The scrape targets Kubernetes pod discovery and the annotation relabelling give: each pod
/// annotated `prometheus.io/scrape: "true"` with an IP, at `<pod IP>:<prometheus.io/port>`,
/// labelled `namespace` and `pod` (`__metrics_path__` from `prometheus.io/path`).
fn pod_targets(pods: &[Pod]) -> serde_json::Value {
    let targets: Vec<serde_json::Value> = pods
        .iter()
        .filter_map(|pod| {
            let annotations = pod.metadata.annotations.as_ref()?;
            if annotations.get("prometheus.io/scrape").map(String::as_str) != Some("true") {
                return None;
            }
            let port = annotations.get("prometheus.io/port")?;
            let ip = pod.status.as_ref()?.pod_ip.as_ref()?;
            let path = annotations
                .get("prometheus.io/path")
                .cloned()
                .unwrap_or_else(|| "/metrics".to_string());
            Some(serde_json::json!({
                "targets": [format!("{ip}:{port}")],
                "labels": {
                    "namespace": pod.namespace().unwrap_or_default(),
                    "pod": pod.name_any(),
                    "__metrics_path__": path,
                },
            }))
        })
        .collect();
    serde_json::Value::Array(targets)
}

/// The value of an unlabelled sample `name` in a Prometheus text exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A real simulator (run by the local pod runner) reports its worker processes on its metrics
/// endpoint; a Prometheus that finds it through the pod annotations scrapes it; the operator reads
/// the figure into `status.activeProcesses`, and sets 0 once the load is over.
#[tokio::test]
async fn active_processes_come_from_the_running_simulators_own_metrics() {
    let ns = TestNamespace::new("sim-active").await;
    let (_runner, node) = Runner::on_own_node(&ns).await;
    let prom = PodScrapingPrometheus::start(&ns.name);
    let _operator = Operator::start(&ns.name, &["--prometheus-url", prom.url.as_str()]);
    let sims = ns.api::<Simulation>();
    let sim: Simulation = serde_yaml::from_str(&format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Simulation\nmetadata: {{name: load}}\nspec:\n  profile: realistic\n  processes: 12\n  duration: 40s\n  criticalProcesses: [postgres]\n  nodeSelector: {{kubernetes.io/hostname: {node}}}\n  tolerations: [{{key: phoenix.io/local, operator: Exists, effect: NoSchedule}}]\n"
    ))
    .expect("parses");
    sims.create(&PostParams::default(), &sim)
        .await
        .expect("Simulation created");

    // The simulator pod answers at its own IP and container port, as on a real node.
    let pods: Api<Pod> = ns.api();
    let own = eventually(
        "the simulator's metrics at <pod IP>:9464",
        Duration::from_secs(60),
        || async {
            let list = pods.list(&ListParams::default()).await.ok()?;
            prom.set_targets(&pod_targets(&list.items));
            let ip = list.items.first()?.status.as_ref()?.pod_ip.clone()?;
            let response = http_get_from(&ip, 9464, "/metrics")?;
            let text = response
                .starts_with("HTTP/1.1 200")
                .then(|| response.split_once("\r\n\r\n").map(|(_, body)| body))??;
            sample(text, "phoenix_simulator_active_processes").filter(|v| *v > 0.0)
        },
    )
    .await;
    assert!(own >= 1.0, "{own}");

    let reported = eventually(
        "status.activeProcesses from Prometheus",
        Duration::from_secs(90),
        || async {
            let s = sims.get("load").await.ok()?.status?;
            (s.phase == Some(SimulationPhase::Running))
                .then_some(s.active_processes)
                .flatten()
                .filter(|n| *n > 0)
        },
    )
    .await;
    // The plan's 12 workers plus the critical postgres at most.
    assert!((1..=13).contains(&reported), "{reported}");

    let done = eventually("Simulation Succeeded", Duration::from_secs(120), || async {
        let s = sims.get("load").await.ok()?.status?;
        (s.phase == Some(SimulationPhase::Succeeded)).then_some(s)
    })
    .await;
    assert_eq!(done.active_processes, Some(0));
    drop(prom);
    ns.cleanup().await;
}
