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
use tokio::sync::Mutex;

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

/// Publishes Events as one reporting controller (instance).
pub struct EventRecorder {
    client: Client,
    controller: String,
    instance: String,
    cache: Mutex<HashMap<Key, K8sEvent>>,
}

impl EventRecorder {
    /// A recorder reporting as `controller` / `instance`.
    pub fn new(client: Client, controller: String, instance: String) -> Self {
        EventRecorder {
            client,
            controller,
            instance,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes an Event on `regarding`, or counts a repeat of the same one in its series.
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
        let mut cache = self.cache.lock().await;
        cache.retain(|_, e| last_seen(e).is_some_and(|t| t + CACHE_TTL > now));
        let event = match cache.get(&key) {
            Some(seen) => {
                let mut event = seen.clone();
                event.series = Some(EventSeries {
                    count: seen.series.as_ref().map_or(2, |s| s.count + 1),
                    last_observed_time: MicroTime(now),
                });
                events
                    .patch(
                        &event.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&event),
                    )
                    .await?
            }
            None => {
                let event = self.event(regarding, &key, note, now);
                events.create(&PostParams::default(), &event).await?
            }
        };
        cache.insert(key, event);
        Ok(())
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

fn last_seen(e: &K8sEvent) -> Option<Timestamp> {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
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
}
