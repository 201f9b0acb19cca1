//! `siptrack leads`: the lead log (SPEC L-7) as operators know it: id,
//! date, type, form or tracking number, name, phone, visit, comment,
//! outcome.

use anyhow::Context as _;
use serde_json::Value;

use crate::config::Config;
use crate::store::Store;

const COLUMNS: &[(&str, &str, usize)] = &[
    ("id", "id", 6),
    ("date", "date", 19),
    ("type", "type", 4),
    ("form_or_number", "form / number", 14),
    ("name", "name", 14),
    ("phone", "phone", 13),
    ("visit", "visit", 12),
    ("comment", "comment", 30),
    ("outcome", "outcome", 30),
];

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => printable(s),
        Value::Null => String::new(),
        other => printable(&other.to_string()),
    }
}

/// Characters a terminal acts on instead of showing: C0 and C1 controls
/// and DEL (escape sequences, bells, title changes) and the bidi
/// overrides and isolates (they reorder the text the operator reads).
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Lead text comes from callers and web forms: line breaks and tabs become
/// spaces (the table stays one row per lead), every other unsafe character
/// is shown as a Rust-style escape.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\r' | '\n' | '\t' => out.push(' '),
            c if (c as u32) < 0x80 && is_unsafe(c) => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// One table row, every column cut to its width.
pub fn row(lead: &Value) -> String {
    COLUMNS
        .iter()
        .map(|(key, _, w)| {
            let c: String = cell(&lead[*key]).chars().take(*w).collect();
            format!("{c:<w$}", w = *w)
        })
        .collect::<Vec<_>>()
        .join("  ")
        .trim_end()
        .to_string()
}

/// One lead as a JSON line. serde_json escapes only C0 controls; DEL, C1
/// controls and bidi overrides are escaped here too (`\uXXXX`), so the
/// line is as safe on a terminal as the table. Outside strings JSON text
/// is plain ASCII, so every such character is inside a string.
pub fn json_line(lead: &Value) -> String {
    let mut out = String::new();
    for c in lead.to_string().chars() {
        if is_unsafe(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

pub fn header() -> String {
    COLUMNS
        .iter()
        .map(|(_, title, w)| format!("{title:<w$}", w = *w))
        .collect::<Vec<_>>()
        .join("  ")
        .trim_end()
        .to_string()
}

pub fn print(config: &Config, limit: i64, json: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let leads = rt.block_on(async {
        let store = Store::open(&config.storage.url).await?;
        store.list_leads(limit, 0).await
    })?;
    if json {
        for l in &leads {
            println!("{}", json_line(l));
        }
    } else {
        println!("{}", header());
        for l in &leads {
            println!("{}", row(l));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Issue 12, item 9: lead text comes from callers and web forms; none
    /// of it may reach the operator's terminal as a control sequence.
    #[test]
    fn cells_escape_every_control_character() {
        for (given, shown) in [
            ("plain", "plain"),
            ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
            ("a\r\nb\tc", "a  b c"),
            ("nul\0", "nul\\x00"),
            ("del\x7f", "del\\x7f"),
            // C1 CSI: some terminals take it as ESC [.
            ("c1\u{9b}31m", "c1\\u{9b}31m"),
            // Bidi overrides reorder what the operator reads.
            ("\u{202e}moc.evil", "\\u{202e}moc.evil"),
            ("Привет", "Привет"),
        ] {
            assert_eq!(cell(&json!(given)), shown, "{given:?}");
        }
        let r = row(&json!({"id": 1, "name": "\x1b[2J", "comment": "x\u{9b}y"}));
        assert!(!r.chars().any(|c| c.is_control()), "{r:?}");
    }

    #[test]
    fn json_lines_escape_every_control_character() {
        let v = json!({"name": "\x1b]0;pwned\x07", "text": "del\x7f c1\u{9b} \u{202e}"});
        let line = json_line(&v);
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert!(!line.contains('\u{202e}'), "{line:?}");
        let back: Value = serde_json::from_str(&line).expect("still JSON");
        assert_eq!(back, v, "the escapes decode to the same text");
    }
}
