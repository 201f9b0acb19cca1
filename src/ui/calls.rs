//! `/ui/calls`: call records in the order they were recorded, newest
//! first, a page at a time by keyset on the row id.

use std::fmt::Write as _;

use super::{duration, esc, head, layout, Ctx, Nav};
use crate::calls::Recording;
use crate::store::rows::CallRow;

pub const PAGE: i64 = 50;

/// The channel a call came from: the static number's marker or source,
/// else the visit holding the pool number.
fn channel(c: &CallRow) -> &str {
    c.marker
        .as_deref()
        .or(c.source.as_deref())
        .or(c.visit_id.as_deref())
        .unwrap_or("")
}

fn recording(ctx: &Ctx, c: &CallRow) -> String {
    match &c.recording {
        Recording::Recorded => ctx.t.recorded.into(),
        Recording::Partial => ctx.t.partial.into(),
        Recording::NotRecorded { reason } => format!("— {reason}"),
    }
}

/// One call as a table row (also what the live updates insert).
pub fn row(ctx: &Ctx, id: i64, c: &CallRow) -> String {
    format!(
        "<tr id=\"call-{id}\"><td>{date}</td><td class=\"status\">{status}</td><td>{dur}</td>\
         <td>{hangup}</td><td class=\"caller\">{caller}</td><td>{number}</td><td>{channel}</td>\
         <td>{rec}</td><td><a class=\"ladder\" href=\"/ui/ladder?call={call}\">{sip}</a></td></tr>",
        date = esc(&ctx.date(c.invite_at / 1000)),
        status = esc(&c.status),
        dur = duration(c.duration),
        hangup = esc(c.hangup.as_deref().unwrap_or("")),
        caller = if c.caller.is_empty() {
            esc(&c.caller_raw)
        } else {
            ctx.phone(&c.caller)
        },
        number = ctx.phone(&c.callee),
        channel = esc(channel(c)),
        rec = esc(&recording(ctx, c)),
        call = esc(&super::url_value(&c.call_id)),
        sip = esc(ctx.t.ladder),
    )
}

/// The page: `rows` as the store gave them (up to a page and one, with
/// their row ids); `before` when this is an older page.
pub fn page(ctx: &Ctx, rows: &[(i64, CallRow)], before: Option<i64>) -> String {
    let t = ctx.t;
    let shown = &rows[..rows.len().min(PAGE as usize)];
    let live = if before.is_none() {
        format!(
            " data-live=\"call\" data-after=\"{}\"",
            shown.first().map_or(0, |(id, _)| *id)
        )
    } else {
        String::new()
    };
    let mut b = format!(
        "<table id=\"calls\">{}<tbody{live}>",
        head(&[
            t.date,
            t.status,
            t.duration,
            t.hangup,
            t.caller,
            t.number,
            t.channel,
            t.recording,
            t.ladder
        ])
    );
    for (id, c) in shown {
        b.push_str(&row(ctx, *id, c));
    }
    b.push_str("</tbody></table>");
    if shown.is_empty() {
        let _ = write!(b, "<p class=\"empty\">{}</p>", esc(t.nothing));
    }
    b.push_str("<p class=\"pages\">");
    if before.is_some() {
        let _ = write!(b, "<a href=\"/ui/calls\">{}</a> ", esc(t.newest));
    }
    if rows.len() > PAGE as usize {
        if let Some((last, _)) = shown.last() {
            let _ = write!(
                b,
                "<a id=\"older\" href=\"/ui/calls?before={last}\">{}</a>",
                esc(t.older)
            );
        }
    }
    b.push_str("</p>");
    layout(ctx, Nav::Calls, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_row() {
        let ctx = Ctx {
            t: &crate::ui::texts::RU,
            tz: chrono::FixedOffset::east_opt(3 * 3600).expect("tz"),
            phone_format: "+X XXX XXX-XX-XX",
            csrf: "c",
            user: "u",
        };
        let mut c = CallRow {
            call_id: "a b@h/1".into(),
            caller: "79161234567".into(),
            caller_raw: "89161234567".into(),
            callee: "74951110001".into(),
            destination: "sip:pbx@h".into(),
            visit_id: Some("v\"<i>".into()),
            marker: None,
            source: None,
            visit: Default::default(),
            invite_at: 0,
            answer_at: Some(1000),
            end_at: 66_000,
            duration: 65,
            status: "answered".into(),
            hangup: Some("callee".into()),
            lead_id: Some(1),
            recording: Recording::Recorded,
            dtmf: Vec::new(),
        };
        let r = row(&ctx, 7, &c);
        for part in [
            "id=\"call-7\"",
            "<td>1970-01-01 03:00:00</td>",
            "<td>1:05</td>",
            "+7 916 123-45-67",
            "+7 495 111-00-01",
            "<td>v&quot;&lt;i&gt;</td>",
            "<td>записан</td>",
            "href=\"/ui/ladder?call=a%20b%40h%2F1\"",
        ] {
            assert!(r.contains(part), "{part} in {r}");
        }
        c.marker = Some("google".into());
        c.recording = Recording::not_recorded("no free media ports");
        let r = row(&ctx, 7, &c);
        assert!(
            r.contains("<td>google</td>") && r.contains("— no free media ports"),
            "{r}"
        );
    }
}
