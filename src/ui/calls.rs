//! `/ui/calls`: call records in the order they were recorded, newest
//! first, a page at a time by keyset on the row id.

use std::fmt::Write as _;

use super::{duration, esc, head, layout, Ctx, Nav};
use crate::calls::Recording;
use crate::media::timeline::Side;
use crate::recording::{links, LinkSettings};
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

/// The recording cell: a player for a call with a WAV (its signed
/// console link), what became of the recording, and the key presses.
fn recording(ctx: &Ctx, c: &CallRow, links: &LinkSettings, now_unix: u64) -> String {
    let t = ctx.t;
    let mut cell = String::new();
    let end_at_ms = u64::try_from(c.end_at).unwrap_or(0);
    let at = links::console_player(
        &c.call_id,
        &c.recording,
        end_at_ms,
        links,
        now_unix,
        &c.recording_base,
    );
    if let Some(p) = at {
        cell.push_str(&super::player(ctx, &p));
    }
    let state = match &c.recording {
        Recording::Recorded => t.recorded.to_string(),
        Recording::Partial => t.partial.to_string(),
        Recording::NotRecorded { reason } => format!("{}: {reason}", t.not_recorded),
    };
    let _ = write!(cell, "<span class=\"rec-state\">{}</span>", esc(&state));
    if !c.dtmf.is_empty() {
        let _ = write!(cell, "<span class=\"dtmf\">{}:", esc(t.dtmf));
        for d in &c.dtmf {
            let who = match d.side {
                Side::Caller => t.by_caller,
                Side::Callee => t.by_callee,
            };
            let _ = write!(
                cell,
                " <kbd title=\"{}\">{}</kbd>",
                esc(&format!(
                    "{who}, {:.1} {}",
                    d.at_ms as f64 / 1000.0,
                    t.seconds
                )),
                esc(&d.digit.to_string())
            );
        }
        cell.push_str("</span>");
    }
    cell
}

/// One call as a table row (also what the live updates insert); `links`
/// and `now_unix` make its player's link.
pub fn row(ctx: &Ctx, id: i64, c: &CallRow, links: &LinkSettings, now_unix: u64) -> String {
    format!(
        "<tr id=\"call-{id}\"><td>{date}</td><td class=\"status\">{status}</td><td>{dur}</td>\
         <td>{hangup}</td><td class=\"caller\">{caller}</td><td>{number}</td><td>{channel}</td>\
         <td class=\"recording\">{rec}</td><td><a class=\"ladder\" href=\"/ui/ladder?call={call}\">{sip}</a></td></tr>",
        date = esc(&ctx.date(c.invite_at / 1000)),
        status = esc(&ctx.t.word(&c.status)),
        dur = duration(c.duration),
        hangup = esc(&ctx.t.word(c.hangup.as_deref().unwrap_or(""))),
        // No caller: the number was withheld, said as the leads page says
        // it (it showed `anonymous` here; trial, 2026-12-02), with what
        // the From carried on hover.
        caller = if c.caller.is_empty() {
            format!(
                "<span class=\"muted\" title=\"{}\">{}</span>",
                esc(&c.caller_raw),
                esc(ctx.t.withheld)
            )
        } else {
            ctx.phone(&c.caller)
        },
        number = ctx.phone(&c.callee),
        channel = esc(channel(c)),
        rec = recording(ctx, c, links, now_unix),
        call = esc(&super::url_value(&c.call_id)),
        sip = esc(ctx.t.ladder),
    )
}

/// The page: `rows` as the store gave them (up to a page and one, with
/// their row ids); `before` when this is an older page.
pub fn page(
    ctx: &Ctx,
    rows: &[(i64, CallRow)],
    before: Option<i64>,
    links: &LinkSettings,
    now_unix: u64,
) -> String {
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
        b.push_str(&row(ctx, *id, c, links, now_unix));
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
    use crate::media::recorder::Dtmf;

    #[test]
    fn a_call_row() {
        let ctx = Ctx {
            t: &crate::ui::texts::RU,
            tz: chrono::FixedOffset::east_opt(3 * 3600).expect("tz"),
            phone_format: "+X XXX XXX-XX-XX",
            phone_rules: &crate::phone::PhoneRules::default(),
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
            recording_base: String::new(),
            dtmf: Vec::new(),
        };
        let links = crate::ui::test_links();
        let now = 100;
        let r = row(&ctx, 7, &c, &links, now);
        let src = links::console_link(&c.call_id, &c.recording, 66_000, &links, now)
            .expect("a recorded call has a link");
        assert!(
            src.starts_with("/ui/recordings/a%20b%40h%2F1?exp=86466&sig="),
            "{src}"
        );
        for part in [
            "id=\"call-7\"",
            "<td>1970-01-01 03:00:00</td>",
            "<td>1:05</td>",
            "+7 916 123-45-67",
            "+7 495 111-00-01",
            "<td>v&quot;&lt;i&gt;</td>",
            // The query's & escaped, as every attribute value.
            &format!(
                "<audio controls preload=\"none\" src=\"{}\"></audio>",
                src.replace('&', "&amp;")
            ),
            "<span class=\"rec-state\">записан</span>",
            "href=\"/ui/ladder?call=a%20b%40h%2F1\"",
        ] {
            assert!(r.contains(part), "{part} in {r}");
        }
        assert!(!r.contains("dtmf"), "no presses, no list: {r}");

        // Recorded by another node of a cluster: its link, opened there
        // (this node has no file: its own link was a 404).
        c.recording_base = "http://node-a:8080".into();
        let r = row(&ctx, 7, &c, &links, now);
        let there = src.replacen("/ui", "http://node-a:8080", 1);
        let want = format!(
            "<a class=\"play-elsewhere\" href=\"{}\" target=\"_blank\" rel=\"noopener\">слушать на node-a:8080</a>",
            there.replace('&', "&amp;")
        );
        assert!(r.contains(&want) && !r.contains("<audio"), "{want} in {r}");
        c.recording_base = links.base_url.clone();
        assert!(
            row(&ctx, 7, &c, &links, now).contains("<audio"),
            "this node's own"
        );
        c.recording_base.clear();

        // Not recorded: the reason, no player.
        c.marker = Some("google".into());
        c.recording = Recording::not_recorded("codec not recorded: <G729>");
        let r = row(&ctx, 7, &c, &links, now);
        assert!(
            r.contains("<td>google</td>")
                && r.contains("не записан: codec not recorded: &lt;G729&gt;")
                && !r.contains("<audio"),
            "{r}"
        );

        // Partly recorded, with key presses in order and whose they were.
        c.recording = Recording::Partial;
        c.dtmf = vec![
            Dtmf {
                side: Side::Caller,
                digit: '1',
                at_ms: 1200,
                duration_ms: 100,
            },
            Dtmf {
                side: Side::Callee,
                digit: '#',
                at_ms: 2500,
                duration_ms: 80,
            },
        ];
        let r = row(&ctx, 7, &c, &links, now);
        for part in [
            "<audio controls",
            "записан частично",
            "<span class=\"dtmf\">нажатия: <kbd title=\"звонивший, 1.2 с\">1</kbd> \
             <kbd title=\"принявший, 2.5 с\">#</kbd></span>",
        ] {
            assert!(r.contains(part), "{part} in {r}");
        }

        // Past retention the file is gone: the state stays, the player goes.
        let r = row(&ctx, 7, &c, &links, 66 + 86_400);
        assert!(
            !r.contains("<audio") && r.contains("записан частично"),
            "{r}"
        );

        // A withheld caller reads as on the leads page.
        c.caller = String::new();
        c.caller_raw = "anonymous".into();
        let r = row(&ctx, 7, &c, &links, now);
        assert!(
            r.contains("<td class=\"caller\"><span class=\"muted\" title=\"anonymous\">номер скрыт</span></td>"),
            "{r}"
        );
    }
}
