//! A connection's write queue, bounded in bytes rather than messages: a
//! peer that does not read must not make siptrack hold its responses
//! without end (issue 12: 8 such connections took RSS from 66 to 645 MB).
//! When a message would take the queue past its bound the queue is marked
//! overflowed and the connection is closed; nothing more is queued.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

struct Shared {
    /// Bytes queued or being written.
    queued: AtomicUsize,
    limit: usize,
    overflowed: AtomicBool,
    overflow: Notify,
}

/// The sending side, held by the core's connection table and the
/// connection's reader (for keep-alive answers).
#[derive(Clone)]
pub struct WriteQueue {
    tx: mpsc::UnboundedSender<Bytes>,
    shared: Arc<Shared>,
}

/// What became of a message handed to [`WriteQueue::push`].
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The bound was passed with this message: it is dropped and the
    /// connection is being closed.
    Overflow,
    /// The connection is gone (or closing after an overflow); the message
    /// is handed back.
    Closed(Bytes),
}

/// The writing side, owned by the connection's writer task.
pub struct QueueReceiver {
    rx: mpsc::UnboundedReceiver<Bytes>,
    shared: Arc<Shared>,
}

/// A queue holding at most `limit` bytes.
pub fn channel(limit: usize) -> (WriteQueue, QueueReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        limit,
        overflowed: AtomicBool::new(false),
        overflow: Notify::new(),
    });
    (
        WriteQueue {
            tx,
            shared: shared.clone(),
        },
        QueueReceiver { rx, shared },
    )
}

impl WriteQueue {
    pub fn push(&self, data: Bytes) -> Push {
        let s = &self.shared;
        if s.overflowed.load(Ordering::Acquire) {
            return Push::Closed(data);
        }
        let len = data.len();
        let before = s.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > s.limit {
            s.queued.fetch_sub(len, Ordering::AcqRel);
            s.overflowed.store(true, Ordering::Release);
            // notify_one keeps a permit when nobody waits yet.
            s.overflow.notify_one();
            return Push::Overflow;
        }
        match self.tx.send(data) {
            Ok(()) => Push::Queued,
            Err(e) => {
                s.queued.fetch_sub(len, Ordering::AcqRel);
                Push::Closed(e.0)
            }
        }
    }

    /// Completes once the queue has overflowed.
    pub async fn overflowed(&self) {
        if !self.shared.overflowed.load(Ordering::Acquire) {
            self.shared.overflow.notified().await;
        }
    }

    pub fn is_overflowed(&self) -> bool {
        self.shared.overflowed.load(Ordering::Acquire)
    }

    /// Bytes queued or being written.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.shared.limit
    }

    /// Both handles belong to the same connection.
    pub fn same(&self, other: &WriteQueue) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl QueueReceiver {
    /// The next message to write; None when every sender is gone.
    pub async fn next(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    /// A message of `len` bytes has been written out.
    pub fn written(&self, len: usize) {
        self.shared.queued.fetch_sub(len, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[tokio::test]
    async fn a_peer_that_does_not_read_cannot_make_the_queue_grow() {
        let (q, mut rx) = channel(1000);
        assert_eq!(q.push(msg(400)), Push::Queued);
        assert_eq!(q.push(msg(600)), Push::Queued, "exactly the bound fits");
        assert_eq!(q.queued(), 1000);
        assert!(!q.is_overflowed());
        // Nobody writes: the next byte passes the bound.
        assert_eq!(q.push(msg(1)), Push::Overflow);
        assert!(q.is_overflowed());
        q.overflowed().await;
        // From now on nothing is queued, however much the core sends.
        for _ in 0..10_000 {
            assert!(matches!(q.push(msg(100)), Push::Closed(_)));
        }
        assert_eq!(q.queued(), 1000, "held bytes never pass the bound");
        // What was queued before the overflow is still there to write.
        let first = rx.next().await.expect("queued");
        assert_eq!(first.len(), 400);
        rx.written(first.len());
        assert_eq!(q.queued(), 600);
    }

    #[tokio::test]
    async fn written_bytes_make_room_again() {
        let (q, mut rx) = channel(1000);
        for _ in 0..100 {
            assert_eq!(q.push(msg(700)), Push::Queued);
            let m = rx.next().await.expect("queued");
            rx.written(m.len());
        }
        assert_eq!(q.queued(), 0);
        assert!(!q.is_overflowed());
    }

    #[tokio::test]
    async fn a_closed_connection_hands_the_message_back() {
        let (q, rx) = channel(1000);
        drop(rx);
        assert_eq!(q.push(msg(10)), Push::Closed(msg(10)));
        assert_eq!(q.queued(), 0);
        let (other, _rx) = channel(1000);
        assert!(q.same(&q.clone()) && !q.same(&other));
    }
}
