//! `/ui/pools`: each pool number, the visit holding it and for how long,
//! and the latest exhaustion events (a held number taken for a new visit:
//! the pool is too small).

use std::fmt::Write as _;

use super::{duration, esc, head, layout, Ctx, Nav};
use crate::tracking::pools::{Exhaustion, NumberState};

pub fn page(ctx: &Ctx, numbers: &[NumberState], exhaustions: &[Exhaustion], now_ms: u64) -> String {
    let t = ctx.t;
    let mut b = format!(
        "<table id=\"numbers\">{}<tbody>",
        head(&[t.pool, t.number, t.held_by, t.channel, t.held_for])
    );
    for n in numbers {
        let (visit, channel, held) = match &n.visit {
            Some(v) => (
                esc(&v.id),
                esc(v
                    .fields
                    .get("marker")
                    .or(v.fields.get("utm_source"))
                    .or(v.fields.get("source"))
                    .map_or("", String::as_str)),
                duration((now_ms.saturating_sub(n.touched_at) / 1000) as i64),
            ),
            None => (
                format!("<i>{}</i>", esc(t.free)),
                String::new(),
                String::new(),
            ),
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{visit}</td><td>{channel}</td><td>{held}</td></tr>",
            esc(&n.pool),
            ctx.phone(&n.number),
        );
    }
    b.push_str("</tbody></table>");
    if numbers.is_empty() {
        let _ = write!(b, "<p class=\"empty\">{}</p>", esc(t.nothing));
    }
    let _ = write!(b, "<h2>{}</h2>", esc(t.exhaustions));
    if exhaustions.is_empty() {
        let _ = write!(b, "<p class=\"empty\">{}</p>", esc(t.exhaustions_none));
    } else {
        let _ = write!(
            b,
            "<table id=\"exhaustions\">{}<tbody>",
            head(&[t.at, t.pool, t.number, t.taken_from])
        );
        for e in exhaustions {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&ctx.date((e.at / 1000) as i64)),
                esc(&e.pool),
                ctx.phone(&e.number),
                esc(&e.taken_from)
            );
        }
        b.push_str("</tbody></table>");
    }
    layout(ctx, Nav::Pools, &b)
}
