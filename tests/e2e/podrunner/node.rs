//! The runner's Node: registered with generous capacity and a Ready condition, not annotated for
//! kwok (so kwok leaves it and its pods alone), kept fresh by a heartbeat Lease every 10 s and a
//! node status update every 30 s (like a kubelet), and deleted when the runner stops.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeSpec as CoreNodeSpec, Taint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::MANAGER;

const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_SECONDS: i32 = 40;
const LEASE_EVERY: Duration = Duration::from_secs(10);
const STATUS_EVERY: Duration = Duration::from_secs(30);

/// What the Node looks like.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// When the Ready condition last flipped (registration).
    pub ready_since: Timestamp,
}

impl NodeSpec {
    pub fn new(name: &str, extra_labels: &[String], taints: &[String]) -> Result<Self, String> {
        let mut labels = BTreeMap::from([
            ("type".to_string(), "local".to_string()),
            ("phoenix.io/local".to_string(), "true".to_string()),
            ("kubernetes.io/hostname".to_string(), name.to_string()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            (
                "kubernetes.io/arch".to_string(),
                match std::env::consts::ARCH {
                    "x86_64" => "amd64",
                    "aarch64" => "arm64",
                    other => other,
                }
                .to_string(),
            ),
        ]);
        for l in extra_labels {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| format!("--node-label {l:?} is not KEY=VALUE"))?;
            labels.insert(k.to_string(), v.to_string());
        }
        let taints = taints
            .iter()
            .map(|t| {
                parse_taint(t).ok_or_else(|| format!("--taint {t:?} is not KEY[=VALUE]:EFFECT"))
            })
            .collect::<Result<_, _>>()?;
        Ok(NodeSpec {
            name: name.to_string(),
            labels,
            taints,
            ready_since: Timestamp::now(),
        })
    }

    fn node(&self) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(self.labels.clone()),
                annotations: Some(BTreeMap::from([(
                    "phoenix.io/podrunner".to_string(),
                    "phoenix-e2e-podrunner runs this node's pods as local processes".to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(CoreNodeSpec {
                taints: (!self.taints.is_empty()).then(|| self.taints.clone()),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn status(&self) -> serde_json::Value {
        let now = Time(Timestamp::now());
        let since = Time(self.ready_since);
        let capacity =
            json!({"cpu": "64", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"});
        let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(since.clone()),
        };
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name},
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "conditions": [
                    condition("Ready", "True", "KubeletReady", "phoenix-e2e-podrunner is running"),
                    condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "no pressure checks"),
                    condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no pressure checks"),
                    condition("PIDPressure", "False", "KubeletHasSufficientPID", "no pressure checks"),
                ],
                "addresses": [
                    NodeAddress { type_: "InternalIP".into(), address: "127.0.0.1".into() },
                    NodeAddress { type_: "Hostname".into(), address: self.name.clone() },
                ],
                "nodeInfo": {
                    "architecture": self.labels.get("kubernetes.io/arch"),
                    "operatingSystem": "linux",
                    "kubeletVersion": "v0.0.0-phoenix-e2e-podrunner",
                    "kubeProxyVersion": "",
                    "containerRuntimeVersion": "phoenix-e2e-podrunner://local-processes",
                    "kernelVersion": "", "osImage": "", "bootID": "", "machineID": "", "systemUUID": "",
                },
            },
        })
    }
}

/// `key=value:Effect` or `key:Effect`.
fn parse_taint(s: &str) -> Option<Taint> {
    let (kv, effect) = s.rsplit_once(':')?;
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute").then(|| Taint {
        key: key.to_string(),
        value,
        effect: effect.to_string(),
        time_added: None,
    })
}

/// Creates or takes over the Node (server-side apply), makes it Ready and returns its uid.
pub async fn register(client: &Client, spec: &NodeSpec) -> Result<String, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let pp = PatchParams::apply(MANAGER).force();
    let mut node = serde_json::to_value(spec.node()).unwrap_or_default();
    node["apiVersion"] = json!("v1");
    node["kind"] = json!("Node");
    let uid = nodes
        .patch(&spec.name, &pp, &Patch::Apply(&node))
        .await?
        .uid()
        .unwrap_or_default();
    nodes
        .patch_status(&spec.name, &pp, &Patch::Apply(&spec.status()))
        .await?;
    renew_lease(client, spec, &uid).await?;
    Ok(uid)
}

async fn renew_lease(client: &Client, spec: &NodeSpec, uid: &str) -> Result<(), kube::Error> {
    let uid = uid.to_string();
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            namespace: Some(LEASE_NAMESPACE.to_string()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: spec.name.clone(),
                uid,
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(spec.name.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..Default::default()
        }),
    };
    let mut body = serde_json::to_value(&lease).unwrap_or_default();
    body["apiVersion"] = json!("coordination.k8s.io/v1");
    body["kind"] = json!("Lease");
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    leases
        .patch(
            &spec.name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    Ok(())
}

/// Renews the Lease every 10 s and the node status every 30 s, forever (aborted on shutdown).
pub async fn heartbeat(client: Client, spec: NodeSpec, uid: String) {
    let mut lease = tokio::time::interval(LEASE_EVERY);
    let mut status = tokio::time::interval(STATUS_EVERY);
    lease.tick().await;
    status.tick().await;
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        tokio::select! {
            _ = lease.tick() => {
                if let Err(e) = renew_lease(&client, &spec, &uid).await {
                    tracing::warn!(error = %e, "node lease renewal failed");
                }
            }
            _ = status.tick() => {
                let pp = PatchParams::apply(MANAGER).force();
                if let Err(e) = nodes.patch_status(&spec.name, &pp, &Patch::Apply(&spec.status())).await {
                    tracing::warn!(error = %e, "node status update failed");
                }
            }
        }
    }
}

/// Deletes the Node (its Lease goes with it: owner reference).
pub async fn deregister(client: &Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.delete(name, &DeleteParams::default()).await {
        Ok(_) => tracing::info!(node = %name, "node deleted"),
        Err(e) => tracing::warn!(node = %name, error = %e, "could not delete the node"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_parse() {
        let t = parse_taint("phoenix.io/local=true:NoSchedule").expect("taint");
        assert_eq!(
            (t.key.as_str(), t.value.as_deref(), t.effect.as_str()),
            ("phoenix.io/local", Some("true"), "NoSchedule")
        );
        assert_eq!(parse_taint("k:NoExecute").map(|t| t.value), Some(None));
        assert!(parse_taint("k=v:Sometimes").is_none());
        assert!(parse_taint("k=v").is_none());
    }

    #[test]
    fn node_is_labelled_local_and_not_for_kwok() {
        let spec = NodeSpec::new("n1", &["extra=1".into()], &[]).expect("spec");
        let node = spec.node();
        let labels = node.metadata.labels.expect("labels");
        assert_eq!(labels["type"], "local");
        assert_eq!(labels["phoenix.io/local"], "true");
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["extra"], "1");
        assert!(
            !node
                .metadata
                .annotations
                .expect("annotations")
                .contains_key("kwok.x-k8s.io/node")
        );
        assert_eq!(spec.status()["status"]["conditions"][0]["type"], "Ready");
    }
}
