//! The reconcile drivers: one controller per kind, sharing a [`Context`]. Each reconcile is
//! observe → build (pure, in `crate::desired`) → server-side apply → status.

pub mod analysis_turns;
pub mod collector_uid;
pub mod events;
pub mod experiment;
pub mod experiment_phase;
pub mod pipeline;
pub mod pipeline_topk;
pub mod pod_admission;
pub mod remote_write_check;
pub mod shared;
pub mod simulation;
pub mod slim;

use std::fmt::Debug;
use std::sync::Arc;

use futures::FutureExt;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Controller;
use kube::runtime::events::EventType;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::desired::labels::FIELD_MANAGER;
use crate::settings::Settings;
use crate::telemetry::Metrics;
use crate::{Error, Result};

/// Objects per page when a watch lists (at start and after a relist): bounds what one LIST
/// response holds in memory at once, at the cost of more requests (kube's default is 500).
pub const LIST_PAGE_SIZE: u32 = 100;

/// The watch configuration of the children a controller owns and caches (see
/// [`shared::owned_cache`]): Phoenix-managed objects only, listed in pages of [`LIST_PAGE_SIZE`].
pub fn owned_children(labels: &str) -> watcher::Config {
    watcher::Config::default()
        .labels(labels)
        .page_size(LIST_PAGE_SIZE)
}

/// A controller of `K` whose cache holds the objects without what no reconcile reads (see
/// [`trim_for_cache`]). Lists in pages of [`LIST_PAGE_SIZE`] and retries a failed watch with
/// kube's default backoff (all watches share one HTTP/2 connection, so a dropped connection
/// fails them together); runs at most
/// `settings.max_concurrent_reconciles` reconciles at once.
pub fn trimmed_controller<K>(api: Api<K>, settings: &Settings) -> Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let writer = reflector::store::Writer::<K>::default();
    let reader = writer.as_reader();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default().page_size(LIST_PAGE_SIZE))
            .default_backoff()
            .modify(trim_for_cache),
    )
    .applied_objects();
    Controller::for_stream(stream, reader).with_config(
        kube::runtime::controller::Config::default()
            .concurrency(settings.max_concurrent_reconciles.max(1)),
    )
}

/// A controller of `K` over a [`shared::SharedWatch`]: its store and the objects it applies
/// (the kind's own events); runs at most `settings.max_concurrent_reconciles` reconciles at once.
pub fn shared_controller<K>(
    store: reflector::Store<K>,
    applied: impl futures::Stream<Item = Arc<K>> + Send + 'static,
    settings: &Settings,
) -> Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    Controller::for_shared_stream(applied, store).with_config(
        kube::runtime::controller::Config::default()
            .concurrency(settings.max_concurrent_reconciles.max(1)),
    )
}

/// What a cached object need not keep, as no reconcile reads it: `metadata.managedFields` (for
/// objects written by server-side apply often the largest part of the metadata) and the
/// `kubectl.kubernetes.io/last-applied-configuration` annotation (`kubectl apply` keeps a whole
/// copy of the object there).
pub fn trim_for_cache<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// The annotation in which client-side `kubectl apply` keeps the object it last applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What every reconcile gets.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub recorder: events::EventRecorder,
    /// The HTTP client every query to Prometheus goes through (`--prometheus-*` settings).
    pub prometheus: crate::analysis::access::SharedClient,
    /// The HTTP client of the Pipelines' remote-write checks (see
    /// [`remote_write_check::SharedProbeClient`]).
    pub remote_write_probe: remote_write_check::SharedProbeClient,
    /// Turns for analyses in flight (`--max-concurrent-analyses`).
    pub analyses: analysis_turns::AnalysisTurns,
    /// Collector UIDs already read from or recorded in the ledger.
    pub uids: collector_uid::UidCache,
    /// The Experiment controllers' caches, read by the Pipeline controller.
    pub experiments: shared::Stores<crate::crd::Experiment>,
    /// The Pipeline controllers' caches, read by the Experiment controller.
    pub pipelines: shared::Stores<crate::crd::Pipeline>,
    /// The Simulation controllers' caches, read by the Experiment controller.
    pub simulations: shared::Stores<crate::crd::Simulation>,
    /// The Pipeline controllers' caches of their collectors' DaemonSets, Deployments (slim
    /// copies: see [`slim`]) and ConfigMaps (metadata).
    pub daemonsets: shared::Stores<slim::Slim<k8s_openapi::api::apps::v1::DaemonSet>>,
    pub deployments: shared::Stores<slim::Slim<k8s_openapi::api::apps::v1::Deployment>>,
    pub config_maps:
        shared::Stores<kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::ConfigMap>>,
    /// The Simulation controllers' caches of their simulator Jobs (trimmed).
    pub jobs: shared::Stores<slim::Slim<k8s_openapi::api::batch::v1::Job>>,
}

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Self {
        let recorder = events::EventRecorder::new(
            client.clone(),
            FIELD_MANAGER.to_string(),
            settings
                .identity
                .clone()
                .unwrap_or_else(|| FIELD_MANAGER.to_string()),
        );
        let analyses = analysis_turns::AnalysisTurns::new(settings.max_concurrent_analyses);
        Context {
            prometheus: crate::analysis::access::SharedClient::new(settings.prometheus.clone()),
            remote_write_probe: Default::default(),
            client,
            settings,
            metrics,
            recorder,
            analyses,
            uids: collector_uid::UidCache::default(),
            experiments: Default::default(),
            pipelines: Default::default(),
            simulations: Default::default(),
            daemonsets: Default::default(),
            deployments: Default::default(),
            config_maps: Default::default(),
            jobs: Default::default(),
        }
    }

    /// Publishes an Event on `obj`. Events are best effort: a failure is logged, never fatal.
    pub async fn event<K>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) where
        K: Resource<DynamicType = ()>,
    {
        let regarding = obj.object_ref(&());
        if let Err(e) = self
            .recorder
            .publish(&regarding, type_, reason, action, note)
            .await
        {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }
}

/// The namespaced API of `K` where `obj` lives.
pub fn namespaced_api<K, O>(client: &Client, obj: &O) -> Result<Api<K>>
where
    K: Resource<Scope = NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
    O: ResourceExt,
{
    let ns = obj
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    Ok(Api::namespaced(client.clone(), &ns))
}

/// Server-side applies `obj` with Phoenix's field manager, taking ownership of every field set.
pub async fn apply<K>(api: &Api<K>, obj: &K, step: &'static str) -> Result<K>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
    <K as Resource>::DynamicType: Default,
{
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))?;
    let mut obj = obj.clone();
    // Server-side apply bodies must carry apiVersion and kind.
    let body = with_type_meta(&mut obj)?;
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await
    .map_err(Error::kube(step))
}

/// Creates `obj` with Phoenix's field manager unless its name is taken (409): an object of that
/// name is left untouched (created, never applied over), whoever made it. The created object;
/// `None` when the name was taken.
pub async fn create_unless_exists<K>(api: &Api<K>, obj: &K, step: &'static str) -> Result<Option<K>>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let params = kube::api::PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    match api.create(&params, obj).await {
        Ok(created) => Ok(Some(created)),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(source) => Err(Error::Kube { step, source }),
    }
}

/// Annotation on generated workloads: the hash of the desired state Phoenix last applied.
pub const APPLIED_HASH: &str = "phoenix.io/applied-hash";

/// Applies `obj` unless `live` (the object as just read; `None`: it does not exist) already
/// carries the hash of this exact desired state, so an unchanged desired state costs its read and
/// no write (a restarted operator resyncs without writing). Edits made by hand to a generated
/// object are corrected at the next change of its desired state. The caller reads `live`, so it
/// can read it alongside other requests.
pub async fn apply_unless_current<K>(
    api: &Api<K>,
    mut obj: K,
    live: Option<K>,
    step: &'static str,
) -> Result<K>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
    <K as Resource>::DynamicType: Default,
{
    let desired = serde_json::to_string(&obj).map_err(|source| Error::Serialize {
        what: "object",
        source,
    })?;
    let hash = crate::desired::collector_config::hash8(&desired);
    obj.meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(APPLIED_HASH.to_string(), hash.clone());
    if let Some(live) = live
        && live
            .meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get(APPLIED_HASH))
            == Some(&hash)
    {
        return Ok(live);
    }
    apply(api, &obj, step).await
}

fn with_type_meta<K>(obj: &mut K) -> Result<serde_json::Value>
where
    K: Resource + Serialize,
    <K as Resource>::DynamicType: Default,
{
    let dt = K::DynamicType::default();
    let mut value = serde_json::to_value(&*obj).map_err(|source| Error::Serialize {
        what: "object",
        source,
    })?;
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), K::api_version(&dt).into());
        map.insert("kind".into(), K::kind(&dt).into());
        map.remove("status");
    }
    Ok(value)
}

/// Writes `status` on the status subresource (server-side apply), only when it differs from what
/// is stored, so an unchanged observation never produces a write or a watch event.
pub async fn write_status<K, S>(
    api: &Api<K>,
    obj: &K,
    current: Option<&S>,
    status: &S,
) -> Result<bool>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    <K as Resource>::DynamicType: Default,
    S: Serialize + PartialEq,
{
    let written = write_status_at(api, obj, None, current, status).await?;
    Ok(written == StatusWrite::Written)
}

/// What [`write_status_at`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusWrite {
    /// The status was already stored: no request.
    Unchanged,
    /// The status was written.
    Written,
    /// The object changed since `resource_version` was read: nothing written.
    Conflict,
}

/// Like [`write_status`], with optimistic concurrency when `resource_version` is given: the write
/// only lands on the object version the caller decided from (a 409 becomes
/// [`StatusWrite::Conflict`]), so a decision made from a stale cache is never stored.
pub async fn write_status_at<K, S>(
    api: &Api<K>,
    obj: &K,
    resource_version: Option<&str>,
    current: Option<&S>,
    status: &S,
) -> Result<StatusWrite>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    <K as Resource>::DynamicType: Default,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(StatusWrite::Unchanged);
    }
    let dt = K::DynamicType::default();
    let mut body = serde_json::json!({
        "apiVersion": K::api_version(&dt),
        "kind": K::kind(&dt),
        "status": status,
    });
    if let Some(rv) = resource_version {
        body["metadata"] = serde_json::json!({ "resourceVersion": rv });
    }
    match api
        .patch_status(
            &obj.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
    {
        Ok(_) => Ok(StatusWrite::Written),
        Err(kube::Error::Api(e)) if e.code == 409 && resource_version.is_some() => {
            Ok(StatusWrite::Conflict)
        }
        Err(source) => Err(Error::Kube {
            step: "write status",
            source,
        }),
    }
}

/// The error policy of every controller: count the error by reason, log it, retry in 5 s.
/// Permanent problems never reach it: they become conditions and wait for a spec change. A
/// namespace being deleted is waited out: its deletion deletes the object (or changes it, which
/// reconciles it again), and retrying every 5 s would only hammer the apiserver with creates it
/// must refuse, for every object of the namespace, until it is gone.
pub fn retry_after_error(
    ctx: &Context,
    controller: &str,
    error: &Error,
) -> kube::runtime::controller::Action {
    ctx.metrics.error(controller, error.reason());
    if error.namespace_terminating() {
        tracing::debug!(%error, controller, "namespace being deleted; waiting for the object's deletion");
        return kube::runtime::controller::Action::await_change();
    }
    tracing::warn!(%error, controller, "reconcile failed; retrying in 5s");
    kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(5))
}

/// Now, as a Kubernetes timestamp.
pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}

/// A future that resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// The API of `K` in `namespace`, or across all namespaces (`None`).
pub fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs every controller for each watched namespace (or all namespaces) until `stop` turns true;
/// in-flight reconciles finish first.
pub async fn run_all(
    ctx: Arc<Context>,
    namespaces: &[String],
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    let mut tasks = Vec::new();
    for ns in scopes {
        // One watch of Pipelines and one of Simulations per scope: each kind's controller and
        // the Experiment controller (their owner, reading them from these stores) share it.
        let scope = ns.as_deref();
        let (pipelines, pipelines_driver) = shared::shared_watch(scoped_api(&ctx.client, scope));
        let (sims, sims_driver) = shared::shared_watch(scoped_api(&ctx.client, scope));
        ctx.pipelines
            .register_synced(scope, pipelines.store.clone(), pipelines.synced.clone());
        ctx.simulations
            .register_synced(scope, sims.store.clone(), sims.synced.clone());
        // The caches of the objects the Pipeline and Simulation controllers own.
        let (collector_caches, mut drivers) = pipeline::collector_caches(&ctx, scope);
        let (jobs, jobs_driver) = simulation::job_cache(&ctx, scope);
        drivers.extend([
            pipelines_driver.boxed(),
            sims_driver.boxed(),
            jobs_driver.boxed(),
        ]);
        // Each watch runs in its own task until `stop`, apart from the controllers (whose
        // triggers pause during a backoff); once they end, a reconcile still waiting for a
        // first list gets `false`, not a hang.
        for driver in drivers {
            let s = stop.clone();
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    () = driver => {}
                    () = stopped(s) => {}
                }
            }));
        }
        let owned_pipelines = pipelines.touched;
        let owned_sims = sims.touched;
        let (c, s) = (ctx.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            pipeline::run(
                c,
                pipelines.store,
                pipelines.applied,
                collector_caches,
                stopped(s),
            )
            .await
        }));
        let (c, s) = (ctx.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            simulation::run(c, sims.store, sims.applied, jobs, stopped(s)).await
        }));
        let (c, s, n) = (ctx.clone(), stop.clone(), ns.clone());
        tasks.push(tokio::spawn(async move {
            experiment::run(c, n.as_deref(), owned_pipelines, owned_sims, stopped(s)).await
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Waits until every watched kind can be listed in every watched scope (CRDs installed, RBAC
/// granted): the point from which the controllers' watches can sync. Retries every 5 s, logging
/// what is missing.
pub async fn wait_for_api(client: &Client, namespaces: &[String]) {
    use crate::crd::{Experiment, Pipeline, Simulation};
    use kube::api::ListParams;
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let probe = ListParams::default().limit(1);
    loop {
        let mut missing = Vec::new();
        for ns in &scopes {
            let (e, p, s): (Api<Experiment>, Api<Pipeline>, Api<Simulation>) = match ns {
                Some(ns) => (
                    Api::namespaced(client.clone(), ns),
                    Api::namespaced(client.clone(), ns),
                    Api::namespaced(client.clone(), ns),
                ),
                None => (
                    Api::all(client.clone()),
                    Api::all(client.clone()),
                    Api::all(client.clone()),
                ),
            };
            if let Err(err) = e.list(&probe).await {
                missing.push(format!("experiments: {err}"));
            }
            if let Err(err) = p.list(&probe).await {
                missing.push(format!("pipelines: {err}"));
            }
            if let Err(err) = s.list(&probe).await {
                missing.push(format!("simulations: {err}"));
            }
        }
        if missing.is_empty() {
            return;
        }
        tracing::warn!(missing = %missing.join("; "), "cannot list Phoenix resources yet (CRDs installed? RBAC?); retrying in 5s");
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    #[test]
    fn the_cache_keeps_no_managed_fields_and_no_kubectl_copy_of_the_object() {
        let mut pipeline = crate::crd::Pipeline::new(
            "p",
            serde_yaml::from_str("template: baseline").expect("spec"),
        );
        pipeline.metadata = ObjectMeta {
            name: Some("p".into()),
            managed_fields: Some(vec![Default::default()]),
            annotations: Some(
                [
                    (
                        LAST_APPLIED.to_string(),
                        "{\"kind\":\"Pipeline\"}".to_string(),
                    ),
                    ("team.example.com/owner".to_string(), "obs".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        };
        trim_for_cache(&mut pipeline);
        assert_eq!(pipeline.metadata.managed_fields, None);
        assert_eq!(
            pipeline.metadata.annotations,
            Some([("team.example.com/owner".to_string(), "obs".to_string())].into()),
            "other annotations stay"
        );
        pipeline.metadata.annotations = Some([(LAST_APPLIED.to_string(), "{}".into())].into());
        trim_for_cache(&mut pipeline);
        assert_eq!(pipeline.metadata.annotations, None);
    }
}
