//! `/ui/deals`: the local CRM's deals, newest first, each with a status
//! form that posts to `/ui/deals/{id}/status` — the same change as
//! `POST /api/v1/crm/deals/{id}/status` (SPEC L-2), so the next lead of
//! the client is decided on it (L-3).

use std::fmt::Write as _;

use super::{esc, head, layout, Ctx, Nav};
use crate::store::rows::DealRow;

/// `statuses`: the status names to offer (the configured statuses and
/// the group names), sorted.
pub fn page(ctx: &Ctx, deals: &[DealRow], statuses: &[String], notice: Option<&str>) -> String {
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
            "<tr id=\"deal-{id}\"><td>{id}</td><td>{date}</td><td>{title}</td><td>{name}</td>\
             <td>{phone}</td><td>{visit}</td><td class=\"status\">{status}</td><td class=\"group\">{group}</td>\
             <td><form method=\"post\" action=\"/ui/deals/{target}/status\">{csrf}\
             <select name=\"status\">{options}</select> <button>{change}</button></form></td></tr>",
            id = d.id,
            // The status path finds a deal the CRM named by the CRM's id
            // only (SPEC L-2), as the CRM itself would send it.
            target = esc(&crate::ui::url_value(d.crm_id.as_deref().unwrap_or(&d.id.to_string()))),
            date = esc(&ctx.date(d.created_at)),
            title = esc(&d.title),
            name = esc(&d.name),
            phone = ctx.phone(&d.phone),
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
