//! `/ui/outbox`: CRM deliveries not done yet — pending ones with the last
//! attempt's error, failed (parked) ones with a retry button that puts
//! them back in the queue (as `POST /api/v1/outbox/{id}/retry`).

use std::fmt::Write as _;

use super::{esc, head, layout, Ctx, Nav};
use crate::store::rows::OutboxRow;

/// What an item is: its lead event, or which call webhook (those have no
/// event of their own, and showed an empty cell; trial, 2026-12-02).
fn event<'a>(t: &'a super::texts::Texts, o: &'a OutboxRow) -> &'a str {
    match (o.event.as_str(), o.target.as_str()) {
        ("", "call_start") => t.call_start_event,
        ("", "call_end") => t.call_end_event,
        (event, _) => event,
    }
}

/// A call webhook's call (its Call-ID, from the queued body), for the
/// lead column it has no lead in.
fn call_of(o: &OutboxRow) -> String {
    serde_json::from_str::<serde_json::Value>(&o.body)
        .ok()
        .and_then(|b| b.get("id").and_then(|v| v.as_str()).map(str::to_string))
        .unwrap_or_default()
}

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
            event = esc(event(t, o)),
            lead = o
                .lead_id
                .map(|l| l.to_string())
                .unwrap_or_else(|| esc(&call_of(o))),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A call webhook's row says which webhook and which call it is.
    #[test]
    fn a_call_webhooks_row_names_the_webhook_and_its_call() {
        let row = |target: &str, event: &str, lead: Option<i64>| OutboxRow {
            id: 7,
            created_at: 0,
            target: target.into(),
            idempotency_key: "k".into(),
            event: event.into(),
            lead_id: lead,
            deal_ref: None,
            state: "failed".into(),
            attempts: 3,
            next_at: 0,
            last_error: "HTTP 500".into(),
            done_at: None,
            body: r#"{"id":"a1<b>@host","caller":"7916"}"#.into(),
        };
        for (texts, start, end) in [
            (&crate::ui::texts::EN, "call start", "call end"),
            (&crate::ui::texts::RU, "начало звонка", "конец звонка"),
        ] {
            let ctx = crate::ui::test_ctx(texts, 0, "");
            let p = page(
                &ctx,
                &[
                    row("call_start", "", None),
                    row("call_end", "", None),
                    row("lead", "deal.create", Some(12)),
                ],
                None,
            );
            assert!(
                p.contains(&format!("<td>{start}</td><td>a1&lt;b&gt;@host</td>")),
                "{p}"
            );
            assert!(
                p.contains(&format!("<td>{end}</td><td>a1&lt;b&gt;@host</td>")),
                "{p}"
            );
            assert!(p.contains("<td>deal.create</td><td>12</td>"), "{p}");
        }
    }
}
