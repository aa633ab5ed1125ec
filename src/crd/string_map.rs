//! [`StringMap`]: the string-to-string map of the API's node selectors.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string-to-string map (a node selector) kept as a vector of pairs sorted by key. It
/// serializes, deserializes, prints with `{:?}` and has the schema of a
/// `BTreeMap<String, String>`, so the API and its CRDs are unchanged. A selector holds a few
/// entries, and a `BTreeMap`'s first node costs about 540 bytes whatever their number: every
/// cached Pipeline and Experiment carries one, 6,000 of them at 2,000 Experiments.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct StringMap(Vec<(String, String)>);

impl StringMap {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&String> {
        let i = self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok()?;
        Some(&self.0[i].1)
    }

    /// The entries in key order.
    pub fn iter(&self) -> <&Self as IntoIterator>::IntoIter {
        self.into_iter()
    }

    /// The same entries in a `BTreeMap` (for the Kubernetes types that take one).
    pub fn to_btree(&self) -> BTreeMap<String, String> {
        self.0.iter().cloned().collect()
    }
}

impl fmt::Debug for StringMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl std::ops::Index<&str> for StringMap {
    type Output = String;
    fn index(&self, key: &str) -> &String {
        self.get(key).expect("no entry found for key")
    }
}

impl FromIterator<(String, String)> for StringMap {
    /// Later entries replace earlier ones of the same key, as in a `BTreeMap`.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut pairs: Vec<(String, String)> = iter.into_iter().collect();
        // Stable: of equal keys the last one stays after the dedup below.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.reverse();
        pairs.dedup_by(|later, earlier| later.0 == earlier.0);
        pairs.reverse();
        pairs.shrink_to_fit();
        StringMap(pairs)
    }
}

impl<const N: usize> From<[(String, String); N]> for StringMap {
    fn from(pairs: [(String, String); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl From<BTreeMap<String, String>> for StringMap {
    fn from(map: BTreeMap<String, String>) -> Self {
        // Already sorted and unique.
        StringMap(map.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a StringMap {
    type Item = (&'a String, &'a String);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, String)>,
        fn(&'a (String, String)) -> (&'a String, &'a String),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl Serialize for StringMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for StringMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = StringMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StringMap, A::Error> {
                let mut pairs = Vec::with_capacity(access.size_hint().unwrap_or(0).min(64));
                while let Some(pair) = access.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(pairs.into_iter().collect())
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

impl schemars::JsonSchema for StringMap {
    fn inline_schema() -> bool {
        <BTreeMap<String, String>>::inline_schema()
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        <BTreeMap<String, String>>::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        <BTreeMap<String, String>>::schema_id()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <BTreeMap<String, String>>::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_writes_and_prints_like_a_btreemap() {
        let entries = pairs(&[
            ("zone", "a"),
            ("type", "kwok"),
            ("zone", "b"),
            ("arch", "x"),
        ]);
        let map: StringMap = entries.iter().cloned().collect();
        let btree: BTreeMap<String, String> = entries.iter().cloned().collect();
        assert_eq!(map.to_btree(), btree, "sorted, the last of a key wins");
        assert_eq!(format!("{map:?}"), format!("{btree:?}"));
        assert_eq!(
            serde_json::to_string(&map).expect("serializes"),
            serde_json::to_string(&btree).expect("serializes")
        );
        let json = r#"{"zone":"a","type":"kwok","zone":"b"}"#;
        let decoded: StringMap = serde_json::from_str(json).expect("a map");
        let decoded_btree: BTreeMap<String, String> = serde_json::from_str(json).expect("a map");
        assert_eq!(decoded.to_btree(), decoded_btree);
        assert_eq!(decoded.get("zone").map(String::as_str), Some("b"));
        assert_eq!(&decoded["type"], "kwok");
        assert_eq!(decoded.get("arch"), None);
        // The same refusals, worded the same (`kubectl phoenix validate` shows them).
        for bad in [r#"{"a": 1}"#, r#"["a"]"#, r#""a""#] {
            assert_eq!(
                serde_json::from_str::<StringMap>(bad).map_err(|e| e.to_string()),
                serde_json::from_str::<BTreeMap<String, String>>(bad)
                    .map(StringMap::from)
                    .map_err(|e| e.to_string()),
                "{bad}"
            );
        }
    }

    #[test]
    fn has_the_schema_of_a_btreemap() {
        let mut generator = schemars::SchemaGenerator::default();
        let ours = <StringMap as schemars::JsonSchema>::json_schema(&mut generator);
        let btree = <BTreeMap<String, String> as schemars::JsonSchema>::json_schema(&mut generator);
        assert_eq!(ours, btree);
    }

    #[test]
    fn one_entry_costs_a_pair_not_a_tree_node() {
        // What the cache holds per selector besides the strings: one 48-byte pair on the heap,
        // against a B-tree leaf of 11 key and 11 value slots.
        assert_eq!(std::mem::size_of::<StringMap>(), 24);
        let map: StringMap = pairs(&[("k", "v")]).into_iter().collect();
        assert_eq!(map.0.capacity(), 1);
    }
}
