//! A full window that does not move: the connection is up, every message
//! the window allows is in flight, and the broker acknowledges none of
//! them, so nothing else is sent while the outbox grows. It used to pass
//! without a word; now it is said once, with its cause, and its end too.
//!
//! Pure state, handed `now` (the monotonic clock: a wall clock that jumps
//! must not invent or hide a stall). It knows nothing of MQTT or the outbox.

use std::time::{Duration, Instant};

pub(super) struct StallWatch {
    /// How long a full window may stand still: the keep-alive, within which
    /// a live broker answers anything.
    after: Duration,
    /// Since when the window has been full with no acknowledgement.
    full_since: Option<Instant>,
    /// The stall was reported (its end will be too).
    said: bool,
}

impl StallWatch {
    pub(super) fn new(after: Duration) -> StallWatch {
        StallWatch {
            after,
            full_since: None,
            said: false,
        }
    }

    /// The broker acknowledged something: words if that ends a reported
    /// stall.
    pub(super) fn acked(&mut self, now: Instant) -> Option<String> {
        let since = self.full_since.take();
        if !std::mem::take(&mut self.said) {
            return None;
        }
        let secs = since.map_or(0.0, |at| now.duration_since(at).as_secs_f64());
        Some(format!(
            "the broker acknowledges again, after {secs:.0}s; publishing goes on"
        ))
    }

    /// At each stats report: words the first time a full window has stood
    /// still for longer than the keep-alive on a connection that is up.
    pub(super) fn check(
        &mut self,
        in_flight: usize,
        window: usize,
        queued: usize,
        connected: bool,
        now: Instant,
    ) -> Option<String> {
        if !connected || in_flight < window {
            // A link that is down is said elsewhere; a window with room
            // is moving.
            self.full_since = None;
            self.said = false;
            return None;
        }
        let since = *self.full_since.get_or_insert(now);
        let still = now.duration_since(since);
        if self.said || still <= self.after {
            return None;
        }
        self.said = true;
        Some(format!(
            "publishing has stalled: the broker has acknowledged none of the {in_flight} \
             messages in flight for {:.1}s (longer than the keep-alive of {:.0}s) though the \
             connection is up, so nothing more is sent and {queued} messages wait in the \
             outbox. The broker is overloaded or stuck, or it drops acknowledgements (a \
             proxy or a broker bug); its log says which. Nothing is lost: the messages go \
             when it acknowledges again or after a reconnect",
            still.as_secs_f64(),
            self.after.as_secs_f64()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP_ALIVE: Duration = Duration::from_secs(10);

    #[test]
    fn a_full_window_that_stands_still_past_the_keep_alive_is_said_once() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(KEEP_ALIVE);
        assert_eq!(w.check(48, 48, 100, true, t0), None);
        assert_eq!(
            w.check(48, 48, 200, true, t0 + Duration::from_secs(10)),
            None
        );
        let words = w.check(48, 48, 300, true, t0 + Duration::from_secs(11));
        let words = words.expect("a stall is said");
        assert!(words.contains("none of the 48 messages"), "{words}");
        assert!(words.contains("300 messages wait"), "{words}");
        assert_eq!(
            w.check(48, 48, 400, true, t0 + Duration::from_secs(12)),
            None,
            "once"
        );
        let end = w
            .acked(t0 + Duration::from_secs(20))
            .expect("its end is said");
        assert!(end.contains("after 20s"), "{end}");
    }

    #[test]
    fn acknowledgements_or_room_in_the_window_are_no_stall() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(KEEP_ALIVE);
        for s in 0..30 {
            let now = t0 + Duration::from_secs(s);
            assert_eq!(w.check(48, 48, 0, true, now), None, "at {s}s");
            // Acknowledgements keep coming, however full the window.
            assert_eq!(w.acked(now), None);
        }
        for s in 0..30 {
            let now = t0 + Duration::from_secs(s);
            assert_eq!(w.check(47, 48, 0, true, now), None);
        }
    }

    #[test]
    fn a_link_that_is_down_is_no_stall() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(KEEP_ALIVE);
        for s in 0..30 {
            let now = t0 + Duration::from_secs(s);
            assert_eq!(w.check(48, 48, 0, false, now), None);
        }
    }
}
