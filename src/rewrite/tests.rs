use bytes::Bytes;

use std::collections::BTreeMap;

use super::*;
use crate::config::parse_destination;

fn invite(ruri_user: &str, from_user: &str, extra: &str) -> Message {
    let text = format!(
        "INVITE sip:{ruri_user}@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n\
         Max-Forwards: 70\r\n\
         From: \"Caller\" <sip:{from_user}@trunk.example>;tag=f1\r\n\
         To: <sip:{ruri_user}@127.0.0.1>\r\n\
         Call-ID: c1@x\r\n\
         CSeq: 1 INVITE\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    );
    Message::parse(Bytes::from(text), true).expect("test INVITE parses")
}

fn applied(msg: &Message, patch: &mut Patch) -> String {
    String::from_utf8(patch.apply(msg.buf(), msg.body.end as usize)).expect("utf-8")
}

fn header<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.split("\r\n")
        .filter_map(|l| l.split_once(": "))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

fn visit_ctx() -> CallContext {
    let mut visit = BTreeMap::new();
    for (k, v) in [
        ("city", "Moscow"),
        ("domain", "shop.example"),
        ("page", "https://shop.example/sale?a=1"),
        ("utm_source", "google"),
        ("utm_medium", "cpc"),
        ("utm_campaign", "winter"),
        ("utm_term", "boots"),
        ("utm_content", "ad1"),
    ] {
        visit.insert(k.to_string(), v.to_string());
    }
    CallContext {
        dialed: "74951111111".into(),
        caller: "79161234567".into(),
        visit_id: Some("v-42".into()),
        marker: Some("google_cpc".into()),
        source: Some("organic".into()),
        visit: visit.into(),
    }
}

fn with_extra(pairs: &[(&str, &str)]) -> RewriteSettings {
    RewriteSettings {
        extra_headers: pairs
            .iter()
            .map(|(n, t)| (n.to_string(), Template::parse(t).expect("template")))
            .collect(),
        ..RewriteSettings::default()
    }
}

#[test]
fn every_placeholder_renders_from_the_call() {
    let ctx = visit_ctx();
    for (template, expected) in [
        ("{visit_id}", "v-42"),
        ("{marker}", "google_cpc"),
        ("{source}", "organic"),
        ("{city}", "Moscow"),
        ("{domain}", "shop.example"),
        ("{page}", "https://shop.example/sale?a=1"),
        ("{utm_source}", "google"),
        ("{utm_medium}", "cpc"),
        ("{utm_campaign}", "winter"),
        ("{utm_term}", "boots"),
        ("{utm_content}", "ad1"),
        ("{caller}", "79161234567"),
        ("{dialed}", "74951111111"),
        (
            "city={city}; from {domain}",
            "city=Moscow; from shop.example",
        ),
        ("{ utm_source }/{utm_medium}", "google/cpc"),
        ("static text", "static text"),
    ] {
        let t = Template::parse(template).expect(template);
        assert_eq!(t.render(&ctx), expected, "{template}");
    }
}

#[test]
fn templates_with_unknown_or_broken_placeholders_are_refused() {
    for (template, needle) in [
        ("{town}", "unknown placeholder {town}"),
        ("{city", "'{' without '}'"),
        ("city}", "'}' without '{'"),
        ("{}", "unknown placeholder {}"),
    ] {
        let e = Template::parse(template).expect_err(template);
        assert!(e.contains(needle), "{template}: {e}");
    }
}

#[test]
fn tracking_headers_carry_dialed_marker_and_visit() {
    let s = RewriteSettings::default();
    let got = tracking_headers(&visit_ctx(), &s);
    assert_eq!(
        got,
        vec![
            ("X-Roistat-Phone".to_string(), "74951111111".to_string()),
            ("X-Roistat-Marker".to_string(), "google_cpc".to_string()),
            ("X-Roistat".to_string(), "v-42".to_string()),
        ]
    );
    // Static tracking: no visit, so X-Roistat is the channel's marker.
    let ctx = CallContext {
        dialed: "74951111111".into(),
        marker: Some("yandex_direct".into()),
        ..CallContext::default()
    };
    let got = tracking_headers(&ctx, &s);
    assert_eq!(got[2], ("X-Roistat".into(), "yandex_direct".into()));
    // No marker, no visit: only the phone.
    let ctx = CallContext {
        dialed: "74951111111".into(),
        ..CallContext::default()
    };
    assert_eq!(tracking_headers(&ctx, &s).len(), 1);
}

#[test]
fn header_names_are_configurable_and_empty_ones_are_not_sent() {
    let s = RewriteSettings {
        phone_header: "X-Dialed".into(),
        marker_header: String::new(),
        ..RewriteSettings::default()
    };
    let names: Vec<String> = tracking_headers(&visit_ctx(), &s)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, vec!["X-Dialed", "X-Roistat"]);
}

#[test]
fn extra_headers_with_empty_values_are_left_out() {
    let s = with_extra(&[("my-city", "{city}"), ("my-term", "term: {utm_term}")]);
    let ctx = CallContext {
        dialed: "74951111111".into(),
        ..CallContext::default()
    };
    let names: Vec<String> = tracking_headers(&ctx, &s)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        vec!["X-Roistat-Phone"],
        "no city, no term: no header"
    );
}

#[test]
fn visit_data_cannot_inject_a_header() {
    let mut ctx = visit_ctx();
    for evil in [
        "Moscow\r\nX-Injected: 1",
        "Moscow\nX-Injected: 1",
        "Moscow\rX-Injected: 1",
        "Moscow\r\n\r\nINVITE sip:x SIP/2.0",
        "Moscow\0X-Injected: 1",
        "\r\n",
    ] {
        ctx.visit.insert("city".into(), evil.into());
        let s = with_extra(&[("my-city", "{city}")]);
        let msg = invite("74951111111", "79161234567", "");
        let mut patch = Patch::new();
        rewrite_invite(&msg, &ctx, &ToEdit::Keep, &s, &mut patch);
        let out = applied(&msg, &mut patch);
        let reparsed = Message::parse(Bytes::from(out.clone()), true).expect("still parses");
        assert!(
            reparsed.other_header(b"X-Injected").is_none(),
            "{evil:?} produced a header:\n{out}"
        );
        assert_eq!(
            out.matches("\r\n\r\n").count(),
            1,
            "{evil:?}: one header end"
        );
        let city = header(&out, "my-city");
        assert!(city.len() <= 1, "{city:?}");
        assert!(city.iter().all(|v| !v.contains('\r') && !v.contains('\n')));
    }
}

#[test]
fn incoming_tracking_headers_are_replaced_not_trusted() {
    let msg = invite(
        "74951111111",
        "79161234567",
        "x-roistat: forged\r\nX-Roistat-Phone: 70000000000\r\nX-Other: kept\r\n",
    );
    let mut patch = Patch::new();
    rewrite_invite(
        &msg,
        &visit_ctx(),
        &ToEdit::Keep,
        &RewriteSettings::default(),
        &mut patch,
    );
    let out = applied(&msg, &mut patch);
    assert_eq!(header(&out, "X-Roistat"), vec!["v-42"]);
    assert_eq!(header(&out, "X-Roistat-Phone"), vec!["74951111111"]);
    assert_eq!(header(&out, "X-Other"), vec!["kept"]);
}

fn dest(uri: &str) -> Destination {
    parse_destination(uri).expect("destination")
}

#[test]
fn request_uri_modes_and_maps() {
    let subst = RewriteSettings {
        number_substitution: [("74951111111".to_string(), "74992222222".to_string())].into(),
        ..RewriteSettings::default()
    };
    let sip_address = RewriteSettings {
        send_sip_address: true,
        sip_login_map: [("roistat123_1".to_string(), "1231".to_string())].into(),
        ..RewriteSettings::default()
    };
    let plain = RewriteSettings::default();
    let pbx = dest("sip:roistat123_1@127.0.0.1:5070");
    let other = dest("sip:office@127.0.0.1:5070;transport=tcp");
    for (name, d, dialed, phone_dest, s, uri, to) in [
        (
            "default: dialed number at the destination host",
            &pbx,
            "74951111111",
            false,
            &plain,
            "sip:74951111111@127.0.0.1:5070",
            ToEdit::Keep,
        ),
        (
            "substituted number in R-URI and To",
            &pbx,
            "74951111111",
            false,
            &subst,
            "sip:74992222222@127.0.0.1:5070",
            ToEdit::User("74992222222".into()),
        ),
        (
            "a number without substitution is untouched",
            &pbx,
            "74953333333",
            false,
            &subst,
            "sip:74953333333@127.0.0.1:5070",
            ToEdit::Keep,
        ),
        (
            "SIP address mode with a mapped login",
            &pbx,
            "74951111111",
            false,
            &sip_address,
            "sip:1231@127.0.0.1:5070",
            ToEdit::Uri(b"sip:1231@127.0.0.1:5070".to_vec()),
        ),
        (
            "SIP address mode, login not mapped, TCP kept for routing only",
            &other,
            "74951111111",
            false,
            &sip_address,
            "sip:office@127.0.0.1:5070;transport=tcp",
            ToEdit::Uri(b"sip:office@127.0.0.1:5070".to_vec()),
        ),
        (
            "a phone-number destination is the number the PBX calls",
            &dest("sip:79990001122@127.0.0.1:5070"),
            "74951111111",
            true,
            &plain,
            "sip:79990001122@127.0.0.1:5070",
            ToEdit::Uri(b"sip:79990001122@127.0.0.1:5070".to_vec()),
        ),
    ] {
        let (got_uri, got_to) = request_uri(d, dialed, phone_dest, s);
        assert_eq!(got_uri.as_str(), uri, "{name}");
        assert_eq!(got_to, to, "{name}");
    }
}

#[test]
fn to_uri_edits_keep_display_name_and_tag() {
    let msg = invite("74951111111", "79161234567", "");
    let ctx = visit_ctx();
    let s = RewriteSettings::default();
    let mut patch = Patch::new();
    rewrite_invite(
        &msg,
        &ctx,
        &ToEdit::User("74992222222".into()),
        &s,
        &mut patch,
    );
    assert_eq!(
        header(&applied(&msg, &mut patch), "To"),
        vec!["<sip:74992222222@127.0.0.1>"]
    );
    let mut patch = Patch::new();
    rewrite_invite(
        &msg,
        &ctx,
        &ToEdit::Uri(b"sip:1231@pbx.example".to_vec()),
        &s,
        &mut patch,
    );
    assert_eq!(
        header(&applied(&msg, &mut patch), "To"),
        vec!["<sip:1231@pbx.example>"]
    );
}

#[test]
fn caller_numbers_are_normalised_in_from_pai_and_rpid() {
    let msg = invite(
        "74951111111",
        "8%20(916)%20123-45-67",
        "P-Asserted-Identity: <sip:+7(916)123-45-67@trunk.example>\r\n\
         Remote-Party-ID: <sip:89161234567@trunk.example>;party=calling\r\n",
    );
    let mut patch = Patch::new();
    normalize_caller(&msg, &PhoneRules::default(), &mut patch);
    let out = applied(&msg, &mut patch);
    assert_eq!(
        header(&out, "P-Asserted-Identity"),
        vec!["<sip:79161234567@trunk.example>"]
    );
    assert_eq!(
        header(&out, "Remote-Party-ID"),
        vec!["<sip:79161234567@trunk.example>;party=calling"]
    );
    // RFC 3261 escapes are decoded before normalising.
    assert_eq!(
        header(&out, "From"),
        vec!["\"Caller\" <sip:79161234567@trunk.example>;tag=f1"]
    );

    let msg = invite("74951111111", "8-916-123-45-67", "");
    let mut patch = Patch::new();
    normalize_caller(&msg, &PhoneRules::default(), &mut patch);
    assert_eq!(
        header(&applied(&msg, &mut patch), "From"),
        vec!["\"Caller\" <sip:79161234567@trunk.example>;tag=f1"]
    );
    for user in ["anonymous", "roistat123_1", "101", "user%40host", "8%2"] {
        let msg = invite("74951111111", user, "");
        let mut patch = Patch::new();
        normalize_caller(&msg, &PhoneRules::default(), &mut patch);
        assert!(patch.is_empty(), "{user} must pass unchanged");
    }
}

/// RFC 3325 9.1: one P-Asserted-Identity may list a `sip:` and a `tel:`
/// URI; each SIP URI's user part is normalised as a single value's is
/// (trial, 2026-12-03: such a header went on as it came).
#[test]
fn each_value_of_a_listed_identity_header_is_normalised() {
    let msg = invite(
        "74951111111",
        "89161234567",
        "P-Asserted-Identity: \"A, B\" <sip:+79169100003@trunk.example;user=phone>, <tel:+79169100003>\r\n\
         Remote-Party-ID: <tel:+7916>, <sip:8-916-910-00-04@trunk.example>;party=calling\r\n",
    );
    let mut patch = Patch::new();
    normalize_caller(&msg, &PhoneRules::default(), &mut patch);
    let out = applied(&msg, &mut patch);
    assert_eq!(
        header(&out, "P-Asserted-Identity"),
        vec!["\"A, B\" <sip:79169100003@trunk.example;user=phone>, <tel:+79169100003>"]
    );
    assert_eq!(
        header(&out, "Remote-Party-ID"),
        vec!["<tel:+7916>, <sip:79169100004@trunk.example>;party=calling"]
    );
}

#[test]
fn normalize_caller_off_passes_the_from_user_byte_for_byte() {
    let msg = invite("74951111111", "8-916-123-45-67", "");
    let s = RewriteSettings {
        normalize_caller: false,
        ..RewriteSettings::default()
    };
    let mut patch = Patch::new();
    rewrite_invite(&msg, &visit_ctx(), &ToEdit::Keep, &s, &mut patch);
    assert_eq!(
        header(&applied(&msg, &mut patch), "From"),
        vec!["\"Caller\" <sip:8-916-123-45-67@trunk.example>;tag=f1"]
    );
}

#[test]
fn dialed_number_comes_from_the_request_uri_else_the_to() {
    let msg = invite("74951111111", "x", "");
    assert_eq!(dialed_raw(&msg).as_deref(), Some("74951111111"));
    let text =
        "INVITE sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK2\r\n\
                From: <sip:a@x>;tag=1\r\nTo: <sip:+7 (495) 111-11-11@x>\r\nCall-ID: c\r\n\
                CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            .replace("+7 (495) 111-11-11", "84951111111");
    let msg = Message::parse(Bytes::from(text), true).expect("parses");
    assert_eq!(dialed_raw(&msg).as_deref(), Some("84951111111"));
}

#[test]
fn the_caller_for_tracking_table() {
    let r = PhoneRules::default();
    let pai = |user: &str| format!("P-Asserted-Identity: <sip:{user}@trunk.example>\r\n");
    let withheld = Caller {
        raw: Default::default(),
        phone: None,
    };
    let number = |raw: &str, phone: &str| Caller {
        raw: raw.into(),
        phone: Some(phone.into()),
    };
    for (from, extra, normalise, expected) in [
        (
            "8-916-123-45-67",
            String::new(),
            true,
            number("8-916-123-45-67", "79161234567"),
        ),
        (
            "8-916-123-45-67",
            String::new(),
            false,
            number("8-916-123-45-67", "8-916-123-45-67"),
        ),
        (
            "8%20(916)%20123-45-67",
            String::new(),
            true,
            number("8%20(916)%20123-45-67", "79161234567"),
        ),
        (
            "roistat123_1",
            String::new(),
            true,
            number("roistat123_1", "roistat123_1"),
        ),
        // Withheld: the From words, any case, and nothing at all.
        (
            "anonymous",
            String::new(),
            true,
            Caller {
                raw: "anonymous".into(),
                ..withheld.clone()
            },
        ),
        (
            "Anonymous",
            String::new(),
            false,
            Caller {
                raw: "Anonymous".into(),
                ..withheld.clone()
            },
        ),
        (
            "unknown",
            String::new(),
            true,
            Caller {
                raw: "unknown".into(),
                ..withheld.clone()
            },
        ),
        (
            "restricted",
            String::new(),
            true,
            Caller {
                raw: "restricted".into(),
                ..withheld.clone()
            },
        ),
        (
            "private",
            String::new(),
            true,
            Caller {
                raw: "private".into(),
                ..withheld.clone()
            },
        ),
        (
            "unavailable",
            String::new(),
            true,
            Caller {
                raw: "unavailable".into(),
                ..withheld.clone()
            },
        ),
        // Privacy: id without a usable PAI hides even a number in From.
        (
            "79161234567",
            "Privacy: id\r\n".into(),
            true,
            Caller {
                raw: "79161234567".into(),
                ..withheld.clone()
            },
        ),
        (
            "anonymous",
            format!("Privacy: id\r\n{}", pai("anonymous")),
            true,
            Caller {
                raw: "anonymous".into(),
                ..withheld.clone()
            },
        ),
        (
            "anonymous",
            format!("Privacy: header;ID\r\n{}", pai("restricted")),
            true,
            Caller {
                raw: "anonymous".into(),
                ..withheld.clone()
            },
        ),
        // … with one, the asserted number is the caller (siptrack is in
        // the trust domain).
        (
            "anonymous",
            format!("Privacy: id\r\n{}", pai("+7(916)123-45-67")),
            true,
            number("+7(916)123-45-67", "79161234567"),
        ),
        (
            "anonymous",
            "Privacy: user; id\r\nP-Asserted-Identity: \"X\" <tel:+79161234567;cpc=ordinary>\r\n"
                .into(),
            true,
            number("+79161234567", "79161234567"),
        ),
        (
            "anonymous",
            "Privacy: id\r\nP-Asserted-Identity: <sip:user@host>, <tel:89161234567>\r\n".into(),
            true,
            number("89161234567", "79161234567"),
        ),
        // A withheld From without Privacy: id: the network's identity is
        // the caller's number as with it (trial, 2026-12-02), P-Asserted-
        // Identity first, then a Remote-Party-ID of the calling party.
        (
            "anonymous",
            pai("79161234567"),
            true,
            number("79161234567", "79161234567"),
        ),
        (
            "anonymous",
            "Remote-Party-ID: <sip:89161000014@gw>;party=calling;privacy=off;screen=yes\r\n".into(),
            true,
            number("89161000014", "79161000014"),
        ),
        (
            "anonymous",
            "Remote-Party-ID: <sip:89161000014@gw>;party=called\r\n".into(),
            true,
            Caller {
                raw: "anonymous".into(),
                ..withheld.clone()
            },
        ),
        (
            "anonymous",
            "Remote-Party-ID: <sip:anonymous@gw>\r\n".into(),
            true,
            Caller {
                raw: "anonymous".into(),
                ..withheld.clone()
            },
        ),
        // A number with telephone-subscriber parameters (RFC 4694).
        (
            "+79161230004;npdi;rn=+79160000000",
            String::new(),
            true,
            number("+79161230004;npdi;rn=+79160000000", "79161230004"),
        ),
        (
            "89161234567",
            format!("Privacy: none\r\n{}", pai("79990000000")),
            true,
            number("89161234567", "79161234567"),
        ),
    ] {
        let msg = invite("74951111111", from, &extra);
        assert_eq!(
            caller(&msg, &r, normalise),
            expected,
            "From {from}, {extra:?}"
        );
    }
}

/// A caller sent as a `tel:` URI is that number, not a withheld caller
/// (trial, 2026-12-02: every such call made a deal with no phone).
#[test]
fn a_tel_uri_caller_is_its_number() {
    let r = PhoneRules::default();
    for (from, raw, phone) in [
        (
            "<tel:+7-916-100-00-12>",
            "+7-916-100-00-12",
            Some("79161000012"),
        ),
        (
            "\"X\" <tel:89161230001;cpc=ordinary>",
            "89161230001",
            Some("79161230001"),
        ),
        (
            "<TEL:1230002;phone-context=+7495>",
            "1230002",
            Some("1230002"),
        ),
        ("<tel:anonymous>", "anonymous", None),
    ] {
        let text = format!(
            "INVITE sip:74951111111@127.0.0.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n\
             Max-Forwards: 70\r\n\
             From: {from};tag=f1\r\n\
             To: <sip:74951111111@127.0.0.1>\r\n\
             Call-ID: c1@x\r\n\
             CSeq: 1 INVITE\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let msg = Message::parse(Bytes::from(text), true).expect("parses");
        let c = caller(&msg, &r, true);
        assert_eq!(
            (c.raw.as_str(), c.phone.as_deref()),
            (raw, phone),
            "From {from}"
        );
    }
}

/// The placeholders resolved at config load read what the name lookup
/// reads, for every placeholder, with and without a visit.
#[test]
fn resolved_placeholders_read_the_named_fields() {
    for ctx in [visit_ctx(), CallContext::default()] {
        for name in template::PLACEHOLDERS {
            let t = Template::parse(&format!("{{{name}}}")).expect("template");
            assert_eq!(
                t.render(&ctx),
                template::header_safe(ctx.field(name)),
                "{name}"
            );
        }
    }
}

/// The one-pass rendering against the two-pass form it replaced: nothing
/// when a template has placeholders and all are empty, else the folded
/// concatenation.
#[test]
fn one_pass_rendering_matches_the_two_pass_form() {
    fn two_pass(template: &str, ctx: &CallContext) -> String {
        let mut names = Vec::new();
        let mut rest = template;
        let mut text = String::new();
        while let Some(open) = rest.find('{') {
            text.push_str(&rest[..open]);
            let close = rest[open..].find('}').expect("closed") + open;
            let name = rest[open + 1..close].trim();
            names.push(name);
            text.push_str(ctx.field(name));
            rest = &rest[close + 1..];
        }
        text.push_str(rest);
        if !names.is_empty() && names.iter().all(|n| ctx.field(n).is_empty()) {
            return String::new();
        }
        template::header_safe(&text)
    }
    let mut sparse = visit_ctx();
    sparse.visit.remove("city");
    sparse.marker = None;
    sparse.visit.insert("page".into(), " \r\n ".into());
    sparse
        .visit
        .insert("utm_term".into(), "a\r\nX-Evil: 1".into());
    for ctx in [visit_ctx(), sparse, CallContext::default()] {
        for template in [
            "{city}",
            "city: {city}",
            "{city} {marker}",
            "{page}",
            " {page} x ",
            "{utm_term}!",
            "[{city}][{domain}]",
            "static  text ",
            "{marker}{source}",
        ] {
            let t = Template::parse(template).expect(template);
            assert_eq!(t.render(&ctx), two_pass(template, &ctx), "{template}");
        }
    }
}

/// Number-portability and other telephone-subscriber parameters stay on
/// the normalised number in the forwarded INVITE; a phone-context goes
/// with the local form it qualified (trial, 2026-12-02: both dropped).
#[test]
fn a_callers_number_parameters_go_on_with_the_normalised_number() {
    let rules = PhoneRules::default();
    for (user, forwarded) in [
        (
            "+79162223346;npdi;rn=+79160000000",
            "79162223346;npdi;rn=+79160000000",
        ),
        (
            "89162223346;cic=+12345;ext=101",
            "79162223346;cic=+12345;ext=101",
        ),
        ("9162223345;phone-context=+7", "79162223345"),
        ("9162223345;PHONE-CONTEXT=+7;npdi", "79162223345;npdi"),
        ("79162223345;npdi", "79162223345;npdi"),
        // Not expanded: the context still applies.
        ("1230004;phone-context=+7916", "1230004;phone-context=+7916"),
        ("8-916-222-33-45", "79162223345"),
    ] {
        for known in [false, true] {
            let msg = invite("74951111111", user, "");
            let s = RewriteSettings::default();
            let ctx = CallContext {
                caller: "79162223345".into(),
                ..visit_ctx()
            };
            let mut patch = Patch::new();
            if known {
                let (c, is_from) = caller_and_from(&msg, &rules, true);
                let known_from = c.phone.clone().unwrap_or_default();
                let from = is_from.then_some(known_from.as_str());
                rewrite_invite_from(&msg, &ctx, &ToEdit::Keep, &s, from, &mut patch);
            } else {
                rewrite_invite(&msg, &ctx, &ToEdit::Keep, &s, &mut patch);
            }
            let out = applied(&msg, &mut patch);
            assert_eq!(
                header(&out, "From"),
                vec![format!("\"Caller\" <sip:{forwarded}@trunk.example>;tag=f1")],
                "{user} known={known}"
            );
        }
    }
}

/// The router hands the rewrite the caller it already normalised from the
/// From: the forwarded INVITE is the same as when the rewrite normalises
/// the From itself, for every kind of From user part, with Privacy and
/// without, normalising or not.
#[test]
fn a_known_from_rewrites_as_normalising_it_again() {
    let rules = PhoneRules::default();
    let pai = "P-Asserted-Identity: <sip:89161234567@trunk.example>\r\n";
    for user in [
        "8-916-123-45-67",
        "8%20(916)%20123-45-67",
        "79161234567",
        "+7 916 123 45 67",
        "anonymous",
        "Anonymous",
        "roistat123_1",
        "101",
        "user%40host",
        "8%2",
        "",
    ] {
        for extra in [
            String::new(),
            pai.to_string(),
            format!("Privacy: id\r\n{pai}"),
        ] {
            for normalise in [true, false] {
                let msg = invite("74951111111", user, &extra);
                let s = RewriteSettings {
                    normalize_caller: normalise,
                    ..RewriteSettings::default()
                };
                let (c, is_from) = caller_and_from(&msg, &rules, normalise);
                assert_eq!(c, caller(&msg, &rules, normalise));
                let ctx = CallContext {
                    caller: c.phone.clone().unwrap_or_default(),
                    ..visit_ctx()
                };
                let from = is_from.then_some(ctx.caller.as_str());
                let mut known = Patch::new();
                rewrite_invite_from(&msg, &ctx, &ToEdit::Keep, &s, from, &mut known);
                let mut again = Patch::new();
                rewrite_invite(&msg, &ctx, &ToEdit::Keep, &s, &mut again);
                assert_eq!(
                    applied(&msg, &mut known),
                    applied(&msg, &mut again),
                    "{user:?} {extra:?} {normalise}"
                );
            }
        }
    }
}

/// Skipping the headers the parser knows when deleting forged tracking
/// headers: still every configured name is caught, also one configured
/// with a name the parser knows.
#[test]
fn forged_headers_are_dropped_whatever_their_name() {
    let msg = invite(
        "74951111111",
        "79161234567",
        "x-roistat-phone: 1\r\nSubject: s\r\nUser-Agent: u\r\n",
    );
    let mut s = RewriteSettings {
        marker_header: "User-Agent".into(),
        visit_header: "subject".into(),
        ..RewriteSettings::default()
    };
    let mut patch = Patch::new();
    rewrite_invite(&msg, &visit_ctx(), &ToEdit::Keep, &s, &mut patch);
    let out = applied(&msg, &mut patch);
    assert_eq!(header(&out, "X-Roistat-Phone"), vec!["74951111111"]);
    assert_eq!(header(&out, "User-Agent"), vec!["google_cpc"]);
    assert_eq!(header(&out, "Subject"), vec!["v-42"]);
    // A name the parser classifies: the one that came is still dropped.
    s.visit_header = "Contact".into();
    let msg = invite("74951111111", "79161234567", "contact: <sip:x@y>\r\n");
    let mut patch = Patch::new();
    rewrite_invite(&msg, &visit_ctx(), &ToEdit::Keep, &s, &mut patch);
    let out = applied(&msg, &mut patch);
    assert_eq!(header(&out, "Contact"), vec!["v-42"]);
}

/// The tracking headers as written before [`Prepared`] (issue 15): each
/// line's name, ": " and CRLF appended piece by piece, names looked at
/// per call.
fn old_write_tracking_headers(ctx: &CallContext, s: &RewriteSettings, out: &mut Vec<u8>) {
    fn line(out: &mut Vec<u8>, name: &str, value: impl FnOnce(&mut Vec<u8>) -> bool) {
        let start = out.len();
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        if value(out) {
            out.extend_from_slice(b"\r\n");
        } else {
            out.truncate(start);
        }
    }
    let visit = ctx.visit_id.as_deref().or(ctx.marker.as_deref());
    for (name, value) in [
        (&s.phone_header, Some(ctx.dialed.as_str())),
        (&s.marker_header, ctx.marker.as_deref()),
        (&s.visit_header, visit),
    ] {
        if !name.is_empty() {
            line(out, name, |o| {
                template::header_safe_into(value.unwrap_or_default(), o)
            });
        }
    }
    for (name, t) in &s.extra_headers {
        line(out, name, |o| t.render_into(ctx, o));
    }
}

/// The forgery check as it was: every name compared per header.
fn old_writes_header(s: &RewriteSettings, name: &[u8]) -> bool {
    [&s.phone_header, &s.marker_header, &s.visit_header]
        .into_iter()
        .chain(s.extra_headers.iter().map(|(n, _)| n))
        .any(|n| !n.is_empty() && n.as_bytes().eq_ignore_ascii_case(name))
}

fn old_writes_known_header(s: &RewriteSettings) -> bool {
    [&s.phone_header, &s.marker_header, &s.visit_header]
        .into_iter()
        .chain(s.extra_headers.iter().map(|(n, _)| n))
        .any(|n| HeaderName::classify(n.as_bytes()) != HeaderName::Other)
}

/// [`Prepared`], made once from the settings, writes the same header
/// block and recognises the same forged names as the per-call forms it
/// replaced, over settings with empty, long, known and oddly cased names.
#[test]
fn prepared_settings_match_the_per_call_forms() {
    let long = "X-".to_string() + &"a".repeat(70);
    let mut settings = vec![
        RewriteSettings::default(),
        with_extra(&[
            ("X-City", "{city}"),
            ("X-Source", "{source}"),
            ("X-Campaign", "{utm_campaign}"),
            ("X-Caller", "{caller}"),
        ]),
        with_extra(&[("Subject", "call {dialed}"), (long.as_str(), "{page}")]),
        with_extra(&[("x-roistat-phone", "{marker}"), ("", "{city}")]),
    ];
    settings.push(RewriteSettings {
        phone_header: String::new(),
        visit_header: "From".into(),
        ..with_extra(&[("X-Empty", "lit {utm_term}")])
    });
    settings.push(RewriteSettings {
        phone_header: String::new(),
        marker_header: String::new(),
        visit_header: String::new(),
        ..RewriteSettings::default()
    });
    let mut bare = visit_ctx();
    bare.visit_id = None;
    bare.visit = VisitFields::default();
    let mut odd = visit_ctx();
    odd.marker = Some(" a\r\nb\t ".into());
    odd.dialed = "user\u{7f}x y".into();
    odd.caller = Default::default();
    let contexts = [visit_ctx(), CallContext::default(), bare, odd];
    let (upper, longer) = (long.to_uppercase(), long.clone() + "b");
    let names = [
        "X-Roistat-Phone",
        "x-roistat",
        "X-ROISTAT-MARKER",
        "X-Roistat-Marke",
        "X-City",
        "x-caller",
        "Subject",
        "From",
        "from",
        "f",
        "Via",
        "",
        long.as_str(),
        upper.as_str(),
        longer.as_str(),
        "X-Empty",
    ];
    for s in &settings {
        let p = Prepared::new(s);
        assert_eq!(p.known, old_writes_known_header(s), "{s:?}");
        for name in names {
            assert_eq!(
                p.writes_header(name.as_bytes()),
                old_writes_header(s, name.as_bytes()),
                "{name:?} {s:?}"
            );
        }
        for ctx in &contexts {
            let (mut old, mut new) = (b"head".to_vec(), b"head".to_vec());
            old_write_tracking_headers(ctx, s, &mut old);
            p.write(ctx, &mut new);
            assert_eq!(
                String::from_utf8_lossy(&new),
                String::from_utf8_lossy(&old),
                "{ctx:?} {s:?}"
            );
            let mut via_settings = b"head".to_vec();
            write_tracking_headers(ctx, s, &mut via_settings);
            assert_eq!(via_settings, old);
        }
    }
}
