//! `/ui/`: calls per hour by status and leads per channel for the last
//! 24 hours or 7 days, drawn here as SVG (no chart library), and the SIP
//! health figures of `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{esc, layout, Ctx, Nav};

/// The ranges the page offers: (query value, hours).
pub const RANGES: &[(&str, i64)] = &[("24h", 24), ("7d", 168)];

/// Bar colours by call status; others are grey.
fn colour(status: &str) -> &'static str {
    match status {
        "answered" => "#2e7d32",
        "busy" => "#f9a825",
        "missed" => "#ef6c00",
        "cancelled" => "#6d4c41",
        "failed" => "#c62828",
        _ => "#757575",
    }
}

const W: i64 = 720;
const H: i64 = 160;

/// Stacked bars, one an hour from `from_ms` for `hours`; `counts` are
/// (hour start in ms, status, calls). Under the bars, the hours (every
/// 3 h over a day, each day over a week) in `crm.timezone`; each bar's
/// tooltip names its hour; a legend names the statuses seen, in the
/// console's language.
pub fn calls_chart(ctx: &Ctx, counts: &[(i64, String, i64)], from_ms: i64, hours: i64) -> String {
    let t = ctx.t;
    let hours = hours.max(1);
    let mut per_hour: BTreeMap<i64, Vec<(&str, i64)>> = BTreeMap::new();
    let mut statuses: Vec<&str> = Vec::new();
    for (h, st, n) in counts {
        let slot = (h - from_ms).div_euclid(3_600_000);
        if (0..hours).contains(&slot) {
            per_hour.entry(slot).or_default().push((st, *n));
            if !statuses.contains(&st.as_str()) {
                statuses.push(st);
            }
        }
    }
    let max = per_hour
        .values()
        .map(|v| v.iter().map(|(_, n)| n).sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let bar = (W / hours).max(1);
    // Bars, then a row of hour labels, then the legend.
    let (ticks_y, legend_y) = (H + 14, H + 26);
    let mut svg = format!(
        "<svg class=\"chart\" id=\"calls-chart\" viewBox=\"0 0 {W} {}\" width=\"{W}\" height=\"{}\" role=\"img\">\
         <text x=\"0\" y=\"12\" font-size=\"11\">{} {max}</text>",
        legend_y + 12,
        legend_y + 12,
        esc(ctx.t.chart_max)
    );
    if per_hour.is_empty() {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"13\" text-anchor=\"middle\">{}</text>",
            W / 2,
            H / 2,
            esc(t.nothing)
        );
    }
    // The hour a slot starts, as the page shows times.
    let hour_of = |slot: i64| ctx.date((from_ms + slot * 3_600_000).div_euclid(1000));
    for (slot, parts) in &per_hour {
        let mut y = H;
        let when = hour_of(*slot);
        for (st, n) in parts {
            let h = (n * (H - 16) / max).max(1);
            y -= h;
            let _ = write!(
                svg,
                "<rect x=\"{}\" y=\"{y}\" width=\"{}\" height=\"{h}\" fill=\"{}\"><title>{} {} {}</title></rect>",
                slot * bar,
                (bar - 1).max(1),
                colour(st),
                esc(when.get(..16).unwrap_or(&when)),
                esc(&t.word(st)),
                n
            );
        }
    }
    let every = if hours > 48 { 24 } else { 3 };
    for slot in (0..hours).filter(|s| s % every == 0) {
        let when = hour_of(slot);
        // "HH:MM" within a day, "MM-DD" over a week.
        let label = if every == 24 {
            when.get(5..10)
        } else {
            when.get(11..16)
        };
        let _ = write!(
            svg,
            "<text class=\"tick\" x=\"{}\" y=\"{ticks_y}\" font-size=\"10\">{}</text>",
            slot * bar,
            esc(label.unwrap_or(""))
        );
    }
    let mut x = 0;
    for st in statuses {
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>",
            legend_y,
            colour(st),
            x + 14,
            legend_y + 9,
            esc(&t.word(st))
        );
        x += 110;
    }
    svg.push_str("</svg>");
    svg
}

/// Horizontal bars, one a channel (an empty channel is shown as `—`).
pub fn channels_chart(counts: &[(String, i64)]) -> String {
    let max = counts.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let row = 18;
    let height = (counts.len() as i64 * row).max(row);
    let mut svg = format!(
        "<svg class=\"chart\" id=\"channels-chart\" viewBox=\"0 0 {W} {height}\" width=\"{W}\" height=\"{height}\" role=\"img\">"
    );
    for (i, (channel, n)) in counts.iter().enumerate() {
        let y = i as i64 * row;
        let w = (n * (W - 260) / max).max(1);
        let name = if channel.is_empty() { "—" } else { channel };
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text><rect x=\"200\" y=\"{}\" width=\"{w}\" height=\"{}\" fill=\"#1565c0\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"12\">{n}</text>",
            y + 13,
            esc(name),
            y + 2,
            row - 4,
            200 + w + 4,
            y + 13
        );
    }
    svg.push_str("</svg>");
    svg
}

pub struct Overview<'a> {
    /// `24h` or `7d`.
    pub range: &'a str,
    pub hours: i64,
    pub from_ms: i64,
    pub calls: &'a [(i64, String, i64)],
    pub channels: &'a [(String, i64)],
    /// (figure, value) from the SIP thread's counters.
    pub sip: &'a [(String, String)],
}

pub fn page(ctx: &Ctx, o: &Overview) -> String {
    let t = ctx.t;
    let mut b = String::from("<p class=\"ranges\">");
    for (value, label) in [("24h", t.last_24h), ("7d", t.last_7d)] {
        let class = if value == o.range {
            " class=\"on\""
        } else {
            ""
        };
        let _ = write!(
            b,
            "<a href=\"/ui/?range={value}\"{class}>{}</a> ",
            esc(label)
        );
    }
    b.push_str("</p>");
    let _ = write!(
        b,
        "<h2>{}</h2>{}<h2>{}</h2>{}<h2>{}</h2><table id=\"sip\"><tbody>",
        esc(t.calls_per_hour),
        calls_chart(ctx, o.calls, o.from_ms, o.hours),
        esc(t.leads_per_channel),
        channels_chart(o.channels),
        esc(t.sip_health)
    );
    for (k, v) in o.sip {
        let _ = write!(
            b,
            "<tr><th>{}</th><td>{}</td></tr>",
            esc(t.counter(k)),
            esc(v)
        );
    }
    b.push_str("</tbody></table>");
    layout(ctx, Nav::Overview, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every counter the overview lists has a label in both languages.
    #[test]
    fn every_sip_counter_is_named_in_both_languages() {
        let names = crate::proxy::Stats::default()
            .fields()
            .map(|(k, _)| k)
            .into_iter()
            .chain(["dialogs", "transactions"]);
        for name in names {
            for t in [&crate::ui::texts::EN, &crate::ui::texts::RU] {
                assert_ne!(t.counter(name), name, "{} has no label for {name}", t.lang);
            }
        }
        let ctx = crate::ui::test_ctx(&crate::ui::texts::RU, 3, "");
        let p = page(
            &ctx,
            &Overview {
                range: "24h",
                hours: 24,
                from_ms: 0,
                calls: &[],
                channels: &[],
                sip: &[("absorbed_retransmissions".into(), "7".into())],
            },
        );
        assert!(
            p.contains("<tr><th>поглощено повторов</th><td>7</td></tr>"),
            "{p}"
        );
    }

    #[test]
    fn charts_draw_what_is_in_range_and_escape_names() {
        let ctx = crate::ui::test_ctx(&crate::ui::texts::RU, 3, "");
        let h = 3_600_000;
        let svg = calls_chart(
            &ctx,
            &[
                (0, "answered".into(), 4),
                (0, "busy".into(), 2),
                (h, "answered".into(), 1),
                // Outside the range: not drawn.
                (-h, "failed".into(), 9),
                (24 * h, "failed".into(), 9),
            ],
            0,
            24,
        );
        assert_eq!(
            svg.matches("<rect x=").count(),
            3 + 2,
            "3 bars, 2 legend boxes"
        );
        assert!(svg.contains("макс. 6"), "{svg}");
        assert!(!svg.contains("failed") && !svg.contains("не состоялся"));
        // The tooltip names the hour (UTC+3) and the status in Russian.
        assert!(
            svg.contains("<title>1970-01-01 03:00 занято 2</title>"),
            "{svg}"
        );
        // Hour labels every 3 hours, in the zone: 03:00, 06:00 … 8 of them.
        assert_eq!(svg.matches("class=\"tick\"").count(), 8, "{svg}");
        assert!(svg.contains(">03:00</text>") && svg.contains(">00:00</text>"));
        // A week: one label a day.
        let week = calls_chart(&ctx, &[], 0, 168);
        assert_eq!(week.matches("class=\"tick\"").count(), 7);
        assert!(week.contains(">01-01</text>"), "{week}");
        // No calls: said so, not a blank box.
        assert!(week.contains(&esc(crate::ui::texts::RU.nothing)), "{week}");
        let c = channels_chart(&[("<b>x</b>".into(), 3), (String::new(), 1)]);
        assert!(c.contains("&lt;b&gt;x&lt;/b&gt;") && !c.contains("<b>"));
        assert!(c.contains(">—<"));
        assert!(channels_chart(&[]).starts_with("<svg"));
    }
}
