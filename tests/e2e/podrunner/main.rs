//! phoenix-e2e-podrunner: a kubelet stand-in for Phoenix's own pods on the local control plane
//! (DESIGN.md §5; test and demo only). It registers one Node, runs the pods bound to it as local
//! processes of this machine, writes their status back, and stops them when they are deleted.
//!
//! ```text
//! phoenix-e2e-podrunner --collector-bin "$COLLECTOR_BIN" --simulator-bin target/debug/phoenix-simulator
//!     [--node-name phoenix-local] [--node-label K=V]... [--taint K=V:EFFECT]...
//!     [--image-map SUBSTRING=PATH]... [--image-archive NAME=ARCHIVE]...
//!     [--state-dir DIR] [--stop-on-stdin-eof] [--keep-node]
//! ```
//! The cluster comes from `KUBECONFIG`. What the runner does in the kubelet's place, and what it
//! rewrites so that pods written for their own network namespace and mounts run side by side on
//! one host, is described in [`pod`] and [`rewrite`].
//!
//! Lifetime: SIGTERM, SIGINT or (with `--stop-on-stdin-eof`) EOF on stdin stop every process it
//! started (SIGTERM, then SIGKILL after the grace period), delete the pods bound to the node and the
//! Node itself (as the pod garbage collector would for a deleted node) and exit. Every child runs
//! in its own process group with `PR_SET_PDEATHSIG(SIGKILL)`, so nothing outlives the runner even
//! when it is killed.

mod node;
mod oci;
mod pod;
mod process;
mod rewrite;
mod spec;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::pod::{PodWorker, RunnerContext, Stop};
use crate::spec::ImageMap;

/// Field manager of every write the runner makes.
pub const MANAGER: &str = "phoenix-podrunner";

/// A kubelet stand-in that runs Phoenix's collector and simulator pods as local processes.
#[derive(Clone, Debug, Parser)]
#[command(name = "phoenix-e2e-podrunner")]
struct Cli {
    /// Name of the Node to register and run the pods of.
    #[arg(long, default_value = "phoenix-local")]
    node_name: String,
    /// Extra Node labels `KEY=VALUE` (repeatable). Always set: type=local, phoenix.io/local=true,
    /// kubernetes.io/hostname=<node>, kubernetes.io/os=linux.
    #[arg(long = "node-label", value_name = "KEY=VALUE")]
    node_labels: Vec<String>,
    /// Node taints `KEY[=VALUE]:EFFECT` (repeatable), e.g. to keep other workloads of a shared
    /// cluster (DaemonSets without a nodeSelector) off the node.
    #[arg(long = "taint", value_name = "KEY[=VALUE]:EFFECT")]
    taints: Vec<String>,
    /// Image rule `SUBSTRING=PATH` (repeatable or comma-separated): a container whose image
    /// (without tag or digest) contains SUBSTRING runs PATH. Checked in order, before the rules of
    /// --collector-bin and --simulator-bin.
    #[arg(
        long = "image-map",
        value_name = "SUBSTRING=PATH",
        value_delimiter = ','
    )]
    image_map: Vec<String>,
    /// Image archive rule `NAME=ARCHIVE` (repeatable or comma-separated): a container whose image
    /// is named NAME (the last path segment of its repository: `ghcr.io/org/NAME:tag`) runs from
    /// the OCI image archive ARCHIVE (e.g. target/images/phoenix-operator.tar from `just images`):
    /// its layers unpacked into a root filesystem of the pod's own, its entrypoint and cmd run
    /// chrooted there as the image's user, with the ServiceAccount files and
    /// `KUBERNETES_SERVICE_HOST/PORT` an in-cluster client needs. Needs root. Checked first.
    #[arg(
        long = "image-archive",
        value_name = "NAME=ARCHIVE",
        value_delimiter = ','
    )]
    image_archives: Vec<String>,
    /// The collector binary: images containing `otelcol` or `opentelemetry-collector`.
    #[arg(long, env = "COLLECTOR_BIN")]
    collector_bin: Option<PathBuf>,
    /// The simulator binary: images containing `simulator` or `phoenix` (checked after the
    /// collector's rules, so `otelcol-phoenix:local` is a collector). Default: `phoenix-simulator`
    /// next to this binary, if it exists.
    #[arg(long)]
    simulator_bin: Option<PathBuf>,
    /// Where pod directories (`pods/<namespace>_<pod>/volumes/<volume>/...`) and container logs
    /// (`logs/<namespace>_<pod>_<container>.log`) go.
    /// Default: target/e2e/podrunner/<node> in the repository.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Stop (as on SIGTERM) when stdin reaches EOF: a parent keeps a pipe open for as long as it
    /// wants the runner.
    #[arg(long)]
    stop_on_stdin_eof: bool,
    /// At most this long, in seconds, for the pods' processes to exit after SIGTERM when the
    /// runner itself stops (a pod's own grace period applies when it is deleted).
    #[arg(long, default_value_t = 10)]
    shutdown_grace_seconds: u64,
    /// Leave the Node and its pods in the cluster on exit.
    #[arg(long)]
    keep_node: bool,
    /// Log filter.
    #[arg(long, env = "PHOENIX_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

impl Cli {
    fn image_map(&self) -> Result<ImageMap, String> {
        let mut map = ImageMap::default();
        for rule in &self.image_archives {
            let (name, path) = rule
                .split_once('=')
                .ok_or_else(|| format!("--image-archive {rule:?} is not NAME=ARCHIVE"))?;
            map.push_archive(name, absolute(PathBuf::from(path))?);
        }
        for rule in &self.image_map {
            let (pattern, path) = rule
                .split_once('=')
                .ok_or_else(|| format!("--image-map {rule:?} is not SUBSTRING=PATH"))?;
            map.push(pattern, absolute(PathBuf::from(path))?);
        }
        if let Some(bin) = &self.collector_bin {
            let bin = absolute(bin.clone())?;
            map.push("otelcol", bin.clone());
            map.push("opentelemetry-collector", bin);
        }
        let simulator = self.simulator_bin.clone().or_else(|| {
            let sibling = std::env::current_exe()
                .ok()?
                .with_file_name("phoenix-simulator");
            sibling.is_file().then_some(sibling)
        });
        if let Some(bin) = simulator {
            let bin = absolute(bin)?;
            map.push("simulator", bin.clone());
            map.push("phoenix", bin);
        }
        for (_, runs) in map.rules() {
            if !runs.path().is_file() {
                return Err(format!("{} is not a file", runs.path().display()));
            }
        }
        if map.rules().next().is_none() {
            return Err(
                "no image rules: give --collector-bin, --simulator-bin, --image-map or --image-archive"
                    .into(),
            );
        }
        Ok(map)
    }
}

/// The apiserver's host and port, as the pods' `KUBERNETES_SERVICE_HOST/PORT` (a kubelet sets them
/// to Service `kubernetes`'s cluster IP; here no proxy serves cluster IPs, so the pods get the
/// apiserver's own address, which its serving certificate covers).
fn apiserver_address(config: &kube::Config) -> Result<(String, u16), String> {
    let url = &config.cluster_url;
    let host = url
        .host()
        .ok_or_else(|| format!("apiserver URL {url} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_u16().unwrap_or(443);
    Ok((host, port))
}

fn absolute(path: PathBuf) -> Result<PathBuf, String> {
    std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log_level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // One thread: PR_SET_PDEATHSIG fires when the *thread* that spawned a child exits, so every
    // spawn must come from the thread that lives as long as the process.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "podrunner failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let images = cli.image_map()?;
    for (pattern, runs) in images.rules() {
        tracing::info!(image = %pattern, runs = ?runs, "image rule");
    }
    let state_dir = match &cli.state_dir {
        Some(dir) => absolute(dir.clone())?,
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/e2e/podrunner")
            .join(&cli.node_name),
    };
    // Pod directories of an earlier run are stale: no process outlives its runner.
    let pods_dir = state_dir.join("pods");
    if pods_dir.exists() {
        std::fs::remove_dir_all(&pods_dir)?;
    }
    std::fs::create_dir_all(&pods_dir)?;
    std::fs::create_dir_all(state_dir.join("logs"))?;
    let config = kube::Config::infer().await?;
    let apiserver = apiserver_address(&config)?;
    let client = Client::try_from(config)?;

    let node = node::NodeSpec::new(&cli.node_name, &cli.node_labels, &cli.taints)?;
    let uid = node::register(&client, &node).await?;
    tracing::info!(node = %cli.node_name, state_dir = %state_dir.display(), "node registered and Ready");
    let heartbeat = tokio::spawn(node::heartbeat(client.clone(), node.clone(), uid));

    let (stop_tx, mut stop_rx) = watch::channel(false);
    tokio::spawn(shutdown_signal(cli.stop_on_stdin_eof, stop_tx));

    let ctx = Arc::new(RunnerContext::new(
        client.clone(),
        cli.node_name.clone(),
        images,
        state_dir,
        apiserver,
    ));
    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", cli.node_name));
    let mut events = watcher::watcher(pods, config).boxed();
    let mut workers: BTreeMap<String, PodWorker> = BTreeMap::new();
    // Workers still stopping a pod that is gone.
    let mut stopping: Vec<PodWorker> = vec![];
    // Pods listed since the last (re)list started: those not in it are gone.
    let mut listed: Option<Vec<String>> = None;
    loop {
        tokio::select! {
            _ = stop_rx.changed() => break,
            event = events.next() => match event {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "pod watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Some(Ok(Event::Init)) => listed = Some(vec![]),
                Some(Ok(Event::InitApply(p))) => {
                    if let (Some(l), Some(uid)) = (listed.as_mut(), p.uid()) {
                        l.push(uid);
                    }
                    on_apply(&ctx, &mut workers, p);
                }
                Some(Ok(Event::InitDone)) => {
                    let present = listed.take().unwrap_or_default();
                    let gone: Vec<String> =
                        workers.keys().filter(|uid| !present.contains(uid)).cloned().collect();
                    for uid in gone {
                        if let Some(w) = workers.remove(&uid) {
                            w.stop(Stop::Vanished);
                            stopping.push(w);
                        }
                    }
                }
                Some(Ok(Event::Apply(p))) => on_apply(&ctx, &mut workers, p),
                Some(Ok(Event::Delete(p))) => {
                    if let Some(w) = p.uid().and_then(|uid| workers.remove(&uid)) {
                        w.stop(Stop::Vanished);
                        stopping.push(w);
                    }
                }
            },
        }
        stopping.retain(|w| !w.is_finished());
    }

    tracing::info!(
        pods = workers.len(),
        "stopping: terminating every pod process"
    );
    let grace = Duration::from_secs(cli.shutdown_grace_seconds);
    for w in workers.values() {
        w.stop(Stop::Shutdown { grace });
    }
    for w in workers.into_values().chain(stopping) {
        w.join().await;
    }
    heartbeat.abort();
    if !cli.keep_node {
        // The API may already be gone (the cluster stopped first): never wait long.
        let cleanup = deregister(&client, &cli.node_name);
        if tokio::time::timeout(Duration::from_secs(10), cleanup)
            .await
            .is_err()
        {
            tracing::warn!("could not remove the node and its pods within 10s");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

fn on_apply(ctx: &Arc<RunnerContext>, workers: &mut BTreeMap<String, PodWorker>, pod: Pod) {
    let Some(uid) = pod.uid() else { return };
    match workers.get(&uid) {
        Some(w) => w.update(pod),
        None => {
            workers.insert(uid, PodWorker::start(ctx.clone(), pod));
        }
    }
}

/// Deletes the Node and force-deletes the pods bound to it (the pod garbage collector's job for a
/// deleted node; kube-controller-manager here does not run it).
async fn deregister(client: &Client, node_name: &str) {
    node::deregister(client, node_name).await;
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node_name}")))
        .await;
    for p in list.map(|l| l.items).unwrap_or_default() {
        let (Some(ns), name) = (p.namespace(), p.name_any()) else {
            continue;
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let _ = api
            .delete(&name, &DeleteParams::default().grace_period(0))
            .await;
        tracing::info!(pod = %format!("{ns}/{name}"), "deleted (its node is going away)");
    }
}

/// Resolves on SIGTERM, SIGINT or, when asked, EOF on stdin.
async fn shutdown_signal(stdin_eof: bool, stop: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT; stopping");
        let _ = stop.send(true);
        return;
    };
    // A plain thread: tokio's stdin needs a feature this crate does not enable.
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    if stdin_eof {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = eof_tx.send(());
        });
    }
    let eof = async {
        if eof_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let why = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = eof => "stdin closed",
    };
    tracing::info!("{why}: shutting down");
    let _ = stop.send(true);
}
