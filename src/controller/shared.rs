//! Caches shared between controllers: one watch of a kind, one store, and its events fanned out
//! to every controller that reacts to the kind, so a controller reads another kind from memory
//! instead of a GET, and the reconcile an event triggers always finds at least that event's
//! version in the store.

use std::fmt::Debug;
use std::sync::Arc;

use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

/// Events buffered per subscriber before the watch waits for it (controllers take their trigger
/// events at once into their queue, so this only bounds a short burst).
const BUFFER: usize = 1024;

/// The stores of one kind, one per watched scope (a namespace, or the whole cluster).
pub struct Stores<K: Resource<DynamicType = ()> + Clone + 'static>(
    std::sync::RwLock<Vec<Scoped<K>>>,
);

/// One scope's store: the namespace it watches (`None`: all) and, for a store its controllers
/// must wait for, when it holds its first complete list.
struct Scoped<K: Resource<DynamicType = ()> + Clone + 'static> {
    namespace: Option<String>,
    store: Store<K>,
    synced: Option<Synced>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Scoped<K> {
    fn covers(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
    }
}

/// Turns true once a watch's store holds its first complete list. Unlike
/// [`Store::wait_until_ready`] (whose one-shot channel wakes only its latest waiter), any number
/// of reconciles can wait on it at once.
pub type Synced = tokio::sync::watch::Receiver<bool>;

impl<K: Resource<DynamicType = ()> + Clone + 'static> Default for Stores<K> {
    fn default() -> Self {
        Stores(std::sync::RwLock::new(Vec::new()))
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Stores<K> {
    /// Adds the store of the scope `namespace` (`None`: all namespaces) that a controller keeps
    /// for itself (its controller waits for it).
    pub fn register(&self, namespace: Option<&str>, store: Store<K>) {
        self.push(namespace, store, None);
    }

    /// Adds the store of one scope, which [`Stores::ready`] waits for until `synced`.
    pub fn register_synced(&self, namespace: Option<&str>, store: Store<K>, synced: Synced) {
        self.push(namespace, store, Some(synced));
    }

    fn push(&self, namespace: Option<&str>, store: Store<K>, synced: Option<Synced>) {
        if let Ok(mut stores) = self.0.write() {
            stores.push(Scoped {
                namespace: namespace.map(str::to_string),
                store,
                synced,
            });
        }
    }

    /// The cached object `name` in `namespace`, when a store holds it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let key = ObjectRef::new(name).within(namespace);
        let stores = self.0.read().ok()?;
        stores
            .iter()
            .filter(|s| s.covers(namespace))
            .find_map(|s| s.store.get(&key))
    }

    /// The cached object `name` in `namespace` with UID `uid` (not an older object of that name,
    /// deleted since).
    pub fn get_uid(&self, namespace: &str, name: &str, uid: &str) -> Option<Arc<K>> {
        self.get(namespace, name)
            .filter(|o| o.meta().uid.as_deref() == Some(uid))
    }

    /// Waits until the stores covering `namespace` hold their first complete list (another
    /// scope's watch, e.g. one its RBAC refuses, never holds this one up).
    pub async fn ready(&self, namespace: &str) {
        let synced: Vec<Synced> = self
            .0
            .read()
            .map(|s| {
                s.iter()
                    .filter(|s| s.covers(namespace))
                    .filter_map(|s| s.synced.clone())
                    .collect()
            })
            .unwrap_or_default();
        for mut synced in synced {
            // Only fails once the watch is gone (shutdown): nothing left to wait for.
            let _ = synced.wait_for(|done| *done).await;
        }
    }
}

/// One watch of `K` whose store and events serve two controllers: the kind's own controller
/// (`applied`: objects created or changed) and the controller of their owners (`touched`: also
/// deleted objects, so a deleted child reconciles its owner).
pub struct SharedWatch<K: Resource<DynamicType = ()> + Clone + 'static> {
    pub store: Store<K>,
    pub applied: mpsc::Receiver<Arc<K>>,
    pub touched: mpsc::Receiver<Arc<K>>,
    pub synced: Synced,
}

/// Starts the shared watch of `api` (objects trimmed by [`super::trim_for_cache`], listed in
/// pages of [`super::LIST_PAGE_SIZE`]). The returned future drives it and must be polled for as
/// long as the controllers run. An event reaches the subscribers only once the store holds it;
/// the objects of a (re)list reach them once the whole list is in the store.
pub fn shared_watch<K>(
    api: Api<K>,
) -> (
    SharedWatch<K>,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let writer = reflector::store::Writer::<K>::default();
    let store = writer.as_reader();
    let (applied_tx, applied) = mpsc::channel(BUFFER);
    let (touched_tx, touched) = mpsc::channel(BUFFER);
    let reader = store.clone();
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    let events = reflector::reflector(
        writer,
        watcher::watcher(
            api,
            watcher::Config::default().page_size(super::LIST_PAGE_SIZE),
        )
        .default_backoff()
        .modify(super::trim_for_cache),
    );
    let driver = fan_out(events, reader, synced_tx, applied_tx, touched_tx);
    (
        SharedWatch {
            store,
            applied,
            touched,
            synced,
        },
        driver,
    )
}

/// A change a cached watch reports, once its store holds it.
enum Change<K> {
    /// Created or changed (as the store now holds it).
    Applied(Arc<K>),
    /// Deleted (the store no longer holds it).
    Deleted(Arc<K>),
}

/// The changes of a reflector's `events` (the store already updated): a (re)list is reported
/// once complete, object by object from the store; `synced` turns true at the first.
fn changes<K, S>(
    events: S,
    store: Store<K>,
    synced: tokio::sync::watch::Sender<bool>,
) -> impl Stream<Item = Change<K>> + Send
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    events.flat_map(move |event| {
        let changes: Vec<Change<K>> = match event {
            Ok(watcher::Event::Apply(obj)) => {
                // The store's own copy: no second allocation of the object.
                let cached = store.get(&ObjectRef::from_obj(&obj));
                vec![Change::Applied(cached.unwrap_or_else(|| Arc::new(obj)))]
            }
            Ok(watcher::Event::Delete(obj)) => vec![Change::Deleted(Arc::new(obj))],
            Ok(watcher::Event::InitDone) => {
                synced.send_replace(true);
                store.state().into_iter().map(Change::Applied).collect()
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => vec![],
            Err(error) => {
                tracing::debug!(%error, kind = %K::kind(&()), "watch error; retrying");
                vec![]
            }
        };
        futures::stream::iter(changes)
    })
}

async fn fan_out<K, S>(
    events: S,
    store: Store<K>,
    synced: tokio::sync::watch::Sender<bool>,
    mut applied: mpsc::Sender<Arc<K>>,
    mut touched: mpsc::Sender<Arc<K>>,
) where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut changes = std::pin::pin!(changes(events, store, synced));
    while let Some(change) = changes.next().await {
        // A subscriber gone (its controller stopped) is not an error: the other still runs.
        match change {
            Change::Applied(obj) => {
                let _ = applied.send(obj.clone()).await;
                let _ = touched.send(obj).await;
            }
            Change::Deleted(obj) => {
                let _ = touched.send(obj).await;
            }
        }
    }
}

/// A cache of the objects a controller owns (e.g. the collectors' DaemonSets), each trimmed by
/// `trim` to what the reconciles read, and the stream of its changes (created, changed and
/// deleted objects, each once the store holds the change) to trigger their owners with
/// ([`kube::runtime::Controller::owns_shared_stream`]). The store is ready once `Synced` is true.
pub fn owned_cache<K, W>(
    events: W,
    trim: fn(&mut K),
) -> (
    Store<K>,
    Synced,
    impl Stream<Item = Arc<K>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    W: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let writer = reflector::store::Writer::<K>::default();
    let store = writer.as_reader();
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    let events = reflector::reflector(writer, events.default_backoff().modify(trim));
    let stream = changes(events, store.clone(), synced_tx).map(|change| match change {
        Change::Applied(obj) | Change::Deleted(obj) => obj,
    });
    (store, synced, stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Pipeline;
    use kube::runtime::watcher::Event;

    fn pipeline(name: &str, uid: &str, generation: i64) -> Pipeline {
        let mut p = Pipeline::new(
            name,
            serde_yaml::from_str("template: baseline").expect("spec"),
        );
        p.metadata.namespace = Some("ns".into());
        p.metadata.uid = Some(uid.into());
        p.metadata.generation = Some(generation);
        p
    }

    #[test]
    fn the_stores_give_an_object_only_under_its_own_uid() {
        let (reader, mut writer) = reflector::store::<Pipeline>();
        writer.apply_watcher_event(&Event::Apply(pipeline("p", "uid-1", 1)));
        let stores = Stores::default();
        assert!(stores.get("ns", "p").is_none(), "nothing registered yet");
        stores.register(Some("ns"), reader);
        assert!(stores.get_uid("ns", "p", "uid-1").is_some());
        // Another object of that name (re-created): not the one the caller names.
        assert!(stores.get_uid("ns", "p", "uid-2").is_none());
        assert!(stores.get("other", "p").is_none());
        assert!(stores.get("ns", "nope").is_none());
    }

    /// What a subscriber receives: name, generation, and whether the store held the object at
    /// the moment it arrived.
    async fn received(
        mut rx: mpsc::Receiver<Arc<Pipeline>>,
        store: Store<Pipeline>,
    ) -> Vec<(String, Option<i64>, bool)> {
        let mut out = vec![];
        while let Some(p) = rx.next().await {
            let cached = store.get(&ObjectRef::from_obj(p.as_ref())).is_some();
            out.push((
                p.metadata.name.clone().unwrap_or_default(),
                p.metadata.generation,
                cached,
            ));
        }
        out
    }

    #[tokio::test]
    async fn subscribers_see_an_event_only_once_the_store_holds_it_and_owners_see_deletions() {
        let writer = reflector::store::Writer::<Pipeline>::default();
        let store = writer.as_reader();
        let events = futures::stream::iter(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(pipeline("a", "1", 1))),
            Ok(Event::InitApply(pipeline("b", "2", 1))),
            Ok(Event::InitDone),
            Err(watcher::Error::NoResourceVersion),
            Ok(Event::Apply(pipeline("a", "1", 2))),
            Ok(Event::Delete(pipeline("b", "2", 1))),
        ]);
        // One slot per subscriber: the watch waits for each receipt, so a receipt sees the store
        // as it was when the object was sent (give or take the one event after it).
        let (synced_tx, mut synced) = tokio::sync::watch::channel(false);
        let (applied_tx, applied) = mpsc::channel(0);
        let (touched_tx, touched) = mpsc::channel(0);
        let ((), mut applied, mut touched) = futures::future::join3(
            fan_out(
                reflector::reflector(writer, events),
                store.clone(),
                synced_tx,
                applied_tx,
                touched_tx,
            ),
            received(applied, store.clone()),
            received(touched, store.clone()),
        )
        .await;
        assert!(*synced.borrow_and_update(), "synced after the first list");
        // The (re)list arrives in the store's order: compare as sets.
        applied[..2].sort();
        touched[..2].sort();
        assert_eq!(
            applied,
            vec![
                ("a".into(), Some(1), true),
                ("b".into(), Some(1), true),
                ("a".into(), Some(2), true),
            ],
            "the list once complete, then the change; no deletion"
        );
        assert_eq!(
            touched,
            vec![
                ("a".into(), Some(1), true),
                ("b".into(), Some(1), true),
                ("a".into(), Some(2), true),
                ("b".into(), Some(1), false),
            ],
            "the owner also hears of the deletion"
        );
    }

    #[tokio::test]
    async fn every_reconcile_waiting_for_the_first_list_wakes() {
        // kube's Store::wait_until_ready wakes only its latest waiter: the Pipeline controller
        // and the Experiment reconciles would wait on one store, and all but one hang.
        let (store, _writer) = reflector::store::<Pipeline>();
        let (synced_tx, synced) = tokio::sync::watch::channel(false);
        let (_, applied) = mpsc::channel(1);
        let (_, touched) = mpsc::channel(1);
        let watch = SharedWatch {
            store,
            applied,
            touched,
            synced,
        };
        let stores = Arc::new(Stores::default());
        stores.register_synced(Some("ns"), watch.store.clone(), watch.synced.clone());
        // A store of another scope whose list never completes holds nobody up here.
        let (other, _other_writer) = reflector::store::<Pipeline>();
        let (_never, never_synced) = tokio::sync::watch::channel(false);
        stores.register_synced(Some("other"), other, never_synced);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let stores = stores.clone();
                tokio::spawn(async move { stores.ready("ns").await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(waiters.iter().all(|w| !w.is_finished()), "not synced yet");
        synced_tx.send_replace(true);
        for waiter in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
                .await
                .expect("every waiter wakes")
                .expect("joins");
        }
    }
}
