//! `/ui/deals`: the local CRM's deals, newest first, each with a status
//! form that posts to `/ui/deals/{id}/status` — the same change as
//! `POST /api/v1/crm/deals/{id}/status` (SPEC L-2), so the next lead of
//! the client is decided on it (L-3).

use std::fmt::Write as _;

use super::{esc, head, layout, Ctx, Nav};
use crate::recording::{links, LinkSettings};
use crate::store::rows::{DealRow, NoteRow};

/// A deal's comments and tasks under its title, oldest first: the calls
/// and leads the duplicate checks attached to it (a "duplicate of deal N"
/// lead links here, and the manager must see what came of it).
fn notes(ctx: &Ctx, d: &DealRow, links: &LinkSettings, now_unix: u64) -> String {
    if d.comments.is_empty() && d.tasks.is_empty() {
        return String::new();
    }
    let t = ctx.t;
    let mut out = format!(
        "<details class=\"notes\"><summary>{}: {}, {}: {}</summary><ul>",
        esc(t.comments),
        d.comments.len(),
        esc(t.tasks),
        d.tasks.len()
    );
    let mut all: Vec<(&NoteRow, &str)> = d
        .comments
        .iter()
        .map(|n| (n, t.comment))
        .chain(d.tasks.iter().map(|n| (n, t.task)))
        .collect();
    all.sort_by_key(|(n, _)| n.created_at);
    for (n, kind) in all {
        // A recorded call's note plays it, as the calls page does: it
        // read "Call recording" and nothing more (trial, 2026-12-02).
        let player = n
            .call
            .as_ref()
            .and_then(|c| {
                let end_at_ms = u64::try_from(c.end_at).unwrap_or(0);
                let base = &c.recording_base;
                links::console_player(&c.call_id, &c.recording, end_at_ms, links, now_unix, base)
            })
            .map(|p| format!(" {}", super::player(ctx, &p)))
            .unwrap_or_default();
        let _ = write!(
            out,
            "<li>{} · {}: {}{player}</li>",
            esc(&ctx.date(n.created_at)),
            esc(kind),
            esc(&ctx.stored(&n.text))
        );
    }
    out.push_str("</ul></details>");
    out
}

/// `statuses`: the status names to offer (the configured statuses and
/// the group names), sorted.
/// `links` and `now_unix` make the players of recorded calls' notes.
pub fn page(
    ctx: &Ctx,
    deals: &[DealRow],
    statuses: &[String],
    notice: Option<&str>,
    links: &LinkSettings,
    now_unix: u64,
) -> String {
    let t = ctx.t;
    let mut b = String::new();
    if let Some(n) = notice {
        let _ = write!(b, "<p class=\"notice\">{}</p>", esc(n));
    }
    let _ = write!(
        b,
        "<table id=\"deals\">{}<tbody>",
        head(&[t.id, t.date, t.title, t.name, t.phone, t.visit, t.status, t.group, t.change])
    );
    for d in deals {
        let mut options = String::new();
        for s in statuses {
            let selected = if *s == d.status { " selected" } else { "" };
            let _ = write!(
                options,
                "<option value=\"{}\"{selected}>{}</option>",
                esc(s),
                esc(&t.word(s))
            );
        }
        let _ = write!(
            b,
            "<tr id=\"deal-{id}\"><td>{id}{crm}</td><td>{date}</td><td>{title}</td><td>{name}</td>\
             <td>{phone}</td><td>{visit}</td><td class=\"status\">{status}</td><td class=\"group\">{group}</td>\
             <td><form method=\"post\" action=\"/ui/deals/{target}/status\">{csrf}\
             <select name=\"status\">{options}</select> <button>{change}</button></form></td></tr>",
            id = d.id,
            // The CRM's own id, to find the deal there (trial, 2026-12-03).
            crm = d
                .crm_id
                .as_deref()
                .map(|c| format!("<br><small class=\"crm-id\">CRM {}</small>", esc(c)))
                .unwrap_or_default(),
            // The status path finds a deal the CRM named by the CRM's id
            // only (SPEC L-2), as the CRM itself would send it.
            target = esc(&crate::ui::url_value(d.crm_id.as_deref().unwrap_or(&d.id.to_string()))),
            date = esc(&ctx.date(d.created_at)),
            title = esc(&ctx.stored(&d.title)) + &notes(ctx, d, links, now_unix),
            name = esc(&d.name),
            // The e-mail under the phone: a form lead may have only that.
            phone = match (d.phone.is_empty(), d.email.is_empty()) {
                (_, true) => ctx.phone(&d.phone),
                (true, false) => esc(&d.email),
                (false, false) => format!("{}<br>{}", ctx.phone(&d.phone), esc(&d.email)),
            },
            visit = esc(&d.visit_id),
            status = esc(&t.word(&d.status)),
            group = esc(&t.word(&d.group)),
            csrf = ctx.csrf_field(),
            change = esc(t.change),
        );
    }
    b.push_str("</tbody></table>");
    if deals.is_empty() {
        let _ = write!(b, "<p class=\"empty\">{}</p>", esc(t.nothing));
    }
    layout(ctx, Nav::Deals, &b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rows::NoteRow;

    /// The comments and tasks the duplicate checks attached to a deal are
    /// on its row, oldest first; an e-mail-only client shows the e-mail.
    #[test]
    fn a_deal_shows_its_comments_tasks_and_email() {
        let ctx = crate::ui::test_ctx(&crate::ui::texts::EN, 0, "");
        let note = |at: i64, text: &str| NoteRow {
            created_at: at,
            text: text.into(),
            call: None,
        };
        let deal = DealRow {
            id: 1,
            created_at: 0,
            title: "Sofa".into(),
            name: "John".into(),
            phone: String::new(),
            email: "john@example.com".into(),
            visit_id: String::new(),
            status: "new".into(),
            group: "not_counted".into(),
            crm_id: None,
            tasks: vec![note(120, "Call back <now>")],
            comments: vec![note(60, "Incoming call: answered, 60 s")],
        };
        let links = crate::ui::test_links();
        let p = page(
            &ctx,
            std::slice::from_ref(&deal),
            &["new".into()],
            None,
            &links,
            100,
        );
        assert!(p.contains("comments: 1, tasks: 1"), "{p}");
        assert!(!p.contains("<audio"), "no recorded call, no player: {p}");
        let first = p.find("Incoming call: answered").expect("the comment");
        let second = p.find("Call back &lt;now&gt;").expect("the task, escaped");
        assert!(first < second, "oldest first");
        assert!(p.contains("<td>john@example.com</td>"), "{p}");
        let bare = DealRow {
            tasks: Vec::new(),
            comments: Vec::new(),
            ..deal
        };
        let p = page(
            &ctx,
            std::slice::from_ref(&bare),
            &["new".into()],
            None,
            &links,
            100,
        );
        assert!(!p.contains("details"), "{p}");
        assert!(!p.contains("crm-id"), "no CRM id, none shown: {p}");
        // The CRM's id beside siptrack's, to find the deal there.
        let in_crm = DealRow {
            crm_id: Some("31<".into()),
            ..bare.clone()
        };
        let p = page(
            &ctx,
            std::slice::from_ref(&in_crm),
            &["new".into()],
            None,
            &links,
            100,
        );
        assert!(
            p.contains("<td>1<br><small class=\"crm-id\">CRM 31&lt;</small></td>"),
            "{p}"
        );
        // A recorded call's note plays the recording.
        let recorded = DealRow {
            comments: vec![NoteRow {
                created_at: 60,
                text: "Call recording".into(),
                call: Some(crate::store::rows::NoteCall {
                    call_id: "c1@h".into(),
                    recording: crate::calls::Recording::Recorded,
                    recording_base: String::new(),
                    end_at: 66_000,
                }),
            }],
            ..bare
        };
        let p = page(&ctx, &[recorded], &["new".into()], None, &links, 100);
        assert!(
            p.contains(
                "Call recording <audio controls preload=\"none\" src=\"/ui/recordings/c1%40h?exp="
            ),
            "{p}"
        );
    }
}
