//! `/ui/outbox`: CRM deliveries not done yet — pending ones with the last
//! attempt's error, failed (parked) ones with a retry button that puts
//! them back in the queue (as `POST /api/v1/outbox/{id}/retry`).

use std::fmt::Write as _;

use super::{esc, head, layout, Ctx, Nav};
use crate::store::rows::OutboxRow;

pub fn page(ctx: &Ctx, items: &[OutboxRow], notice: Option<&str>) -> String {
    let t = ctx.t;
    let mut b = String::new();
    if let Some(n) = notice {
        let _ = write!(b, "<p class=\"notice\">{}</p>", esc(n));
    }
    let _ = write!(
        b,
        "<table id=\"outbox\">{}<tbody>",
        head(&[t.id, t.date, t.event, t.lead, t.state, t.attempts, t.error, ""])
    );
    for o in items {
        let state = match o.state.as_str() {
            "failed" => t.failed,
            "pending" => t.pending,
            other => other,
        };
        let retry = if o.state == "failed" {
            format!(
                "<form method=\"post\" action=\"/ui/outbox/{}/retry\">{}<button>{}</button></form>",
                o.id,
                ctx.csrf_field(),
                esc(t.retry)
            )
        } else {
            String::new()
        };
        let _ = write!(
            b,
            "<tr id=\"outbox-{id}\" class=\"{cls}\"><td>{id}</td><td>{date}</td><td>{event}</td><td>{lead}</td>\
             <td class=\"state\">{state}</td><td>{attempts}</td><td class=\"err\">{error}</td><td>{retry}</td></tr>",
            id = o.id,
            cls = esc(&o.state),
            date = esc(&ctx.date(o.created_at / 1000)),
            event = esc(&o.event),
            lead = o.lead_id.map(|l| l.to_string()).unwrap_or_default(),
            state = esc(state),
            attempts = o.attempts,
            error = esc(&o.last_error),
        );
    }
    b.push_str("</tbody></table>");
    if items.is_empty() {
        let _ = write!(b, "<p class=\"empty\">{}</p>", esc(t.nothing));
    }
    layout(ctx, Nav::Outbox, &b)
}
