//! `Range: bytes=…` (RFC 9110 14.2) for recordings, as a pure function:
//! one range, the forms `a-b`, `a-` and `-n`. Several ranges would need a
//! multipart answer, which players do not ask for: the whole file is
//! served instead (RFC 9110 allows ignoring Range).

/// What to answer for a file of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ranged {
    /// 200 with the whole file (no Range, or one siptrack ignores).
    Whole,
    /// 206 with bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Reads a Range header value (None: no header) against a file length.
pub fn parse(header: Option<&str>, len: u64) -> Ranged {
    let Some(h) = header else {
        return Ranged::Whole;
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        // Another unit: ignored, as RFC 9110 says.
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ranged::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // "-n": the last n bytes.
        (true, false) => match number(last) {
            None => Ranged::Whole,
            Some(0) => Ranged::Unsatisfiable,
            Some(_) if len == 0 => Ranged::Unsatisfiable,
            Some(n) => Ranged::Part {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        },
        // "a-": from a to the end.
        (false, true) => match number(first) {
            None => Ranged::Whole,
            Some(a) if a >= len => Ranged::Unsatisfiable,
            Some(a) => Ranged::Part {
                start: a,
                end: len - 1,
            },
        },
        (false, false) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= len {
                    Ranged::Unsatisfiable
                } else {
                    Ranged::Part {
                        start: a,
                        end: b.min(len - 1),
                    }
                }
            }
            // "b < a" or not numbers: an invalid range is ignored.
            _ => Ranged::Whole,
        },
        (true, true) => Ranged::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ranged::{Part, Unsatisfiable, Whole};

    #[test]
    fn ranges() {
        let len = 1000;
        for (header, want) in [
            (None, Whole),
            (
                Some("bytes=100-199"),
                Part {
                    start: 100,
                    end: 199,
                },
            ),
            (Some("bytes=0-0"), Part { start: 0, end: 0 }),
            (
                Some("bytes=900-"),
                Part {
                    start: 900,
                    end: 999,
                },
            ),
            (
                Some("bytes=990-5000"),
                Part {
                    start: 990,
                    end: 999,
                },
            ),
            (
                Some("bytes=-100"),
                Part {
                    start: 900,
                    end: 999,
                },
            ),
            (Some("bytes=-5000"), Part { start: 0, end: 999 }),
            (Some(" bytes= 10 - 20 "), Part { start: 10, end: 20 }),
            (Some("bytes=1000-"), Unsatisfiable),
            (Some("bytes=1000-1001"), Unsatisfiable),
            (Some("bytes=-0"), Unsatisfiable),
            (Some("bytes=200-100"), Whole),
            (Some("bytes=0-1,5-9"), Whole),
            (Some("items=0-1"), Whole),
            (Some("bytes=-"), Whole),
            (Some("bytes=a-b"), Whole),
            (Some("bytes=+1-2"), Whole),
            (Some("bytes=99999999999999999999-"), Whole),
            (Some("bytes"), Whole),
        ] {
            assert_eq!(parse(header, len), want, "{header:?}");
        }
        assert_eq!(parse(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse(Some("bytes=-1"), 0), Unsatisfiable);
    }
}
