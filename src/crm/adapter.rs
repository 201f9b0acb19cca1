//! The seam between the durable outbox and one kind of CRM (issue 16):
//! an adapter turns a due outbox item into the HTTP request(s) its CRM
//! wants and classifies each answer, as pure functions. The worker owns
//! the I/O (`transport.rs`), the rate limit and the settling, so retries,
//! parking, order per deal, metrics and the lead log are the same for
//! every CRM.

use serde_json::Value;

use super::payload::{escape_html, unescape_html};
use super::rate::Pacer;
use crate::store::outbox::DueItem;

/// What became of one attempt at an item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied; for `deal.create`, the CRM's id of the new deal, which
    /// later items of that deal name.
    Delivered { deal_id: Option<String> },
    /// Try again later; `retry_after_ms` when the CRM said when.
    Retry {
        error: String,
        retry_after_ms: Option<u64>,
    },
    /// The CRM refused the request for a reason a retry cannot fix (a 400
    /// with its validation errors, a rejected token): parked at once with
    /// the reason, so the lead log shows it and an operator can retry it
    /// through the API once the cause is fixed.
    GiveUp { reason: String },
    /// A deal.create made its deal in the CRM (`deal_id`, recorded now)
    /// but the rest of the item failed: tried again like `Retry`, and the
    /// retry starts from that deal (`DueItem::crm_deal_id`), where a
    /// retry from the start could make a second deal (amoCRM's search
    /// lags behind its writes).
    Partly {
        deal_id: String,
        error: String,
        retry_after_ms: Option<u64>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// One HTTP request to a CRM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Which step of the item this is (the adapter's own name, e.g.
    /// `"lookup"`), handed back with the answer.
    pub stage: &'static str,
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<String>,
}

/// The CRM's answer, as read off the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// What the worker does next for an item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Send(Request),
    Finish(Outcome),
}

/// The most requests one item may take (Bitrix24's create: find the
/// deal, find the contact, add it, add the deal); a guard against an
/// adapter that never finishes.
pub const MAX_STEPS: usize = 6;

/// What siptrack appends to the text of a note, comment or task it
/// writes into a CRM: `(siptrack lead <id>)`. A lead makes at most one
/// comment and one task, so the marker names the entity and lets a retry
/// find it (neither CRM has idempotency keys); a manager reads which of
/// siptrack's leads it came from. None for a body without a lead id.
pub fn lead_marker(body: &serde_json::Value) -> Option<String> {
    let id = match body.get("id")? {
        serde_json::Value::String(s) if !s.trim().is_empty() => s.trim().to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(format!("(siptrack lead {id})"))
}

/// `text` with the marker on a line of its own.
pub fn marked(text: &str, marker: Option<&str>) -> String {
    match marker {
        Some(m) if text.is_empty() => m.to_string(),
        Some(m) => format!("{text}\n\n{m}"),
        None => text.to_string(),
    }
}

/// Whether `text` is one siptrack marked with `marker`.
pub fn carries(text: &str, marker: &str) -> bool {
    text.trim_end().ends_with(marker)
}

/// One kind of CRM. Pure: no sockets, no clock (`now_unix_ms` is given).
pub trait CrmAdapter: Send + Sync {
    /// The first step for a due item.
    fn start(&self, item: &DueItem, now_unix_ms: i64) -> Step;
    /// The step after `answer` to `sent`.
    fn next(&self, item: &DueItem, sent: &Request, answer: &Answer, now_unix_ms: i64) -> Step;
    /// The account's request limit, if the CRM has one: the worker paces
    /// every request of every item through this one bucket.
    fn pacer(&self) -> Option<Pacer> {
        None
    }
    /// Items with the same key are attempted one after another within a
    /// round, never at the same time (Bitrix24: two deals of one client
    /// created at once would each find no contact and add one). None:
    /// no such constraint beyond the outbox's order per deal.
    fn serial_key(&self, _item: &DueItem) -> Option<String> {
        None
    }
}

/// A round's items in groups to attempt one after another: items sharing
/// a serial key together, in their order; every other item alone.
pub fn serial_groups(
    items: Vec<DueItem>,
    key: impl Fn(&DueItem) -> Option<String>,
) -> Vec<Vec<DueItem>> {
    let mut groups: Vec<Vec<DueItem>> = Vec::new();
    let mut by_key: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for item in items {
        match key(&item) {
            Some(k) => match by_key.get(&k) {
                Some(&i) => groups[i].push(item),
                None => {
                    by_key.insert(k, groups.len());
                    groups.push(vec![item]);
                }
            },
            None => groups.push(vec![item]),
        }
    }
    groups
}

/// The CRM's numeric id of an item's deal, for the adapters whose CRM
/// has numeric ids: a retry while the deal's own create has not been
/// answered yet, and a refusal (parked with the reason) for a deal made
/// before this CRM was configured, which has no entity there, or one
/// whose stored id is not this CRM's.
pub fn crm_deal_id(item: &DueItem, crm: &str, kind: &str, entity: &str) -> Result<u64, Outcome> {
    let deal = item.deal_ref.unwrap_or_default();
    match (&item.crm_deal_id, item.deal_created_here) {
        (Some(id), _) => id.parse().map_err(|_| Outcome::GiveUp {
            reason: format!("deal {deal} has the CRM id {id:?}, not a numeric {crm} id"),
        }),
        (None, true) => Err(Outcome::Retry {
            error: format!("deal {deal} is not in {crm} yet (its deal.create is not through: pending, retried or parked)"),
            retry_after_ms: None,
        }),
        (None, false) => Err(Outcome::GiveUp {
            reason: format!(
                "deal {deal} was made before crm.kind = \"{kind}\" and has no {crm} {entity}"
            ),
        }),
    }
}

/// A call's deal as its CRM knows it, for the adapters that file a call on
/// a deal: the CRM's id when its create was answered; none for a call of
/// no deal or of a deal the CRM will never know (made before it was
/// configured: the call goes out anyway); `Err` (a retry) while the
/// deal's create has no answer, pending or parked, since the CRM would
/// refuse or misfile the call before it.
pub fn call_deal_id(
    item: &DueItem,
    crm: &str,
    kind: &str,
    entity: &str,
) -> Result<Option<u64>, Outcome> {
    match item.deal_ref.map(|_| crm_deal_id(item, crm, kind, entity)) {
        None | Some(Err(Outcome::GiveUp { .. })) => Ok(None),
        Some(Ok(id)) => Ok(Some(id)),
        Some(Err(wait)) => Err(wait),
    }
}

/// The person's name of a lead webhook body as a CRM record field takes
/// it: a name is no HTML, and amoCRM and Bitrix24 show `&#39;` as typed,
/// so C-4's escaping (`crm.allow_html = false`) is undone (trial,
/// 2026-12-03: the contact "Sean O&#39;Brien").
pub fn person_name(body: &Value, allow_html: bool) -> String {
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim();
    if allow_html {
        name.to_string()
    } else {
        unescape_html(name)
    }
}

/// A field of a lead or call body or a CRM's answer as text: a string
/// trimmed, a number written out (a CRM's ids and codes), else empty.
pub fn text_of(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The value of `key` (`phone`, `caller`) when it is a phone number:
/// digits and the formatting `crm.phone_format` writes (`+ - ( ) .`,
/// spaces); empty otherwise. A caller known by a SIP login (`sipp`,
/// `office`) has no phone a CRM can file a contact or a call under
/// (trial, 2026-12-03: amoCRM got a contact with the phone "sipp" and
/// refused its call for good, "Contact not found"): such a caller is
/// treated as one without a number there.
pub fn phone_of(body: &Value, key: &str) -> String {
    let v = body
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim();
    let phone_like = v.bytes().any(|c| c.is_ascii_digit())
        && v.bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'(' | b')' | b'.' | b' '));
    if phone_like {
        v.to_string()
    } else {
        String::new()
    }
}

/// A repeat lead's text for the comment or task it becomes on the
/// client's deal: `Name:`, `Phone:`, `E-mail:` and `Source:` lines for
/// what the lead carries, then `text`. The deal's contact is the one the first lead
/// made: without these lines a new name or e-mail reached amoCRM and
/// Bitrix24 nowhere (trial, 2026-12-03; webhooks carry them as fields).
/// The body's name is escaped already as C-4 escapes texts.
pub fn with_who(body: &Value, text: String) -> String {
    who_lines(body, true, text)
}

/// A new deal's text when it goes onto a contact the CRM had already
/// (found by the lead's phone or e-mail): `Name:` and `E-mail:` lines for
/// what the lead carries, then `text`. That contact keeps what it had, so
/// a name or e-mail typed into a form reached the CRM nowhere (trial,
/// 2026-12-03).
pub fn with_name_and_email(body: &Value, text: String) -> String {
    who_lines(body, false, text)
}

/// `repeat`: the lead joins a deal the client has (its phone and where
/// it came from are news there); else it is a new deal on a contact found.
fn who_lines(body: &Value, repeat: bool, text: String) -> String {
    let (phone, source) = if repeat {
        (phone_of(body, "phone"), source_of(body))
    } else {
        (String::new(), String::new())
    };
    let mut out = String::new();
    for (label, value) in [
        ("Name", text_of(body, "name")),
        ("Phone", phone),
        ("E-mail", text_of(body, "email")),
        ("Source", source),
    ] {
        if !value.is_empty() {
            out.push_str(&format!("{label}: {value}\n"));
        }
    }
    out.push_str(&text);
    out
}

/// Where a lead came from, as a manager reads it: its visit's marker
/// (`vk_cpc`), else its source; empty without a visit. A repeat call's
/// comment said nothing of it, so the deal never showed that another ad
/// brought the client back (trial, 2026-12-03).
fn source_of(body: &Value) -> String {
    let data = data_of(body);
    let marker = text_of(&data, "marker");
    if marker.is_empty() {
        text_of(&data, "source")
    } else {
        marker
    }
}

/// The lead webhook body's `data` (a JSON-encoded string); Null when
/// there is none or it is no JSON.
pub fn data_of(body: &Value) -> Value {
    body.get("data")
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}

/// The lead's text with a form's own fields (the lead webhook's
/// `data.fields`) after it as `name: value` lines, escaped as C-4 escapes
/// the text: an amoCRM or Bitrix24 lead has no other place for a form's
/// answers (trial, 2026-12-03: they reached webhooks only). Empty when
/// there is neither.
pub fn text_with_form_fields(body: &Value, allow_html: bool) -> String {
    let mut text = body
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_string();
    let data = data_of(body);
    let fields = data.get("fields").and_then(Value::as_object);
    for (name, value) in fields.into_iter().flatten() {
        let value = match value {
            Value::String(v) => v.trim().to_string(),
            other => other.to_string(),
        };
        if value.is_empty() {
            continue;
        }
        if !text.is_empty() {
            text.push('\n');
        }
        let line = format!("{}: {value}", name.trim());
        text.push_str(&if allow_html { line } else { escape_html(&line) });
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A repeat lead's lines say where it came from: the marker, else
    /// the source; a new deal on a found contact gets name and e-mail only.
    #[test]
    fn who_lines_table() {
        let data = |d: Value| d.to_string();
        for (body, repeat, lines) in [
            (
                json!({"name": "Ann", "phone": "79161234567", "data": data(json!({"marker": "vk_cpc", "source": "vk"}))}),
                true,
                "Name: Ann\nPhone: 79161234567\nSource: vk_cpc\nx",
            ),
            (
                json!({"phone": "79161234567", "data": data(json!({"source": "vk"}))}),
                true,
                "Phone: 79161234567\nSource: vk\nx",
            ),
            (json!({"phone": "sipp", "data": "{}"}), true, "x"),
            (
                json!({"name": "Ann", "email": "a@b.c", "phone": "79161234567", "data": data(json!({"marker": "vk_cpc"}))}),
                false,
                "Name: Ann\nE-mail: a@b.c\nx",
            ),
        ] {
            let got = if repeat {
                with_who(&body, "x".into())
            } else {
                with_name_and_email(&body, "x".into())
            };
            assert_eq!(got, lines, "{body}");
        }
    }

    #[test]
    fn items_of_one_serial_key_go_together_in_order() {
        let item = |id: i64, key: &str| DueItem {
            id,
            target: crate::crm::outbox::Target::Lead,
            key: key.into(),
            event: "deal.create".into(),
            body: String::new(),
            attempts: 0,
            created_at: 0,
            deal_ref: None,
            crm_deal_id: None,
            deal_created_here: true,
        };
        let items = vec![
            item(1, "a"),
            item(2, ""),
            item(3, "b"),
            item(4, "a"),
            item(5, ""),
            item(6, "a"),
        ];
        let groups = serial_groups(items, |i| (!i.key.is_empty()).then(|| i.key.clone()));
        let ids: Vec<Vec<i64>> = groups
            .iter()
            .map(|g| g.iter().map(|i| i.id).collect())
            .collect();
        assert_eq!(ids, vec![vec![1, 4, 6], vec![2], vec![3], vec![5]]);
    }

    #[test]
    fn a_deals_crm_id_is_a_number_a_retry_or_a_refusal() {
        // (stored CRM id, created through the outbox, expected)
        let retry = |e: &str| {
            Err(Outcome::Retry {
                error: e.into(),
                retry_after_ms: None,
            })
        };
        let give_up = |r: &str| Err(Outcome::GiveUp { reason: r.into() });
        for (crm_id, here, want) in [
            (Some("4711"), true, Ok(4711)),
            (Some("4711"), false, Ok(4711)),
            (
                Some("d-9"),
                true,
                give_up("deal 7 has the CRM id \"d-9\", not a numeric amoCRM id"),
            ),
            (
                None,
                true,
                retry("deal 7 is not in amoCRM yet (its deal.create is not through: pending, retried or parked)"),
            ),
            (
                None,
                false,
                give_up("deal 7 was made before crm.kind = \"amocrm\" and has no amoCRM lead"),
            ),
        ] {
            let item = DueItem {
                id: 1,
                target: crate::crm::outbox::Target::Lead,
                key: String::new(),
                event: "deal.comment".into(),
                body: String::new(),
                attempts: 0,
                created_at: 0,
                deal_ref: Some(7),
                crm_deal_id: crm_id.map(str::to_string),
                deal_created_here: here,
            };
            assert_eq!(
                crm_deal_id(&item, "amoCRM", "amocrm", "lead"),
                want,
                "{crm_id:?} {here}"
            );
        }
    }

    #[test]
    fn texts_carry_the_lead_they_came_from() {
        for (body, text, want) in [
            (
                json!({"id": "12"}),
                "Chairs",
                "Chairs\n\n(siptrack lead 12)",
            ),
            (json!({"id": 12}), "", "(siptrack lead 12)"),
            (json!({"id": ""}), "Chairs", "Chairs"),
            (json!({}), "Chairs", "Chairs"),
        ] {
            let m = lead_marker(&body);
            assert_eq!(marked(text, m.as_deref()), want, "{body}");
        }
        let m = "(siptrack lead 12)";
        for (text, yes) in [
            ("Chairs\n\n(siptrack lead 12)", true),
            ("Chairs\n\n(siptrack lead 12)\n", true),
            ("Chairs\n\n(siptrack lead 112)", false),
            ("Chairs\n\n(siptrack lead 12) and more", false),
            ("Chairs", false),
        ] {
            assert_eq!(carries(text, m), yes, "{text:?}");
        }
    }

    #[test]
    fn a_forms_fields_follow_its_text_escaped_as_it_is_table() {
        let body = |text: &str, fields: Value| {
            json!({"text": text, "title": "Order",
                   "data": json!({"visit": "v1", "fields": fields}).to_string()})
        };
        // (text, fields, allow_html, what the CRM's note or comment says)
        for (text, fields, allow_html, want) in [
            ("Call me", json!({}), false, "Call me"),
            ("", json!({}), false, ""),
            (
                "",
                json!({"size": "3 m", "color": "red"}),
                false,
                "color: red\nsize: 3 m",
            ),
            (
                "Call me",
                json!({"size": "3 m"}),
                false,
                "Call me\nsize: 3 m",
            ),
            // Empty answers say nothing.
            (
                "Call me",
                json!({"size": " ", "floor": 2}),
                false,
                "Call me\nfloor: 2",
            ),
            // C-4: a field is text the CRM shows, escaped like the text.
            (
                "",
                json!({"note": "<b>&</b>"}),
                false,
                "note: &lt;b&gt;&amp;&lt;/b&gt;",
            ),
            ("", json!({"note": "<b>&</b>"}), true, "note: <b>&</b>"),
        ] {
            assert_eq!(
                text_with_form_fields(&body(text, fields.clone()), allow_html),
                want,
                "{text:?} {fields}"
            );
        }
        // No data at all, or data that is no JSON: the text alone.
        assert_eq!(text_with_form_fields(&json!({"text": "Hi"}), false), "Hi");
        assert_eq!(
            text_with_form_fields(&json!({"text": "Hi", "data": "{"}), false),
            "Hi"
        );
    }

    #[test]
    fn only_a_phone_number_is_a_phone_table() {
        for (value, want) in [
            ("+79161234567", "+79161234567"),
            ("8 (916) 123-45-67", "8 (916) 123-45-67"),
            (" 101 ", "101"),
            ("sipp", ""),
            ("office1", ""),
            ("", ""),
            ("+-()", ""),
        ] {
            assert_eq!(
                phone_of(&json!({"phone": value}), "phone"),
                want,
                "{value:?}"
            );
        }
        assert_eq!(phone_of(&json!({"phone": 7}), "phone"), "");
    }
}
