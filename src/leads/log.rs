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
    ("comment", "comment", 30),
    ("outcome", "outcome", 30),
];

/// A cell's text with every control character made visible (`\x1b`,
/// `\n`): lead text comes from callers and web forms, and a terminal
/// must not take it for commands.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let code = c as u32;
                if code <= 0xff {
                    out.push_str(&format!("\\x{code:02x}"));
                } else {
                    out.push_str(&format!("\\u{{{code:x}}}"));
                }
            }
            c => out.push(c),
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
    let leads = rt.block_on(async {
        let store = Store::open(&config.storage.url).await?;
        store.list_leads(limit, 0).await
    })?;
    let leads: Vec<Value> = leads.iter().map(crate::http::json::lead).collect();
    if json {
        for l in &leads {
            println!("{l}");
        }
    } else {
        let tz = config.leads.crm.format.timezone;
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
    fn control_characters_are_shown_not_sent() {
        for (text, shown) in [
            ("plain", "plain"),
            ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
            ("a\r\nb\tc", "a\\r\\nb\\tc"),
            ("\u{9b}31m", "\\x9b31m"),
            ("Иван \u{7f}", "Иван \\x7f"),
        ] {
            assert_eq!(printable(text), shown, "{text:?}");
        }
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
        assert!(lines.len() >= 3, "{lines:?}");
        assert_eq!(lines.len(), rows(&lead, tz).len());
    }
}
