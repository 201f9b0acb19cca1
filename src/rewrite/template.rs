//! Header value templates of SPEC T-3: `"{city}"`, `"site {domain}"`.
//! Parsed once at config load, so an unknown placeholder is a config error
//! and rendering on the call path is a plain concatenation.

use super::CallContext;
use crate::tracking::VISIT_FIELDS;

/// The placeholders a template may name (SPEC T-3): the visit's id and
/// fields, the caller and the number dialed.
pub const PLACEHOLDERS: [&str; VISIT_FIELDS.len() + 3] = {
    let mut out = [""; VISIT_FIELDS.len() + 3];
    out[0] = "visit_id";
    let mut i = 0;
    while i < VISIT_FIELDS.len() {
        out[i + 1] = VISIT_FIELDS[i];
        i += 1;
    }
    out[VISIT_FIELDS.len() + 1] = "caller";
    out[VISIT_FIELDS.len() + 2] = "dialed";
    out
};

/// A placeholder resolved at config load, so that rendering reads the
/// call context's field directly instead of matching its name per call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placeholder {
    Dialed,
    Caller,
    VisitId,
    Marker,
    Source,
    /// Another visit field (city, domain, page, utm_*), by its name.
    Visit(&'static str),
}

impl Placeholder {
    /// The placeholder named `name` (one of [`PLACEHOLDERS`]).
    fn of(name: &'static str) -> Placeholder {
        match name {
            "dialed" => Placeholder::Dialed,
            "caller" => Placeholder::Caller,
            "visit_id" => Placeholder::VisitId,
            "marker" => Placeholder::Marker,
            "source" => Placeholder::Source,
            other => Placeholder::Visit(other),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Placeholder),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("\"{s}\": '{{' without '}}'"))?;
            let name = after[..close].trim();
            let field = PLACEHOLDERS.iter().find(|p| **p == name).ok_or_else(|| {
                format!(
                    "unknown placeholder {{{name}}} (known: {})",
                    PLACEHOLDERS
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            })?;
            pieces.push(Piece::Field(Placeholder::of(field)));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("\"{s}\": '}}' without '{{'"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template(pieces))
    }

    /// The value for this call, made safe for a header line. Empty when
    /// every placeholder is empty: literal text alone ("city: ") does not
    /// make a header worth sending.
    pub fn render(&self, ctx: &CallContext) -> String {
        let mut out = Vec::new();
        self.render_into(ctx, &mut out);
        // Only whole UTF-8 strings and ASCII spaces were written.
        String::from_utf8(out).unwrap_or_default()
    }

    /// [`Template::render`] appended to `out` (the INVITE path writes
    /// straight into the message edit); false, with nothing written, when
    /// the value is empty.
    pub fn render_into(&self, ctx: &CallContext, out: &mut Vec<u8>) -> bool {
        // One pass: written as it goes, taken back when the template has
        // placeholders and every one of them was empty.
        let start = out.len();
        let (mut any_field, mut any_value) = (false, false);
        let mut folding = HeaderSafe::default();
        for p in &self.0 {
            let text = match p {
                Piece::Text(t) => t.as_str(),
                Piece::Field(f) => {
                    let v = ctx.placeholder(*f);
                    any_field = true;
                    any_value |= !v.is_empty();
                    v
                }
            };
            folding.push(text, start, out);
        }
        if any_field && !any_value {
            out.truncate(start);
        }
        out.len() > start
    }
}

/// A value that cannot end its header line or start another: control
/// characters (CR, LF, NUL, …) become spaces, runs of white space fold to
/// one, and the ends are trimmed. UTF-8 stays (TEXT-UTF8, RFC 3261 25.1).
pub fn header_safe(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    header_safe_into(s, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// [`header_safe`] appended to `out`; false when nothing was written.
pub fn header_safe_into(s: &str, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    HeaderSafe::default().push(s, start, out);
    out.len() > start
}

/// The folding of [`header_safe`] over pieces written one after another.
#[derive(Default)]
struct HeaderSafe {
    space: bool,
}

impl HeaderSafe {
    /// Plain printable ASCII (the usual visit field) is copied as it is,
    /// inline in the callers; anything else is folded out of line.
    #[inline]
    fn push(&mut self, s: &str, start: usize, out: &mut Vec<u8>) {
        if !all_graphic(s.as_bytes()) {
            self.fold(s, start, out);
        } else if !s.is_empty() {
            if self.space && out.len() > start {
                out.push(b' ');
            }
            self.space = false;
            out.extend_from_slice(s.as_bytes());
        }
    }

    #[inline(never)]
    fn fold(&mut self, s: &str, start: usize, out: &mut Vec<u8>) {
        let mut buf = [0u8; 4];
        for c in s.chars() {
            if c.is_control() || c.is_whitespace() {
                self.space = true;
                continue;
            }
            if self.space && out.len() > start {
                out.push(b' ');
            }
            self.space = false;
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
}

/// Whether every byte is printable ASCII other than space (`!`..=`~`),
/// eight bytes at a time: the check ran byte by byte over every value of
/// every tracking header of every INVITE (issue 15).
fn all_graphic(b: &[u8]) -> bool {
    if b.len() < 8 {
        return b.iter().all(u8::is_ascii_graphic);
    }
    let mut words = b.chunks_exact(8);
    let ok = words.all(|w| graphic_word(word(w)));
    // The last eight bytes again (overlapping the last whole word): a
    // tail shorter than a word needs no byte loop.
    ok && graphic_word(word(&b[b.len() - 8..]))
}

fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    u64::from_le_bytes(w)
}

/// Eight bytes all in `!`..=`~`.
fn graphic_word(w: u64) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // With no high bit set (ASCII), a byte below n (n ≤ 128) is the only
    // way for `(w - n·LO) & !w` to set a high bit (bithacks' `hasless`);
    // DEL (0x7f) is the zero byte of `w ^ 0x7f·LO`.
    let del = w ^ (0x7f * LO);
    w & HI == 0 && w.wrapping_sub(0x21 * LO) & !w & HI == 0 && del.wrapping_sub(LO) & !del & HI == 0
}

/// A header name as configured: an RFC 3261 token, so it cannot smuggle
/// a colon, white space or a line break.
pub fn check_header_name(name: &str) -> Result<(), String> {
    if !name.is_empty() && crate::sip::uri::is_token_str(name.as_bytes()) {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" is not a header name (letters, digits and -.!%*_+`'~ only)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time check against the byte loop it replaced: every
    /// byte value at every position of strings of 1 to 20 bytes.
    #[test]
    fn all_graphic_matches_the_byte_loop() {
        for len in 0..=20usize {
            for pos in 0..len.max(1) {
                for b in 0..=255u8 {
                    let mut v = vec![b'a'; len];
                    if len > 0 {
                        v[pos] = b;
                    }
                    assert_eq!(all_graphic(&v), v.iter().all(u8::is_ascii_graphic), "{v:?}");
                }
            }
        }
        // Borrows across bytes: a low byte next to the bounds.
        for v in [
            &b"!!!!!!!!\x20"[..],
            b"~~~~~~~~~\x7f",
            b"\x21\x20\x21\x21\x21\x21\x21\x21",
            b"\x00\x21\x21\x21\x21\x21\x21\x21\x21",
            b"\x80\x7e\x7e\x7e\x7e\x7e\x7e\x7e",
        ] {
            assert_eq!(all_graphic(v), v.iter().all(u8::is_ascii_graphic), "{v:?}");
        }
    }
}
