//! `siptrack leads`: the lead log (SPEC L-7) as operators know it: id,
//! date, type, form or tracking number, name, phone, visit, comment,
//! outcome.

use anyhow::Context as _;
use chrono::FixedOffset;
use serde_json::Value;

use crate::config::Config;
use crate::store::Store;

/// (key, title, width). Dates carry their zone; long texts wrap.
const COLUMNS: &[(&str, &str, usize)] = &[
    ("id", "id", 6),
    ("date", "date", 26),
    ("type", "type", 4),
    ("form_or_number", "form / number", 14),
    ("name", "name", 14),
    ("phone", "phone", 13),
    ("visit", "visit", 12),
    ("comment", "comment", 40),
    ("outcome", "outcome", 30),
];

/// Characters a terminal acts on instead of showing: C0 and C1 controls
/// and DEL (escape sequences, bells, title changes) and the bidi
/// overrides and isolates (they reorder the text the operator reads).
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Lead text comes from callers and web forms: line breaks and tabs become
/// spaces (long texts wrap in their column), every other unsafe character
/// is shown as a Rust-style escape.
pub fn printable(s: &str) -> String {
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

/// Lines of at most `width` characters, broken at spaces where possible.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        let used = line.chars().count();
        if used > 0 && used + 1 + word.len() <= width {
            line.push(' ');
            line.extend(word.iter());
            continue;
        }
        if used > 0 {
            lines.push(std::mem::take(&mut line));
        }
        while word.len() > width {
            lines.push(word.drain(..width).collect());
        }
        line.extend(word.iter());
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

fn cell(lead: &Value, key: &str, tz: FixedOffset) -> String {
    let v = &lead[key];
    if key == "date" {
        // The API's dates are UTC; the table shows the CRM's zone.
        if let Some(t) = v
            .as_str()
            .and_then(|s| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").ok())
        {
            return t
                .and_utc()
                .with_timezone(&tz)
                .format("%Y-%m-%d %H:%M:%S %:z")
                .to_string();
        }
    }
    match v {
        Value::String(s) => printable(s),
        Value::Null => String::new(),
        other => printable(&other.to_string()),
    }
}

/// A lead of the API (its `date` in UTC, no offset) with its `date` as
/// the table shows it: in `crm.timezone`, offset written. The JSON lines
/// printed UTC without saying so, three hours from the table's dates in
/// UTC+3 (trial, 2026-12-01).
pub fn with_local_date(lead: &Value, tz: FixedOffset) -> Value {
    let mut out = lead.clone();
    if lead.get("date").is_some_and(Value::is_string) {
        out["date"] = Value::String(cell(lead, "date", tz));
    }
    out
}

/// One lead as table lines: texts longer than their column wrap onto the
/// following lines.
pub fn rows(lead: &Value, tz: FixedOffset) -> Vec<String> {
    let cells: Vec<Vec<String>> = COLUMNS
        .iter()
        .map(|(key, _, w)| wrap(&cell(lead, key, tz), *w))
        .collect();
    let height = cells.iter().map(Vec::len).max().unwrap_or(1);
    (0..height)
        .map(|i| {
            COLUMNS
                .iter()
                .zip(&cells)
                .map(|((_, _, w), c)| {
                    let text = c.get(i).map(String::as_str).unwrap_or("");
                    format!("{text:<w$}", w = *w)
                })
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect()
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
    // Reading never creates a database: a wrong working directory or
    // config would otherwise show an empty, new one.
    if let Some(path) = config.storage.sqlite_path() {
        if !path.exists() {
            anyhow::bail!(
                "no database at {} (storage.url = \"{}\"; a relative path is taken from the working directory)",
                path.display(),
                config.storage.url
            );
        }
    }
    crate::store::require_existing_postgres(&config.storage.url)?;

    let leads = rt.block_on(async {
        let store = Store::open_with(
            &config.storage.url,
            &config.storage.postgres,
            crate::store::runs::DEFAULT_NODE,
            crate::clock::Clock::system(),
        )
        .await?;
        store.list_leads(limit, 0).await
    })?;
    let leads: Vec<Value> = leads.iter().map(crate::http::json::lead).collect();
    let tz = config.leads.crm.format.timezone;
    if json {
        for l in &leads {
            println!("{}", json_line(&with_local_date(l, tz)));
        }
    } else {
        println!("{}", header());
        for l in &leads {
            for line in rows(l, tz) {
                println!("{line}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_lines_show_the_date_in_the_crm_zone_with_its_offset() {
        let utc3 = crate::crm::payload::parse_timezone("UTC+3").expect("zone");
        let lead = json!({"id": 1, "date": "2026-12-01 17:51:53", "phone": "79161234567"});
        let shown = with_local_date(&lead, utc3);
        assert_eq!(shown["date"], "2026-12-01 20:51:53 +03:00");
        assert_eq!(shown["phone"], "79161234567");
        let utc = crate::crm::payload::parse_timezone("UTC").expect("zone");
        assert_eq!(
            with_local_date(&lead, utc)["date"],
            "2026-12-01 17:51:53 +00:00"
        );
        // Nothing to convert: left as it is.
        let odd = json!({"id": 2, "date": null});
        assert_eq!(with_local_date(&odd, utc3), odd);
    }

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
            assert_eq!(printable(given), shown, "{given:?}");
        }
        let tz = FixedOffset::east_opt(0).expect("offset");
        let r = rows(
            &json!({"id": 1, "name": "\x1b[2J", "comment": "x\u{9b}y"}),
            tz,
        );
        assert!(
            !r.iter().any(|l| l.chars().any(|c| c.is_control())),
            "{r:?}"
        );
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

    #[test]
    fn long_texts_wrap_at_spaces_or_hard() {
        for (text, width, lines) in [
            ("", 5, vec![""]),
            ("short", 10, vec!["short"]),
            ("one two three", 7, vec!["one two", "three"]),
            ("abcdefghij", 4, vec!["abcd", "efgh", "ij"]),
            ("ab cdefghij k", 4, vec!["ab", "cdef", "ghij", "k"]),
        ] {
            assert_eq!(wrap(text, width), lines, "{text:?} at {width}");
        }
    }

    #[test]
    fn a_lead_row_keeps_its_whole_comment_and_shows_its_zone() {
        let lead = json!({
            "id": 7, "date": "2026-11-29 09:00:00", "type": "call",
            "form_or_number": "74951110001", "phone": "79161234567",
            "comment": "Call to 74951110001 (answered, 125 s) from the Moscow office line",
            "outcome": "deal 3 created",
        });
        let tz = FixedOffset::east_opt(3 * 3600).expect("offset");
        let lines = rows(&lead, tz);
        assert!(lines[0].contains("2026-11-29 12:00:00 +03:00"), "{lines:?}");
        let all = lines.join("\n");
        for word in ["answered,", "125", "Moscow", "office", "line"] {
            assert!(all.contains(word), "{word} missing: {all}");
        }
        assert!(lines.len() >= 2, "{lines:?}");
        assert_eq!(lines.len(), rows(&lead, tz).len());
    }
}
