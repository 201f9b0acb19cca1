//! Parser-level verdicts for every message of the RFC 4475 / RFC 5118
//! torture corpus (../shared/corpus/torture/INDEX.tsv, `syntax` column).

use std::path::PathBuf;

use bytes::Bytes;
use siptrack::sip::validate::{cseq, validate};
use siptrack::sip::{HeaderName, Message, NameAddr, Via};

fn corpus() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/torture");
    assert!(
        dir.join("INDEX.tsv").exists(),
        "torture corpus not found at {}",
        dir.display()
    );
    dir
}

struct Row {
    name: String,
    file: String,
    syntax: String,
}

fn rows() -> Vec<Row> {
    let index = std::fs::read_to_string(corpus().join("INDEX.tsv")).expect("read INDEX.tsv");
    index
        .lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            Row {
                name: c[1].to_string(),
                file: c[2].to_string(),
                syntax: c[5].to_string(),
            }
        })
        .collect()
}

fn load(file: &str) -> Message {
    let bytes = std::fs::read(corpus().join(file)).expect("read corpus file");
    Message::parse(Bytes::from(bytes), true).expect("start line indexes")
}

/// What the parser plus validation layer says: accepted (Ok or a
/// non-syntax verdict such as 416), or rejected as malformed.
fn accepted(file: &str) -> Result<(), String> {
    let bytes = std::fs::read(corpus().join(file)).expect("read corpus file");
    let msg = match Message::parse(Bytes::from(bytes), true) {
        Ok(m) => m,
        Err(e) => return Err(format!("parse: {e}")),
    };
    match validate(&msg) {
        Ok(()) => Ok(()),
        Err(r) if r.code == 416 => Ok(()),
        Err(r) => Err(format!("{} {}", r.code, r.reason)),
    }
}

#[test]
fn every_corpus_message_gets_its_syntax_verdict() {
    let mut failures = Vec::new();
    let rows = rows();
    assert_eq!(rows.len(), 62, "INDEX.tsv rows");
    for row in &rows {
        let result = accepted(&row.file);
        let s = row.syntax.as_str();
        // The RFC 5118 wire forms with a wrong Content-Length may be
        // rejected (declared > body) or truncated; their clfix copies must parse.
        let cl_mismatch = s.contains("declared Content-Length");
        let must_parse = !cl_mismatch
            && (s.starts_with("well-formed")
                || s.starts_with("RFC 2543")
                || s.starts_with("received=")
                || s.starts_with("3261 ABNF allows"));
        let must_fail = s.starts_with("malformed")
            || s.starts_with("semantically invalid")
            || s.starts_with("framing error")
            || s.starts_with("missing");
        if must_parse && result.is_err() {
            failures.push(format!("{} ({}) should parse: {:?}", row.name, s, result));
        }
        if must_fail && result.is_ok() {
            failures.push(format!("{} ({}) should be rejected", row.name, s));
        }
        if cl_mismatch {
            let fixed = format!("rfc5118/clfix/{}.sip", row.name);
            if let Err(e) = accepted(&fixed) {
                failures.push(format!("{fixed} should parse: {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} verdicts wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn key_fields_of_the_short_tortuous_invite() {
    let m = load("rfc4475/wsinv.sip");
    assert_eq!(
        m.request_uri(),
        Some(&b"sip:vivekg@chair-dnrc.example.com;unknownparam"[..])
    );
    assert_eq!(m.call_id(), Some(&b"wsinv.ndaksdj@192.0.2.1"[..]));
    assert_eq!(
        cseq(&m).map(|(n, meth)| (n, meth.to_vec())),
        Some((9, b"INVITE".to_vec()))
    );
    let to = NameAddr::parse(m.value(HeaderName::To).expect("To")).expect("To parses");
    assert_eq!(to.tag(), Some(&b"1918181833n"[..]));
    let from = NameAddr::parse(m.value(HeaderName::From).expect("From")).expect("From parses");
    assert_eq!(from.tag(), Some(&b"98asjd8"[..]));
    assert_eq!(from.uri(), b"sip:jdrosen@example.com");
    let via = Via::parse(m.value(HeaderName::Via).expect("Via")).expect("Via parses");
    assert_eq!(via.host(), b"192.0.2.2");
    assert_eq!(via.branch(), Some(&b"390skdjuw"[..]));
    // Compact `v:` holds two more values; they count as Via headers.
    assert_eq!(m.headers_named(HeaderName::Via).count(), 2);
    assert_eq!(m.body.len(), 150);
}

#[test]
fn binary_body_is_framed_by_content_length() {
    let m = load("rfc4475/mpart01.sip");
    let declared: usize = std::str::from_utf8(m.value(HeaderName::ContentLength).expect("CL"))
        .expect("ascii")
        .parse()
        .expect("number");
    assert_eq!(m.body.len(), declared);
    assert!(m.body_bytes().contains(&0), "body keeps its NUL bytes");
}

#[test]
fn octets_after_content_length_are_not_part_of_the_message() {
    let m = load("rfc4475/dblreq.sip");
    assert_eq!(m.body.len(), 0);
    assert!(m.wire().len() < m.buf().len());
}

#[test]
fn ipv6_references_decode() {
    let m = load("rfc5118/ipv6-good.sip");
    let uri = siptrack::sip::Uri::parse(m.request_uri().expect("request")).expect("uri");
    assert_eq!(uri.host(), b"[2001:db8::10]");
    let m = load("rfc5118/port-unambiguous.sip");
    let uri = siptrack::sip::Uri::parse(m.request_uri().expect("request")).expect("uri");
    assert_eq!((uri.host(), uri.port), (&b"[2001:db8::10]"[..], Some(5070)));
    let m = load("rfc5118/port-ambiguous.sip");
    let uri = siptrack::sip::Uri::parse(m.request_uri().expect("request")).expect("uri");
    assert_eq!((uri.host(), uri.port), (&b"[2001:db8::10:5070]"[..], None));
}
