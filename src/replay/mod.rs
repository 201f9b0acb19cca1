//! `siptrack replay` (SPEC section 6): captured SIP through the real proxy
//! core, call tracker and lead pipeline, and captured RTP through the
//! relay and the recorder (media.rs), on a virtual clock and network.
//! The output is JSON lines; the same capture and config always give the
//! same bytes and the same WAVs (no wall clock, no randomness: branch and
//! route secrets are fixed, the store is fresh and in memory, media ports
//! come from the bare allocator, keys are sorted).

pub mod capture;
pub mod cli;
pub mod engine;
pub mod hops;
pub mod media;
pub mod stream;
pub mod text;

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::clock::Clock;
use crate::config::{Config, ListenAddr};
use crate::crm::outbox::Plan;
use crate::leads::pipeline::{call_lead, new_deal_status};
use crate::media::anchor::{Anchor, MediaSettings};
use crate::media::ports::PortAllocator;
use crate::media::relay_io::QUARANTINE_MS;
use crate::node::Node;
use crate::proxy::route::Identity;
use crate::proxy::{Chain, Proxy, ProxySettings, Transport};
use crate::store::leads::Job;
use crate::store::Store;
use crate::tracking::pools::Pools;
use crate::tracking::TrackingRouter;

/// The config a replay uses without `--config`: siptrack between every
/// caller and a PBX at 192.0.2.1 (TEST-NET-1), trusting every source.
pub const DEFAULT_CONFIG: &str = r#"[sip]
listen = ["udp:192.0.2.10:5060", "tcp:192.0.2.10:5060"]
trusted_sources = ["0.0.0.0/0", "::/0"]
route_secret = "siptrack-replay"

[tracking]
default_destination = "sip:192.0.2.1:5060"
"#;

/// Replays one capture; returns the output lines (JSON, no newline). A
/// capture that cannot be replayed gives one `refused` line and `Err`
/// with the reason. Recorded calls' WAVs are written to `recordings`.
pub async fn replay(
    name: &str,
    bytes: &[u8],
    config: &Config,
    recordings: &Path,
) -> Result<Vec<String>, (Vec<String>, String)> {
    let refuse = |reason: String| {
        let line = json!({"event": "refused", "file": name, "reason": reason}).to_string();
        Err((vec![line], reason))
    };
    let contents = match capture::read(bytes) {
        Ok(c) => c,
        Err(e) => return refuse(e.to_string()),
    };
    let msgs = match stream::sip_messages(&contents.packets, config.sip.max_message_bytes) {
        Ok(m) => m,
        Err(e) => return refuse(e.to_string()),
    };
    if msgs.is_empty() {
        let stopped = contents
            .stopped
            .as_ref()
            .map(|w| format!("; reading stopped at {w}"))
            .unwrap_or_default();
        return refuse(format!(
            "no SIP over UDP or TCP in {} frames ({} without UDP, TCP or SCTP){stopped}",
            contents.frames, contents.undecoded
        ));
    }
    let mut head = json!({
        "event": "capture",
        "file": name,
        "frames": contents.frames,
        "sip_messages": msgs.len(),
    });
    if let Some(why) = &contents.stopped {
        head["stopped_early"] = json!(why);
    }
    // Proxies the capture went through, other than siptrack itself (a
    // capture taken with siptrack in the path): siptrack stands in for them.
    let hops = hops::Hops::find(&msgs);
    let foreign: Vec<String> = hops
        .proxies()
        .iter()
        .filter(|a| !config.sip.listen.iter().any(|l| l.addr == **a))
        .map(|a| a.to_string())
        .collect();
    if !foreign.is_empty() {
        head["proxy_hops"] = json!(foreign);
    }
    let mut out = vec![head.to_string()];

    let listen: Vec<ListenAddr> = config.sip.listen.clone();
    let proxy_addr = listen
        .iter()
        .find(|l| l.transport == Transport::Udp)
        .or(listen.first())
        .map(|l| l.addr)
        .unwrap_or_else(|| ([192, 0, 2, 10], 5060).into());
    let secret = config
        .sip
        .route_secret
        .clone()
        .unwrap_or_else(|| "siptrack-replay".into());
    let settings = ProxySettings {
        identity: Identity::new(
            listen,
            config.sip.advertised_host.clone(),
            secret.as_bytes(),
        ),
        trusted_sources: config.sip.trusted_sources.clone(),
        max_message_bytes: config.sip.max_message_bytes,
        timers: config.sip.timers,
        instance_nonce: 0,
        dialog_max_ms: config.leads.max_call_seconds * 1000,
        untrusted: config.sip.untrusted,
    };
    // The media phase as in a live run, on the bare port allocator (no
    // sockets): the same ports in the same order every time.
    let m = &config.media;
    let ports = match PortAllocator::new(m.port_min, m.port_max, QUARANTINE_MS) {
        Ok(p) => p,
        Err(e) => return refuse(format!("media ports: {e}")),
    };
    let anchor = Arc::new(Mutex::new(Anchor::new(
        MediaSettings {
            enabled: m.record_calls,
            advertised_ip: m.advertised_ip,
            advertised_other: m.advertised_other,
        },
        Box::new(ports),
    )));
    let datagrams = stream::media_datagrams(&contents.packets);
    let media = media::ReplayMedia::new(recordings.to_path_buf(), m.rtp_timeout_seconds * 1000);
    let mut eng = engine::Engine::new(&msgs, proxy_addr, hops).with_media(&datagrams, media);
    // The capture's time is the clock of everything the replay runs:
    // pool holds, call records, the store.
    let clock = Clock::manual(eng.epoch_ms());
    let pools = Arc::new(Mutex::new(Pools::new(config.tracking.pools.clone())));
    let router = TrackingRouter::new(config, pools, clock.clone());
    let phases = Chain {
        router: Box::new(router),
        then: vec![Box::new(Anchor::phase(&anchor))],
    };
    let proxy = Proxy::new(settings, Box::new(phases));
    let mut node = Node::new(proxy, clock.now(), config.leads.max_call_seconds).with_media(anchor);
    eng.run(&mut node, &clock);

    // Leads: a fresh store of its own in memory, never the configured
    // one; nothing but the recordings touches the disk.
    let store = Store::memory(clock);
    let status = new_deal_status(&config.leads);
    let nothing_sent = Plan::default();
    for line in &eng.lines {
        let mut v = line.value.clone();
        if let Value::Object(m) = &mut v {
            m.insert("t_ms".into(), json!(line.t_ms));
        }
        out.push(v.to_string());
        if let Some(r) = &line.call {
            let job = Arc::new(vec![Job::Lead(call_lead(r), Some(r.clone()))]);
            match store
                .record_calls(job, &config.leads.dedup, &status, &nothing_sent)
                .await
            {
                Ok(done) => {
                    for rec in done {
                        out.push(
                            json!({
                                "event": "lead",
                                "t_ms": line.t_ms,
                                "call_id": r.call_id,
                                "lead_id": rec.lead_id,
                                "deal_id": rec.deal_id,
                                "outcome": rec.outcome,
                            })
                            .to_string(),
                        );
                    }
                }
                Err(e) => return refuse(format!("scratch store: {e}")),
            }
        }
    }
    Ok(out)
}
