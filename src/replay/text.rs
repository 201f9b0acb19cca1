//! Line-level views and edits of captured SIP messages. Captures hold
//! what phones really sent, compliant or not, so the replay reads and
//! edits them as header lines rather than through the strict parser: the
//! proxy core then judges the result as it would on the wire.

/// The header section's lines (without line ends), the first being the
/// start line; continuation lines are left out.
fn header_lines(m: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let end = find(m, b"\r\n\r\n")
        .map(|e| e + 2)
        .or_else(|| find(m, b"\n\n").map(|e| e + 1))
        .unwrap_or(m.len());
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let rest = &m[at..end];
        let len = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
        let line = &rest[..len];
        let start = at;
        at += len + 1;
        Some((start, line.strip_suffix(b"\r").unwrap_or(line)))
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn start_line(m: &[u8]) -> String {
    header_lines(m)
        .next()
        .map(|(_, l)| String::from_utf8_lossy(l).into_owned())
        .unwrap_or_default()
}

pub fn is_request(m: &[u8]) -> bool {
    !m.starts_with(b"SIP/2.0 ")
}

/// Status code of a response.
pub fn status(m: &[u8]) -> Option<u16> {
    let l = start_line(m);
    l.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// Header names with their compact forms (RFC 3261 7.3.3).
fn names(name: &str) -> &'static [&'static str] {
    match name {
        "via" => &["via", "v"],
        "call-id" => &["call-id", "i"],
        "to" => &["to", "t"],
        "from" => &["from", "f"],
        "route" => &["route"],
        "record-route" => &["record-route"],
        "cseq" => &["cseq"],
        "contact" => &["contact", "m"],
        _ => &[],
    }
}

fn line_name(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|&c| c == b':')?;
    let name = line[..colon].trim_ascii();
    (!name.is_empty() && !line.starts_with(b" ") && !line.starts_with(b"\t")).then_some(name)
}

/// Values of every line of a header (by its full lowercase name).
pub fn values<'a>(m: &'a [u8], name: &str) -> Vec<&'a [u8]> {
    let want = names(name);
    header_lines(m)
        .skip(1)
        .filter_map(|(_, l)| {
            let n = line_name(l)?;
            let hit = want.iter().any(|w| n.eq_ignore_ascii_case(w.as_bytes()));
            let colon = l.iter().position(|&c| c == b':')?;
            hit.then(|| l[colon + 1..].trim_ascii())
        })
        .collect()
}

pub fn call_id(m: &[u8]) -> Option<String> {
    values(m, "call-id")
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// (sequence number, method) of the CSeq.
pub fn cseq(m: &[u8]) -> Option<(u32, String)> {
    let v = String::from_utf8_lossy(values(m, "cseq").first()?).into_owned();
    let mut parts = v.split_ascii_whitespace();
    let n = parts.next()?.parse().ok()?;
    Some((n, parts.next()?.to_ascii_uppercase()))
}

/// The tag parameter of From.
pub fn from_tag(m: &[u8]) -> Option<String> {
    tag_of(m, "from")
}

/// The tag parameter of To.
pub fn to_tag(m: &[u8]) -> Option<String> {
    tag_of(m, "to")
}

fn tag_of(m: &[u8], header: &str) -> Option<String> {
    let v = String::from_utf8_lossy(values(m, header).first()?).into_owned();
    let at = v.to_ascii_lowercase().find(";tag=")?;
    let tag = &v[at + 5..];
    Some(tag.split([';', ' ', '>']).next().unwrap_or("").to_string())
}

pub fn has_to_tag(m: &[u8]) -> bool {
    values(m, "to").first().is_some_and(|v| {
        let v = String::from_utf8_lossy(v).to_ascii_lowercase();
        v.contains(";tag=")
    })
}

/// The whole first line of a header, line end included (for copying).
fn first_line_of(m: &[u8], name: &str) -> Option<(usize, usize)> {
    let want = names(name);
    header_lines(m).skip(1).find_map(|(start, l)| {
        let n = line_name(l)?;
        want.iter()
            .any(|w| n.eq_ignore_ascii_case(w.as_bytes()))
            .then(|| {
                let mut end = start + l.len();
                if m.get(end) == Some(&b'\r') {
                    end += 1;
                }
                if m.get(end) == Some(&b'\n') {
                    end += 1;
                }
                (start, end)
            })
    })
}

/// The top Via of a message as one `Via: ...` line with CRLF.
pub fn top_via_line(m: &[u8]) -> Option<Vec<u8>> {
    let v = values(m, "via").into_iter().next()?;
    // The first value of a comma-separated line.
    let first = split_top_level(v).into_iter().next()?;
    let mut out = b"Via: ".to_vec();
    out.extend_from_slice(first);
    out.extend_from_slice(b"\r\n");
    Some(out)
}

/// Every Via value of a message, top first: the lines in order, each
/// line's comma-separated values in order.
pub fn vias(m: &[u8]) -> Vec<&[u8]> {
    values(m, "via")
        .into_iter()
        .flat_map(split_top_level)
        .collect()
}

/// Every Record-Route value of a message, top first.
pub fn record_routes(m: &[u8]) -> Vec<&[u8]> {
    values(m, "record-route")
        .into_iter()
        .flat_map(split_top_level)
        .collect()
}

/// A message with one Record-Route value replaced wherever it stands in
/// the Record-Route lines (a proxy's entry, which the far side mirrored,
/// by the entry of the proxy that stands in for it); the rest unchanged.
pub fn with_record_route_replaced(m: &[u8], old: &[u8], new: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() + new.len());
    let mut at = 0;
    let lines: Vec<(usize, usize)> = header_lines(m)
        .skip(1)
        .filter(|(_, l)| line_name(l).is_some_and(|n| n.eq_ignore_ascii_case(b"record-route")))
        .map(|(start, l)| (start, start + l.len()))
        .collect();
    for (start, end) in lines {
        let line = &m[start..end];
        let Some(p) = find(line, old) else { continue };
        out.extend_from_slice(&m[at..start + p]);
        out.extend_from_slice(new);
        at = start + p + old.len();
    }
    out.extend_from_slice(&m[at..]);
    out
}

/// The first Record-Route value (the proxy's own, topmost).
pub fn top_record_route(m: &[u8]) -> Option<Vec<u8>> {
    let v = values(m, "record-route").into_iter().next()?;
    split_top_level(v).into_iter().next().map(<[u8]>::to_vec)
}

fn split_top_level(v: &[u8]) -> Vec<&[u8]> {
    let (mut out, mut start, mut quoted, mut angle) = (Vec::new(), 0, false, false);
    for (i, &c) in v.iter().enumerate() {
        match c {
            b'"' => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b',' if !quoted && !angle => {
                out.push(v[start..i].trim_ascii());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(v[start..].trim_ascii());
    out
}

/// A response as the next hop would send it back to the proxy: the
/// forwarded request's top Via on top of the captured ones. With
/// `replace_top` the captured top Via (an earlier run's proxy) goes.
pub fn with_top_via(m: &[u8], via_line: &[u8], replace_top: bool) -> Vec<u8> {
    let Some((start, end)) = first_line_of(m, "via") else {
        return m.to_vec();
    };
    let mut out = Vec::with_capacity(m.len() + via_line.len());
    out.extend_from_slice(&m[..start]);
    out.extend_from_slice(via_line);
    if replace_top {
        let line = &m[start..end];
        let colon = line.iter().position(|&c| c == b':').unwrap_or(0);
        let rest = split_top_level(line[colon + 1..].trim_ascii());
        // Values after the first on the same line stay.
        if rest.len() > 1 {
            out.extend_from_slice(b"Via: ");
            out.extend_from_slice(&rest[1..].join(&b", "[..]));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(&m[end..]);
    } else {
        out.extend_from_slice(&m[start..]);
    }
    out
}

/// A request's Request-URI.
pub fn request_uri(m: &[u8]) -> Option<&[u8]> {
    let (_, first) = header_lines(m).next()?;
    first.split(|&c| c == b' ').nth(1)
}

/// The request with its Request-URI replaced by `uri`.
pub fn with_request_uri(m: &[u8], uri: &[u8]) -> Vec<u8> {
    let Some(old) = request_uri(m) else {
        return m.to_vec();
    };
    // The URI is a slice of `m`'s start line: its offset is its place.
    let at = old.as_ptr() as usize - m.as_ptr() as usize;
    let mut out = Vec::with_capacity(m.len() + uri.len());
    out.extend_from_slice(&m[..at]);
    out.extend_from_slice(uri);
    out.extend_from_slice(&m[at + old.len()..]);
    out
}

/// The URI of the first Contact (inside `<>`, or up to its parameters).
pub fn contact_uri(m: &[u8]) -> Option<Vec<u8>> {
    let v = *values(m, "contact").first()?;
    let v = v.trim_ascii();
    let uri = match v.iter().position(|&c| c == b'<') {
        Some(open) => {
            let rest = &v[open + 1..];
            &rest[..rest.iter().position(|&c| c == b'>')?]
        }
        None => v.split(|&c| c == b';').next().unwrap_or(v),
    };
    (!uri.is_empty()).then(|| uri.trim_ascii().to_vec())
}

/// An in-dialog request as it would come through the proxy: its Route
/// lines replaced by one naming the proxy (its Record-Route value).
pub fn with_route(m: &[u8], route: &[u8]) -> Vec<u8> {
    let hdr_end = find(m, b"\r\n\r\n")
        .map(|e| e + 2)
        .or_else(|| find(m, b"\n\n").map(|e| e + 1))
        .unwrap_or(m.len());
    let mut lines = header_lines(m);
    let Some((_, first)) = lines.next() else {
        return m.to_vec();
    };
    let mut out = Vec::with_capacity(m.len() + route.len() + 9);
    out.extend_from_slice(first);
    out.extend_from_slice(b"\r\nRoute: ");
    out.extend_from_slice(route);
    out.extend_from_slice(b"\r\n");
    for (start, l) in lines {
        let end = m[start..hdr_end]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(hdr_end, |p| start + p + 1);
        let is_route = line_name(l).is_some_and(|n| n.eq_ignore_ascii_case(b"route"));
        if !is_route {
            out.extend_from_slice(&m[start..end]);
        }
    }
    out.extend_from_slice(&m[hdr_end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &[u8] = b"INVITE sip:bob@b SIP/2.0\r\nv: SIP/2.0/UDP a:5060;branch=z9hG4bK1, SIP/2.0/UDP c;branch=z9hG4bK2\r\nRoute: <sip:old-proxy;lr>\r\ni: abc@a\r\nCSeq: 7 invite\r\nt: <sip:bob@b>;tag=x\r\nContent-Length: 2\r\n\r\nhi";

    #[test]
    fn reads_headers_in_both_forms() {
        assert_eq!(call_id(INV).as_deref(), Some("abc@a"));
        assert_eq!(cseq(INV), Some((7, "INVITE".into())));
        assert!(has_to_tag(INV) && is_request(INV));
        assert_eq!(
            top_via_line(INV).as_deref(),
            Some(&b"Via: SIP/2.0/UDP a:5060;branch=z9hG4bK1\r\n"[..])
        );
        assert_eq!(
            vias(INV),
            vec![
                &b"SIP/2.0/UDP a:5060;branch=z9hG4bK1"[..],
                b"SIP/2.0/UDP c;branch=z9hG4bK2"
            ]
        );
        assert_eq!(status(b"SIP/2.0 486 Busy Here\r\n\r\n"), Some(486));
        assert_eq!(
            from_tag(b"BYE x SIP/2.0\r\nf: <sip:a@b>;TAG=t1;x=y\r\n\r\n").as_deref(),
            Some("t1")
        );
    }

    #[test]
    fn vias_are_added_or_replaced_and_routes_set() {
        let added = with_top_via(INV, b"Via: SIP/2.0/UDP p;branch=z9hG4bKp\r\n", false);
        assert_eq!(
            values(&added, "via"),
            vec![
                &b"SIP/2.0/UDP p;branch=z9hG4bKp"[..],
                b"SIP/2.0/UDP a:5060;branch=z9hG4bK1, SIP/2.0/UDP c;branch=z9hG4bK2"
            ]
        );
        let replaced = with_top_via(INV, b"Via: SIP/2.0/UDP p;branch=z9hG4bKp\r\n", true);
        assert_eq!(
            values(&replaced, "via"),
            vec![
                &b"SIP/2.0/UDP p;branch=z9hG4bKp"[..],
                b"SIP/2.0/UDP c;branch=z9hG4bK2"
            ]
        );
        assert!(replaced.ends_with(b"\r\n\r\nhi"));
        let rr = b"SIP/2.0 200 OK\r\nRecord-Route: <sip:p2;lr>, <sip:kam;lr;ftag=1>\r\nRecord-Route: <sip:a;lr>\r\nContact: <sip:kam;lr;ftag=1>\r\n\r\n";
        assert_eq!(
            record_routes(rr),
            vec![&b"<sip:p2;lr>"[..], b"<sip:kam;lr;ftag=1>", b"<sip:a;lr>"]
        );
        let swapped = with_record_route_replaced(rr, b"<sip:kam;lr;ftag=1>", b"<sip:st@s;lr>");
        assert_eq!(
            record_routes(&swapped),
            vec![&b"<sip:p2;lr>"[..], b"<sip:st@s;lr>", b"<sip:a;lr>"]
        );
        assert!(swapped.ends_with(b"Contact: <sip:kam;lr;ftag=1>\r\n\r\n"));
        assert_eq!(with_record_route_replaced(rr, b"<sip:x>", b"<sip:y>"), rr);
        let routed = with_route(INV, b"<sip:proxy;lr>");
        assert_eq!(values(&routed, "route"), vec![&b"<sip:proxy;lr>"[..]]);
        assert!(routed.starts_with(b"INVITE sip:bob@b SIP/2.0\r\nRoute: <sip:proxy;lr>\r\n"));
        assert!(
            routed.ends_with(b"Content-Length: 2\r\n\r\nhi"),
            "{}",
            String::from_utf8_lossy(&routed)
        );
        assert_eq!(call_id(&routed).as_deref(), Some("abc@a"));
    }
}
