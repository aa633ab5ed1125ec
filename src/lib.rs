//! Phoenix: proves a cheaper OpenTelemetry collector pipeline before it is rolled out.
//!
//! `crd` holds the API types, `desired` the pure functions from a resource to the objects Phoenix
//! wants to exist, `controller` the reconcile drivers, `analysis` the Prometheus measurements and
//! statistics. The process simulator and the e2e pod runner are crates of their own.

pub mod analysis;
pub mod apiserver;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod desired;
pub mod leader;
pub mod settings;
pub mod telemetry;

/// Everything that can go wrong in a reconcile, named by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver refused or failed a request.
    #[error("{step}: {source}")]
    Kube {
        step: &'static str,
        #[source]
        source: kube::Error,
    },
    /// The resource can never work as written; reported as a condition, retried only on change.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// A generated object could not be serialized.
    #[error("serializing {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// Prometheus could not be queried.
    #[error("prometheus: {0}")]
    Prometheus(String),
    /// An object from the API lacks a field it always has (name, namespace, uid).
    #[error("object has no {0}")]
    MissingField(&'static str),
    /// A cache a reconcile reads from stopped before its first complete list (shutdown): nothing
    /// is decided from an empty cache.
    #[error("a cache stopped before it synced")]
    CachesStopped,
}

impl Error {
    /// A low-cardinality label for metrics and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube { .. } if self.namespace_terminating() => "NamespaceTerminating",
            Error::Kube { .. } => "KubeApi",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::Serialize { .. } => "Serialize",
            Error::Prometheus(_) => "Prometheus",
            Error::MissingField(_) => "MissingField",
            Error::CachesStopped => "CachesStopped",
        }
    }

    /// The apiserver's message when it refused a request for good (400 Bad Request, 422
    /// Invalid): retrying cannot help until the spec changes.
    pub fn refused_permanently(&self) -> Option<String> {
        match self {
            Error::Kube {
                step,
                source: kube::Error::Api(e),
            } if e.code == 400 || e.code == 422 => Some(format!("{step}: {}", e.message)),
            _ => None,
        }
    }

    /// Whether the apiserver refused a create because the object's namespace is being deleted
    /// (403 with the cause `NamespaceTerminating`): no retry can succeed, and the namespace's
    /// deletion removes the object that asked, so it waits for that instead of retrying.
    pub fn namespace_terminating(&self) -> bool {
        matches!(
            self,
            Error::Kube { source: kube::Error::Api(e), .. }
                if e.code == 403
                    && e.details.as_ref().is_some_and(|d| {
                        d.causes.iter().any(|c| c.reason == "NamespaceTerminating")
                    })
        )
    }

    /// Wraps a kube error with the step it happened in.
    pub fn kube(step: &'static str) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Kube { step, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::Error;

    /// An apiserver refusal, as it arrives (JSON of a `Status`).
    fn refused(status: serde_json::Value) -> Error {
        Error::Kube {
            step: "create ConfigMap",
            source: kube::Error::Api(
                serde_json::from_value::<kube::core::Status>(status)
                    .expect("a Status")
                    .boxed(),
            ),
        }
    }

    #[test]
    fn a_create_in_a_namespace_being_deleted_is_told_apart_from_other_refusals() {
        // As kube-apiserver's NamespaceLifecycle admission answers (k8s v1.36).
        let terminating = refused(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
            "reason": "Forbidden",
            "message": "configmaps \"p-1\" is forbidden: unable to create new content in namespace ns because it is being terminated",
            "details": {"name": "p-1", "kind": "configmaps",
                        "causes": [{"reason": "NamespaceTerminating",
                                    "message": "namespace ns is being terminated",
                                    "field": "metadata.namespace"}]}
        }));
        assert!(terminating.namespace_terminating());
        assert_eq!(terminating.reason(), "NamespaceTerminating");
        // RBAC's 403 has no such cause: retried (and counted) as any apiserver error.
        let rbac = refused(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
            "reason": "Forbidden", "message": "configmaps is forbidden: User cannot create",
            "details": {"kind": "configmaps"}
        }));
        assert!(!rbac.namespace_terminating());
        assert_eq!(rbac.reason(), "KubeApi");
        assert!(!Error::InvalidSpec("x".into()).namespace_terminating());
    }
}
