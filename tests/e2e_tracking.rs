//! Call tracking end to end (issue 3, item 2): SIPp UAC → siptrack → SIPp
//! UAS on loopback. The UAS scenario checks the rewritten INVITE with
//! regular expressions (a mismatch fails the call in SIPp's own counters),
//! and the test reads the UAS's message log for what must be absent.

mod common;

use common::checks::{calls_through, line};
use common::{free_port, Siptrack};

fn config(uas_port: u16, extra_tracking: &str, extra_rewrite: &str) -> String {
    format!(
        r#"[sip]
listen = ["udp:127.0.0.1:{{SIP_PORT}}", "tcp:127.0.0.1:{{SIP_PORT}}"]
trusted_sources = ["127.0.0.0/8"]
route_secret = "e2e-tracking"

[tracking]
default_destination = "sip:pbx@127.0.0.1:{uas_port}"
{extra_tracking}

[[tracking.numbers]]
number = "+7 (495) 111-11-11"
destination = "sip:roistat123_1@127.0.0.1:{uas_port}"
marker = "google_cpc"
source = "google"

[[tracking.numbers]]
number = "8 495 222-22-22"
destination = "sip:office@127.0.0.1:{uas_port}"
marker = "yandex"

[rewrite]
extra_headers = "X-City={{city}}, X-Src={{source}}, X-Caller={{caller}}, X-Dialed={{dialed}}"
number_substitution = "74952222222=74997777777"
sip_login_map = "roistat123_1=1231"
{extra_rewrite}

[http]
listen = "127.0.0.1:{{HTTP_PORT}}"
"#
    )
}

#[test]
fn static_number_invite_carries_tracking_headers_and_normalised_numbers() {
    let uas_port = free_port();
    let proxy = Siptrack::start(&config(uas_port, "", ""));
    let (_, invites) = calls_through(
        &proxy,
        uas_port,
        "84951111111",
        "8-916-123-45-67",
        &[
            format!("^INVITE sip:74951111111@127\\.0\\.0\\.1:{uas_port} SIP/2\\.0"),
            line("X-Roistat-Phone", "74951111111"),
            line("X-Roistat-Marker", "google_cpc"),
            line("X-Roistat", "google_cpc"),
            line("X-Src", "google"),
            line("X-Caller", "79161234567"),
            line("X-Dialed", "74951111111"),
            "From: \"Caller\" <sip:79161234567@127\\.0\\.0\\.1:".into(),
        ],
    );
    for inv in &invites {
        // A static number has no visit: {city} is empty, so no X-City.
        assert!(inv.header("X-City").is_none(), "{}", inv.text);
        assert_eq!(inv.headers("X-Roistat-Phone").len(), 1, "{}", inv.text);
    }
}

#[test]
fn substituted_number_reaches_request_uri_and_to() {
    let uas_port = free_port();
    let proxy = Siptrack::start(&config(uas_port, "", ""));
    calls_through(
        &proxy,
        uas_port,
        "74952222222",
        "+79161234567",
        &[
            format!("^INVITE sip:74997777777@127\\.0\\.0\\.1:{uas_port} SIP/2\\.0"),
            "To: 74952222222 <sip:74997777777@".into(),
            line("X-Roistat-Phone", "74952222222"),
            line("X-Roistat-Marker", "yandex"),
            line("X-Caller", "79161234567"),
        ],
    );
}

#[test]
fn sip_address_mode_with_login_map_and_caller_passed_through() {
    let uas_port = free_port();
    let proxy = Siptrack::start(&config(
        uas_port,
        "send_sip_address_instead_of_dialed_number = true\nnormalize_caller = false",
        "",
    ));
    let (_, invites) = calls_through(
        &proxy,
        uas_port,
        "74951111111",
        "8-916-123-45-67",
        &[
            format!("^INVITE sip:1231@127\\.0\\.0\\.1:{uas_port} SIP/2\\.0"),
            format!("To: 74951111111 <sip:1231@127\\.0\\.0\\.1:{uas_port}>"),
            line("X-Roistat-Phone", "74951111111"),
            line("X-Caller", "8-916-123-45-67"),
        ],
    );
    for inv in &invites {
        let from = inv.header("From").unwrap_or_default();
        assert!(
            from.starts_with("\"Caller\" <sip:8-916-123-45-67@127.0.0.1:"),
            "the From user must arrive byte for byte: {from}"
        );
    }
}

#[test]
fn unknown_number_goes_to_the_default_destination_without_a_visit() {
    let uas_port = free_port();
    let proxy = Siptrack::start(&config(uas_port, "", ""));
    let (_, invites) = calls_through(
        &proxy,
        uas_port,
        "84959999999",
        "anonymous",
        &[
            format!("^INVITE sip:74959999999@127\\.0\\.0\\.1:{uas_port} SIP/2\\.0"),
            line("X-Roistat-Phone", "74959999999"),
            "From: \"Caller\" <sip:anonymous@".into(),
        ],
    );
    for inv in &invites {
        for absent in ["X-Roistat", "X-Roistat-Marker", "X-Src", "X-City"] {
            assert!(inv.header(absent).is_none(), "{absent}: {}", inv.text);
        }
    }
}
