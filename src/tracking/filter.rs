//! The filter language of SPEC T-6 (pool segments, later CRM filters):
//! JSON conditions `[field, op, value]`, combined with `{"and": [...]}` and
//! `{"or": [...]}`; a bare list of them means "all of these". Parsed once
//! (at config load) into [`Filter`]; evaluation is allocation-free.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value as Json;

/// Deeper nesting than this is refused rather than risk the stack.
const MAX_DEPTH: usize = 32;

#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    Cond { field: String, op: Op, value: Value },
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

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
    List(Vec<String>),
    /// `null` operator: true = the field must be empty.
    Empty(bool),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("{path}: {message}")]
    At { path: String, message: String },
}

fn at(path: &str, message: impl Into<String>) -> FilterError {
    FilterError::At {
        path: if path.is_empty() {
            "filter".into()
        } else {
            path.to_string()
        },
        message: message.into(),
    }
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
            let path = format!("{path}{k}");
            let Json::Array(items) = inner else {
                return Err(at(&path, "must be a list of conditions"));
            };
            match k.as_str() {
                "and" => Ok(Filter::And(group(items, &path, depth)?)),
                "or" => Ok(Filter::Or(group(items, &path, depth)?)),
                other => Err(at(
                    &path,
                    format!("unknown combinator \"{other}\" (use \"and\" or \"or\")"),
                )),
            }
        }
        _ => Err(at(
            path,
            "must be a condition [field, op, value], a list of them, or {\"and\"|\"or\": [...]}",
        )),
    }
}

/// `[field, op, value]` rather than a list of conditions: a string first.
fn is_condition(items: &[Json]) -> bool {
    items.first().is_some_and(Json::is_string)
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
    if items.len() != 3 {
        return Err(at(
            path,
            format!(
                "a condition is [field, op, value]; this has {} elements",
                items.len()
            ),
        ));
    }
    let field = items[0]
        .as_str()
        .filter(|f| !f.is_empty())
        .ok_or_else(|| at(path, "the field must be a non-empty string"))?
        .to_string();
    let op_text = items[1]
        .as_str()
        .ok_or_else(|| at(path, "the operator must be a string"))?;
    let op = OPS
        .iter()
        .find(|(t, _)| *t == op_text)
        .map(|(_, o)| *o)
        .ok_or_else(|| {
            at(
                path,
                format!(
                    "unknown operator \"{op_text}\" (known: {})",
                    OPS.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(" ")
                ),
            )
        })?;
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
        _ => Value::Scalar(scalar(raw).ok_or_else(|| {
            at(
                path,
                format!("\"{op_text}\" needs a string or number value"),
            )
        })?),
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

impl Filter {
    /// Semantics:
    /// - `=`, `!=`, `in`, `not_in` compare as numbers when both sides read
    ///   as numbers, else as strings, ignoring case: segment values such as
    ///   sources and cities come from URLs and forms in any case.
    /// - `>`, `<`, `>=`, `<=` compare numbers when both sides are numbers,
    ///   else strings (byte order).
    /// - `like` (contains) and `like%` (starts with) ignore case.
    /// - An absent field is empty: `null 1` holds, `like ""` holds, and a
    ///   comparison with a value is false; the negations (`!=`, `not_in`,
    ///   `not_like`, `not_like%`) are the exact opposites.
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

fn number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

fn equal(have: &str, want: &str) -> bool {
    match (number(have), number(want)) {
        (Some(a), Some(b)) => a == b,
        _ => have.to_lowercase() == want.trim().to_lowercase(),
    }
}

fn contains_ci(have: &str, want: &str) -> bool {
    have.to_lowercase().contains(&want.to_lowercase())
}

fn starts_ci(have: &str, want: &str) -> bool {
    have.to_lowercase().starts_with(&want.to_lowercase())
}

fn ordered(op: Op, have: &str, want: &str) -> bool {
    let ord = match (number(have), number(want)) {
        (Some(a), Some(b)) => a.partial_cmp(&b),
        _ => Some(have.cmp(want)),
    };
    let Some(ord) = ord else { return false };
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
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn every_operator() {
        let v = visit();
        for (filter, expected) in [
            // The SPEC's own example.
            (r#"[["source", "like%", "organic"]]"#, true),
            (r#"["source", "like%", "google"]"#, false),
            (r#"["source", "like", "GOOGLE"]"#, true),
            (r#"["source", "like", "yandex"]"#, false),
            (r#"["source", "not_like", "yandex"]"#, true),
            (r#"["source", "not_like", "google"]"#, false),
            (r#"["source", "not_like%", "paid"]"#, true),
            (r#"["source", "not_like%", "organic"]"#, false),
            (r#"["city", "=", "moscow"]"#, true),
            (r#"["city", "=", "Berlin"]"#, false),
            (r#"["city", "!=", "Berlin"]"#, true),
            (r#"["city", "!=", "MOSCOW"]"#, false),
            (r#"["visits", "=", 12]"#, true),
            (r#"["visits", "=", "12.0"]"#, true),
            (r#"["visits", ">", 9]"#, true),
            (r#"["visits", ">", 12]"#, false),
            (r#"["visits", ">=", 12]"#, true),
            (r#"["visits", "<", 100]"#, true),
            (r#"["visits", "<", "9"]"#, false),
            (r#"["visits", "<=", 12]"#, true),
            (r#"["visits", "<=", 11]"#, false),
            (r#"["city", ">", "Berlin"]"#, true),
            (r#"["city", "<", "Berlin"]"#, false),
            (r#"["utm_medium", "in", ["cpc", "cpm"]]"#, true),
            (r#"["utm_medium", "in", ["organic"]]"#, false),
            (r#"["visits", "in", [11, 12]]"#, true),
            (r#"["utm_medium", "not_in", ["organic", "email"]]"#, true),
            (r#"["utm_medium", "not_in", ["CPC"]]"#, false),
            (r#"["utm_term", "null", 1]"#, true),
            (r#"["utm_term", "null", 0]"#, false),
            (r#"["blank", "null", 1]"#, true),
            (r#"["city", "null", 0]"#, true),
            (r#"["city", "null", 1]"#, false),
            // Absent fields: comparisons false, negations true.
            (r#"["utm_term", "=", "x"]"#, false),
            (r#"["utm_term", "!=", "x"]"#, true),
            (r#"["utm_term", ">", 0]"#, false),
            (r#"["utm_term", "like", "x"]"#, false),
            (r#"["utm_term", "not_like", "x"]"#, true),
            (r#"["utm_term", "not_in", ["x"]]"#, true),
        ] {
            let f = parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
            assert_eq!(f.matches(&v), expected, "{filter}");
        }
    }

    #[test]
    fn and_or_nesting() {
        let v = visit();
        for (filter, expected) in [
            (
                r#"[["city", "=", "Moscow"], ["utm_medium", "=", "cpc"]]"#,
                true,
            ),
            (
                r#"[["city", "=", "Moscow"], ["utm_medium", "=", "cpm"]]"#,
                false,
            ),
            (
                r#"{"and": [["city", "=", "Moscow"], ["visits", ">", 1]]}"#,
                true,
            ),
            (
                r#"{"or": [["city", "=", "Berlin"], ["visits", ">", 1]]}"#,
                true,
            ),
            (
                r#"{"or": [["city", "=", "Berlin"], ["visits", ">", 100]]}"#,
                false,
            ),
            (
                r#"{"and": [{"or": [["city", "=", "Berlin"], {"and": [["source", "like", "google"], ["utm_medium", "in", ["cpc"]]]}]}, ["visits", "<", 20]]}"#,
                true,
            ),
            (
                r#"{"or": [{"and": [["city", "=", "Moscow"], ["visits", ">", 20]]}, [["source", "like%", "paid"]]]}"#,
                false,
            ),
        ] {
            let f = parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
            assert_eq!(f.matches(&v), expected, "{filter}");
        }
    }

    #[test]
    fn malformed_filters_say_what_and_where() {
        for (filter, needle) in [
            ("[[\"city\", \"=\"", "not JSON"),
            (
                r#"["city", "~", "x"]"#,
                "unknown operator \"~\" (known: > < <= >= = != in",
            ),
            (
                r#"["city", "="]"#,
                "filter: a condition is [field, op, value]; this has 2",
            ),
            (
                r#"[["city", "=", "x", 1]]"#,
                "[0]: a condition is [field, op, value]; this has 4",
            ),
            (r#"[[5, "=", "x"]]"#, "[0]: must be a condition"),
            (r#"["", "=", "x"]"#, "the field must be a non-empty string"),
            (r#"["city", 5, "x"]"#, "the operator must be a string"),
            (r#"["city", "in", "Moscow"]"#, "\"in\" needs a list value"),
            (r#"["city", "not_in", 5]"#, "\"not_in\" needs a list value"),
            (
                r#"["city", "in", [["x"]]]"#,
                "list items must be strings or numbers",
            ),
            (
                r#"["city", "null", 2]"#,
                "\"null\" takes 1 (field empty) or 0",
            ),
            (
                r#"["city", ">", [1, 2]]"#,
                "\">\" needs a string or number value",
            ),
            (
                r#"["city", "=", null]"#,
                "\"=\" needs a string or number value",
            ),
            ("[]", "filter: an empty list of conditions"),
            (r#"{"and": []}"#, "and: an empty list of conditions"),
            (
                r#"{"xor": [["a", "=", 1]]}"#,
                "xor: unknown combinator \"xor\"",
            ),
            (r#"{"and": [["a", "=", 1]], "or": []}"#, "exactly one key"),
            (r#"{"or": ["a", "=", 1]}"#, "or[0]: must be a condition"),
            (
                r#"{"and": {"or": []}}"#,
                "and: must be a list of conditions",
            ),
            (
                r#"{"or": [["a", "=", 1], ["b", "like"]]}"#,
                "or[1]: a condition is",
            ),
            ("\"city\"", "must be a condition"),
        ] {
            let e = parse(filter).expect_err(filter).to_string();
            assert!(e.contains(needle), "{filter}: {e}");
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
