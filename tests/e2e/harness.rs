//! The e2e harness: hands tests the local control plane (tests/e2e/cluster.sh) as a
//! `kube::Client`, a fresh namespace per test, kubectl and the Prometheus URL.
//!
//! It reuses a running cluster when `PHOENIX_E2E_ENV` (or target/e2e/env) names one whose apiserver
//! answers /readyz; otherwise it starts a private one with `cluster.sh up --foreground` in
//! target/e2e/run-<pid>, which tears itself down when this test process exits (its stdin closes).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

#[path = "helm_bin.rs"]
mod helm_bin;
pub use helm_bin::helm;

/// The cluster this test process uses.
pub struct Cluster {
    pub env: BTreeMap<String, String>,
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub prometheus_url: String,
    /// The foreground cluster.sh we started, if any; kept so its stdin stays open.
    _owned: Option<Mutex<Child>>,
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn answers_readyz(env: &BTreeMap<String, String>) -> bool {
    let (Some(kubectl), Some(kubeconfig)) = (env.get("KUBECTL"), env.get("KUBECONFIG")) else {
        return false;
    };
    Command::new(kubectl)
        .args([
            "--kubeconfig",
            kubeconfig,
            "--request-timeout=5s",
            "get",
            "--raw",
            "/readyz",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn existing() -> Option<BTreeMap<String, String>> {
    let path = std::env::var("PHOENIX_E2E_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target/e2e/env"));
    let env = parse_env(&std::fs::read_to_string(path).ok()?);
    answers_readyz(&env).then_some(env)
}

fn start_private() -> (BTreeMap<String, String>, Child) {
    start_private_in(&repo_root().join(format!("target/e2e/run-{}", std::process::id())))
}

/// Starts a control plane of its own in `dir` (`cluster.sh up --foreground`): its env lines, and
/// the cluster.sh process, which tears the cluster down when its stdin closes (on drop of the
/// handle, or when this test process exits).
pub fn start_private_in(dir: &Path) -> (BTreeMap<String, String>, Child) {
    let mut child = Command::new(repo_root().join("tests/e2e/cluster.sh"))
        .args(["up", "--foreground", "--dir"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tests/e2e/cluster.sh starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = vec![];
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("cluster.sh output is text");
        if line == "READY" {
            return (parse_env(&lines.join("\n")), child);
        }
        lines.push(line);
    }
    let status = child.wait().expect("cluster.sh exits");
    panic!("tests/e2e/cluster.sh up failed ({status}); its messages are above");
}

/// The shared cluster, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let (env, owned) = match existing() {
            Some(env) => (env, None),
            None => {
                let (env, child) = start_private();
                (env, Some(Mutex::new(child)))
            }
        };
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("cluster env lacks {k}"))
        };
        let cluster = Cluster {
            kubeconfig: get("KUBECONFIG").into(),
            kubectl: get("KUBECTL").into(),
            prometheus_url: get("PROMETHEUS_URL"),
            env,
            _owned: owned,
        };
        install_crds(&cluster);
        cluster
    })
}

fn install_crds(cluster: &Cluster) {
    let out = cluster
        .kubectl()
        .args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(repo_root().join("crds"))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "installing crds/ failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cluster
        .kubectl()
        .args(["wait", "--for=condition=Established", "--timeout=60s", "-f"])
        .arg(repo_root().join("crds"))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "CRDs not established: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// kubectl pointed at this cluster.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// A client for this cluster (admin credentials).
    pub async fn client(&self) -> Client {
        Client::try_from(self.config().await).expect("client builds")
    }

    /// The client configuration for this cluster (admin credentials).
    pub async fn config(&self) -> Config {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig readable");
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig valid")
    }

    /// A client for this cluster acting as `user` (impersonation by the admin), so requests are
    /// authorized by that user's RBAC.
    pub async fn client_as(&self, user: &str) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig readable");
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig valid");
        config.auth_info.impersonate = Some(user.to_string());
        Client::try_from(config).expect("client builds")
    }

    /// A variable of the cluster's env file (e.g. `COLLECTOR_BIN`).
    pub fn var(&self, key: &str) -> &str {
        self.env
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("cluster env lacks {key}"))
    }
}

/// A namespace of its own for one test; deleted by [`TestNamespace::cleanup`].
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    pub async fn new(prefix: &str) -> Self {
        let client = cluster().client().await;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("{prefix}-{:x}", nanos ^ std::process::id());
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace created");
        TestNamespace { name, client }
    }

    /// A typed API in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace (and so everything in it).
    pub async fn cleanup(self) {
        let _ = Api::<Namespace>::all(self.client)
            .delete(&self.name, &DeleteParams::background())
            .await;
    }
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A binary of another workspace crate (`phoenix-simulator`, `phoenix-e2e-podrunner`), built next
/// to this test binary by `cargo build --workspace --bins` (which `just test` runs first).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/e2e-<hash> → target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .expect("the test binary lives in target/<profile>/deps");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (`just test` does)",
        path.display()
    );
    path
}

/// The image archive target/images/<name>.tar (`just images`), or `None` (skip, said so) when it
/// is absent and not required, or when not root (running an image needs chroot).
pub fn image_archive(name: &str) -> Option<PathBuf> {
    let path = repo_root().join(format!("target/images/{name}.tar"));
    let required = std::env::var_os("PHOENIX_REQUIRE_IMAGES").is_some_and(|v| !v.is_empty());
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    match (path.is_file(), root, required) {
        (true, true, _) => Some(path),
        (false, _, true) => panic!(
            "{} is missing but PHOENIX_REQUIRE_IMAGES is set: run `just images`",
            path.display()
        ),
        (true, false, true) => {
            panic!("PHOENIX_REQUIRE_IMAGES is set, but running an image needs root (chroot)")
        }
        (false, _, false) => {
            eprintln!(
                "skipped: {} not built (`just images` builds it; `just test` then runs this test)",
                path.display()
            );
            None
        }
        (true, false, false) => {
            eprintln!("skipped: running an image needs root (chroot)");
            None
        }
    }
}

/// A `phoenix-operator` process (the real binary) watching one namespace; killed on drop.
pub struct Operator {
    child: Child,
    pub http_port: u16,
    /// Where its stdout and stderr go (shared by every process of the same log name).
    log: PathBuf,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Operator {
    /// Starts the operator on `namespace` with the cluster's Prometheus (or `prometheus_url`).
    pub fn start(namespace: &str, extra_args: &[&str]) -> Operator {
        Operator::start_with_kubeconfig(namespace, &cluster().kubeconfig, extra_args)
    }

    /// The operator's /metrics text.
    pub fn metrics(&self) -> String {
        // A loaded machine can drop a connection now and then: try a few times.
        for _ in 0..5 {
            match http_get(self.http_port, "/metrics") {
                Some(r) if r.starts_with("HTTP/1.1 200") => return r,
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        String::new()
    }

    /// Kills the operator at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // CI keeps only the test output: a failing test shows what its operator last did.
            eprintln!("{}", log_tail(&self.log, 40));
        }
    }
}

/// The last `lines` lines of the log at `path`, headed by its path (for a failing test's output).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    format!(
        "--- last {} lines of {} ---\n{}",
        tail.len(),
        path.display(),
        tail.join("\n")
    )
}

/// A plain HTTP GET on loopback, for the operator's own endpoints.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http_get_from("127.0.0.1", port, path)
}

/// A plain HTTP GET of `path` at `ip`:`port` (e.g. a pod's IP): the whole response.
pub fn http_get_from(ip: &str, port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

impl Operator {
    /// Starts the operator like [`Operator::start`], but with the credentials in `kubeconfig`
    /// (e.g. a ServiceAccount token, to run under the chart's RBAC) instead of the admin's.
    pub fn start_with_kubeconfig(
        namespace: &str,
        kubeconfig: &Path,
        extra_args: &[&str],
    ) -> Operator {
        let watch = ["--watch-namespaces", namespace];
        let args = [&watch[..], extra_args].concat();
        Operator::spawn(kubeconfig, &cluster().prometheus_url, namespace, &args)
    }

    /// Starts the operator as the chart does by default: watching every namespace (no
    /// `--watch-namespaces`), on the cluster `kubeconfig` names; logs to operator-`log_name`.log.
    pub fn start_all_namespaces(
        kubeconfig: &Path,
        prometheus_url: &str,
        log_name: &str,
    ) -> Operator {
        Operator::spawn(kubeconfig, prometheus_url, log_name, &[])
    }

    fn spawn(
        kubeconfig: &Path,
        prometheus_url: &str,
        log_name: &str,
        extra_args: &[&str],
    ) -> Operator {
        let http_port = free_port();
        let log_path = repo_root().join(format!("target/e2e/operator-{log_name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("operator log file");
        let child = Command::new(env!("CARGO_BIN_EXE_phoenix-operator"))
            .env("KUBECONFIG", kubeconfig)
            .args(["--prometheus-url", prometheus_url])
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .args([
                "--collector-image",
                "otelcol-phoenix:e2e",
                "--simulator-image",
                "phoenix-simulator:e2e",
            ])
            .args(extra_args)
            .env("PHOENIX_LOG_LEVEL", "info,phoenix=debug")
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("phoenix-operator starts");
        Operator {
            child,
            http_port,
            log: log_path,
        }
    }
}

/// Runs `cmd` with `stdin` fed to it.
pub fn run_with_stdin(mut cmd: Command, stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("command starts");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    child.wait_with_output().expect("command finishes")
}

/// Starts Debian's `prometheus` on 127.0.0.1:`port` with `config` (prometheus.yml text), its TSDB
/// in `dir`/data and the remote-write receiver on; stderr goes to `dir`/prometheus.log.
pub fn spawn_prometheus(dir: &Path, port: u16, config: &str) -> Child {
    spawn_prometheus_with(dir, port, config, &[])
}

/// [`spawn_prometheus`] with further flags (e.g. `--web.config.file=…` for TLS and basic auth).
pub fn spawn_prometheus_with(dir: &Path, port: u16, config: &str, extra: &[String]) -> Child {
    std::fs::create_dir_all(dir).expect("prometheus dir");
    let config_file = dir.join("prometheus.yml");
    std::fs::write(&config_file, config).expect("prometheus config written");
    Command::new("prometheus")
        .arg(format!("--config.file={}", config_file.display()))
        .args(extra)
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(dir.join("prometheus.log"))
                .map(Stdio::from)
                .unwrap_or(Stdio::null()),
        )
        .spawn()
        .expect("prometheus starts")
}

impl Operator {
    /// Sends SIGTERM, as the kubelet does when it stops a pod.
    pub fn terminate(&self) {
        let pid = i32::try_from(self.child.id()).expect("a pid fits in i32");
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM sent to the operator");
    }

    /// Waits up to `timeout` for the process to exit and returns how it did.
    pub async fn exited(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        eventually("the operator process exits", timeout, || {
            let status = child.try_wait().expect("try_wait");
            async move { status }
        })
        .await
    }
}

impl Operator {
    /// A value of the operator's /metrics for `controller` (e.g.
    /// `phoenix_reconcile_duration_seconds_count`); panics when /metrics does not answer, so a
    /// zero always comes from a live process.
    fn controller_metric(&self, metric: &str, controller: &str) -> u64 {
        let metrics = self.metrics();
        assert!(
            metrics.contains("phoenix_"),
            "the operator's /metrics answers (port {}; process {} {})",
            self.http_port,
            self.child.id(),
            // A process that ended stays a zombie (state Z) until the harness reaps it.
            match std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
            {
                Some(false) => "still running: it did not answer",
                _ => "gone: it ended",
            }
        );
        let prefix = format!("{metric}{{controller=\"{controller}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Every `phoenix_reconcile_errors_total` series of `controller` on this operator's /metrics
    /// (one line per reason, value included); empty while it has had no error.
    pub fn reconcile_errors(&self, controller: &str) -> Vec<String> {
        let prefix = format!("phoenix_reconcile_errors_total{{controller=\"{controller}\"");
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .map(str::to_string)
            .collect()
    }

    /// Reconciles of `controller` this operator has finished.
    pub fn reconciled(&self, controller: &str) -> u64 {
        self.controller_metric("phoenix_reconcile_duration_seconds_count", controller)
    }

    /// Waits until no `controller` reconcile is in flight; the reconciles finished by then. Every
    /// reconcile that began before the call has then finished, with what it does after its
    /// status write (Events, releasing children): an observed status is not yet its Events.
    pub async fn idle(&self, controller: &str) -> u64 {
        eventually(
            &format!("no {controller} reconcile in flight"),
            Duration::from_secs(60),
            || async {
                (self.controller_metric("phoenix_reconciles_in_flight", controller) == 0)
                    .then(|| self.reconciled(controller))
            },
        )
        .await
    }

    /// Makes `controller` reconcile the object `name` of `api` again with nothing to do (a label
    /// Phoenix does not read) and waits until this operator has finished a reconcile that began
    /// after nothing was in flight: from then on, "nothing changed" is a reconciled fact, not a
    /// wait that might have been too short.
    /// Returns the object's resourceVersion after the label write.
    pub async fn nudge<K>(&self, api: &Api<K>, name: &str, controller: &str) -> Option<String>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let done = self.idle(controller).await;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let patch = serde_json::json!({"metadata": {"labels": {"e2e.phoenix.io/nudge": nanos.to_string()}}});
        let nudged = api
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .expect("nudge label patched");
        eventually(
            &format!("a {controller} reconcile after the nudge"),
            Duration::from_secs(60),
            || async { (self.reconciled(controller) > done).then_some(()) },
        )
        .await;
        nudged.meta().resource_version.clone()
    }
}

/// Waits until `name` no longer exists in `api` (deleted, or garbage-collected), at most `timeout`.
pub async fn gone<K>(api: &kube::Api<K>, name: &str, timeout: Duration)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(&format!("{name} gone"), timeout, || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await
}
