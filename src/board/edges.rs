//! "Input i may have changed", from whatever thread notices (rppal's
//! interrupt thread, the sim board) to the agent's loop, coalesced per
//! input: while input i's notice waits unread, further edges of i add
//! nothing. The agent reads the pin again after the debounce anyway (the
//! notice carries no level), so a flapping input costs one slot, never a
//! queue that grows faster than the loop drains it.
//!
//! Memory is one flag per input and a channel with room for one notice per
//! input, whatever the edge rate.
//!
//! A counting input's edges cannot be coalesced away: the thread that sees
//! them judges each with a [`PulseFilter`] and adds the pulses to that
//! input's count here, which the agent takes whole on the notice. However
//! long the loop is busy, a pulse is a number added, never a message lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

/// The receiving side is gone (the agent stopped), or no such input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("nobody reads input edges any more, or there is no such input")]
pub(crate) struct EdgesClosed;

/// Sends notices; cheap to clone into interrupt callbacks.
#[derive(Clone, Debug)]
pub struct EdgeSender {
    pending: Arc<[AtomicBool]>,
    pulses: Arc<[AtomicU64]>,
    tx: mpsc::Sender<usize>,
}

/// Receives each input's notice at most once until it is read.
#[derive(Debug)]
pub struct EdgeReceiver {
    pending: Arc<[AtomicBool]>,
    pulses: Arc<[AtomicU64]>,
    rx: mpsc::Receiver<usize>,
}

/// A channel for `inputs` inputs (indices `0..inputs`).
pub fn channel(inputs: usize) -> (EdgeSender, EdgeReceiver) {
    let pending: Arc<[AtomicBool]> = (0..inputs).map(|_| AtomicBool::new(false)).collect();
    let pulses: Arc<[AtomicU64]> = (0..inputs).map(|_| AtomicU64::new(0)).collect();
    // tokio needs room for at least one.
    let (tx, rx) = mpsc::channel(inputs.max(1));
    (
        EdgeSender {
            pending: pending.clone(),
            pulses: pulses.clone(),
            tx,
        },
        EdgeReceiver {
            pending,
            pulses,
            rx,
        },
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

impl EdgeSender {
    /// One pulse of counting input `input`, then its notice. Never blocks.
    pub(crate) fn pulse(&self, input: usize) -> Result<(), EdgesClosed> {
        self.pulses
            .get(input)
            .ok_or(EdgesClosed)?
            .fetch_add(1, Ordering::AcqRel);
        self.send(input)
    }
}

impl EdgeSender {
    /// `count` pulses of counting input `input` seen elsewhere (a board
    /// behind another), then its notice. Never blocks.
    pub(crate) fn pulses(&self, input: usize, count: u64) -> Result<(), EdgesClosed> {
        if count > 0 {
            self.pulses
                .get(input)
                .ok_or(EdgesClosed)?
                .fetch_add(count, Ordering::AcqRel);
        }
        self.send(input)
    }
}

impl EdgeReceiver {
    /// As [`EdgeReceiver::recv`], on a thread of its own (not the loop).
    pub(crate) fn blocking_recv(&mut self) -> Option<usize> {
        let input = self.rx.blocking_recv()?;
        self.read(input);
        Some(input)
    }

    /// The pulses of input `input` counted since the last call. Taken after
    /// its notice was read, so a pulse added meanwhile brings a new notice.
    pub(crate) fn take_pulses(&self, input: usize) -> u64 {
        self.pulses
            .get(input)
            .map_or(0, |count| count.swap(0, Ordering::AcqRel))
    }

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

/// Which electrical edges of a counting input are pulses, and the quiet
/// time that makes one: an edge counts only when the input has been still
/// for `debounce` before it, so a bouncing contact's burst is one pulse.
/// Pure: the edge's time comes from its source (the kernel's timestamp
/// where there is one).
#[derive(Debug, Clone)]
pub(crate) struct PulseFilter {
    rising: bool,
    falling: bool,
    debounce_ns: u64,
    last_ns: Option<u64>,
}

impl PulseFilter {
    /// Counts `rising` and/or `falling` electrical edges.
    pub(crate) fn new(rising: bool, falling: bool, debounce: Duration) -> PulseFilter {
        PulseFilter {
            rising,
            falling,
            debounce_ns: u64::try_from(debounce.as_nanos()).unwrap_or(u64::MAX),
            last_ns: None,
        }
    }

    /// Whether an edge (`rising` or falling) at `at_ns` is a pulse.
    pub(crate) fn accept(&mut self, rising: bool, at_ns: u64) -> bool {
        let quiet = self
            .last_ns
            .is_none_or(|last| at_ns.saturating_sub(last) >= self.debounce_ns);
        self.last_ns = Some(at_ns);
        quiet && if rising { self.rising } else { self.falling }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counting_input_keeps_every_pulse_while_its_notice_waits() {
        let (tx, mut rx) = channel(2);
        for _ in 0..10_000 {
            tx.pulse(1).unwrap();
        }
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.try_recv(), None, "one notice");
        assert_eq!(rx.take_pulses(1), 10_000, "and every pulse");
        assert_eq!(rx.take_pulses(1), 0, "taken once");
        assert_eq!(rx.take_pulses(0), 0);
        tx.pulse(1).unwrap();
        assert_eq!(rx.try_recv(), Some(1), "a pulse after the take is news");
        assert_eq!(tx.pulse(7), Err(EdgesClosed));
    }

    #[test]
    fn a_bouncing_contact_is_one_pulse_and_clean_pulses_each_count() {
        let ms = 1_000_000;
        let mut f = PulseFilter::new(true, false, Duration::from_millis(5));
        // A press bouncing for 1 ms: rising, falling, rising within 5 ms.
        let burst = [(true, 0), (false, ms / 4), (true, ms / 2), (false, 30 * ms)];
        let counted = burst.iter().filter(|(r, at)| f.accept(*r, *at)).count();
        assert_eq!(counted, 1, "a 30 ms pulse bouncing at its start is one");
        // Clean pulses 10 ms wide every 100 ms: each one counts.
        let mut f = PulseFilter::new(true, false, Duration::from_millis(5));
        let mut n = 0;
        for i in 0..1000u64 {
            n += usize::from(f.accept(true, i * 100 * ms));
            n += usize::from(f.accept(false, i * 100 * ms + 10 * ms));
        }
        assert_eq!(n, 1000);
        // Falling edges only, and both.
        let mut falling = PulseFilter::new(false, true, Duration::ZERO);
        let mut both = PulseFilter::new(true, true, Duration::ZERO);
        let edges = [(true, 1), (false, 2), (true, 3), (false, 4)];
        assert_eq!(
            edges.iter().filter(|(r, t)| falling.accept(*r, *t)).count(),
            2
        );
        assert_eq!(edges.iter().filter(|(r, t)| both.accept(*r, *t)).count(), 4);
        // A timestamp going backwards (a clock source change) never panics
        // and never counts a burst as many.
        let mut f = PulseFilter::new(true, true, Duration::from_millis(5));
        assert!(f.accept(true, 10 * ms));
        assert!(!f.accept(false, ms));
    }

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
