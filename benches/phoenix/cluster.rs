//! The local control plane the bench runs on (started by scripts/bench.sh with
//! tests/e2e/cluster.sh in a private directory): its env file, a client, kubectl, and the
//! apiserver's own request counters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use crate::support::Result;

/// The cluster's env file (`KUBECONFIG=…` lines), parsed.
pub struct Cluster {
    pub env: BTreeMap<String, String>,
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub prometheus_url: String,
    pub remote_write_url: String,
}

impl Cluster {
    /// Reads the env file `cluster.sh up` wrote.
    pub fn from_env_file(path: &Path) -> Result<Cluster> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("read cluster env {}: {e}", path.display()))?;
        let env: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .ok_or_else(|| format!("{} lacks {k}", path.display()))
        };
        Ok(Cluster {
            kubeconfig: get("KUBECONFIG")?.into(),
            kubectl: get("KUBECTL")?.into(),
            prometheus_url: get("PROMETHEUS_URL")?,
            remote_write_url: get("PROMETHEUS_REMOTE_WRITE_URL")?,
            env,
        })
    }

    pub fn var(&self, key: &str) -> Option<&str> {
        self.env.get(key).map(String::as_str)
    }

    /// An admin client.
    pub async fn client(&self) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// `kubectl <args>`; its stdout, or an error with its stderr.
    pub fn kubectl_out(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl().args(args).output()?;
        if !out.status.success() {
            return Err(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Installs (or updates) the CRDs in `dir` and waits until they are established.
    pub fn install_crds(&self, dir: &Path) -> Result<()> {
        let dir = dir.to_string_lossy();
        self.kubectl_out(&["apply", "--server-side", "--force-conflicts", "-f", &dir])?;
        self.kubectl_out(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            &dir,
        ])?;
        Ok(())
    }

    /// The apiserver's `apiserver_request_total` counters now.
    pub fn request_counts(&self) -> Result<RequestCounts> {
        let text = self.kubectl_out(&["--request-timeout=60s", "get", "--raw", "/metrics"])?;
        Ok(RequestCounts::parse(&text))
    }

    /// Resident memory of the control plane's etcd and kube-apiserver now, bytes (from the pid
    /// files cluster.sh keeps in its directory).
    /// The apiserver's port on 127.0.0.1 (from APISERVER_URL).
    pub fn apiserver_port(&self) -> Option<u16> {
        self.env
            .get("APISERVER_URL")?
            .rsplit_once(':')?
            .1
            .trim_end_matches('/')
            .parse()
            .ok()
    }

    pub fn control_plane_rss(&self) -> (u64, u64) {
        let rss = |component: &str| -> u64 {
            self.var("E2E_DIR")
                .and_then(|dir| {
                    std::fs::read_to_string(Path::new(dir).join(format!("pids/{component}.pid")))
                        .ok()
                })
                .and_then(|pid| pid.trim().parse::<u32>().ok())
                .and_then(|pid| crate::support::status_bytes(pid, "VmRSS"))
                .unwrap_or(0)
        };
        (rss("etcd"), rss("kube-apiserver"))
    }

    /// A binary next to kubectl (kube-apiserver), for its version.
    pub fn k8s_bin(&self, name: &str) -> PathBuf {
        self.kubectl
            .parent()
            .map(|d| d.join(name))
            .unwrap_or_else(|| name.into())
    }
}

/// Creates `name` (fine if it exists).
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Raises the kwok nodes' capacity to kwok's own defaults (1k CPUs, 1 TiB, 1M pods): cluster.sh
/// gives each node 16 CPUs and 110 pods, which would leave most of the scale test's collector and
/// simulator pods (100m CPU requests each) unschedulable. Only this bench's private cluster is
/// changed. Returns the node names.
pub async fn raise_node_capacity(client: &Client) -> Result<Vec<String>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = nodes
        .list(&ListParams::default().labels("type=kwok"))
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let capacity = json!({"cpu": "1k", "memory": "1Ti", "pods": "1M"});
    let patch = json!({"status": {"capacity": capacity, "allocatable": capacity}});
    for name in &names {
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(names)
}

/// Label set of one counter.
pub type Labels = BTreeMap<String, String>;

/// `apiserver_request_total` at one instant: one value per label set.
#[derive(Clone, Debug, Default)]
pub struct RequestCounts(pub Vec<(Labels, f64)>);

/// Verbs that change state.
pub const MUTATING: &[&str] = &[
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

impl RequestCounts {
    /// Parses the Prometheus text format, keeping `apiserver_request_total` only.
    pub fn parse(text: &str) -> RequestCounts {
        let mut out = Vec::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            out.push((parse_labels(labels), value));
        }
        RequestCounts(out)
    }

    /// `self - before`, per label set (a label set absent before counts from 0).
    pub fn since(&self, before: &RequestCounts) -> RequestCounts {
        let old: BTreeMap<&Labels, f64> = before.0.iter().map(|(l, v)| (l, *v)).collect();
        RequestCounts(
            self.0
                .iter()
                .map(|(l, v)| (l.clone(), v - old.get(l).copied().unwrap_or(0.0)))
                .filter(|(_, v)| *v != 0.0)
                .collect(),
        )
    }

    pub fn sum(&self, keep: impl Fn(&Labels) -> bool) -> f64 {
        // `+ 0.0`: an empty float sum is -0.0.
        self.0
            .iter()
            .filter(|(l, _)| keep(l))
            .map(|(_, v)| v)
            .sum::<f64>()
            + 0.0
    }

    /// Totals per `verb group/resource[/subresource] code`, largest first: what a delta was made of.
    pub fn breakdown(&self, keep: impl Fn(&Labels) -> bool, max: usize) -> String {
        let mut by: BTreeMap<String, f64> = BTreeMap::new();
        for (l, v) in self.0.iter().filter(|(l, _)| keep(l)) {
            *by.entry(format!(
                "{} {} {}",
                label(l, "verb"),
                resource_path(l),
                label(l, "code")
            ))
            .or_default() += v;
        }
        let mut items: Vec<(String, f64)> = by.into_iter().collect();
        items.sort_by(|a, b| b.1.total_cmp(&a.1));
        items
            .into_iter()
            .take(max)
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn label<'a>(l: &'a Labels, key: &str) -> &'a str {
    l.get(key).map(String::as_str).unwrap_or("")
}

/// `group/resource/subresource` (core group shown as `core`).
pub fn resource_path(l: &Labels) -> String {
    let group = match label(l, "group") {
        "" => "core",
        g => g,
    };
    match label(l, "subresource") {
        "" => format!("{group}/{}", label(l, "resource")),
        s => format!("{group}/{}/{s}", label(l, "resource")),
    }
}

pub fn is_mutating(l: &Labels) -> bool {
    MUTATING.contains(&label(l, "verb"))
}

/// Requests on what only Phoenix writes or reads in these clusters: its own kinds, the main
/// resource (not `/status`, which the kube controllers write) of DaemonSets, Deployments and Jobs,
/// ConfigMaps, Secrets, and Node reads (the Simulation controller counts target nodes). Events are
/// left out: the scheduler and controllers write them too (see [`is_event`]).
pub fn is_operator_resource(l: &Labels) -> bool {
    let (group, resource, sub) = (
        label(l, "group"),
        label(l, "resource"),
        label(l, "subresource"),
    );
    if group == "phoenix.io" {
        return true;
    }
    if !sub.is_empty() {
        return false;
    }
    match (group, resource) {
        ("apps", "daemonsets" | "deployments") | ("batch", "jobs") => true,
        ("", "configmaps" | "secrets") => true,
        ("", "nodes") => !is_mutating(l),
        _ => false,
    }
}

pub fn is_event(l: &Labels) -> bool {
    label(l, "resource") == "events"
}

/// `k="v",k2="v2"` → map (values in these counters never contain quotes or commas).
fn parse_labels(s: &str) -> Labels {
    let mut out = Labels::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else { break };
        out.insert(
            key.trim_start_matches(',').trim().to_string(),
            after[..end].to_string(),
        );
        rest = &after[end + 1..];
    }
    out
}

/// The first line of `<bin> <args>`'s output (stdout, else stderr), or `unknown`.
pub fn version_of(bin: &Path, args: &[&str]) -> String {
    Command::new(bin)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}
