//! The writer threads' command channels: bounded like `std::sync::mpsc::sync_channel`, but
//! their memory follows what is queued. `sync_channel(n)` allocates and initialises all `n`
//! slots when it is made: the two writers' 4,096 and 8,192 slots were ~1.3 ms of every start's
//! CPU (page faults on fresh memory), paid by each of 100 nodes starting at once on 2 cores
//! (`peer-lab run scale-shipped`), for queues that are nearly always empty.
//!
//! Built on std's list channel (blocks of slots allocated as they fill) and a count of what is
//! queued: [`Sender::try_send`] refuses past the bound, as `sync_channel`'s does. Control
//! messages (a flush, a shutdown) go with [`Sender::send_past_bound`] instead of waiting for
//! room: each caller has at most one in flight, so they add a handful, not an unbounded
//! number, and a flush must not be refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvError, RecvTimeoutError, TryRecvError, TrySendError};
use std::time::Duration;

/// A channel holding at most `bound` messages sent with [`Sender::try_send`].
pub fn bounded<T>(bound: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let sender = Sender {
        tx,
        queued: queued.clone(),
        bound,
    };
    (sender, Receiver { rx, queued })
}

pub struct Sender<T> {
    tx: mpsc::Sender<T>,
    queued: Arc<AtomicUsize>,
    bound: usize,
}

// Derived Debug and Clone would ask the same of `T`.
impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("queued", &self.queued.load(Ordering::Relaxed))
            .field("bound", &self.bound)
            .finish()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            queued: self.queued.clone(),
            bound: self.bound,
        }
    }
}

impl<T> Sender<T> {
    /// Queues `message` unless `bound` messages are queued already or the receiver is gone.
    pub fn try_send(&self, message: T) -> Result<(), TrySendError<T>> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.bound {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(TrySendError::Full(message));
        }
        self.tx.send(message).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            TrySendError::Disconnected(e.0)
        })
    }

    /// Queues a control message even when the channel is full; fails only if the receiver is
    /// gone (see the module doc for why this stays bounded).
    pub fn send_past_bound(&self, message: T) -> Result<(), mpsc::SendError<T>> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.tx.send(message).inspect_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        })
    }
}

pub struct Receiver<T> {
    rx: mpsc::Receiver<T>,
    queued: Arc<AtomicUsize>,
}

impl<T> Receiver<T> {
    pub fn recv(&self) -> Result<T, RecvError> {
        self.rx.recv().inspect(|_| self.took())
    }

    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.rx.recv_timeout(timeout).inspect(|_| self.took())
    }

    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.rx.try_recv().inspect(|_| self.took())
    }

    fn took(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_bound_and_takes_again_once_one_is_received() {
        let (tx, rx) = bounded(2);
        tx.try_send(1).unwrap();
        tx.clone().try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx.try_recv(), Ok(1));
        tx.try_send(3).unwrap();
        assert!(matches!(tx.try_send(4), Err(TrySendError::Full(4))));
        assert_eq!(rx.recv(), Ok(2));
        assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Ok(3));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn a_control_message_goes_past_a_full_channel_and_counts() {
        let (tx, rx) = bounded(1);
        tx.try_send("data").unwrap();
        tx.send_past_bound("flush").unwrap();
        assert!(matches!(tx.try_send("more"), Err(TrySendError::Full(_))));
        assert_eq!(rx.recv(), Ok("data"));
        // The control message still holds the one place until it is received.
        assert!(matches!(tx.try_send("more"), Err(TrySendError::Full(_))));
        assert_eq!(rx.recv(), Ok("flush"));
        tx.try_send("more").unwrap();
    }

    #[test]
    fn a_gone_receiver_is_reported_and_frees_the_place() {
        let (tx, rx) = bounded(1);
        drop(rx);
        assert!(matches!(tx.try_send(1), Err(TrySendError::Disconnected(1))));
        assert!(tx.send_past_bound(2).is_err());
        assert_eq!(tx.queued.load(Ordering::Acquire), 0);
    }
}
