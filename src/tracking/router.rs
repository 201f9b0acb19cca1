//! The [`ProxyPhases`] of a call-tracking proxy: finds the tracking number
//! dialed, its destination and channel or visit, and applies the rewrite
//! rules to the INVITE.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use smol_str::SmolStr;

use crate::calls::CallInfo;
use crate::clock::Clock;
use crate::config::{Config, Destination, StaticNumber};
use crate::phone::normalize_user_smol;
use crate::proxy::hooks::{destination_uri_smol, NextHop, ProxyPhases, Refusal};
use crate::proxy::{Millis, Peer};
use crate::rewrite::{self, CallContext, Prepared, RewriteSettings};
use crate::sip::{Message, Method, Patch};

use super::pools::{NumberMap, Pools};

pub struct TrackingRouter {
    /// Configured numbers only (see [`NumberMap`]).
    numbers: NumberMap<StaticNumber>,
    default_destination: Option<Destination>,
    settings: RewriteSettings,
    /// What the INVITE rules need of `settings`, worked out once.
    prepared: Prepared,
    pools: Arc<Mutex<Pools>>,
    /// Each pool's destination, by its index in `Pools::configs` (fixed
    /// once the pools exist), so a call borrows it instead of cloning it
    /// under the lock.
    pool_destinations: Vec<Destination>,
    /// Unix milliseconds: holds are wall-clock and survive restarts.
    clock: Clock,
    /// The forwarded Request-URI and To edit of each configured number
    /// (static or pool), made on its first call: they depend on the
    /// configuration alone, and building the URI cost ~650 instructions
    /// and an allocation per INVITE (issue 15). At most one entry per
    /// configured number: unknown numbers are not kept.
    routes: RefCell<HashMap<SmolStr, (SmolStr, rewrite::ToEdit), ahash::RandomState>>,
}

/// Where one call goes and what it carries, before any edit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup<'a> {
    /// Borrowed from the router's configuration.
    pub destination: Cow<'a, Destination>,
    pub phone_destination: bool,
    pub context: CallContext,
    /// The caller's user part as it came (the PAI's with `Privacy: id`).
    pub caller_raw: SmolStr,
    /// The caller's phone for the call record and its lead: T-5's form
    /// whatever `normalize_caller` says (SPEC T-5: every phone entering
    /// the lead pipeline is normalised, so one client's calls match
    /// across formats); empty when withheld. `context.caller` is what the
    /// INVITE carries ({caller}), as it came when `normalize_caller` is off.
    pub phone: SmolStr,
    /// `context.caller` is T-5's form of the From user part, which the
    /// rewrite then takes instead of normalising the From again.
    pub caller_is_from: bool,
    /// The dialed number is a configured one (static, or of a pool whose
    /// destination the router keeps): its route may be kept.
    pub configured: bool,
}

impl TrackingRouter {
    pub fn new(config: &Config, pools: Arc<Mutex<Pools>>, clock: Clock) -> TrackingRouter {
        let pool_destinations = match pools.lock() {
            Ok(p) => p.configs().iter().map(|c| c.destination.clone()).collect(),
            // Every call then clones the destination from the pools.
            Err(_) => Vec::new(),
        };
        TrackingRouter {
            pools,
            pool_destinations,
            clock,
            numbers: config
                .tracking
                .numbers
                .iter()
                .map(|n| (n.number.clone(), n.clone()))
                .collect(),
            default_destination: config.tracking.default_destination.clone(),
            prepared: Prepared::new(&config.rewrite),
            settings: config.rewrite.clone(),
            routes: RefCell::default(),
        }
    }

    /// T-1: the dialed number's destination and channel (static number)
    /// or visit (pool number held by a visit); unknown numbers, and pool
    /// numbers no visit holds, go on without a visit.
    pub fn lookup(&self, req: &Message) -> Option<Lookup<'_>> {
        let dialed_raw = rewrite::dialed_user(req)
            .map(crate::sip::chars::lossy)
            .unwrap_or_default();
        // No number (a login, a name): looked up as it came.
        let dialed = normalize_user_smol(&dialed_raw, &self.settings.phone)
            .unwrap_or_else(|| SmolStr::new(&dialed_raw));
        let (caller, from_normalised) = rewrite::caller_and_from(req, &self.settings.phone, true);
        // Withheld: no phone, and no {caller} in extra headers.
        let phone = caller.phone.unwrap_or_default();
        let normalise = self.settings.normalize_caller;
        let mut context = CallContext {
            dialed,
            caller: if normalise || phone.is_empty() {
                phone.clone()
            } else {
                // The number as it came (the PAI's with `Privacy: id`).
                caller.raw.clone()
            },
            ..CallContext::default()
        };
        let caller_is_from = from_normalised && normalise;
        let caller_raw = caller.raw;
        if let Some(n) = self.numbers.get(context.dialed.as_str()) {
            context.marker = n.marker.as_deref().map(SmolStr::new);
            context.source = n.source.as_deref().map(SmolStr::new);
            return Some(Lookup {
                destination: Cow::Borrowed(&n.destination),
                phone_destination: n.phone_destination,
                context,
                caller_raw,
                phone,
                caller_is_from,
                configured: true,
            });
        }
        if let Ok(pools) = self.pools.lock() {
            let now = self.clock.unix_ms();
            if let Some((p, pool, visit)) = pools.at_call_pool(&context.dialed, now) {
                if let Some(v) = visit {
                    context.visit_id = Some(SmolStr::new(&v.id));
                    context.marker = v.fields.get("marker").map(SmolStr::new);
                    context.source = v.fields.get("source").map(SmolStr::new);
                    context.visit = v.fields.clone();
                }
                let destination = match self.pool_destinations.get(p) {
                    Some(d) => Cow::Borrowed(d),
                    None => Cow::Owned(pool.destination.clone()),
                };
                let configured = matches!(destination, Cow::Borrowed(_));
                return Some(Lookup {
                    destination,
                    phone_destination: pool.phone_destination,
                    context,
                    caller_raw,
                    phone,
                    caller_is_from,
                    configured,
                });
            }
        }
        Some(Lookup {
            destination: Cow::Borrowed(self.default_destination.as_ref()?),
            phone_destination: false,
            context,
            caller_raw,
            phone,
            caller_is_from,
            configured: false,
        })
    }
}

impl ProxyPhases for TrackingRouter {
    fn initial_request(
        &mut self,
        req: &Message,
        _source: Peer,
        _now: Millis,
        patch: &mut Patch,
    ) -> Result<NextHop, Refusal> {
        let found = self.lookup(req).ok_or(Refusal {
            code: 404,
            reason: "Not Found",
        })?;
        let dest = &found.destination;
        let peer = Peer {
            transport: dest.transport,
            addr: dest.addr,
        };
        if req.method() != Some(Method::Invite) {
            // Only calls are tracked; other requests keep their user part.
            let user = req
                .request_uri_spans()
                .and_then(|u| u.user)
                .map(|s| req.bytes(s));
            return Ok(NextHop {
                peer,
                request_uri: Some(destination_uri_smol(dest, user)),
                call: None,
            });
        }
        let route = || {
            rewrite::request_uri(
                dest,
                &found.context.dialed,
                found.phone_destination,
                &self.settings,
            )
        };
        let (uri, to) = if found.configured {
            self.routes
                .borrow_mut()
                .entry(found.context.dialed.clone())
                .or_insert_with(route)
                .clone()
        } else {
            route()
        };
        let from = found
            .caller_is_from
            .then_some(found.context.caller.as_str());
        rewrite::rewrite_invite_prepared(
            req,
            &found.context,
            &to,
            &self.settings,
            &self.prepared,
            from,
            patch,
        );
        let ctx = found.context;
        let call = CallInfo {
            caller_raw: found.caller_raw,
            caller: found.phone,
            dialed: ctx.dialed,
            // The Request-URI's own string, shared.
            destination: uri.clone(),
            visit_id: ctx.visit_id,
            marker: ctx.marker,
            source: ctx.source,
            visit: ctx.visit,
        };
        Ok(NextHop {
            peer,
            request_uri: Some(uri),
            call: Some(Box::new(call)),
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::tracking::pools::Visit;

    fn router() -> TrackingRouter {
        let config = Config::parse(
            r#"[tracking]
default_destination = "sip:pbx@127.0.0.1:5070"
[[tracking.pools]]
name = "site"
numbers = ["84951234567"]
destination = "sip:office@127.0.0.1:5080"
"#,
        )
        .expect("config");
        let mut pools = Pools::new(config.tracking.pools.clone());
        let visit = Visit {
            id: "v1".into(),
            fields: [("marker".to_string(), "g".to_string())].into(),
        };
        pools.touch(visit, 1_000).expect("a number");
        TrackingRouter::new(&config, Arc::new(Mutex::new(pools)), Clock::manual(1_000))
    }

    fn invite(to: &str) -> Message {
        let text = format!(
            "INVITE sip:{to}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n\
             From: <sip:89161234567@x>;tag=1\r\nTo: <sip:{to}@127.0.0.1>\r\nCall-ID: c\r\n\
             CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        Message::parse(Bytes::from(text), true).expect("parses")
    }

    /// The destination comes from the router's own copy (borrowed, not
    /// cloned per call) and is the pool's; the visit's fields are the
    /// pools' own, shared.
    #[test]
    fn pool_calls_borrow_the_destination_and_share_the_visit() {
        let r = router();
        let found = r.lookup(&invite("74951234567")).expect("routed");
        assert!(matches!(found.destination, Cow::Borrowed(_)));
        assert_eq!(found.destination.uri, "sip:office@127.0.0.1:5080");
        assert_eq!(found.context.visit_id.as_deref(), Some("v1"));
        assert_eq!(found.context.marker.as_deref(), Some("g"));
        assert!(found.caller_is_from);
        assert_eq!(found.context.caller, "79161234567");
        assert_eq!(found.phone, "79161234567");
        let other = r.lookup(&invite("100")).expect("default");
        assert_eq!(other.destination.uri, "sip:pbx@127.0.0.1:5070");
        assert!(other.context.visit.is_empty());
    }

    /// `text` (an INVITE) through the router as the core routes it: the
    /// message, its call and the edits made.
    fn route_invite(r: &mut TrackingRouter, text: &str) -> (Message, Box<CallInfo>, Patch) {
        let req = Message::parse(Bytes::from(text.to_string()), true).expect("parses");
        let mut patch = Patch::new();
        let from = crate::proxy::Peer {
            transport: crate::proxy::Transport::Udp,
            addr: "127.0.0.1:5061".parse().expect("addr"),
        };
        let hop = r
            .initial_request(&req, from, 0, &mut patch)
            .expect("routed");
        (req, hop.call.expect("an INVITE is a call"), patch)
    }

    /// A configured number's route is made once and kept; an unknown
    /// number's is made per call and not kept (the table stays as small
    /// as the configuration).
    #[test]
    fn configured_numbers_keep_their_route_unknown_ones_do_not() {
        let mut r = router();
        let call = |r: &mut TrackingRouter, to: &str, branch: &str| {
            let text = format!(
                "INVITE sip:{to}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK{branch}\r\n\
                 From: <sip:89161234567@x>;tag=1\r\nTo: <sip:{to}@127.0.0.1>\r\nCall-ID: {branch}\r\n\
                 CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            );
            let (_, call, _) = route_invite(r, &text);
            call.destination.to_string()
        };
        let first = call(&mut r, "84951234567", "a");
        assert_eq!(first, "sip:74951234567@127.0.0.1:5080");
        assert_eq!(call(&mut r, "74951234567", "b"), first, "the kept route");
        assert_eq!(call(&mut r, "100", "c"), "sip:100@127.0.0.1:5070");
        assert_eq!(call(&mut r, "101", "d"), "sip:101@127.0.0.1:5070");
        let kept: Vec<String> = r.routes.borrow().keys().map(|k| k.to_string()).collect();
        assert_eq!(kept, ["74951234567"]);
    }

    /// A gateway's `#` (the dial key) after the caller's number, bare in
    /// the From: the caller is the number, and the forwarded From carries
    /// it normalised (trial, 2026-12-03: the caller vanished, a withheld
    /// lead).
    #[test]
    fn a_dial_key_after_the_callers_number_is_no_part_of_it() {
        let mut r = router();
        let text = "INVITE sip:74951234567@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n\
                    From: <sip:9161234567#@gw>;tag=1\r\nTo: <sip:74951234567@127.0.0.1>\r\nCall-ID: c\r\n\
                    CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let (req, call, patch) = route_invite(&mut r, text);
        assert_eq!(
            (call.caller.as_str(), call.caller_raw.as_str()),
            ("79161234567", "9161234567#")
        );
        let out = patch.clone().apply(req.buf(), req.body.end as usize);
        assert!(
            String::from_utf8_lossy(&out).contains("From: <sip:79161234567@gw>;tag=1\r\n"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }

    /// SPEC T-5: `normalize_caller = false` passes the INVITE's caller on
    /// as it came, but the call record (and so the lead and its duplicate
    /// check) still gets the normalised phone: one client calling as
    /// 8-916-…, +7916… and 8916… is one client. The trial of 2026-12-01
    /// found three deals for one caller with the switch off.
    #[test]
    fn the_call_record_gets_the_normalised_caller_when_the_invite_keeps_it_raw() {
        for (normalise, forwarded, header) in [
            (true, "79161234567", "X-Caller: 79161234567\r\n"),
            (false, "8-916-123-45-67", "X-Caller: 8-916-123-45-67\r\n"),
        ] {
            let config = Config::parse(&format!(
                "[tracking]\ndefault_destination = \"sip:pbx@127.0.0.1:5070\"\n\
                 normalize_caller = {normalise}\n\
                 [rewrite]\nextra_headers = \"X-Caller={{caller}}\"\n"
            ))
            .expect("config");
            let pools = Arc::new(Mutex::new(Pools::new(Vec::new())));
            let mut r = TrackingRouter::new(&config, pools, Clock::manual(1_000));
            for user in ["8-916-123-45-67", "+7%20916%20123-45-67", "89161234567"] {
                let text = format!(
                    "INVITE sip:74950000000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n\
                     From: <sip:{user}@x>;tag=1\r\nTo: <sip:74950000000@127.0.0.1>\r\nCall-ID: c\r\n\
                     CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
                );
                let (req, call, mut patch) = route_invite(&mut r, &text);
                assert_eq!(call.caller, "79161234567", "{user} with {normalise}");
                assert_eq!(call.caller_raw, user, "{user} with {normalise}");
                let out = patch.apply(req.buf(), req.body.end as usize);
                let out = String::from_utf8_lossy(&out);
                let from_user = if normalise { forwarded } else { user };
                assert!(out.contains(&format!("<sip:{from_user}@x>")), "{out}");
                if user == "8-916-123-45-67" {
                    assert!(out.contains(header), "{out}");
                }
            }
        }
    }
}
