//! Kubernetes Events for Phoenix's objects: one Event per distinct (object, type, reason, action,
//! note), and a repeat of the very same one within [`CACHE_TTL`] counted in its `series`.
//!
//! kube's `Recorder` keys its series by object, type, reason and action only, so a second Event
//! with the same reason and a different note (`TopKRefreshed` "keeps a, b" then "keeps c, d",
//! `ConfigChanged` "a → b" then "b → c") only bumps the first one's count and its note is lost.
//! Here the note is part of the key.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Client, ResourceExt};

/// How long a published Event is remembered for counting repeats.
pub const CACHE_TTL: SignedDuration = SignedDuration::from_mins(6);

/// What makes two Events the same one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    regarding: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
    type_: &'static str,
    reason: String,
    action: String,
    note: String,
}

impl Key {
    /// The key of an Event on `regarding`. Pure.
    pub fn new(
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Key {
        Key {
            regarding: (
                regarding.kind.clone(),
                regarding.namespace.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ),
            type_: type_name(type_),
            reason: reason.to_string(),
            action: action.to_string(),
            note: note.to_string(),
        }
    }
}

fn type_name(type_: EventType) -> &'static str {
    match type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// What a published Event leaves in the cache: what counting a repeat of it needs, and no more
/// (not the apiserver's copy of the Event, which would hold thousands of them in memory through a
/// burst of new objects).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    /// The Event object's name.
    name: String,
    /// Occurrences so far (1: published once, no series yet).
    count: i32,
    /// When it was last published or counted.
    last: Timestamp,
}

/// The Events published within [`CACHE_TTL`]. Behind a plain mutex held only for a map lookup or
/// insert, never across a request: publishing one Event never waits for another's round trip.
///
/// Keyed by the 64-bit hash of the [`Key`]: the whole key (the object's kind, namespace, name and
/// UID, the reason and the note) would hold a few hundred bytes per Event, thousands of times
/// over when many objects are new at once. Two different Events with the same hash (about one
/// chance in 2^64 per pair) would count as repeats of each other.
#[derive(Default)]
struct Cache {
    seen: HashMap<u64, Seen>,
    /// When entries older than the TTL were last dropped (at most once a [`PRUNE_EVERY`]).
    pruned: Option<Timestamp>,
}

/// How often the cache drops expired entries: a pass over every entry, not one per publish.
const PRUNE_EVERY: SignedDuration = SignedDuration::from_mins(1);

/// A fixed hash of `key` (for the life of the process).
fn digest(key: &Key) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

impl Cache {
    /// The entry of `key`, if one was seen within the TTL; drops expired entries when due.
    fn get(&mut self, key: &Key, now: Timestamp) -> Option<Seen> {
        if self.pruned.is_none_or(|t| t + PRUNE_EVERY <= now) {
            self.seen.retain(|_, s| s.last + CACHE_TTL > now);
            self.pruned = Some(now);
        }
        self.seen
            .get(&digest(key))
            .filter(|s| s.last + CACHE_TTL > now)
            .cloned()
    }

    fn put(&mut self, key: &Key, seen: Seen) {
        self.seen.insert(digest(key), seen);
    }
}

/// Publishes Events as one reporting controller (instance).
pub struct EventRecorder {
    client: Client,
    controller: String,
    instance: String,
    cache: std::sync::Mutex<Cache>,
}

impl EventRecorder {
    /// A recorder reporting as `controller` / `instance`.
    pub fn new(client: Client, controller: String, instance: String) -> Self {
        EventRecorder {
            client,
            controller,
            instance,
            cache: std::sync::Mutex::new(Cache::default()),
        }
    }

    /// Publishes an Event on `regarding`, or counts a repeat of the same one in its series.
    /// (Reconciles of one object never run at once, so no two publishes race on one key.)
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = Key::new(regarding, type_, reason, action, &note);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let seen = self.lock().get(&key, now);
        let published = match seen {
            Some(seen) => {
                let count = seen.count + 1;
                let series = serde_json::json!({
                    "series": EventSeries { count, last_observed_time: MicroTime(now) },
                });
                events
                    .patch(&seen.name, &PatchParams::default(), &Patch::Merge(&series))
                    .await?;
                Seen {
                    count,
                    last: now,
                    ..seen
                }
            }
            None => {
                let event = self.event(regarding, &key, note, now);
                let created = events.create(&PostParams::default(), &event).await?;
                Seen {
                    name: created.name_any(),
                    count: 1,
                    last: now,
                }
            }
        };
        self.lock().put(&key, published);
        Ok(())
    }

    /// The cache (a panic elsewhere while it was held leaves a cache that is still usable).
    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn event(
        &self,
        regarding: &ObjectReference,
        key: &Key,
        note: String,
        now: Timestamp,
    ) -> K8sEvent {
        let object = regarding.name.as_deref().unwrap_or(&self.controller);
        K8sEvent {
            action: Some(key.action.clone()),
            reason: Some(key.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: Some(note),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                ..Default::default()
            },
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(key.type_.to_string()),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_note_tells_events_apart() {
        let pipeline = ObjectReference {
            kind: Some("Pipeline".into()),
            namespace: Some("ns".into()),
            name: Some("top".into()),
            uid: Some("u1".into()),
            ..Default::default()
        };
        let key = |note: &str| {
            Key::new(
                &pipeline,
                EventType::Normal,
                "TopKRefreshed",
                "Refresh",
                note,
            )
        };
        assert_eq!(key("keeps a"), key("keeps a"), "a repeat is counted");
        assert_ne!(
            key("keeps a"),
            key("keeps b"),
            "another note is another Event"
        );
        let warning = Key::new(
            &pipeline,
            EventType::Warning,
            "TopKRefreshed",
            "Refresh",
            "keeps a",
        );
        assert_ne!(key("keeps a"), warning);
        let other = ObjectReference {
            uid: Some("u2".into()),
            ..pipeline.clone()
        };
        assert_ne!(
            key("keeps a"),
            Key::new(
                &other,
                EventType::Normal,
                "TopKRefreshed",
                "Refresh",
                "keeps a"
            ),
            "a re-created object of the same name has its own Events"
        );
    }

    #[test]
    fn the_cache_forgets_an_event_after_its_ttl_and_prunes_at_most_once_a_minute() {
        let regarding = ObjectReference {
            kind: Some("Experiment".into()),
            namespace: Some("ns".into()),
            name: Some("exp".into()),
            uid: Some("u1".into()),
            ..Default::default()
        };
        let key = |note: &str| Key::new(&regarding, EventType::Normal, "Created", "Create", note);
        let t0 = Timestamp::UNIX_EPOCH + SignedDuration::from_hours(1);
        let seen = |last| Seen {
            name: "exp.1".into(),
            count: 1,
            last,
        };
        let mut cache = Cache::default();
        assert_eq!(cache.get(&key("a"), t0), None, "nothing published yet");
        cache.put(&key("a"), seen(t0));
        cache.put(&key("b"), seen(t0 - CACHE_TTL));
        let later = t0 + SignedDuration::from_secs(30);
        assert_eq!(cache.get(&key("a"), later), Some(seen(t0)), "a repeat");
        assert_eq!(
            cache.seen.len(),
            2,
            "no pass over the entries within a minute of the last one"
        );
        assert_eq!(
            cache.get(&key("b"), later),
            None,
            "an expired entry is not a repeat, pruned or not"
        );
        assert_eq!(cache.get(&key("a"), t0 + CACHE_TTL), None, "expired");
        assert!(cache.seen.is_empty(), "the due pass dropped both");
    }
}
