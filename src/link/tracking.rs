//! Which message each packet id carries, and keeping unacknowledged
//! publishes across a lost connection: the link's PubAck bookkeeping, as
//! plain data (rumqttc's `state.rs` habit) so it is tested without a socket.
//!
//! Callers tag each publish with a token (the outbox's message id). rumqttc
//! assigns packet ids when it writes a publish, in the order requests were
//! queued, so the tokens of queued-but-unwritten publishes wait in a FIFO
//! shared with the publishers, and each `Outgoing::Publish(pkid)` takes the
//! next one.
//!
//! When a connection dies rumqttc moves unacknowledged publishes and the
//! queued requests into `EventLoop::pending`, and if the next CONNACK has no
//! session it clears that list: those messages would be lost. It also
//! appends newer unacknowledged publishes *after* older unsent ones, which
//! breaks per-stream order. So on every failure the tracker takes the list
//! out, orders it by token (tokens increase in creation order), and on the
//! next CONNACK puts it back with fresh packet ids, ahead of anything queued
//! since. Out-of-order PUBACKs (packet-id collisions in rumqttc) are not
//! handled; Mosquitto, EMQX and AWS IoT acknowledge in order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use rumqttc::Request;

/// Tokens of publishes queued towards rumqttc and not yet written, in
/// queue order. `None` for untracked publishes (one-shot CLI, QoS 0).
#[derive(Clone, Default)]
pub(super) struct Handed(Arc<Mutex<VecDeque<Option<u64>>>>);

impl Handed {
    /// Runs `queue` with the FIFO locked, so the token order is the queue
    /// order even with several publishers.
    pub(super) fn with<R>(&self, f: impl FnOnce(&mut VecDeque<Option<u64>>) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }
}

#[derive(Default)]
pub(super) struct Tracker {
    handed: Handed,
    /// Written and not yet acknowledged: packet id → token.
    in_flight: HashMap<u16, Option<u64>>,
    /// Taken out of rumqttc at a failure, to go back in at the next CONNACK.
    held: Vec<(Option<u64>, Request)>,
}

impl Tracker {
    pub(super) fn new(handed: Handed) -> Tracker {
        Tracker {
            handed,
            ..Tracker::default()
        }
    }

    /// rumqttc wrote a publish with this packet id: which token it carries.
    pub(super) fn sent(&mut self, pkid: u16) -> Option<u64> {
        if pkid != 0 {
            if let Some(token) = self.in_flight.get(&pkid) {
                // A retransmission of a publish already written.
                return *token;
            }
        }
        let token = self.handed.with(|h| h.pop_front()).flatten();
        if pkid != 0 {
            self.in_flight.insert(pkid, token);
        }
        token
    }

    /// The broker acknowledged this packet id.
    pub(super) fn acked(&mut self, pkid: u16) -> Option<u64> {
        self.in_flight.remove(&pkid).flatten()
    }

    /// The connection failed: take every request rumqttc kept for the next
    /// connection, in creation order.
    pub(super) fn lost(&mut self, pending: &mut VecDeque<Request>) {
        let mut others = Vec::new();
        for request in pending.drain(..) {
            match request {
                Request::Publish(p) => {
                    let token = if p.pkid != 0 {
                        self.in_flight.remove(&p.pkid).flatten()
                    } else {
                        // Not written yet: its token is next in the FIFO.
                        self.handed.with(|h| h.pop_front()).flatten()
                    };
                    self.held.push((token, Request::Publish(p)));
                }
                // Acks belong to the old connection.
                Request::PubAck(_) | Request::PubRec(_) | Request::PubComp(_) => {}
                other => others.push((None, other)),
            }
        }
        // Anything still recorded as in flight was never given back by
        // rumqttc (it should not happen); its token is simply not acked.
        self.in_flight.clear();
        // Stable: untracked publishes keep their place among themselves.
        self.held.sort_by_key(|(token, _)| *token);
        self.held.extend(others);
    }

    /// A new connection: everything held goes first, with fresh packet ids
    /// (a new session does not know the old ones; a resumed one treats the
    /// copies as the duplicates QoS 1 allows).
    pub(super) fn reconnected(&mut self, pending: &mut VecDeque<Request>) {
        let held = std::mem::take(&mut self.held);
        let mut tokens = Vec::new();
        let mut requests: Vec<Request> = held
            .into_iter()
            .map(|(token, request)| match request {
                Request::Publish(mut p) => {
                    p.pkid = 0;
                    p.dup = false;
                    tokens.push(token);
                    Request::Publish(p)
                }
                other => other,
            })
            .collect();
        // Whatever rumqttc still has (it keeps the list when the session
        // was resumed) goes after ours.
        requests.extend(pending.drain(..));
        pending.extend(requests);
        self.handed.with(|h| {
            for token in tokens.into_iter().rev() {
                h.push_front(token);
            }
        });
        self.in_flight.clear();
    }

    /// Tokens written or held that have not been acknowledged.
    #[cfg(test)]
    fn unacked(&self) -> usize {
        self.in_flight.len() + self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{Publish, QoS};

    fn publish(pkid: u16, topic: &str) -> Request {
        let mut p = Publish::new(topic, QoS::AtLeastOnce, vec![]);
        p.pkid = pkid;
        Request::Publish(p)
    }

    fn hand(handed: &Handed, token: u64) {
        handed.with(|h| h.push_back(Some(token)));
    }

    fn topics(pending: &VecDeque<Request>) -> Vec<String> {
        pending
            .iter()
            .filter_map(|r| match r {
                Request::Publish(p) => Some(format!("{}@{}", p.topic, p.pkid)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn packet_ids_are_matched_to_tokens_in_queue_order() {
        let handed = Handed::default();
        let mut t = Tracker::new(handed.clone());
        hand(&handed, 10);
        hand(&handed, 11);
        assert_eq!(t.sent(1), Some(10));
        assert_eq!(t.sent(2), Some(11));
        assert_eq!(t.acked(2), Some(11));
        assert_eq!(t.acked(1), Some(10));
        assert_eq!(t.acked(1), None, "an ack counts once");
    }

    #[test]
    fn a_lost_session_resends_everything_unacked_in_creation_order() {
        let handed = Handed::default();
        let mut t = Tracker::new(handed.clone());
        for token in 1..=4 {
            hand(&handed, token);
        }
        assert_eq!(t.sent(7), Some(1));
        assert_eq!(t.sent(8), Some(2));
        assert_eq!(t.acked(7), Some(1));
        // The link drops: rumqttc's clean() leaves the unacked publish (8)
        // and the two never written (tokens 3, 4) in `pending`.
        let mut pending: VecDeque<Request> =
            [publish(8, "b"), publish(0, "c"), publish(0, "d")].into();
        t.lost(&mut pending);
        assert!(pending.is_empty());
        // Queued while reconnecting: stays in rumqttc's channel, goes after.
        hand(&handed, 5);
        // CONNACK without a session: rumqttc cleared `pending` itself.
        t.reconnected(&mut pending);
        assert_eq!(topics(&pending), ["b@0", "c@0", "d@0"]);
        assert_eq!(t.sent(1), Some(2));
        assert_eq!(t.sent(2), Some(3));
        assert_eq!(t.sent(3), Some(4));
        assert_eq!(t.sent(4), Some(5));
        assert_eq!(t.unacked(), 4);
    }

    #[test]
    fn order_is_restored_when_rumqttc_appends_newer_after_older() {
        let handed = Handed::default();
        let mut t = Tracker::new(handed.clone());
        for token in 1..=3 {
            hand(&handed, token);
        }
        let mut pending: VecDeque<Request> =
            [publish(0, "a"), publish(0, "b"), publish(0, "c")].into();
        t.lost(&mut pending);
        t.reconnected(&mut pending);
        // Only "a" is written before the next failure; rumqttc then puts
        // its unacked copy after the unsent "b" and "c".
        let _ = pending.pop_front();
        assert_eq!(t.sent(1), Some(1));
        let mut pending: VecDeque<Request> = pending.into_iter().chain([publish(1, "a")]).collect();
        t.lost(&mut pending);
        t.reconnected(&mut pending);
        assert_eq!(topics(&pending), ["a@0", "b@0", "c@0"]);
        assert_eq!(t.sent(5), Some(1));
    }

    #[test]
    fn other_requests_survive_after_the_publishes() {
        let handed = Handed::default();
        let mut t = Tracker::new(handed.clone());
        hand(&handed, 1);
        let mut pending: VecDeque<Request> = [
            Request::Disconnect(rumqttc::Disconnect),
            publish(0, "a"),
            Request::PubAck(rumqttc::PubAck::new(3)),
        ]
        .into();
        t.lost(&mut pending);
        t.reconnected(&mut pending);
        assert!(matches!(pending[0], Request::Publish(_)));
        assert!(matches!(pending[1], Request::Disconnect(_)));
        assert_eq!(pending.len(), 2, "old acks are dropped");
    }
}
