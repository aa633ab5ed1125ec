//! Reads and records a namespace's collector UID in the operator's ledger ConfigMap (see
//! `crate::desired::collector_uid` for the rules): create-if-missing, then update with the read
//! version as precondition, so concurrent assignments never hand out one UID twice.

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};

use super::Context;
use crate::desired::collector_uid::{self, Assignment, LedgerError};
use crate::desired::labels;
use crate::{Error, Result};

/// Attempts before a run of write conflicts is returned as an error (and retried with backoff).
const ATTEMPTS: usize = 5;

/// UIDs this process has read from or written to the ledger. An entry never changes once
/// recorded, so a cached one is always current.
#[derive(Debug, Default)]
pub struct UidCache(Mutex<BTreeMap<String, u32>>);

impl UidCache {
    fn get(&self, namespace: &str) -> Option<u32> {
        self.0.lock().ok()?.get(namespace).copied()
    }

    fn all(&self) -> BTreeMap<String, u32> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn put(&self, namespace: &str, uid: u32) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(namespace.to_string(), uid);
        }
    }
}

fn ledger_object(ctx: &Context, data: BTreeMap<String, String>) -> ConfigMap {
    let r = &ctx.settings.collector_uid_ledger;
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(r.name.clone()),
            namespace: Some(r.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                labels::MANAGED_BY.to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                "phoenix.io/description".to_string(),
                "namespace -> UID of its collectors; entries are permanent, never edit or reuse one"
                    .to_string(),
            )])),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

/// Whether a write lost a race (the object changed or appeared meanwhile): read again and retry.
fn lost_race(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// The UID of `namespace`'s collectors, recording a new one in the ledger when it has none; the
/// inner error when the ledger cannot give one (the cluster admin's to fix).
pub async fn collector_uid(
    ctx: &Context,
    namespace: &str,
) -> Result<std::result::Result<u32, LedgerError>> {
    if let Some(uid) = ctx.uids.get(namespace) {
        return Ok(Ok(uid));
    }
    let r = &ctx.settings.collector_uid_ledger;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &r.namespace);
    let range = ctx.settings.collector_uid_range;
    let mut last_conflict = None;
    for _ in 0..ATTEMPTS {
        let current = api
            .get_opt(&r.name)
            .await
            .map_err(Error::kube("get collector UID ledger"))?;
        let recorded = current
            .as_ref()
            .and_then(|cm| cm.data.clone())
            .unwrap_or_default();
        // UIDs this process gave out stay taken even if the ledger lost them.
        let data = collector_uid::with_known(recorded, &ctx.uids.all());
        let ledger = match collector_uid::parse_ledger(&data) {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        let uid = match collector_uid::assign(&ledger, namespace, range) {
            Ok(Assignment::Recorded(uid)) => {
                ctx.uids.put(namespace, uid);
                return Ok(Ok(uid));
            }
            Ok(Assignment::New(uid)) => uid,
            Err(e) => return Ok(Err(e)),
        };
        let mut data = data;
        data.insert(namespace.to_string(), uid.to_string());
        let written = match current {
            // Create fails with 409 when another writer created it first.
            None => {
                api.create(&PostParams::default(), &ledger_object(ctx, data))
                    .await
            }
            // The read version is the precondition: a concurrent update makes this one fail.
            Some(mut cm) => {
                cm.data = Some(data);
                api.replace(&r.name, &PostParams::default(), &cm).await
            }
        };
        match written {
            Ok(_) => {
                tracing::info!(namespace, uid, ledger = %r, "recorded the collector UID of a namespace");
                ctx.uids.put(namespace, uid);
                return Ok(Ok(uid));
            }
            Err(e) if lost_race(&e) => last_conflict = Some(e),
            Err(e) => return Err(Error::kube("record collector UID")(e)),
        }
    }
    Err(match last_conflict {
        Some(e) => Error::kube("record collector UID (conflicts)")(e),
        None => Error::MissingField("collector UID ledger"),
    })
}
