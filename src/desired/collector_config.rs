//! The OpenTelemetry collector config of a Pipeline, rendered from its template as YAML with a
//! stable key order (its SHA-256 names the ConfigMap and rolls the pods), plus the structural
//! validation behind the Pipeline's `ConfigValid` condition. Pure functions: no I/O.
//!
//! What every rendered config has, whatever the template:
//! - receiver `hostmetrics` (`root_path` = [`RenderContext::proc_root`], the `process` scraper
//!   with every `mute_process_*_error` flag, default metrics) feeding the process-metric
//!   pipelines (see [`templates`] for their shape);
//! - receiver `otlp/self` on `127.0.0.1:<self_telemetry_port>` (OTLP/HTTP) receiving the
//!   collector's own telemetry, which `service.telemetry.metrics` pushes there every collection
//!   interval, and pipeline `metrics/self` sending it on: collector CPU, RSS and points
//!   accepted/sent reach Prometheus with the same `phoenix_*` labels as the process metrics;
//! - unless `spec.sensitiveAttributes` is `Keep`, processor `transform/phoenix_sensitive` in
//!   every process-metric pipeline, before any processor but `memory_limiter` and Phoenix's
//!   executable-name filters: the command line, command and owner leave hashed or not at all;
//! - processors `memory_limiter` first and `batch` last in every pipeline, `resource/phoenix`
//!   before `batch` upserting `phoenix_experiment`, `phoenix_variant`, `phoenix_pipeline` and
//!   `phoenix_node` (`${env:PHOENIX_NODE_NAME}`, from the downward API);
//! - exporter `prometheusremotewrite` (resource attributes become labels) and, when allowed, one
//!   `otlphttp/<name>` per `spec.exporters` entry, its headers read from env vars the pod maps
//!   from the referenced Secret ([`HeaderEnv`]);
//! - extension `health_check` on `0.0.0.0:<health_port>`, path `/`.
//!
//! User-provided strings can never trigger the collector's `${...}` expansion (see [`escape`]).

mod error;
pub mod escape;
pub mod remote_write;
pub mod templates;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::crd::pipeline::PipelineSpec;

pub use error::ConfigError;
pub use validate::{
    EXPORTER_TYPES, EXTENSION_TYPES, PROCESSOR_TYPES, RECEIVER_TYPES, validate_spec,
    validate_structure, with_re2_semantics,
};

/// Env var holding the node name (downward API `spec.nodeName`), the `phoenix_node` label.
pub const NODE_NAME_ENV: &str = "PHOENIX_NODE_NAME";
/// Default port of the `health_check` extension (inside the pod's own network namespace).
pub const DEFAULT_HEALTH_PORT: u16 = 13133;
/// Default port of the `otlp/self` receiver (loopback, inside the pod's network namespace).
pub const DEFAULT_SELF_TELEMETRY_PORT: u16 = 8888;
/// Default hostmetrics `root_path`: the host's /proc is mounted at `/hostfs/proc`.
pub const DEFAULT_PROC_ROOT: &str = "/hostfs";
/// Label value of `phoenix_experiment` / `phoenix_variant` for a Pipeline outside an Experiment
/// (an empty value would make Prometheus drop the label).
pub const STANDALONE: &str = "none";
/// The resource attribute every template filters and groups on.
pub const EXECUTABLE_NAME: &str = "process.executable.name";
/// Marker resource attribute on rolled-up series: `executable`, `category` or `other`
/// (label `phoenix_rollup`).
pub const ROLLUP_ATTRIBUTE: &str = "phoenix.rollup";
/// The executable name of everything topk does not keep and of processes in no category.
pub const OTHER: &str = "other";
/// The pipeline of the collector's own telemetry.
pub const SELF_PIPELINE: &str = "metrics/self";

const MEMORY_LIMITER: &str = "memory_limiter";
const BATCH: &str = "batch";
const RESOURCE: &str = "resource/phoenix";
const HOSTMETRICS: &str = "hostmetrics";
const OTLP_SELF: &str = "otlp/self";
const REMOTE_WRITE: &str = "prometheusremotewrite";
const HEALTH_CHECK: &str = "health_check";
/// Processor ids Phoenix adds itself (besides every `*/phoenix*` id); custom specs can't use them.
const RESERVED_PROCESSOR_IDS: &[&str] = &[MEMORY_LIMITER, BATCH];

/// Everything besides the spec that the rendered config depends on.
#[derive(Clone, Debug)]
pub struct RenderContext<'a> {
    /// Pipeline name: label `phoenix_pipeline`.
    pub pipeline: &'a str,
    /// Owning Experiment: label `phoenix_experiment` ([`STANDALONE`] when `None`).
    pub experiment: Option<&'a str>,
    /// `baseline` | `candidate`: label `phoenix_variant` ([`STANDALONE`] when `None`).
    pub variant: Option<&'a str>,
    /// Prometheus remote-write endpoint, e.g. `http://prometheus:9090/api/v1/write`.
    pub remote_write_url: &'a str,
    /// topk: executable names to keep (from Prometheus), besides `spec.topk.processes`.
    pub topk_processes: &'a [String],
    /// Whether `spec.exporters` are rendered (an operator setting); when false they are ignored.
    pub extra_exporters_allowed: bool,
    /// Key names (never values) of the Secrets that `spec.exporters` reference: Secret name →
    /// keys. Each key becomes a header whose value the pod reads from the Secret through an env
    /// var ([`RenderedConfig::header_env`]).
    pub secret_keys: &'a BTreeMap<String, Vec<String>>,
    /// `health_check` port.
    pub health_port: u16,
    /// `otlp/self` port (loopback).
    pub self_telemetry_port: u16,
    /// hostmetrics `root_path`; the scraper reads `<proc_root>/proc`.
    pub proc_root: &'a str,
    /// How the collectors authenticate to `remote_write_url` (see [`remote_write`]).
    pub remote_write_auth: &'a remote_write::RemoteWriteAuth,
}

static NO_SECRETS: BTreeMap<String, Vec<String>> = BTreeMap::new();
static NO_REMOTE_WRITE_AUTH: remote_write::RemoteWriteAuth = remote_write::RemoteWriteAuth {
    secret: None,
    headers: Vec::new(),
};

impl<'a> RenderContext<'a> {
    /// A standalone Pipeline's context with the default ports and mounts, no topk list and no
    /// extra exporters.
    pub fn new(pipeline: &'a str, remote_write_url: &'a str) -> Self {
        RenderContext {
            pipeline,
            experiment: None,
            variant: None,
            remote_write_url,
            topk_processes: &[],
            extra_exporters_allowed: false,
            secret_keys: &NO_SECRETS,
            health_port: DEFAULT_HEALTH_PORT,
            self_telemetry_port: DEFAULT_SELF_TELEMETRY_PORT,
            proc_root: DEFAULT_PROC_ROOT,
            remote_write_auth: &NO_REMOTE_WRITE_AUTH,
        }
    }
}

/// An env var the collector container needs from a Secret: the value of one header of an extra
/// exporter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderEnv {
    /// Env var name, `PHOENIX_HDR_<EXPORTER>_<KEY>` (upper case, other characters as `_`).
    pub env: String,
    /// Exporter name (`spec.exporters[].name`).
    pub exporter: String,
    /// Secret name.
    pub secret: String,
    /// Key in the Secret (= header name).
    pub key: String,
}

impl HeaderEnv {
    /// The container env var: `valueFrom.secretKeyRef`.
    pub fn env_var(&self) -> EnvVar {
        EnvVar {
            name: self.env.clone(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: self.secret.clone(),
                    key: self.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }
    }
}

/// A rendered collector config.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedConfig {
    /// The config file.
    pub yaml: String,
    /// First 8 hex digits of the SHA-256 of `yaml`.
    pub hash: String,
    /// Env vars the pod must get from Secrets (exporter headers, remote-write credentials),
    /// sorted by env name.
    pub header_env: Vec<HeaderEnv>,
    /// The remote-write credentials Secret and the keys the pod mounts from it as files under
    /// [`remote_write::MOUNT_DIR`] (TLS material), if any.
    pub secret_files: Option<(String, Vec<String>)>,
    /// The typed form `yaml` was serialized from.
    pub config: CollectorConfig,
}

/// A component's configuration: any YAML mapping (or null). Serialized with its keys sorted, so
/// the output does not depend on how the value was built.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(transparent)]
pub struct Component(pub Value);

impl Serialize for Component {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Sorted(&self.0).serialize(s)
    }
}

struct Sorted<'a>(&'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut m = s.serialize_map(Some(keys.len()))?;
                for k in keys {
                    m.serialize_entry(k, &Sorted(&map[k]))?;
                }
                m.end()
            }
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Sorted(item))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

/// A collector config file (the parts Phoenix writes).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct CollectorConfig {
    #[serde(default)]
    pub receivers: BTreeMap<String, Component>,
    #[serde(default)]
    pub processors: BTreeMap<String, Component>,
    #[serde(default)]
    pub exporters: BTreeMap<String, Component>,
    #[serde(default)]
    pub extensions: BTreeMap<String, Component>,
    pub service: Service,
}

/// The `service` section.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Service {
    #[serde(default)]
    pub extensions: Vec<String>,
    pub pipelines: BTreeMap<String, PipelineConfig>,
    #[serde(default)]
    pub telemetry: Component,
}

/// One pipeline of the `service` section.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct PipelineConfig {
    pub receivers: Vec<String>,
    #[serde(default)]
    pub processors: Vec<String>,
    pub exporters: Vec<String>,
}

impl CollectorConfig {
    /// Parses a collector config file.
    pub fn from_yaml(yaml: &str) -> Result<Self, serde_yaml::Error> {
        serde_yaml::from_str(yaml)
    }
}

/// Renders the collector config of `spec`: validates the spec, builds the config, validates its
/// structure, serializes and hashes it.
pub fn render(spec: &PipelineSpec, ctx: &RenderContext) -> Result<RenderedConfig, ConfigError> {
    validate_spec(spec)?;
    let (config, header_env, secret_files) = build(spec, ctx)?;
    validate_structure(&config)?;
    let body = serde_yaml::to_string(&config).map_err(|e| ConfigError::Serialize(e.to_string()))?;
    let yaml = format!(
        "# OpenTelemetry collector config of Pipeline {} (template {}), rendered by Phoenix. Do not edit.\n{body}",
        ctx.pipeline,
        spec.template.as_str()
    );
    let hash = hash8(&yaml);
    Ok(RenderedConfig {
        yaml,
        hash,
        header_env,
        secret_files,
        config,
    })
}

/// First 8 hex digits of the SHA-256 of `text`.
pub fn hash8(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A built config, the env vars it needs from Secrets, and the Secret files it reads.
type Built = (
    CollectorConfig,
    Vec<HeaderEnv>,
    Option<(String, Vec<String>)>,
);

fn build(spec: &PipelineSpec, ctx: &RenderContext) -> Result<Built, ConfigError> {
    let interval = spec.collection_interval.get();
    let mut c = CollectorConfig::default();
    let component = |v: Value| Component(v);

    c.receivers.insert(
        HOSTMETRICS.into(),
        component(json!({
            "root_path": ctx.proc_root,
            "collection_interval": escape::confmap(spec.collection_interval.as_str()),
            "scrapers": {"process": {
                "mute_process_name_error": true,
                "mute_process_exe_error": true,
                "mute_process_io_error": true,
                "mute_process_user_error": true,
                "mute_process_cgroup_error": true,
                "metrics": {
                    "process.cpu.time": {"enabled": true},
                    "process.memory.usage": {"enabled": true},
                    "process.memory.virtual": {"enabled": true},
                    "process.disk.io": {"enabled": true},
                },
            }},
        })),
    );
    c.receivers.insert(
        OTLP_SELF.into(),
        component(json!({"protocols": {"http": {
            "endpoint": format!("127.0.0.1:{}", ctx.self_telemetry_port),
        }}})),
    );

    c.processors.insert(
        MEMORY_LIMITER.into(),
        component(json!({
            "check_interval": "1s",
            "limit_percentage": 80,
            "spike_limit_percentage": 20,
        })),
    );
    c.processors.insert(BATCH.into(), component(json!({})));
    let label = |key: &str, value: &str| json!({"key": key, "value": value, "action": "upsert"});
    c.processors.insert(
        RESOURCE.into(),
        component(json!({"attributes": [
            label("phoenix_experiment", &escape::confmap(ctx.experiment.unwrap_or(STANDALONE))),
            label("phoenix_variant", &escape::confmap(ctx.variant.unwrap_or(STANDALONE))),
            label("phoenix_pipeline", &escape::confmap(ctx.pipeline)),
            label("phoenix_node", &format!("${{env:{NODE_NAME_ENV}}}")),
        ]})),
    );

    let auth = remote_write::plan(ctx.remote_write_auth)?;
    let mut remote_write = json!({
            // From an Experiment's `spec.prometheus.url`: user text like any other.
            "endpoint": escape::confmap(ctx.remote_write_url),
            "resource_to_telemetry_conversion": {"enabled": true},
            "target_info": {"enabled": false},
            // One request at a time keeps each series' samples in order (Prometheus rejects a
            // whole remote-write request with an out-of-order sample). The queue has one worker
            // unless a feature gate says otherwise.
            "max_batch_request_parallelism": 1,
    });
    for (field, value) in auth.exporter {
        remote_write[field] = value;
    }
    c.exporters
        .insert(REMOTE_WRITE.into(), component(remote_write));
    let (extra_exporters, mut header_env) = if ctx.extra_exporters_allowed {
        extra_exporters(spec, ctx, &mut c)?
    } else {
        (vec![], vec![])
    };
    header_env.extend(auth.env);
    header_env.sort_by(|a, b| a.env.cmp(&b.env));
    let secret_files = ctx
        .remote_write_auth
        .secret
        .as_ref()
        .filter(|_| !auth.files.is_empty())
        .map(|(secret, _)| (secret.clone(), auth.files));

    c.extensions.insert(
        HEALTH_CHECK.into(),
        component(json!({"endpoint": format!("0.0.0.0:{}", ctx.health_port), "path": "/"})),
    );
    c.service.extensions = vec![HEALTH_CHECK.into()];
    if let Some((id, config)) = auth.extension {
        c.extensions.insert(id.clone(), Component(config));
        c.service.extensions.push(id);
    }

    let plan = templates::plan(spec, ctx);
    for (id, config) in plan.processors {
        c.processors.insert(id, Component(config));
    }
    let mut exporters = vec![REMOTE_WRITE.to_string()];
    exporters.extend(extra_exporters);
    let wrap = |chain: Vec<String>| {
        let mut processors = vec![MEMORY_LIMITER.to_string()];
        processors.extend(chain);
        processors.extend([RESOURCE.to_string(), BATCH.to_string()]);
        processors
    };
    for (name, chain) in plan.pipelines {
        c.service.pipelines.insert(
            name.into(),
            PipelineConfig {
                receivers: vec![HOSTMETRICS.into()],
                processors: wrap(chain),
                exporters: exporters.clone(),
            },
        );
    }
    c.service.pipelines.insert(
        SELF_PIPELINE.into(),
        PipelineConfig {
            receivers: vec![OTLP_SELF.into()],
            processors: wrap(vec![]),
            exporters: vec![REMOTE_WRITE.into()],
        },
    );
    c.service.telemetry = component(json!({"metrics": {
        "level": "normal",
        "readers": [{"periodic": {
            "interval": u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            "exporter": {"otlp": {
                "protocol": "http/protobuf",
                "endpoint": format!("http://127.0.0.1:{}/v1/metrics", ctx.self_telemetry_port),
            }},
        }}],
    }}));
    Ok((c, header_env, secret_files))
}

/// Adds `otlphttp/<name>` per `spec.exporters` entry; returns their ids and the header env vars.
fn extra_exporters(
    spec: &PipelineSpec,
    ctx: &RenderContext,
    c: &mut CollectorConfig,
) -> Result<(Vec<String>, Vec<HeaderEnv>), ConfigError> {
    let mut ids = vec![];
    let mut envs: BTreeMap<String, HeaderEnv> = BTreeMap::new();
    for e in &spec.exporters {
        let id = format!("otlphttp/{}", e.name);
        let mut config = json!({"endpoint": escape::confmap(&e.endpoint)});
        if let Some(secret) = &e.headers_secret_ref {
            let keys = ctx.secret_keys.get(&secret.name).ok_or_else(|| {
                ConfigError::MissingSecretKeys {
                    exporter: e.name.clone(),
                    secret: secret.name.clone(),
                }
            })?;
            let mut headers = serde_json::Map::new();
            for key in keys {
                if key.is_empty() || !key.bytes().all(is_header_token) {
                    return Err(ConfigError::InvalidHeaderName {
                        exporter: e.name.clone(),
                        secret: secret.name.clone(),
                        key: key.clone(),
                    });
                }
                let env = format!("PHOENIX_HDR_{}_{}", env_part(&e.name), env_part(key));
                if envs.contains_key(&env) {
                    return Err(ConfigError::HeaderKeyCollision {
                        exporter: e.name.clone(),
                        key: key.clone(),
                        env,
                    });
                }
                headers.insert(key.clone(), Value::String(format!("${{env:{env}}}")));
                envs.insert(
                    env.clone(),
                    HeaderEnv {
                        env,
                        exporter: e.name.clone(),
                        secret: secret.name.clone(),
                        key: key.clone(),
                    },
                );
            }
            config["headers"] = Value::Object(headers);
        }
        c.exporters.insert(id.clone(), Component(config));
        ids.push(id);
    }
    Ok((ids, envs.into_values().collect()))
}

/// An HTTP header name character (RFC 9110 `tchar`).
fn is_header_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn env_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}
