//! Which recording link a call gets, where (SPEC C-2 `recording_url`,
//! C-2a `link`, C-6 calls API, M-2), as pure functions of the call, the
//! settings and the time. Links are built when they are shown or sent,
//! never stored, so a changed `http.public_url` or switch applies to
//! requests still queued.
//!
//! A link is valid until the call's end plus `media.retention_days`: as
//! long as the file is kept, and no longer. The expiry is therefore the
//! same whenever a link is built, so a CRM request retried later carries
//! the same body, and a link a CRM stored keeps working while the
//! recording exists.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::calls::Recording;
use crate::crm::outbox::Target;
use crate::media::link;

/// What link building needs (from the config and the store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSettings {
    /// The store's recording link key.
    pub key: Arc<[u8]>,
    /// `http.public_url`, else `http://<http.listen>`; no trailing slash.
    pub base_url: String,
    pub retention_seconds: u64,
    /// `tracking.record_calls`.
    pub record_calls: bool,
    /// `tracking.send_recording_to_crm`.
    pub send_to_crm: bool,
}

/// Unix seconds at which a call's recording (file and link) expires.
pub fn expiry(end_at_ms: u64, retention_seconds: u64) -> u64 {
    (end_at_ms / 1000).saturating_add(retention_seconds)
}

/// The link to a call's recording, for the calls API and `siptrack
/// recording-url`: None when the call has no WAV or its retention is over.
pub fn link(
    call_id: &str,
    recording: &Recording,
    end_at_ms: u64,
    s: &LinkSettings,
    now_unix: u64,
) -> Option<String> {
    signed_path(call_id, recording, end_at_ms, s, now_unix).map(|p| format!("{}{p}", s.base_url))
}

/// Where the web console serves recordings: under its own path, because
/// its session cookie is `Path=/ui` and an `<audio>` element can send
/// nothing else (no bearer token) when `recording_links_require_auth` is on.
pub const CONSOLE_PREFIX: &str = "/ui";

/// The link the console's player gets: the same signed path and rule as
/// [`link`], under [`CONSOLE_PREFIX`] and without a base, so the browser
/// asks the host it opened the console on (the pages' CSP allows media
/// from there only).
pub fn console_link(
    call_id: &str,
    recording: &Recording,
    end_at_ms: u64,
    s: &LinkSettings,
    now_unix: u64,
) -> Option<String> {
    signed_path(call_id, recording, end_at_ms, s, now_unix).map(|p| format!("{CONSOLE_PREFIX}{p}"))
}

/// Where the console plays a call's recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsolePlayer {
    /// Served by this node under the console's path (a player).
    Here(String),
    /// Held by another node of a cluster (`node_base`): its signed
    /// link, opened there (the console's CSP lets media come from its own
    /// host only, and its session is this node's).
    OnNode { node_base: String, link: String },
}

/// [`console_link`], or the other node's link when another node recorded
/// the call (`node_base`, as the call's row names it).
pub fn console_player(
    call_id: &str,
    recording: &Recording,
    end_at_ms: u64,
    s: &LinkSettings,
    now_unix: u64,
    node_base: &str,
) -> Option<ConsolePlayer> {
    if node_base.is_empty() || node_base == s.base_url {
        return console_link(call_id, recording, end_at_ms, s, now_unix).map(ConsolePlayer::Here);
    }
    let path = signed_path(call_id, recording, end_at_ms, s, now_unix)?;
    Some(ConsolePlayer::OnNode {
        node_base: node_base.to_string(),
        link: format!("{node_base}{path}"),
    })
}

/// `/recordings/{call_id}?exp=…&sig=…` when the call has a WAV whose
/// retention is not over.
fn signed_path(
    call_id: &str,
    recording: &Recording,
    end_at_ms: u64,
    s: &LinkSettings,
    now_unix: u64,
) -> Option<String> {
    if !recording.has_file() {
        return None;
    }
    let exp = expiry(end_at_ms, s.retention_seconds);
    (now_unix < exp).then(|| link::link_path(&s.key, call_id.as_bytes(), exp))
}

/// The link as the CRM gets it: also left out when recording is off or
/// `send_recording_to_crm = false` (SPEC C-2).
pub fn crm_link(
    call_id: &str,
    recording: &Recording,
    end_at_ms: u64,
    s: &LinkSettings,
    now_unix: u64,
) -> Option<String> {
    if !(s.record_calls && s.send_to_crm) {
        return None;
    }
    link(call_id, recording, end_at_ms, s, now_unix)
}

impl LinkSettings {
    /// These settings with the links made on `node_base`, the base of
    /// the node that recorded a call and holds its WAV, when one is named
    /// (several nodes on one database); as they are otherwise.
    pub fn on_node(&self, node_base: &str) -> std::borrow::Cow<'_, LinkSettings> {
        use std::borrow::Cow;
        if node_base.is_empty() || node_base == self.base_url {
            return Cow::Borrowed(self);
        }
        Cow::Owned(LinkSettings {
            base_url: node_base.to_string(),
            ..self.clone()
        })
    }
}

/// The field a queued CRM request carries instead of a link: which call's
/// recording it would name. The sender replaces it (`fill_crm_link`).
pub const PENDING_FIELD: &str = "_recording";

/// What a call record puts into its CRM requests at queue time: present
/// only when a WAV exists, so most bodies never change when sent.
/// `base` is the link base of the node queuing it, the node that recorded
/// the call and holds the WAV: with several nodes on one database any
/// node may send the request, and a link to the sender's own address was
/// a 404 there (empty: the sender's base, as before).
pub fn pending_link(
    call_id: &str,
    recording: &Recording,
    end_at_ms: u64,
    base: &str,
) -> Option<Value> {
    recording.has_file().then(|| {
        let mut p =
            json!({ "call_id": call_id, "state": recording.state(), "end_at_ms": end_at_ms });
        if !base.is_empty() {
            p["base"] = json!(base);
        }
        p
    })
}

/// A queued CRM request's body as it is sent now: the pending field
/// removed and, if the rules give one, the link put where SPEC C-2/C-2a
/// say (`link` of a call-end webhook; `recording_url` and `call.link` of
/// a lead webhook). Bodies without the field come back as they are.
/// Without settings (a sender that makes no links) the field is only
/// removed.
pub fn fill_crm_link(
    body: &str,
    target: Target,
    s: Option<&LinkSettings>,
    now_unix: u64,
) -> String {
    if !body.contains(PENDING_FIELD) {
        return body.to_string();
    }
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(body) else {
        return body.to_string();
    };
    let Some(pending) = map.remove(PENDING_FIELD) else {
        return body.to_string();
    };
    let call_id = pending["call_id"].as_str().unwrap_or_default();
    let recording = Recording::from_columns(pending["state"].as_str().unwrap_or_default(), "");
    let end_at_ms = pending["end_at_ms"].as_u64().unwrap_or(0);
    let node = pending["base"].as_str().unwrap_or_default();
    let url = s.and_then(|s| crm_link(call_id, &recording, end_at_ms, &s.on_node(node), now_unix));
    if let Some(url) = url {
        match target {
            Target::CallEnd => {
                map.insert("link".into(), json!(url));
            }
            Target::Lead => {
                if let Some(Value::Object(call)) = map.get_mut("call") {
                    call.insert("link".into(), json!(url));
                }
                map.insert("recording_url".into(), json!(url));
            }
            Target::CallStart => {}
        }
    }
    Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const END_MS: u64 = 1_800_000_000_500;
    const DAY: u64 = 86_400;

    fn settings() -> LinkSettings {
        LinkSettings {
            key: Arc::from(&b"k"[..]),
            base_url: "https://calls.example".into(),
            retention_seconds: 90 * DAY,
            record_calls: true,
            send_to_crm: true,
        }
    }

    #[test]
    fn who_gets_a_link() {
        let now = 1_800_000_100;
        let expired = 1_800_000_000 + 90 * DAY;
        let off = |f: fn(&mut LinkSettings)| {
            let mut s = settings();
            f(&mut s);
            s
        };
        let no_crm = off(|s| s.send_to_crm = false);
        let no_rec = off(|s| s.record_calls = false);
        let not = Recording::not_recorded("no free media ports");
        // (recording, settings, now) → (API link?, CRM link?)
        for (rec, s, now, api, crm) in [
            (&Recording::Recorded, &settings(), now, true, true),
            (&Recording::Partial, &settings(), now, true, true),
            (&not, &settings(), now, false, false),
            (&Recording::default(), &settings(), now, false, false),
            (&Recording::Recorded, &no_crm, now, true, false),
            (&Recording::Recorded, &no_rec, now, true, false),
            (&Recording::Recorded, &settings(), expired - 1, true, true),
            (&Recording::Recorded, &settings(), expired, false, false),
        ] {
            let what = format!("{rec:?} {s:?} {now}");
            assert_eq!(link("c1", rec, END_MS, s, now).is_some(), api, "{what}");
            // The console plays what the API links, whatever the CRM switches.
            assert_eq!(
                console_link("c1", rec, END_MS, s, now).is_some(),
                api,
                "{what}"
            );
            assert_eq!(crm_link("c1", rec, END_MS, s, now).is_some(), crm, "{what}");
        }
    }

    #[test]
    fn a_link_is_the_same_whenever_built_and_verifies_until_retention_ends() {
        let s = settings();
        let a = link("a b/..@h", &Recording::Recorded, END_MS, &s, 1_800_000_001).expect("link");
        let b = link("a b/..@h", &Recording::Recorded, END_MS, &s, 1_800_500_000).expect("link");
        assert_eq!(a, b);
        let exp = 1_800_000_000 + 90 * DAY;
        assert!(
            a.starts_with("https://calls.example/recordings/a%20b%2F..%40h?exp="),
            "{a}"
        );
        assert!(a.contains(&format!("exp={exp}&sig=")), "{a}");
        let console = console_link("a b/..@h", &Recording::Recorded, END_MS, &s, 1_800_000_001);
        assert_eq!(
            console.as_deref(),
            a.strip_prefix("https://calls.example")
                .map(|p| format!("/ui{p}"))
                .as_deref(),
            "the same signed path, under the console's, without the base"
        );
        let sig = a.rsplit("sig=").next().expect("sig");
        assert_eq!(
            link::verify(&s.key, b"a b/..@h", &exp.to_string(), sig, exp - 1),
            Ok(())
        );
    }

    #[test]
    fn queued_bodies_get_their_link_when_sent() {
        let s = settings();
        let now = 1_800_000_100;
        let pending = pending_link("c1", &Recording::Recorded, END_MS, "").expect("has file");
        assert!(pending_link("c1", &Recording::default(), END_MS, "").is_none());
        let url = link("c1", &Recording::Recorded, END_MS, &s, now).expect("link");

        let end = json!({"id": "c1", "status": "ANSWER", PENDING_FIELD: pending}).to_string();
        let sent: Value =
            serde_json::from_str(&fill_crm_link(&end, Target::CallEnd, Some(&s), now))
                .expect("json");
        assert_eq!(sent, json!({"id": "c1", "status": "ANSWER", "link": url}));

        let lead = json!({"id": "7", "call": {"id": "c1"}, PENDING_FIELD: pending}).to_string();
        let sent: Value =
            serde_json::from_str(&fill_crm_link(&lead, Target::Lead, Some(&s), now)).expect("json");
        assert_eq!(
            sent,
            json!({"id": "7", "call": {"id": "c1", "link": url}, "recording_url": url})
        );

        // Switched off since it was queued: the field goes, no link comes.
        let off = LinkSettings {
            send_to_crm: false,
            ..s.clone()
        };
        let sent: Value =
            serde_json::from_str(&fill_crm_link(&end, Target::CallEnd, Some(&off), now))
                .expect("json");
        assert_eq!(sent, json!({"id": "c1", "status": "ANSWER"}));

        // Bodies without the field, or not JSON, pass as they are.
        for body in [r#"{"id":"c2"}"#, "not json _recording"] {
            assert_eq!(fill_crm_link(body, Target::CallEnd, Some(&s), now), body);
        }
        // A sender without link settings only removes the field.
        let sent: Value =
            serde_json::from_str(&fill_crm_link(&end, Target::CallEnd, None, now)).expect("json");
        assert_eq!(sent, json!({"id": "c1", "status": "ANSWER"}));
    }

    #[test]
    fn links_move_to_the_node_holding_the_wav() {
        let s = settings();
        let own = link("c1", &Recording::Recorded, END_MS, &s, 1).expect("link");
        let path = own.strip_prefix(&s.base_url).expect("on its base");
        // (the node's base named, the link given)
        let table = [
            ("", own.clone()),
            ("https://calls.example", own.clone()),
            ("http://node-a:8080", format!("http://node-a:8080{path}")),
        ];
        for (base, want) in table {
            let got = link("c1", &Recording::Recorded, END_MS, &s.on_node(base), 1);
            assert_eq!(got.as_deref(), Some(want.as_str()), "{base:?}");
        }
    }

    /// Several nodes on one database: node B sends the request of a call
    /// node A recorded, and the link leads to A, which holds the WAV (it
    /// led to B, a 404: the file is on A's disk).
    #[test]
    fn a_queued_link_names_the_node_that_recorded_the_call() {
        let b = settings();
        let now = 1_800_000_100;
        let pending =
            pending_link("c1", &Recording::Recorded, END_MS, "http://node-a:8080").expect("file");
        let own = link("c1", &Recording::Recorded, END_MS, &b, now).expect("link");
        let end = json!({"id": "c1", PENDING_FIELD: pending}).to_string();
        let sent: Value =
            serde_json::from_str(&fill_crm_link(&end, Target::CallEnd, Some(&b), now))
                .expect("json");
        let path = own.strip_prefix(&b.base_url).expect("B's link");
        assert_eq!(sent["link"], format!("http://node-a:8080{path}"));
        // The rules are still the sender's: switched off, no link.
        let off = LinkSettings {
            send_to_crm: false,
            ..b.clone()
        };
        let sent: Value =
            serde_json::from_str(&fill_crm_link(&end, Target::CallEnd, Some(&off), now))
                .expect("json");
        assert_eq!(sent, json!({"id": "c1"}));
    }
}
