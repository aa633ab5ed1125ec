//! Caches shared between controllers: one watch of a kind, one store, and its events fanned out
//! to every controller that reacts to the kind, so a controller reads another kind from memory
//! instead of a GET, and the reconcile an event triggers always finds at least that event's
//! version in the store.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

/// The stores of one kind, one per watched scope (a namespace, or the whole cluster), and the
/// objects this process created that no store has shown yet (see [`Stores::created`]).
pub struct Stores<K: Resource<DynamicType = ()> + Clone + 'static> {
    scopes: std::sync::RwLock<Vec<Scoped<K>>>,
    expected: std::sync::Mutex<Expected<K>>,
}

/// Objects this process created, with when, that no store has shown yet.
type Expected<K> = HashMap<ObjectRef<K>, (Instant, Arc<K>)>;

/// How long an object this process created stands in for it while no store shows it (see
/// [`Stores::created`]). A watch shows a created object within this time but under an extreme
/// backlog; after it, a reconcile that still finds it missing creates it again and reads the
/// apiserver's 409 as "it exists", as without expectations.
pub const EXPECTATION_TTL: Duration = Duration::from_secs(30);

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
        Stores {
            scopes: std::sync::RwLock::new(Vec::new()),
            expected: std::sync::Mutex::new(HashMap::new()),
        }
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
        if let Ok(mut stores) = self.scopes.write() {
            stores.push(Scoped {
                namespace: namespace.map(str::to_string),
                store,
                synced,
            });
        }
    }

    /// The cached object `name` in `namespace`, when a store holds it; otherwise the object of
    /// that name this process created less than [`EXPECTATION_TTL`] ago (see [`Stores::created`]).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.get_at(namespace, name, Instant::now())
    }

    fn get_at(&self, namespace: &str, name: &str, now: Instant) -> Option<Arc<K>> {
        let key = ObjectRef::new(name).within(namespace);
        let cached = self.scopes.read().ok().and_then(|stores| {
            stores
                .iter()
                .filter(|s| s.covers(namespace))
                .find_map(|s| s.store.get(&key))
        });
        let mut expected = self.expected.lock().ok()?;
        if cached.is_some() {
            // Seen by the watch: from now on the store is the truth (also of its deletion).
            expected.remove(&key);
            return cached;
        }
        match expected.get(&key) {
            Some((at, obj)) if now.duration_since(*at) < EXPECTATION_TTL => Some(obj.clone()),
            Some(_) => {
                expected.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Forgets what was expected of `obj`'s name once a watch reports a change of the very
    /// object this process created (its UID): from then on the store is the truth, also of a
    /// deletion that came before any [`Stores::get`] looked.
    pub fn observed(&self, obj: &K) {
        let key = ObjectRef::from_obj(obj);
        if let Ok(mut expected) = self.expected.lock()
            && expected
                .get(&key)
                .is_some_and(|(_, created)| created.meta().uid == obj.meta().uid)
        {
            expected.remove(&key);
        }
    }

    /// Records an object this process just created (the apiserver's answer), so that until a
    /// store shows it, [`Stores::get`] returns it instead of nothing: a later reconcile that runs
    /// before the watch event arrives sees the object it created, and does not create it again
    /// (what kube-controller-manager's ReplicaSet controller calls expectations). Without this,
    /// a controller running many reconciles at once wastes one create (answered 409) per
    /// such pass.
    pub fn created(&self, mut obj: K) {
        super::trim_for_cache(&mut obj);
        let key = ObjectRef::from_obj(&obj);
        let now = Instant::now();
        if let Ok(mut expected) = self.expected.lock() {
            expected.retain(|_, (at, _)| now.duration_since(*at) < EXPECTATION_TTL);
            expected.insert(key, (now, Arc::new(obj)));
        }
    }

    /// The cached object `name` in `namespace` with UID `uid` (not an older object of that name,
    /// deleted since).
    pub fn get_uid(&self, namespace: &str, name: &str, uid: &str) -> Option<Arc<K>> {
        self.get(namespace, name)
            .filter(|o| o.meta().uid.as_deref() == Some(uid))
    }

    /// Waits until the stores covering `namespace` hold their first complete list (another
    /// scope's watch, e.g. one its RBAC refuses, never holds this one up). False when a watch
    /// stopped before that (shutdown): then its store is empty, and nothing may be decided from it.
    pub async fn ready(&self, namespace: &str) -> bool {
        let synced: Vec<Synced> = self
            .scopes
            .read()
            .map(|s| {
                s.iter()
                    .filter(|s| s.covers(namespace))
                    .filter_map(|s| s.synced.clone())
                    .collect()
            })
            .unwrap_or_default();
        for mut synced in synced {
            if synced.wait_for(|done| *done).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// One watch of `K` whose store and events serve two controllers: the kind's own controller
/// (`applied`: objects created or changed) and the controller of their owners (`touched`: also
/// deleted objects, so a deleted child reconciles its owner).
pub struct SharedWatch<K: Resource<DynamicType = ()> + Clone + 'static> {
    pub store: Store<K>,
    pub applied: mpsc::UnboundedReceiver<Arc<K>>,
    pub touched: mpsc::UnboundedReceiver<Arc<K>>,
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
    let (applied_tx, applied) = mpsc::unbounded();
    let (touched_tx, touched) = mpsc::unbounded();
    let (store, synced, changes) = cache(
        watcher::watcher(
            api,
            watcher::Config::default().page_size(super::LIST_PAGE_SIZE),
        ),
        super::trim_for_cache,
    );
    let driver = fan_out(changes, applied_tx, touched_tx);
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

/// A store of `events` (retried with backoff, each object trimmed by `trim`), when it first
/// holds a complete list, and its [`changes`].
fn cache<K, W>(
    events: W,
    trim: fn(&mut K),
) -> (
    Store<K>,
    Synced,
    impl Stream<Item = Change<K>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    W: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let writer = reflector::store::Writer::<K>::default();
    let store = writer.as_reader();
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    let events = reflector::reflector(writer, events.default_backoff().modify(trim));
    let changes = changes(events, store.clone(), synced_tx);
    (store, synced, changes)
}

/// A change a cached watch reports, once its store holds it.
enum Change<K> {
    /// Created or changed (as the store now holds it).
    Applied(Arc<K>),
    /// Held by the watch's first complete list (as the store now holds it). Its kind's own
    /// controller reconciles it, as every object at start. Its owner needs no trigger: the owner's
    /// controller reconciles every owner for its own first list, and those reconciles wait until
    /// this store is ready. After a restart these were one trigger per cached object into the
    /// owners' queues (12,000 for 2,000 Experiments), each only for the queue to drop it.
    Listed(Arc<K>),
    /// Deleted (the store no longer holds it).
    Deleted(Arc<K>),
}

/// The changes of a reflector's `events` (the store already updated): a (re)list is reported
/// once complete, object by object from the store, with the objects it no longer holds as
/// deleted; `synced` turns true at the first.
fn changes<K, S>(
    events: S,
    store: Store<K>,
    synced: tokio::sync::watch::Sender<bool>,
) -> impl Stream<Item = Change<K>> + Send
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    // What the store held when a relist began (it swaps the new list in at its end).
    let mut before_relist: Vec<Arc<K>> = vec![];
    events.flat_map(move |event| {
        let changes: Vec<Change<K>> = match event {
            Ok(watcher::Event::Apply(obj)) => {
                // The store's own copy: no second allocation of the object.
                let cached = store.get(&ObjectRef::from_obj(&obj));
                vec![Change::Applied(cached.unwrap_or_else(|| Arc::new(obj)))]
            }
            Ok(watcher::Event::Delete(obj)) => vec![Change::Deleted(Arc::new(obj))],
            Ok(watcher::Event::Init) => {
                before_relist = store.state();
                vec![]
            }
            Ok(watcher::Event::InitDone) => {
                let first = !synced.send_replace(true);
                let gone = std::mem::take(&mut before_relist)
                    .into_iter()
                    .filter(|old| store.get(&ObjectRef::from_obj(old.as_ref())).is_none())
                    .map(Change::Deleted);
                let listed = if first {
                    Change::Listed
                } else {
                    Change::Applied
                };
                store.state().into_iter().map(listed).chain(gone).collect()
            }
            Ok(watcher::Event::InitApply(_)) => vec![],
            Err(error) => {
                tracing::debug!(%error, kind = %K::kind(&()), "watch error; retrying");
                vec![]
            }
        };
        futures::stream::iter(changes)
    })
}

async fn fan_out<K>(
    changes: impl Stream<Item = Change<K>>,
    applied: mpsc::UnboundedSender<Arc<K>>,
    touched: mpsc::UnboundedSender<Arc<K>>,
) {
    let mut changes = std::pin::pin!(changes);
    while let Some(change) = changes.next().await {
        // Unbounded: a subscriber whose controller pauses (its backoff after a watch error, a
        // shutdown) never holds up the store or the other subscriber; what waits is a pointer to
        // the cached object. A subscriber gone (its controller stopped) is not an error.
        match change {
            Change::Applied(obj) => {
                let _ = applied.unbounded_send(obj.clone());
                let _ = touched.unbounded_send(obj);
            }
            Change::Listed(obj) => {
                let _ = applied.unbounded_send(obj);
            }
            Change::Deleted(obj) => {
                let _ = touched.unbounded_send(obj);
            }
        }
    }
}

/// A cache of the objects a controller owns (e.g. the collectors' DaemonSets), each trimmed by
/// `trim` to what the reconciles read, with the changes (created, changed and deleted objects,
/// each once the store holds the change) to trigger their owners with
/// ([`kube::runtime::Controller::owns_shared_stream`]).
pub struct OwnedCache<K: Resource<DynamicType = ()> + Clone + 'static> {
    pub store: Store<K>,
    pub changes: mpsc::UnboundedReceiver<Arc<K>>,
    pub synced: Synced,
}

/// Starts an [`OwnedCache`] over `events`. The returned future drives it, apart from the
/// controller (whose trigger stream pauses during its backoff and at shutdown), and must be
/// polled for as long as the controller runs.
pub fn owned_cache<K, W>(
    events: W,
    trim: fn(&mut K),
) -> (
    OwnedCache<K>,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    W: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let (tx, changes_rx) = mpsc::unbounded();
    let (store, synced, changes) = cache(events, trim);
    let driver = async move {
        let mut changes = std::pin::pin!(changes);
        while let Some(change) = changes.next().await {
            match change {
                Change::Applied(obj) | Change::Deleted(obj) => {
                    let _ = tx.unbounded_send(obj);
                }
                // Their owners reconcile for their own first list (see `Change::Listed`).
                Change::Listed(_) => {}
            }
        }
    };
    (
        OwnedCache {
            store,
            changes: changes_rx,
            synced,
        },
        driver,
    )
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

    #[test]
    fn a_created_object_stands_in_until_a_store_shows_it_or_it_expires() {
        let (reader, mut writer) = reflector::store::<Pipeline>();
        let stores = Stores::default();
        stores.register(Some("ns"), reader);
        assert!(stores.get("ns", "p").is_none());
        stores.created(pipeline("p", "uid-1", 1));
        let now = Instant::now();
        let got = stores.get_at("ns", "p", now).expect("the created copy");
        assert_eq!(got.metadata.uid.as_deref(), Some("uid-1"));
        assert!(
            stores.get_at("other", "p", now).is_none(),
            "another namespace"
        );
        // Too old: the watch should have shown it by now, so it is no longer assumed to exist.
        assert!(stores.get_at("ns", "p", now + EXPECTATION_TTL).is_none());
        assert!(
            stores.get_at("ns", "p", now).is_none(),
            "an expired entry is gone"
        );

        // Once the store shows it, the store is the truth: also of its deletion.
        stores.created(pipeline("q", "uid-2", 1));
        let mut cached = pipeline("q", "uid-2", 2);
        cached.metadata.resource_version = Some("7".into());
        writer.apply_watcher_event(&Event::Apply(cached.clone()));
        let got = stores.get("ns", "q").expect("cached");
        assert_eq!(got.metadata.generation, Some(2), "the store's copy");
        writer.apply_watcher_event(&Event::Delete(cached));
        assert!(
            stores.get("ns", "q").is_none(),
            "deleted since: not assumed"
        );

        // Created and deleted before any lookup: the watch's report of the deletion settles it.
        let r = pipeline("r", "uid-3", 1);
        stores.created(r.clone());
        stores.observed(&pipeline("r", "uid-other", 1));
        assert!(
            stores.get("ns", "r").is_some(),
            "another object of that name settles nothing"
        );
        stores.observed(&r);
        assert!(stores.get("ns", "r").is_none(), "its deletion was reported");
    }

    /// A change as (deleted?, name, generation, whether the store held the object when the
    /// change came out).
    type Seen = (bool, String, Option<i64>, bool);

    fn seen(change: &Change<Pipeline>, store: &Store<Pipeline>) -> Seen {
        let (deleted, p) = match change {
            Change::Applied(p) | Change::Listed(p) => (false, p),
            Change::Deleted(p) => (true, p),
        };
        let cached = store.get(&ObjectRef::from_obj(p.as_ref())).is_some();
        (
            deleted,
            p.metadata.name.clone().unwrap_or_default(),
            p.metadata.generation,
            cached,
        )
    }

    #[tokio::test]
    async fn changes_come_once_cached_and_a_relist_reports_what_it_no_longer_holds() {
        let writer = reflector::store::Writer::<Pipeline>::default();
        let store = writer.as_reader();
        let events = futures::stream::iter(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(pipeline("a", "1", 1))),
            Ok(Event::InitApply(pipeline("b", "2", 1))),
            Ok(Event::InitDone),
            Err(watcher::Error::NoResourceVersion),
            Ok(Event::Apply(pipeline("a", "1", 2))),
            Ok(Event::Delete(pipeline("a", "1", 2))),
            // A relist after a watch gap in which b was deleted and c created.
            Ok(Event::Init),
            Ok(Event::InitApply(pipeline("c", "3", 1))),
            Ok(Event::InitDone),
        ]);
        let (synced_tx, synced) = tokio::sync::watch::channel(false);
        let mut changes = std::pin::pin!(changes(
            reflector::reflector(writer, events),
            store.clone(),
            synced_tx
        ));
        // Pulled one by one: each is looked at in the store as it was when the change came out.
        let mut out = vec![];
        while let Some(change) = changes.next().await {
            out.push(seen(&change, &store));
        }
        assert!(*synced.borrow(), "synced after the first list");
        out[..2].sort(); // a list comes in the store's order
        assert_eq!(
            out,
            vec![
                (false, "a".into(), Some(1), true),
                (false, "b".into(), Some(1), true),
                (false, "a".into(), Some(2), true),
                (true, "a".into(), Some(2), false),
                (false, "c".into(), Some(1), true),
                (true, "b".into(), Some(1), false),
            ]
        );
    }

    #[tokio::test]
    async fn the_owner_hears_of_deletions_the_kinds_own_controller_does_not() {
        let writer = reflector::store::Writer::<Pipeline>::default();
        let store = writer.as_reader();
        let events = futures::stream::iter(vec![
            Ok(Event::Init),
            Ok(Event::InitDone),
            Ok(Event::Apply(pipeline("a", "1", 1))),
            Ok(Event::Delete(pipeline("a", "1", 1))),
        ]);
        let (synced_tx, _synced) = tokio::sync::watch::channel(false);
        let (applied_tx, applied) = mpsc::unbounded();
        let (touched_tx, touched) = mpsc::unbounded();
        fan_out(
            changes(reflector::reflector(writer, events), store, synced_tx),
            applied_tx,
            touched_tx,
        )
        .await;
        let names = |rx: mpsc::UnboundedReceiver<Arc<Pipeline>>| {
            rx.map(|p| {
                (
                    p.metadata.name.clone().unwrap_or_default(),
                    p.metadata.generation,
                )
            })
            .collect::<Vec<_>>()
        };
        assert_eq!(names(applied).await, vec![("a".to_string(), Some(1))]);
        assert_eq!(
            names(touched).await,
            vec![("a".to_string(), Some(1)), ("a".to_string(), Some(1))]
        );
    }

    #[tokio::test]
    async fn the_first_list_triggers_only_the_kinds_own_controller_and_a_relist_both() {
        let events = || {
            futures::stream::iter(vec![
                Ok(Event::Init),
                Ok(Event::InitApply(pipeline("a", "1", 1))),
                Ok(Event::InitDone),
                Ok(Event::Apply(pipeline("b", "2", 1))),
                // A relist after a watch gap in which a changed.
                Ok(Event::Init),
                Ok(Event::InitApply(pipeline("a", "1", 2))),
                Ok(Event::InitApply(pipeline("b", "2", 1))),
                Ok(Event::InitDone),
            ])
        };
        let names = |rx: mpsc::UnboundedReceiver<Arc<Pipeline>>| {
            rx.map(|p| {
                let name = p.metadata.name.clone().unwrap_or_default();
                format!("{name}{}", p.metadata.generation.unwrap_or_default())
            })
            .collect::<Vec<_>>()
        };
        // The relist's part (from `at` on) comes in the store's order.
        let sorted = |mut v: Vec<String>, at: usize| {
            v[at..].sort();
            v
        };

        let writer = reflector::store::Writer::<Pipeline>::default();
        let store = writer.as_reader();
        let (synced_tx, _synced) = tokio::sync::watch::channel(false);
        let (applied_tx, applied) = mpsc::unbounded();
        let (touched_tx, touched) = mpsc::unbounded();
        fan_out(
            changes(reflector::reflector(writer, events()), store, synced_tx),
            applied_tx,
            touched_tx,
        )
        .await;
        assert_eq!(
            sorted(names(applied).await, 2),
            ["a1", "b1", "a2", "b1"],
            "the kind's own controller: everything"
        );
        assert_eq!(
            sorted(names(touched).await, 1),
            ["b1", "a2", "b1"],
            "the owners' controller: not the first list, whose owners reconcile anyway"
        );

        let (owned, driver) = owned_cache(events(), |_: &mut Pipeline| {});
        driver.await;
        assert_eq!(sorted(names(owned.changes).await, 1), ["b1", "a2", "b1"]);
    }

    #[tokio::test]
    async fn every_reconcile_waiting_for_the_first_list_wakes() {
        // kube's Store::wait_until_ready wakes only its latest waiter: the Pipeline controller
        // and the Experiment reconciles would wait on one store, and all but one hang.
        let (store, _writer) = reflector::store::<Pipeline>();
        let (synced_tx, synced) = tokio::sync::watch::channel(false);
        let (_, applied) = mpsc::unbounded();
        let (_, touched) = mpsc::unbounded();
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
                tokio::spawn(async move { assert!(stores.ready("ns").await) })
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
