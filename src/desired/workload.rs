//! The collector's generated objects: the immutable, hash-named ConfigMap and the DaemonSet or
//! Deployment that runs the collector pods. Pure functions of the Pipeline and its rendered config.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, HostPathVolumeSource, KeyToPath, ObjectFieldSelector, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::collector_config;
use super::labels::{self, Ownership};
use crate::crd::pipeline::{DeploymentMode, PipelineSpec};

/// Where the collector reads its config inside the pod.
pub const CONFIG_DIR: &str = "/etc/otelcol";
/// The config file's key in the ConfigMap (and name under [`CONFIG_DIR`]).
pub const CONFIG_FILE: &str = "config.yaml";
/// Where the host's /proc is mounted (read-only); the hostmetrics `root_path` is its parent.
pub const HOST_PROC: &str = "/hostfs/proc";
/// The hostmetrics receiver's `root_path`.
pub const HOST_ROOT: &str = "/hostfs";
/// The health_check extension's port (liveness and readiness).
pub const HEALTH_PORT: u16 = 13133;
/// Env var with the node name (downward API), used in the `phoenix_node` label.
pub const NODE_NAME_ENV: &str = "PHOENIX_NODE_NAME";
/// Env var with the pod name (downward API).
pub const POD_NAME_ENV: &str = "PHOENIX_POD_NAME";

/// Everything the builders need besides the Pipeline itself.
#[derive(Clone, Debug)]
pub struct CollectorParams<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub owner: OwnerReference,
    pub ownership: Ownership,
    /// The rendered collector config and the first 8 hex digits of its SHA-256.
    pub config_yaml: &'a str,
    pub config_hash: &'a str,
    /// Image when the spec names none.
    pub default_image: &'a str,
    /// Env vars the rendered config refers to besides the node/pod name (e.g. exporter headers
    /// from a Secret).
    pub extra_env: Vec<EnvVar>,
    /// The versions of the Secrets `extra_env` reads (see [`SECRETS_VERSION`]), when there are
    /// any.
    pub secrets_version: Option<String>,
    /// The UID (and GID, fsGroup) of this namespace's collectors: no other namespace's collectors
    /// share it (see `crate::desired::collector_uid`).
    pub uid: u32,
    /// A Secret and the keys of it the config reads as files under
    /// [`collector_config::remote_write::MOUNT_DIR`] (the remote-write TLS material).
    pub secret_files: Option<(String, Vec<String>)>,
}

/// Pod-template annotation with the resourceVersions of the Secrets the collector's env reads:
/// env vars are read once at container start, so a rotated Secret must roll the pods.
pub const SECRETS_VERSION: &str = "phoenix.io/secrets-version";

/// The collector workload: a DaemonSet (default) or a Deployment.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    DaemonSet(DaemonSet),
    Deployment(Deployment),
}

fn meta(name: String, p: &CollectorParams, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(p.namespace.to_string()),
        labels: Some(labels),
        owner_references: Some(vec![p.owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The immutable ConfigMap `<pipeline>-<hash8>` holding the rendered config.
pub fn config_map(p: &CollectorParams) -> ConfigMap {
    let mut labels = labels::pipeline_labels(p.name, &p.ownership, "collector-config");
    labels.insert(labels::CONFIG_HASH.to_string(), p.config_hash.to_string());
    ConfigMap {
        metadata: meta(labels::config_map_name(p.name, p.config_hash), p, labels),
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_string(),
            p.config_yaml.to_string(),
        )])),
        immutable: Some(true),
        ..ConfigMap::default()
    }
}

fn quantity(s: &str) -> Quantity {
    Quantity(s.to_string())
}

/// Requests 100m/128Mi and limits 500m/512Mi unless the spec says otherwise.
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), quantity("100m")),
            ("memory".to_string(), quantity("128Mi")),
        ])),
        limits: Some(BTreeMap::from([
            ("cpu".to_string(), quantity("500m")),
            ("memory".to_string(), quantity("512Mi")),
        ])),
        ..ResourceRequirements::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn health_probe(initial_delay: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/".to_string()),
            port: IntOrString::Int(i32::from(HEALTH_PORT)),
            ..Default::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(10),
        ..Default::default()
    }
}

/// The volume of the remote-write TLS files.
const REMOTE_WRITE_VOLUME: &str = "remote-write-credentials";

/// The Secret volume holding exactly `keys` of `secret`, read-only for the owner only.
fn secret_files_volume((secret, keys): &(String, Vec<String>)) -> Volume {
    Volume {
        name: REMOTE_WRITE_VOLUME.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.clone()),
            items: Some(
                keys.iter()
                    .map(|k| KeyToPath {
                        key: k.clone(),
                        path: k.clone(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            // The default 0644 (inside the pod only): the collector's UID is not the files' owner.
            optional: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The collector pod: own network namespace, host /proc read-only, non-root under its namespace's
/// own UID, GID and fsGroup, read-only root filesystem, no privilege escalation, all capabilities
/// dropped, RuntimeDefault seccomp.
pub fn pod_template(spec: &PipelineSpec, p: &CollectorParams) -> PodTemplateSpec {
    let mut env = vec![
        field_env(NODE_NAME_ENV, "spec.nodeName"),
        field_env(POD_NAME_ENV, "metadata.name"),
    ];
    env.extend(p.extra_env.iter().cloned());
    let container = Container {
        name: "otelcol".to_string(),
        image: Some(
            spec.deployment
                .image
                .clone()
                .unwrap_or_else(|| p.default_image.to_string()),
        ),
        args: Some(vec![format!("--config={CONFIG_DIR}/{CONFIG_FILE}")]),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("health".to_string()),
            container_port: i32::from(HEALTH_PORT),
            ..Default::default()
        }]),
        resources: Some(
            spec.deployment
                .resources
                .as_deref()
                .cloned()
                .unwrap_or_else(default_resources),
        ),
        volume_mounts: Some(
            [
                VolumeMount {
                    name: "config".to_string(),
                    mount_path: CONFIG_DIR.to_string(),
                    read_only: Some(true),
                    ..Default::default()
                },
                VolumeMount {
                    name: "host-proc".to_string(),
                    mount_path: HOST_PROC.to_string(),
                    read_only: Some(true),
                    ..Default::default()
                },
            ]
            .into_iter()
            .chain(p.secret_files.as_ref().map(|_| VolumeMount {
                name: REMOTE_WRITE_VOLUME.to_string(),
                mount_path: collector_config::remote_write::MOUNT_DIR.to_string(),
                read_only: Some(true),
                ..Default::default()
            }))
            .collect(),
        ),
        liveness_probe: Some(health_probe(5)),
        readiness_probe: Some(health_probe(1)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut annotations =
        BTreeMap::from([(labels::CONFIG_HASH.to_string(), p.config_hash.to_string())]);
    annotations.insert(
        "phoenix.io/config-map".to_string(),
        labels::config_map_name(p.name, p.config_hash),
    );
    if let Some(version) = &p.secrets_version {
        annotations.insert(SECRETS_VERSION.to_string(), version.clone());
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels::pipeline_labels(p.name, &p.ownership, "collector")),
            annotations: Some(annotations),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            host_network: Some(false),
            automount_service_account_token: Some(false),
            node_selector: (!spec.deployment.node_selector.is_empty())
                .then(|| spec.deployment.node_selector.to_btree()),
            tolerations: (!spec.deployment.tolerations.is_empty())
                .then(|| spec.deployment.tolerations.clone()),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(i64::from(p.uid)),
                run_as_group: Some(i64::from(p.uid)),
                fs_group: Some(i64::from(p.uid)),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            volumes: Some(
                [
                    Volume {
                        name: "config".to_string(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: labels::config_map_name(p.name, p.config_hash),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    Volume {
                        name: "host-proc".to_string(),
                        host_path: Some(HostPathVolumeSource {
                            path: "/proc".to_string(),
                            type_: Some("Directory".to_string()),
                        }),
                        ..Default::default()
                    },
                ]
                .into_iter()
                .chain(p.secret_files.as_ref().map(secret_files_volume))
                .collect(),
            ),
            termination_grace_period_seconds: Some(10),
            ..Default::default()
        }),
    }
}

/// The DaemonSet or Deployment `<pipeline>-collector`.
pub fn workload(spec: &PipelineSpec, p: &CollectorParams) -> Workload {
    let metadata = meta(
        labels::collector_name(p.name),
        p,
        labels::pipeline_labels(p.name, &p.ownership, "collector"),
    );
    let selector = LabelSelector {
        match_labels: Some(labels::collector_selector(p.name)),
        ..Default::default()
    };
    let template = pod_template(spec, p);
    match spec.deployment.mode {
        DeploymentMode::DaemonSet => Workload::DaemonSet(DaemonSet {
            metadata,
            spec: DaemonSetSpec {
                selector,
                template,
                ..Default::default()
            },
            ..Default::default()
        }),
        DeploymentMode::Deployment => Workload::Deployment(Deployment {
            metadata,
            spec: DeploymentSpec {
                replicas: Some(1),
                selector,
                template,
                ..Default::default()
            },
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::pipeline::PipelineTemplate;

    fn params(hash: &'static str) -> CollectorParams<'static> {
        CollectorParams {
            name: "demo",
            namespace: "ns",
            owner: OwnerReference {
                api_version: "phoenix.io/v1alpha1".into(),
                kind: "Pipeline".into(),
                name: "demo".into(),
                uid: "u1".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
            ownership: Ownership {
                experiment: Some("exp".into()),
                variant: Some("candidate".into()),
            },
            config_yaml: "receivers: {}\n",
            config_hash: hash,
            default_image: "otel/opentelemetry-collector-contrib:0.149.0",
            extra_env: vec![],
            secrets_version: None,
            uid: 2_000_000_007,
            secret_files: None,
        }
    }

    #[test]
    fn config_map_is_immutable_hash_named_and_owned() {
        let cm = config_map(&params("abcd1234"));
        assert_eq!(cm.metadata.name.as_deref(), Some("demo-abcd1234"));
        assert_eq!(cm.immutable, Some(true));
        assert_eq!(
            cm.metadata
                .owner_references
                .as_ref()
                .map(|o| o[0].controller),
            Some(Some(true))
        );
        let labels = cm.metadata.labels.expect("labelled");
        assert_eq!(labels[labels::EXPERIMENT], "exp");
        assert_eq!(labels[labels::VARIANT], "candidate");
        assert_eq!(labels[labels::PIPELINE], "demo");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "phoenix");
    }

    #[test]
    fn remote_write_tls_files_are_mounted_from_the_secret_read_only() {
        let spec = PipelineSpec::from_template(PipelineTemplate::Baseline);
        let plain = pod_template(&spec, &params("h")).spec.expect("pod spec");
        assert_eq!(plain.volumes.as_ref().map(Vec::len), Some(2));
        let mut p = params("h");
        p.secret_files = Some(("rw".into(), vec!["ca.crt".into()]));
        let pod = pod_template(&spec, &p).spec.expect("pod spec");
        let volume = pod
            .volumes
            .as_ref()
            .and_then(|v| v.iter().find(|v| v.name == REMOTE_WRITE_VOLUME))
            .and_then(|v| v.secret.clone())
            .expect("Secret volume");
        assert_eq!(volume.secret_name.as_deref(), Some("rw"));
        let items = volume.items.expect("only the named keys");
        assert_eq!((items[0].key.as_str(), items.len()), ("ca.crt", 1));
        let mount = pod.containers[0]
            .volume_mounts
            .as_ref()
            .and_then(|m| m.iter().find(|m| m.name == REMOTE_WRITE_VOLUME))
            .expect("mounted")
            .clone();
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (collector_config::remote_write::MOUNT_DIR, Some(true))
        );
    }

    #[test]
    fn daemonset_by_default_with_hardened_pods() {
        let spec = PipelineSpec::from_template(PipelineTemplate::Baseline);
        let Workload::DaemonSet(ds) = workload(&spec, &params("abcd1234")) else {
            panic!("DaemonSet expected")
        };
        assert_eq!(ds.metadata.name.as_deref(), Some("demo-collector"));
        let template = ds.spec.template;
        assert_eq!(
            template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .map(|a| a[labels::CONFIG_HASH].clone()),
            Some("abcd1234".into())
        );
        let pod = template.spec.expect("pod spec");
        assert_eq!(pod.host_network, Some(false));
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().expect("security context");
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        let mounts = c.volume_mounts.as_ref().expect("mounts");
        assert!(
            mounts
                .iter()
                .any(|m| m.mount_path == HOST_PROC && m.read_only == Some(true))
        );
        assert!(c.liveness_probe.is_some() && c.readiness_probe.is_some());
        assert_eq!(c.resources, Some(default_resources()));
        let psc = pod.security_context.as_ref().expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        for id in [psc.run_as_user, psc.run_as_group, psc.fs_group] {
            assert_eq!(id, Some(2_000_000_007), "the namespace's own UID");
        }
    }

    #[test]
    fn config_change_changes_the_pod_template() {
        let spec = PipelineSpec::from_template(PipelineTemplate::Baseline);
        let a = pod_template(&spec, &params("aaaaaaaa"));
        let b = pod_template(&spec, &params("bbbbbbbb"));
        assert_ne!(a, b, "a new config hash must roll the pods");
    }

    #[test]
    fn a_rotated_secret_changes_the_pod_template_and_only_then() {
        let spec = PipelineSpec::from_template(PipelineTemplate::Baseline);
        let with = |version: Option<&str>| {
            let mut p = params("aaaaaaaa");
            p.secrets_version = version.map(str::to_string);
            pod_template(&spec, &p)
        };
        assert_ne!(with(Some("key=1")), with(Some("key=2")));
        assert_eq!(with(Some("key=1")), with(Some("key=1")));
        let none = with(None);
        assert!(
            none.metadata
                .and_then(|m| m.annotations)
                .is_some_and(|a| !a.contains_key(SECRETS_VERSION)),
            "no annotation without Secrets"
        );
    }

    #[test]
    fn deployment_mode_and_overrides() {
        let mut spec = PipelineSpec::from_template(PipelineTemplate::Aggregate);
        spec.deployment.mode = DeploymentMode::Deployment;
        spec.deployment.image = Some("my/otelcol:1".into());
        spec.deployment.node_selector =
            crate::crd::StringMap::from([("type".into(), "kwok".into())]);
        let Workload::Deployment(d) = workload(&spec, &params("abcd1234")) else {
            panic!("Deployment expected")
        };
        let pod = d.spec.template.spec.expect("pod");
        assert_eq!(pod.containers[0].image.as_deref(), Some("my/otelcol:1"));
        assert_eq!(
            pod.node_selector.map(|s| s["type"].clone()),
            Some("kwok".into())
        );
    }
}
