//! "Input i may have changed", from whatever thread notices (rppal's
//! interrupt thread, the sim board) to the agent's loop, coalesced per
//! input: while input i's notice waits unread, further edges of i add
//! nothing. The agent reads the pin again after the debounce anyway (the
//! notice carries no level), so a flapping input costs one slot, never a
//! queue that grows faster than the loop drains it.
//!
//! Memory is one flag per input and a channel with room for one notice per
//! input, whatever the edge rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

/// The receiving side is gone (the agent stopped), or no such input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("nobody reads input edges any more, or there is no such input")]
pub(crate) struct EdgesClosed;

/// Sends notices; cheap to clone into interrupt callbacks.
#[derive(Clone, Debug)]
pub struct EdgeSender {
    pending: Arc<[AtomicBool]>,
    tx: mpsc::Sender<usize>,
}

/// Receives each input's notice at most once until it is read.
#[derive(Debug)]
pub struct EdgeReceiver {
    pending: Arc<[AtomicBool]>,
    rx: mpsc::Receiver<usize>,
}

/// A channel for `inputs` inputs (indices `0..inputs`).
pub fn channel(inputs: usize) -> (EdgeSender, EdgeReceiver) {
    let pending: Arc<[AtomicBool]> = (0..inputs).map(|_| AtomicBool::new(false)).collect();
    // tokio needs room for at least one.
    let (tx, rx) = mpsc::channel(inputs.max(1));
    (
        EdgeSender {
            pending: pending.clone(),
            tx,
        },
        EdgeReceiver { pending, rx },
    )
}

impl EdgeSender {
    /// Input `input` may have changed. Never blocks.
    pub(crate) fn send(&self, input: usize) -> Result<(), EdgesClosed> {
        let flag = self.pending.get(input).ok_or(EdgesClosed)?;
        if flag.swap(true, Ordering::AcqRel) {
            // Already waiting to be read: this edge adds nothing.
            return Ok(());
        }
        // At most one notice per input is ever in the channel, and it has
        // room for one per input, so only a closed channel fails here.
        self.tx.try_send(input).map_err(|_| {
            flag.store(false, Ordering::Release);
            EdgesClosed
        })
    }
}

impl EdgeReceiver {
    /// The next input that may have changed; `None` when every sender is
    /// gone. Cancel-safe (for `select!`).
    pub(crate) async fn recv(&mut self) -> Option<usize> {
        let input = self.rx.recv().await?;
        self.read(input);
        Some(input)
    }

    /// A notice already waiting, if any.
    #[cfg(test)]
    pub(crate) fn try_recv(&mut self) -> Option<usize> {
        let input = self.rx.try_recv().ok()?;
        self.read(input);
        Some(input)
    }

    /// Cleared on receipt, before the agent reads the pin: an edge after
    /// this sends a new notice, so none is missed.
    fn read(&self, input: usize) {
        if let Some(flag) = self.pending.get(input) {
            flag.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flapping_input_holds_one_notice_not_one_per_edge() {
        let (tx, mut rx) = channel(2);
        for _ in 0..1_000_000 {
            tx.send(1).unwrap();
        }
        tx.send(0).unwrap();
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.try_recv(), Some(0));
        assert_eq!(rx.try_recv(), None, "one notice per input, not per edge");
        // Read: the next edge is news again.
        tx.send(1).unwrap();
        assert_eq!(rx.try_recv(), Some(1));
    }

    #[test]
    fn no_such_input_or_nobody_listening_is_an_error() {
        let (tx, rx) = channel(1);
        assert_eq!(tx.send(5), Err(EdgesClosed));
        drop(rx);
        assert_eq!(tx.send(0), Err(EdgesClosed));
    }
}
