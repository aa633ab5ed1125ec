//! Phoenix: proves a cheaper OpenTelemetry collector pipeline before it is rolled out.
//!
//! `crd` holds the API types, `desired` the pure functions from a resource to the objects Phoenix
//! wants to exist, `controller` the reconcile drivers, `analysis` the Prometheus measurements and
//! statistics. The process simulator and the e2e pod runner are crates of their own.

pub mod analysis;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod desired;
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
}

impl Error {
    /// A low-cardinality label for metrics and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "KubeApi",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::Serialize { .. } => "Serialize",
            Error::Prometheus(_) => "Prometheus",
            Error::MissingField(_) => "MissingField",
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

    /// Wraps a kube error with the step it happened in.
    pub fn kube(step: &'static str) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Kube { step, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
