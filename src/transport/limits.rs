//! Rules that keep SIP over TCP from being a way to exhaust siptrack
//! (issue 12): who may open how many connections, when a connection is
//! closed for silence or for a message that never completes, and how often
//! accept errors are logged. Pure, apart from [`fd_limit`] and the lock in
//! [`Slot`].

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `sip.tcp_*`: limits on SIP over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Accepted connections open at once (all sources). Trusted sources
    /// are admitted even at the cap (they count towards it).
    pub max_connections: usize,
    /// Accepted connections open at once from one untrusted address (an
    /// IPv6 /64 counts as one address).
    pub max_per_source: usize,
    /// A connection without traffic in either direction this long is
    /// closed (not connections with trusted peers).
    pub idle_seconds: u64,
    /// A message must be complete (headers and body) this long after its
    /// first byte arrived (slowloris).
    pub message_timeout_seconds: u64,
    /// Bytes queued for a peer that is not reading; past it the
    /// connection is closed.
    pub write_queue_bytes: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 4096,
            max_per_source: 32,
            idle_seconds: 120,
            message_timeout_seconds: 10,
            write_queue_bytes: 1 << 20,
        }
    }
}

/// File descriptors kept free of SIP connections: sockets, the database,
/// log files, outgoing connections to the PBX and CRM.
pub const FD_RESERVE: usize = 256;

impl TcpLimits {
    /// The connection cap that fits under the process's file descriptor
    /// limit with `reserve` to spare (at least 1): a cap above it would let
    /// accepted connections starve everything else of descriptors.
    pub fn fit_to_fds(mut self, fd_limit: Option<u64>, reserve: usize) -> TcpLimits {
        if let Some(fds) = fd_limit {
            let room = (fds as usize).saturating_sub(reserve).max(1);
            self.max_connections = self.max_connections.min(room);
        }
        self
    }
}

/// The soft `RLIMIT_NOFILE`, from /proc/self/limits (Linux); None elsewhere
/// or when unlimited.
pub fn fd_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| parse_nofile(&t))
}

/// The soft limit of the "Max open files" line of /proc/self/limits.
fn parse_nofile(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` reached.
    Total,
    /// `max_per_source` reached for this address.
    PerSource,
}

/// Open accepted connections, in total and per source.
#[derive(Debug, Default)]
pub struct ConnTable {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// The address a source is counted under: IPv4-mapped IPv6 as IPv4, other
/// IPv6 by its /64 (one host usually holds a whole /64).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::V6(o.into())
        }
        v4 => v4,
    }
}

impl ConnTable {
    /// Counts a new connection from `ip` in, or says why not.
    pub fn admit(&mut self, limits: &TcpLimits, ip: IpAddr, trusted: bool) -> Result<(), Refusal> {
        let key = source_key(ip);
        if !trusted {
            if self.total >= limits.max_connections {
                return Err(Refusal::Total);
            }
            if self.per_source.get(&key).copied().unwrap_or(0) >= limits.max_per_source {
                return Err(Refusal::PerSource);
            }
        }
        self.total += 1;
        *self.per_source.entry(key).or_insert(0) += 1;
        Ok(())
    }

    /// A connection from `ip` has closed.
    pub fn release(&mut self, ip: IpAddr) {
        let key = source_key(ip);
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_source.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&key);
            }
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }
}

/// An admitted connection's place in the table, given back when the
/// connection task ends however it ends.
pub struct Slot {
    table: Arc<Mutex<ConnTable>>,
    ip: IpAddr,
}

impl Slot {
    pub fn take(
        table: &Arc<Mutex<ConnTable>>,
        limits: &TcpLimits,
        ip: IpAddr,
        trusted: bool,
    ) -> Result<Slot, Refusal> {
        let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
        t.admit(limits, ip, trusted)?;
        Ok(Slot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.release(self.ip);
    }
}

/// Why a connection is closed by the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No traffic in either direction for `idle_seconds`.
    Idle,
    /// A message started and did not complete in `message_timeout_seconds`.
    SlowMessage,
}

/// When the connection is to be closed, and why (the earlier of the two
/// rules): times in ms on the connection's own clock. `idle_ms` None: the
/// peer is trusted and may stay silent (a trunk holding long calls).
pub fn next_expiry(
    last_traffic_ms: u64,
    partial_since_ms: Option<u64>,
    idle_ms: Option<u64>,
    message_ms: u64,
) -> Option<(u64, Expiry)> {
    let idle = idle_ms.map(|i| (last_traffic_ms.saturating_add(i), Expiry::Idle));
    let slow = partial_since_ms.map(|p| (p.saturating_add(message_ms), Expiry::SlowMessage));
    match (idle, slow) {
        (Some(a), Some(b)) => Some(if b.0 <= a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Whether bytes left in a stream buffer are the start of a message (its
/// clock runs) rather than keep-alive CRLFs waiting to be told apart
/// (RFC 5626: CRLF is a pong, CRLFCRLF a ping).
pub fn is_partial_message(buf: &[u8]) -> bool {
    !buf.is_empty() && !b"\r\n\r\n".starts_with(buf)
}

/// How long the accept loop pauses after an error. Running out of
/// descriptors or memory is not cured by retrying at once (that only
/// spins and floods the log); a connection that died in the backlog is.
pub fn accept_backoff(e: &io::Error) -> Option<Duration> {
    match e.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted
        | io::ErrorKind::WouldBlock => None,
        _ => Some(Duration::from_millis(100)),
    }
}

/// At most one log line per `every` for a kind of event; the lines say how
/// many were left out in between.
#[derive(Debug)]
pub struct LogGate {
    every_ms: u64,
    last_ms: Option<u64>,
    suppressed: u64,
}

impl LogGate {
    pub fn new(every: Duration) -> LogGate {
        LogGate {
            every_ms: every.as_millis() as u64,
            last_ms: None,
            suppressed: 0,
        }
    }

    /// An event at `now_ms`: Some(events left out since the last line) when
    /// this one is to be logged.
    pub fn note(&mut self, now_ms: u64) -> Option<u64> {
        match self.last_ms {
            Some(l) if now_ms < l.saturating_add(self.every_ms) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last_ms = Some(now_ms);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_source: usize) -> TcpLimits {
        TcpLimits {
            max_connections: total,
            max_per_source: per_source,
            ..TcpLimits::default()
        }
    }

    #[test]
    fn admission_caps_total_and_per_source_and_spares_trusted() {
        let l = limits(5, 2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let trunk: IpAddr = "198.51.100.1".parse().expect("ip");
        let mut t = ConnTable::default();
        let mut steps = vec![
            (a, false, Ok(())),
            (a, false, Ok(())),
            (a, false, Err(Refusal::PerSource)),
            (b, false, Ok(())),
            (trunk, true, Ok(())),
            (trunk, true, Ok(())),
            // 5 open: the total cap refuses untrusted sources …
            (b, false, Err(Refusal::Total)),
            // … but never a trusted one.
            (trunk, true, Ok(())),
        ];
        for (i, (ip, trusted, want)) in steps.drain(..).enumerate() {
            assert_eq!(t.admit(&l, ip, trusted), want, "step {i}: {ip}");
        }
        assert_eq!(t.total(), 6);
        t.release(a);
        t.release(trunk);
        t.release(trunk);
        assert_eq!(t.admit(&l, a, false), Ok(()), "a slot of a is free again");
        assert_eq!(t.admit(&l, a, false), Err(Refusal::PerSource));
        for ip in [a, a, b, trunk] {
            t.release(ip);
        }
        assert_eq!(t.total(), 0);
        assert!(t.per_source.is_empty(), "{:?}", t.per_source);
    }

    #[test]
    fn ipv6_sources_count_per_64_and_mapped_ipv4_as_ipv4() {
        for (ip, key) in [
            ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::"),
            ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
            ("192.0.2.7", "192.0.2.7"),
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(source_key(ip), key.parse::<IpAddr>().expect("ip"), "{ip}");
        }
        let l = limits(100, 1);
        let mut t = ConnTable::default();
        assert_eq!(
            t.admit(&l, "2001:db8::1".parse().expect("ip"), false),
            Ok(())
        );
        assert_eq!(
            t.admit(&l, "2001:db8::2".parse().expect("ip"), false),
            Err(Refusal::PerSource)
        );
    }

    #[test]
    fn slots_give_their_place_back_when_dropped() {
        let table = Arc::new(Mutex::new(ConnTable::default()));
        let l = limits(1, 1);
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let s = Slot::take(&table, &l, ip, false).expect("first");
        assert!(Slot::take(&table, &l, ip, false).is_err());
        drop(s);
        assert!(Slot::take(&table, &l, ip, false).is_ok());
    }

    #[test]
    fn expiry_is_the_earlier_rule() {
        let (idle, msg) = (Some(120_000), 10_000);
        for (last, partial, idle, want) in [
            // Silent: closed 120 s after the last traffic.
            (0, None, idle, Some((120_000, Expiry::Idle))),
            (50_000, None, idle, Some((170_000, Expiry::Idle))),
            // A message begun at 115 s must be complete by 125 s, long
            // before the idle rule (234 s) would fire.
            (
                114_000,
                Some(115_000),
                idle,
                Some((125_000, Expiry::SlowMessage)),
            ),
            // A trickling header keeps traffic going; its deadline holds.
            (
                200_000,
                Some(195_000),
                idle,
                Some((205_000, Expiry::SlowMessage)),
            ),
            // Trusted peers: no idle rule, the message rule still applies.
            (0, None, None, None),
            (0, Some(3_000), None, Some((13_000, Expiry::SlowMessage))),
        ] {
            assert_eq!(
                next_expiry(last, partial, idle, msg),
                want,
                "{last} {partial:?} {idle:?}"
            );
        }
    }

    #[test]
    fn keepalive_crlfs_are_not_a_message_in_progress() {
        for (buf, partial) in [
            (&b""[..], false),
            (b"\r", false),
            (b"\r\n", false),
            (b"\r\n\r", false),
            (b"I", true),
            (b"INVITE sip:", true),
            (b"\r\nX", true),
        ] {
            assert_eq!(is_partial_message(buf), partial, "{buf:?}");
        }
    }

    #[test]
    fn accept_errors_back_off_unless_the_connection_alone_failed() {
        let emfile = io::Error::from_raw_os_error(24);
        assert_eq!(accept_backoff(&emfile), Some(Duration::from_millis(100)));
        let enfile = io::Error::from_raw_os_error(23);
        assert!(accept_backoff(&enfile).is_some());
        for kind in [
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::ConnectionReset,
        ] {
            assert_eq!(accept_backoff(&io::Error::from(kind)), None, "{kind:?}");
        }
    }

    #[test]
    fn log_gate_lets_one_line_through_per_period() {
        let mut g = LogGate::new(Duration::from_secs(10));
        let got: Vec<Option<u64>> = [0, 1, 2, 9_999, 10_000, 10_001, 30_000]
            .iter()
            .map(|t| g.note(*t))
            .collect();
        assert_eq!(got, vec![Some(0), None, None, None, Some(3), None, Some(1)]);
    }

    #[test]
    fn connection_cap_fits_under_the_descriptor_limit() {
        let l = TcpLimits::default();
        assert_eq!(l.fit_to_fds(None, 256).max_connections, 4096);
        assert_eq!(l.fit_to_fds(Some(1024), 256).max_connections, 768);
        assert_eq!(l.fit_to_fds(Some(1_048_576), 256).max_connections, 4096);
        assert_eq!(l.fit_to_fds(Some(100), 256).max_connections, 1);
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             95426                95426                processes \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_nofile(text), Some(1024));
        assert_eq!(
            parse_nofile(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
    }
}
