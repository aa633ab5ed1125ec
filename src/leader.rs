//! Leader election on a `coordination.k8s.io` Lease, the way client-go's leaderelection does it:
//! every replica tries every retry period; the holder renews on the same beat; a clean stop
//! releases the Lease, so a standby takes over at its next try rather than after a lease duration;
//! and a holder that finds the Lease taken or deleted, or cannot renew it in time, has lost it.
//!
//! Writes are merge patches carrying the `resourceVersion` they were decided from, so two replicas
//! deciding from the same read never both win (the apiserver answers the second with 409).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::watch;

/// What a replica does with the Lease as it reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The Lease is free (released, never held, or expired): take it.
    Acquire,
    /// This replica holds it: renew it.
    Renew,
    /// Another replica holds it and it has not expired: wait.
    Wait,
}

/// What `identity` does with a Lease whose spec is `spec`, at `now`. Pure.
pub fn step(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Step {
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty());
    match holder {
        None => Step::Acquire,
        Some(h) if h == identity => Step::Renew,
        Some(_) if expired(spec, now) => Step::Acquire,
        Some(_) => Step::Wait,
    }
}

/// Whether the Lease's last renewal is older than its duration (a Lease without either field is
/// expired). Pure.
fn expired(spec: Option<&LeaseSpec>, now: Timestamp) -> bool {
    let renewed = spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
    let duration = spec.and_then(|s| s.lease_duration_seconds);
    match (renewed, duration) {
        (Some(renewed), Some(secs)) => {
            renewed + SignedDuration::from_secs(i64::from(secs.max(0))) < now
        }
        _ => true,
    }
}

/// The spec `identity` writes to take (`previous` not its own) or renew the Lease at `now`. Pure.
pub fn claimed(
    previous: Option<&LeaseSpec>,
    identity: &str,
    duration: Duration,
    now: Timestamp,
) -> LeaseSpec {
    let previous = previous.cloned().unwrap_or_default();
    let renewing = previous.holder_identity.as_deref() == Some(identity);
    let seconds = i32::try_from(duration.as_secs()).unwrap_or(i32::MAX).max(1);
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(seconds),
        acquire_time: if renewing {
            previous.acquire_time.clone()
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(
            previous.lease_transitions.unwrap_or(0)
                + i32::from(!renewing && previous.holder_identity.is_some()),
        ),
        ..previous
    }
}

/// The spec of a Lease its holder gives up at `now`: an empty holder (as client-go writes it; a
/// merge patch cannot remove the field by omitting it), so the next try of any replica takes it.
/// Pure.
pub fn released(previous: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(String::new()),
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(now)),
        ..previous.clone()
    }
}

/// One replica's side of the election on one Lease.
pub struct Election {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    retry: Duration,
}

impl Election {
    /// An election on Lease `namespace`/`name` as `identity`: a Lease lasts `duration` after its
    /// last renewal; every replica tries (and the holder renews) every `retry`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
        retry: Duration,
    ) -> Election {
        Election {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
            retry: retry.max(Duration::from_millis(100)),
        }
    }

    /// Writes `spec` over the Lease read at `resource_version`; `Ok(false)` when another replica
    /// wrote in between.
    async fn write(&self, resource_version: Option<String>, spec: LeaseSpec) -> kube::Result<bool> {
        let body = serde_json::json!({
            "metadata": { "resourceVersion": resource_version },
            "spec": spec,
        });
        match self
            .api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One try to take the Lease (creating it when missing): whether this replica holds it now.
    async fn try_acquire(&self) -> kube::Result<bool> {
        let now = Timestamp::now();
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(claimed(None, &self.identity, self.duration, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        match step(lease.spec.as_ref(), &self.identity, now) {
            Step::Wait => Ok(false),
            Step::Acquire | Step::Renew => {
                let spec = claimed(lease.spec.as_ref(), &self.identity, self.duration, now);
                self.write(lease.metadata.resource_version, spec).await
            }
        }
    }

    /// Tries every retry period until this replica holds the Lease (`true`) or `stop` turns true
    /// (`false`).
    pub async fn acquire(&self, stop: &mut watch::Receiver<bool>) -> bool {
        loop {
            match self.try_acquire().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, lease = %self.name, "could not read or take the Lease")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.retry) => {}
                _ = crate::controller::stopped(stop.clone()) => return false,
            }
            if *stop.borrow() {
                return false;
            }
        }
    }

    /// One renewal: `Ok(true)` renewed, `Ok(false)` not this time (an API error, logged, or a
    /// write in between), `Err(reason)` when the Lease is no longer this replica's.
    async fn renew(&self) -> std::result::Result<bool, String> {
        let lease = match self.api.get_opt(&self.name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return Err(format!("Lease {} was deleted", self.name)),
            Err(error) => {
                tracing::warn!(%error, lease = %self.name, "could not read the Lease");
                return Ok(false);
            }
        };
        let now = Timestamp::now();
        if step(lease.spec.as_ref(), &self.identity, now) != Step::Renew {
            let holder = lease.spec.and_then(|s| s.holder_identity);
            return Err(format!("Lease {} is now held by {holder:?}", self.name));
        }
        let spec = claimed(lease.spec.as_ref(), &self.identity, self.duration, now);
        match self.write(lease.metadata.resource_version, spec).await {
            Ok(written) => Ok(written),
            Err(error) => {
                tracing::warn!(%error, lease = %self.name, "could not renew the Lease");
                Ok(false)
            }
        }
    }

    /// Renews the Lease every retry period for as long as it is this replica's; returns why it
    /// was lost: taken, deleted, or not renewed within the lease duration less one retry period
    /// (so the holder stops before any standby may take it).
    pub async fn hold(&self) -> String {
        let deadline = self.duration.saturating_sub(self.retry);
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.retry).await;
            match self.renew().await {
                Ok(true) => renewed = tokio::time::Instant::now(),
                Ok(false) if renewed.elapsed() >= deadline => {
                    return format!("Lease {} not renewed for {deadline:?}", self.name);
                }
                Ok(false) => {}
                Err(reason) => return reason,
            }
        }
    }

    /// Gives the Lease up if this replica still holds it, so a standby takes it at its next try.
    pub async fn release(&self) {
        let result = async {
            let Some(lease) = self.api.get_opt(&self.name).await? else {
                return Ok(false);
            };
            let Some(spec) = lease.spec.as_ref() else {
                return Ok(false);
            };
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(false);
            }
            let spec = released(spec, Timestamp::now());
            self.write(lease.metadata.resource_version, spec).await
        }
        .await;
        match result {
            Ok(true) => tracing::info!(lease = %self.name, "released the Lease"),
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, lease = %self.name, "could not release the Lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("valid")
    }

    fn held_by(holder: &str, renewed: i64, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(at(renewed))),
            lease_duration_seconds: Some(secs),
            acquire_time: Some(MicroTime(at(0))),
            lease_transitions: Some(3),
            ..Default::default()
        }
    }

    #[test]
    fn a_free_or_expired_lease_is_taken_a_live_one_waited_for() {
        assert_eq!(step(None, "a", at(0)), Step::Acquire);
        assert_eq!(step(Some(&LeaseSpec::default()), "a", at(0)), Step::Acquire);
        let b = held_by("b", 10, 15);
        assert_eq!(step(Some(&b), "a", at(20)), Step::Wait);
        assert_eq!(
            step(Some(&b), "a", at(25)),
            Step::Wait,
            "expiry is inclusive"
        );
        assert_eq!(step(Some(&b), "a", at(26)), Step::Acquire);
        assert_eq!(step(Some(&b), "b", at(99)), Step::Renew);
        let empty = LeaseSpec {
            holder_identity: Some(String::new()),
            ..b.clone()
        };
        assert_eq!(step(Some(&empty), "a", at(11)), Step::Acquire);
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let b = held_by("b", 10, 3600);
        let free = released(&b, at(11));
        assert_eq!(free.holder_identity.as_deref(), Some(""));
        assert_eq!(step(Some(&free), "a", at(11)), Step::Acquire);
        assert_eq!(step(Some(&free), "b", at(11)), Step::Acquire);
    }

    #[test]
    fn taking_counts_a_transition_renewing_keeps_the_acquire_time() {
        let b = held_by("b", 10, 15);
        let taken = claimed(Some(&b), "a", Duration::from_secs(20), at(30));
        assert_eq!(taken.holder_identity.as_deref(), Some("a"));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(30))));
        assert_eq!(taken.renew_time, Some(MicroTime(at(30))));
        assert_eq!(taken.lease_duration_seconds, Some(20));
        let renewed = claimed(Some(&taken), "a", Duration::from_secs(20), at(32));
        assert_eq!(renewed.lease_transitions, Some(4));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(30))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(32))));
        let first = claimed(None, "a", Duration::from_secs(15), at(1));
        assert_eq!(first.lease_transitions, Some(0));
    }
}
