//! A visit's fields (marker, source, city, utm_* …), shared rather than
//! copied: the pools hold them, and every call to the visit's number
//! carries them into its call context and call record. Copying the map
//! per INVITE cost a dozen allocations and frees (issue 15); an `Arc`
//! costs a reference count.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// An immutable-by-default, cheaply cloned `BTreeMap<String, String>`.
/// Reads go through `Deref`; a write copies the map first if it is shared
/// (`Arc::make_mut`), so a holder never sees another's edit. No visit
/// (a static number, an unknown one) is no allocation: every INVITE's
/// call context starts from the default, and `Arc::default` allocated.
#[derive(Clone, Default)]
pub struct VisitFields(Option<Arc<BTreeMap<String, String>>>);

/// What an empty `VisitFields` reads as.
static EMPTY: BTreeMap<String, String> = BTreeMap::new();

impl VisitFields {
    /// An owned copy of the map (for types that keep their own).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        (**self).clone()
    }

    fn shared(m: BTreeMap<String, String>) -> Self {
        VisitFields((!m.is_empty()).then(|| Arc::new(m)))
    }
}

impl Deref for VisitFields {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl DerefMut for VisitFields {
    fn deref_mut(&mut self) -> &mut Self::Target {
        Arc::make_mut(self.0.get_or_insert_with(Default::default))
    }
}

/// Equal when the maps are (an emptied map equals no map).
impl PartialEq for VisitFields {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for VisitFields {}

impl std::fmt::Debug for VisitFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl From<BTreeMap<String, String>> for VisitFields {
    fn from(m: BTreeMap<String, String>) -> Self {
        VisitFields::shared(m)
    }
}

impl<const N: usize> From<[(String, String); N]> for VisitFields {
    fn from(pairs: [(String, String); N]) -> Self {
        VisitFields::shared(BTreeMap::from(pairs))
    }
}

impl FromIterator<(String, String)> for VisitFields {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        VisitFields::shared(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a VisitFields {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        (**self).iter()
    }
}

/// Serialised as the map itself: stored call records and journals read
/// the same as before.
impl serde::Serialize for VisitFields {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for VisitFields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(d).map(VisitFields::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Same JSON as the plain map, both ways, and equality, debug output
    /// and iteration as the map's.
    #[test]
    fn reads_and_writes_like_the_map() {
        for pairs in [&[][..], &[("city", "Moscow"), ("marker", "g")][..]] {
            let m = map(pairs);
            let f = VisitFields::from(m.clone());
            let json = serde_json::to_string(&f).expect("json");
            assert_eq!(json, serde_json::to_string(&m).expect("json"));
            let back: VisitFields = serde_json::from_str(&json).expect("back");
            assert_eq!(back, f);
            assert_eq!(*back, m);
            assert_eq!(format!("{f:?}"), format!("{m:?}"));
            assert!((&f).into_iter().eq(m.iter()));
            assert_eq!(f.to_map(), m);
        }
    }

    /// A clone shares the map; a write to one copy leaves the other as
    /// it was.
    #[test]
    fn clones_share_until_written() {
        let a = VisitFields::from(map(&[("city", "Moscow")]));
        let mut b = a.clone();
        assert!(std::ptr::eq(&*a, &*b));
        b.insert("city".into(), "Kazan".into());
        assert_eq!(a.get("city").map(String::as_str), Some("Moscow"));
        assert_eq!(b.get("city").map(String::as_str), Some("Kazan"));
    }

    /// No visit holds no map; it reads, compares and serialises as the
    /// empty map, and a first write makes one of its own.
    #[test]
    fn no_visit_is_no_allocation_and_reads_as_empty() {
        let none = VisitFields::default();
        assert!(none.0.is_none());
        assert!(VisitFields::from(BTreeMap::new()).0.is_none());
        assert!(none.is_empty());
        assert_eq!(none, VisitFields::from(map(&[])));
        assert_eq!(serde_json::to_string(&none).expect("json"), "{}");
        let mut written = none.clone();
        written.insert("city".into(), "Kazan".into());
        assert!(none.is_empty());
        assert_eq!(written.len(), 1);
        written.clear();
        assert_eq!(written, none);
    }
}
