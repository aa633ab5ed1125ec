//! The simulator Job of a Simulation: one pod per target node (Indexed Job, pods spread across
//! nodes), running `phoenix-simulator` with the Simulation's spec as JSON. Pure functions.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use super::labels::{self, Ownership};
use super::workload::NODE_NAME_ENV;
use crate::crd::simulation::{LoadPattern, ProcessPattern, SimulationProfile, SimulationSpec};
use phoenix_simulator_config::{self as contract, SimulatorConfig};

/// The env var carrying the simulator's configuration (JSON).
pub const CONFIG_ENV: &str = contract::ENV_VAR;
/// Extra time a Job gets beyond the simulation's duration before Kubernetes stops it.
pub const DEADLINE_SLACK_SECS: i64 = 120;
/// Retries per simulator pod (per node index) after it failed on its own; evictions and other
/// disruptions are retried without counting.
pub const RETRIES_PER_INDEX: i32 = 2;

/// Everything the builder needs besides the Simulation's spec.
#[derive(Clone, Debug)]
pub struct JobParams<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub owner: OwnerReference,
    pub ownership: Ownership,
    pub image: &'a str,
    /// Target nodes that match the selector (at least 1): one simulator pod each.
    pub nodes: i32,
}

/// The simulator's configuration (the `phoenix-simulator-config` contract): the spec minus what
/// only Kubernetes uses (node selection, tolerations).
pub fn simulator_config(spec: &SimulationSpec) -> SimulatorConfig {
    SimulatorConfig {
        profile: profile(spec.profile),
        processes: spec.processes,
        churn_per_minute: spec.churn_per_minute,
        duration: spec.duration.to_string(),
        // The schema admits seeds ≥ 0 only.
        seed: u64::try_from(spec.seed).unwrap_or_default(),
        critical_processes: spec.critical_processes.clone(),
        custom: spec.custom.as_ref().map(|c| contract::CustomProfile {
            patterns: c.patterns.iter().map(process_pattern).collect(),
        }),
        limits: None,
    }
}

fn profile(p: SimulationProfile) -> contract::Profile {
    match p {
        SimulationProfile::Realistic => contract::Profile::Realistic,
        SimulationProfile::HighCardinality => contract::Profile::HighCardinality,
        SimulationProfile::HighChurn => contract::Profile::HighChurn,
        SimulationProfile::Spike => contract::Profile::Spike,
        SimulationProfile::Custom => contract::Profile::Custom,
    }
}

fn load_pattern(p: LoadPattern) -> contract::LoadPattern {
    match p {
        LoadPattern::Steady => contract::LoadPattern::Steady,
        LoadPattern::Spiky => contract::LoadPattern::Spiky,
        LoadPattern::Growing => contract::LoadPattern::Growing,
        LoadPattern::Random => contract::LoadPattern::Random,
    }
}

fn process_pattern(p: &ProcessPattern) -> contract::ProcessPattern {
    contract::ProcessPattern {
        name_template: p.name_template.clone(),
        count: p.count,
        lifetime: p.lifetime.as_ref().map(|l| l.to_string()),
        cpu: contract::CpuPattern {
            pattern: load_pattern(p.cpu.pattern),
            millicores: p.cpu.millicores,
        },
        memory: contract::MemoryPattern {
            pattern: load_pattern(p.memory.pattern),
            megabytes: p.memory.megabytes,
        },
    }
}

/// Memory per process a built-in profile is scaled into (its mix peaks higher: databases,
/// runtimes; the simulator scales the mix down to the total).
pub const BALLAST_MIB_PER_PROCESS: u64 = 8;
/// The smallest and largest ballast total a built-in profile gets.
pub const BALLAST_MIB_RANGE: (u64, u64) = (64, 2048);

/// What the simulator's processes may hold at their peak: the total of their ballast and how many
/// run at once (critical ones included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    pub ballast_mib: u64,
    pub processes: u64,
}

/// The memory budget of a Simulation: custom patterns are taken literally (count × megabytes, the
/// critical processes at a built-in profile's share); built-in profiles get
/// [`BALLAST_MIB_PER_PROCESS`] each within [`BALLAST_MIB_RANGE`], and the simulator scales its
/// mix into that total.
pub fn memory_budget(spec: &SimulationSpec) -> MemoryBudget {
    let critical = spec.critical_processes.len() as u64;
    match &spec.custom {
        Some(custom) => MemoryBudget {
            ballast_mib: custom
                .patterns
                .iter()
                .map(|p| u64::from(p.count) * u64::from(p.memory.megabytes))
                .sum::<u64>()
                + critical * BALLAST_MIB_PER_PROCESS,
            processes: custom
                .patterns
                .iter()
                .map(|p| u64::from(p.count))
                .sum::<u64>()
                + critical,
        },
        None => {
            let processes = u64::from(spec.processes) + critical;
            let (min, max) = BALLAST_MIB_RANGE;
            MemoryBudget {
                ballast_mib: (processes * BALLAST_MIB_PER_PROCESS).clamp(min, max),
                processes,
            }
        }
    }
}

/// Port of the simulator's Prometheus endpoint (`--metrics-addr`, container port `metrics`):
/// `phoenix_simulator_active_processes` and the rest of its counters.
pub const SIMULATOR_METRICS_PORT: i32 = 9464;

/// The `prometheus.io/*` annotations by which annotation-based Prometheus scrape configs find the
/// simulator pods' metrics.
fn scrape_annotations() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        (
            "prometheus.io/port".to_string(),
            SIMULATOR_METRICS_PORT.to_string(),
        ),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ])
}

/// The Job `<simulation>-load`.
pub fn job(spec: &SimulationSpec, p: &JobParams) -> Job {
    let labels = labels::simulation_labels(p.name, &p.ownership);
    let job_name = labels::job_name(p.name);
    let nodes = p.nodes.max(1);
    // A retried pod runs its whole duration again: the deadline leaves room for one late pod.
    let deadline = i64::try_from(spec.duration.get().as_secs())
        .unwrap_or(i64::MAX / 4)
        .saturating_mul(2)
        + DEADLINE_SLACK_SECS;
    // The container's memory limit and the simulator's ballast cap agree: the plan always fits.
    let memory = memory_budget(spec);
    let memory_mib = contract::container_memory_mib(memory.ballast_mib, memory.processes);
    let mut config = simulator_config(spec);
    config.limits = Some(contract::LimitsOverride {
        max_total_memory_mib: u32::try_from(memory.ballast_mib.max(1)).ok(),
        ..Default::default()
    });
    let container = Container {
        name: "simulator".to_string(),
        image: Some(p.image.to_string()),
        command: Some(vec!["phoenix-simulator".to_string()]),
        args: Some(vec![
            "--metrics-addr".to_string(),
            format!("0.0.0.0:{SIMULATOR_METRICS_PORT}"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".to_string()),
            container_port: SIMULATOR_METRICS_PORT,
            protocol: Some("TCP".to_string()),
            ..Default::default()
        }]),
        env: Some(vec![
            EnvVar {
                name: CONFIG_ENV.to_string(),
                value: Some(config.to_json()),
                ..Default::default()
            },
            EnvVar {
                name: NODE_NAME_ENV.to_string(),
                value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
                    field_ref: Some(k8s_openapi::api::core::v1::ObjectFieldSelector {
                        field_path: "spec.nodeName".to_string(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("100m".to_string())),
                ("memory".to_string(), Quantity(format!("{memory_mib}Mi"))),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("2".to_string())),
                ("memory".to_string(), Quantity(format!("{memory_mib}Mi"))),
            ])),
            ..Default::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".to_string(),
            mount_path: "/tmp".to_string(),
            ..Default::default()
        }]),
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
    let spread = PodAntiAffinity {
        required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    labels::SIMULATION.to_string(),
                    p.name.to_string(),
                )])),
                ..Default::default()
            }),
            topology_key: "kubernetes.io/hostname".to_string(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(job_name),
            namespace: Some(p.namespace.to_string()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![p.owner.clone()]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            completions: Some(nodes),
            parallelism: Some(nodes),
            completion_mode: Some("Indexed".to_string()),
            // One node's simulator failing is retried on its own index; the others keep running.
            backoff_limit_per_index: Some(RETRIES_PER_INDEX),
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![
                    // A refused configuration fails the same way on every retry: fail at once.
                    PodFailurePolicyRule {
                        action: "FailJob".to_string(),
                        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                            container_name: Some("simulator".to_string()),
                            operator: "In".to_string(),
                            values: vec![i32::from(contract::EXIT_REFUSED)],
                        }),
                        ..Default::default()
                    },
                    // Evicted or preempted: retried without counting against the index.
                    PodFailurePolicyRule {
                        action: "Ignore".to_string(),
                        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                            type_: "DisruptionTarget".to_string(),
                            status: Some("True".to_string()),
                        }]),
                        ..Default::default()
                    },
                ],
            }),
            active_deadline_seconds: Some(deadline),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(scrape_annotations()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    restart_policy: Some("Never".to_string()),
                    // The simulator names its workers through symlinks in /tmp; the root
                    // filesystem is read-only.
                    volumes: Some(vec![Volume {
                        name: "tmp".to_string(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Default::default()
                    }]),
                    node_selector: (!spec.node_selector.is_empty())
                        .then(|| spec.node_selector.to_btree()),
                    tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
                    affinity: Some(Affinity {
                        pod_anti_affinity: Some(spread),
                        ..Default::default()
                    }),
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(10001),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_string(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    termination_grace_period_seconds: Some(10),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SimulationSpec {
        serde_yaml::from_str("profile: high-cardinality\nprocesses: 300\nduration: 5m\nnodeSelector: {type: kwok}\ncriticalProcesses: [postgres]")
            .expect("parses")
    }

    fn params(nodes: i32) -> JobParams<'static> {
        JobParams {
            name: "load",
            namespace: "ns",
            owner: OwnerReference {
                api_version: "phoenix.io/v1alpha1".into(),
                kind: "Simulation".into(),
                name: "load".into(),
                uid: "u".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
            ownership: Ownership::default(),
            image: "phoenix:dev",
            nodes,
        }
    }

    #[test]
    fn one_pod_per_target_node() {
        let job = job(&spec(), &params(3));
        let s = job.spec.expect("spec");
        assert_eq!((s.completions, s.parallelism), (Some(3), Some(3)));
        assert_eq!(s.completion_mode.as_deref(), Some("Indexed"));
        assert_eq!(
            s.active_deadline_seconds,
            Some(2 * 300 + DEADLINE_SLACK_SECS)
        );
        // One failed or evicted simulator pod is retried on its own index, not the whole load.
        assert_eq!(s.backoff_limit_per_index, Some(RETRIES_PER_INDEX));
        assert_eq!(s.backoff_limit, None);
        let rules = s.pod_failure_policy.expect("a pod failure policy").rules;
        assert_eq!(
            rules[0].action, "FailJob",
            "a refused configuration is not retried"
        );
        assert_eq!(
            rules[0].on_exit_codes.as_ref().map(|c| c.values.clone()),
            Some(vec![2])
        );
        assert_eq!(rules[1].action, "Ignore");
        assert_eq!(
            rules[1]
                .on_pod_conditions
                .as_ref()
                .map(|c| c[0].type_.as_str()),
            Some("DisruptionTarget")
        );
        let pod = s.template.spec.expect("pod");
        assert!(pod.affinity.and_then(|a| a.pod_anti_affinity).is_some());
        assert_eq!(
            pod.node_selector.map(|n| n["type"].clone()),
            Some("kwok".into())
        );
        assert_eq!(job.metadata.name.as_deref(), Some("load-load"));
    }

    #[test]
    fn the_simulator_serves_its_metrics_on_a_named_port_with_scrape_annotations() {
        let template = job(&spec(), &params(1)).spec.expect("spec").template;
        let annotations = template
            .metadata
            .and_then(|m| m.annotations)
            .expect("annotations");
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/port"], "9464");
        assert_eq!(annotations["prometheus.io/path"], "/metrics");
        let container = &template.spec.expect("pod").containers[0];
        assert_eq!(
            container.args.as_deref(),
            Some(&["--metrics-addr".to_string(), "0.0.0.0:9464".to_string()][..])
        );
        let port = &container.ports.as_deref().expect("ports")[0];
        assert_eq!(
            (port.name.as_deref(), port.container_port),
            (Some("metrics"), 9464)
        );
    }

    #[test]
    fn no_matching_node_still_runs_one_pod() {
        assert_eq!(
            job(&spec(), &params(0)).spec.expect("spec").parallelism,
            Some(1)
        );
    }

    #[test]
    fn simulator_gets_the_spec_without_node_selection() {
        let config = simulator_config(&spec());
        assert_eq!(config.profile, contract::Profile::HighCardinality);
        assert_eq!(config.processes, 300);
        assert_eq!(config.duration, "5m");
        assert_eq!(config.critical_processes, ["postgres"]);
        let json: serde_json::Value =
            serde_json::from_str(&config.to_json()).expect("the configuration is JSON");
        assert!(json.get("nodeSelector").is_none());
    }
}
