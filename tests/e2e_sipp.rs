//! End-to-end tests: SIPp UAC -> siptrack -> SIPp UAS on loopback.
//!
//! Each test starts its own siptrack and SIPp instances on free ports, so
//! the tests run in parallel. Every test checks SIPp's own verdict (exit
//! code, successful / failed calls, message counts) and what reached the far
//! side (the UAS message log) or came back to the caller (the UAC log).
//!
//! Scenarios live in tests/sipp/. `harness_scenarios_pass_peer_to_peer`
//! runs them against each other without siptrack, so when it passes and
//! another test fails, the failure points at siptrack.
//!
//! SIPTRACK_E2E_KEEP=1 keeps each SIPp run's files (messages.log, stat.csv,
//! *_counts.csv, errors.log) and names the directory in failure messages.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{free_port, via_param, via_sent_by, SipTrace, Sipp, SippRun, Siptrack};

/// Timers and addresses of one test's siptrack.
struct Cfg {
    /// `tracking.default_destination`.
    destination: String,
    trusted: &'static str,
    t1_ms: u64,
    t2_ms: u64,
    timer_c_ms: u64,
}

impl Cfg {
    fn to(uas_port: u16, tcp: bool) -> Cfg {
        Cfg {
            destination: format!(
                "sip:127.0.0.1:{uas_port}{}",
                if tcp { ";transport=tcp" } else { "" }
            ),
            trusted: r#"["127.0.0.0/8"]"#,
            t1_ms: 500,
            t2_ms: 4000,
            timer_c_ms: 180_000,
        }
    }

    fn toml(&self) -> String {
        format!(
            r#"[sip]
listen = ["udp:127.0.0.1:{{SIP_PORT}}", "tcp:127.0.0.1:{{SIP_PORT}}"]
trusted_sources = {trusted}
route_secret = "e2e-sipp-route-secret"

[sip.timers]
t1_ms = {t1}
t2_ms = {t2}
timer_c_ms = {tc}

[tracking]
default_destination = "{dest}"

[shutdown]
drain_seconds = 1

[http]
listen = "127.0.0.1:{{HTTP_PORT}}"
"#,
            trusted = self.trusted,
            t1 = self.t1_ms,
            t2 = self.t2_ms,
            tc = self.timer_c_ms,
            dest = self.destination,
        )
    }
}

/// Summaries of SIPp runs, for assertion messages.
fn ctx(runs: &[&SippRun]) -> String {
    runs.iter()
        .map(|r| r.summary())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts SIPp's verdict: exit code 0 (all calls successful), `calls`
/// successful and none failed.
fn assert_all_successful(run: &SippRun, calls: u64, all: &[&SippRun]) {
    assert!(
        !run.timed_out,
        "{} had to be terminated after its time limit\n{}",
        run.name,
        ctx(all)
    );
    assert_eq!(
        (run.successful(), run.failed()),
        (calls, 0),
        "{}: successful/failed calls\n{}",
        run.name,
        ctx(all)
    );
    assert_eq!(
        run.exit_code,
        Some(0),
        "{}: exit code\n{}",
        run.name,
        ctx(all)
    );
}

fn assert_alive(proxy: &mut Siptrack) {
    assert!(proxy.is_alive(), "siptrack died\n{}", proxy.log());
}

/// Whether a Via value is siptrack's own: sent-by is its listen address on
/// `transport` ("UDP" / "TCP").
fn is_proxy_via(via: &str, proxy: &Siptrack, transport: &str) -> bool {
    via_sent_by(via)
        .is_some_and(|(t, host)| t == transport && host == format!("127.0.0.1:{}", proxy.sip_port))
}

/// Whether a Record-Route / Route value names siptrack.
fn names_proxy(value: &str, proxy: &Siptrack) -> bool {
    value.contains(&format!("@127.0.0.1:{};", proxy.sip_port))
        || value.contains(&format!("@127.0.0.1:{}>", proxy.sip_port))
        || value.contains(&format!("sip:127.0.0.1:{};", proxy.sip_port))
        || value.contains(&format!("sip:127.0.0.1:{}>", proxy.sip_port))
}

fn norm(v: &str) -> String {
    v.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Messages grouped by Call-ID.
fn by_call<'a>(msgs: impl IntoIterator<Item = &'a SipTrace>) -> HashMap<String, Vec<&'a SipTrace>> {
    let mut m: HashMap<String, Vec<&SipTrace>> = HashMap::new();
    for msg in msgs {
        if let Some(id) = msg.call_id() {
            m.entry(id).or_default().push(msg);
        }
    }
    m
}

/// How many copies of a response with `status` to a request `method` the
/// SIPp instance sent in call `call` (first transmission and
/// retransmissions).
fn responses_sent(run: &SippRun, call: &str, status: u16, method: &str) -> usize {
    run.sent()
        .filter(|m| {
            m.is_response(status)
                && m.cseq_method().as_deref() == Some(method)
                && m.call_id().as_deref() == Some(call)
        })
        .count()
}

/// All `msgs` carry the same top Via branch (retransmissions of one request).
fn one_branch(msgs: &[&&SipTrace]) -> bool {
    msgs.windows(2)
        .all(|w| w[0].top_branch() == w[1].top_branch())
}

/// A complete call set (INVITE/180/200/ACK/BYE/200) through siptrack, and
/// what each side saw of the proxy's Via, Record-Route and Route handling.
fn basic_calls(tcp_in: bool, tcp_out: bool, calls: u32) {
    let uas_port = free_port();
    let mut proxy = Siptrack::start(&Cfg::to(uas_port, tcp_out).toml());

    // The UAS lingers after each BYE to answer retransmissions; over TCP
    // there are none.
    let mut uas = Sipp::uas("uas.xml")
        .port(uas_port)
        .calls(calls)
        .pause_ms(if tcp_out { 0 } else { 1000 })
        .time_limit(Duration::from_secs(45));
    if tcp_out {
        uas = uas.tcp();
    }
    let uas = uas.spawn();
    let mut uac = Sipp::uac("uac.xml", proxy.sip_addr())
        .calls(calls)
        .rate(50)
        .arg("-recv_timeout")
        .arg("15000")
        .time_limit(Duration::from_secs(40));
    if tcp_in {
        uac = uac.tcp();
    }
    let uac = uac.run();
    let uas = uas.wait_at_most(Duration::from_secs(10));
    let all = [&uac, &uas];
    let n = u64::from(calls);

    // SIPp's verdict on both sides.
    assert_all_successful(&uac, n, &all);
    assert_all_successful(&uas, n, &all);
    assert_eq!(uac.count("180", "Recv"), n, "180s forwarded\n{}", ctx(&all));
    assert_alive(&mut proxy);

    let (t_in, t_out) = (
        if tcp_in { "TCP" } else { "UDP" },
        if tcp_out { "TCP" } else { "UDP" },
    );
    let expected_rr = if tcp_in == tcp_out { 1 } else { 2 };

    // What reached the UAS.
    let uas_in = by_call(uas.received().filter(|m| !m.lost));
    assert_eq!(
        uas_in.len(),
        calls as usize,
        "calls seen by the UAS\n{}",
        ctx(&all)
    );
    for (call, msgs) in &uas_in {
        let invite = msgs
            .iter()
            .find(|m| m.is_request("INVITE"))
            .unwrap_or_else(|| panic!("{call}: no INVITE reached the UAS\n{}", ctx(&all)));
        let vias = invite.header_values("via");
        assert_eq!(vias.len(), 2, "{call}: INVITE Vias at the UAS: {vias:?}");
        assert!(
            is_proxy_via(&vias[0], &proxy, t_out),
            "{call}: top Via of the INVITE at the UAS is not siptrack's ({t_out}): {vias:?}"
        );
        assert_eq!(
            invite.header("max-forwards").as_deref(),
            Some("69"),
            "{call}: Max-Forwards not decremented"
        );
        let rr = invite.header_values("record-route");
        assert_eq!(
            rr.len(),
            expected_rr,
            "{call}: Record-Route at the UAS: {rr:?}\n{}",
            invite.text
        );
        assert!(
            rr.iter()
                .all(|r| names_proxy(r, &proxy) && r.contains(";lr")),
            "{call}: Record-Route not siptrack's loose route: {rr:?}"
        );
        if expected_rr == 2 {
            // RFC 5658: the top entry is the interface towards the UAS.
            assert_eq!(
                rr[0].to_ascii_lowercase().contains("transport=tcp"),
                tcp_out,
                "{call}: first Record-Route should name the {t_out} side: {rr:?}"
            );
            assert_eq!(
                rr[1].to_ascii_lowercase().contains("transport=tcp"),
                tcp_in,
                "{call}: second Record-Route should name the {t_in} side: {rr:?}"
            );
        }

        // One ACK and one BYE, or retransmissions of them (an ACK is
        // repeated only when the UAS repeated its 200, e.g. under load).
        let acks: Vec<_> = msgs.iter().filter(|m| m.is_request("ACK")).collect();
        let oks = responses_sent(&uas, call, 200, "INVITE");
        assert!(
            !acks.is_empty() && acks.len() <= oks && one_branch(&acks),
            "{call}: {} ACKs at the UAS for {oks} 200s sent\n{}",
            acks.len(),
            ctx(&all)
        );
        let byes: Vec<_> = msgs.iter().filter(|m| m.is_request("BYE")).collect();
        assert!(
            !byes.is_empty() && one_branch(&byes),
            "{call}: BYEs at the UAS\n{}",
            ctx(&all)
        );
        for req in acks.iter().chain(byes.iter()) {
            let vias = req.header_values("via");
            assert!(
                vias.len() == 2 && is_proxy_via(&vias[0], &proxy, t_out),
                "{call}: {} at the UAS should carry siptrack's Via on top of the caller's: {vias:?}",
                req.first_line()
            );
            let routes = req.header_values("route");
            assert!(
                routes.iter().all(|r| !names_proxy(r, &proxy)),
                "{call}: siptrack left its own Route in the {}: {routes:?}",
                req.first_line()
            );
            assert!(
                req.first_line().contains(&format!("127.0.0.1:{uas_port}")),
                "{call}: Request-URI should be the UAS Contact: {}",
                req.first_line()
            );
        }
    }

    // What the caller saw and sent: the 200 carries siptrack's
    // Record-Route(s); the BYE goes out with the route set (reversed
    // Record-Route, RFC 3261 12.1.2).
    let uac_calls = by_call(uac.messages.iter().filter(|m| !m.lost));
    assert_eq!(uac_calls.len(), calls as usize, "calls in the UAC log");
    for (call, msgs) in &uac_calls {
        let ok = msgs
            .iter()
            .find(|m| m.is_response(200) && m.cseq_method().as_deref() == Some("INVITE"))
            .unwrap_or_else(|| panic!("{call}: the UAC got no 200 for the INVITE"));
        let rr = ok.header_values("record-route");
        assert_eq!(
            rr.len(),
            expected_rr,
            "{call}: Record-Route in the 200 at the UAC: {rr:?}"
        );
        let bye = msgs
            .iter()
            .find(|m| m.dir == common::Dir::Sent && m.is_request("BYE"))
            .unwrap_or_else(|| panic!("{call}: the UAC sent no BYE"));
        let route: Vec<String> = bye.header_values("route").iter().map(|v| norm(v)).collect();
        let want: Vec<String> = rr.iter().rev().map(|v| norm(v)).collect();
        assert_eq!(
            route, want,
            "{call}: Route of the UAC's BYE vs Record-Route\n{}",
            bye.text
        );
        let bye_ok = msgs
            .iter()
            .find(|m| m.is_response(200) && m.cseq_method().as_deref() == Some("BYE"));
        assert!(bye_ok.is_some(), "{call}: the UAC got no 200 for its BYE");
    }
}

/// a. 100 calls over UDP; BYE routed through siptrack by its Record-Route.
#[test]
fn udp_calls_complete_and_bye_follows_record_route() {
    basic_calls(false, false, 100);
}

/// b. The same over TCP on both sides.
#[test]
fn tcp_calls_complete_and_bye_follows_record_route() {
    basic_calls(true, true, 100);
}

/// c. UDP in, TCP out: double Record-Route (RFC 5658) reaches the UAS.
#[test]
fn udp_to_tcp_bridging_double_record_route() {
    basic_calls(false, true, 50);
}

/// d. Caller CANCELs after the 180: 200 for the CANCEL and 487 for the
/// INVITE; the UAS gets siptrack's own CANCEL and the hop-by-hop ACK.
#[test]
fn cancel_before_answer_gives_487() {
    let calls = 10u32;
    let n = u64::from(calls);
    let (mut proxy, uac, uas) = failed_calls(
        "uac_cancel.xml",
        "uas_cancel.xml",
        calls,
        &["-recv_timeout", "10000"],
    );
    let all = [&uac, &uas];

    assert_all_successful(&uac, n, &all);
    assert_eq!(
        uac.count("487", "Recv"),
        n,
        "487s at the caller\n{}",
        ctx(&all)
    );
    assert_eq!(
        uac.count("200", "Recv"),
        n,
        "200s for the CANCELs\n{}",
        ctx(&all)
    );
    assert_all_successful(&uas, n, &all);
    assert_alive(&mut proxy);

    let uas_in = by_call(uas.received());
    assert_eq!(
        uas_in.len(),
        calls as usize,
        "calls seen by the UAS\n{}",
        ctx(&all)
    );
    for (call, msgs) in &uas_in {
        let invite = msgs
            .iter()
            .find(|m| m.is_request("INVITE"))
            .unwrap_or_else(|| panic!("{call}: no INVITE at the UAS"));
        let branch = invite.top_branch();
        // One CANCEL (or its retransmissions), siptrack's own.
        let cancels: Vec<_> = msgs.iter().filter(|m| m.is_request("CANCEL")).collect();
        assert!(
            !cancels.is_empty() && one_branch(&cancels),
            "{call}: CANCELs at the UAS\n{}",
            ctx(&all)
        );
        let vias = cancels[0].header_values("via");
        assert!(
            vias.len() == 1 && is_proxy_via(&vias[0], &proxy, "UDP"),
            "{call}: the CANCEL at the UAS should be siptrack's own (one Via, siptrack's): {vias:?}"
        );
        assert_eq!(
            cancels[0].top_branch(),
            branch,
            "{call}: CANCEL branch must equal the forwarded INVITE's (RFC 3261 9.1)"
        );
        assert_acks_hop_by_hop(&uas, &proxy, call, msgs, 487);
    }
}

/// A fresh siptrack, then `calls` calls of a UAC/UAS scenario pair that
/// end in a failure response, at 10 calls per second.
fn failed_calls(
    uac_xml: &str,
    uas_xml: &str,
    calls: u32,
    uac_args: &[&str],
) -> (Siptrack, SippRun, SippRun) {
    let uas_port = free_port();
    let proxy = Siptrack::start(&Cfg::to(uas_port, false).toml());
    let uas = Sipp::uas(uas_xml)
        .port(uas_port)
        .calls(calls)
        .time_limit(Duration::from_secs(30))
        .spawn();
    let mut uac = Sipp::uac(uac_xml, proxy.sip_addr())
        .calls(calls)
        .rate(10)
        .time_limit(Duration::from_secs(25));
    for arg in uac_args {
        uac = uac.arg(*arg);
    }
    let uac = uac.run();
    let uas = uas.wait_at_most(Duration::from_secs(8));
    (proxy, uac, uas)
}

/// The UAS got at least one ACK for the `code` it sent, at most one per
/// copy of it, each generated by siptrack (its Via only: the caller's ACK,
/// forwarded, would carry the caller's Via under siptrack's) on the
/// INVITE's branch (RFC 3261 17.1.1.3).
fn assert_acks_hop_by_hop(
    uas: &SippRun,
    proxy: &Siptrack,
    call: &str,
    msgs: &[&SipTrace],
    code: u16,
) {
    let branch = msgs
        .iter()
        .find(|m| m.is_request("INVITE"))
        .and_then(|m| m.top_branch());
    let acks: Vec<_> = msgs.iter().filter(|m| m.is_request("ACK")).collect();
    let finals = responses_sent(uas, call, code, "INVITE");
    assert!(
        !acks.is_empty() && acks.len() <= finals,
        "{call}: the UAS got {} ACKs for {finals} {code}s sent:\n{}",
        acks.len(),
        acks.iter()
            .map(|a| a.text.as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    for ack in &acks {
        let vias = ack.header_values("via");
        assert!(
            vias.len() == 1 && is_proxy_via(&vias[0], proxy, "UDP"),
            "{call}: the ACK for the {code} must be siptrack's own: {vias:?}\n{}",
            ack.text
        );
        assert_eq!(
            ack.top_branch(),
            branch,
            "{call}: ACK branch vs INVITE branch"
        );
    }
}

/// e. UAS answers 486: the caller gets 486; the UAS gets one ACK per 486
/// (normally one), generated by siptrack (hop by hop), never the caller's
/// ACK forwarded.
#[test]
fn busy_486_is_relayed_and_acked_hop_by_hop() {
    let calls = 10u32;
    let n = u64::from(calls);
    let (mut proxy, uac, uas) = failed_calls("uac_busy.xml", "uas_busy.xml", calls, &[]);
    let all = [&uac, &uas];

    assert_all_successful(&uac, n, &all);
    assert_eq!(
        uac.count("486", "Recv"),
        n,
        "486s at the caller\n{}",
        ctx(&all)
    );
    assert_all_successful(&uas, n, &all);
    assert_eq!(
        uas.count("ACK", "Unexp"),
        0,
        "unexpected ACKs\n{}",
        ctx(&all)
    );
    assert_alive(&mut proxy);

    let uas_in = by_call(uas.received());
    assert_eq!(
        uas_in.len(),
        calls as usize,
        "calls seen by the UAS\n{}",
        ctx(&all)
    );
    for (call, msgs) in &uas_in {
        assert_acks_hop_by_hop(&uas, &proxy, call, msgs, 486);
    }
}

/// f. The UAS never answers: after Timer B (64*T1 = 6.4 s with T1 = 100 ms)
/// the caller gets 408; the INVITE was retransmitted downstream (Timer A)
/// and no CANCEL was sent (no provisional came).
#[test]
fn silent_uas_gives_408_after_timer_b() {
    let uas_port = free_port();
    let mut cfg = Cfg::to(uas_port, false);
    cfg.t1_ms = 100;
    cfg.t2_ms = 400;
    cfg.timer_c_ms = 60_000;
    let mut proxy = Siptrack::start(&cfg.toml());
    let uas = Sipp::uas("uas_silent.xml")
        .port(uas_port)
        .calls(1)
        .pause_ms(15_000)
        .time_limit(Duration::from_secs(30))
        .spawn();
    let uac = Sipp::uac("uac_timeout.xml", proxy.sip_addr())
        .calls(1)
        .rate(1)
        .time_limit(Duration::from_secs(25))
        .run();
    // Let a late message (a CANCEL, say) show up before looking.
    std::thread::sleep(Duration::from_millis(500));
    let uas = uas.stop();
    let all = [&uac, &uas];

    assert_all_successful(&uac, 1, &all);
    assert_eq!(
        uac.count("408", "Recv"),
        1,
        "408 at the caller\n{}",
        ctx(&all)
    );
    assert_alive(&mut proxy);

    let invite_at = uac
        .sent_requests("INVITE")
        .first()
        .map(|m| m.time)
        .expect("the UAC log has its INVITE");
    let got_408 = uac
        .received_responses(408)
        .first()
        .map(|m| m.time)
        .expect("the UAC log has the 408");
    let waited = got_408 - invite_at;
    assert!(
        (5.5..15.0).contains(&waited),
        "408 came {waited:.2} s after the INVITE; Timer B is 6.4 s\n{}",
        ctx(&all)
    );

    let invites = uas.received_requests("INVITE");
    assert!(
        invites.len() >= 3,
        "siptrack should retransmit the INVITE over UDP (Timer A); the UAS got {}\n{}",
        invites.len(),
        ctx(&all)
    );
    let branches: std::collections::HashSet<_> = invites.iter().map(|m| m.top_branch()).collect();
    assert_eq!(
        branches.len(),
        1,
        "retransmissions must keep the branch: {branches:?}"
    );
    let others: Vec<_> = uas
        .received()
        .filter(|m| !m.is_request("INVITE"))
        .map(|m| m.first_line().to_string())
        .collect();
    assert!(
        others.is_empty(),
        "the silent UAS should get nothing but the INVITE (no CANCEL without a provisional): {others:?}"
    );
}

/// g. 10% loss on both legs: every call completes thanks to
/// retransmissions (SIPp's on its side, siptrack's timers towards the UAS
/// and stored responses towards the caller).
#[test]
fn calls_survive_ten_percent_packet_loss() {
    let calls = 50u32;
    let n = u64::from(calls);
    let uas_port = free_port();
    let mut cfg = Cfg::to(uas_port, false);
    cfg.t1_ms = 200;
    cfg.t2_ms = 2000;
    cfg.timer_c_ms = 60_000;
    let mut proxy = Siptrack::start(&cfg.toml());
    // -abortunexp off: see tests/sipp/uas.xml (SIPp re-sends only the one
    // message that followed a reception); every call must still complete.
    let uas = Sipp::uas("uas.xml")
        .port(uas_port)
        .calls(calls)
        .lost(10)
        .pause_ms(10_000)
        .arg("-default_behaviors")
        .arg("all,-abortunexp")
        .time_limit(Duration::from_secs(55))
        .spawn();
    let uac = Sipp::uac("uac.xml", proxy.sip_addr())
        .calls(calls)
        .rate(10)
        .lost(10)
        .arg("-default_behaviors")
        .arg("all,-abortunexp")
        .time_limit(Duration::from_secs(45))
        .run();
    let uas = uas.wait_at_most(Duration::from_secs(15));
    let all = [&uac, &uas];

    assert_all_successful(&uac, n, &all);
    assert_all_successful(&uas, n, &all);
    assert!(
        uac.retransmissions() + uas.retransmissions() > 0,
        "no retransmissions at all: was -lost applied?\n{}",
        ctx(&all)
    );
    assert_alive(&mut proxy);

    let byes = by_call(uas.received_requests("BYE").into_iter().filter(|m| !m.lost));
    assert_eq!(
        byes.len(),
        calls as usize,
        "calls whose BYE reached the UAS\n{}",
        ctx(&all)
    );
    for (call, msgs) in &byes {
        let via = msgs[0].top_via().unwrap_or_default();
        assert!(
            is_proxy_via(&via, &proxy, "UDP"),
            "{call}: BYE at the UAS without siptrack's Via on top: {via}"
        );
    }
}

/// h. A new call from outside trusted_sources gets 403 and nothing is
/// forwarded.
#[test]
fn untrusted_source_gets_403_and_nothing_is_forwarded() {
    let calls = 5u32;
    let n = u64::from(calls);
    let uas_port = free_port();
    let mut cfg = Cfg::to(uas_port, false);
    // The UAC sends from 127.0.0.1, which is not trusted.
    cfg.trusted = r#"["127.0.0.2/32"]"#;
    let mut proxy = Siptrack::start(&cfg.toml());
    let uas = Sipp::uas("uas.xml")
        .port(uas_port)
        .calls(1)
        .time_limit(Duration::from_secs(30))
        .spawn();
    let uac = Sipp::uac("uac_forbidden.xml", proxy.sip_addr())
        .calls(calls)
        .rate(10)
        .time_limit(Duration::from_secs(20))
        .run();
    // Anything wrongly forwarded would arrive well within this.
    std::thread::sleep(Duration::from_secs(1));
    let uas = uas.stop();
    let all = [&uac, &uas];

    assert_all_successful(&uac, n, &all);
    assert_eq!(
        uac.count("403", "Recv"),
        n,
        "403s at the caller\n{}",
        ctx(&all)
    );
    assert_alive(&mut proxy);
    assert!(
        uas.messages.is_empty(),
        "the UAS must receive nothing, got:\n{}",
        uas.messages
            .iter()
            .map(|m| m.first_line())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(uas.created(), 0, "calls created at the UAS\n{}", ctx(&all));
}

/// i. OPTIONS addressed to siptrack itself gets 200 (trunk keep-alive), over
/// UDP and over TCP.
#[test]
fn options_to_proxy_gets_200() {
    let uas_port = free_port();
    let mut proxy = Siptrack::start(&Cfg::to(uas_port, false).toml());
    for tcp in [false, true] {
        let mut uac = Sipp::uac("uac_options.xml", proxy.sip_addr())
            .calls(3)
            .rate(10)
            .time_limit(Duration::from_secs(15));
        if tcp {
            uac = uac.tcp().name("uac-tcp");
        }
        let uac = uac.run();
        assert_all_successful(&uac, 3, &[&uac]);
        assert_eq!(uac.count("200", "Recv"), 3, "200s\n{}", uac.summary());
        let sent = by_call(uac.sent_requests("OPTIONS"));
        for resp in uac.received_responses(200) {
            let call = resp.call_id().unwrap_or_default();
            let req = sent
                .get(&call)
                .and_then(|v| v.first())
                .unwrap_or_else(|| panic!("{call}: 200 for an OPTIONS the UAC did not send"));
            let vias = resp.header_values("via");
            assert_eq!(
                vias.len(),
                1,
                "{call}: only the UAC's Via in the 200:\n{}",
                resp.text
            );
            assert_eq!(
                via_param(&vias[0], "branch"),
                req.top_branch(),
                "{call}: the 200 must answer the UAC's own transaction:\n{}",
                resp.text
            );
            assert_eq!(resp.cseq_method().as_deref(), Some("OPTIONS"));
        }
    }
    assert_alive(&mut proxy);
}

/// The harness itself: every UAC scenario against its UAS scenario directly,
/// without siptrack. If this fails, the scenarios (or SIPp) are at fault,
/// not the proxy.
#[test]
fn harness_scenarios_pass_peer_to_peer() {
    let pairs: [(&str, &str, bool, u32); 5] = [
        ("uac.xml", "uas.xml", false, 20),
        ("uac.xml", "uas.xml", true, 20),
        ("uac_cancel.xml", "uas_cancel.xml", false, 5),
        ("uac_busy.xml", "uas_busy.xml", false, 5),
        ("uac_options.xml", "uas_options.xml", false, 3),
    ];
    for (uac_file, uas_file, tcp, calls) in pairs {
        // Over TCP the UAS must not linger: the UAC closes the connection
        // when it is done, and SIPp fails the calls still on it.
        let mut uas = Sipp::uas(uas_file)
            .calls(calls)
            .pause_ms(if tcp { 0 } else { 500 })
            .time_limit(Duration::from_secs(20));
        if tcp {
            uas = uas.tcp();
        }
        let uas = uas.spawn();
        let mut uac = Sipp::uac(uac_file, uas.addr())
            .calls(calls)
            .rate(50)
            .time_limit(Duration::from_secs(15));
        if tcp {
            uac = uac.tcp();
        }
        let uac = uac.run();
        let uas = uas.wait_at_most(Duration::from_secs(8));
        let all = [&uac, &uas];
        assert_all_successful(&uac, u64::from(calls), &all);
        assert_all_successful(&uas, u64::from(calls), &all);
        assert_eq!(
            SippRun::call_ids(uas.received()).len(),
            calls as usize,
            "{uac_file} -> {uas_file}: calls in the UAS log\n{}",
            ctx(&all)
        );
    }
}
