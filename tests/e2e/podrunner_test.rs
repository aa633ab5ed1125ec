//! The local pod runner (tests/e2e/podrunner) on the real control plane: a baseline Pipeline
//! pinned to the runner's node runs a real collector process on this machine, its process metrics
//! and its own telemetry reach Prometheus, and deleting the Pipeline stops the process; simulator
//! pods run to completion (their Job completes) and a deleted one takes its workers with it; a pod
//! whose image maps to an OCI archive runs chrooted in the unpacked image, as its user, under its
//! memory limit, Ready by its readiness probe and restarted when its liveness probe fails.
//!
//! The runner's node is tainted and uniquely named, so the other tests' workloads (DaemonSets
//! without a nodeSelector) stay off it even on a shared cluster; the Pipeline tolerates the taint.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use phoenix::crd::Pipeline;

use crate::harness::{
    Operator, TestNamespace, cluster, eventually, http_get, repo_root, workspace_bin,
};

/// The taint on every runner node of these tests; pods meant for the runner tolerate it.
pub(crate) const TAINT_KEY: &str = "phoenix.io/local";

/// A `phoenix-e2e-podrunner` process; stopped (stdin closed) on drop.
pub(crate) struct Runner {
    child: Option<Child>,
}

impl Runner {
    pub(crate) fn start(node: &str) -> Runner {
        Runner::start_with(node, &[])
    }

    /// [`Runner::start`] with further flags (e.g. `--image-archive NAME=ARCHIVE`).
    pub(crate) fn start_with(node: &str, extra: &[String]) -> Runner {
        Runner::spawn(
            Command::new(workspace_bin("phoenix-e2e-podrunner")),
            node,
            extra,
        )
    }

    /// [`Runner::start`] on a process table of its own, as a real node has: the runner runs as
    /// PID 1 of a new PID namespace with its own /proc (`unshare --pid --fork --mount-proc`), so
    /// its collectors see the processes of its pods and no other test's. Where that cannot be
    /// done (not root), the runner shares this machine's process table and says so.
    pub(crate) fn start_on_own_machine(node: &str) -> Runner {
        let runner = workspace_bin("phoenix-e2e-podrunner");
        if !own_pid_namespace_works() {
            eprintln!(
                "note: cannot make a PID namespace here (not root?): node {node} sees every process of this machine"
            );
            return Runner::spawn(Command::new(runner), node, &[]);
        }
        let mut unshare = Command::new("unshare");
        // --kill-child: killing unshare (Runner's drop after a timeout) kills the namespace's
        // init, and with it every process of the namespace.
        unshare
            .args(["--pid", "--fork", "--mount-proc", "--kill-child", "--"])
            .arg(runner);
        Runner::spawn(unshare, node, &[])
    }

    /// Starts `command` (the runner, or a wrapper that execs it with the arguments that follow)
    /// for `node` with the usual flags plus `extra`.
    fn spawn(mut command: Command, node: &str, extra: &[String]) -> Runner {
        let c = cluster();
        let dir = repo_root().join(format!("target/e2e/podrunner-{node}"));
        std::fs::create_dir_all(&dir).expect("runner state dir");
        let log = std::fs::File::create(dir.join("runner.log")).expect("runner log");
        let child = command
            .env("KUBECONFIG", &c.kubeconfig)
            .args(["--node-name", node, "--stop-on-stdin-eof", "--taint"])
            .arg(format!("{TAINT_KEY}=true:NoSchedule"))
            .args(["--collector-bin", c.var("COLLECTOR_BIN")])
            .arg("--simulator-bin")
            .arg(workspace_bin("phoenix-simulator"))
            .arg("--state-dir")
            .arg(&dir)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("phoenix-e2e-podrunner starts");
        Runner { child: Some(child) }
    }

    /// Starts a runner for `node` and waits until its Node is registered.
    pub(crate) async fn start_registered(node: &str, client: &kube::Client) -> Runner {
        let runner = Runner::start(node);
        registered(client, node).await;
        runner
    }

    /// Starts a runner for node `local-<namespace>` and waits until the node is registered.
    pub(crate) async fn on_own_node(ns: &TestNamespace) -> (Runner, String) {
        let node = format!("local-{}", ns.name);
        (Runner::start_registered(&node, &ns.client).await, node)
    }

    /// [`Runner::on_own_node`] on a process table of its own ([`Runner::start_on_own_machine`]):
    /// for tests whose figures count the node's processes, which the other tests' processes
    /// (started and stopped at any moment) must not change.
    pub(crate) async fn on_own_machine(ns: &TestNamespace) -> (Runner, String) {
        let node = format!("local-{}", ns.name);
        let runner = Runner::start_on_own_machine(&node);
        registered(&ns.client, &node).await;
        (runner, node)
    }

    /// Closes stdin and waits for a clean exit (at most 60 s: it stops its pods, each within its
    /// grace period, and deletes them and its Node); whether it exited successfully.
    fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        drop(child.stdin.take());
        for _ in 0..600 {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

/// Waits until `node` is registered.
async fn registered(client: &kube::Client, node: &str) {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    eventually(
        "the runner's node is registered",
        Duration::from_secs(60),
        || async { nodes.get_opt(node).await.ok()?.map(|_| ()) },
    )
    .await;
}

/// Whether `unshare` can give a process a PID namespace and a /proc of its own here.
fn own_pid_namespace_works() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Placement (YAML flow mapping) on the runner's node `node`, its taint tolerated.
pub(crate) fn on_local(node: &str) -> String {
    format!(
        "{{nodeSelector: {{kubernetes.io/hostname: {node}}}, tolerations: [{{key: {TAINT_KEY}, operator: Exists, effect: NoSchedule}}]}}"
    )
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A PromQL instant query's first value, if any.
fn prometheus_value(query: &str) -> Option<f64> {
    let url = &cluster().prometheus_url;
    let port: u16 = url.rsplit(':').next()?.trim_end_matches('/').parse().ok()?;
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let response = http_get(port, &format!("/api/v1/query?query={encoded}"))?;
    let body = response.split_once("\r\n\r\n")?.1;
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Whether `pid` is still a collector process (and not a reused pid).
fn collector_alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("otelcol"))
        .unwrap_or(false)
}

/// Waits until the runner has registered `node` and made it Ready.
pub(crate) async fn node_ready(nodes: &Api<Node>, node: &str) {
    eventually(
        "the runner's node Ready",
        Duration::from_secs(60),
        || async {
            let n = nodes.get_opt(node).await.ok()??;
            let ready = n
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(())
        },
    )
    .await;
}

/// The pid behind a pod's first container (`podrunner://<pid>`), while it runs.
pub(crate) fn container_pid(pod: &Pod) -> Option<u32> {
    let status = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
    status.state.as_ref()?.running.as_ref()?;
    status
        .container_id
        .as_deref()?
        .strip_prefix("podrunner://")?
        .parse()
        .ok()
}

/// The pids whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// A simulator pod spec pinned to `node` (tolerating its taint), shaped like the Job builder's.
fn simulator_pod_spec(node: &str, args: &[&str]) -> serde_json::Value {
    simulator_pod_spec_limited(node, args, "512Mi")
}

fn simulator_pod_spec_limited(node: &str, args: &[&str], memory: &str) -> serde_json::Value {
    // As the Job builder does: metrics on 0.0.0.0:9464, the container port named `metrics`.
    let args = [&["--metrics-addr", "0.0.0.0:9464"][..], args].concat();
    serde_json::json!({
        "nodeSelector": {"kubernetes.io/hostname": node},
        "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 10,
        "automountServiceAccountToken": false,
        "containers": [{
            "name": "simulator",
            "image": "phoenix-simulator:e2e",
            "command": ["phoenix-simulator"],
            "args": args,
            "ports": [{"name": "metrics", "containerPort": 9464}],
            "env": [{"name": "PHOENIX_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            "resources": {"limits": {"memory": memory}},
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    })
}

/// The memory limit of the cgroup `pid` runs in (v2 `memory.max` or v1 `memory.limit_in_bytes`).
pub(crate) fn cgroup_memory_limit(pid: u32) -> Option<u64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    cgroups.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let path = path.trim_start_matches('/');
        let file = if controllers.is_empty() {
            format!("/sys/fs/cgroup/{path}/memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            format!("/sys/fs/cgroup/memory/{path}/memory.limit_in_bytes")
        } else {
            return None;
        };
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    })
}

#[tokio::test]
async fn podrunner_runs_a_real_collector_whose_series_reach_prometheus() {
    let ns = TestNamespace::new("podrunner").await;
    let node = format!("local-{}", ns.name);
    let mut runner = Runner::start(&node);
    let nodes: Api<Node> = Api::all(ns.client.clone());
    node_ready(&nodes, &node).await;
    let _operator = Operator::start(&ns.name, &[]);

    let pipeline: Pipeline = serde_yaml::from_str(&format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {{name: local-baseline}}\nspec:\n  template: baseline\n  collectionInterval: 5s\n  deployment:\n    nodeSelector: {{kubernetes.io/hostname: {node}}}\n    tolerations: [{{key: {TAINT_KEY}, operator: Exists, effect: NoSchedule}}]"
    ))
    .expect("test Pipeline parses");
    ns.api::<Pipeline>()
        .create(&PostParams::default(), &pipeline)
        .await
        .expect("Pipeline created");

    // The collector pod becomes Ready on the runner's node, backed by a real local process.
    let pods = ns.api::<Pod>();
    let selector = ListParams::default().labels("phoenix.io/pipeline=local-baseline");
    let pid = eventually(
        "a Ready collector pod on the local node",
        Duration::from_secs(60),
        || async {
            let list = pods.list(&selector).await.ok()?;
            let pod = list.items.into_iter().next()?;
            let on_node = pod.spec.as_ref()?.node_name.as_deref() == Some(node.as_str());
            let status = pod.status?;
            let ready = status
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let id = status.container_statuses?.first()?.container_id.clone()?;
            let pid: u32 = id.strip_prefix("podrunner://")?.parse().ok()?;
            (on_node && ready).then_some(pid)
        },
    )
    .await;
    assert!(collector_alive(pid), "pod {pid} is a running collector");

    // This machine's processes, labelled by the pipeline and the node, reach Prometheus; so does
    // the collector's own telemetry (its otlp/self port was remapped to a free one).
    for metric in [
        "process_cpu_time_seconds_total",
        "otelcol_process_memory_rss_bytes",
    ] {
        let query = format!(
            "count({metric}{{phoenix_pipeline=\"local-baseline\",phoenix_node=\"{node}\"}})"
        );
        let count = eventually(&query, Duration::from_secs(90), || async {
            prometheus_value(&query).filter(|v| *v > 0.0)
        })
        .await;
        println!("{query} = {count}");
    }

    // Deleting the Pipeline deletes the pod; the runner stops the process and confirms.
    ns.api::<Pipeline>()
        .delete("local-baseline", &DeleteParams::foreground())
        .await
        .expect("Pipeline deleted");
    eventually(
        "the collector pod gone and its process ended",
        Duration::from_secs(60),
        || async {
            let list = pods.list(&selector).await.ok()?;
            (list.items.is_empty() && !collector_alive(pid)).then_some(())
        },
    )
    .await;

    // The runner stops cleanly and takes its node with it.
    assert!(
        runner.stop(),
        "the runner exits cleanly when its stdin closes"
    );
    assert!(
        nodes.get_opt(&node).await.expect("node lookup").is_none(),
        "the runner deleted its node"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn podrunner_runs_simulator_pods_to_completion_and_stops_deleted_ones() {
    let ns = TestNamespace::new("podrunner-sim").await;
    let node = format!("local-{}", ns.name);
    let mut runner = Runner::start(&node);
    let nodes: Api<Node> = Api::all(ns.client.clone());
    node_ready(&nodes, &node).await;

    // A Job whose simulator runs 3 s: the pod Succeeds (exit code 0) and the Job completes.
    let job: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "short"},
        "spec": {"backoffLimit": 0, "template": {"spec":
            simulator_pod_spec(&node, &["--duration", "3s", "--processes", "3"])}},
    }))
    .expect("test Job parses");
    let jobs = ns.api::<Job>();
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("Job created");
    eventually("Job short complete", Duration::from_secs(60), || async {
        let status = jobs.get("short").await.ok()?.status?;
        (status.succeeded == Some(1)).then_some(())
    })
    .await;

    // A long simulator: its workers are real processes; deleting the pod ends all of them.
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "long"},
        "spec": simulator_pod_spec(&node, &["--duration", "5m", "--processes", "5"]),
    }))
    .expect("test Pod parses");
    let pods = ns.api::<Pod>();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("Pod created");
    let (pid, workers) = eventually(
        "the simulator and its workers",
        Duration::from_secs(60),
        || async {
            let pid = container_pid(&pods.get("long").await.ok()?)?;
            let workers = children(pid);
            (workers.len() >= 5).then_some((pid, workers))
        },
    )
    .await;
    // As under a kubelet, the container runs in a cgroup holding its memory limit, and so do the
    // processes it starts.
    for p in std::iter::once(pid).chain(workers.iter().copied()) {
        assert_eq!(
            cgroup_memory_limit(p),
            Some(512 << 20),
            "process {p} is not held to the container's 512Mi memory limit"
        );
    }
    // Its metrics endpoint is on a host port of its own (the runner's stand-in for the pod's
    // network namespace), so a second simulator on the node listening on 9464 too still starts.
    let metrics_port = |pid: u32| -> Option<u16> {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&str> = cmdline.split('\0').collect();
        let i = args.iter().position(|a| *a == "--metrics-addr")?;
        args.get(i + 1)?.strip_prefix("127.0.0.1:")?.parse().ok()
    };
    let port = metrics_port(pid).expect("--metrics-addr moved to a host port on 127.0.0.1");
    let served = eventually(
        "the simulator's /metrics",
        Duration::from_secs(60),
        || async {
            crate::harness::http_get(port, "/metrics")
                .filter(|m| m.contains("phoenix_simulator_active_processes 5"))
        },
    )
    .await;
    assert!(
        served.contains("phoenix_simulator_planned_processes"),
        "{served}"
    );
    let second: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "second"},
        "spec": simulator_pod_spec(&node, &["--duration", "5m", "--processes", "2"]),
    }))
    .expect("test Pod parses");
    pods.create(&PostParams::default(), &second)
        .await
        .expect("second Pod created");
    let second_pid = eventually(
        "the second simulator serving",
        Duration::from_secs(60),
        || async {
            let pid = container_pid(&pods.get("second").await.ok()?)?;
            let port = metrics_port(pid)?;
            crate::harness::http_get(port, "/metrics")
                .filter(|m| m.contains("phoenix_simulator_active_processes 2"))
                .map(|_| pid)
        },
    )
    .await;
    assert_ne!(metrics_port(second_pid), Some(port));
    pods.delete("second", &DeleteParams::default())
        .await
        .expect("second Pod deleted");
    pods.delete("long", &DeleteParams::default())
        .await
        .expect("Pod deleted");
    eventually(
        "the pod gone and every process ended",
        Duration::from_secs(60),
        || async {
            let gone = pods.get_opt("long").await.ok()?.is_none();
            let alive = std::iter::once(pid)
                .chain(workers.iter().copied())
                .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
            (gone && !alive).then_some(())
        },
    )
    .await;

    // A plan over 80% of the container's memory is refused, as it would be on a real node.
    let tight: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "tight"},
        "spec": simulator_pod_spec_limited(
            &node,
            &["--duration", "1m", "--processes", "100", "--profile", "realistic"],
            "64Mi",
        ),
    }))
    .expect("test Pod parses");
    pods.create(&PostParams::default(), &tight)
        .await
        .expect("Pod created");
    let terminated = eventually("the tight pod refused", Duration::from_secs(60), || async {
        let pod = pods.get("tight").await.ok()?;
        let status = pod.status?.container_statuses?.into_iter().next()?;
        status.state?.terminated
    })
    .await;
    assert_eq!(terminated.exit_code, 2, "{terminated:?}");
    assert!(
        terminated
            .message
            .as_deref()
            .is_some_and(|m| m.contains("available")),
        "the refusal names the memory: {terminated:?}"
    );

    assert!(
        runner.stop(),
        "the runner exits cleanly when its stdin closes"
    );
    ns.cleanup().await;
}

/// The uid a process runs as (the real uid of /proc/<pid>/status).
pub(crate) fn process_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[tokio::test]
async fn podrunner_runs_an_image_archive_with_probes_limits_and_restarts() {
    let Some(archive) = crate::harness::image_archive("phoenix-simulator") else {
        return;
    };
    let ns = TestNamespace::new("podrunner-oci").await;
    let node = format!("local-{}", ns.name);
    let mut runner = Runner::start_with(
        &node,
        &[
            "--image-archive".into(),
            format!("phoenix-simulator={}", archive.display()),
        ],
    );
    let nodes: Api<Node> = Api::all(ns.client.clone());
    node_ready(&nodes, &node).await;

    // The simulator image as its Job runs it, plus a readiness probe it passes and a liveness
    // probe it fails (404) once the initial delay is over.
    let mut spec =
        simulator_pod_spec_limited(&node, &["--duration", "10m", "--processes", "2"], "256Mi");
    spec["restartPolicy"] = "Always".into();
    spec["securityContext"] = serde_json::json!({"runAsUser": 10001, "runAsNonRoot": true});
    let container = &mut spec["containers"][0];
    container["image"] = "ghcr.io/phoenix-operator/phoenix-simulator:0.1.0".into();
    container["securityContext"] = serde_json::json!({"readOnlyRootFilesystem": true});
    container["readinessProbe"] =
        serde_json::json!({"httpGet": {"path": "/metrics", "port": "metrics"}, "periodSeconds": 1});
    container["livenessProbe"] = serde_json::json!({
        "httpGet": {"path": "/not-here", "port": "metrics"},
        "initialDelaySeconds": 8, "periodSeconds": 1, "failureThreshold": 2,
    });
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "image"}, "spec": spec,
    }))
    .expect("test Pod parses");
    let pods = ns.api::<Pod>();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("Pod created");

    let pid = eventually(
        "the image's container Ready",
        Duration::from_secs(60),
        || async {
            let pod = pods.get("image").await.ok()?;
            let status = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
            (status.ready && status.restart_count == 0).then_some(())?;
            container_pid(&pod)
        },
    )
    .await;
    let root = std::fs::read_link(format!("/proc/{pid}/root")).expect("the process's root");
    assert!(
        root.ends_with("rootfs/simulator"),
        "chrooted into the unpacked image: {}",
        root.display()
    );
    assert_eq!(process_uid(pid), Some(10001), "runs as the pod's runAsUser");
    assert_eq!(
        cgroup_memory_limit(pid),
        Some(256 << 20),
        "under its memory limit"
    );

    let status = eventually(
        "the container restarted after failing its liveness probe",
        Duration::from_secs(60),
        || async {
            let pod = pods.get("image").await.ok()?;
            let status = pod.status?.container_statuses?.into_iter().next()?;
            (status.restart_count >= 1).then_some(status)
        },
    )
    .await;
    assert_ne!(
        status.container_id,
        Some(format!("podrunner://{pid}")),
        "a new process"
    );
    let last = status
        .last_state
        .and_then(|s| s.terminated)
        .expect("the killed run is the last state");
    assert_ne!(last.exit_code, 0, "{last:?}");

    pods.delete("image", &DeleteParams::default())
        .await
        .expect("Pod deleted");
    eventually("the pod gone", Duration::from_secs(60), || async {
        pods.get_opt("image").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(runner.stop(), "the runner exits cleanly");
    ns.cleanup().await;
}
