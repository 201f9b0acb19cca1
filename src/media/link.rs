//! Signed recording links (SPEC M-2) and recording file names.
//!
//! A link is `/recordings/{call_id}?exp=<unix seconds>&sig=<hex>` with
//! `sig = HMAC-SHA256(secret, "siptrack-recording\n" exp "\n" call_id)`.
//! `exp` is all digits, so the first newline separates it from the
//! Call-ID unambiguously. Checking is constant-time and takes the time as
//! an argument.
//!
//! File names come from Call-IDs, which anyone on the network chooses: the
//! name keeps `[A-Za-z0-9.-]`, writes `_` as `__` and every other byte as
//! `_XX` (hex), escapes a leading dot and a dot after a dot (so no hidden
//! files and never `..`), and replaces the tail of very long names by a
//! hash. Distinct Call-IDs always give distinct names.

use crate::hex::hex;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Why a link is refused (the HTTP side answers 403 to each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("link expiry is not a number")]
    BadExpiry,
    #[error("link signature does not match")]
    BadSignature,
    #[error("link has expired")]
    Expired,
}

const DOMAIN: &[u8] = b"siptrack-recording\n";

fn mac(secret: &[u8], call_id: &[u8], exp: u64) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; the error arm cannot happen.
    let mut m = Hmac::<Sha256>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("hmac takes any key length"));
    m.update(DOMAIN);
    m.update(exp.to_string().as_bytes());
    m.update(b"\n");
    m.update(call_id);
    m
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// The signature for `call_id` valid until `exp` (unix seconds), as 64 hex digits.
pub fn sign(secret: &[u8], call_id: &[u8], exp: u64) -> String {
    hex(&mac(secret, call_id, exp).finalize().into_bytes())
}

/// Checks a link's `exp` and `sig` query values as they came (untrusted
/// text) against `now_unix` (seconds). The signature is checked first and
/// in constant time; a link is valid while `now < exp`.
pub fn verify(
    secret: &[u8],
    call_id: &[u8],
    exp: &str,
    sig: &str,
    now_unix: u64,
) -> Result<(), LinkError> {
    if exp.is_empty() || exp.len() > 20 || !exp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LinkError::BadExpiry);
    }
    let exp_n: u64 = exp.parse().map_err(|_| LinkError::BadExpiry)?;
    // "007" would verify as 7 but is not what was signed: keep one spelling.
    if exp_n.to_string() != exp {
        return Err(LinkError::BadExpiry);
    }
    let sig = unhex(sig).ok_or(LinkError::BadSignature)?;
    mac(secret, call_id, exp_n)
        .verify_slice(&sig)
        .map_err(|_| LinkError::BadSignature)?;
    if now_unix >= exp_n {
        return Err(LinkError::Expired);
    }
    Ok(())
}

/// The link path and query for a recording: the Call-ID percent-encoded
/// as one path segment.
pub fn link_path(secret: &[u8], call_id: &[u8], exp: u64) -> String {
    let mut p = String::from("/recordings/");
    for &b in call_id {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            p.push(char::from(b));
        } else {
            p.push_str(&format!("%{b:02X}"));
        }
    }
    p.push_str(&format!("?exp={exp}&sig={}", sign(secret, call_id, exp)));
    p
}

/// Longest escaped name kept whole; longer ones are cut and hashed.
const MAX_STEM: usize = 128;
/// How much of the escaped name a hashed name keeps, for people reading a directory.
const KEEP: usize = 64;

/// The file name (without extension) for a Call-ID: only
/// `[A-Za-z0-9._-]`, never starting with a dot, never `..`, at most
/// 130 bytes, one name per Call-ID.
pub fn file_stem(call_id: &[u8]) -> String {
    if call_id.is_empty() {
        // "_e" cannot come out of escaping (only "__" or "_" + uppercase hex do).
        return "_e".to_string();
    }
    let mut out = String::with_capacity(call_id.len() + 8);
    // Where each escaped unit ends, so a cut never splits one.
    let mut cut = 0;
    for (i, &b) in call_id.iter().enumerate() {
        let dot_ok = b == b'.' && i > 0 && call_id[i - 1] != b'.';
        if b.is_ascii_alphanumeric() || b == b'-' || dot_ok {
            out.push(char::from(b));
        } else if b == b'_' {
            out.push_str("__");
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
        if out.len() <= KEEP {
            cut = out.len();
        }
    }
    if out.len() <= MAX_STEM {
        return out;
    }
    // "_h" cannot come out of escaping either, so hashed names never
    // collide with escaped ones.
    out.truncate(cut);
    out.push_str("_h");
    out.push_str(&hex(&Sha256::digest(call_id)[..16]));
    out
}

/// The recording's file name for a Call-ID.
pub fn file_name(call_id: &[u8]) -> String {
    format!("{}.wav", file_stem(call_id))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECRET: &[u8] = b"recording-secret";

    #[test]
    fn sign_is_hmac_sha256_over_domain_exp_and_call_id() {
        let mut m = Hmac::<Sha256>::new_from_slice(SECRET).expect("key");
        m.update(b"siptrack-recording\n1767225600\na84b4c76e66710@pc33.atlanta.com");
        let want = hex(&m.finalize().into_bytes());
        assert_eq!(
            sign(SECRET, b"a84b4c76e66710@pc33.atlanta.com", 1_767_225_600),
            want
        );
        assert_eq!(want.len(), 64);
    }

    #[test]
    fn verify_table() {
        let cid: &[u8] = b"a84b4c76e66710@pc33.atlanta.com";
        let exp = 1_767_225_600u64;
        let good = sign(SECRET, cid, exp);
        let upper = good.to_uppercase();
        let mut flipped = good.clone().into_bytes();
        flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("hex");
        let exp_s = exp.to_string();
        let zz = "zz".repeat(32);
        // (name, secret, call id, exp, sig, now, result)
        type Row<'a> = (
            &'a str,
            &'a [u8],
            &'a [u8],
            &'a str,
            &'a str,
            u64,
            Result<(), LinkError>,
        );
        let rows: Vec<Row> = vec![
            ("valid", SECRET, cid, &exp_s, &good, exp - 1, Ok(())),
            (
                "upper-case hex is the same signature",
                SECRET,
                cid,
                &exp_s,
                &upper,
                exp - 1,
                Ok(()),
            ),
            (
                "expired at exp",
                SECRET,
                cid,
                &exp_s,
                &good,
                exp,
                Err(LinkError::Expired),
            ),
            (
                "expired later",
                SECRET,
                cid,
                &exp_s,
                &good,
                exp + 86_400,
                Err(LinkError::Expired),
            ),
            (
                "one digit changed",
                SECRET,
                cid,
                &exp_s,
                &flipped,
                exp - 1,
                Err(LinkError::BadSignature),
            ),
            (
                "other call",
                SECRET,
                b"other@host",
                &exp_s,
                &good,
                exp - 1,
                Err(LinkError::BadSignature),
            ),
            (
                "other secret",
                b"another",
                cid,
                &exp_s,
                &good,
                exp - 1,
                Err(LinkError::BadSignature),
            ),
            (
                "exp moved later",
                SECRET,
                cid,
                "1767225700",
                &good,
                exp - 1,
                Err(LinkError::BadSignature),
            ),
            (
                "exp with a leading zero",
                SECRET,
                cid,
                "01767225600",
                &good,
                exp - 1,
                Err(LinkError::BadExpiry),
            ),
            (
                "exp not a number",
                SECRET,
                cid,
                "soon",
                &good,
                0,
                Err(LinkError::BadExpiry),
            ),
            (
                "exp negative",
                SECRET,
                cid,
                "-1",
                &good,
                0,
                Err(LinkError::BadExpiry),
            ),
            (
                "exp too large",
                SECRET,
                cid,
                "99999999999999999999",
                &good,
                0,
                Err(LinkError::BadExpiry),
            ),
            (
                "exp empty",
                SECRET,
                cid,
                "",
                &good,
                0,
                Err(LinkError::BadExpiry),
            ),
            (
                "sig empty",
                SECRET,
                cid,
                &exp_s,
                "",
                exp - 1,
                Err(LinkError::BadSignature),
            ),
            (
                "sig truncated",
                SECRET,
                cid,
                &exp_s,
                &good[..62],
                exp - 1,
                Err(LinkError::BadSignature),
            ),
            (
                "sig not hex",
                SECRET,
                cid,
                &exp_s,
                &zz,
                exp - 1,
                Err(LinkError::BadSignature),
            ),
            (
                "sig odd length",
                SECRET,
                cid,
                &exp_s,
                "abc",
                exp - 1,
                Err(LinkError::BadSignature),
            ),
            (
                "sig multibyte",
                SECRET,
                cid,
                &exp_s,
                "é",
                exp - 1,
                Err(LinkError::BadSignature),
            ),
        ];
        for (name, secret, call_id, exp, sig, now, want) in rows {
            assert_eq!(verify(secret, call_id, exp, sig, now), want, "{name}");
        }
    }

    #[test]
    fn link_paths() {
        let p = link_path(SECRET, b"a b/../c@h", 42);
        assert_eq!(
            p,
            format!(
                "/recordings/a%20b%2F..%2Fc%40h?exp=42&sig={}",
                sign(SECRET, b"a b/../c@h", 42)
            )
        );
    }

    #[test]
    fn file_name_table() {
        let long = "x".repeat(200);
        let long_name = file_stem(long.as_bytes());
        let rows: [(&[u8], &str); 12] = [
            (
                b"a84b4c76e66710@pc33.atlanta.com",
                "a84b4c76e66710_40pc33.atlanta.com",
            ),
            (
                b"3848276298220188511@atlanta.example.com",
                "3848276298220188511_40atlanta.example.com",
            ),
            (b"abc-DEF.123", "abc-DEF.123"),
            (b"under_score", "under__score"),
            (b"../../etc/passwd", "_2E_2E_2F._2E_2Fetc_2Fpasswd"),
            (b"..", "_2E_2E"),
            (b".hidden", "_2Ehidden"),
            (b"a..b", "a._2Eb"),
            (b"a/b\\c", "a_2Fb_5Cc"),
            (b"\0\xff", "_00_FF"),
            (b"", "_e"),
            (b"ok.", "ok."),
        ];
        for (cid, want) in rows {
            assert_eq!(file_stem(cid), want, "{}", String::from_utf8_lossy(cid));
        }
        assert_eq!(file_name(b"abc"), "abc.wav");
        assert!(long_name.starts_with(&"x".repeat(64)));
        assert_eq!(long_name.len(), 64 + 2 + 32);
        assert_ne!(long_name, file_stem("x".repeat(201).as_bytes()));
    }

    fn safe(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 130
            && !name.starts_with('.')
            && !name.contains("..")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    }

    proptest! {
        #[test]
        fn names_are_safe_and_distinct(
            a in proptest::collection::vec(any::<u8>(), 0..200),
            b in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let (na, nb) = (file_stem(&a), file_stem(&b));
            prop_assert!(safe(&na), "{:?}", na);
            prop_assert!(safe(&nb), "{:?}", nb);
            prop_assert_eq!(a == b, na == nb);
        }

        #[test]
        fn dotty_names_are_safe(s in "[._a-z/]{0,40}") {
            let n = file_stem(s.as_bytes());
            prop_assert!(safe(&n), "{:?}", n);
            prop_assert_eq!(n == file_stem(b"x"), s == "x");
        }

        #[test]
        fn verify_never_panics(exp in ".{0,30}", sig in ".{0,80}", now in any::<u64>()) {
            let _ = verify(SECRET, b"c", &exp, &sig, now);
        }
    }
}
