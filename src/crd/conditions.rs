//! The condition type shared by every Phoenix kind, and the rule for updating a condition list.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whether a condition holds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One observation of the resource's state, in the Kubernetes conditions convention
/// (kstatus-compatible: every kind has a `Ready` condition).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type in CamelCase, e.g. `Ready`, `ConfigValid`, `Available`, `PrometheusReachable`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// Machine-readable CamelCase reason for the condition's last transition.
    pub reason: String,
    /// Human-readable details.
    #[serde(default)]
    pub message: String,
    /// When the condition last changed status (not when it was last written).
    pub last_transition_time: Time,
    /// The `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// A condition observed now. `last_transition_time` is kept by [`set_condition`] unless the
    /// status flips.
    pub fn new(
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
        observed_generation: Option<i64>,
        now: Time,
    ) -> Self {
        Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message: message.into(),
            last_transition_time: now,
            observed_generation,
        }
    }
}

/// Upserts `new` into `conditions` by type. The transition time moves only when the status flips,
/// so writing the same observation twice produces an identical list (no reconcile loops).
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = new;
        }
        None => conditions.push(new),
    }
}

/// The condition of the given type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of the given type is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

/// `Reconciling`: present (`True`) while the object is progressing towards what its spec asks.
pub const RECONCILING: &str = "Reconciling";
/// `Stalled`: present (`True`) when progress stopped on an error a person must fix.
pub const STALLED: &str = "Stalled";

/// Where an object stands, in kstatus terms (sigs.k8s.io/cli-utils kstatus, read by Argo CD and
/// Flux health checks): `Reconciling=True` means in progress, `Stalled=True` means failed, neither
/// (with `status.observedGeneration` equal to `metadata.generation`) means current.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Still working towards the spec (`Reconciling=True`).
    InProgress,
    /// Done (no `Reconciling`, no `Stalled`).
    Current,
    /// Stopped on an error (`Stalled=True`).
    Stalled,
}

/// Sets the kstatus conditions for `progress` next to `Ready` (the "abnormal-true" convention:
/// `Reconciling` and `Stalled` are present only while true, with the same reason and message).
pub fn set_progress(
    conditions: &mut Vec<Condition>,
    progress: Progress,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: Time,
) {
    let (present, absent) = match progress {
        Progress::InProgress => (Some(RECONCILING), STALLED),
        Progress::Stalled => (Some(STALLED), RECONCILING),
        Progress::Current => (None, RECONCILING),
    };
    conditions.retain(|c| c.type_ != absent && (present.is_some() || c.type_ != STALLED));
    if let Some(type_) = present {
        set_condition(
            conditions,
            Condition::new(
                type_,
                ConditionStatus::True,
                reason,
                message,
                observed_generation,
                now,
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid timestamp"))
    }

    #[test]
    fn transition_time_moves_only_on_flip() {
        let mut conds = vec![];
        set_condition(
            &mut conds,
            Condition::new(
                "Ready",
                ConditionStatus::False,
                "Deploying",
                "",
                Some(1),
                at(10),
            ),
        );
        set_condition(
            &mut conds,
            Condition::new(
                "Ready",
                ConditionStatus::False,
                "Deploying",
                "still",
                Some(2),
                at(20),
            ),
        );
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, at(10));
        assert_eq!(conds[0].message, "still");
        assert_eq!(conds[0].observed_generation, Some(2));
        set_condition(
            &mut conds,
            Condition::new("Ready", ConditionStatus::True, "Ready", "", Some(2), at(30)),
        );
        assert_eq!(conds[0].last_transition_time, at(30));
        assert!(is_true(&conds, "Ready"));
        assert!(!is_true(&conds, "Other"));
    }

    #[test]
    fn kstatus_conditions_are_present_only_while_true() {
        let mut conds = vec![];
        set_progress(
            &mut conds,
            Progress::InProgress,
            "Deploying",
            "m",
            Some(1),
            at(1),
        );
        assert!(is_true(&conds, RECONCILING) && find(&conds, STALLED).is_none());
        set_progress(
            &mut conds,
            Progress::InProgress,
            "Running",
            "m",
            Some(1),
            at(2),
        );
        let r = find(&conds, RECONCILING).expect("Reconciling");
        assert_eq!(
            (r.reason.as_str(), &r.last_transition_time),
            ("Running", &at(1))
        );
        set_progress(
            &mut conds,
            Progress::Stalled,
            "NoData",
            "none",
            Some(1),
            at(3),
        );
        assert!(is_true(&conds, STALLED) && find(&conds, RECONCILING).is_none());
        set_progress(
            &mut conds,
            Progress::Current,
            "Completed",
            "",
            Some(1),
            at(4),
        );
        assert!(conds.is_empty(), "{conds:?}");
    }

    #[test]
    fn serializes_in_kubernetes_shape() {
        let c = Condition::new(
            "Ready",
            ConditionStatus::True,
            "Ready",
            "ok",
            Some(3),
            at(0),
        );
        let v = serde_json::to_value(&c).expect("serializes");
        assert_eq!(v["type"], "Ready");
        assert_eq!(v["status"], "True");
        assert_eq!(v["lastTransitionTime"], "1970-01-01T00:00:00Z");
        assert_eq!(v["observedGeneration"], 3);
    }
}
