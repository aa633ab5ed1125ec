//! The per-namespace collector UID: the operator's range, the ledger recording which namespace's
//! collectors run as which UID, and the collision-free assignment from it (pure; the controller
//! reads and writes the ledger).
//!
//! Collectors of different namespaces must never share a UID: a process can read
//! `/proc/<pid>/environ` (exporter credentials) of every process of its own UID. So each namespace
//! gets one UID (also its GID and fsGroup) from a range the cluster admin reserves for Phoenix, and
//! the assignment is recorded in one ConfigMap the operator owns, in the operator's namespace
//! (never in a user's), written with optimistic concurrency: two assignments cannot both succeed
//! on the same version, so no UID is handed out twice.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// The smallest UID the range may start at: below it live the users of distributions and images
/// (`nobody` 65534, distroless `nonroot` 65532, the collector image's 10001, …), whose processes a
/// collector must not share a UID with.
pub const MIN_UID: u32 = 65_536;
/// The largest UID Kubernetes accepts in `runAsUser`.
pub const MAX_UID: u32 = i32::MAX as u32;

/// A range of UIDs `first..=last` reserved for collectors, written `<first>-<last>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

impl FromStr for UidRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s
            .trim()
            .split_once('-')
            .ok_or_else(|| format!("UID range {s:?} is not <first>-<last>"))?;
        let parse = |v: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|e| format!("UID range {s:?}: {v:?} is not a UID: {e}"))
        };
        let range = UidRange {
            first: parse(a)?,
            last: parse(b)?,
        };
        if range.first < MIN_UID || range.last > MAX_UID || range.first > range.last {
            return Err(format!(
                "UID range {s:?} must satisfy {MIN_UID} <= first <= last <= {MAX_UID} (UIDs below {MIN_UID} belong to distributions and images)"
            ));
        }
        Ok(range)
    }
}

impl fmt::Display for UidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl UidRange {
    /// Whether `uid` is in the range.
    pub fn contains(&self, uid: u32) -> bool {
        (self.first..=self.last).contains(&uid)
    }
}

/// Where the ledger lives: the ConfigMap `<namespace>/<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRef {
    pub namespace: String,
    pub name: String,
}

impl FromStr for LedgerRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (namespace, name) = s
            .split_once('/')
            .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| format!("ledger {s:?} is not <namespace>/<name>"))?;
        Ok(LedgerRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for LedgerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why no UID can be given to a namespace's collectors. Each needs the cluster admin.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error(
        "every UID of the collector UID range {0} is taken: widen collectorUidRange (--collector-uid-range)"
    )]
    Exhausted(UidRange),
    #[error(
        "the collector UID ledger records {value:?} for namespace {namespace}, which is not a UID in {MIN_UID}..={MAX_UID}: fix or remove that entry"
    )]
    Malformed { namespace: String, value: String },
    #[error(
        "the collector UID ledger records UID {uid} for both namespaces {first} and {second}: collectors of different namespaces must never share a UID; remove one entry"
    )]
    Shared {
        uid: u32,
        first: String,
        second: String,
    },
}

/// The ledger's data (namespace → UID), checked: every value a UID in bounds, no UID twice. Pure.
pub fn parse_ledger(data: &BTreeMap<String, String>) -> Result<BTreeMap<String, u32>, LedgerError> {
    let mut owners: BTreeMap<u32, &str> = BTreeMap::new();
    let mut ledger = BTreeMap::new();
    for (namespace, value) in data {
        let uid = value
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|u| (MIN_UID..=MAX_UID).contains(u))
            .ok_or_else(|| LedgerError::Malformed {
                namespace: namespace.clone(),
                value: value.clone(),
            })?;
        if let Some(first) = owners.insert(uid, namespace) {
            return Err(LedgerError::Shared {
                uid,
                first: first.to_string(),
                second: namespace.clone(),
            });
        }
        ledger.insert(namespace.clone(), uid);
    }
    Ok(ledger)
}

/// Adds to the ledger's `data` every assignment in `known` (what this operator has read or
/// written before) that the ledger lacks, so a ledger deleted or truncated by hand is written back
/// with them and none of their UIDs is handed out again. Recorded entries win. Pure.
pub fn with_known(
    mut data: BTreeMap<String, String>,
    known: &BTreeMap<String, u32>,
) -> BTreeMap<String, String> {
    for (namespace, uid) in known {
        data.entry(namespace.clone())
            .or_insert_with(|| uid.to_string());
    }
    data
}

/// A namespace's UID: already recorded, or newly chosen and still to be recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignment {
    Recorded(u32),
    New(u32),
}

impl Assignment {
    /// The UID.
    pub fn uid(self) -> u32 {
        match self {
            Assignment::Recorded(u) | Assignment::New(u) => u,
        }
    }
}

/// The UID of `namespace`'s collectors: the recorded one (kept even when the range has changed
/// since), else the lowest UID of `range` that no namespace holds. Pure.
pub fn assign(
    ledger: &BTreeMap<String, u32>,
    namespace: &str,
    range: UidRange,
) -> Result<Assignment, LedgerError> {
    if let Some(&uid) = ledger.get(namespace) {
        return Ok(Assignment::Recorded(uid));
    }
    let taken: BTreeSet<u32> = ledger.values().copied().collect();
    (range.first..=range.last)
        .find(|u| !taken.contains(u))
        .map(Assignment::New)
        .ok_or(LedgerError::Exhausted(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ranges_parse_and_refuse_shared_or_root_uids() {
        assert_eq!(
            "2000000000-2000099999".parse::<UidRange>(),
            Ok(UidRange {
                first: 2_000_000_000,
                last: 2_000_099_999
            })
        );
        for bad in [
            "",
            "100000",
            "0-70000",
            "10001-70000",
            "70000-69999",
            "70000-2147483648",
            "a-b",
        ] {
            assert!(bad.parse::<UidRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ledger_refs_are_namespace_and_name() {
        assert_eq!(
            "phoenix-system/uids".parse::<LedgerRef>(),
            Ok(LedgerRef {
                namespace: "phoenix-system".into(),
                name: "uids".into()
            })
        );
        for bad in ["uids", "/uids", "ns/", "a/b/c"] {
            assert!(bad.parse::<LedgerRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn namespaces_keep_their_uid_and_new_ones_take_the_lowest_free() {
        let range: UidRange = "100000-100002".parse().expect("range");
        let ledger = parse_ledger(&data(&[("a", "100001")])).expect("ledger");
        assert_eq!(
            assign(&ledger, "a", range),
            Ok(Assignment::Recorded(100001))
        );
        assert_eq!(assign(&ledger, "b", range), Ok(Assignment::New(100000)));
        let ledger = parse_ledger(&data(&[("a", "100001"), ("b", "100000")])).expect("ledger");
        assert_eq!(assign(&ledger, "c", range), Ok(Assignment::New(100002)));
        // A UID recorded before the range changed stays, and is never handed out again.
        let moved: UidRange = "100001-100001".parse().expect("range");
        assert_eq!(
            assign(&ledger, "b", moved),
            Ok(Assignment::Recorded(100000))
        );
        assert_eq!(
            assign(&ledger, "c", moved),
            Err(LedgerError::Exhausted(moved))
        );
    }

    #[test]
    fn a_ledger_lost_while_running_keeps_the_uids_already_given() {
        let range: UidRange = "100000-100009".parse().expect("range");
        let known = BTreeMap::from([("a".to_string(), 100000)]);
        // The ledger was deleted: the next assignment must not hand a's UID to b.
        let repaired = with_known(BTreeMap::new(), &known);
        let ledger = parse_ledger(&repaired).expect("ledger");
        assert_eq!(assign(&ledger, "b", range), Ok(Assignment::New(100001)));
        assert_eq!(repaired.get("a").map(String::as_str), Some("100000"));
        // What the ledger records wins over what this process remembers.
        let kept = with_known(data(&[("a", "100005")]), &known);
        assert_eq!(kept.get("a").map(String::as_str), Some("100005"));
    }

    #[test]
    fn a_ledger_that_shares_or_garbles_a_uid_is_refused() {
        assert_eq!(
            parse_ledger(&data(&[("a", "100000"), ("b", "100000")])),
            Err(LedgerError::Shared {
                uid: 100000,
                first: "a".into(),
                second: "b".into()
            })
        );
        for value in ["0", "10001", "x", "-5", "3000000000"] {
            assert!(
                matches!(
                    parse_ledger(&data(&[("a", value)])),
                    Err(LedgerError::Malformed { .. })
                ),
                "{value}"
            );
        }
    }
}
