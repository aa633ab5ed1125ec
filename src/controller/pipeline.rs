//! The Pipeline controller: renders the collector config, validates it, applies the hash-named
//! ConfigMap and the collector workload, prunes old ConfigMaps and reports status.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tracing::{info, instrument};

use super::pipeline_topk;
use super::shared;
use super::slim::{self, Slim, Slimmable};
use super::{
    Context, StatusWrite, apply_unless_current, collector_uid, create_unless_exists,
    namespaced_api, now, pod_admission, remote_write_check, write_status, write_status_at,
};
use crate::crd::conditions::{self, Condition, ConditionStatus, Progress};
use crate::crd::experiment::Experiment;
use crate::crd::pipeline::{Pipeline, PipelinePhase, PipelineStatus};
use crate::crd::validation;
use crate::desired::children::{self, Grant};
use crate::desired::collector_config::remote_write::RemoteWriteAuth;
use crate::desired::collector_config::{self, RenderContext};
use crate::desired::labels;
use crate::desired::workload::{self, CollectorParams, Workload};
use crate::{Error, Result};

/// The controller's name in metrics and logs.
pub const NAME: &str = "pipeline";
/// Condition reason when the apiserver refused a generated object for good (400/422): the
/// message is the apiserver's.
pub const REFUSED: &str = "Invalid";
/// Condition reason when the operator's collector UID ledger cannot give this namespace a UID.
pub const UID_UNAVAILABLE: &str = "CollectorUidUnavailable";
/// Condition reason when `spec.deployment.nodeSelector` or `tolerations` break Kubernetes' rules.
pub const INVALID_PLACEMENT: &str = "InvalidPlacement";
/// Hash-named ConfigMaps kept besides the current one (for quick rollback and in-flight pods).
pub const KEEP_OLD_CONFIGMAPS: usize = 2;

/// Ready and desired collector pods of the applied workload.
fn collector_counts(workload: &Workload) -> (i32, i32) {
    match workload {
        Workload::DaemonSet(ds) => ds
            .status
            .as_ref()
            .map(|s| (s.number_ready, s.desired_number_scheduled))
            .unwrap_or((0, 0)),
        Workload::Deployment(d) => {
            let desired = d.spec.replicas.unwrap_or(1);
            (
                d.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0),
                desired,
            )
        }
    }
}

/// Whether the applied workload's rollout of the current template has finished.
fn rolled_out(workload: &Workload) -> bool {
    match workload {
        Workload::DaemonSet(ds) => ds.status.as_ref().is_some_and(|s| {
            s.observed_generation == ds.metadata.generation
                && s.updated_number_scheduled.unwrap_or(0) == s.desired_number_scheduled
                && s.number_ready == s.desired_number_scheduled
                && s.desired_number_scheduled > 0
        }),
        Workload::Deployment(d) => d.status.as_ref().is_some_and(|s| {
            s.observed_generation == d.metadata.generation
                && s.updated_replicas.unwrap_or(0) == d.spec.replicas.unwrap_or(1)
                && s.ready_replicas.unwrap_or(0) == d.spec.replicas.unwrap_or(1)
        }),
    }
}

/// The status of a Pipeline whose config rendered and whose workload was applied. Pure.
pub fn ready_status(
    pipeline: &Pipeline,
    hash: &str,
    workload: &Workload,
    previous: &PipelineStatus,
) -> PipelineStatus {
    let generation = pipeline.metadata.generation;
    let (ready, desired) = collector_counts(workload);
    let available = rolled_out(workload);
    let phase = if available {
        PipelinePhase::Ready
    } else if ready > 0 {
        PipelinePhase::Degraded
    } else {
        PipelinePhase::Pending
    };
    let message = if available {
        format!("{ready}/{desired} collectors ready with config {hash}")
    } else {
        format!("rolling out config {hash}: {ready}/{desired} collectors ready")
    };
    let mut conds = previous.conditions.clone();
    let t = now();
    conditions::set_condition(
        &mut conds,
        Condition::new(
            "ConfigValid",
            ConditionStatus::True,
            "Rendered",
            format!("config {hash} rendered and validated"),
            generation,
            t.clone(),
        ),
    );
    let (status, reason) = if available {
        (ConditionStatus::True, "RolledOut")
    } else {
        (ConditionStatus::False, "RollingOut")
    };
    conditions::set_condition(
        &mut conds,
        Condition::new(
            "Available",
            status,
            reason,
            message.clone(),
            generation,
            t.clone(),
        ),
    );
    conditions::set_condition(
        &mut conds,
        Condition::new(
            "Ready",
            status,
            reason,
            message.clone(),
            generation,
            t.clone(),
        ),
    );
    let progress = if available {
        Progress::Current
    } else {
        Progress::InProgress
    };
    conditions::set_progress(&mut conds, progress, reason, &message, generation, t);
    PipelineStatus {
        phase: Some(phase),
        observed_generation: generation,
        conditions: conds,
        config_hash: Some(hash.to_string()),
        config_map: Some(labels::config_map_name(&pipeline.name_any(), hash)),
        ready_collectors: ready,
        desired_collectors: desired,
        ready: Some(format!("{ready}/{desired}")),
        topk_processes: previous.topk_processes.clone(),
        topk_refreshed_at: previous.topk_refreshed_at.clone(),
        message: Some(message),
    }
}

/// The status of a Pipeline whose spec cannot be rendered: the last good config keeps running.
pub fn invalid_status(
    pipeline: &Pipeline,
    reason: &str,
    message: &str,
    previous: &PipelineStatus,
) -> PipelineStatus {
    let generation = pipeline.metadata.generation;
    let mut conds = previous.conditions.clone();
    let t = now();
    let kept = match &previous.config_hash {
        Some(h) => format!("; collectors keep running config {h}"),
        None => String::new(),
    };
    conditions::set_condition(
        &mut conds,
        Condition::new(
            "ConfigValid",
            ConditionStatus::False,
            reason,
            message,
            generation,
            t.clone(),
        ),
    );
    conditions::set_condition(
        &mut conds,
        Condition::new(
            "Ready",
            ConditionStatus::False,
            reason,
            format!("{message}{kept}"),
            generation,
            t.clone(),
        ),
    );
    conditions::set_progress(
        &mut conds,
        Progress::Stalled,
        reason,
        &format!("{message}{kept}"),
        generation,
        t,
    );
    PipelineStatus {
        phase: Some(PipelinePhase::Invalid),
        observed_generation: generation,
        conditions: conds,
        message: Some(format!("invalid config: {message}{kept}")),
        ..previous.clone()
    }
}

#[instrument(skip_all, fields(pipeline = %pipeline.name_any(), namespace = pipeline.namespace().unwrap_or_default()))]
async fn reconcile(pipeline: Arc<Pipeline>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(NAME);
    let name = pipeline.name_any();
    let namespace = pipeline
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<Pipeline> = namespaced_api(&ctx.client, pipeline.as_ref())?;
    let previous = pipeline.status.clone().unwrap_or_default();
    if refused_until_changed(&pipeline) {
        return Ok(Action::await_change());
    }
    // What an Experiment grants its children comes from the live Experiment, never from the
    // Pipeline's own labels or annotations.
    let grant = experiment_grant(&ctx, &namespace, &pipeline).await?;
    let ownership = grant.as_ref().map(Grant::ownership).unwrap_or_default();

    // Build: render and validate the config (pure).
    let remote_write = grant
        .as_ref()
        .and_then(|g| g.remote_write_url.clone())
        .unwrap_or_else(|| ctx.settings.remote_write_url());
    let experiment_label = ownership
        .experiment
        .as_ref()
        .map(|e| crate::desired::children::experiment_label(&namespace, e));
    let exporters_allowed = grant.as_ref().is_none_or(|g| g.allow_extra_exporters);
    let deployment = &pipeline.spec.deployment;
    if let Err(message) = validation::check_placement(
        "spec.deployment",
        &deployment.node_selector,
        &deployment.tolerations,
    ) {
        refuse(&ctx, &api, &pipeline, INVALID_PLACEMENT, message).await?;
        // Permanent until the spec changes: wait for the next watch event.
        return Ok(Action::await_change());
    }
    if let Some(image) = deployment.image.as_deref()
        && !ctx.settings.collector_image_allowed(image)
    {
        let message = format!(
            "spec.deployment.image {image} is not allowed by the operator: collectors mount the host's /proc, so only the operator's collector image or one in --allowed-collector-images (chart value allowedCollectorImages) may run"
        );
        refuse(&ctx, &api, &pipeline, "ImageNotAllowed", message).await?;
        return Ok(Action::await_change());
    }
    let resolved = match header_secret_keys(&ctx, &namespace, &pipeline, exporters_allowed).await? {
        Ok(secrets) => remote_write_auth(&ctx, &namespace, grant.as_ref())
            .await?
            .map(|auth| (secrets, auth)),
        Err(refusal) => Err(refusal),
    };
    let (headers, (remote_write_auth, remote_write_secret)) = match resolved {
        Ok(resolved) => resolved,
        Err(refusal) => {
            refuse(&ctx, &api, &pipeline, refusal.reason(), refusal.to_string()).await?;
            // Secrets are not watched: look again in a while.
            return Ok(Action::requeue(SECRET_RECHECK));
        }
    };
    // A standalone topk Pipeline ranks its top K from its selection source (when due).
    let selection = pipeline_topk::refresh(&ctx, &pipeline, &previous, grant.is_some()).await;
    let render_ctx = RenderContext {
        experiment: experiment_label.as_deref(),
        variant: ownership.variant.as_deref(),
        topk_processes: &selection.processes,
        extra_exporters_allowed: exporters_allowed,
        secret_keys: &headers.keys,
        remote_write_auth: &remote_write_auth,
        ..RenderContext::new(&name, &remote_write)
    };
    let rendered = match collector_config::render(&pipeline.spec, &render_ctx) {
        Ok(r) => r,
        Err(e) => {
            let status = invalid_status(&pipeline, e.reason(), &e.to_string(), &previous);
            if previous.phase != Some(PipelinePhase::Invalid) || previous.message != status.message
            {
                ctx.event(
                    pipeline.as_ref(),
                    EventType::Warning,
                    e.reason(),
                    "Validate",
                    e.to_string(),
                )
                .await;
            }
            write_status(&api, &pipeline, pipeline.status.as_ref(), &status).await?;
            // Permanent until the spec changes: wait for the next watch event.
            return Ok(Action::await_change());
        }
    };

    // The namespace's own collector UID, from the operator's ledger.
    let uid = match collector_uid::collector_uid(&ctx, &namespace).await? {
        Ok(uid) => uid,
        Err(e) => {
            refuse(&ctx, &api, &pipeline, UID_UNAVAILABLE, e.to_string()).await?;
            // The cluster admin's to fix (range or ledger), not the spec's: look again later.
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
    };

    // Apply: the ConfigMap first, so the pods never reference a missing config.
    let owner = pipeline
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let params = CollectorParams {
        name: &name,
        namespace: &namespace,
        owner,
        ownership,
        config_yaml: &rendered.yaml,
        config_hash: &rendered.hash,
        default_image: &ctx.settings.collector_image,
        extra_env: rendered.header_env.iter().map(|h| h.env_var()).collect(),
        secrets_version: headers.version.clone(),
        uid,
        secret_files: rendered.secret_files.clone(),
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let applied = match apply_collectors(&ctx, &config_maps, &pipeline.spec, &params).await {
        Ok(applied) => applied,
        Err(e) => {
            let Some(message) = e.refused_permanently() else {
                return Err(e);
            };
            let status = invalid_status(&pipeline, REFUSED, &message, &previous);
            if previous.message != status.message {
                ctx.event(
                    pipeline.as_ref(),
                    EventType::Warning,
                    REFUSED,
                    "Apply",
                    message,
                )
                .await;
            }
            write_status(&api, &pipeline, pipeline.status.as_ref(), &status).await?;
            // Permanent until the spec changes (see `refused_until_changed`).
            return Ok(Action::await_change());
        }
    };
    // Old ConfigMaps appear only when the hash changes: list and prune only then, so a resync or a
    // status-only event costs no LIST (which would grow with every ConfigMap in the namespace).
    // A Pipeline that never recorded a hash has no older config to prune: a burst of new
    // Pipelines makes no LIST at all.
    if previous
        .config_hash
        .as_deref()
        .is_some_and(|old| old != rendered.hash)
    {
        prune_config_maps(&config_maps, &name, &rendered.hash).await?;
    }

    // Status, guarded by the resourceVersion this pass read: a pass that decided from a stale
    // cached Pipeline (the previous pass's status not seen yet) stores nothing and publishes no
    // Event, so neither a ranking nor a rollout is announced twice.
    let mut status = ready_status(&pipeline, &rendered.hash, &applied, &previous);
    selection.apply_to(&mut status);
    let mut pods_refused = None;
    if let Some(refused) = pod_admission::refusal(&ctx.client, &applied).await? {
        let message = pod_admission::refusal_message(&namespace, &refused);
        pod_admission::mark_refused(&mut status, &message, pipeline.metadata.generation);
        if previous.message != status.message {
            pods_refused = Some(message);
        }
    }
    // The remote-write endpoint, checked when due (see `remote_write_check::due`); true while the
    // check does not pass.
    let recheck_remote_write = remote_write_check::due(&previous, &rendered.hash) && {
        let outcome = check_remote_write(
            &ctx.remote_write_probe,
            &remote_write,
            &remote_write_auth,
            remote_write_secret.as_ref(),
        )
        .await;
        let generation = pipeline.metadata.generation;
        remote_write_check::record(&mut status, &remote_write, &outcome, generation);
        outcome.is_err()
    };
    let version = pipeline.resource_version();
    let written = write_status_at(
        &api,
        pipeline.as_ref(),
        version.as_deref(),
        pipeline.status.as_ref(),
        &status,
    )
    .await?;
    if written == StatusWrite::Conflict {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // Events on what changed, once stored.
    if let Some(message) = pods_refused {
        ctx.event(
            pipeline.as_ref(),
            EventType::Warning,
            pod_admission::PODS_REFUSED,
            "Rollout",
            message,
        )
        .await;
    }
    let refused = conditions::find(&status.conditions, remote_write_check::CONDITION)
        .filter(|c| c.status == ConditionStatus::False)
        .filter(|c| {
            conditions::find(&previous.conditions, remote_write_check::CONDITION) != Some(*c)
        });
    if let Some(c) = refused {
        let (reason, message) = (c.reason.clone(), c.message.clone());
        ctx.event(
            pipeline.as_ref(),
            EventType::Warning,
            &reason,
            "Check",
            message,
        )
        .await;
    }
    topk_events(&ctx, &pipeline, &selection, &previous).await;
    if previous.config_hash.as_deref() != Some(rendered.hash.as_str()) {
        let note = match &previous.config_hash {
            Some(old) => format!("collector config changed {old} → {}", rendered.hash),
            None => format!("collector config {} deployed", rendered.hash),
        };
        ctx.event(
            pipeline.as_ref(),
            EventType::Normal,
            "ConfigChanged",
            "Apply",
            note,
        )
        .await;
    }
    let was_available = conditions::is_true(&previous.conditions, "Available");
    let is_available = conditions::is_true(&status.conditions, "Available");
    if is_available && !was_available {
        let note = format!(
            "{} collectors ready",
            status.ready.clone().unwrap_or_default()
        );
        ctx.event(
            pipeline.as_ref(),
            EventType::Normal,
            "RolledOut",
            "Rollout",
            note,
        )
        .await;
        info!(hash = %rendered.hash, "collectors rolled out");
    }
    if pod_admission::pods_missing(&applied) || recheck_remote_write {
        // The refusal arrives as Events, which are not watched: look again in a while.
        let after = selection
            .next
            .map_or(PODS_MISSING_RECHECK, |n| n.min(PODS_MISSING_RECHECK));
        return Ok(Action::requeue(after));
    }
    // Secrets are not watched: look again in a while, so a rotated one rolls the collectors.
    let secret_recheck = headers.version.as_ref().map(|_| SECRET_RECHECK);
    let next = [selection.next, secret_recheck].into_iter().flatten().min();
    Ok(next.map_or_else(Action::await_change, Action::requeue))
}

/// `TopKRefreshed` when the selection changed, a `TopKRefreshFailed` warning when a ranking
/// failed for a reason not reported yet.
async fn topk_events(
    ctx: &Context,
    pipeline: &Pipeline,
    selection: &pipeline_topk::Selection,
    previous: &PipelineStatus,
) {
    if selection.changed(previous) && !selection.processes.is_empty() {
        let note = format!("keeps {}", selection.processes.join(", "));
        ctx.event(
            pipeline,
            EventType::Normal,
            "TopKRefreshed",
            "Refresh",
            note,
        )
        .await;
    }
    if let Some((reason, message)) = selection.new_failure(previous) {
        let note = format!("{reason}: {message}");
        ctx.event(
            pipeline,
            EventType::Warning,
            "TopKRefreshFailed",
            "Refresh",
            note,
        )
        .await;
    }
}

/// How often a Pipeline whose exporters read Secrets looks at them again (Secrets are not
/// watched): a missing Secret that appears, or a rotated one, takes effect within this time.
const SECRET_RECHECK: Duration = Duration::from_secs(30);

/// Marks `pipeline` `Invalid` with `reason` and `message` (an Event when the message is new);
/// the collectors keep their last good config.
async fn refuse(
    ctx: &Context,
    api: &Api<Pipeline>,
    pipeline: &Pipeline,
    reason: &str,
    message: String,
) -> Result<()> {
    let previous = pipeline.status.clone().unwrap_or_default();
    let status = invalid_status(pipeline, reason, &message, &previous);
    if previous.message != status.message {
        ctx.event(pipeline, EventType::Warning, reason, "Validate", message)
            .await;
    }
    write_status(api, pipeline, pipeline.status.as_ref(), &status)
        .await
        .map(|_| ())
}

/// Re-check interval while collector pods are missing (their refusal comes as Events) or the
/// remote-write endpoint refuses the collectors (Secrets are not watched).
pub const PODS_MISSING_RECHECK: Duration = Duration::from_secs(15);

/// Checks the remote-write endpoint `url` with the collectors' credentials (`auth`, their values
/// from `secret`).
async fn check_remote_write(
    shared: &remote_write_check::SharedProbeClient,
    url: &str,
    auth: &RemoteWriteAuth,
    secret: Option<&Secret>,
) -> Result<(), crate::analysis::access::AccessError> {
    let credentials = remote_write_check::credentials(auth, secret)?;
    remote_write_check::probe(url, &credentials, shared).await
}

/// Applies the ConfigMap (first, so the pods never reference a missing config) and the collector
/// workload, deleting the workload of the other mode.
async fn apply_collectors(
    ctx: &Context,
    config_maps: &Api<ConfigMap>,
    spec: &crate::crd::PipelineSpec,
    params: &CollectorParams<'_>,
) -> Result<Workload> {
    let (name, namespace) = (params.name, params.namespace);
    // What exists comes from the caches of the collectors' objects (synced before this reads).
    if !(ctx.config_maps.ready(namespace).await
        && ctx.daemonsets.ready(namespace).await
        && ctx.deployments.ready(namespace).await)
    {
        return Err(Error::CachesStopped);
    }
    let config_map = async {
        let config_map = workload::config_map(params);
        let cm_name = labels::config_map_name(name, params.config_hash);
        if ctx.config_maps.get(namespace, &cm_name).is_some() {
            return Ok(());
        }
        // Named by its hash: one that exists already (created since the cache last heard) has
        // this very content, and is left as it is.
        create_unless_exists(config_maps, &config_map, "create ConfigMap")
            .await
            .map(drop)
    };
    // The ConfigMap and the removal of the other mode's workload are independent: one round
    // trip of waiting for both, then the workload (which must not reference a missing
    // ConfigMap), unless the cached one already carries this desired state.
    let collector = labels::collector_name(name);
    Ok(match workload::workload(spec, params) {
        Workload::DaemonSet(ds) => {
            let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), namespace);
            let ((), ()) = futures::future::try_join(
                config_map,
                delete_if_cached(ctx, &ctx.deployments, namespace, &collector),
            )
            .await?;
            let live = ctx.daemonsets.get(namespace, &collector).map(|d| d.full());
            Workload::DaemonSet(apply_unless_current(&api, ds, live, "apply DaemonSet").await?)
        }
        Workload::Deployment(d) => {
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
            let ((), ()) = futures::future::try_join(
                config_map,
                delete_if_cached(ctx, &ctx.daemonsets, namespace, &collector),
            )
            .await?;
            let live = ctx.deployments.get(namespace, &collector).map(|d| d.full());
            Workload::Deployment(apply_unless_current(&api, d, live, "apply Deployment").await?)
        }
    })
}

/// Whether this generation was already refused by the apiserver for good (reason [`REFUSED`]):
/// then nothing is applied again until the spec changes. Pure.
pub fn refused_until_changed(pipeline: &Pipeline) -> bool {
    pipeline.status.as_ref().is_some_and(|s| {
        s.phase == Some(PipelinePhase::Invalid)
            && s.observed_generation == pipeline.metadata.generation
            && conditions::find(&s.conditions, "ConfigValid").is_some_and(|c| c.reason == REFUSED)
    })
}

/// The grant of the Experiment controlling `pipeline`, if one does (see [`children::grant`]).
/// Read from the Experiment controller's cache, which holds the Experiment before it creates its
/// children; a GET when the cache does not hold the owner (not synced yet, or only an older
/// Experiment of that name), so a child never renders as standalone for want of a cached owner.
async fn experiment_grant(
    ctx: &Context,
    namespace: &str,
    pipeline: &Pipeline,
) -> Result<Option<Grant>> {
    let Some(owner) = children::experiment_owner(pipeline.owner_references()) else {
        return Ok(None);
    };
    if let Some(cached) = ctx.experiments.get_uid(namespace, &owner.name, &owner.uid) {
        return Ok(children::grant(&pipeline.name_any(), owner, &cached));
    }
    let experiments: Api<Experiment> = Api::namespaced(ctx.client.clone(), namespace);
    let experiment = experiments
        .get_opt(&owner.name)
        .await
        .map_err(Error::kube("get controlling Experiment"))?;
    Ok(experiment.and_then(|e| children::grant(&pipeline.name_any(), owner, &e)))
}

/// Label a Secret must carry (value `"true"`) before Phoenix sends its values as HTTP headers of
/// an extra exporter: whoever may write Pipelines must not be able to ship any Secret of the
/// namespace to an endpoint of their choosing.
pub const EXPORTER_CREDENTIALS: &str = "phoenix.io/exporter-credentials";

/// Why a Secret referenced by `spec.exporters` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretRefusal {
    #[error("Secret {0} referenced by spec.exporters does not exist")]
    NotFound(String),
    #[error(
        "Secret {0} referenced by spec.exporters lacks the label {EXPORTER_CREDENTIALS}=\"true\": Phoenix sends only Secrets opted in for exporter use as HTTP headers (label it to allow)"
    )]
    NotOptedIn(String),
    #[error(
        "remote-write credentials Secret {0} does not exist in the Pipeline's namespace (--remote-write-secret, or the Experiment's spec.prometheus.remoteWriteSecretRef)"
    )]
    RemoteWriteNotFound(String),
    #[error(
        "remote-write credentials Secret {0} (spec.prometheus.remoteWriteSecretRef) lacks the label {EXPORTER_CREDENTIALS}=\"true\": Phoenix sends only Secrets opted in for exporter use (label it to allow)"
    )]
    RemoteWriteNotOptedIn(String),
    #[error("operator settings: {0}")]
    RemoteWriteSettings(String),
}

impl SecretRefusal {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            SecretRefusal::NotFound(_) => "SecretNotFound",
            SecretRefusal::NotOptedIn(_) | SecretRefusal::RemoteWriteNotOptedIn(_) => {
                "SecretNotOptedIn"
            }
            SecretRefusal::RemoteWriteNotFound(_) => "RemoteWriteSecretNotFound",
            SecretRefusal::RemoteWriteSettings(_) => "InvalidRemoteWriteSettings",
        }
    }
}

/// The key names of `secret` (named `name`) if it may be used for exporter headers. Pure.
pub fn exporter_secret_keys(
    name: &str,
    secret: Option<Secret>,
) -> std::result::Result<Vec<String>, SecretRefusal> {
    let secret = secret.ok_or_else(|| SecretRefusal::NotFound(name.to_string()))?;
    if !opted_in(&secret) {
        return Err(SecretRefusal::NotOptedIn(name.to_string()));
    }
    Ok(key_names(secret))
}

/// Whether `secret` carries [`EXPORTER_CREDENTIALS`]`="true"`.
fn opted_in(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(EXPORTER_CREDENTIALS))
        .is_some_and(|v| v == "true")
}

/// The key names of the remote-write credentials Secret `name`: an Experiment's own Secret
/// (`opt_in_required`) must carry [`EXPORTER_CREDENTIALS`]; the operator's global one need not
/// (the operator's admin named it, for the operator's own endpoint). Pure.
pub fn remote_write_secret_keys(
    name: &str,
    secret: Option<Secret>,
    opt_in_required: bool,
) -> std::result::Result<Vec<String>, SecretRefusal> {
    let secret = secret.ok_or_else(|| SecretRefusal::RemoteWriteNotFound(name.to_string()))?;
    if opt_in_required && !opted_in(&secret) {
        return Err(SecretRefusal::RemoteWriteNotOptedIn(name.to_string()));
    }
    Ok(key_names(secret))
}

/// The key names of `secret`, sorted.
fn key_names(secret: Secret) -> Vec<String> {
    let mut names: Vec<String> = secret.data.unwrap_or_default().into_keys().collect();
    names.extend(secret.string_data.unwrap_or_default().into_keys());
    names.sort();
    names.dedup();
    names
}

/// How the collectors authenticate to their remote-write endpoint: with an Experiment's own
/// Prometheus, its `remoteWriteSecretRef` (opted in) and nothing of the operator's; with the
/// operator's `--remote-write-url`, its `--remote-write-secret` and `--remote-write-header`.
/// Also the Secret itself, for [`remote_write_check`].
async fn remote_write_auth(
    ctx: &Context,
    namespace: &str,
    grant: Option<&Grant>,
) -> Result<std::result::Result<(RemoteWriteAuth, Option<Secret>), SecretRefusal>> {
    let own = grant.filter(|g| g.remote_write_url.is_some());
    let (secret, headers) = match own {
        Some(g) => (g.remote_write_secret.clone(), vec![]),
        None => match ctx.settings.remote_write_header_pairs() {
            Ok(headers) => (ctx.settings.remote_write_secret.clone(), headers),
            Err(e) => return Ok(Err(SecretRefusal::RemoteWriteSettings(e))),
        },
    };
    let Some(name) = secret.filter(|s| !s.is_empty()) else {
        let auth = RemoteWriteAuth {
            secret: None,
            headers,
        };
        return Ok(Ok((auth, None)));
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let found = secrets
        .get_opt(&name)
        .await
        .map_err(Error::kube("get remote-write credentials Secret"))?;
    Ok(
        remote_write_secret_keys(&name, found.clone(), own.is_some()).map(|keys| {
            let auth = RemoteWriteAuth {
                secret: Some((name, keys)),
                headers,
            };
            (auth, found)
        }),
    )
}

/// What the Secrets `spec.exporters` reference give the collectors.
struct HeaderSecrets {
    /// Each Secret's key names (never the values): the header names.
    keys: BTreeMap<String, Vec<String>>,
    /// `name=resourceVersion` of each Secret, comma-separated; `None` when no Secret is read.
    version: Option<String>,
}

/// The key names and versions of the Secrets `spec.exporters` reference, or why one of them
/// cannot be used.
async fn header_secret_keys(
    ctx: &Context,
    namespace: &str,
    pipeline: &Pipeline,
    allowed: bool,
) -> Result<std::result::Result<HeaderSecrets, SecretRefusal>> {
    let mut keys = BTreeMap::new();
    let mut versions = Vec::new();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let refs = pipeline
        .spec
        .exporters
        .iter()
        .filter_map(|e| e.headers_secret_ref.as_ref())
        .filter(|_| allowed);
    for r in refs {
        let secret = secrets
            .get_opt(&r.name)
            .await
            .map_err(Error::kube("get exporter Secret"))?;
        let version = secret
            .as_ref()
            .and_then(|s| s.metadata.resource_version.clone())
            .unwrap_or_default();
        match exporter_secret_keys(&r.name, secret) {
            Ok(names) => {
                keys.insert(r.name.clone(), names);
                versions.push(format!("{}={version}", r.name));
            }
            Err(refusal) => return Ok(Err(refusal)),
        }
    }
    let version = (!versions.is_empty()).then(|| versions.join(","));
    Ok(Ok(HeaderSecrets { keys, version }))
}

async fn delete_if_cached<K>(
    ctx: &Context,
    cache: &shared::Stores<Slim<K>>,
    namespace: &str,
    name: &str,
) -> Result<()>
where
    K: Slimmable + serde::de::DeserializeOwned,
{
    // The other mode's workload almost never exists: no request unless the cache holds it (its
    // creation, should the cache not have heard of it yet, reconciles this Pipeline again).
    if cache.get(namespace, name).is_none() {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::Kube {
            step: "delete workload of the other mode",
            source: e,
        }),
    }
}

/// Deletes this Pipeline's hash-named ConfigMaps beyond the current one and the newest
/// [`KEEP_OLD_CONFIGMAPS`] others.
async fn prune_config_maps(api: &Api<ConfigMap>, pipeline: &str, current: &str) -> Result<()> {
    let selector = format!(
        "{}={pipeline},{}=collector-config",
        labels::PIPELINE,
        labels::COMPONENT
    );
    let mut old: Vec<ConfigMap> = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube("list ConfigMaps"))?
        .items
        .into_iter()
        .filter(|cm| cm.name_any() != labels::config_map_name(pipeline, current))
        .collect();
    old.sort_by(|a, b| {
        b.metadata
            .creation_timestamp
            .cmp(&a.metadata.creation_timestamp)
    });
    for cm in old.into_iter().skip(KEEP_OLD_CONFIGMAPS) {
        match api
            .delete(&cm.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                return Err(Error::Kube {
                    step: "delete old ConfigMap",
                    source: e,
                });
            }
        }
    }
    Ok(())
}

fn error_policy(_pipeline: Arc<Pipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    super::retry_after_error(&ctx, NAME, error)
}

/// What the Pipeline controller's cache keeps of a collector ConfigMap: that it exists.
fn trim_config_map(cm: &mut PartialObjectMeta<ConfigMap>) {
    slim::trim_meta(&mut cm.metadata);
}

/// Runs the Pipeline controller over its shared watch (`store`, `applied`) until `shutdown`
/// resolves.
pub async fn run(
    ctx: Arc<Context>,
    store: Store<Pipeline>,
    applied: impl futures::Stream<Item = Arc<Pipeline>> + Send + 'static,
    caches: CollectorCaches,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    ctx.metrics.state.watch_pipelines(store.clone());
    super::shared_controller(store, applied, &ctx.settings)
        .owns_shared_stream(caches.config_maps)
        .owns_shared_stream(caches.daemonsets)
        .owns_shared_stream(caches.deployments)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "pipeline controller event");
            }
        })
        .await;
}

/// The changes of the caches of one scope's collector objects, which reconcile their Pipelines.
pub struct CollectorCaches {
    config_maps: futures::channel::mpsc::UnboundedReceiver<Arc<PartialObjectMeta<ConfigMap>>>,
    daemonsets: futures::channel::mpsc::UnboundedReceiver<Arc<Slim<DaemonSet>>>,
    deployments: futures::channel::mpsc::UnboundedReceiver<Arc<Slim<Deployment>>>,
}

/// Starts the caches of the collectors' objects in `namespace` (`None`: all), trimmed, for the
/// reconciles to read instead of GETs ([`Context::daemonsets`], [`Context::deployments`],
/// [`Context::config_maps`]); returns their changes for [`run`] and the futures that drive them.
pub fn collector_caches(
    ctx: &Context,
    namespace: Option<&str>,
) -> (
    CollectorCaches,
    Vec<futures::future::BoxFuture<'static, ()>>,
) {
    use futures::FutureExt;
    let config_maps = super::scoped_api::<PartialObjectMeta<ConfigMap>>(&ctx.client, namespace);
    let daemonsets = super::scoped_api::<Slim<DaemonSet>>(&ctx.client, namespace);
    let deployments = super::scoped_api::<Slim<Deployment>>(&ctx.client, namespace);
    let managed = super::owned_children(
        "app.kubernetes.io/managed-by=phoenix,app.kubernetes.io/name=phoenix-collector",
    );
    let (ds, ds_driver) = shared::owned_cache(
        watcher::watcher(daemonsets, managed.clone()),
        slim::trim::<DaemonSet>,
    );
    let (deploy, deploy_driver) = shared::owned_cache(
        watcher::watcher(deployments, managed.clone()),
        slim::trim::<Deployment>,
    );
    let (cm, cm_driver) =
        shared::owned_cache(watcher::watcher(config_maps, managed), trim_config_map);
    ctx.daemonsets
        .register_synced(namespace, ds.store, ds.synced);
    ctx.deployments
        .register_synced(namespace, deploy.store, deploy.synced);
    ctx.config_maps
        .register_synced(namespace, cm.store, cm.synced);
    (
        CollectorCaches {
            config_maps: cm.changes,
            daemonsets: ds.changes,
            deployments: deploy.changes,
        },
        vec![ds_driver.boxed(), deploy_driver.boxed(), cm_driver.boxed()],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(labels: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        s.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        s.string_data = Some(BTreeMap::from([("api-key".into(), "v".into())]));
        s
    }

    #[test]
    fn only_opted_in_secrets_give_header_keys() {
        assert_eq!(
            exporter_secret_keys("k", Some(secret(&[(EXPORTER_CREDENTIALS, "true")]))),
            Ok(vec!["api-key".to_string()])
        );
        for labels in [
            &[][..],
            &[(EXPORTER_CREDENTIALS, "yes")],
            &[("other", "true")],
        ] {
            let refusal = exporter_secret_keys("k", Some(secret(labels))).unwrap_err();
            assert_eq!(refusal, SecretRefusal::NotOptedIn("k".into()));
            assert!(refusal.to_string().contains(EXPORTER_CREDENTIALS));
        }
        assert_eq!(
            exporter_secret_keys("k", None),
            Err(SecretRefusal::NotFound("k".into()))
        );
    }

    #[test]
    fn an_experiments_remote_write_secret_must_opt_in_the_operators_need_not() {
        let plain = secret(&[]);
        assert_eq!(
            remote_write_secret_keys("rw", Some(plain.clone()), false),
            Ok(vec!["api-key".to_string()])
        );
        let refusal = remote_write_secret_keys("rw", Some(plain), true).unwrap_err();
        assert_eq!(refusal.reason(), "SecretNotOptedIn");
        assert!(
            refusal.to_string().contains("remoteWriteSecretRef"),
            "{refusal}"
        );
        assert_eq!(
            remote_write_secret_keys("rw", Some(secret(&[(EXPORTER_CREDENTIALS, "true")])), true),
            Ok(vec!["api-key".to_string()])
        );
        assert_eq!(
            remote_write_secret_keys("rw", None, false).map_err(|r| r.reason()),
            Err("RemoteWriteSecretNotFound")
        );
    }
}
