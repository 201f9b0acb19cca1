//! `siptrack recording-url CALL_ID`: a fresh link to a call's recording,
//! made as the running program makes them (same key, base URL, expiry).

use anyhow::Context as _;

use super::links;
use crate::config::Config;
use crate::store::Store;

/// The link, or an error saying why there is none (no database, no such
/// call, not recorded and why, retention over).
pub fn recording_url(config: &Config, call_id: &str) -> anyhow::Result<String> {
    // Reading never creates a database (as `siptrack leads`).
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

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let (store, call) = rt.block_on(async {
        let store = Store::open(&config.storage.url).await?;
        let call = store.find_call(call_id).await?;
        Ok::<_, crate::store::StoreError>((store, call))
    })?;
    let Some(call) = call else {
        anyhow::bail!("no call {call_id:?} in the database (calls are written when they end)");
    };
    if let Some(why) = call.recording.reason() {
        anyhow::bail!("call {call_id:?} has no recording: {why}");
    }
    let s = super::settings(config, store.recording_link_key(), config.http.listen);
    let now = store.clock().unix_ms() / 1000;
    // On the node holding the WAV, when another node recorded it.
    let s = s.on_node(&call.recording_base);
    links::link(call_id, &call.recording, call.end_at.max(0) as u64, &s, now).ok_or_else(|| {
        anyhow::anyhow!(
            "the recording of call {call_id:?} is past media.retention_days ({} days) and deleted",
            config.media.retention_days
        )
    })
}
