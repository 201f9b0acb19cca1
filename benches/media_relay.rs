//! The media relay's per-packet cost: the pure table (`Relay::on_packet`:
//! port lookup, latch, destination), and the same with the relay thread's
//! socket work (recvmmsg batch + send_to on loopback) for one stream.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use siptrack::media::ports::PortPair;
use siptrack::media::relay::{LegSdp, Relay, StreamPorts};
use siptrack::media::sys::RecvBatch;
use siptrack::media::timeline::Side;

fn sdp(a: SocketAddr) -> LegSdp {
    LegSdp {
        rtp: Some(a),
        rtcp: Some(SocketAddr::new(a.ip(), a.port() + 1)),
        rtcp_mux: false,
        hold: false,
    }
}

fn packet() -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7];
    p.extend_from_slice(&[0xff; 160]);
    p
}

fn table(c: &mut Criterion) {
    // 1,000 calls' sessions, packets to one of them.
    let mut r = Relay::new(60_000);
    for i in 0..1000u16 {
        let base = 30000 + i * 4;
        let ports = StreamPorts {
            caller: PortPair {
                rtp: base,
                rtcp: base + 1,
            },
            callee: PortPair {
                rtp: base + 2,
                rtcp: base + 3,
            },
        };
        r.add_streams(u64::from(i), &[ports], Some(0), [None, None], 0);
        r.update(
            u64::from(i),
            0,
            Side::Caller,
            sdp("10.0.0.1:4000".parse().expect("addr")),
            0,
        );
        r.update(
            u64::from(i),
            0,
            Side::Callee,
            sdp("10.0.0.2:5000".parse().expect("addr")),
            0,
        );
    }
    let src: SocketAddr = "10.0.0.1:4000".parse().expect("addr");
    let p = packet();
    let mut g = c.benchmark_group("media_relay");
    g.throughput(Throughput::Elements(1));
    g.bench_function("on_packet (1,000 sessions)", |b| {
        b.iter(|| black_box(r.on_packet(black_box(32000), src, &p, 1)))
    });
    // Loopback: send 16 packets to the relay's socket, take them with one
    // recvmmsg, relay each with send_to (what the relay thread does).
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    rx.set_nonblocking(true).expect("nonblocking");
    let out = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sink.set_nonblocking(true).expect("nonblocking");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let to_rx = rx.local_addr().expect("addr");
    let to_sink = sink.local_addr().expect("addr");
    let mut batch = RecvBatch::new(16);
    let mut drain = [0u8; 2048];
    g.throughput(Throughput::Elements(16));
    g.bench_function("16 packets: recvmmsg + 16 send_to", |b| {
        b.iter(|| {
            for _ in 0..16 {
                let _ = tx.send_to(&p, to_rx);
            }
            let n = batch.recv(rx.as_raw_fd()).unwrap_or(0);
            for i in 0..n {
                if let Some((d, _)) = batch.get(i) {
                    let _ = out.send_to(d, to_sink);
                }
            }
            while sink.recv_from(&mut drain).is_ok() {}
        })
    });
    g.bench_function("16 packets: 16 recv_from + 16 send_to", |b| {
        b.iter(|| {
            for _ in 0..16 {
                let _ = tx.send_to(&p, to_rx);
            }
            while let Ok((n, _)) = rx.recv_from(&mut drain) {
                let _ = out.send_to(&drain[..n], to_sink);
            }
            let mut d2 = [0u8; 2048];
            while sink.recv_from(&mut d2).is_ok() {}
        })
    });
    g.finish();
}

criterion_group!(benches, table);
criterion_main!(benches);
