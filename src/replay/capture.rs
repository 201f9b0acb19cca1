//! Packets out of a capture file (SPEC R-1): pcap and pcapng (read with
//! pcap-file), link layers (Ethernet with VLAN tags and PPPoE, Linux cooked SLL and
//! SLL2, raw IP, BSD loopback), GRE and ERSPAN tunnels, IPv4 and IPv6 with
//! fragments reassembled, down to UDP, TCP and SCTP payloads. Pure over
//! the file's bytes: no sockets, no clock.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, TsResolution};

/// The transport protocol of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Udp,
    Tcp { seq: u32, syn: bool, fin: bool },
    Sctp,
}

/// One transport-level packet, IP fragments already joined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub l4: L4,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaptureError {
    #[error("not a pcap or pcapng file (starts with {0})")]
    NotACapture(String),
    /// Named apart: "starts with " and nothing said too little.
    #[error("empty file: no pcap or pcapng header")]
    Empty,
    #[error("{0}")]
    Broken(String),
}

/// What a capture holds besides the packets: how many frames were read
/// and how many gave no UDP, TCP or SCTP packet (ARP, other link types,
/// fragments of a datagram joined later).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contents {
    pub packets: Vec<Packet>,
    pub frames: usize,
    pub undecoded: usize,
    /// Why reading stopped before the end of the file (a capture cut off
    /// mid-record, a damaged record): what came before is still replayed.
    pub stopped: Option<String>,
}

const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Reads every frame of a pcap or pcapng file.
pub fn read(bytes: &[u8]) -> Result<Contents, CaptureError> {
    if bytes.is_empty() {
        return Err(CaptureError::Empty);
    }
    let mut decoder = Decoder::default();
    if bytes.starts_with(&PCAPNG_MAGIC) {
        read_pcapng(bytes, &mut decoder)?;
    } else {
        let magic: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        let mut r =
            PcapReader::new(bytes).map_err(|_| CaptureError::NotACapture(magic.join(" ")))?;
        let link = r.header().datalink;
        let ns_per_frac = match r.header().ts_resolution {
            TsResolution::MicroSecond => 1_000,
            TsResolution::NanoSecond => 1,
        };
        // Raw records: pcap-file's checked ones refuse a record whose
        // length on the wire exceeds the snap length, which is just what
        // `-s 256` captures are made of (trial, 2026-12-02: such a capture
        // replayed nothing). Its first bytes are what was captured.
        while let Some(p) = r.next_raw_packet() {
            match p {
                Ok(p) => {
                    let ns =
                        u64::from(p.ts_sec) * 1_000_000_000 + u64::from(p.ts_frac) * ns_per_frac;
                    decoder.frame(link, ns, &p.data)
                }
                Err(e) => {
                    let n = decoder.out.frames + 1;
                    decoder.out.stopped = Some(format!("pcap record {n}: {e}"));
                    break;
                }
            }
        }
    }
    Ok(decoder.out)
}

fn read_pcapng(bytes: &[u8], decoder: &mut Decoder) -> Result<(), CaptureError> {
    let mut r =
        PcapNgReader::new(bytes).map_err(|e| CaptureError::Broken(format!("pcapng: {e}")))?;
    // (link type, units per second) of each interface of the section.
    let mut interfaces: Vec<(DataLink, u64)> = Vec::new();
    while let Some(b) = r.next_block() {
        let b = match b {
            Ok(b) => b,
            Err(e) => {
                decoder.out.stopped = Some(format!(
                    "pcapng block after frame {}: {e}",
                    decoder.out.frames
                ));
                break;
            }
        };
        match b {
            Block::SectionHeader(_) => interfaces.clear(),
            Block::InterfaceDescription(idb) => {
                let mut per_second = 1_000_000u64;
                for o in &idb.options {
                    if let InterfaceDescriptionOption::IfTsResol(r) = o {
                        per_second = if r & 0x80 == 0 {
                            10u64.saturating_pow(u32::from(*r))
                        } else {
                            1u64.checked_shl(u32::from(r & 0x7f)).unwrap_or(u64::MAX)
                        };
                    }
                }
                interfaces.push((idb.linktype, per_second.max(1)));
            }
            Block::EnhancedPacket(p) => {
                let Some(&(link, per_second)) = interfaces.get(p.interface_id as usize) else {
                    decoder.out.frames += 1;
                    decoder.out.undecoded += 1;
                    continue;
                };
                // pcap-file hands over the raw count of units as nanoseconds.
                let units = p.timestamp.as_nanos();
                let ns = units * 1_000_000_000 / u128::from(per_second);
                decoder.frame(link, ns as u64, &p.data);
            }
            Block::SimplePacket(p) => {
                // No timestamp: the previous packet's time.
                let link = interfaces.first().map_or(DataLink::ETHERNET, |i| i.0);
                let ts = decoder.out.packets.last().map_or(0, |p| p.ts_ns);
                decoder.frame(link, ts, &p.data);
            }
            _ => {}
        }
    }
    Ok(())
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_PPPOE: u16 = 0x8864;
const GRE_ETHERNET: u16 = 0x6558;
const GRE_ERSPAN_2: u16 = 0x88be;
const GRE_ERSPAN_3: u16 = 0x22eb;

/// Fragments of one IP datagram: offset → bytes, and the total length
/// once the last fragment came.
#[derive(Default)]
struct Fragments {
    parts: Vec<(usize, Vec<u8>)>,
    total: Option<usize>,
}

impl Fragments {
    fn add(&mut self, offset: usize, data: &[u8], last: bool) -> Option<Vec<u8>> {
        if last {
            self.total = Some(offset + data.len());
        }
        self.parts.push((offset, data.to_vec()));
        let total = self.total?;
        self.parts.sort_by_key(|p| p.0);
        let mut out = vec![0u8; total];
        let mut covered = 0;
        for (off, d) in &self.parts {
            if *off > covered {
                return None; // a hole
            }
            let end = (off + d.len()).min(total);
            if end > covered {
                out[covered..end].copy_from_slice(&d[covered - off..end - off]);
                covered = end;
            }
        }
        (covered == total).then_some(out)
    }
}

type FragKey = (IpAddr, IpAddr, u32, u8);

#[derive(Default)]
struct Decoder {
    out: Contents,
    fragments: HashMap<FragKey, Fragments>,
}

impl Decoder {
    fn frame(&mut self, link: DataLink, ts_ns: u64, data: &[u8]) {
        self.out.frames += 1;
        let before = self.out.packets.len();
        match link {
            DataLink::ETHERNET => {
                self.ethernet(ts_ns, data, 0);
            }
            DataLink::LINUX_SLL => {
                if let Some(p) = be16(data, 14) {
                    self.ether_type(ts_ns, p, data.get(16..), 0);
                }
            }
            DataLink::LINUX_SLL2 => {
                if let Some(p) = be16(data, 0) {
                    self.ether_type(ts_ns, p, data.get(20..), 0);
                }
            }
            DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => self.ip(ts_ns, data, 0),
            // BSD loopback: a 4-byte address family, then IP.
            DataLink::NULL | DataLink::LOOP => {
                if let Some(ip) = data.get(4..) {
                    self.ip(ts_ns, ip, 0);
                }
            }
            _ => {}
        }
        if self.out.packets.len() == before {
            self.out.undecoded += 1;
        }
    }

    fn ethernet(&mut self, ts: u64, data: &[u8], depth: u8) -> Option<()> {
        let mut at = 12;
        let mut proto = be16(data, at)?;
        // 802.1Q, 802.1ad and the old QinQ tag.
        while matches!(proto, 0x8100 | 0x88a8 | 0x9100) {
            at += 4;
            proto = be16(data, at)?;
        }
        self.ether_type(ts, proto, data.get(at + 2..), depth);
        Some(())
    }

    fn ether_type(&mut self, ts: u64, proto: u16, data: Option<&[u8]>, depth: u8) {
        match (proto, data) {
            (ETH_IPV4 | ETH_IPV6, Some(d)) => self.ip(ts, d, depth),
            // PPPoE session: 6 bytes of PPPoE, then the PPP protocol
            // (0x0021 IPv4, 0x0057 IPv6).
            (ETH_PPPOE, Some(d)) => {
                if matches!(be16(d, 6), Some(0x0021 | 0x0057)) {
                    if let Some(ip) = d.get(8..) {
                        self.ip(ts, ip, depth);
                    }
                }
            }
            _ => {}
        }
    }

    fn ip(&mut self, ts: u64, data: &[u8], depth: u8) {
        match data.first().map(|b| b >> 4) {
            Some(4) => self.ipv4(ts, data, depth),
            Some(6) => self.ipv6(ts, data, depth),
            _ => {}
        }
    }

    fn ipv4(&mut self, ts: u64, d: &[u8], depth: u8) {
        let Some(&vihl) = d.first() else { return };
        let ihl = usize::from(vihl & 0x0f) * 4;
        let (Some(total), Some(id), Some(frag)) = (be16(d, 2), be16(d, 4), be16(d, 6)) else {
            return;
        };
        let Some(&proto) = d.get(9) else { return };
        let (Some(s), Some(t)) = (be32(d, 12), be32(d, 16)) else {
            return;
        };
        let end = usize::from(total).min(d.len());
        let Some(payload) = d.get(ihl..end) else {
            return;
        };
        let (src, dst) = (IpAddr::V4(Ipv4Addr::from(s)), IpAddr::V4(Ipv4Addr::from(t)));
        let more = frag & 0x2000 != 0;
        let offset = usize::from(frag & 0x1fff) * 8;
        if more || offset > 0 {
            let key = (src, dst, u32::from(id), proto);
            self.fragment(ts, key, offset, payload, !more, depth);
            return;
        }
        self.transport(ts, src, dst, proto, payload, depth);
    }

    fn ipv6(&mut self, ts: u64, d: &[u8], depth: u8) {
        let (Some(len), Some(&first_next)) = (be16(d, 4), d.get(6)) else {
            return;
        };
        let (Some(s), Some(t)) = (d.get(8..24), d.get(24..40)) else {
            return;
        };
        let addr = |b: &[u8]| {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            IpAddr::V6(Ipv6Addr::from(a))
        };
        let (src, dst) = (addr(s), addr(t));
        let end = (40 + usize::from(len)).min(d.len());
        let Some(mut rest) = d.get(40..end) else {
            return;
        };
        let mut next = first_next;
        loop {
            match next {
                // Hop-by-hop, routing, destination options.
                0 | 43 | 60 => {
                    let (Some(&n), Some(&l)) = (rest.first(), rest.get(1)) else {
                        return;
                    };
                    let skip = (usize::from(l) + 1) * 8;
                    let Some(r) = rest.get(skip..) else { return };
                    next = n;
                    rest = r;
                }
                44 => {
                    let (Some(&n), Some(off), Some(id)) =
                        (rest.first(), be16(rest, 2), be32(rest, 4))
                    else {
                        return;
                    };
                    let Some(payload) = rest.get(8..) else { return };
                    let offset = usize::from(off & 0xfff8);
                    let more = off & 1 != 0;
                    self.fragment(ts, (src, dst, id, n), offset, payload, !more, depth);
                    return;
                }
                _ => break,
            }
        }
        self.transport(ts, src, dst, next, rest, depth);
    }

    /// One fragment of an IPv4 or IPv6 datagram; the whole datagram goes
    /// on once its last hole is filled.
    fn fragment(
        &mut self,
        ts: u64,
        key: FragKey,
        offset: usize,
        payload: &[u8],
        last: bool,
        depth: u8,
    ) {
        let whole = self
            .fragments
            .entry(key)
            .or_default()
            .add(offset, payload, last);
        if let Some(whole) = whole {
            self.fragments.remove(&key);
            let (src, dst, _, proto) = key;
            self.transport(ts, src, dst, proto, &whole, depth);
        }
    }

    fn transport(&mut self, ts: u64, src: IpAddr, dst: IpAddr, proto: u8, p: &[u8], depth: u8) {
        let push = |out: &mut Contents, sp: u16, dp: u16, l4: L4, payload: &[u8]| {
            out.packets.push(Packet {
                ts_ns: ts,
                src: SocketAddr::new(src, sp),
                dst: SocketAddr::new(dst, dp),
                l4,
                payload: payload.to_vec(),
            })
        };
        match proto {
            17 => {
                let (Some(sp), Some(dp), Some(len)) = (be16(p, 0), be16(p, 2), be16(p, 4)) else {
                    return;
                };
                let end = usize::from(len).clamp(8, p.len().max(8)).min(p.len());
                if let Some(payload) = p.get(8..end) {
                    push(&mut self.out, sp, dp, L4::Udp, payload);
                }
            }
            6 => {
                let (Some(sp), Some(dp), Some(seq), Some(&off), Some(&flags)) =
                    (be16(p, 0), be16(p, 2), be32(p, 4), p.get(12), p.get(13))
                else {
                    return;
                };
                let Some(payload) = p.get(usize::from(off >> 4) * 4..) else {
                    return;
                };
                let l4 = L4::Tcp {
                    seq,
                    syn: flags & 0x02 != 0,
                    fin: flags & 0x01 != 0,
                };
                push(&mut self.out, sp, dp, l4, payload);
            }
            132 => {
                let (Some(sp), Some(dp)) = (be16(p, 0), be16(p, 2)) else {
                    return;
                };
                push(
                    &mut self.out,
                    sp,
                    dp,
                    L4::Sctp,
                    p.get(12..).unwrap_or_default(),
                );
            }
            // GRE, and the Ethernet or IP inside it (one level of tunnel is
            // what port mirroring produces; deeper nesting is not followed).
            47 if depth < 2 => self.gre(ts, p, depth + 1),
            4 if depth < 2 => self.ipv4(ts, p, depth + 1),
            41 if depth < 2 => self.ipv6(ts, p, depth + 1),
            _ => {}
        }
    }

    fn gre(&mut self, ts: u64, p: &[u8], depth: u8) {
        let (Some(flags), Some(proto)) = (be16(p, 0), be16(p, 2)) else {
            return;
        };
        let mut at = 4;
        for bit in [0x8000u16, 0x2000, 0x1000] {
            if flags & bit != 0 {
                at += 4; // checksum, key, sequence number
            }
        }
        let Some(inner) = p.get(at..) else { return };
        match proto {
            ETH_IPV4 | ETH_IPV6 => self.ip(ts, inner, depth),
            GRE_ETHERNET => {
                self.ethernet(ts, inner, depth);
            }
            // ERSPAN type II has a sequence number and an 8-byte header;
            // type I has neither.
            GRE_ERSPAN_2 => {
                let skip = if flags & 0x1000 != 0 { 8 } else { 0 };
                if let Some(frame) = inner.get(skip..) {
                    self.ethernet(ts, frame, depth);
                }
            }
            // ERSPAN type III: 12 bytes, plus 8 when its O bit is set.
            GRE_ERSPAN_3 => {
                let opt = inner.get(11).is_some_and(|b| b & 1 != 0);
                if let Some(frame) = inner.get(if opt { 20 } else { 12 }..) {
                    self.ethernet(ts, frame, depth);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_fragments_are_joined_in_any_order() {
        let mut f = Fragments::default();
        assert_eq!(f.add(8, b"89abcdef", false), None);
        assert_eq!(f.add(16, b"XYZ", true), None, "a hole at 0");
        assert_eq!(
            f.add(0, b"01234567", false).as_deref(),
            Some(&b"0123456789abcdefXYZ"[..])
        );
    }

    const SIP: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n";

    fn udp(payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&5060u16.to_be_bytes());
        u.extend_from_slice(&5070u16.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    /// An IPv4 header around `payload`; `frag` is the flags/offset field.
    fn ipv4(proto: u8, id: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        h.extend_from_slice(&id.to_be_bytes());
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        h.extend_from_slice(payload);
        h
    }

    fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(&[next, 64]);
        h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        h.extend_from_slice(&[0; 11]);
        h.push(1);
        h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        h.extend_from_slice(&[0; 11]);
        h.push(2);
        h.extend_from_slice(payload);
        h
    }

    fn ethernet(ether_type: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2; 12];
        f.extend_from_slice(ether_type);
        f.extend_from_slice(payload);
        f
    }

    fn decode(link: DataLink, frames: &[Vec<u8>]) -> Vec<Packet> {
        let mut d = Decoder::default();
        for (i, f) in frames.iter().enumerate() {
            d.frame(link, i as u64, f);
        }
        d.out.packets
    }

    fn one_sip_packet(what: &str, packets: &[Packet]) {
        assert_eq!(packets.len(), 1, "{what}: {packets:?}");
        let p = &packets[0];
        assert_eq!(p.payload, SIP, "{what}");
        assert_eq!(
            (p.src.port(), p.dst.port(), p.l4),
            (5060, 5070, L4::Udp),
            "{what}"
        );
    }

    #[test]
    fn link_layers_tunnels_and_fragments_down_to_udp() {
        let ip = ipv4(17, 1, 0, &udp(SIP));
        let v6 = ipv6(17, &udp(SIP));
        one_sip_packet(
            "ethernet",
            &decode(DataLink::ETHERNET, &[ethernet(&[8, 0], &ip)]),
        );
        let mut qinq = vec![0x88, 0xa8, 0, 1, 0x81, 0, 0, 2];
        qinq.extend_from_slice(&[8, 0]);
        one_sip_packet(
            "802.1ad + 802.1Q",
            &decode(DataLink::ETHERNET, &[ethernet(&qinq, &ip)]),
        );
        let mut pppoe = vec![0x11, 0, 0, 1, 0, 0, 0x00, 0x21];
        pppoe.extend_from_slice(&ip);
        one_sip_packet(
            "PPPoE",
            &decode(DataLink::ETHERNET, &[ethernet(&[0x88, 0x64], &pppoe)]),
        );
        let mut sll = vec![0; 14];
        sll.extend_from_slice(&[8, 0]);
        sll.extend_from_slice(&ip);
        one_sip_packet("SLL", &decode(DataLink::LINUX_SLL, &[sll]));
        let mut sll2 = vec![0x86, 0xdd];
        sll2.extend_from_slice(&[0; 18]);
        sll2.extend_from_slice(&v6);
        let p = decode(DataLink::LINUX_SLL2, &[sll2]);
        one_sip_packet("SLL2 + IPv6", &p);
        assert_eq!(p[0].src.ip().to_string(), "2001:db8::1");
        one_sip_packet("raw IP", &decode(DataLink::RAW, std::slice::from_ref(&ip)));
        let mut null = vec![2, 0, 0, 0];
        null.extend_from_slice(&ip);
        one_sip_packet("BSD loopback", &decode(DataLink::NULL, &[null]));
        // ERSPAN II: GRE with a sequence number, 8 bytes of ERSPAN, then
        // the mirrored Ethernet frame.
        let mut gre = vec![0x10, 0, 0x88, 0xbe, 0, 0, 0, 7];
        gre.extend_from_slice(&[0; 8]);
        gre.extend_from_slice(&ethernet(&[8, 0], &ip));
        one_sip_packet(
            "ERSPAN II",
            &decode(
                DataLink::ETHERNET,
                &[ethernet(&[8, 0], &ipv4(47, 9, 0, &gre))],
            ),
        );

        // IPv4 fragments, the last first.
        let dgram = udp(SIP);
        let (a, b) = dgram.split_at(24);
        let frames = [
            ethernet(&[8, 0], &ipv4(17, 77, 3, b)),
            ethernet(&[8, 0], &ipv4(17, 77, 0x2000, a)),
        ];
        one_sip_packet("IPv4 fragments", &decode(DataLink::ETHERNET, &frames));
        // IPv6 fragment headers.
        let frag6 = |off: u16, more: bool, part: &[u8]| {
            let mut h = vec![17, 0];
            h.extend_from_slice(&(off | u16::from(more)).to_be_bytes());
            h.extend_from_slice(&0x1234u32.to_be_bytes());
            h.extend_from_slice(part);
            ipv6(44, &h)
        };
        let frames = [frag6(0, true, a), frag6(24, false, b)];
        one_sip_packet("IPv6 fragments", &decode(DataLink::RAW, &frames));
    }

    /// A classic pcap (little-endian, µs) with snap length `snaplen` and
    /// raw-IP records of (bytes captured, length on the wire).
    fn pcap_file(snaplen: u32, records: &[(&[u8], u32)]) -> Vec<u8> {
        let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&snaplen.to_le_bytes());
        f.extend_from_slice(&101u32.to_le_bytes());
        for (i, (data, orig)) in records.iter().enumerate() {
            f.extend_from_slice(&(i as u32 + 1).to_le_bytes());
            f.extend_from_slice(&500u32.to_le_bytes());
            f.extend_from_slice(&(data.len() as u32).to_le_bytes());
            f.extend_from_slice(&orig.to_le_bytes());
            f.extend_from_slice(data);
        }
        f
    }

    /// `dumpcap -s 256`: records cut to the snap length are records, not
    /// damage; reading goes on past them.
    #[test]
    fn records_cut_to_the_snap_length_do_not_stop_reading() {
        let long = ipv4(17, 1, 0, &udp(&[b'x'; 1800]));
        let sip = ipv4(17, 2, 0, &udp(SIP));
        let file = pcap_file(
            256,
            &[(&long[..256], long.len() as u32), (&sip, sip.len() as u32)],
        );
        let c = read(&file).expect("a capture");
        assert_eq!((c.frames, c.stopped.as_deref()), (2, None));
        let sip_packets: Vec<&Packet> = c.packets.iter().filter(|p| p.payload == SIP).collect();
        assert_eq!(sip_packets.len(), 1, "{:?}", c.packets);
        assert_eq!(sip_packets[0].ts_ns, 2_000_500_000);
    }

    #[test]
    fn not_a_capture_is_named() {
        assert_eq!(
            read(b"INVITE sip:x SIP/2.0\r\n"),
            Err(CaptureError::NotACapture("49 4e 56 49".into()))
        );
        assert_eq!(read(b""), Err(CaptureError::Empty));
        assert_eq!(
            CaptureError::Empty.to_string(),
            "empty file: no pcap or pcapng header"
        );
    }
}
