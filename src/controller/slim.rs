//! Slim copies of the workloads the controllers cache: the metadata, the replica count and the
//! status, decoded straight from the watch without the pod template. A k8s-openapi `DaemonSet`
//! or `Job` carries its whole pod template inline even when empty (a few KiB per object); at
//! 2,000 Experiments the caches hold 4,000 collector workloads.

use std::borrow::Cow;
use std::fmt::Debug;
use std::marker::PhantomData;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus, Deployment, DeploymentStatus};
use k8s_openapi::api::batch::v1::{Job, JobStatus};
use kube::Resource;
use kube::api::ObjectMeta;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// A namespaced workload kind whose slim copy the controllers cache.
pub trait Slimmable:
    Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + Debug + Send + Sync + 'static
{
    type Status: Clone + Debug + DeserializeOwned + Send + Sync + 'static;
    /// The full object holding what `slim` keeps (for code written against the full type).
    fn assemble(slim: &Slim<Self>) -> Self;
}

/// What the cache keeps of a `K`: decoded from the apiserver's JSON, ignoring the rest.
#[derive(Clone, Debug, Deserialize)]
#[serde(bound(deserialize = "K::Status: DeserializeOwned"))]
pub struct Slim<K: Slimmable> {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: SlimSpec,
    #[serde(default = "Option::default")]
    pub status: Option<K::Status>,
    /// Phoenix's applied-hash annotation, taken out of `metadata` by [`trim`]: a one-entry
    /// annotation map costs a whole B-tree node (about 540 bytes) per cached object.
    #[serde(skip)]
    applied_hash: Option<String>,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

/// The one field of a workload's spec a reconcile reads.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SlimSpec {
    pub replicas: Option<i32>,
}

impl<K: Slimmable> Slim<K> {
    /// The full object with what this copy keeps.
    pub fn full(&self) -> K {
        K::assemble(self)
    }

    /// The metadata this copy keeps, with the applied-hash annotation back in place.
    fn full_meta(&self) -> ObjectMeta {
        let mut meta = self.metadata.clone();
        if let Some(hash) = &self.applied_hash {
            meta.annotations
                .get_or_insert_with(Default::default)
                .insert(super::APPLIED_HASH.to_string(), hash.clone());
        }
        meta
    }
}

impl<K: Slimmable> Resource for Slim<K> {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl Slimmable for DaemonSet {
    type Status = DaemonSetStatus;
    fn assemble(slim: &Slim<Self>) -> Self {
        DaemonSet {
            metadata: slim.full_meta(),
            status: slim.status.clone(),
            ..Default::default()
        }
    }
}

impl Slimmable for Deployment {
    type Status = DeploymentStatus;
    fn assemble(slim: &Slim<Self>) -> Self {
        let mut d = Deployment {
            metadata: slim.full_meta(),
            status: slim.status.clone(),
            ..Default::default()
        };
        d.spec.replicas = slim.spec.replicas;
        d
    }
}

impl Slimmable for Job {
    type Status = JobStatus;
    fn assemble(slim: &Slim<Self>) -> Self {
        Job {
            metadata: slim.full_meta(),
            status: slim.status.clone(),
            ..Default::default()
        }
    }
}

/// Drops from a cached object's metadata what no reconcile reads: managed fields, labels (the
/// watch selects by them) and annotations (a slim copy keeps Phoenix's applied hash apart: see
/// [`trim`]).
pub fn trim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.labels = None;
    meta.annotations = None;
}

/// [`trim_meta`] for a slim copy, which keeps the applied-hash annotation in a field of its own
/// (see [`Slim::full`]): a one-entry annotation map would cost a whole B-tree node.
pub fn trim<K: Slimmable>(slim: &mut Slim<K>) {
    slim.applied_hash = slim
        .metadata
        .annotations
        .as_mut()
        .and_then(|a| a.remove(super::APPLIED_HASH));
    trim_meta(&mut slim.metadata);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slim_daemonset_keeps_what_the_reconcile_reads_and_not_its_pod_template() {
        let json = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {
                "name": "p-collector", "namespace": "ns", "uid": "u", "generation": 3,
                "labels": {"app.kubernetes.io/name": "phoenix-collector"},
                "annotations": {(super::super::APPLIED_HASH): "abc", "deprecated.daemonset.template.generation": "3"},
                "ownerReferences": [{"apiVersion": "phoenix.io/v1alpha1", "kind": "Pipeline", "name": "p", "uid": "o", "controller": true}],
                "managedFields": [{"manager": "phoenix"}]
            },
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "otelcol", "image": "x"}]}}
            },
            "status": {"numberReady": 1, "desiredNumberScheduled": 1, "currentNumberScheduled": 1, "numberMisscheduled": 0, "observedGeneration": 3}
        });
        let full: DaemonSet = serde_json::from_value(json.clone()).expect("a DaemonSet");
        let mut slim: Slim<DaemonSet> = serde_json::from_value(json).expect("its slim copy");
        trim(&mut slim);
        assert_eq!(
            slim.metadata.annotations, None,
            "the applied hash is kept in a field, not in a map node of its own"
        );
        let back = slim.full();
        assert_eq!(back.status, full.status, "status kept");
        assert_eq!(back.metadata.generation, Some(3));
        assert_eq!(back.metadata.uid.as_deref(), Some("u"));
        assert_eq!(
            back.metadata.owner_references,
            full.metadata.owner_references
        );
        assert_eq!(
            back.metadata.annotations,
            Some([(super::super::APPLIED_HASH.to_string(), "abc".to_string())].into()),
            "only the applied hash stays"
        );
        assert_eq!(back.metadata.labels, None);
        assert_eq!(back.metadata.managed_fields, None);
        assert_eq!(back.spec, Default::default(), "no pod template");
        assert!(
            std::mem::size_of::<Slim<DaemonSet>>() * 2 < std::mem::size_of::<DaemonSet>(),
            "the point of the slim copy: {} vs {} bytes",
            std::mem::size_of::<Slim<DaemonSet>>(),
            std::mem::size_of::<DaemonSet>()
        );
    }

    #[test]
    fn a_slim_deployment_keeps_its_replicas_and_a_job_its_status() {
        let d: Slim<Deployment> = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c"}, "spec": {"replicas": 2, "template": {}},
            "status": {"readyReplicas": 1}
        }))
        .expect("slim Deployment");
        let full = d.full();
        assert_eq!(full.spec.replicas, Some(2));
        assert_eq!(full.status.and_then(|s| s.ready_replicas), Some(1));
        let j: Slim<Job> = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j"}, "spec": {"template": {}}, "status": {"active": 1, "ready": 1}
        }))
        .expect("slim Job");
        assert_eq!(j.full().status.and_then(|s| s.ready), Some(1));
    }
}
