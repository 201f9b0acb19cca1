//! Media anchoring and call recording (SPEC M-1, M-2), the sans-I/O
//! building blocks: each module is pure or does I/O only on a writer or
//! path its caller passes in; `relay_io`, `writer` and `sys` are the I/O
//! edges (threads, sockets, files).

/// The media phase: SDP anchoring of tracked calls, ports, relay commands.
pub mod anchor;
/// G.711 µ-law / A-law ↔ 16-bit linear PCM.
pub mod g711;
/// Symmetric latching per leg (learn the real source, drop others) and the RTP timeout.
pub mod latch;
/// Signed, expiring recording links and path-safe file names from Call-IDs.
pub mod link;
/// Media counters for `/metrics`.
pub mod metrics;
/// RTP/RTCP port pairs (even/odd) from the media range, reused least recently freed first.
pub mod ports;
/// One call's recording: RTP in, G.711 decoded onto the timeline, WAV and DTMF list out.
pub mod recorder;
/// Call records waiting for their recording's outcome.
pub mod records;
/// The RTP relay as pure state: ports to sessions, latching, forwarding, timeouts.
pub mod relay;
/// The relay's commands, packets and time in, sends and recording jobs out: one core for both drivers.
pub mod relay_core;
/// The relay thread: media sockets, epoll, recvmmsg; commanded by the node.
pub mod relay_io;
/// RTP/RTCP headers, rtcp-mux demultiplexing, RFC 4733 telephone-events.
pub mod rtp;
/// SDP parse and rewrite (`c=`, `m=`, `a=rtcp`, hold), Content-Length fix.
pub mod sdp;
/// epoll, eventfd and recvmmsg (every `unsafe` of the media code).
pub mod sys;
/// Per-direction placement of decoded audio by RTP timestamp, streamed as stereo frames.
pub mod timeline;
/// The stereo 8 kHz WAV writer, partial-file detection and repair.
pub mod wav;
/// The recording writer thread (bounded queue, finalise + fsync) and the repair at start.
pub mod writer;
