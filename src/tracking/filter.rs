//! The filter language of SPEC T-6 (pool segments, later CRM filters):
//! JSON conditions `[field, op, value]`, combined with `{"and": [...]}` and
//! `{"or": [...]}`; a bare list of them means "all of these". Parsed once
//! (at config load) into [`Filter`]; evaluation is allocation-free, as it
//! runs for every pool on every page view a site reports.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use serde_json::Value as Json;

/// Deeper nesting than this is refused rather than risk the stack.
const MAX_DEPTH: usize = 32;

/// A parsed filter; `And`/`Or` are never empty (the parser refuses that,
/// as an empty `or` matching nothing is surely a mistake).
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    Cond { field: String, op: Op, value: Value },
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

/// The operators of T-6; `OPS` holds how each is spelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Gt,
    Lt,
    Le,
    Ge,
    Eq,
    Ne,
    In,
    NotIn,
    Like,
    LikePrefix,
    NotLike,
    NotLikePrefix,
    Null,
}

const OPS: &[(&str, Op)] = &[
    (">", Op::Gt),
    ("<", Op::Lt),
    ("<=", Op::Le),
    (">=", Op::Ge),
    ("=", Op::Eq),
    ("!=", Op::Ne),
    ("in", Op::In),
    ("not_in", Op::NotIn),
    ("like", Op::Like),
    ("like%", Op::LikePrefix),
    ("not_like", Op::NotLike),
    ("not_like%", Op::NotLikePrefix),
    ("null", Op::Null),
];

/// A condition's right-hand side, as written.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Numbers are kept as their text, and compared as numbers when both
    /// sides read as numbers.
    Scalar(String),
    /// `in` / `not_in`; items are compared like `=` compares a scalar.
    List(Vec<String>),
    /// `null` operator: true = the field must be empty.
    Empty(bool),
}

/// `Json` carries serde_json's message, which ends "at line L column C";
/// `At` names where in the filter (`filter`, `[0][1]`, `and[2].or[0]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("{path}: {message}")]
    At { path: String, message: String },
}

fn at(path: &str, message: impl Into<String>) -> FilterError {
    let path = if path.is_empty() { "filter" } else { path }.to_string();
    let message = message.into();
    FilterError::At { path, message }
}

/// Parses a filter written as JSON text.
pub fn parse(json: &str) -> Result<Filter, FilterError> {
    let v: Json = serde_json::from_str(json).map_err(|e| FilterError::Json(e.to_string()))?;
    from_value(&v)
}

/// Parses a filter already read as JSON (e.g. converted from TOML).
pub fn from_value(v: &Json) -> Result<Filter, FilterError> {
    node(v, "", 0)
}

fn node(v: &Json, path: &str, depth: usize) -> Result<Filter, FilterError> {
    if depth > MAX_DEPTH {
        return Err(at(path, format!("nested deeper than {MAX_DEPTH} levels")));
    }
    match v {
        Json::Array(items) if is_condition(items) => condition(items, path),
        Json::Array(items) => Ok(Filter::And(group(items, path, depth)?)),
        Json::Object(map) => {
            if map.len() != 1 {
                return Err(at(
                    path,
                    "an object must have exactly one key, \"and\" or \"or\"",
                ));
            }
            let (k, inner) = map.iter().next().ok_or_else(|| at(path, "empty object"))?;
            // `and[0].or[1]` reads better than `and[0]or[1]`.
            let path = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            let combine = match k.as_str() {
                "and" => Filter::And,
                "or" => Filter::Or,
                other => {
                    let msg = format!("unknown combinator \"{other}\" (use \"and\" or \"or\")");
                    return Err(at(&path, msg));
                }
            };
            match inner {
                Json::Array(items) if is_condition(items) => Err(at(
                    &path,
                    "must be a list of conditions; for a single one write [[field, op, value]]",
                )),
                Json::Array(items) => Ok(combine(group(items, &path, depth)?)),
                _ => Err(at(&path, "must be a list of conditions")),
            }
        }
        _ => Err(at(
            path,
            "must be a condition [field, op, value], a list of them, or {\"and\"|\"or\": [...]}",
        )),
    }
}

/// `[field, op, value]` rather than a list of conditions: a string first,
/// or three items with an operator in the middle, so that `[5, "=", "x"]`
/// is reported as a bad field rather than as three bad conditions.
fn is_condition(items: &[Json]) -> bool {
    items.first().is_some_and(Json::is_string)
        || (items.len() == 3
            && items[1].is_string()
            && !matches!(items[0], Json::Array(_) | Json::Object(_)))
}

fn group(items: &[Json], path: &str, depth: usize) -> Result<Vec<Filter>, FilterError> {
    if items.is_empty() {
        return Err(at(path, "an empty list of conditions"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| node(v, &format!("{path}[{i}]"), depth + 1))
        .collect()
}

fn scalar(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn condition(items: &[Json], path: &str) -> Result<Filter, FilterError> {
    let n = items.len();
    if n != 3 {
        let msg = format!("a condition is [field, op, value]; this has {n} elements");
        return Err(at(path, msg));
    }
    let Some(field) = items[0].as_str().filter(|f| !f.is_empty()) else {
        let msg = format!("the field must be a non-empty string, not {}", items[0]);
        return Err(at(path, msg));
    };
    let field = field.to_string();
    let op_text = items[1]
        .as_str()
        .ok_or_else(|| at(path, "the operator must be a string"))?;
    let Some(&(_, op)) = OPS.iter().find(|(t, _)| *t == op_text) else {
        let known: Vec<&str> = OPS.iter().map(|(t, _)| *t).collect();
        let msg = format!(
            "unknown operator \"{op_text}\" (known: {})",
            known.join(" ")
        );
        return Err(at(path, msg));
    };
    let raw = &items[2];
    let value = match op {
        Op::In | Op::NotIn => match raw {
            Json::Array(list) => Value::List(
                list.iter()
                    .map(|v| {
                        scalar(v).ok_or_else(|| at(path, "list items must be strings or numbers"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(at(path, format!("\"{op_text}\" needs a list value"))),
        },
        Op::Null => match raw.as_i64().or_else(|| raw.as_bool().map(i64::from)) {
            Some(1) => Value::Empty(true),
            Some(0) => Value::Empty(false),
            _ => return Err(at(path, "\"null\" takes 1 (field empty) or 0 (not empty)")),
        },
        _ => match scalar(raw) {
            Some(v) => Value::Scalar(v),
            None => {
                let msg = format!("\"{op_text}\" needs a string or number value");
                return Err(at(path, msg));
            }
        },
    };
    Ok(Filter::Cond { field, op, value })
}

/// Where a filter reads field values from.
pub trait Fields {
    fn get(&self, field: &str) -> Option<&str>;
}

impl Fields for HashMap<String, String> {
    fn get(&self, field: &str) -> Option<&str> {
        HashMap::get(self, field).map(String::as_str)
    }
}

impl Fields for BTreeMap<String, String> {
    fn get(&self, field: &str) -> Option<&str> {
        BTreeMap::get(self, field).map(String::as_str)
    }
}

impl Fields for super::VisitFields {
    fn get(&self, field: &str) -> Option<&str> {
        BTreeMap::get(self, field).map(String::as_str)
    }
}

impl Filter {
    /// Every field a filter reads, in the order written (repeats kept), so
    /// that a config can refuse fields its records never carry.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            Filter::Cond { field, .. } => vec![field.as_str()],
            Filter::And(all) | Filter::Or(all) => all.iter().flat_map(Filter::fields).collect(),
        }
    }

    /// Semantics:
    /// - `=`, `!=`, `in`, `not_in` compare as numbers when both sides read
    ///   as numbers (`12` = `12.0`), else as strings ignoring case: segment
    ///   values such as sources and cities come from URLs and forms in any
    ///   case, and `Yandex` ≠ `yandex` would only ever surprise.
    /// - Integers compare exactly, whatever their length: visit ids and
    ///   phone numbers exceed what an f64 holds exactly.
    /// - `>`, `<`, `>=`, `<=` compare numbers when both sides are numbers,
    ///   else strings (byte order, case-sensitive).
    /// - `like` (contains) and `like%` (starts with) ignore case, Unicode
    ///   included (`Москва` like `МОСК`).
    /// - Field values are trimmed. An absent field is the same as an empty
    ///   one (the visit API drops empty fields anyway): `null 1` holds, every
    ///   comparison with a non-empty value is false and so every negation
    ///   (`!=`, `not_in`, `not_like`, `not_like%`) is true; `>` and friends
    ///   are false even against `""`, so an absent field is never "in range".
    pub fn matches(&self, fields: &impl Fields) -> bool {
        match self {
            Filter::And(all) => all.iter().all(|f| f.matches(fields)),
            Filter::Or(any) => any.iter().any(|f| f.matches(fields)),
            Filter::Cond { field, op, value } => {
                let have = fields.get(field).unwrap_or("").trim();
                match (op, value) {
                    (Op::Null, Value::Empty(empty)) => have.is_empty() == *empty,
                    (Op::In, Value::List(l)) => l.iter().any(|v| equal(have, v)),
                    (Op::NotIn, Value::List(l)) => !l.iter().any(|v| equal(have, v)),
                    (Op::Eq, Value::Scalar(v)) => equal(have, v),
                    (Op::Ne, Value::Scalar(v)) => !equal(have, v),
                    (Op::Like, Value::Scalar(v)) => contains_ci(have, v),
                    (Op::NotLike, Value::Scalar(v)) => !contains_ci(have, v),
                    (Op::LikePrefix, Value::Scalar(v)) => starts_ci(have, v),
                    (Op::NotLikePrefix, Value::Scalar(v)) => !starts_ci(have, v),
                    (Op::Gt | Op::Lt | Op::Le | Op::Ge, Value::Scalar(v)) => {
                        !have.is_empty() && ordered(*op, have, v)
                    }
                    // The parser never pairs an operator with another kind
                    // of value.
                    _ => false,
                }
            }
        }
    }
}

/// `Some(sign, digits without leading zeros)` for a plain integer.
fn integer(s: &str) -> Option<(bool, &str)> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = digits.trim_start_matches('0');
    // -0 is 0.
    Some((neg && !digits.is_empty(), digits))
}

/// Orders two numbers, or None when either side is not one. `nan` and
/// `inf` parse as f64 but are words here (a source could be called "Nan").
fn numeric_cmp(a: &str, b: &str) -> Option<Ordering> {
    let (a, b) = (a.trim(), b.trim());
    if let (Some((an, ad)), Some((bn, bd))) = (integer(a), integer(b)) {
        let magnitude = ad.len().cmp(&bd.len()).then_with(|| ad.cmp(bd));
        return Some(match (an, bn) {
            (false, false) => magnitude,
            (true, true) => magnitude.reverse(),
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
        });
    }
    let number = |s: &str| s.parse::<f64>().ok().filter(|n| n.is_finite());
    number(a)?.partial_cmp(&number(b)?)
}

fn equal(have: &str, want: &str) -> bool {
    match numeric_cmp(have, want) {
        Some(ord) => ord.is_eq(),
        None => lower(have).eq(lower(want.trim())),
    }
}

fn lower(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().flat_map(char::to_lowercase)
}

fn starts_ci(have: &str, want: &str) -> bool {
    if have.is_ascii() && want.is_ascii() {
        return have.len() >= want.len()
            && have.as_bytes()[..want.len()].eq_ignore_ascii_case(want.as_bytes());
    }
    let mut h = lower(have);
    lower(want).all(|w| h.next() == Some(w))
}

fn contains_ci(have: &str, want: &str) -> bool {
    if want.is_empty() {
        return true;
    }
    if have.is_ascii() && want.is_ascii() {
        let w = want.as_bytes();
        return have
            .as_bytes()
            .windows(w.len())
            .any(|h| h.eq_ignore_ascii_case(w));
    }
    // Quadratic, but both sides are short (a visit field is capped).
    have.char_indices()
        .any(|(i, _)| starts_ci(&have[i..], want))
}

fn ordered(op: Op, have: &str, want: &str) -> bool {
    let ord = numeric_cmp(have, want).unwrap_or_else(|| have.cmp(want));
    match op {
        Op::Gt => ord.is_gt(),
        Op::Lt => ord.is_lt(),
        Op::Ge => ord.is_ge(),
        Op::Le => ord.is_le(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visit() -> BTreeMap<String, String> {
        [
            ("source", "Organic Google"),
            ("city", "Moscow"),
            ("utm_medium", "cpc"),
            ("visits", "12"),
            ("page", "https://shop.example/sale"),
            ("blank", "  "),
            ("visit_id", "74951111111123456789"),
            ("zip", "007"),
            ("name", "Nan"),
            ("region", "Москва и область"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn every_operator() {
        #[rustfmt::skip]
        const CASES: &[(&str, bool)] = &[
            // The SPEC's own example.
            (r#"[["source", "like%", "organic"]]"#, true), (r#"["source", "like%", "google"]"#, false),
            (r#"["source", "like", "GOOGLE"]"#, true), (r#"["source", "like", "yandex"]"#, false),
            (r#"["source", "not_like", "yandex"]"#, true), (r#"["source", "not_like", "google"]"#, false),
            (r#"["source", "not_like%", "paid"]"#, true), (r#"["source", "not_like%", "organic"]"#, false),
            (r#"["source", "like", "organic google and more"]"#, false),
            (r#"["city", "=", "moscow"]"#, true), (r#"["city", "=", "Berlin"]"#, false),
            (r#"["city", "!=", "Berlin"]"#, true), (r#"["city", "!=", "MOSCOW"]"#, false),
            (r#"["visits", "=", 12]"#, true), (r#"["visits", "=", "12.0"]"#, true),
            (r#"["visits", ">", 9]"#, true), (r#"["visits", ">", 12]"#, false),
            (r#"["visits", ">=", 12]"#, true), (r#"["visits", ">=", 13]"#, false),
            (r#"["visits", "<", 100]"#, true), (r#"["visits", "<", "9"]"#, false),
            (r#"["visits", "<=", 12]"#, true), (r#"["visits", "<=", 11]"#, false),
            // Not both numbers: string order ("12" < "9" as text).
            (r#"["city", ">", "Berlin"]"#, true), (r#"["city", "<", "Berlin"]"#, false),
            (r#"["visits", "<", "9x"]"#, true), (r#"["visits", ">", "9e0"]"#, true),
            (r#"["utm_medium", "in", ["cpc", "cpm"]]"#, true), (r#"["utm_medium", "in", ["organic"]]"#, false),
            (r#"["visits", "in", [11, 12]]"#, true), (r#"["visits", "in", [11, 13]]"#, false),
            (r#"["utm_medium", "not_in", ["organic"]]"#, true), (r#"["utm_medium", "not_in", ["CPC"]]"#, false),
            (r#"["utm_term", "null", 1]"#, true), (r#"["utm_term", "null", 0]"#, false),
            (r#"["city", "null", 0]"#, true), (r#"["city", "null", 1]"#, false),
            (r#"["blank", "null", 1]"#, true), (r#"["blank", "null", false]"#, false),
            // Absent fields: comparisons false, negations true.
            (r#"["utm_term", "=", "x"]"#, false), (r#"["utm_term", "!=", "x"]"#, true),
            (r#"["utm_term", ">", 0]"#, false), (r#"["utm_term", "<=", ""]"#, false),
            (r#"["utm_term", "like", "x"]"#, false), (r#"["utm_term", "not_like", "x"]"#, true),
            (r#"["utm_term", "like%", "x"]"#, false), (r#"["utm_term", "not_like%", "x"]"#, true),
            (r#"["utm_term", "in", ["x"]]"#, false), (r#"["utm_term", "not_in", ["x"]]"#, true),
            // ...and absent is empty.
            (r#"["utm_term", "=", ""]"#, true), (r#"["utm_term", "like%", ""]"#, true),
            // Integers beyond 2^53 stay exact (f64 would call these equal).
            (r#"["visit_id", "=", "74951111111123456788"]"#, false),
            (r#"["visit_id", ">", "74951111111123456788"]"#, true),
            (r#"["visit_id", "in", ["1", "74951111111123456789"]]"#, true),
            (r#"["zip", "=", 7]"#, true), (r#"["zip", "<", "-8"]"#, false), (r#"["zip", ">", -0.5]"#, true),
            // "nan" is a word, not a number: compared as text.
            (r#"["name", "=", "NaN"]"#, true), (r#"["name", ">", "nan"]"#, false),
            (r#"["region", "like", "МОСКВА И"]"#, true), (r#"["region", "not_like", "ОБЛАСТЬ"]"#, false),
            (r#"["region", "like%", "москва"]"#, true), (r#"["region", "like%", "область"]"#, false),
            (r#"["region", "=", "москва и ОБЛАСТЬ"]"#, true),
        ];
        let v = visit();
        for &(filter, expected) in CASES {
            let f = parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
            assert_eq!(f.matches(&v), expected, "{filter}");
        }
    }

    #[test]
    fn and_or_nesting() {
        #[rustfmt::skip]
        const CASES: &[(&str, bool)] = &[
            (r#"[["city", "=", "Moscow"], ["utm_medium", "=", "cpc"]]"#, true),
            (r#"[["city", "=", "Moscow"], ["utm_medium", "=", "cpm"]]"#, false),
            (r#"{"and": [["city", "=", "Moscow"], ["visits", ">", 1]]}"#, true),
            (r#"{"or": [["city", "=", "Berlin"], ["visits", ">", 1]]}"#, true),
            (r#"{"or": [["city", "=", "Berlin"], ["visits", ">", 100]]}"#, false),
            // and inside or inside and.
            (r#"{"and": [{"or": [["city", "=", "Berlin"], {"and": [["source", "like", "google"],
                ["utm_medium", "in", ["cpc"]]]}]}, ["visits", "<", 20]]}"#, true),
            (r#"{"and": [{"or": [["city", "=", "Berlin"], {"and": [["source", "like", "google"],
                ["utm_medium", "in", ["cpm"]]]}]}, ["visits", "<", 20]]}"#, false),
            (r#"{"or": [{"and": [["city", "=", "Moscow"], ["visits", ">", 20]]},
                [["source", "like%", "paid"]]]}"#, false),
        ];
        let v = visit();
        for &(filter, expected) in CASES {
            let f = parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
            assert_eq!(f.matches(&v), expected, "{filter}");
        }
    }

    #[test]
    fn malformed_filters_say_what_and_where() {
        #[rustfmt::skip]
        const CASES: &[(&str, &str)] = &[
            ("[[\"city\", \"=\"", "not JSON: EOF while parsing a list at line 1 column 13"),
            ("[[\"a\", \"=\", 1]]\n]", "not JSON: trailing characters at line 2 column 1"),
            (r#"["city", "~", "x"]"#, "filter: unknown operator \"~\" (known: > < <= >= = != in"),
            (r#"["city", "="]"#, "filter: a condition is [field, op, value]; this has 2"),
            (r#"[["city", "=", "x", 1]]"#, "[0]: a condition is [field, op, value]; this has 4"),
            (r#"{"or": [["a", "=", 1], ["b", "like"]]}"#, "or[1]: a condition is"),
            (r#"[[5, "=", "x"]]"#, "[0]: the field must be a non-empty string, not 5"),
            (r#"[["a", "=", 1], [null, "in", []]]"#, "[1]: the field must be a non-empty string, not null"),
            (r#"["", "=", "x"]"#, "the field must be a non-empty string"),
            (r#"["city", 5, "x"]"#, "the operator must be a string"),
            (r#"["city", "in", "Moscow"]"#, "\"in\" needs a list value"),
            (r#"["city", "not_in", 5]"#, "\"not_in\" needs a list value"),
            (r#"["city", "in", [["x"]]]"#, "list items must be strings or numbers"),
            (r#"["city", "null", 2]"#, "\"null\" takes 1 (field empty) or 0"),
            (r#"["city", "null", "yes"]"#, "\"null\" takes 1 (field empty) or 0"),
            (r#"["city", ">", [1, 2]]"#, "\">\" needs a string or number value"),
            (r#"["city", "like%", ["a"]]"#, "\"like%\" needs a string or number value"),
            (r#"["city", "=", null]"#, "\"=\" needs a string or number value"),
            ("[]", "filter: an empty list of conditions"),
            (r#"{"and": []}"#, "and: an empty list of conditions"),
            (r#"[{"or": [["a", "=", 1]]}, {"or": []}]"#, "[1].or: an empty list of conditions"),
            (r#"{"xor": [["a", "=", 1]]}"#, "xor: unknown combinator \"xor\""),
            (r#"{"not": ["a", "=", 1]}"#, "not: unknown combinator \"not\" (use \"and\" or \"or\")"),
            (r#"[[["a", "like%", "x"], {"nor": []}]]"#, "[0][1].nor: unknown combinator"),
            (r#"{"and": [["a", "=", 1]], "or": []}"#, "exactly one key"),
            (r#"{}"#, "exactly one key"),
            (r#"{"or": ["a", "=", 1]}"#, "or: must be a list of conditions; for a single one write [["),
            (r#"{"and": {"or": []}}"#, "and: must be a list of conditions"),
            (r#"{"and": [{"or": [["a", "=", 1], ["b", "like", [1]]]}]}"#,
                "and[0].or[1]: \"like\" needs a string or number value"),
            ("\"city\"", "must be a condition"),
        ];
        for &(filter, needle) in CASES {
            let e = parse(filter).expect_err(filter).to_string();
            assert!(e.contains(needle), "{filter}: {e}");
        }
    }

    #[test]
    fn hash_maps_and_parsed_json_work_too() {
        let fields: HashMap<String, String> = [("source".into(), "ORGANIC".into())].into();
        let json = serde_json::json!({"and": [["source", "=", "organic"], ["city", "null", 1]]});
        let f = from_value(&json).expect("filter");
        assert!(f.matches(&fields));
        let text = parse(r#"{"and": [["source", "=", "organic"], ["city", "null", true]]}"#);
        assert_eq!(text.as_ref(), Ok(&f));
        let Filter::And(parts) = f else {
            panic!("{f:?}")
        };
        let (op, value) = (Op::Null, Value::Empty(true));
        assert_eq!(
            parts[1],
            Filter::Cond {
                field: "city".into(),
                op,
                value
            }
        );
    }

    #[test]
    fn fields_named_by_a_filter() {
        for (filter, fields) in [
            (r#"["city", "=", "x"]"#, vec!["city"]),
            (
                r#"{"or": [["source", "like%", "a"], {"and": [["colour", "=", "red"], ["city", "null", 1]]}]}"#,
                vec!["source", "colour", "city"],
            ),
            (
                r#"[["city", "=", "x"], ["city", "!=", "y"]]"#,
                vec!["city", "city"],
            ),
        ] {
            assert_eq!(parse(filter).expect(filter).fields(), fields, "{filter}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}[\"a\", \"=\", 1]{}", "[".repeat(40), "]".repeat(40));
        let e = parse(&deep).expect_err("too deep").to_string();
        assert!(e.contains("nested deeper than 32"), "{e}");
    }

    #[test]
    fn toml_values_work_through_json() {
        let t: toml::Value = toml::from_str(
            "segment = { or = [[\"source\", \"like%\", \"organic\"], [\"city\", \"in\", [\"Moscow\", \"Kazan\"]]] }",
        )
        .expect("toml");
        let json = serde_json::to_value(&t["segment"]).expect("json");
        let f = from_value(&json).expect("filter");
        assert!(f.matches(&visit()));
    }
}
