//! SIP wire format: our own zero-copy parser.
//!
//! A [`Message`] is the received buffer plus an index of spans (start line,
//! header lines, body). Nothing is decoded until a caller asks for it; typed
//! views ([`Via`], [`NameAddr`], [`Uri`], the CSeq of [`validate::cseq`])
//! borrow from the buffer.
//! Edits are expressed as span replacements ([`Patch`]) so that every byte
//! siptrack does not have to change leaves exactly as it arrived (SPEC S-5).
//! No I/O here.

pub mod addrs;
pub mod chars;
pub mod framing;
pub mod header;
mod lines;
pub mod message;
pub mod nameaddr;
pub mod patch;
pub mod reply;
mod scan;
pub mod uri;
pub mod validate;
pub mod via;

pub use addrs::{AddrSpan, RequestUriSpans};
pub use framing::{stream_frame, Framer, StreamFrame};
pub use header::HeaderName;
pub use message::{Defect, HeaderField, Message, Method, ParseError, Span, StartLine};
pub use nameaddr::NameAddr;
pub use patch::Patch;
pub use uri::Uri;
pub use validate::Rejection;
pub use via::Via;
