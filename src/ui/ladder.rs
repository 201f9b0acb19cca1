//! `/ui/ladder?call=…`: one call's SIP messages as a ladder diagram (one
//! column per peer, siptrack in the second, an arrow per message, as
//! sngrep draws it), then each message in full. Message text came from
//! the network: escaped, like everything else.

use std::fmt::Write as _;

use super::{esc, layout, Ctx, Nav};
use crate::sip_trace::{CallTrace, Direction};

const COL: i64 = 260;
const ROW: i64 = 30;
const LEFT: i64 = 90;

fn first_line(data: &[u8]) -> String {
    let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    let (head, _) = text.rsplit_once(" SIP/2.0").unwrap_or((text, ""));
    // `INVITE sip:…` is shown as its method; a response as it is.
    if text.starts_with("SIP/2.0 ") {
        text.trim_start_matches("SIP/2.0 ")
            .chars()
            .take(40)
            .collect()
    } else {
        head.split(' ')
            .next()
            .unwrap_or(head)
            .chars()
            .take(40)
            .collect()
    }
}

/// The ladder: columns are the peers in order of first appearance, with
/// siptrack after the first.
pub fn svg(trace: &CallTrace) -> String {
    let mut cols: Vec<&str> = Vec::new();
    for m in &trace.messages {
        if !cols.contains(&m.peer.as_str()) {
            cols.push(&m.peer);
        }
    }
    let me = "siptrack";
    cols.insert(cols.len().min(1), me);
    let x = |name: &str| {
        LEFT + cols.iter().position(|c| *c == name).unwrap_or(0) as i64 * COL + COL / 2
    };
    let width = LEFT + cols.len() as i64 * COL;
    let height = 50 + trace.messages.len() as i64 * ROW;
    let start = trace.messages.first().map_or(0, |m| m.at);
    let mut s = format!(
        "<svg class=\"ladder\" id=\"ladder\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\">\
         <path d=\"M 0 0 L 10 5 L 0 10 z\"/></marker></defs>"
    );
    for c in &cols {
        let cx = x(c);
        let _ = write!(
            s,
            "<text class=\"peer\" x=\"{cx}\" y=\"16\" font-size=\"12\" text-anchor=\"middle\">{}</text>\
             <line x1=\"{cx}\" y1=\"24\" x2=\"{cx}\" y2=\"{height}\" stroke=\"#90a4ae\"/>",
            esc(c)
        );
    }
    for (i, m) in trace.messages.iter().enumerate() {
        let y = 50 + i as i64 * ROW;
        let (from, to) = match m.dir {
            Direction::In => (x(&m.peer), x(me)),
            Direction::Out => (x(me), x(&m.peer)),
        };
        let label = first_line(&m.data);
        let colour = if label.starts_with(|c: char| c.is_ascii_digit()) {
            "#2e7d32"
        } else {
            "#1565c0"
        };
        let _ = write!(
            s,
            "<text x=\"4\" y=\"{y}\" font-size=\"11\">+{:.3} s</text>\
             <line x1=\"{from}\" y1=\"{y}\" x2=\"{to}\" y2=\"{y}\" stroke=\"{colour}\" marker-end=\"url(#arrow)\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\"><a href=\"#msg-{i}\">{}</a></text>",
            (m.at.saturating_sub(start)) as f64 / 1000.0,
            (from + to) / 2,
            y - 4,
            esc(&label)
        );
    }
    s.push_str("</svg>");
    s
}

/// `trace`: the call's messages if kept; `enabled`: ui.sip_trace_minutes > 0.
pub fn page(ctx: &Ctx, call_id: &str, trace: Option<&CallTrace>, enabled: bool) -> String {
    let t = ctx.t;
    let mut b = format!(
        "<p class=\"call-id\">Call-ID: <code>{}</code></p>",
        esc(call_id)
    );
    match trace {
        None if !enabled => {
            let _ = write!(b, "<p class=\"empty\">{}</p>", esc(t.ladder_off));
        }
        None => {
            let _ = write!(b, "<p class=\"empty\">{}</p>", esc(t.ladder_none));
        }
        Some(trace) => {
            b.push_str(&svg(trace));
            if trace.dropped > 0 {
                let _ = write!(
                    b,
                    "<p class=\"err\">{}: {}</p>",
                    esc(t.ladder_dropped),
                    trace.dropped
                );
            }
            for (i, m) in trace.messages.iter().enumerate() {
                let _ = write!(
                    b,
                    "<details id=\"msg-{i}\"><summary>{} {} — {}</summary><pre>{}</pre></details>",
                    esc(&ctx.date((m.at / 1000) as i64)),
                    esc(&hop(m.dir, &m.peer)),
                    esc(&first_line(&m.data)),
                    esc(&String::from_utf8_lossy(&m.data))
                );
            }
        }
    }
    layout(ctx, Nav::Calls, &b)
}

/// Who sent a message to whom: `udp 127.0.0.1:5061 → siptrack` for one
/// received, `siptrack → udp 127.0.0.1:5070` for one sent (the peer was
/// printed first either way, so a sent INVITE read as the PBX's).
fn hop(dir: Direction, peer: &str) -> String {
    match dir {
        Direction::In => format!("{peer} → siptrack"),
        Direction::Out => format!("siptrack → {peer}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_names_its_sender_first() {
        for (dir, want) in [
            (Direction::In, "udp 127.0.0.1:5061 → siptrack"),
            (Direction::Out, "siptrack → udp 127.0.0.1:5061"),
        ] {
            assert_eq!(hop(dir, "udp 127.0.0.1:5061"), want);
        }
    }
    use crate::sip_trace::{SipTraces, Traced};
    use bytes::Bytes;

    #[test]
    fn a_ladder_draws_each_message_between_its_peer_and_siptrack() {
        let mut traces = SipTraces::new(60_000, 1 << 20);
        let caller = "udp 127.0.0.1:5061";
        let pbx = "udp 127.0.0.1:5070";
        for (at, dir, peer, text) in [
            (
                0,
                Direction::In,
                caller,
                "INVITE sip:1@x SIP/2.0\r\nFrom: \"<script>\" <sip:a@b>\r\n\r\n",
            ),
            (5, Direction::Out, pbx, "INVITE sip:1@pbx SIP/2.0\r\n\r\n"),
            (90, Direction::In, pbx, "SIP/2.0 200 OK\r\n\r\n"),
            (95, Direction::Out, caller, "SIP/2.0 200 OK\r\n\r\n"),
        ] {
            traces.record(
                b"c1",
                Traced {
                    at,
                    dir,
                    peer: peer.into(),
                    from_ip: None,
                    data: Bytes::from(text),
                },
            );
        }
        let trace = traces.call(b"c1").expect("kept");
        let s = svg(trace);
        assert_eq!(s.matches("marker-end").count(), 4);
        // Columns: the caller, siptrack, the PBX.
        let pos = |n: &str| s.find(&format!(">{n}</text>")).expect(n);
        assert!(pos(caller) < pos("siptrack") && pos("siptrack") < pos(pbx));
        assert!(s.contains(">INVITE</a>") && s.contains(">200 OK</a>"));
        assert!(s.contains("+0.095 s"));
        let ctx = Ctx {
            t: &crate::ui::texts::EN,
            tz: chrono::FixedOffset::east_opt(0).expect("tz"),
            phone_format: "",
            phone_rules: &crate::phone::PhoneRules::default(),
            csrf: "c",
            user: "u",
        };
        let p = page(&ctx, "c1<x>", Some(trace), true);
        assert!(p.contains("From: &quot;&lt;script&gt;&quot;") && !p.contains("<script>"));
        assert!(p.contains("c1&lt;x&gt;"));
        assert!(page(&ctx, "c", None, false).contains(crate::ui::texts::EN.ladder_off));
    }
}
