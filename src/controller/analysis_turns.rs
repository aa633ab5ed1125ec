//! Turns for analyses (`--max-concurrent-analyses`): at most N Prometheus query sets in flight,
//! and an Experiment without a turn gives its reconcile slot back instead of holding it while it
//! waits, so a hundred Experiments ending together never stall the reconciles of the others.

use std::collections::BTreeSet;
use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};

/// The analyses in flight and the Experiments waiting for a turn.
pub struct AnalysisTurns {
    permits: Semaphore,
    /// `namespace/name` of the Experiments that asked and found no turn free, until they get
    /// one or are deleted.
    waiting: Mutex<BTreeSet<String>>,
}

impl AnalysisTurns {
    /// `max` analyses at once (at least 1).
    pub fn new(max: usize) -> Self {
        AnalysisTurns {
            permits: Semaphore::new(max.max(1)),
            waiting: Mutex::new(BTreeSet::new()),
        }
    }

    /// A turn for the Experiment `key`, held until the permit drops; `None` when every turn is
    /// taken (the caller retries later, and `key` counts as waiting until then).
    pub fn try_turn(&self, key: &str) -> Option<SemaphorePermit<'_>> {
        let permit = self.permits.try_acquire().ok();
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if permit.is_some() {
            waiting.remove(key);
        } else {
            waiting.insert(key.to_string());
        }
        permit
    }

    /// Experiments waiting for a turn.
    pub fn waiting(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Forgets the waiting Experiments `live` no longer holds (deleted while they waited).
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k| live(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_bounded_and_the_ones_without_a_turn_count_as_waiting() {
        let turns = AnalysisTurns::new(2);
        let a = turns.try_turn("ns/a").expect("a turn");
        let _b = turns.try_turn("ns/b").expect("a turn");
        assert!(turns.try_turn("ns/c").is_none());
        assert!(
            turns.try_turn("ns/c").is_none(),
            "asking again is one waiter"
        );
        assert!(turns.try_turn("ns/d").is_none());
        assert_eq!(turns.waiting(), 2);
        drop(a);
        let _c = turns.try_turn("ns/c").expect("a freed turn");
        assert_eq!(turns.waiting(), 1);
        turns.retain(|k| k != "ns/d");
        assert_eq!(turns.waiting(), 0, "a deleted Experiment waits no more");
    }

    #[test]
    fn zero_means_one() {
        let turns = AnalysisTurns::new(0);
        let _a = turns.try_turn("ns/a").expect("a turn");
        assert!(turns.try_turn("ns/b").is_none());
    }
}
