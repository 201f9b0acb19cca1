//! The API's JSON for the store's rows (SPEC C-6, L-7). The shapes are
//! the contract operators and CRMs read; the e2e tests pin them. The store
//! knows nothing of them.

use serde_json::{json, Value};

use crate::calls::VISIT_COLUMNS;
use crate::crm::local::RECORDING_NOTE;
use crate::store::rows::{CallRow, DealRow, LeadRow, NoteCall, NoteRow, OutboxRow};

/// `YYYY-MM-DD HH:MM:SS` UTC.
pub fn date(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// A lead of the lead log; `outcome` is the CRM's error while its request
/// fails, `decision` what the lead became.
pub fn lead(l: &LeadRow) -> Value {
    let (outcome, crm) = l.outcome();
    json!({
        "id": l.id,
        "date": date(l.created_at),
        "type": l.kind,
        "form_or_number": if l.kind == "call" { &l.dialed } else { &l.form },
        "title": l.title,
        "name": l.name,
        "phone": l.phone,
        "email": l.email,
        "visit": l.visit_id,
        "comment": l.text,
        "outcome": outcome,
        "decision": l.decision,
        "crm": crm,
        "deal_id": l.deal_id,
    })
}

/// A call record with its visit's data under the C-2a names, its
/// recording (`recording`: recorded, partial, not_recorded;
/// `recording_reason`; `dtmf`) and `link`, the signed link to the WAV
/// (built by the caller, fresh; null without one).
pub fn call(c: &CallRow, link: Option<&str>) -> Value {
    let mut v = json!({
        "id": c.call_id,
        "caller": c.caller,
        "caller_raw": c.caller_raw,
        "callee": c.callee,
        "destination": c.destination,
        // As the lead and the call webhooks name it (`CallInfo::lead_visit`):
        // a static number's marker too (trial, 2026-12-03: null here, the
        // marker in the webhooks for the same call).
        "visit_id": c.visit_id.as_ref().or(c.marker.as_ref()),
        "marker": c.marker,
        "source": c.source,
        "date": date(c.invite_at / 1000),
        "invite_at_ms": c.invite_at,
        "answer_at_ms": c.answer_at,
        "end_at_ms": c.end_at,
        "duration": c.duration,
        "status": c.status,
        "hangup": c.hangup,
        "lead_id": c.lead_id,
        "recording": c.recording.state(),
        "recording_reason": c.recording.reason(),
        "dtmf": c.dtmf,
        "link": link,
    });
    for (name, key) in VISIT_COLUMNS {
        v[*name] = c.visit.get(*key).map_or(Value::Null, |s| json!(s));
    }
    v
}

/// A note; one about a recorded call carries the recording's link (when
/// `link` gives one) in its text and as `recording_url`.
fn notes(n: &[NoteRow], link: &dyn Fn(&NoteCall) -> Option<String>) -> Vec<Value> {
    n.iter()
        .map(|n| {
            let url = n.call.as_ref().and_then(link);
            let text = match &url {
                None => n.text.clone(),
                Some(u) if n.text == RECORDING_NOTE => format!("{RECORDING_NOTE}: {u}"),
                Some(u) => format!("{}\nRecording: {u}", n.text),
            };
            let mut v = json!({ "date": date(n.created_at), "text": text });
            if let Some(u) = url {
                v["recording_url"] = json!(u);
            }
            v
        })
        .collect()
}

/// A deal of the local CRM with its tasks and comments; `link` makes the
/// recording link of a note's call (None: no link, by the rules of
/// `recording::links::crm_link`).
pub fn deal(d: &DealRow, link: &dyn Fn(&NoteCall) -> Option<String>) -> Value {
    json!({
        "id": d.id,
        "title": d.title,
        "name": d.name,
        "phone": d.phone,
        "email": d.email,
        "visit_id": d.visit_id,
        "status": d.status,
        "group": d.group,
        // The CRM's own id, from its answer to deal.create (null with
        // crm.kind = "local", or until the CRM answered).
        "crm_deal_id": d.crm_id,
        "created_at": date(d.created_at),
        "tasks": notes(&d.tasks, link),
        "comments": notes(&d.comments, link),
    })
}

/// A CRM request; its body as JSON when it is (it always is when siptrack
/// queued it), else as text.
pub fn outbox(o: &OutboxRow) -> Value {
    json!({
        "id": o.id,
        "created_at_ms": o.created_at,
        "target": o.target,
        "idempotency_key": o.idempotency_key,
        "event": o.event,
        "lead_id": o.lead_id,
        "deal_id": o.deal_ref,
        "state": o.state,
        "attempts": o.attempts,
        "next_at_ms": o.next_at,
        "last_error": o.last_error,
        "done_at_ms": o.done_at,
        "body": serde_json::from_str::<Value>(&o.body).unwrap_or_else(|_| json!(o.body)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rows::PendingCrm;

    #[test]
    fn a_call_lead_names_its_number_and_a_failing_crm_its_error() {
        let row = LeadRow {
            id: 7,
            created_at: 1_764_000_000,
            kind: "call".into(),
            form: String::new(),
            dialed: "74951110001".into(),
            title: "Incoming call from 79160000001".into(),
            name: String::new(),
            phone: "79160000001".into(),
            email: String::new(),
            visit_id: "v1".into(),
            channel: "v1".into(),
            text: "Call to 74951110001 (ANSWER, 42 s)".into(),
            decision: "deal 3 created".into(),
            deal_id: Some(3),
            pending: Some(PendingCrm {
                state: "failed".into(),
                attempts: 1,
                error: "cannot connect".into(),
            }),
        };
        assert_eq!(
            lead(&row),
            json!({
                "id": 7, "date": "2025-11-24 16:00:00", "type": "call",
                "form_or_number": "74951110001", "title": "Incoming call from 79160000001",
                "name": "", "phone": "79160000001", "email": "", "visit": "v1",
                "comment": "Call to 74951110001 (ANSWER, 42 s)",
                "outcome": "crm error: cannot connect (gave up after 1 attempt)",
                "decision": "deal 3 created", "crm": "failed", "deal_id": 3,
            })
        );
    }

    #[test]
    fn a_static_numbers_call_names_its_marker_as_the_visit() {
        let row = |visit: Option<&str>, marker: Option<&str>| CallRow {
            call_id: "c1".into(),
            caller: "79160000001".into(),
            caller_raw: "79160000001".into(),
            callee: "74951111111".into(),
            destination: "sip:pbx".into(),
            visit_id: visit.map(Into::into),
            marker: marker.map(Into::into),
            source: None,
            visit: Default::default(),
            invite_at: 0,
            answer_at: None,
            end_at: 0,
            duration: 0,
            status: "ANSWER".into(),
            hangup: None,
            lead_id: None,
            recording: Default::default(),
            recording_base: String::new(),
            dtmf: Vec::new(),
        };
        for (visit, marker, want) in [
            (Some("v-1"), Some("google_cpc"), json!("v-1")),
            (None, Some("google_cpc"), json!("google_cpc")),
            (None, None, Value::Null),
        ] {
            let v = call(&row(visit, marker), None);
            assert_eq!(v["visit_id"], want, "{visit:?} {marker:?}");
            assert_eq!(v["marker"], json!(marker), "the marker stays its own");
        }
    }

    #[test]
    fn a_calls_visit_data_goes_under_the_c2a_names() {
        let row = CallRow {
            call_id: "c1".into(),
            caller: "79160000001".into(),
            caller_raw: "+79160000001".into(),
            callee: "74951110001".into(),
            destination: "sip:pbx".into(),
            visit_id: Some("v1".into()),
            marker: None,
            source: Some("google".into()),
            visit: [("page".to_string(), "https://x/".to_string())].into(),
            invite_at: 1_764_000_000_500,
            answer_at: None,
            end_at: 1_764_000_001_000,
            duration: 0,
            status: "NOANSWER".into(),
            hangup: Some("caller".into()),
            lead_id: Some(2),
            recording: Default::default(),
            recording_base: String::new(),
            dtmf: Vec::new(),
        };
        let v = call(&row, None);
        assert_eq!(
            (
                &v["recording"],
                &v["recording_reason"],
                &v["dtmf"],
                &v["link"]
            ),
            (
                &json!("not_recorded"),
                &json!("recording disabled"),
                &json!([]),
                &Value::Null
            )
        );
        let recorded = CallRow {
            recording: crate::calls::Recording::Recorded,
            dtmf: vec![crate::media::recorder::Dtmf {
                side: crate::media::timeline::Side::Callee,
                digit: '7',
                at_ms: 1500,
                duration_ms: 120,
            }],
            ..row.clone()
        };
        let v = call(&recorded, Some("http://h/recordings/c1?exp=1&sig=ab"));
        assert_eq!(v["recording"], "recorded");
        assert_eq!(v["recording_reason"], Value::Null);
        assert_eq!(
            v["dtmf"],
            json!([{"side": "callee", "digit": "7", "at_ms": 1500, "duration_ms": 120}])
        );
        assert_eq!(v["link"], "http://h/recordings/c1?exp=1&sig=ab");
        assert_eq!(v["landing_page"], "https://x/");
        assert_eq!(v["city"], Value::Null);
        assert_eq!(v["date"], "2025-11-24 16:00:00");
        assert_eq!(v["answer_at_ms"], Value::Null);
    }

    #[test]
    fn a_note_about_a_recorded_call_carries_its_link() {
        let call = NoteCall {
            call_id: "c1".into(),
            recording: crate::calls::Recording::Recorded,
            recording_base: String::new(),
            end_at: 0,
        };
        let n = |text: &str, call: Option<NoteCall>| NoteRow {
            created_at: 0,
            text: text.into(),
            call,
        };
        let rows = [
            n("Call recording", Some(call.clone())),
            n("Incoming call from 7916", Some(call)),
            n("Duplicate: duplicate of lead 1", None),
        ];
        let with = notes(&rows, &|c: &NoteCall| {
            Some(format!("http://h/r/{}", c.call_id))
        });
        assert_eq!(with[0]["text"], "Call recording: http://h/r/c1");
        assert_eq!(with[0]["recording_url"], "http://h/r/c1");
        assert_eq!(
            with[1]["text"],
            "Incoming call from 7916\nRecording: http://h/r/c1"
        );
        assert_eq!(with[2]["text"], "Duplicate: duplicate of lead 1");
        assert!(with[2].get("recording_url").is_none());
        // No link by the rules (switched off, expired): the text alone.
        let without = notes(&rows, &|_: &NoteCall| None);
        assert_eq!(without[0]["text"], "Call recording");
        assert!(without[0].get("recording_url").is_none());
    }

    #[test]
    fn an_outbox_body_is_json_when_it_parses() {
        let mut row = OutboxRow {
            id: 1,
            created_at: 0,
            target: "lead".into(),
            idempotency_key: "k".into(),
            event: "deal.create".into(),
            lead_id: Some(1),
            deal_ref: Some(2),
            state: "pending".into(),
            attempts: 0,
            next_at: 0,
            last_error: String::new(),
            done_at: None,
            body: r#"{"a":1}"#.into(),
        };
        assert_eq!(outbox(&row)["body"], json!({"a": 1}));
        assert_eq!(outbox(&row)["deal_id"], 2);
        row.body = "not json".into();
        assert_eq!(outbox(&row)["body"], "not json");
    }
}
