//! What siptrack sends to a CRM (SPEC C-2, C-2a, C-3, C-4), as pure
//! functions: the lead webhook, the call webhooks, phone formatting, the
//! CRM's timezone and HTML escaping. The outbox delivers what these build.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde_json::{json, Map, Value};

use super::outbox::CallStart;
use crate::calls::{CallInfo, CallRecord, VISIT_COLUMNS};
use crate::phone::{format_for_crm, PhoneRules};

/// `crm.phone_format`, `crm.timezone`, `crm.allow_html`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    /// e.g. `"8 (XXX) XXX-XX-XX"`; empty: digits as normalised.
    pub phone_format: String,
    /// `[phone]`: whose numbers `phone_format` is written for.
    pub phone_rules: PhoneRules,
    pub timezone: FixedOffset,
    pub allow_html: bool,
}

impl Default for Format {
    fn default() -> Self {
        Format {
            phone_format: String::new(),
            phone_rules: PhoneRules::default(),
            timezone: FixedOffset::east_opt(0)
                .unwrap_or_else(|| unreachable!("0 is a valid offset")),
            allow_html: false,
        }
    }
}

/// `UTC`, `UTC+3`, `UTC-5`, `UTC+05:30`, `+03:00`.
pub fn parse_timezone(s: &str) -> Result<FixedOffset, String> {
    let t = s.trim();
    let rest = t
        .strip_prefix("UTC")
        .or_else(|| t.strip_prefix("GMT"))
        .unwrap_or(t);
    if rest.is_empty() {
        return FixedOffset::east_opt(0).ok_or_else(|| "UTC".into());
    }
    let bad = || format!("\"{s}\" is not a UTC offset like UTC+3, UTC-5 or UTC+05:30");
    let (sign, digits) = match rest.as_bytes().first() {
        Some(b'+') => (1, &rest[1..]),
        Some(b'-') => (-1, &rest[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = match digits.split_once(':') {
        Some((h, m)) => (h, m),
        None => (digits, "0"),
    };
    let h: i32 = h.parse().map_err(|_| bad())?;
    let m: i32 = m.parse().map_err(|_| bad())?;
    if !(0..=14).contains(&h) || !(0..60).contains(&m) {
        return Err(bad());
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad)
}

/// `YYYY-MM-DD HH:MM:SS` in the CRM's timezone.
pub fn local_time(unix_seconds: i64, tz: FixedOffset) -> String {
    DateTime::from_timestamp(unix_seconds, 0)
        .map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// C-4: `&`, `<`, `>`, `"` and `'` as entities, so a title cannot carry
/// markup into the CRM's pages.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// [`escape_html`] undone: the five entities it writes back to their
/// characters (`&amp;` last, so `&amp;lt;` stays `&lt;`).
pub fn unescape_html(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

impl Format {
    fn text(&self, s: &str) -> String {
        if self.allow_html {
            s.to_string()
        } else {
            escape_html(s)
        }
    }
    fn phone(&self, digits: &str) -> String {
        if self.phone_format.is_empty() {
            digits.to_string()
        } else {
            format_for_crm(digits, &self.phone_format, &self.phone_rules)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    DealCreate,
    DealTask,
    DealComment,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::DealCreate => "deal.create",
            Event::DealTask => "deal.task",
            Event::DealComment => "deal.comment",
        }
    }
}

/// A lead as the CRM sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeadView {
    pub id: i64,
    pub title: String,
    pub text: String,
    pub name: String,
    /// Normalised digits.
    pub phone: String,
    pub email: String,
    pub visit_id: String,
    /// marker, source, utm_*, city, domain, page: what is known.
    pub visit: BTreeMap<String, String>,
    /// A form's own fields, as posted.
    pub fields: BTreeMap<String, String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// Whether a name in a lead's `data` says where the visitor came from (a
/// visit field, or siptrack's own `visit`, `form`, `fields`): a form
/// field never takes one of them (a form is filled in by the visitor).
fn is_attribution(name: &str) -> bool {
    matches!(name, "visit" | "form" | "fields") || crate::tracking::VISIT_FIELDS.contains(&name)
}

/// The lead webhook's `data`: the visit's attribution, the form's fields
/// under `fields`, and, for receivers that read them at the top level,
/// the fields whose names are not attribution names.
pub fn lead_data(lead: &LeadView) -> Map<String, Value> {
    let mut data = Map::new();
    for (k, v) in &lead.fields {
        if !is_attribution(k) {
            data.insert(k.clone(), json!(v));
        }
    }
    for (k, v) in &lead.visit {
        data.insert(k.clone(), json!(v));
    }
    if !lead.fields.is_empty() {
        data.insert("fields".into(), json!(lead.fields));
    }
    data.insert("visit".into(), json!(lead.visit_id));
    data
}

/// A title that ends with the lead's number ("Incoming call from
/// 79161234567") with the number as `crm.phone_format` writes it, as the
/// `phone` field has it (C-3; trial, 2026-12-02: the CRM showed
/// `+7 (916) …` beside `Incoming call from 79161234567`).
fn title_with_phone(title: &str, digits: &str, formatted: &str) -> String {
    match title.strip_suffix(digits) {
        Some(head) if !digits.is_empty() && (head.is_empty() || head.ends_with(' ')) => {
            format!("{head}{formatted}")
        }
        _ => title.to_string(),
    }
}

/// A call lead's text ("Call to 74951110001 (answered, 65 s)") with the
/// dialed number as `crm.phone_format` writes it, as the title writes
/// the caller's and `callee` the same number (trial, 2026-12-03: the raw
/// digits in the text beside `"callee": "8 (495) 111-00-01"`).
fn text_with_dialed(text: &str, dialed: &str, formatted: &str) -> String {
    let head = "Call to ";
    match text.strip_prefix(head).and_then(|t| t.strip_prefix(dialed)) {
        Some(tail) if !dialed.is_empty() && (tail.is_empty() || tail.starts_with(' ')) => {
            format!("{head}{formatted}{tail}")
        }
        _ => text.to_string(),
    }
}

/// SPEC C-2: the lead webhook. `deal_id` for actions on an existing deal;
/// `recording_url` is left out when None.
pub fn lead_payload(
    lead: &LeadView,
    event: Event,
    deal_id: Option<&str>,
    call: Option<&CallRecord>,
    recording_url: Option<&str>,
    f: &Format,
) -> Value {
    let data = lead_data(lead);
    let phone = f.phone(&lead.phone);
    let mut out = json!({
        "id": lead.id.to_string(),
        "event": event.as_str(),
        "title": f.text(&title_with_phone(&lead.title, &lead.phone, &phone)),
        "text": f.text(&match call {
            Some(c) => text_with_dialed(&lead.text, &c.info.dialed, &f.phone(&c.info.dialed)),
            None => lead.text.clone(),
        }),
        "name": f.text(&lead.name),
        "phone": phone,
        "email": lead.email,
        // A JSON-encoded string, as lead webhooks in the field expect.
        "data": Value::Object(data).to_string(),
        "contact_data": {"name": f.text(&lead.name), "phone": phone, "email": lead.email},
        "visit_id": lead.visit_id,
        "date_create": local_time(lead.created_at, f.timezone),
    });
    if let Some(d) = deal_id {
        out["deal_id"] = json!(d);
    }
    if let Some(c) = call {
        out["call"] = call_payload(c, recording_url, f);
    }
    if let Some(u) = recording_url {
        out["recording_url"] = json!(u);
    }
    out
}

/// SPEC C-2a: the call-end webhook.
pub fn call_payload(c: &CallRecord, link: Option<&str>, f: &Format) -> Value {
    call_fields(
        &c.call_id,
        &c.info,
        c.invite_at,
        c.duration,
        c.status.webhook_name(),
        link,
        f,
    )
}

/// SPEC C-2a: the call-start webhook: the shape of the end's, with
/// duration 0 and the status empty (the call has no outcome yet).
pub fn call_start_payload(c: &CallStart, f: &Format) -> Value {
    call_fields(&c.call_id, &c.info, c.invite_at, 0, "", None, f)
}

fn call_fields(
    call_id: &str,
    i: &CallInfo,
    invite_at_ms: u64,
    duration: u64,
    status: &str,
    link: Option<&str>,
    f: &Format,
) -> Value {
    let field = |k: &str| i.visit.get(k).cloned().unwrap_or_default();
    let mut out = json!({
        "id": call_id,
        "caller": f.phone(&i.caller),
        "callee": f.phone(&i.dialed),
        // The lead's visit: a static number's marker too (trial,
        // 2026-12-02: the call webhooks said "" where the lead's said the
        // marker).
        "visit_id": i.lead_visit(),
        "marker": i.marker.clone().unwrap_or_default(),
        "date": local_time((invite_at_ms / 1000) as i64, f.timezone),
        "duration": duration,
        "status": status,
    });
    for (name, key) in VISIT_COLUMNS {
        out[*name] = json!(field(key));
    }
    if let Some(l) = link {
        out["link"] = json!(l);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::CallStatus;

    fn tz(s: &str) -> FixedOffset {
        parse_timezone(s).expect(s)
    }

    #[test]
    fn a_call_texts_dialed_number_is_written_as_the_callee_table() {
        for (text, dialed, formatted, want) in [
            (
                "Call to 74951110001 (answered, 65 s)",
                "74951110001",
                "8 (495) 111-00-01",
                "Call to 8 (495) 111-00-01 (answered, 65 s)",
            ),
            (
                "Call to 74951110001",
                "74951110001",
                "+74951110001",
                "Call to +74951110001",
            ),
            // Another number, or none: as it is.
            (
                "Call to 74951110001 (busy, 0 s)",
                "7495111000",
                "x",
                "Call to 74951110001 (busy, 0 s)",
            ),
            ("Call to  (missed, 0 s)", "", "", "Call to  (missed, 0 s)"),
            ("Please call me", "74951110001", "x", "Please call me"),
        ] {
            assert_eq!(text_with_dialed(text, dialed, formatted), want, "{text}");
        }
    }

    #[test]
    fn a_title_ending_with_the_number_writes_it_as_the_phone_field() {
        for (title, digits, formatted, want) in [
            (
                "Incoming call from 79161234567",
                "79161234567",
                "+7 (916) 123-45-67",
                "Incoming call from +7 (916) 123-45-67",
            ),
            ("79161234567", "79161234567", "89161234567", "89161234567"),
            // Not the number on its own: as it was.
            (
                "Order 179161234567",
                "79161234567",
                "+7 916",
                "Order 179161234567",
            ),
            ("Sofa order", "79161234567", "+7 916", "Sofa order"),
            (
                "Incoming call from a withheld number",
                "",
                "",
                "Incoming call from a withheld number",
            ),
        ] {
            assert_eq!(title_with_phone(title, digits, formatted), want, "{title}");
        }
    }

    #[test]
    fn timezones() {
        for (text, secs) in [
            ("UTC", 0),
            ("UTC+3", 3 * 3600),
            ("UTC-5", -5 * 3600),
            ("UTC+05:30", 5 * 3600 + 1800),
            ("GMT+1", 3600),
            ("+03:00", 3 * 3600),
        ] {
            assert_eq!(tz(text).local_minus_utc(), secs, "{text}");
        }
        for bad in ["UTC+3h", "Moscow", "UTC+15", "UTC*3", "UTC+3:75"] {
            assert!(parse_timezone(bad).is_err(), "{bad}");
        }
        // 2026-11-23 12:00:00 UTC.
        let t = 1_795_435_200;
        assert_eq!(local_time(t, tz("UTC+3")), "2026-11-23 15:00:00");
        assert_eq!(local_time(t, tz("UTC-5")), "2026-11-23 07:00:00");
    }

    #[test]
    fn unescaping_undoes_the_escape_table() {
        for s in [
            "Sean O'Brien",
            r#"Мария "Маша" <b>Иванова</b>"#,
            "Tom & Jerry",
            "&lt; as typed",
            "",
        ] {
            assert_eq!(unescape_html(&escape_html(s)), s, "{s}");
        }
    }

    #[test]
    fn html_is_escaped_unless_allowed() {
        assert_eq!(
            escape_html(r#"<b>"Tom" & 'Jerry'</b>"#),
            "&lt;b&gt;&quot;Tom&quot; &amp; &#39;Jerry&#39;&lt;/b&gt;"
        );
        let lead = LeadView {
            title: "<script>x</script>".into(),
            ..LeadView::default()
        };
        let escaped = lead_payload(
            &lead,
            Event::DealCreate,
            None,
            None,
            None,
            &Format::default(),
        );
        assert_eq!(escaped["title"], "&lt;script&gt;x&lt;/script&gt;");
        let raw = Format {
            allow_html: true,
            ..Format::default()
        };
        let kept = lead_payload(&lead, Event::DealCreate, None, None, None, &raw);
        assert_eq!(kept["title"], "<script>x</script>");
    }

    #[test]
    fn form_fields_never_take_attribution_names() {
        let pairs = |p: &[(&str, &str)]| -> BTreeMap<String, String> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        for (visit, fields, top, absent) in [
            // The visit's own attribution stays; "visit" is siptrack's.
            (
                vec![("marker", "google_cpc")],
                vec![("visit", "forged"), ("marker", "x"), ("size", "XL")],
                vec![("visit", "v-1"), ("marker", "google_cpc"), ("size", "XL")],
                vec![],
            ),
            // A visit that is not known: a form's utm_source is not
            // attribution either.
            (
                vec![],
                vec![
                    ("utm_source", "yandex"),
                    ("source", "me"),
                    ("colour", "red"),
                ],
                vec![("visit", "v-1"), ("colour", "red")],
                vec!["utm_source", "source"],
            ),
        ] {
            let lead = LeadView {
                visit_id: "v-1".into(),
                visit: pairs(&visit),
                fields: pairs(&fields),
                ..LeadView::default()
            };
            let data = lead_data(&lead);
            for (k, v) in top {
                assert_eq!(data[k], v, "{k} in {data:?}");
            }
            for k in absent {
                assert!(!data.contains_key(k), "{k} in {data:?}");
            }
            // Every field is still there, under `fields`.
            for (k, v) in fields {
                assert_eq!(data["fields"][k], v, "fields.{k}");
            }
        }
    }

    #[test]
    fn lead_payload_has_every_field() {
        let lead = LeadView {
            id: 42,
            title: "Incoming call from 74991234567".into(),
            text: "Call to 74951110001".into(),
            name: "Ivan".into(),
            phone: "74991234567".into(),
            email: "ivan@example.com".into(),
            visit_id: "v-9".into(),
            visit: [("marker", "google_cpc"), ("utm_source", "google")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            fields: Default::default(),
            created_at: 1_795_435_200,
        };
        let f = Format {
            phone_format: "8 (XXX) XXX-XX-XX".into(),
            timezone: tz("UTC+3"),
            ..Format::default()
        };
        let v = lead_payload(&lead, Event::DealComment, Some("crm-7"), None, None, &f);
        assert_eq!(v["id"], "42");
        assert_eq!(v["event"], "deal.comment");
        assert_eq!(v["deal_id"], "crm-7");
        assert_eq!(v["phone"], "8 (499) 123-45-67");
        assert_eq!(v["contact_data"]["phone"], "8 (499) 123-45-67");
        assert_eq!(v["date_create"], "2026-11-23 15:00:00");
        assert_eq!(v["visit_id"], "v-9");
        let data: Value = serde_json::from_str(v["data"].as_str().expect("data is a string"))
            .expect("data holds JSON");
        assert_eq!(data["marker"], "google_cpc");
        assert_eq!(data["utm_source"], "google");
        assert_eq!(data["visit"], "v-9");
        assert!(v.get("recording_url").is_none() && v.get("call").is_none());
        let plus7 = Format {
            phone_format: "+7XXXXXXXXXX".into(),
            ..f
        };
        assert_eq!(
            lead_payload(&lead, Event::DealCreate, None, None, None, &plus7)["phone"],
            "+74991234567"
        );
        // A caller from abroad is not made a domestic number.
        let from_london = LeadView {
            phone: "442079460958".into(),
            ..lead
        };
        let v = lead_payload(&from_london, Event::DealCreate, None, None, None, &plus7);
        assert_eq!(v["phone"], "+442079460958");
        assert_eq!(v["contact_data"]["phone"], "+442079460958");
    }

    #[test]
    fn call_payload_has_every_field() {
        let c = CallRecord {
            call_id: "abc@host".into(),
            info: CallInfo {
                caller: "74991234567".into(),
                dialed: "74951110001".into(),
                visit_id: Some("v-9".into()),
                marker: Some("google_cpc".into()),
                visit: [
                    ("page", "https://shop.example/"),
                    ("city", "Moscow"),
                    ("domain", "shop.example"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                ..CallInfo::default()
            },
            invite_at: 1_795_435_200_000,
            answer_at: Some(1_795_435_205_000),
            end_at: 1_795_435_265_000,
            duration: 60,
            status: CallStatus::Answered,
            hangup: None,
            recording: Default::default(),
            dtmf: Vec::new(),
        };
        let f = Format {
            timezone: tz("UTC-5"),
            ..Format::default()
        };
        let v = call_payload(&c, Some("https://rec/abc"), &f);
        for (k, want) in [
            ("id", json!("abc@host")),
            ("caller", json!("74991234567")),
            ("callee", json!("74951110001")),
            ("visit_id", json!("v-9")),
            ("marker", json!("google_cpc")),
            ("date", json!("2026-11-23 07:00:00")),
            ("duration", json!(60)),
            ("status", json!("ANSWER")),
            ("link", json!("https://rec/abc")),
            ("landing_page", json!("https://shop.example/")),
            ("domain", json!("shop.example")),
            ("city", json!("Moscow")),
            ("utm_source", json!("")),
        ] {
            assert_eq!(v[k], want, "{k}");
        }
        assert!(call_payload(&c, None, &f).get("link").is_none());
        // A static number's call: its visit is the marker, as its lead's.
        let mut stat = c.clone();
        stat.info.visit_id = None;
        let v = call_payload(&stat, None, &f);
        assert_eq!(
            (&v["visit_id"], &v["marker"]),
            (&json!("google_cpc"), &json!("google_cpc"))
        );
    }
}
