//! Which keys of a config file siptrack does not know — all of them in one
//! run, each with its place and the nearest known key as a hint — and
//! which key a byte offset belongs to (for serde's type errors).
//!
//! The known keys are read from the `Raw*` serde structs themselves: a
//! probing deserializer walks their field lists, so a key added to a
//! struct is known here without a second list to keep in step. serde's
//! own `deny_unknown_fields` stops at the first unknown key, which is why
//! the structs no longer use it.

use std::ops::Range;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

/// The keys a serde type accepts.
#[derive(Debug, PartialEq)]
pub enum Shape {
    /// A scalar.
    Leaf,
    /// Any keys (a `toml::Value` or `toml::Table` field).
    Any,
    Struct(Vec<(&'static str, Shape)>),
    /// An array; every element has the inner shape.
    Seq(Box<Shape>),
}

/// The shape of `T`, read from its `Deserialize` impl.
pub fn shape_of<T: DeserializeOwned>() -> Shape {
    let mut s = Shape::Leaf;
    // The probe feeds every visitor a value it accepts; an error would
    // only cut the shape short, never matter otherwise.
    let _ = T::deserialize(Probe(&mut s));
    s
}

/// A key found in a file.
#[derive(Debug, PartialEq)]
pub struct Unknown {
    /// `sip.trusted_source`, `tracking.numbers[0].markr`.
    pub key: String,
    /// Byte range of its value in the file (of the first value inside it,
    /// for a table only implied by a dotted header).
    pub span: Option<Range<usize>>,
    /// `did you mean …?` or the keys known there.
    pub message: String,
}

/// Every unknown key of `text` against `shape`, in file order. A file
/// that is no TOML has none (the TOML error says what is wrong).
pub fn unknown_keys(text: &str, shape: &Shape) -> Vec<Unknown> {
    let mut out = Vec::new();
    if let Ok(root) = toml::from_str::<Node>(text) {
        walk(&root, shape, "", &mut out);
    }
    out.sort_by_key(|u| u.span.as_ref().map_or(usize::MAX, |s| s.start));
    out
}

/// The innermost key whose value holds byte `offset` (`sip.listen[1]`).
pub fn key_at(text: &str, offset: usize) -> Option<String> {
    let root = toml::from_str::<Node>(text).ok()?;
    let mut best: Option<(String, usize)> = None;
    find(&root, "", offset, &mut best);
    best.map(|(k, _)| k)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(node: &Node, shape: &Shape, path: &str, out: &mut Vec<Unknown>) {
    match (node, shape) {
        (Node::Table(entries), Shape::Struct(fields)) => {
            for (k, v) in entries {
                let key = join(path, k);
                match fields.iter().find(|(f, _)| f == k) {
                    Some((_, s)) => walk(&v.node, s, &key, out),
                    None => {
                        let names: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
                        let message = match nearest(k, &names) {
                            Some(n) => format!("unknown key (did you mean {}?)", join(path, n)),
                            None => format!("unknown key (known here: {})", names.join(", ")),
                        };
                        out.push(Unknown {
                            key,
                            span: v.place(),
                            message,
                        });
                    }
                }
            }
        }
        (Node::Array(items), Shape::Seq(inner)) => {
            for (i, item) in items.iter().enumerate() {
                walk(&item.node, inner, &format!("{path}[{i}]"), out);
            }
        }
        // A wrong type is serde's to report; Any and Leaf end the walk.
        _ => {}
    }
}

fn find(node: &Node, path: &str, offset: usize, best: &mut Option<(String, usize)>) {
    let children: Vec<(String, &Sp)> = match node {
        Node::Table(entries) => entries.iter().map(|(k, v)| (join(path, k), v)).collect(),
        Node::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{path}[{i}]"), v))
            .collect(),
        Node::Other => return,
    };
    // Every table is looked inside, not only those whose span holds the
    // offset: a table's span is its own header's section, and a
    // sub-table's section (`[crm.amocrm]` under `[crm]`) lies outside it
    // (trial, 2026-12-03: a wrong type there was reported as `toml:`).
    for (key, v) in children {
        if let Some(span) = &v.span {
            if span.contains(&offset) && best.as_ref().is_none_or(|(_, len)| span.len() <= *len) {
                *best = Some((key.clone(), span.len()));
            }
        }
        find(&v.node, &key, offset, best);
    }
}

/// The known name closest to `typo` by edit distance, if close enough to
/// be what was meant: at most 2 edits, or a third of the name.
fn nearest<'a>(typo: &str, names: &[&'a str]) -> Option<&'a str> {
    let limit = (typo.chars().count() / 3).max(2);
    names
        .iter()
        .map(|n| (edit_distance(typo, n), *n))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Levenshtein distance, ignoring ASCII case.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A TOML document as keys and spans, whatever the values.
enum Node {
    Table(Vec<(String, Sp)>),
    Array(Vec<Sp>),
    Other,
}

/// A node with its span; None for a table only implied by a dotted
/// header (`[a.b]` implies `a`), which toml gives no span.
struct Sp {
    span: Option<Range<usize>>,
    node: Node,
}

impl Sp {
    /// Its span, else the first span inside it.
    fn place(&self) -> Option<Range<usize>> {
        self.span.clone().or_else(|| match &self.node {
            Node::Table(entries) => entries.iter().find_map(|(_, v)| v.place()),
            Node::Array(items) => items.iter().find_map(Sp::place),
            Node::Other => None,
        })
    }
}

/// How toml hands a datetime to serde: a map with this one key.
const TOML_DATETIME: &str = "$__toml_private_datetime";

impl<'de> de::Deserialize<'de> for Node {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor).map(|sp| sp.node)
    }
}

impl<'de> de::Deserialize<'de> for Sp {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Sp, D::Error> {
        d.deserialize_struct(
            SPANNED,
            &[SPANNED_START, SPANNED_END, SPANNED_VALUE],
            NodeVisitor,
        )
    }
}

/// Reads a value as toml offers it: wrapped in its span (start, end,
/// value), or, for implied tables, as a plain table.
struct NodeVisitor;

fn other(span: Option<Range<usize>>) -> Sp {
    Sp {
        span,
        node: Node::Other,
    }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Sp;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a TOML value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Sp, E> {
        Ok(other(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Sp, E> {
        Ok(other(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Sp, E> {
        Ok(other(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Sp, E> {
        Ok(other(None))
    }
    fn visit_str<E>(self, _: &str) -> Result<Sp, E> {
        Ok(other(None))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Sp, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<Sp>()? {
            items.push(v);
        }
        Ok(Sp {
            span: None,
            node: Node::Array(items),
        })
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Sp, A::Error> {
        let mut entries = Vec::new();
        let (mut start, mut end) = (None, None);
        let mut value = None;
        while let Some(k) = map.next_key::<String>()? {
            match k.as_str() {
                SPANNED_START => start = Some(map.next_value::<usize>()?),
                SPANNED_END => end = Some(map.next_value::<usize>()?),
                SPANNED_VALUE => value = Some(map.next_value::<Node>()?),
                TOML_DATETIME => {
                    map.next_value::<de::IgnoredAny>()?;
                    return Ok(other(None));
                }
                _ => entries.push((k, map.next_value::<Sp>()?)),
            }
        }
        Ok(match value {
            Some(node) => Sp {
                span: start.zip(end).map(|(s, e)| s..e),
                node,
            },
            None => Sp {
                span: None,
                node: Node::Table(entries),
            },
        })
    }
}

/// The spanned wrapper's private names (serde_spanned): the probe answers
/// its struct request the way the toml deserializer does.
const SPANNED: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";

type ProbeError = de::value::Error;

/// A deserializer that answers every request with a minimal value and
/// records the structure asked for.
struct Probe<'a>(&'a mut Shape);

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = ProbeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        *self.0 = Shape::Any;
        v.visit_str("")
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        *self.0 = Shape::Any;
        v.visit_map(Fields {
            fields: &[],
            next: 0,
            shapes: &mut Vec::new(),
        })
    }
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_bool(false)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_i64(0)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_u64(0)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_f64(0.0)
    }
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_str("")
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_str("")
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_some(self)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, ProbeError> {
        v.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        let mut inner = Shape::Leaf;
        let r = v.visit_seq(One {
            slot: Some(&mut inner),
        });
        *self.0 = Shape::Seq(Box::new(inner));
        r
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, ProbeError> {
        if name == SPANNED {
            return v.visit_map(SpannedProbe {
                next: 0,
                slot: Some(self.0),
            });
        }
        let mut shapes = Vec::new();
        let r = v.visit_map(Fields {
            fields,
            next: 0,
            shapes: &mut shapes,
        });
        *self.0 = Shape::Struct(shapes);
        r
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u32 u128 f32 char bytes byte_buf unit unit_struct
        tuple tuple_struct enum identifier ignored_any
    }
}

/// A struct's fields, each with the probe as its value.
struct Fields<'a> {
    fields: &'static [&'static str],
    next: usize,
    shapes: &'a mut Vec<(&'static str, Shape)>,
}

impl<'de> de::MapAccess<'de> for Fields<'_> {
    type Error = ProbeError;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ProbeError> {
        let Some(f) = self.fields.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        seed.deserialize((*f).into_deserializer()).map(Some)
    }
    fn next_value_seed<S: de::DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, ProbeError> {
        let mut s = Shape::Leaf;
        let r = seed.deserialize(Probe(&mut s));
        let name = self.fields[self.next - 1];
        self.shapes.push((name, s));
        r
    }
}

/// A one-element sequence whose element is probed.
struct One<'a> {
    slot: Option<&'a mut Shape>,
}

impl<'de> de::SeqAccess<'de> for One<'_> {
    type Error = ProbeError;
    fn next_element_seed<S: de::DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, ProbeError> {
        match self.slot.take() {
            Some(s) => seed.deserialize(Probe(s)).map(Some),
            None => Ok(None),
        }
    }
}

/// `Spanned<T>` asks for start, end and value; the value is probed.
struct SpannedProbe<'a> {
    next: usize,
    slot: Option<&'a mut Shape>,
}

impl<'de> de::MapAccess<'de> for SpannedProbe<'_> {
    type Error = ProbeError;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ProbeError> {
        let key = match self.next {
            0 => SPANNED_START,
            1 => SPANNED_END,
            2 => SPANNED_VALUE,
            _ => return Ok(None),
        };
        self.next += 1;
        seed.deserialize(de::value::BorrowedStrDeserializer::new(key))
            .map(Some)
    }
    fn next_value_seed<S: de::DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, ProbeError> {
        match (self.next, self.slot.take()) {
            (3, Some(s)) => seed.deserialize(Probe(s)),
            (_, slot) => {
                self.slot = slot;
                seed.deserialize(0u64.into_deserializer())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toml::Spanned;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        a: Option<i64>,
        b: Option<Spanned<String>>,
    }

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        #[serde(default)]
        inner: Inner2,
        list: Option<Vec<Spanned<String>>>,
        items: Vec<Inner>,
        any: Option<Spanned<toml::Value>>,
        table: toml::Table,
        flag: Option<bool>,
    }

    #[derive(serde::Deserialize, Default)]
    #[allow(dead_code)]
    struct Inner2 {
        deep: Option<Spanned<i64>>,
    }

    #[test]
    fn shapes_come_from_the_serde_structs() {
        assert_eq!(
            shape_of::<Outer>(),
            Shape::Struct(vec![
                ("inner", Shape::Struct(vec![("deep", Shape::Leaf)])),
                ("list", Shape::Seq(Box::new(Shape::Leaf))),
                (
                    "items",
                    Shape::Seq(Box::new(Shape::Struct(vec![
                        ("a", Shape::Leaf),
                        ("b", Shape::Leaf)
                    ])))
                ),
                ("any", Shape::Any),
                ("table", Shape::Any),
                ("flag", Shape::Leaf),
            ])
        );
    }

    #[test]
    fn every_unknown_key_with_a_hint() {
        let text = "flag = true\nflgs = 1\n[inner]\ndeep = 1\ndep = 2\nwhatever = 3\n\
                    [[items]]\na = 1\n[[items]]\nbb = \"x\"\nwhen = 1979-05-27T07:32:00Z\n\
                    [table]\nfree = 1\n[any]\nx = { y = 1 }\n[nonsense.more]\nz = 1\n";
        let got: Vec<(String, String)> = unknown_keys(text, &shape_of::<Outer>())
            .into_iter()
            .map(|u| (u.key, u.message))
            .collect();
        let want = [
            ("flgs", "unknown key (did you mean flag?)"),
            ("inner.dep", "unknown key (did you mean inner.deep?)"),
            ("inner.whatever", "unknown key (known here: deep)"),
            ("items[1].bb", "unknown key (did you mean items[1].b?)"),
            ("items[1].when", "unknown key (known here: a, b)"),
            (
                "nonsense",
                "unknown key (known here: inner, list, items, any, table, flag)",
            ),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, m)| (k.to_string(), m.to_string()))
            .collect();
        assert_eq!(got, want);
        assert!(unknown_keys("[broken", &shape_of::<Outer>()).is_empty());
    }

    #[test]
    fn the_key_at_an_offset() {
        let text = "flag = true\n[inner]\ndeep = \"x\"\n[[items]]\nb = [1, 2]\n";
        let at = |needle: &str| text.find(needle).map(|o| key_at(text, o));
        assert_eq!(at("true"), Some(Some("flag".into())));
        assert_eq!(at("\"x\""), Some(Some("inner.deep".into())));
        assert_eq!(at("2]"), Some(Some("items[0].b[1]".into())));
        // A sub-table's section lies outside its parent's span (trial,
        // 2026-12-03: `[crm.amocrm]`'s wrong types were `toml:`).
        let text = "[crm]\nkind = \"amocrm\"\n\n[crm.amocrm]\nphone_field_id = \"1\"\n[crm.retry]\ninitial_ms = \"1s\"\n";
        let at = |needle: &str| text.find(needle).map(|o| key_at(text, o));
        assert_eq!(at("\"1\""), Some(Some("crm.amocrm.phone_field_id".into())));
        assert_eq!(at("\"1s\""), Some(Some("crm.retry.initial_ms".into())));
    }

    #[test]
    fn edit_distances() {
        for (a, b, d) in [
            ("trusted_source", "trusted_sources", 1),
            ("trackign", "tracking", 2),
            ("", "abc", 3),
            ("Token", "token", 0),
        ] {
            assert_eq!(edit_distance(a, b), d, "{a} {b}");
        }
        assert_eq!(nearest("listen_on", &["listen", "timers"]), Some("listen"));
        assert_eq!(nearest("zzz", &["listen", "timers"]), None);
    }
}
