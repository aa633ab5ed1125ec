//! One pod on the runner's node: what the kubelet would do for it, done with local processes.
//!
//! - **Prepare.** Volumes become per-pod directories under `<state-dir>/pods/<ns>_<pod>/volumes/`:
//!   ConfigMap and Secret keys as files (collector configs rewritten, see [`crate::rewrite`]),
//!   emptyDir as an empty directory with mode 0777; hostPath is the host path itself; projected
//!   volumes (the ServiceAccount admission plugin's `kube-api-access-*`) get their
//!   `serviceAccountToken` from the TokenRequest API (a real token bound to the pod, the
//!   projection's audience or the apiserver's default), their ConfigMap and Secret keys
//!   (`kube-root-ca.crt`'s `ca.crt`) and their downward-API fields (`namespace`) as files.
//!   Env: `KUBERNETES_SERVICE_HOST/PORT` (the apiserver's own address: there is no Service proxy
//!   here), `envFrom`, then `env` (plain values with `$(VAR)` expansion, downward-API `fieldRef`s,
//!   `secretKeyRef` and `configMapKeyRef` read from the API), plus `HOSTNAME` (the pod name).
//!   A value that is a local listen address on a mapped port (`0.0.0.0:8080`) is rewritten like
//!   an argument ([`crate::rewrite::rewrite_arg`]). Nothing of the runner's env is inherited.
//! - **Run.** Each container's image maps to a local binary or an OCI image archive
//!   ([`crate::spec::ImageMap`]).
//!   - A binary runs as a plain process: argv follows command/args ([`crate::spec::argv`]) with
//!     every mounted path rewritten to its local directory; the working directory is the pod
//!     directory; env adds `PATH` (the runner's) and `TMPDIR` (the local directory of a volume
//!     mounted at `/tmp`: the simulator, like anything using `std::env::temp_dir`, then writes
//!     where the pod expects).
//!   - An archive is unpacked into `<pod dir>/rootfs/<container>` and the container runs chrooted
//!     there ([`crate::process::Confinement`]) as a runtime would run it: argv from the image's
//!     entrypoint/cmd and the pod's command/args ([`crate::oci::argv`]), the image's env under the
//!     pod's, the image's or `securityContext`'s user and groups (`fsGroup`,
//!     `supplementalGroups`), every volume bind-mounted at its mount path (read-only where the
//!     mount says so; so the ServiceAccount files are at
//!     `/var/run/secrets/kubernetes.io/serviceaccount/`), `readOnlyRootFilesystem` honoured.
//!     It shares the host's network (no network namespace), like the binaries.
//!
//!   Output goes to `<state-dir>/logs/<ns>_<pod>_<container>.log` (kept after the pod is gone).
//!   Ports get host ports of their own ([`crate::rewrite::PortMap`]); readiness and liveness
//!   probes (httpGet, tcpSocket) poll 127.0.0.1:<host port>. A container failing its liveness
//!   probe `failureThreshold` times in a row is stopped (SIGTERM, SIGKILL after the pod's grace
//!   period) and restarted as its restart policy says. Restart policy is honoured (backoff 1 s
//!   doubling to 30 s).
//! - **Pod IP.** As on a real node, a pod has an IP of its own and its ports answer there: each
//!   pod gets a loopback address of its own (127.16.0.0/12 … 127.255.255.254, all loopback on
//!   Linux), and `<pod IP>:<container port>` is forwarded to the host port the process listens on,
//!   so whatever finds pods through the API (Prometheus's pod discovery) reaches them.
//! - **Status** goes to the status subresource (strategic merge patch, as the kubelet does): phase,
//!   conditions, `containerStatuses` (containerID `podrunner://<pid>`), the pod's IP, host IP
//!   127.0.0.1.
//! - **Stop.** A pod marked for deletion gets SIGTERM, SIGKILL after its grace period, then the
//!   runner deletes it for good (grace 0) as the kubelet confirms a deletion; a pod that vanished
//!   is just stopped. Either way its directory is removed and its ports freed.
//!
//! Memory limits are enforced with a memory cgroup per container (process.rs).
//! Not done: init containers, startup and exec probes, CPU limits, security contexts of binaries
//! (they run as the runner's user), capabilities and seccomp, `resourceFieldRef` env, token
//! rotation (the apiserver extends a kubelet-style 3607 s token to a year), ports named in args.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, select_all};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus, Probe,
    Secret, ServiceAccount, ServiceAccountTokenProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::MANAGER;
use crate::oci;
use crate::process::{self, Bind, Confinement};
use crate::rewrite::{self, PortMap};
use crate::spec::{self, ImageMap, Mounts, Runs};

/// What every pod worker shares.
pub struct RunnerContext {
    pub client: Client,
    pub node: String,
    pub images: ImageMap,
    pub state_dir: PathBuf,
    /// The apiserver's host and port: the pods' `KUBERNETES_SERVICE_HOST/PORT`.
    pub apiserver: (String, u16),
    /// Host ports handed to pods and not yet released.
    ports: Mutex<BTreeSet<u16>>,
    next_port: Mutex<u16>,
    /// The next pod IP to hand out, as a u32 in [`POD_IPS`].
    next_ip: Mutex<u32>,
}

/// Pod IPs: 127.16.0.1 – 127.255.255.254, loopback addresses apart from 127.0.0.1.
const POD_IPS: std::ops::Range<u32> = 0x7f10_0001..0x7fff_ffff;

/// Pods get host ports in 10000–19999: below the kernel's ephemeral range (so no outgoing
/// connection takes one between allocation and bind) and apart from cluster.sh's 20000–31999.
const PORT_RANGE: std::ops::Range<u16> = 10000..20000;

impl RunnerContext {
    pub fn new(
        client: Client,
        node: String,
        images: ImageMap,
        state_dir: PathBuf,
        apiserver: (String, u16),
    ) -> Self {
        let seed = std::process::id() ^ Timestamp::now().subsec_nanosecond().unsigned_abs();
        let span = u32::from(PORT_RANGE.end - PORT_RANGE.start);
        let start = PORT_RANGE.start + u16::try_from(seed % span).unwrap_or(0);
        RunnerContext {
            client,
            node,
            images,
            state_dir,
            apiserver,
            ports: Mutex::new(BTreeSet::new()),
            next_port: Mutex::new(start),
            // Two runners on one machine start far apart: their pods' IPs do not meet.
            next_ip: Mutex::new(POD_IPS.start + seed.wrapping_mul(4099) % (1 << 20)),
        }
    }

    /// A loopback address for a new pod, never 127.0.0.1.
    fn allocate_ip(&self) -> std::net::Ipv4Addr {
        let mut next = self
            .next_ip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ip = *next;
        *next = if ip + 1 >= POD_IPS.end {
            POD_IPS.start
        } else {
            ip + 1
        };
        std::net::Ipv4Addr::from(ip)
    }

    /// A port free on 127.0.0.1 and not handed out already.
    fn allocate_port(&self) -> Option<u16> {
        let mut taken = self.ports.lock().ok()?;
        let mut next = self.next_port.lock().ok()?;
        for _ in PORT_RANGE {
            let port = *next;
            *next = if port + 1 >= PORT_RANGE.end {
                PORT_RANGE.start
            } else {
                port + 1
            };
            if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                taken.insert(port);
                return Some(port);
            }
        }
        None
    }

    fn release_ports(&self, ports: &PortMap) {
        if let Ok(mut taken) = self.ports.lock() {
            for p in ports.values() {
                taken.remove(p);
            }
        }
    }
}

/// Why a worker stops its pod without a deletion to confirm.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// The pod is gone from the API (or the watch lost it).
    Vanished,
    /// The runner stops: at most `grace` for the processes to exit.
    Shutdown { grace: Duration },
}

enum Msg {
    Update(Box<Pod>),
    Stop(Stop),
}

/// The task that runs one pod.
pub struct PodWorker {
    tx: mpsc::UnboundedSender<Msg>,
    handle: JoinHandle<()>,
}

impl PodWorker {
    pub fn start(ctx: Arc<RunnerContext>, pod: Pod) -> PodWorker {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = tokio::spawn(Worker::new(ctx, pod).run(rx));
        PodWorker { tx, handle }
    }

    /// A new version of the pod (e.g. marked for deletion).
    pub fn update(&self, pod: Pod) {
        let _ = self.tx.send(Msg::Update(Box::new(pod)));
    }

    pub fn stop(&self, stop: Stop) {
        let _ = self.tx.send(Msg::Stop(stop));
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    pub async fn join(self) {
        let _ = self.handle.await;
    }
}

/// How the worker's pod ends.
enum End {
    /// Marked for deletion: stop within the grace period, then confirm the deletion.
    Deleted(Duration),
    /// Stop within the grace period; the API object is not ours to touch.
    Stopped(Duration),
}

/// A readiness or liveness probe and its running tally.
struct ProbeState {
    kind: ProbeKind,
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success_threshold: i32,
    failure_threshold: i32,
    next: Instant,
    successes: i32,
    failures: i32,
}

enum ProbeKind {
    Http {
        port: u16,
        path: String,
        host: String,
    },
    Tcp {
        port: u16,
    },
}

struct Ctr {
    spec: Container,
    /// What runs the image.
    runs: Runs,
    /// The image's root filesystem and mounts, for a container run from an archive.
    confinement: Option<Confinement>,
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    pid: Option<u32>,
    state: ContainerState,
    last_state: Option<ContainerState>,
    restarts: i32,
    ready: bool,
    /// Whether a start was attempted (the pod is past Pending).
    started: bool,
    probe: Option<ProbeState>,
    liveness: Option<ProbeState>,
    restart_at: Option<Instant>,
    /// The memory cgroup holding the container's memory limit, when it has one.
    cgroup: Option<process::MemoryCgroup>,
}

struct Worker {
    ctx: Arc<RunnerContext>,
    pod: Pod,
    ns: String,
    name: String,
    uid: String,
    dir: PathBuf,
    restart_policy: String,
    ports: PortMap,
    /// The pod's own IP, where its ports answer (see the module comment).
    ip: std::net::Ipv4Addr,
    /// The forwarders from `<ip>:<container port>` to the host ports, by container port.
    forwarders: BTreeMap<u16, JoinHandle<()>>,
    containers: Vec<Ctr>,
    /// Why no container runs yet (waiting reason, message), before they are prepared.
    waiting: Option<(String, String)>,
    start_time: Time,
    /// Condition type → (status, last transition).
    conditions: BTreeMap<&'static str, (bool, Time)>,
    last_status: Option<serde_json::Value>,
    status_retry: Option<Instant>,
}

fn now() -> Time {
    Time(Timestamp::now())
}

impl Worker {
    fn new(ctx: Arc<RunnerContext>, pod: Pod) -> Worker {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let dir = ctx.state_dir.join("pods").join(format!("{ns}_{name}"));
        let restart_policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".to_string());
        Worker {
            uid: pod.uid().unwrap_or_default(),
            ip: ctx.allocate_ip(),
            forwarders: BTreeMap::new(),
            ctx,
            pod,
            ns,
            name,
            dir,
            restart_policy,
            ports: PortMap::new(),
            containers: vec![],
            waiting: Some(("ContainerCreating".into(), String::new())),
            start_time: now(),
            conditions: BTreeMap::new(),
            last_status: None,
            status_retry: None,
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }

    fn grace(&self) -> Duration {
        let secs = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30);
        Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    }

    /// What a message means for the pod: `Some` ends it.
    fn on_message(&mut self, msg: Option<Msg>) -> Option<End> {
        match msg {
            Some(Msg::Update(pod)) => {
                self.pod = *pod;
                self.pod
                    .metadata
                    .deletion_timestamp
                    .is_some()
                    .then(|| End::Deleted(self.grace()))
            }
            Some(Msg::Stop(Stop::Vanished)) | None => Some(End::Stopped(self.grace())),
            Some(Msg::Stop(Stop::Shutdown { grace })) => {
                Some(End::Stopped(grace.min(self.grace())))
            }
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let end = self.drive(&mut rx).await;
        let grace = match end {
            End::Deleted(g) | End::Stopped(g) => g,
        };
        self.stop_processes(grace).await;
        if let End::Deleted(_) = end {
            self.confirm_deletion().await;
        }
        if self.dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.dir)
        {
            tracing::warn!(pod = %self.key(), error = %e, "could not remove the pod directory");
        }
        for forwarder in self.forwarders.values() {
            forwarder.abort();
        }
        self.ctx.release_ports(&self.ports);
        tracing::info!(pod = %self.key(), "pod stopped and cleaned up");
    }

    async fn drive(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) -> End {
        if self.pod.metadata.deletion_timestamp.is_some() {
            return End::Deleted(self.grace());
        }
        let phase = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if matches!(phase.as_str(), "Succeeded" | "Failed") {
            // Ran to its end already (before a runner restart): only a deletion to confirm.
            loop {
                if let Some(end) = self.on_message(rx.recv().await) {
                    return end;
                }
            }
        }
        if phase == "Running" && self.restart_policy == "Never" {
            // Started by an earlier runner whose process died with it: it cannot run again.
            self.waiting = None;
            self.write_lost_status().await;
            loop {
                if let Some(end) = self.on_message(rx.recv().await) {
                    return end;
                }
            }
        }
        // Prepare until it works (a ConfigMap or Secret may not exist yet).
        loop {
            match self.prepare().await {
                Ok(containers) => {
                    self.containers = containers;
                    self.waiting = None;
                    break;
                }
                Err((reason, message)) => {
                    tracing::warn!(pod = %self.key(), %reason, %message, "cannot start the pod yet; retrying in 2s");
                    self.waiting = Some((reason, message));
                    self.write_status().await;
                    tokio::select! {
                        msg = rx.recv() => if let Some(end) = self.on_message(msg) { return end },
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            }
        }
        for i in 0..self.containers.len() {
            self.start_container(i);
        }
        loop {
            self.write_status().await;
            let wake = self.next_wake();
            tokio::select! {
                (i, status) = wait_any(&mut self.containers) => self.on_exit(i, status),
                msg = rx.recv() => if let Some(end) = self.on_message(msg) { return end },
                _ = tokio::time::sleep_until(wake) => self.on_timer().await,
            }
        }
    }

    /// Volumes, env and command lines of every container.
    async fn prepare(&mut self) -> Result<Vec<Ctr>, (String, String)> {
        let config_error = |m: String| ("CreateContainerConfigError".to_string(), m);
        let spec = self.pod.spec.clone().unwrap_or_default();
        if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
            tracing::warn!(pod = %self.key(), "init containers are not supported; skipping them");
        }
        let volumes_dir = self.dir.join("volumes");
        if self.dir.exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        std::fs::create_dir_all(&volumes_dir)
            .map_err(|e| config_error(format!("{}: {e}", volumes_dir.display())))?;

        // Where each volume is on this machine, and the files to write into it.
        let mut local: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut files: Vec<(String, PathBuf, Vec<u8>)> = vec![];
        for v in spec.volumes.iter().flatten() {
            let dir = volumes_dir.join(&v.name);
            if let Some(hp) = &v.host_path {
                local.insert(v.name.clone(), PathBuf::from(&hp.path));
                continue;
            }
            std::fs::create_dir_all(&dir)
                .map_err(|e| config_error(format!("{}: {e}", dir.display())))?;
            local.insert(v.name.clone(), dir.clone());
            if let Some(cm) = &v.config_map {
                let data = self.config_map(&cm.name, cm.optional == Some(true)).await?;
                for (key, path) in items(&data, cm.items.as_deref()) {
                    let bytes = data.get(&key).cloned().unwrap_or_default();
                    files.push((v.name.clone(), dir.join(path), bytes));
                }
            } else if let Some(secret) = &v.secret {
                let name = secret.secret_name.clone().unwrap_or_default();
                let data = self.secret(&name, secret.optional == Some(true)).await?;
                for (key, path) in items(&data, secret.items.as_deref()) {
                    let bytes = data.get(&key).cloned().unwrap_or_default();
                    files.push((v.name.clone(), dir.join(path), bytes));
                }
            } else if let Some(projected) = &v.projected {
                for source in projected.sources.iter().flatten() {
                    for (path, bytes) in self.projection(source).await? {
                        files.push((v.name.clone(), dir.join(path), bytes));
                    }
                }
            } else if v.empty_dir.is_some() {
                // As the kubelet makes it: any container user may write.
                std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                    .map_err(|e| config_error(format!("{}: {e}", dir.display())))?;
            } else {
                tracing::warn!(pod = %self.key(), volume = %v.name, "unsupported volume type: an empty directory stands in");
            }
        }
        let binds_of = |c: &Container| -> Vec<Bind> {
            c.volume_mounts
                .iter()
                .flatten()
                .filter_map(|m| {
                    let dir = local.get(&m.name)?;
                    let host = match m.sub_path.as_deref() {
                        Some(sub) if !sub.is_empty() => dir.join(sub),
                        _ => dir.clone(),
                    };
                    Some(Bind {
                        host,
                        path: m.mount_path.clone(),
                        read_only: m.read_only == Some(true),
                    })
                })
                .collect()
        };
        let mounts_of = |c: &Container| {
            let mut mounts = Mounts::default();
            for m in c.volume_mounts.iter().flatten() {
                if let Some(dir) = local.get(&m.name) {
                    let dir = match m.sub_path.as_deref() {
                        Some(sub) if !sub.is_empty() => dir.join(sub),
                        _ => dir.clone(),
                    };
                    mounts.add(&m.mount_path, dir);
                }
            }
            mounts
        };

        // Ports: every declared container port and every port a collector config listens on.
        let mut wanted: BTreeSet<u16> = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| u16::try_from(p.container_port).ok())
            .collect();
        let configs: Vec<Option<serde_yaml::Value>> = files
            .iter()
            .map(|(_, _, bytes)| {
                std::str::from_utf8(bytes)
                    .ok()
                    .and_then(rewrite::parse_collector_config)
            })
            .collect();
        for doc in configs.iter().flatten() {
            wanted.extend(rewrite::listen_ports(doc));
        }
        for port in wanted {
            if !self.ports.contains_key(&port) {
                let host = self
                    .ctx
                    .allocate_port()
                    .ok_or_else(|| config_error("no free host port left in 10000-19999".into()))?;
                self.ports.insert(port, host);
            }
        }
        self.forward_ports().await;

        for ((volume, path, bytes), doc) in files.into_iter().zip(configs) {
            let bytes = match doc {
                Some(mut doc) => {
                    let mounts = spec
                        .containers
                        .iter()
                        .find(|c| c.volume_mounts.iter().flatten().any(|m| m.name == volume))
                        .map(mounts_of)
                        .unwrap_or_default();
                    let changes = rewrite::rewrite(&mut doc, &self.ports, &mounts);
                    tracing::info!(pod = %self.key(), file = %path.display(), ?changes, "collector config materialised");
                    rewrite::render(&doc, &changes)
                        .map_err(|e| config_error(format!("{}: {e}", path.display())))?
                        .into_bytes()
                }
                None => bytes,
            };
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            std::fs::write(&path, bytes)
                .map_err(|e| config_error(format!("{}: {e}", path.display())))?;
        }

        let mut containers = vec![];
        for c in &spec.containers {
            let image = c.image.clone().unwrap_or_default();
            let runs = self
                .ctx
                .images
                .runs_for(&image)
                .ok_or_else(|| {
                    (
                        "ImageNotMapped".to_string(),
                        format!("no --image-archive or --image-map rule matches image {image:?}"),
                    )
                })?
                .clone();
            let mounts = mounts_of(c);
            let mut env = self.env(c).await?;
            let (argv, cwd, confinement) = match &runs {
                Runs::Binary(binary) => {
                    env.entry("PATH".into()).or_insert_with(|| {
                        std::env::var("PATH")
                            .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
                    });
                    if let Some(tmp) = mounts.translate("/tmp") {
                        env.insert("TMPDIR".into(), tmp.display().to_string());
                    }
                    let argv: Vec<String> = spec::command_line(c, binary, &env, &mounts)
                        .into_iter()
                        .map(|a| rewrite::rewrite_arg(&a, &self.ports))
                        .collect();
                    let cwd = c
                        .working_dir
                        .as_deref()
                        .and_then(|w| mounts.translate(w))
                        .unwrap_or_else(|| self.dir.clone());
                    (argv, cwd, None)
                }
                Runs::Archive(archive) => {
                    let (argv, image_env, confinement) =
                        self.confine(&spec, c, archive, env, binds_of(c))?;
                    env = image_env;
                    (argv, self.dir.clone(), Some(confinement))
                }
            };
            let probe = c
                .readiness_probe
                .as_ref()
                .and_then(|p| probe_state(c, p, &self.ports));
            let liveness = c
                .liveness_probe
                .as_ref()
                .and_then(|p| probe_state(c, p, &self.ports));
            let cgroup = memory_limit(c).and_then(|limit| {
                let name = format!("{}_{}_{}", self.ns, self.name, c.name);
                process::MemoryCgroup::create(&name, limit)
                    .inspect_err(
                        |e| tracing::warn!(error = %e, cgroup = %name, "memory limit not enforced"),
                    )
                    .ok()
            });
            containers.push(Ctr {
                spec: c.clone(),
                runs,
                confinement,
                argv,
                env,
                cwd,
                log: self
                    .ctx
                    .state_dir
                    .join("logs")
                    .join(format!("{}_{}_{}.log", self.ns, self.name, c.name)),
                child: None,
                pid: None,
                state: waiting("ContainerCreating", ""),
                last_state: None,
                restarts: 0,
                ready: false,
                started: false,
                probe,
                liveness,
                restart_at: None,
                cgroup,
            });
        }
        Ok(containers)
    }

    async fn config_map(
        &self,
        name: &str,
        optional: bool,
    ) -> Result<BTreeMap<String, Vec<u8>>, (String, String)> {
        let api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        match api.get_opt(name).await {
            Ok(Some(cm)) => {
                let mut data: BTreeMap<String, Vec<u8>> = cm
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                data.extend(
                    cm.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                Ok(data)
            }
            Ok(None) if optional => Ok(BTreeMap::new()),
            Ok(None) => Err((
                "CreateContainerConfigError".into(),
                format!("configmap {name:?} not found"),
            )),
            Err(e) => Err((
                "CreateContainerConfigError".into(),
                format!("configmap {name:?}: {e}"),
            )),
        }
    }

    async fn secret(
        &self,
        name: &str,
        optional: bool,
    ) -> Result<BTreeMap<String, Vec<u8>>, (String, String)> {
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        match api.get_opt(name).await {
            Ok(Some(s)) => {
                let mut data: BTreeMap<String, Vec<u8>> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                data.extend(
                    s.string_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes())),
                );
                Ok(data)
            }
            Ok(None) if optional => Ok(BTreeMap::new()),
            Ok(None) => Err((
                "CreateContainerConfigError".into(),
                format!("secret {name:?} not found"),
            )),
            Err(e) => Err((
                "CreateContainerConfigError".into(),
                format!("secret {name:?}: {e}"),
            )),
        }
    }

    /// The container's environment (see the module docs).
    async fn env(&self, c: &Container) -> Result<BTreeMap<String, String>, (String, String)> {
        let err = |m: String| ("CreateContainerConfigError".to_string(), m);
        let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
        let (host, port) = &self.ctx.apiserver;
        let mut env = BTreeMap::from([
            ("HOSTNAME".to_string(), self.name.clone()),
            ("KUBERNETES_SERVICE_HOST".to_string(), host.clone()),
            ("KUBERNETES_SERVICE_PORT".to_string(), port.to_string()),
            (
                "KUBERNETES_SERVICE_PORT_HTTPS".to_string(),
                port.to_string(),
            ),
            (
                "KUBERNETES_PORT".to_string(),
                format!("tcp://{host}:{port}"),
            ),
        ]);
        for from in c.env_from.iter().flatten() {
            let prefix = from.prefix.clone().unwrap_or_default();
            let data = if let Some(r) = &from.config_map_ref {
                self.config_map(&r.name, r.optional == Some(true)).await?
            } else if let Some(r) = &from.secret_ref {
                self.secret(&r.name, r.optional == Some(true)).await?
            } else {
                BTreeMap::new()
            };
            for (k, v) in data {
                env.insert(format!("{prefix}{k}"), text(v));
            }
        }
        for var in c.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (_, Some(from)) => {
                    if let Some(f) = &from.field_ref {
                        spec::field_value(&self.pod, &self.ctx.node, &f.field_path).ok_or_else(
                            || {
                                err(format!(
                                    "env {}: unsupported fieldRef {}",
                                    var.name, f.field_path
                                ))
                            },
                        )?
                    } else if let Some(r) = &from.secret_key_ref {
                        let data = self.secret(&r.name, r.optional == Some(true)).await?;
                        match data.get(&r.key) {
                            Some(v) => text(v.clone()),
                            None if r.optional == Some(true) => continue,
                            None => {
                                return Err(err(format!(
                                    "env {}: key {:?} not in secret {:?}",
                                    var.name, r.key, r.name
                                )));
                            }
                        }
                    } else if let Some(r) = &from.config_map_key_ref {
                        let data = self.config_map(&r.name, r.optional == Some(true)).await?;
                        match data.get(&r.key) {
                            Some(v) => text(v.clone()),
                            None if r.optional == Some(true) => continue,
                            None => {
                                return Err(err(format!(
                                    "env {}: key {:?} not in configmap {:?}",
                                    var.name, r.key, r.name
                                )));
                            }
                        }
                    } else {
                        return Err(err(format!(
                            "env {}: only fieldRef, secretKeyRef and configMapKeyRef are supported",
                            var.name
                        )));
                    }
                }
                (Some(v), None) => spec::expand(v, &env),
                (None, None) => String::new(),
            };
            env.insert(var.name.clone(), value);
        }
        for value in env.values_mut() {
            *value = rewrite::rewrite_arg(value, &self.ports);
        }
        Ok(env)
    }

    /// The files of one projected volume source: (path in the volume, content).
    async fn projection(
        &self,
        source: &k8s_openapi::api::core::v1::VolumeProjection,
    ) -> Result<Vec<(String, Vec<u8>)>, (String, String)> {
        let mut files = vec![];
        if let Some(t) = &source.service_account_token {
            files.push((t.path.clone(), self.service_account_token(t).await?));
        } else if let Some(cm) = &source.config_map {
            let data = self.config_map(&cm.name, cm.optional == Some(true)).await?;
            for (key, path) in items(&data, cm.items.as_deref()) {
                files.push((path, data.get(&key).cloned().unwrap_or_default()));
            }
        } else if let Some(secret) = &source.secret {
            let data = self
                .secret(&secret.name, secret.optional == Some(true))
                .await?;
            for (key, path) in items(&data, secret.items.as_deref()) {
                files.push((path, data.get(&key).cloned().unwrap_or_default()));
            }
        } else if let Some(downward) = &source.downward_api {
            for item in downward.items.iter().flatten() {
                let field = item.field_ref.as_ref().map(|f| f.field_path.as_str());
                let value = field
                    .and_then(|f| spec::field_value(&self.pod, &self.ctx.node, f))
                    .ok_or_else(|| {
                        (
                            "CreateContainerConfigError".to_string(),
                            format!("projected downwardAPI {}: unsupported field", item.path),
                        )
                    })?;
                files.push((item.path.clone(), value.into_bytes()));
            }
        } else {
            tracing::warn!(pod = %self.key(), "unsupported projected volume source: skipped");
        }
        Ok(files)
    }

    /// A token of the pod's ServiceAccount from the TokenRequest API, bound to this pod (as the
    /// kubelet requests it: the projection's audience, else the apiserver's default audiences).
    async fn service_account_token(
        &self,
        projection: &ServiceAccountTokenProjection,
    ) -> Result<Vec<u8>, (String, String)> {
        let account = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: projection.audience.clone().map(|a| vec![a]),
                expiration_seconds: Some(projection.expiration_seconds.unwrap_or(3600)),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(self.name.clone()),
                    uid: Some(self.uid.clone()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let err = |m: String| ("CreateContainerConfigError".to_string(), m);
        let answer = api
            .create_token_request(&account, &PostParams::default(), &request)
            .await
            .map_err(|e| err(format!("token of serviceaccount {account:?}: {e}")))?;
        answer
            .status
            .and_then(|s| s.token)
            .filter(|t| !t.is_empty())
            .map(String::into_bytes)
            .ok_or_else(|| err(format!("token of serviceaccount {account:?}: empty answer")))
    }

    /// A container run from an image archive: unpacks the image into the pod's directory and
    /// returns its argv, its env (the image's under `pod_env`) and its confinement.
    fn confine(
        &self,
        pod: &k8s_openapi::api::core::v1::PodSpec,
        c: &Container,
        archive: &std::path::Path,
        pod_env: BTreeMap<String, String>,
        binds: Vec<Bind>,
    ) -> Result<Confined, (String, String)> {
        let rootfs = self.dir.join("rootfs").join(&c.name);
        let scratch = self.dir.join("scratch").join(&c.name);
        let image = oci::unpack(archive, &rootfs, &scratch)
            .map_err(|e| ("CreateContainerError".to_string(), e))?;
        let env = oci::env(&image, &pod_env);
        let expand = |v: &Option<Vec<String>>| {
            v.as_ref()
                .map(|v| v.iter().map(|a| spec::expand(a, &env)).collect::<Vec<_>>())
        };
        let argv: Vec<String> = oci::argv(
            &image,
            expand(&c.command).as_deref(),
            expand(&c.args).as_deref(),
        )
        .into_iter()
        .map(|a| rewrite::rewrite_arg(&a, &self.ports))
        .collect();
        let security = SecuritySettings::of(pod, c);
        let read = |rel: &str| std::fs::read_to_string(rootfs.join(rel)).unwrap_or_default();
        let (uid, gid) = oci::user(
            &image.user,
            security.user,
            &read("etc/passwd"),
            &read("etc/group"),
        )
        .map_err(|e| ("CreateContainerConfigError".to_string(), e))?;
        let working_dir = c.working_dir.clone().unwrap_or(image.working_dir.clone());
        let confinement = Confinement {
            rootfs,
            binds,
            uid,
            gid,
            groups: security.groups,
            working_dir,
            read_only_root: security.read_only_root,
        };
        Ok((argv, env, confinement))
    }

    fn start_container(&mut self, i: usize) {
        let key = self.key();
        let c = &mut self.containers[i];
        c.restart_at = None;
        c.ready = false;
        for p in [c.probe.as_mut(), c.liveness.as_mut()]
            .into_iter()
            .flatten()
        {
            p.reset();
        }
        match process::spawn_confined(
            &c.argv,
            &c.env,
            &c.cwd,
            &c.log,
            c.cgroup.as_ref(),
            c.confinement.as_ref(),
        ) {
            Ok(child) => {
                c.pid = child.id();
                c.child = Some(child);
                c.started = true;
                c.state = ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(now()),
                    }),
                    ..Default::default()
                };
                if c.probe.is_none() {
                    c.ready = true;
                }
                tracing::info!(
                    pod = %key,
                    container = %c.spec.name,
                    pid = ?c.pid,
                    command = %process::shell_words(&c.argv),
                    env = ?c.env.keys().collect::<Vec<_>>(),
                    ports = ?self.ports,
                    log = %c.log.display(),
                    "container started"
                );
            }
            Err(e) => {
                c.started = true;
                tracing::error!(pod = %key, container = %c.spec.name, runs = ?c.runs, error = %e, "container could not start");
                c.state = ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 128,
                        reason: Some("StartError".into()),
                        message: Some(e.to_string()),
                        finished_at: Some(now()),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                self.schedule_restart(i, 128);
            }
        }
    }

    fn on_exit(&mut self, i: usize, status: std::io::Result<ExitStatus>) {
        use std::os::unix::process::ExitStatusExt;
        let key = self.key();
        let c = &mut self.containers[i];
        c.child = None;
        c.ready = false;
        let (code, signal) = match &status {
            Ok(s) => (
                s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
                s.signal(),
            ),
            Err(_) => (128, None),
        };
        let started_at = c.state.running.as_ref().and_then(|r| r.started_at.clone());
        tracing::info!(pod = %key, container = %c.spec.name, pid = ?c.pid, exit_code = code, ?signal, "container exited");
        c.state = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                signal,
                reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                message: status.as_ref().err().map(|e| e.to_string()).or_else(|| {
                    // As the kubelet does for FallbackToLogsOnError: a failed container's message
                    // is the tail of its log.
                    let fallback = c.spec.termination_message_policy.as_deref()
                        == Some("FallbackToLogsOnError");
                    (code != 0 && fallback).then(|| log_tail(&c.log)).flatten()
                }),
                started_at,
                finished_at: Some(now()),
                container_id: c.pid.map(|p| format!("podrunner://{p}")),
            }),
            ..Default::default()
        };
        self.schedule_restart(i, code);
    }

    fn schedule_restart(&mut self, i: usize, code: i32) {
        let restart = match self.restart_policy.as_str() {
            "Never" => false,
            "OnFailure" => code != 0,
            _ => true,
        };
        if restart {
            let key = self.key();
            let c = &mut self.containers[i];
            let backoff =
                Duration::from_secs(1u64 << c.restarts.clamp(0, 5)).min(Duration::from_secs(30));
            c.restart_at = Some(Instant::now() + backoff);
            tracing::info!(pod = %key, container = %c.spec.name, ?backoff, "restarting after backoff");
        }
    }

    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        self.containers
            .iter()
            .flat_map(|c| {
                let probe = c.child.as_ref().and(c.probe.as_ref()).map(|p| p.next);
                let liveness = c.child.as_ref().and(c.liveness.as_ref()).map(|p| p.next);
                [probe, liveness, c.restart_at]
            })
            .chain([self.status_retry])
            .flatten()
            .fold(far, Instant::min)
    }

    async fn on_timer(&mut self) {
        let now_i = Instant::now();
        self.status_retry = None;
        for i in 0..self.containers.len() {
            if self.containers[i].restart_at.is_some_and(|t| t <= now_i) {
                let c = &mut self.containers[i];
                c.restarts += 1;
                c.last_state = Some(c.state.clone());
                self.start_container(i);
                continue;
            }
            self.run_readiness_probe(i, now_i).await;
            self.run_liveness_probe(i, now_i).await;
        }
    }

    async fn run_readiness_probe(&mut self, i: usize, now_i: Instant) {
        let key = self.key();
        let c = &mut self.containers[i];
        let (Some(_), Some(probe)) = (c.child.as_ref(), c.probe.as_mut()) else {
            return;
        };
        if probe.next > now_i {
            return;
        }
        let was = c.ready;
        if let Some(ready) = probe.run().await {
            c.ready = ready;
        }
        // Until first ready, probe every second; then at the probe's period.
        probe.next = Instant::now()
            + if c.ready {
                probe.period
            } else {
                Duration::from_secs(1).min(probe.period)
            };
        if was != c.ready {
            tracing::info!(pod = %key, container = %c.spec.name, ready = c.ready, "readiness changed");
        }
    }

    /// A liveness probe that fails `failureThreshold` times in a row stops the container (the
    /// pod's grace period applies); its restart policy then decides, as on a kubelet.
    async fn run_liveness_probe(&mut self, i: usize, now_i: Instant) {
        let key = self.key();
        let grace = self.grace();
        let c = &mut self.containers[i];
        let (Some(_), Some(probe)) = (c.child.as_ref(), c.liveness.as_mut()) else {
            return;
        };
        if probe.next > now_i {
            return;
        }
        let verdict = probe.run().await;
        probe.next = Instant::now() + probe.period;
        if verdict != Some(false) {
            return;
        }
        tracing::warn!(pod = %key, container = %c.spec.name, failures = probe.failures, "liveness probe failed: stopping the container");
        let Some(mut child) = c.child.take() else {
            return;
        };
        let status = process::stop(&mut child, grace).await;
        c.child = Some(child);
        let status = status.ok_or_else(|| std::io::Error::other("lost the process's exit status"));
        self.on_exit(i, status);
    }

    /// SIGTERM to every process, SIGKILL to the groups of those still running after `grace`.
    /// Forwards `<pod IP>:<container port>` to each port's host port (once per port). A port that
    /// cannot be bound is logged and left unforwarded: the pod still runs, as with a CNI hiccup.
    async fn forward_ports(&mut self) {
        for (&port, &host) in &self.ports {
            if self.forwarders.contains_key(&port) {
                continue;
            }
            let listener = match tokio::net::TcpListener::bind((self.ip, port)).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(pod = %self.key(), ip = %self.ip, port, error = %e, "cannot listen on the pod IP");
                    continue;
                }
            };
            self.forwarders
                .insert(port, tokio::spawn(forward(listener, host)));
        }
    }

    async fn stop_processes(&mut self, grace: Duration) {
        let running: Vec<&mut Ctr> = self
            .containers
            .iter_mut()
            .filter(|c| c.child.is_some())
            .collect();
        if running.is_empty() {
            return;
        }
        tracing::info!(pod = %format!("{}/{}", self.ns, self.name), ?grace, "stopping: SIGTERM");
        for c in &running {
            if let Some(child) = &c.child {
                process::terminate(child);
            }
        }
        let deadline = Instant::now() + grace;
        let key = format!("{}/{}", self.ns, self.name);
        for c in running {
            if let Some(mut child) = c.child.take() {
                let left = deadline.saturating_duration_since(Instant::now());
                let status = process::stop(&mut child, left).await;
                tracing::info!(pod = %key, container = %c.spec.name, pid = ?c.pid, ?status, "process ended");
            }
        }
    }

    /// Confirms the deletion, as the kubelet does once the containers are gone.
    async fn confirm_deletion(&self) {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&self.name, &dp).await {
            Ok(_) => tracing::info!(pod = %self.key(), "deletion confirmed"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => {
                tracing::warn!(pod = %self.key(), error = %e, "could not confirm the deletion")
            }
        }
    }

    fn phase(&self) -> &'static str {
        if self.waiting.is_some() || self.containers.iter().all(|c| !c.started) {
            return "Pending";
        }
        let active = self
            .containers
            .iter()
            .any(|c| c.child.is_some() || c.restart_at.is_some() || !c.started);
        if active {
            return "Running";
        }
        let all_ok = self.containers.iter().all(|c| {
            c.state
                .terminated
                .as_ref()
                .is_some_and(|t| t.exit_code == 0)
        });
        if all_ok { "Succeeded" } else { "Failed" }
    }

    fn condition(&mut self, type_: &'static str, value: bool) -> PodCondition {
        let entry = self
            .conditions
            .entry(type_)
            .or_insert_with(|| (value, now()));
        if entry.0 != value {
            *entry = (value, now());
        }
        PodCondition {
            type_: type_.to_string(),
            status: if value { "True" } else { "False" }.to_string(),
            last_transition_time: Some(entry.1.clone()),
            ..Default::default()
        }
    }

    fn status(&mut self) -> PodStatus {
        let phase = self.phase();
        let terminal = matches!(phase, "Succeeded" | "Failed");
        let ready =
            !terminal && !self.containers.is_empty() && self.containers.iter().all(|c| c.ready);
        let started = self.waiting.is_none();
        let mut statuses: Vec<ContainerStatus> = match &self.waiting {
            Some((reason, message)) => self
                .pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    state: Some(waiting(reason, message)),
                    ..Default::default()
                })
                .collect(),
            None => self
                .containers
                .iter()
                .map(|c| ContainerStatus {
                    name: c.spec.name.clone(),
                    image: c.spec.image.clone().unwrap_or_default(),
                    image_id: format!("podrunner://{}", c.runs.path().display()),
                    container_id: c.pid.map(|p| format!("podrunner://{p}")),
                    ready: c.ready,
                    started: Some(c.child.is_some()),
                    restart_count: c.restarts,
                    state: Some(match c.restart_at {
                        Some(_) if c.child.is_none() => waiting(
                            "CrashLoopBackOff",
                            &format!("back-off restarting container {}", c.spec.name),
                        ),
                        _ => c.state.clone(),
                    }),
                    last_state: c.last_state.clone(),
                    ..Default::default()
                })
                .collect(),
        };
        statuses.sort_by(|a, b| a.name.cmp(&b.name));
        let conditions = vec![
            self.condition("PodReadyToStartContainers", started),
            self.condition("Initialized", true),
            self.condition("ContainersReady", ready),
            self.condition("Ready", ready),
        ];
        PodStatus {
            phase: Some(phase.to_string()),
            conditions: Some(conditions),
            container_statuses: Some(statuses),
            host_ip: Some("127.0.0.1".into()),
            host_ips: Some(vec![HostIP {
                ip: "127.0.0.1".into(),
            }]),
            pod_ip: Some(self.ip.to_string()),
            pod_ips: Some(vec![PodIP {
                ip: self.ip.to_string(),
            }]),
            start_time: Some(self.start_time.clone()),
            ..Default::default()
        }
    }

    /// Patches the status subresource when it changed since the last write.
    async fn write_status(&mut self) {
        let status = self.status();
        let body = serde_json::json!({ "status": status });
        if self.last_status.as_ref() == Some(&body) {
            return;
        }
        self.patch_status(&body).await;
    }

    async fn patch_status(&mut self, body: &serde_json::Value) {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let pp = PatchParams {
            field_manager: Some(MANAGER.to_string()),
            ..Default::default()
        };
        match api
            .patch_status(&self.name, &pp, &Patch::Strategic(body))
            .await
        {
            Ok(_) => {
                tracing::debug!(pod = %self.key(), phase = ?body["status"]["phase"], "status written");
                self.last_status = Some(body.clone());
            }
            Err(kube::Error::Api(e)) if e.code == 404 => self.last_status = Some(body.clone()),
            Err(e) => {
                tracing::warn!(pod = %self.key(), error = %e, "status write failed; retrying in 2s");
                self.status_retry = Some(Instant::now() + Duration::from_secs(2));
            }
        }
    }

    async fn write_lost_status(&mut self) {
        let statuses: Vec<ContainerStatus> = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 137,
                        reason: Some("ContainerStatusUnknown".into()),
                        message: Some("the pod runner restarted; the process is gone".into()),
                        finished_at: Some(now()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let body = serde_json::json!({"status": {
            "phase": "Failed",
            "reason": "PodrunnerRestarted",
            "message": "the pod runner restarted and lost this pod's processes",
            "containerStatuses": statuses,
        }});
        self.patch_status(&body).await;
    }
}

/// A container's argv, env and confinement, when it runs from an image archive.
type Confined = (Vec<String>, BTreeMap<String, String>, Confinement);

/// What the pod's and the container's security contexts say about a confined container (the
/// container's settings win over the pod's).
#[derive(Debug, Default, PartialEq)]
struct SecuritySettings {
    user: oci::UserOverride,
    /// `fsGroup` and `supplementalGroups`, as supplementary groups.
    groups: Vec<u32>,
    read_only_root: bool,
}

impl SecuritySettings {
    fn of(pod: &k8s_openapi::api::core::v1::PodSpec, c: &Container) -> SecuritySettings {
        let p = pod.security_context.clone().unwrap_or_default();
        let s = c.security_context.clone().unwrap_or_default();
        let groups = p
            .fs_group
            .into_iter()
            .chain(p.supplemental_groups.into_iter().flatten())
            .filter_map(|g| u32::try_from(g).ok())
            .collect::<BTreeSet<u32>>()
            .into_iter()
            .collect();
        SecuritySettings {
            user: oci::UserOverride {
                run_as_user: s.run_as_user.or(p.run_as_user),
                run_as_group: s.run_as_group.or(p.run_as_group),
                run_as_non_root: s.run_as_non_root.or(p.run_as_non_root) == Some(true),
            },
            groups,
            read_only_root: s.read_only_root_filesystem == Some(true),
        }
    }
}

/// A container's memory limit in bytes (`resources.limits.memory`).
fn memory_limit(c: &Container) -> Option<u64> {
    let q = c.resources.as_ref()?.limits.as_ref()?.get("memory")?;
    process::quantity_bytes(&q.0)
}

fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: (!message.is_empty()).then(|| message.to_string()),
        }),
        ..Default::default()
    }
}

/// Keys to write and their paths in the volume: every key, or only the listed items.
fn items(
    data: &BTreeMap<String, Vec<u8>>,
    listed: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
) -> Vec<(String, String)> {
    match listed {
        Some(items) if !items.is_empty() => items
            .iter()
            .map(|i| (i.key.clone(), i.path.clone()))
            .collect(),
        _ => data.keys().map(|k| (k.clone(), k.clone())).collect(),
    }
}

/// The probe `p` of container `c`, polling the host ports the container's ports map to.
fn probe_state(c: &Container, p: &Probe, ports: &PortMap) -> Option<ProbeState> {
    let host_port = |port| {
        let port = spec::probe_port(c, port)?;
        Some(ports.get(&port).copied().unwrap_or(port))
    };
    let kind = if let Some(h) = &p.http_get {
        ProbeKind::Http {
            port: host_port(&h.port)?,
            path: h.path.clone().unwrap_or_else(|| "/".into()),
            host: h.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
        }
    } else if let Some(t) = &p.tcp_socket {
        ProbeKind::Tcp {
            port: host_port(&t.port)?,
        }
    } else {
        tracing::warn!(container = %c.name, "only httpGet and tcpSocket probes are run; this one counts as passing");
        return None;
    };
    let secs = |v: Option<i32>, default: i32| {
        Duration::from_secs(u64::try_from(v.unwrap_or(default).max(1)).unwrap_or(1))
    };
    Some(ProbeState {
        kind,
        initial_delay: Duration::from_secs(
            u64::try_from(p.initial_delay_seconds.unwrap_or(0)).unwrap_or(0),
        ),
        period: secs(p.period_seconds, 10),
        timeout: secs(p.timeout_seconds, 1),
        success_threshold: p.success_threshold.unwrap_or(1).max(1),
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1),
        next: Instant::now(),
        successes: 0,
        failures: 0,
    })
}

impl ProbeState {
    /// Starts over, the first attempt after the initial delay (a container (re)started).
    fn reset(&mut self) {
        self.next = Instant::now() + self.initial_delay;
        self.successes = 0;
        self.failures = 0;
    }

    /// One attempt; `Some(true)` once `successThreshold` passed in a row, `Some(false)` once
    /// `failureThreshold` failed in a row, `None` in between.
    async fn run(&mut self) -> Option<bool> {
        if self.check().await {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        if self.successes >= self.success_threshold {
            Some(true)
        } else if self.failures >= self.failure_threshold {
            Some(false)
        } else {
            None
        }
    }

    async fn check(&self) -> bool {
        let attempt = async {
            match &self.kind {
                ProbeKind::Tcp { port } => tokio::net::TcpStream::connect(("127.0.0.1", *port))
                    .await
                    .is_ok(),
                ProbeKind::Http { port, path, host } => {
                    let host = if host == "localhost" || host.is_empty() {
                        "127.0.0.1"
                    } else {
                        host
                    };
                    let Ok(mut s) = tokio::net::TcpStream::connect((host, *port)).await else {
                        return false;
                    };
                    let req = format!(
                        "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: phoenix-e2e-podrunner\r\n\r\n"
                    );
                    if s.write_all(req.as_bytes()).await.is_err() {
                        return false;
                    }
                    let mut head = [0u8; 32];
                    let Ok(n) = s.read(&mut head).await else {
                        return false;
                    };
                    http_ok(&head[..n])
                }
            }
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or(false)
    }
}

/// An HTTP status line with a code in 200–399 (the kubelet's success range).
fn http_ok(head: &[u8]) -> bool {
    let line = String::from_utf8_lossy(head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .is_some_and(|code| (200..400).contains(&code))
}

/// The first running container to exit, or never if none runs.
fn wait_any(containers: &mut [Ctr]) -> BoxFuture<'_, (usize, std::io::Result<ExitStatus>)> {
    let waits: Vec<BoxFuture<'_, (usize, std::io::Result<ExitStatus>)>> = containers
        .iter_mut()
        .enumerate()
        .filter_map(|(i, c)| {
            let child = c.child.as_mut()?;
            Some(async move { (i, child.wait().await) }.boxed())
        })
        .collect();
    if waits.is_empty() {
        return futures::future::pending().boxed();
    }
    select_all(waits).map(|(out, _, _)| out).boxed()
}

/// The last 80 lines (at most 2 KiB) of a container log, as the kubelet's FallbackToLogsOnError.
fn log_tail(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    let start = tail.len().saturating_sub(2048);
    let start = (start..tail.len())
        .find(|i| tail.is_char_boundary(*i))
        .unwrap_or(tail.len());
    let tail = tail[start..].trim().to_string();
    (!tail.is_empty()).then_some(tail)
}

/// Copies every connection `listener` accepts to and from 127.0.0.1:`host_port`.
async fn forward(listener: tokio::net::TcpListener, host_port: u16) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", host_port)).await
            {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_status_lines() {
        assert!(http_ok(b"HTTP/1.0 200 OK\r\n"));
        assert!(http_ok(b"HTTP/1.1 302 Found"));
        assert!(!http_ok(b"HTTP/1.1 503 Service Unavailable"));
        assert!(!http_ok(b""));
    }

    #[test]
    fn container_security_context_wins_over_the_pods() {
        let pod: k8s_openapi::api::core::v1::PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [],
            "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true,
                                "fsGroup": 2000, "supplementalGroups": [3000, 2000]},
        }))
        .expect("pod spec");
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "securityContext": {"runAsUser": 10001, "readOnlyRootFilesystem": true},
        }))
        .expect("container");
        assert_eq!(
            SecuritySettings::of(&pod, &c),
            SecuritySettings {
                user: oci::UserOverride {
                    run_as_user: Some(10001),
                    run_as_group: Some(65532),
                    run_as_non_root: true,
                },
                groups: vec![2000, 3000],
                read_only_root: true,
            }
        );
        let bare = Container::default();
        let none = k8s_openapi::api::core::v1::PodSpec::default();
        assert_eq!(
            SecuritySettings::of(&none, &bare),
            SecuritySettings::default()
        );
    }

    #[test]
    fn items_default_to_every_key() {
        let data = BTreeMap::from([("config.yaml".to_string(), vec![])]);
        assert_eq!(
            items(&data, None),
            [("config.yaml".to_string(), "config.yaml".to_string())]
        );
        let listed = [k8s_openapi::api::core::v1::KeyToPath {
            key: "config.yaml".into(),
            path: "sub/c.yaml".into(),
            ..Default::default()
        }];
        assert_eq!(
            items(&data, Some(&listed)),
            [("config.yaml".to_string(), "sub/c.yaml".to_string())]
        );
    }
}
