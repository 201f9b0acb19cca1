//! In-place edits: a list of span replacements applied in one pass, so the
//! bytes around them are copied exactly as received.

use super::message::Span;

#[derive(Clone, Copy, Debug)]
struct Edit {
    at: Span,
    repl: (u32, u32),
    /// Where the edit goes in the output: its start, then insertions
    /// before a replacement at the same place, then the order given. One
    /// u64 worked out once: the sort compared a tuple of three (about
    /// 500 instructions of a forwarded INVITE, issue 15).
    order: u64,
}

/// A set of non-overlapping replacements over one message buffer.
#[derive(Clone, Debug, Default)]
pub struct Patch {
    edits: Vec<Edit>,
    arena: Vec<u8>,
}

impl Patch {
    pub fn new() -> Patch {
        Patch {
            edits: Vec::with_capacity(8),
            arena: Vec::with_capacity(256),
        }
    }

    /// Replaces `span` with `bytes`.
    pub fn replace(&mut self, span: Span, bytes: &[u8]) {
        let a = self.arena.len();
        self.arena.extend_from_slice(bytes);
        self.push(span, a);
    }

    /// Replaces `span` with what `fill` writes.
    pub fn replace_with(&mut self, span: Span, fill: impl FnOnce(&mut Vec<u8>)) {
        let a = self.arena.len();
        fill(&mut self.arena);
        self.push(span, a);
    }

    /// Replaces `span` with what `fill` writes if it says so (true);
    /// false leaves no edit and nothing of what it wrote. Lets a rule
    /// write its value straight into the edit and decide as it goes.
    pub fn replace_if(&mut self, span: Span, fill: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        let a = self.arena.len();
        if fill(&mut self.arena) {
            self.push(span, a);
            true
        } else {
            self.arena.truncate(a);
            false
        }
    }

    /// Inserts `bytes` before position `pos`. Insertions at the same position
    /// keep the order they were made in.
    pub fn insert(&mut self, pos: u32, bytes: &[u8]) {
        self.replace(
            Span {
                start: pos,
                end: pos,
            },
            bytes,
        );
    }

    pub fn insert_with(&mut self, pos: u32, fill: impl FnOnce(&mut Vec<u8>)) {
        self.replace_with(
            Span {
                start: pos,
                end: pos,
            },
            fill,
        );
    }

    pub fn delete(&mut self, span: Span) {
        self.replace(span, b"");
    }

    fn push(&mut self, at: Span, arena_start: usize) {
        let seq = self.edits.len() as u64;
        let replaces = u64::from(at.end != at.start);
        self.edits.push(Edit {
            at,
            repl: (arena_start as u32, self.arena.len() as u32),
            order: u64::from(at.start) << 33 | replaces << 32 | seq,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// Forgets every edit but keeps the room they took: the core reuses
    /// one patch for every request instead of allocating two buffers each.
    pub fn clear(&mut self) {
        self.edits.clear();
        self.arena.clear();
    }

    /// At most how many bytes [`Patch::apply`] writes for `src[..end]`:
    /// what the edits insert is never more than the arena holds.
    pub fn max_len(&self, end: usize) -> usize {
        end + self.arena.len()
    }

    /// The edited copy of `src[..end]`.
    pub fn apply(&mut self, src: &[u8], end: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.max_len(end));
        self.apply_into(src, end, &mut out);
        out
    }

    /// [`Patch::apply`] appended to `out`: the core writes the forwarded
    /// request and its 100 Trying into one buffer.
    pub fn apply_into(&mut self, src: &[u8], end: usize, out: &mut Vec<u8>) {
        self.edits.sort_unstable_by_key(|e| e.order);
        out.reserve(self.max_len(end));
        let mut pos = 0usize;
        for e in &self.edits {
            let (s, t) = (e.at.start as usize, e.at.end as usize);
            // Overlapping edits are a programming error; skip rather than
            // panic on traffic.
            if s < pos || t > end {
                debug_assert!(false, "overlapping or out-of-range edit");
                continue;
            }
            out.extend_from_slice(&src[pos..s]);
            out.extend_from_slice(&self.arena[e.repl.0 as usize..e.repl.1 as usize]);
            pos = t;
        }
        out.extend_from_slice(&src[pos..end]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cleared patch is a new one, and `apply_into` appends what
    /// `apply` returns.
    #[test]
    fn cleared_and_appended() {
        let src = b"INVITE sip:a@b SIP/2.0\r\nMax-Forwards: 70\r\n\r\n";
        let edit = |p: &mut Patch| {
            p.replace(span(38, 40), b"69");
            p.insert(24, b"Via: x\r\n");
            p.delete(span(7, 9));
        };
        let mut fresh = Patch::new();
        edit(&mut fresh);
        let expected = fresh.apply(src, src.len());
        let mut reused = Patch::default();
        reused.insert(3, b"junk");
        reused.replace(span(0, 2), b"zz");
        reused.clear();
        assert!(reused.is_empty());
        edit(&mut reused);
        let mut out = b"prefix".to_vec();
        reused.apply_into(src, src.len(), &mut out);
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(&out[6..], &expected[..]);
        assert!(expected.len() <= reused.max_len(src.len()));
    }

    fn span(start: u32, end: u32) -> Span {
        Span { start, end }
    }

    /// A conditional replacement is an ordinary one when taken, and no
    /// trace at all (no edit, no bytes in the arena) when not.
    #[test]
    fn conditional_replacements() {
        let src = b"From: 8-916@x\r\n";
        for (take, expected) in [
            (true, &b"From: 7916@x\r\n"[..]),
            (false, &b"From: 8-916@x\r\n"[..]),
        ] {
            let mut p = Patch::new();
            let done = p.replace_if(span(6, 11), |o| {
                o.extend_from_slice(b"7916");
                take
            });
            assert_eq!(done, take);
            assert_eq!(p.is_empty(), !take);
            p.insert(0, b"");
            assert_eq!(p.apply(src, src.len()), expected);
            let mut q = Patch::new();
            q.replace(span(6, 11), b"7916");
            assert_eq!(
                p.arena.len(),
                if take { q.arena.len() } else { 0 },
                "what was not taken is gone"
            );
        }
    }
}
