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
        Value::String(s) => s.replace(['\r', '\n', '\t'], " "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
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
    if json {
        for l in &leads {
            println!("{l}");
        }
    } else {
        println!("{}", header());
        for l in &leads {
            println!("{}", row(l));
        }
    }
    Ok(())
}
