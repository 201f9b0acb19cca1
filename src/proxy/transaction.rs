//! Transaction state (RFC 3261 17, RFC 6026 Accepted state). One proxy
//! transaction pairs the server transaction facing upstream with the one
//! client transaction facing downstream (siptrack does not fork).

use std::hash::{BuildHasher, Hash, Hasher};

use bytes::Bytes;

use super::{Millis, Peer};

/// A transaction key or branch reduced to 128 bits of a keyed hash. The
/// keys were heap boxes (an RFC 3261 server key is branch + sent-by +
/// method, 60 to 100 bytes) held twice per transaction, in the
/// transaction and in its index, for the whole 32 s linger: about 300 B a
/// transaction. Keyed with seeds drawn at start, so a sender cannot craft
/// two keys that collide; 128 bits, so two live keys colliding by chance
/// is out of reach (2^-64 at 2^32 live transactions). `[u64; 2]` rather
/// than `u128`: 8-byte alignment keeps an index slot at 24 B, not 32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnKey([u64; 2]);

/// A table's hash of a key is its first half: already a keyed hash
/// ([`Keyer`]'s random seeds), so a sender can no more aim keys at one
/// bucket than it could under the table's own `ahash`, and hashing it
/// again (a length and 16 bytes through `ahash`) cost about 65
/// instructions a look-up, four a new INVITE (issue 15). Equal halves
/// of two keys are told apart by `Eq` on the whole key.
impl Hash for TxnKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0[0]);
    }
}

/// The hasher of [`KeyMap`]s: hands on the one `u64` a [`TxnKey`]
/// writes.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    /// Never reached by a `TxnKey` (only `write_u64` is); the bytes are
    /// folded in rather than dropped, should another key type appear.
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(29) ^ u64::from_le_bytes(b))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
}

/// A table keyed by [`TxnKey`] (transaction indexes, dialogs, lingering
/// sides), hashed by [`KeyHasher`].
pub type KeyMap<V> = std::collections::HashMap<TxnKey, V, std::hash::BuildHasherDefault<KeyHasher>>;

impl TxnKey {
    /// The key of the CANCEL the proxy sends on a client INVITE branch:
    /// the CANCEL reuses the INVITE's branch (RFC 3261 9.1), and its
    /// responses are told apart by CSeq. Derived from the INVITE's key so
    /// that the branch itself need not be kept; no sender can aim at it,
    /// since it cannot know either key.
    pub fn cancel(self) -> TxnKey {
        const MARK: u64 = 0x9e37_79b9_7f4a_7c15;
        TxnKey([self.0[0] ^ MARK, self.0[1].rotate_left(1) ^ MARK])
    }
}

/// Builds [`TxnKey`]s: two independently seeded 64-bit hashers fed the
/// same parts.
pub struct Keyer {
    seeds: [ahash::RandomState; 2],
}

impl Default for Keyer {
    fn default() -> Keyer {
        Keyer {
            seeds: [ahash::RandomState::new(), ahash::RandomState::new()],
        }
    }
}

impl Keyer {
    pub fn start(&self) -> KeyParts {
        KeyParts(self.seeds[0].build_hasher(), self.seeds[1].build_hasher())
    }
}

/// A key being built; each part is hashed with its length, so parts need
/// no separator and ("ab", "c") differs from ("a", "bc").
pub struct KeyParts(ahash::AHasher, ahash::AHasher);

impl KeyParts {
    pub fn bytes(&mut self, b: &[u8]) -> &mut KeyParts {
        b.hash(&mut self.0);
        b.hash(&mut self.1);
        self
    }
    pub fn num(&mut self, n: u64) -> &mut KeyParts {
        self.0.write_u64(n);
        self.1.write_u64(n);
        self
    }
    pub fn finish(&self) -> TxnKey {
        TxnKey([self.0.finish(), self.1.finish()])
    }
}

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
    pub key: TxnKey,
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
    /// The key of our branch (or of the CANCEL on it) in the client index.
    pub branch: TxnKey,
    pub peer: Peer,
    /// The request as forwarded, for retransmission and to build CANCEL/ACK,
    /// until the final response. After a non-2xx final response to an
    /// INVITE, the hop-by-hop ACK, repeated when the response is
    /// retransmitted (Completed state); else empty. One field for both,
    /// since they are never needed at once: 32 B less in every held
    /// transaction.
    pub request: Bytes,
    pub state: ClientState,
    pub retransmit_interval: Millis,
    pub got_provisional: bool,
    /// A CANCEL arrived before any provisional; send it once one does.
    pub cancel_pending: bool,
    pub cancel_sent: bool,
}

impl ClientSide {
    /// A client transaction that has just sent `request` and heard nothing.
    pub fn calling(branch: TxnKey, peer: Peer, request: Bytes, t1: Millis) -> ClientSide {
        ClientSide {
            branch,
            peer,
            request,
            state: ClientState::Calling,
            retransmit_interval: t1,
            got_provisional: false,
            cancel_pending: false,
            cancel_sent: false,
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

impl TimerKind {
    /// Every kind, in the order of their numbers (a timer queue entry
    /// names its kind by its index here).
    pub const ALL: [TimerKind; TIMER_KINDS] = [
        TimerKind::ClientRetransmit,
        TimerKind::ClientTimeout,
        TimerKind::TimerC,
        TimerKind::ClientLinger,
        TimerKind::ServerRetransmit,
        TimerKind::ServerLinger,
    ];
}

/// The armed deadline of each timer kind. A transaction's timers all fall
/// within minutes of each other, so each slot holds its deadline as an
/// offset from `base` (plus one: 0 means unarmed) in 32 bits: 32 B where
/// six `u64`s took 48, in a struct held for every transaction during its
/// 32 s linger (issue 15). `base` is the earliest deadline set since the
/// slots were last all clear; a deadline more than 2^32 - 2 ms (49 days)
/// after it would be clamped to that, but a transaction's timers end
/// within minutes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deadlines {
    base: Millis,
    rel: [u32; TIMER_KINDS],
}

impl Deadlines {
    pub fn get(&self, kind: TimerKind) -> Option<Millis> {
        let r = self.rel[kind as usize];
        (r != 0).then(|| self.base + u64::from(r - 1))
    }
    pub fn set(&mut self, kind: TimerKind, at: Millis) {
        if self.rel.iter().all(|&r| r == 0) {
            self.base = at;
        } else if at < self.base {
            // Earlier than every armed deadline: the others move up.
            let moved_by = self.base - at;
            for r in self.rel.iter_mut().filter(|r| **r != 0) {
                *r = offset(u64::from(*r - 1) + moved_by);
            }
            self.base = at;
        }
        self.rel[kind as usize] = offset(at - self.base);
    }
    /// [`Deadlines::set`] on a deadline that may be armed: true when it
    /// was (its timer queue entry is stale now).
    #[must_use]
    pub fn rearm(&mut self, kind: TimerKind, at: Millis) -> bool {
        let was = self.rel[kind as usize] != 0;
        self.set(kind, at);
        was
    }
    /// Disarms `kind`: true when it was armed.
    #[must_use]
    pub fn clear(&mut self, kind: TimerKind) -> bool {
        std::mem::take(&mut self.rel[kind as usize]) != 0
    }
    /// Disarms all: how many were armed.
    #[must_use]
    pub fn clear_all(&mut self) -> usize {
        let armed = self.armed();
        self.rel = [0; TIMER_KINDS];
        armed
    }
    /// How many deadlines are armed.
    pub fn armed(&self) -> usize {
        self.rel.iter().filter(|&&r| r != 0).count()
    }
}

/// A slot's value for a deadline `after` ms past the base (see
/// [`Deadlines`]).
fn offset(after: u64) -> u32 {
    u32::try_from(after.saturating_add(1)).unwrap_or(u32::MAX)
}

/// A transaction's Call-ID and, for an initial record-routed request, the
/// caller's From tag, in one exact-size buffer of its own. They were two
/// `Bytes` (64 B inline) sharing the dialog's copies, so that after the
/// dialog ended each held transaction kept two allocations plus the two
/// shared headers `Bytes` adds on a clone: about 100 B more for every
/// INVITE held for its 32 s linger.
#[derive(Debug)]
pub struct CallIds {
    buf: Box<[u8]>,
    /// Where the tag starts in `buf`; `u32::MAX` when there is none.
    tag_at: u32,
}

/// No Call-ID, no tag (the proxy's own final replies).
impl Default for CallIds {
    fn default() -> CallIds {
        CallIds::new(b"", None)
    }
}

impl CallIds {
    pub fn new(call_id: &[u8], caller_tag: Option<&[u8]>) -> CallIds {
        let tag = caller_tag.unwrap_or_default();
        let mut buf = Vec::with_capacity(call_id.len() + tag.len());
        buf.extend_from_slice(call_id);
        buf.extend_from_slice(tag);
        CallIds {
            buf: buf.into_boxed_slice(),
            tag_at: match caller_tag {
                // A message is at most 64 KiB: a Call-ID is shorter.
                Some(_) => u32::try_from(call_id.len()).unwrap_or(u32::MAX - 1),
                None => u32::MAX,
            },
        }
    }
    pub fn call_id(&self) -> &[u8] {
        let end = if self.tag_at == u32::MAX {
            self.buf.len()
        } else {
            self.tag_at as usize
        };
        self.buf.get(..end).unwrap_or_default()
    }
    /// The caller's From tag: the request set up a dialog (see
    /// `Txn::ids`).
    pub fn caller_tag(&self) -> Option<&[u8]> {
        if self.tag_at == u32::MAX {
            return None;
        }
        self.buf.get(self.tag_at as usize..)
    }
}

#[derive(Debug)]
pub struct Txn {
    pub is_invite: bool,
    /// The Call-ID, and the caller's From tag when the forwarded request
    /// is an initial record-routed request: its responses confirm or end
    /// the dialog entry it created.
    pub ids: CallIds,
    /// `None` for requests the proxy originates (CANCEL after Timer C or
    /// for a CANCEL received upstream).
    pub server: Option<ServerSide>,
    pub client: Option<ClientSide>,
    /// A CANCEL the proxy sends (after Timer C, or for a CANCEL received
    /// upstream): its responses end here. Which INVITE it cancels was
    /// never read, and an `Option<u64>` cost 16 B in every held
    /// transaction.
    pub own_cancel: bool,
    /// The forwarded request created a dialog usage that will be tracked
    /// (initial INVITE).
    pub initial_invite: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `ops` (slot, Some(at) to set, None to clear) to both the
    /// compact deadlines and six plain options; they must agree after
    /// every step.
    fn agrees_with_options(ops: &[(usize, Option<Millis>)]) {
        let mut d = Deadlines::default();
        let mut plain = [None; TIMER_KINDS];
        for &(slot, op) in ops {
            let kind = TimerKind::ALL[slot % TIMER_KINDS];
            let was_armed = match op {
                Some(at) => d.rearm(kind, at),
                None => d.clear(kind),
            };
            assert_eq!(
                was_armed,
                plain[kind as usize].is_some(),
                "{kind:?} in {ops:?}"
            );
            plain[kind as usize] = op;
            assert_eq!(d.armed(), plain.iter().flatten().count());
            for k in TimerKind::ALL {
                assert_eq!(d.get(k), plain[k as usize], "{k:?} after {ops:?}");
            }
        }
    }

    #[test]
    fn every_kind_sits_at_its_own_number() {
        for (i, k) in TimerKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "{k:?}");
        }
    }

    #[test]
    fn deadlines_give_back_what_was_set() {
        let t1 = 500;
        let now = 1_000_000_000_000;
        let table: [&[(usize, Option<Millis>)]; 6] = [
            // An INVITE: A, B, C; A fires and is re-armed; the 200 clears.
            &[
                (0, Some(now + t1)),
                (1, Some(now + 64 * t1)),
                (2, Some(now + 180_000)),
                (0, Some(now + 3 * t1)),
                (0, None),
                (1, None),
                (2, None),
            ],
            // An earlier deadline after a later one moves the base down.
            &[
                (2, Some(now + 180_000)),
                (0, Some(now + t1)),
                (5, Some(now)),
            ],
            // Cleared to nothing, then set again far later.
            &[(3, Some(now)), (3, None), (4, Some(now + 86_400_000))],
            // Time zero and equal deadlines.
            &[(0, Some(0)), (1, Some(0)), (2, Some(1))],
            // Re-set to the same instant, and to an earlier one.
            &[(1, Some(now + 10)), (1, Some(now + 10)), (1, Some(now + 5))],
            // The widest span kept exactly: 2^32 - 2 ms.
            &[(0, Some(now)), (1, Some(now + u64::from(u32::MAX) - 1))],
        ];
        for ops in table {
            agrees_with_options(ops);
        }
        let mut all = Deadlines::default();
        for k in TimerKind::ALL {
            all.set(k, now + k as u64);
        }
        assert_eq!(all.armed(), TimerKind::ALL.len());
        assert_eq!(all.clear_all(), TimerKind::ALL.len());
        assert!(TimerKind::ALL.iter().all(|&k| all.get(k).is_none()));
        assert_eq!(all.armed(), 0);
        assert!(!all.clear(TimerKind::TimerC));
        assert!(!all.rearm(TimerKind::TimerC, now));
        assert!(all.rearm(TimerKind::TimerC, now + 1));
        assert!(all.clear(TimerKind::TimerC));
    }

    proptest::proptest! {
        #[test]
        fn deadlines_agree_with_six_options(
            ops in proptest::collection::vec(
                (0usize..TIMER_KINDS, proptest::option::of(0u64..4_000_000_000)), 0..40),
            start in 0u64..1u64 << 50,
        ) {
            let ops: Vec<_> = ops.into_iter().map(|(k, at)| (k, at.map(|a| start + a))).collect();
            agrees_with_options(&ops);
        }
    }

    #[test]
    fn a_held_transaction_is_at_most_256_bytes() {
        // A `Txn` box is the largest part of a held transaction (issue 15).
        assert!(
            std::mem::size_of::<Txn>() <= 256,
            "{}",
            std::mem::size_of::<Txn>()
        );
        assert_eq!(std::mem::size_of::<Deadlines>(), 32);
    }

    #[test]
    fn call_ids_give_back_what_they_were_made_of() {
        // (Call-ID, caller's tag)
        let table: [(&[u8], Option<&[u8]>); 5] = [
            (b"a84b4c76e66710@pc33", Some(b"1928301774")),
            (b"a84b4c76e66710@pc33", None),
            (b"c@x", Some(b"")),
            (b"", None),
            (b"", Some(b"t")),
        ];
        for (call_id, tag) in table {
            let ids = CallIds::new(call_id, tag);
            assert_eq!((ids.call_id(), ids.caller_tag()), (call_id, tag));
        }
        let none = CallIds::default();
        assert_eq!((none.call_id(), none.caller_tag()), (&b""[..], None));
    }
}
