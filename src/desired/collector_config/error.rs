//! Why a Pipeline's collector config cannot be rendered: each variant has a machine reason (the
//! `ConfigValid=False` condition's `reason`) and a message naming the exact field or component.

/// A Pipeline spec that cannot become a valid collector config. Permanent: the Pipeline waits for
/// a spec change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A template parameter set on a template that does not use it (e.g. `spec.aggregate` with
    /// template `topk`).
    #[error("{field} is not a parameter of template {template}")]
    UnknownParameter {
        field: &'static str,
        template: &'static str,
    },
    /// A template that cannot work without a parameter (e.g. `topk` without `spec.topk`).
    #[error("template {template} needs {field}: {why}")]
    MissingParameter {
        field: &'static str,
        template: &'static str,
        why: &'static str,
    },
    /// A regular expression that does not compile.
    #[error("{field}: invalid regular expression {pattern:?}: {message}")]
    InvalidRegex {
        field: String,
        pattern: String,
        message: String,
    },
    /// A duration the collector would not accept.
    #[error("{field}: invalid duration {value:?}")]
    InvalidDuration { field: &'static str, value: String },
    /// A component id that is not `type[/name]`.
    #[error("{field}: invalid component id {id:?} (expected type[/name], e.g. filter/noise)")]
    InvalidComponentId { field: String, id: String },
    /// A component whose type our collector build does not have.
    #[error(
        "{field}: {kind} {id:?} has type {component_type:?}, which the collector does not include (known: {known})"
    )]
    UnknownComponentType {
        field: String,
        kind: &'static str,
        id: String,
        component_type: String,
        known: String,
    },
    /// A user processor id that Phoenix uses itself.
    #[error(
        "{field}: processor id {id:?} is reserved by Phoenix (memory_limiter, batch and ids named phoenix* are added by Phoenix)"
    )]
    ReservedProcessorId { field: String, id: String },
    /// A user processor whose configuration is not a mapping.
    #[error("spec.custom.processors[{id:?}]: configuration must be a mapping, got {got}")]
    InvalidProcessorConfig { id: String, got: &'static str },
    /// A pipeline that names a processor nobody defined.
    #[error("{pipeline}: processor {id:?} is used but not defined")]
    UndefinedProcessor { pipeline: String, id: String },
    /// A processor defined but not used by any pipeline.
    #[error("{field}: processor {id:?} is defined but not used by any pipeline")]
    UnusedProcessor { field: &'static str, id: String },
    /// A pipeline that names the same processor twice.
    #[error("{pipeline}: processor {id:?} is listed more than once")]
    DuplicateProcessor { pipeline: String, id: String },
    /// A pipeline that names a receiver nobody defined.
    #[error("{pipeline}: receiver {id:?} is used but not defined")]
    UndefinedReceiver { pipeline: String, id: String },
    /// A receiver defined but not used by any pipeline.
    #[error("receiver {id:?} is defined but not used by any pipeline")]
    UnusedReceiver { id: String },
    /// A pipeline that names an exporter nobody defined.
    #[error("{pipeline}: exporter {id:?} is used but not defined")]
    UndefinedExporter { pipeline: String, id: String },
    /// An exporter defined but not used by any pipeline.
    #[error("exporter {id:?} is defined but not used by any pipeline")]
    UnusedExporter { id: String },
    /// `service.extensions` names an extension nobody defined.
    #[error("service.extensions: extension {id:?} is used but not defined")]
    UndefinedExtension { id: String },
    /// A pipeline that is not a well-formed metrics pipeline (no receiver/exporter, wrong signal,
    /// memory_limiter not first or batch not last).
    #[error("{pipeline}: {message}")]
    InvalidPipeline { pipeline: String, message: String },
    /// Two extra exporters with the same name.
    #[error("spec.exporters: exporter name {name:?} is used more than once")]
    DuplicateExporter { name: String },
    /// An extra exporter's header Secret whose key names the operator did not provide.
    #[error(
        "spec.exporters[{exporter:?}]: the key names of Secret {secret:?} are unknown (is the Secret missing?)"
    )]
    MissingSecretKeys { exporter: String, secret: String },
    /// The remote-write credentials Secret holds keys Phoenix cannot use as they are.
    #[error(
        "remote-write credentials Secret {secret:?}: {problem} (see kubectl explain experiment.spec.prometheus.remoteWriteSecretRef)"
    )]
    InvalidRemoteWriteSecret { secret: String, problem: String },
    /// A `--remote-write-header` of the operator's settings is not a valid header name.
    #[error("operator setting --remote-write-header: {0:?} is not a valid HTTP header name")]
    InvalidRemoteWriteHeader(String),
    /// A Secret key that is not a valid HTTP header name.
    #[error(
        "spec.exporters[{exporter:?}]: Secret {secret:?} key {key:?} is not a valid HTTP header name"
    )]
    InvalidHeaderName {
        exporter: String,
        secret: String,
        key: String,
    },
    /// Two header keys that map to the same environment variable.
    #[error(
        "spec.exporters[{exporter:?}]: header {key:?} maps to env var {env} which another header already uses"
    )]
    HeaderKeyCollision {
        exporter: String,
        key: String,
        env: String,
    },
    /// The config could not be serialized (a bug, not a spec problem).
    #[error("serializing the collector config: {0}")]
    Serialize(String),
}

impl ConfigError {
    /// The machine-readable reason (CamelCase), used as the `ConfigValid` condition's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ConfigError::UnknownParameter { .. } => "UnknownParameter",
            ConfigError::MissingParameter { .. } => "MissingParameter",
            ConfigError::InvalidRegex { .. } => "InvalidRegex",
            ConfigError::InvalidDuration { .. } => "InvalidDuration",
            ConfigError::InvalidComponentId { .. } => "InvalidComponentId",
            ConfigError::UnknownComponentType { .. } => "UnknownComponentType",
            ConfigError::ReservedProcessorId { .. } => "ReservedProcessorId",
            ConfigError::InvalidProcessorConfig { .. } => "InvalidProcessorConfig",
            ConfigError::UndefinedProcessor { .. } => "UndefinedProcessor",
            ConfigError::UnusedProcessor { .. } => "UnusedProcessor",
            ConfigError::DuplicateProcessor { .. } => "DuplicateProcessor",
            ConfigError::UndefinedReceiver { .. } => "UndefinedReceiver",
            ConfigError::UnusedReceiver { .. } => "UnusedReceiver",
            ConfigError::UndefinedExporter { .. } => "UndefinedExporter",
            ConfigError::UnusedExporter { .. } => "UnusedExporter",
            ConfigError::UndefinedExtension { .. } => "UndefinedExtension",
            ConfigError::InvalidPipeline { .. } => "InvalidPipeline",
            ConfigError::DuplicateExporter { .. } => "DuplicateExporter",
            ConfigError::MissingSecretKeys { .. } => "MissingSecretKeys",
            ConfigError::InvalidHeaderName { .. } => "InvalidHeaderName",
            ConfigError::InvalidRemoteWriteSecret { .. } => "InvalidRemoteWriteSecret",
            ConfigError::InvalidRemoteWriteHeader(_) => "InvalidRemoteWriteHeader",
            ConfigError::HeaderKeyCollision { .. } => "HeaderKeyCollision",
            ConfigError::Serialize(_) => "Serialize",
        }
    }
}
