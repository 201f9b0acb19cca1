//! Transaction state (RFC 3261 17, RFC 6026 Accepted state). One proxy
//! transaction pairs the server transaction facing upstream with the one
//! client transaction facing downstream (siptrack does not fork).

use bytes::Bytes;

use super::{Millis, Peer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// Request received, no final response sent yet.
    Proceeding,
    /// A final non-2xx was sent; waiting for the ACK (INVITE) or for
    /// retransmissions to stop (non-INVITE).
    Completed,
    /// INVITE only: the ACK came.
    Confirmed,
    /// INVITE only: a 2xx was forwarded; retransmissions pass through.
    Accepted,
    Terminated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// Request sent, nothing heard yet (Calling / Trying).
    Calling,
    Proceeding,
    Completed,
    Accepted,
    Terminated,
}

/// The upstream half: where responses go and what to repeat.
#[derive(Debug)]
pub struct ServerSide {
    pub key: Box<[u8]>,
    pub peer: Peer,
    pub state: ServerState,
    /// The last response sent upstream, repeated on request retransmissions.
    pub last_response: Option<Bytes>,
    /// Current Timer G interval.
    pub retransmit_interval: Millis,
}

/// The downstream half.
#[derive(Debug)]
pub struct ClientSide {
    pub branch: Box<[u8]>,
    pub peer: Peer,
    /// The request as forwarded, for retransmission and to build CANCEL/ACK.
    pub request: Bytes,
    pub state: ClientState,
    pub retransmit_interval: Millis,
    pub got_provisional: bool,
    /// A CANCEL arrived before any provisional; send it once one does.
    pub cancel_pending: bool,
    pub cancel_sent: bool,
    /// The hop-by-hop ACK for a non-2xx final response, repeated when the
    /// response is retransmitted.
    pub ack: Option<Bytes>,
}

impl ClientSide {
    /// A client transaction that has just sent `request` and heard nothing.
    pub fn calling(branch: Box<[u8]>, peer: Peer, request: Bytes, t1: Millis) -> ClientSide {
        ClientSide {
            branch,
            peer,
            request,
            state: ClientState::Calling,
            retransmit_interval: t1,
            got_provisional: false,
            cancel_pending: false,
            cancel_sent: false,
            ack: None,
        }
    }
}

/// Timers of a proxy transaction. Each slot holds the deadline, if armed;
/// the heap may hold stale entries, which are recognised by comparing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// A (INVITE) / E (non-INVITE): retransmit the request downstream.
    ClientRetransmit = 0,
    /// B / F, and the wait after Timer C's CANCEL: no final response → 408.
    ClientTimeout = 1,
    /// C: the INVITE rang too long.
    TimerC = 2,
    /// D / K / M: client side lingers to absorb retransmitted responses.
    ClientLinger = 3,
    /// G: retransmit the final response upstream until the ACK.
    ServerRetransmit = 4,
    /// H / I / J / L: server side lingers, then is gone.
    ServerLinger = 5,
}

pub const TIMER_KINDS: usize = 6;

/// The armed deadline of each timer kind, stored as `at + 1` so that 0 means
/// unarmed: 8 bytes a slot instead of an `Option`'s 16, in a struct held
/// for every transaction during its 32 s linger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deadlines([u64; TIMER_KINDS]);

impl Deadlines {
    pub fn get(&self, kind: TimerKind) -> Option<Millis> {
        self.0[kind as usize].checked_sub(1)
    }
    pub fn set(&mut self, kind: TimerKind, at: Millis) {
        self.0[kind as usize] = at.saturating_add(1);
    }
    pub fn clear(&mut self, kind: TimerKind) {
        self.0[kind as usize] = 0;
    }
    pub fn clear_all(&mut self) {
        self.0 = [0; TIMER_KINDS];
    }
}

#[derive(Debug)]
pub struct Txn {
    pub is_invite: bool,
    pub call_id: Bytes,
    /// `None` for requests the proxy originates (CANCEL after Timer C or
    /// for a CANCEL received upstream).
    pub server: Option<ServerSide>,
    pub client: Option<ClientSide>,
    /// For a CANCEL the proxy sends: the INVITE transaction it cancels.
    pub cancels: Option<u64>,
    /// The forwarded request created a dialog usage that will be tracked
    /// (initial INVITE).
    pub initial_invite: bool,
    /// The forwarded request is an initial record-routed request (this is
    /// the caller's From tag): its responses confirm or end the dialog
    /// entry it created.
    pub dialog_setup: Option<Bytes>,
    /// The caller CANCELled this INVITE (as opposed to Timer C).
    pub caller_cancelled: bool,
    pub is_bye: bool,
    pub deadlines: Deadlines,
}

impl Txn {
    pub fn is_finished(&self) -> bool {
        let server_done = self
            .server
            .as_ref()
            .is_none_or(|s| s.state == ServerState::Terminated);
        let client_done = self
            .client
            .as_ref()
            .is_none_or(|c| c.state == ClientState::Terminated);
        server_done && client_done
    }
}
