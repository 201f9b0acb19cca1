//! What is left of a transaction once its final response has passed
//! (RFC 3261 17, RFC 6026): for up to 32 s (Timers J, L, M, D; K and I
//! for T4) it only absorbs retransmissions, repeats a response or an
//! ACK, or relays a retransmitted 2xx upstream. A full [`Txn`] (a 272-byte
//! box, its Call-ID buffer, a slot in three tables and its timer entries)
//! was held for all of it: at 8,000 calls/s that is 160,000 transactions
//! and most of the process's memory (issue 15). Here each side keeps one
//! inline table entry with what it still needs, and the entries expire by
//! their deadline, checked on look-up and swept once a second, instead of
//! through the timer queue.

use super::transaction::{ClientState, KeyMap, ServerState, TimerKind, Txn, TxnKey};
use super::{Millis, Peer};

/// How often expired entries are swept out. A look-up never sees one past
/// its deadline; the sweep only gives the memory back.
pub const SWEEP_EVERY_MS: Millis = 1_000;

/// A server side that has sent its final response.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerLinger {
    /// Where the request came from: a retransmission from elsewhere is
    /// not believed (nor answered, which would reflect the response).
    pub peer: Peer,
    /// Repeated for each retransmitted request: a non-INVITE's final
    /// response, a rejected INVITE's. `None` after a 2xx to an INVITE,
    /// whose retransmissions are absorbed silently (RFC 6026 8.7). A
    /// box of its own size rather than the `Bytes` it was sent as: 16 B
    /// less in the entry, and no shared header (a 32-byte block) kept
    /// beside it.
    pub response: Option<Box<[u8]>>,
    pub until: Millis,
    /// A rejected INVITE whose ACK came (Confirmed): ACKs are absorbed
    /// here. After a 2xx (Accepted) an ACK with the INVITE's key is the
    /// caller's end-to-end one and goes on along the dialog.
    pub absorbs_ack: bool,
}

/// What a client side does with a retransmitted response.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientAfter {
    /// Absorbed; for a rejected INVITE, our ACK is sent again.
    Absorb { ack: Option<Box<[u8]>> },
    /// A 2xx to our INVITE goes upstream again (RFC 6026 Accepted): the
    /// UAS repeats it until the caller's ACK reaches it. Upstream is the
    /// peer of the server side with key `server`, while it lingers (RFC
    /// 3261 16.7 step 5: after it, nothing more may go up); its key
    /// rather than its peer keeps this entry 16 B smaller.
    Relay2xx { server: TxnKey },
    /// Responses to our own CANCEL, or a 2xx that may no longer go
    /// upstream: dropped.
    Drop,
}

/// A client side that has received its final response.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientLinger {
    /// The next hop: responses from elsewhere are not believed.
    pub peer: Peer,
    pub until: Millis,
    pub after: ClientAfter,
    /// The transaction had no server side (the proxy sent the request):
    /// it is counted here, not among the server entries.
    pub alone: bool,
}

/// The lingering sides of a finished [`Txn`], keyed for the look-ups that
/// still reach them: the server key (retransmitted requests) and our
/// branch (retransmitted responses).
#[derive(Debug, PartialEq, Eq)]
pub struct Retired {
    pub server: Option<(TxnKey, ServerLinger)>,
    pub client: Option<(TxnKey, ClientLinger)>,
}

/// What is left of `txn` once nothing but its lingering is: `None` while
/// a timer other than the two lingers is armed or a side still waits for,
/// or repeats, a final response (a rejected INVITE before its ACK). A
/// side that is over (terminated, absent or its linger ended) leaves no
/// entry.
pub fn retire(txn: &Txn) -> Option<Retired> {
    let working = [
        TimerKind::ClientRetransmit,
        TimerKind::ClientTimeout,
        TimerKind::TimerC,
        TimerKind::ServerRetransmit,
    ];
    if working.iter().any(|&k| txn.deadlines.get(k).is_some()) {
        return None;
    }
    // The server key answers for as long as the whole transaction did
    // before it retired: until the later of the two lingers. A rejected
    // INVITE's Timer I (T4, 5 s) ends long before its client side's
    // Timer D (32 s), and its INVITE or CANCEL repeated in between must
    // still meet the transaction, not start a call or draw a 481.
    let client_until = txn.deadlines.get(TimerKind::ClientLinger);
    let server_until = txn
        .deadlines
        .get(TimerKind::ServerLinger)
        .map(|at| at.max(client_until.unwrap_or(at)));
    let server = match &txn.server {
        None => None,
        Some(s) => match s.state {
            ServerState::Terminated => None,
            ServerState::Proceeding => return None,
            ServerState::Completed if txn.is_invite => return None,
            ServerState::Accepted | ServerState::Completed | ServerState::Confirmed => server_until
                .map(|until| {
                    let linger = ServerLinger {
                        peer: s.peer,
                        response: s.last_response.as_deref().map(Box::from),
                        until,
                        absorbs_ack: s.state == ServerState::Confirmed,
                    };
                    (s.key, linger)
                }),
        },
    };
    // An upstream that may still be sent a 2xx (RFC 3261 16.7 step 5).
    let upstream = server.as_ref().map(|(key, _)| *key);
    let client = match &txn.client {
        None => None,
        Some(c) => match c.state {
            ClientState::Terminated => None,
            ClientState::Calling | ClientState::Proceeding => return None,
            ClientState::Completed | ClientState::Accepted => client_until.map(|until| {
                let after = match c.state {
                    _ if txn.own_cancel => ClientAfter::Drop,
                    ClientState::Completed => {
                        let ack = (!c.request.is_empty()).then(|| Box::from(&c.request[..]));
                        ClientAfter::Absorb { ack }
                    }
                    _ => match upstream {
                        Some(server) => ClientAfter::Relay2xx { server },
                        None => ClientAfter::Drop,
                    },
                };
                let linger = ClientLinger {
                    peer: c.peer,
                    until,
                    after,
                    alone: txn.server.is_none(),
                };
                (c.branch, linger)
            }),
        },
    };
    Some(Retired { server, client })
}

/// Every lingering side, by key.
#[derive(Debug, Default)]
pub struct Lingering {
    servers: KeyMap<ServerLinger>,
    clients: KeyMap<ClientLinger>,
    /// Client entries with `alone` set (see [`Lingering::len`]).
    alone: usize,
    last_sweep: Millis,
}

impl Lingering {
    /// Keeps what `r` left that lasts past `now`.
    pub fn insert(&mut self, now: Millis, r: Retired) {
        if let Some((key, s)) = r.server.filter(|(_, s)| s.until > now) {
            self.servers.insert(key, s);
        }
        if let Some((key, c)) = r.client.filter(|(_, c)| c.until > now) {
            let alone = c.alone;
            if let Some(old) = self.clients.insert(key, c) {
                self.alone -= usize::from(old.alone);
            }
            self.alone += usize::from(alone);
        }
    }

    /// The server side with `key`, if it still lingers at `now`.
    pub fn server(&self, key: &TxnKey, now: Millis) -> Option<&ServerLinger> {
        self.servers.get(key).filter(|s| s.until > now)
    }

    /// The client side with `key`, if it still lingers at `now`.
    pub fn client(&self, key: &TxnKey, now: Millis) -> Option<&ClientLinger> {
        self.clients.get(key).filter(|c| c.until > now)
    }

    /// Lingering transactions: one per server entry, and one per client
    /// entry of a transaction without a server side (a server entry
    /// lasts as long as its transaction's client entry, see [`retire`]).
    pub fn len(&self) -> usize {
        self.servers.len() + self.alone
    }

    /// When the next sweep is due, if anything is left to sweep.
    pub fn next_sweep(&self) -> Option<Millis> {
        let empty = self.servers.is_empty() && self.clients.is_empty();
        (!empty).then_some(self.last_sweep + SWEEP_EVERY_MS)
    }

    /// Drops the entries expired at `now`, if a sweep is due.
    pub fn sweep(&mut self, now: Millis) {
        if self.next_sweep().is_none_or(|at| now < at) {
            return;
        }
        self.last_sweep = now;
        self.servers.retain(|_, s| s.until > now);
        let mut gone_alone = 0;
        self.clients.retain(|_, c| {
            let keep = c.until > now;
            gone_alone += usize::from(!keep && c.alone);
            keep
        });
        self.alone -= gone_alone;
    }

    /// Gives back the room of a load peak (see `Proxy::shrink_tables`).
    pub fn shrink(&mut self) {
        if self.servers.len() * 4 < self.servers.capacity() {
            self.servers.shrink_to_fit();
        }
        if self.clients.len() * 4 < self.clients.capacity() {
            self.clients.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::transaction::{CallIds, ClientSide, Deadlines, Keyer, ServerSide};
    use crate::proxy::Transport;
    use bytes::Bytes;

    const NOW: Millis = 1_000_000;
    const L: Millis = NOW + 32_000;

    fn peer(port: u16) -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn key(k: &Keyer, s: &[u8]) -> TxnKey {
        k.start().bytes(s).finish()
    }

    /// A transaction: (INVITE?, server state, client state, armed
    /// timers, own CANCEL?).
    fn txn(
        k: &Keyer,
        invite: bool,
        server: Option<ServerState>,
        client: Option<ClientState>,
        armed: &[(TimerKind, Millis)],
        own_cancel: bool,
    ) -> Txn {
        let mut deadlines = Deadlines::default();
        for &(kind, at) in armed {
            deadlines.set(kind, at);
        }
        Txn {
            is_invite: invite,
            ids: CallIds::new(b"c@x", None),
            server: server.map(|state| ServerSide {
                key: key(k, b"s"),
                peer: peer(5060),
                state,
                last_response: Some(Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n")),
                retransmit_interval: 500,
            }),
            client: client.map(|state| ClientSide {
                state,
                // Our ACK, kept after a rejected INVITE; a non-INVITE's
                // request is let go at its final response.
                ..ClientSide::calling(
                    key(k, b"c"),
                    peer(5070),
                    Bytes::from_static(if invite { b"ACK" } else { b"" }),
                    500,
                )
            }),
            own_cancel,
            initial_invite: false,
            caller_cancelled: false,
            is_bye: false,
            deadlines,
        }
    }

    #[test]
    fn entries_stay_small() {
        // Two entries per held transaction, for its 32 s (issue 15).
        assert!(std::mem::size_of::<ServerLinger>() <= 64);
        assert!(std::mem::size_of::<ClientLinger>() <= 72);
    }

    #[test]
    fn a_transaction_retires_only_when_nothing_but_lingering_is_left() {
        use ClientState as C;
        use ServerState as S;
        use TimerKind::{ClientLinger as CL, ServerLinger as SL};
        let k = Keyer::default();
        let (s, c) = (key(&k, b"s"), key(&k, b"c"));
        let ok: Option<Box<[u8]>> = Some(Box::from(&b"SIP/2.0 200 OK\r\n\r\n"[..]));
        let server = |response: Option<Box<[u8]>>, until, absorbs_ack| {
            let l = ServerLinger {
                peer: peer(5060),
                response,
                until,
                absorbs_ack,
            };
            Some((s, l))
        };
        let client = |after, until, alone| {
            let l = ClientLinger {
                peer: peer(5070),
                until,
                after,
                alone,
            };
            Some((c, l))
        };
        let ack: Option<Box<[u8]>> = Some(Box::from(&b"ACK"[..]));
        #[rustfmt::skip]
        let table: Vec<(Txn, Option<Retired>)> = vec![
            // An answered INVITE: Accepted both sides; a 2xx goes up to
            // the server side while it lingers. (The test's Accepted
            // server still has a response: retire keeps what it kept.)
            (txn(&k, true, Some(S::Accepted), Some(C::Accepted), &[(SL, L), (CL, L + 5)], false),
             Some(Retired { server: server(ok.clone(), L + 5, false),
                            client: client(ClientAfter::Relay2xx { server: s }, L + 5, false) })),
            // A BYE answered: the 200 kept for J, the client absorbs for K.
            (txn(&k, false, Some(S::Completed), Some(C::Completed), &[(SL, L), (CL, NOW + 5_000)], false),
             Some(Retired { server: server(ok.clone(), L, false),
                            client: client(ClientAfter::Absorb { ack: None }, NOW + 5_000, false) })),
            // A rejected INVITE before its ACK: Timer G still repeats.
            (txn(&k, true, Some(S::Completed), Some(C::Completed), &[(SL, L), (CL, L), (TimerKind::ServerRetransmit, NOW + 500)], false),
             None),
            // The same Completed INVITE server even with G not armed (TCP).
            (txn(&k, true, Some(S::Completed), Some(C::Completed), &[(SL, L), (CL, L)], false),
             None),
            // After its ACK (Confirmed): ACKs absorbed, our ACK repeated;
            // its key answers until Timer D, not just Timer I.
            (txn(&k, true, Some(S::Confirmed), Some(C::Completed), &[(SL, NOW + 5_000), (CL, L)], false),
             Some(Retired { server: server(ok.clone(), L, true),
                            client: client(ClientAfter::Absorb { ack: ack.clone() }, L, false) })),
            // Still waiting for a final response.
            (txn(&k, true, Some(S::Proceeding), Some(C::Proceeding), &[(TimerKind::TimerC, L)], false),
             None),
            (txn(&k, false, Some(S::Completed), Some(C::Calling), &[(SL, L)], false),
             None),
            // Our own CANCEL answered: its responses end here.
            (txn(&k, false, None, Some(C::Completed), &[(CL, NOW + 5_000)], true),
             Some(Retired { server: None, client: client(ClientAfter::Drop, NOW + 5_000, true) })),
            // Our own BYE (RTP timeout) answered: absorbed, counted alone.
            (txn(&k, false, None, Some(C::Completed), &[(CL, NOW + 5_000)], false),
             Some(Retired { server: None, client: client(ClientAfter::Absorb { ack: None }, NOW + 5_000, true) })),
            // A refusal the proxy gave itself (no client side).
            (txn(&k, false, Some(S::Completed), None, &[(SL, L)], false),
             Some(Retired { server: server(ok.clone(), L, false), client: None })),
            // An accepted client whose server side is over: nothing to relay to.
            (txn(&k, true, Some(S::Terminated), Some(C::Accepted), &[(CL, L)], false),
             Some(Retired { server: None, client: client(ClientAfter::Drop, L, false) })),
            // Both over: nothing left.
            (txn(&k, false, Some(S::Terminated), Some(C::Terminated), &[], false),
             Some(Retired { server: None, client: None })),
        ];
        for (i, (t, want)) in table.iter().enumerate() {
            assert_eq!(&retire(t), want, "row {i}");
        }
    }

    #[test]
    fn entries_live_until_their_deadline_and_are_swept_after() {
        let k = Keyer::default();
        let mut l = Lingering::default();
        let (s, c, lone) = (key(&k, b"s"), key(&k, b"c"), key(&k, b"lone"));
        let server = |until| ServerLinger {
            peer: peer(1),
            response: None,
            until,
            absorbs_ack: false,
        };
        let client = |until, alone| ClientLinger {
            peer: peer(2),
            until,
            after: ClientAfter::Drop,
            alone,
        };
        l.insert(
            NOW,
            Retired {
                server: Some((s, server(NOW + 5_000))),
                client: Some((c, client(NOW + 2_000, false))),
            },
        );
        l.insert(
            NOW,
            Retired {
                server: None,
                client: Some((lone, client(NOW + 3_000, true))),
            },
        );
        // Already over when retired (TCP's 0 ms linger): not kept.
        l.insert(
            NOW,
            Retired {
                server: Some((key(&k, b"tcp"), server(NOW))),
                client: None,
            },
        );
        assert_eq!(l.len(), 2);
        assert!(l.server(&s, NOW + 4_999).is_some());
        assert!(l.server(&s, NOW + 5_000).is_none());
        assert!(l.client(&c, NOW + 1_999).is_some());
        assert!(l.client(&c, NOW + 2_000).is_none());
        assert!(l.server(&key(&k, b"tcp"), NOW).is_none());
        // A sweep takes what expired; one before its time does nothing.
        l.sweep(NOW + 2_500);
        assert_eq!(l.next_sweep(), Some(NOW + 2_500 + SWEEP_EVERY_MS));
        assert_eq!((l.servers.len(), l.clients.len(), l.len()), (1, 1, 2));
        l.sweep(NOW + 3_000);
        assert_eq!((l.servers.len(), l.clients.len(), l.len()), (1, 1, 2));
        l.sweep(NOW + 3_500);
        assert_eq!((l.servers.len(), l.clients.len(), l.len()), (1, 0, 1));
        l.sweep(NOW + 6_000);
        assert_eq!((l.len(), l.next_sweep()), (0, None));
    }
}
