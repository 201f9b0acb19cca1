//! The [`ProxyPhases`] of a call-tracking proxy: finds the tracking number
//! dialed, its destination and channel or visit, and applies the rewrite
//! rules to the INVITE.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::calls::CallInfo;
use crate::clock::Clock;
use crate::config::{Config, Destination, StaticNumber};
use crate::phone::normalize_user_into;
use crate::proxy::hooks::{destination_uri, NextHop, ProxyPhases, Refusal};
use crate::proxy::{Millis, Peer};
use crate::rewrite::{self, CallContext, RewriteSettings};
use crate::sip::{Message, Method, Patch};

use super::pools::Pools;

pub struct TrackingRouter {
    numbers: HashMap<String, StaticNumber>,
    default_destination: Option<Destination>,
    settings: RewriteSettings,
    pools: Arc<Mutex<Pools>>,
    /// Unix milliseconds: holds are wall-clock and survive restarts.
    clock: Clock,
}

/// Where one call goes and what it carries, before any edit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    pub destination: Destination,
    pub phone_destination: bool,
    pub context: CallContext,
    /// The caller's user part as it came (the PAI's with `Privacy: id`).
    pub caller_raw: String,
    /// `context.caller` is T-5's form of the From user part, which the
    /// rewrite then takes instead of normalising the From again.
    pub caller_is_from: bool,
}

impl TrackingRouter {
    pub fn new(config: &Config, pools: Arc<Mutex<Pools>>, clock: Clock) -> TrackingRouter {
        TrackingRouter {
            pools,
            clock,
            numbers: config
                .tracking
                .numbers
                .iter()
                .map(|n| (n.number.clone(), n.clone()))
                .collect(),
            default_destination: config.tracking.default_destination.clone(),
            settings: config.rewrite.clone(),
        }
    }

    /// T-1: the dialed number's destination and channel (static number)
    /// or visit (pool number held by a visit); unknown numbers, and pool
    /// numbers no visit holds, go on without a visit.
    pub fn lookup(&self, req: &Message) -> Option<Lookup> {
        let dialed_raw = rewrite::dialed_user(req)
            .map(rewrite::lossy)
            .unwrap_or_default();
        let mut dialed = String::new();
        if !normalize_user_into(&dialed_raw, &self.settings.phone, &mut dialed) {
            // No number (a login, a name): looked up as it came.
            dialed.clear();
            dialed.push_str(&dialed_raw);
        }
        let (caller, caller_is_from) =
            rewrite::caller_and_from(req, &self.settings.phone, self.settings.normalize_caller);
        let mut context = CallContext {
            dialed,
            // Withheld: no phone, and no {caller} in extra headers.
            caller: caller.phone.unwrap_or_default(),
            ..CallContext::default()
        };
        let caller_raw = caller.raw;
        if let Some(n) = self.numbers.get(&context.dialed) {
            context.marker = n.marker.clone();
            context.source = n.source.clone();
            return Some(Lookup {
                destination: n.destination.clone(),
                phone_destination: n.phone_destination,
                context,
                caller_raw,
                caller_is_from,
            });
        }
        if let Ok(pools) = self.pools.lock() {
            if let Some((pool, visit)) = pools.at_call(&context.dialed, self.clock.unix_ms()) {
                if let Some(v) = visit {
                    context.visit_id = Some(v.id.clone());
                    context.marker = v.fields.get("marker").cloned();
                    context.source = v.fields.get("source").cloned();
                    context.visit = v.fields.clone();
                }
                return Some(Lookup {
                    destination: pool.destination.clone(),
                    phone_destination: pool.phone_destination,
                    context,
                    caller_raw,
                    caller_is_from,
                });
            }
        }
        Some(Lookup {
            destination: self.default_destination.clone()?,
            phone_destination: false,
            context,
            caller_raw,
            caller_is_from,
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
                request_uri: Some(destination_uri(dest, user)),
                call: None,
            });
        }
        let (uri, to) = rewrite::request_uri(
            dest,
            &found.context.dialed,
            found.phone_destination,
            &self.settings,
        );
        let from = found
            .caller_is_from
            .then_some(found.context.caller.as_str());
        rewrite::rewrite_invite_from(req, &found.context, &to, &self.settings, from, patch);
        let ctx = found.context;
        let call = CallInfo {
            caller_raw: found.caller_raw,
            caller: ctx.caller,
            dialed: ctx.dialed,
            destination: rewrite::lossy(&uri).into_owned(),
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
