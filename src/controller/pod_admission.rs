//! Why a Pipeline's collector pods are not being created: the DaemonSet controller's
//! `FailedCreate` Events, or a Deployment's `ReplicaFailure` condition, turned into the Pipeline
//! condition reason [`PODS_REFUSED`] with the apiserver's own message and, when Pod Security
//! admission refused them, the namespace label the collectors need. Pure, except [`refusal`]'s
//! one Event list.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::crd::conditions::{self, Condition, ConditionStatus};
use crate::crd::pipeline::PipelineStatus;
use crate::desired::workload::Workload;
use crate::{Error, Result};

/// Condition reason (`Available`, `Ready`) when admission refuses the collector pods.
pub const PODS_REFUSED: &str = "PodsRefusedByAdmission";
/// The namespace label that sets the enforced Pod Security level.
pub const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";
/// The reason the DaemonSet and ReplicaSet controllers give a pod they could not create.
const FAILED_CREATE: &str = "FailedCreate";

/// Whether the workload has fewer pods than it should have had created (a DaemonSet whose
/// controller could not create every pod, or a Deployment reporting `ReplicaFailure`).
pub fn pods_missing(workload: &Workload) -> bool {
    match workload {
        Workload::DaemonSet(ds) => ds
            .status
            .as_ref()
            .is_some_and(|s| s.current_number_scheduled < s.desired_number_scheduled),
        Workload::Deployment(d) => deployment_refusal(d).is_some(),
    }
}

/// The apiserver's message in a Deployment's `ReplicaFailure` condition, when it says the pods
/// were forbidden.
pub fn deployment_refusal(deployment: &Deployment) -> Option<String> {
    deployment
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| {
            c.type_.as_deref() == Some("ReplicaFailure") && c.status.as_deref() == Some("True")
        })
        .and_then(|c| c.message.clone())
        .filter(|m| forbidden(m))
}

/// The message of the newest `FailedCreate` Event among `events` that says the pods were
/// forbidden (admission: Pod Security, a webhook, a quota).
pub fn daemonset_refusal(events: &[Event]) -> Option<String> {
    events
        .iter()
        .filter(|e| e.reason.as_deref() == Some(FAILED_CREATE))
        .filter_map(|e| {
            let message = e.message.as_deref().filter(|m| forbidden(m))?;
            let when = e
                .last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or_else(|| e.event_time.as_ref().map(|t| t.0))
                .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0));
            Some((when, message.to_string()))
        })
        .max_by_key(|(when, _)| *when)
        .map(|(_, message)| message)
}

fn forbidden(message: &str) -> bool {
    message.contains("forbidden")
}

/// What the Pipeline says about refused pods: the apiserver's message and, for a Pod Security
/// refusal, the label `namespace` needs.
pub fn refusal_message(namespace: &str, apiserver: &str) -> String {
    let mut message = format!("collector pods refused by admission: {apiserver}");
    if apiserver.contains("PodSecurity") {
        message.push_str(&format!(
            ". Collectors mount the host's /proc (a hostPath volume), which the baseline and restricted Pod Security levels refuse: label the namespace with `kubectl label namespace {namespace} {POD_SECURITY_ENFORCE}=privileged` (see docs/security.md)"
        ));
    }
    message
}

/// Marks `status` as waiting on refused pods: `Available` and `Ready` false with reason
/// [`PODS_REFUSED`] and `message`.
pub fn mark_refused(status: &mut PipelineStatus, message: &str, generation: Option<i64>) {
    let now = super::now();
    for type_ in ["Available", "Ready"] {
        conditions::set_condition(
            &mut status.conditions,
            Condition::new(
                type_,
                ConditionStatus::False,
                PODS_REFUSED,
                message,
                generation,
                now.clone(),
            ),
        );
    }
    status.message = Some(message.to_string());
}

/// The refusal keeping `workload`'s pods from being created, if any: for a DaemonSet missing
/// pods, its `FailedCreate` Events (one list, only then); for a Deployment, its condition.
pub async fn refusal(client: &Client, workload: &Workload) -> Result<Option<String>> {
    match workload {
        Workload::Deployment(d) => Ok(deployment_refusal(d)),
        Workload::DaemonSet(ds) => {
            let (Some(uid), Some(namespace)) = (ds.uid(), ds.namespace()) else {
                return Ok(None);
            };
            if !pods_missing(workload) {
                return Ok(None);
            }
            let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
            let selector = format!("involvedObject.uid={uid},reason={FAILED_CREATE}");
            let list = events
                .list(&ListParams::default().fields(&selector))
                .await
                .map_err(Error::kube(
                    "list the collector DaemonSet's FailedCreate Events",
                ))?;
            Ok(daemonset_refusal(&list.items))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DaemonSet, DaemonSetStatus, DeploymentCondition, DeploymentStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const REFUSED: &str = r#"Error creating: pods "p-collector-x" is forbidden: violates PodSecurity "baseline:latest": hostPath volumes (volume "host-proc")"#;

    fn event(reason: &str, message: &str, at: i64) -> Event {
        Event {
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_timestamp: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(at).expect("valid timestamp"),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn the_newest_forbidden_failed_create_is_the_refusal() {
        let events = [
            event(
                FAILED_CREATE,
                "Error creating: pods \"a\" is forbidden: old",
                10,
            ),
            event(FAILED_CREATE, REFUSED, 20),
            event("SuccessfulCreate", "Created pod: p-collector-y", 30),
            event(
                FAILED_CREATE,
                "Error creating: Timeout: request did not complete",
                40,
            ),
        ];
        assert_eq!(daemonset_refusal(&events).as_deref(), Some(REFUSED));
        assert_eq!(daemonset_refusal(&events[2..]), None);
    }

    #[test]
    fn a_pod_security_refusal_names_the_namespace_label() {
        let message = refusal_message("team-a", REFUSED);
        assert!(message.contains(REFUSED), "{message}");
        assert!(
            message.contains(
                "kubectl label namespace team-a pod-security.kubernetes.io/enforce=privileged"
            ),
            "{message}"
        );
        let quota = refusal_message("team-a", "pods \"x\" is forbidden: exceeded quota");
        assert!(!quota.contains(POD_SECURITY_ENFORCE), "{quota}");
    }

    #[test]
    fn missing_pods_and_deployment_refusals_come_from_status() {
        let ds = |current, desired| {
            Workload::DaemonSet(DaemonSet {
                status: Some(DaemonSetStatus {
                    current_number_scheduled: current,
                    desired_number_scheduled: desired,
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        assert!(pods_missing(&ds(0, 2)));
        assert!(!pods_missing(&ds(2, 2)));
        assert!(!pods_missing(&Workload::DaemonSet(DaemonSet::default())));

        let deployment = |message: &str| Deployment {
            status: Some(DeploymentStatus {
                conditions: Some(vec![DeploymentCondition {
                    type_: Some("ReplicaFailure".into()),
                    status: Some("True".into()),
                    reason: Some(FAILED_CREATE.into()),
                    message: Some(message.into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            deployment_refusal(&deployment(REFUSED)).as_deref(),
            Some(REFUSED)
        );
        assert!(pods_missing(&Workload::Deployment(deployment(REFUSED))));
        assert_eq!(deployment_refusal(&deployment("no nodes")), None);
    }

    #[test]
    fn a_refusal_sets_available_and_ready_false() {
        let mut status = PipelineStatus::default();
        mark_refused(&mut status, "refused", Some(3));
        for type_ in ["Available", "Ready"] {
            let c = conditions::find(&status.conditions, type_).expect("set");
            assert_eq!(
                (c.status, c.reason.as_str(), c.message.as_str()),
                (ConditionStatus::False, PODS_REFUSED, "refused")
            );
        }
        assert_eq!(status.message.as_deref(), Some("refused"));
    }
}
