//! Which message each packet id carries, and keeping unacknowledged
//! publishes across a lost connection: the link's PubAck bookkeeping, as
//! plain data (rumqttc's `state.rs` habit) so it is tested without a socket.
//!
//! Callers tag each publish with a token (the outbox's message id), and the
//! tag travels inside the publish (`Publish::tag`, our rumqttc patch): the
//! packet id a token was written with is read off `Outgoing::Tagged`, never
//! inferred from the order of events, so no late or missing event can shift
//! one message's acknowledgement onto another.
//!
//! The invariant: every tagged publish handed to the link is at any time
//! exactly one of *queued* (in rumqttc's request channel, in its `pending`
//! list, or held here across an outage), *in flight* on the current
//! connection (`in_flight`), or *acknowledged* (reported once and
//! forgotten). rumqttc delivers what a failed connection read or wrote
//! before its error (our patch), so a PUBACK that arrived with the close
//! counts; whatever was still in flight goes back to the queue.
//!
//! When a connection dies rumqttc moves unacknowledged publishes and the
//! queued requests into `EventLoop::pending`, and if the next CONNACK has no
//! session it clears that list: those messages would be lost. It also
//! appends newer unacknowledged publishes *after* older unsent ones, which
//! breaks per-stream order. So on every failure the tracker takes the list
//! out, orders it by token (tokens increase in creation order), and on the
//! next CONNACK puts it back with fresh packet ids, ahead of anything queued
//! since.

use std::collections::{HashMap, VecDeque};

use rumqttc::{Publish, Request};

#[derive(Default)]
pub(super) struct Tracker {
    /// Written on this connection and not yet acknowledged: packet id →
    /// token (`None` for an untagged QoS 1 publish, from the CLI tools).
    in_flight: HashMap<u16, Option<u64>>,
    /// Taken out of rumqttc at a failure, to go back in at the next CONNACK.
    held: Vec<Request>,
}

/// What a PUBACK acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ack {
    /// A publish in flight, with its token if it had one.
    Publish(Option<u64>),
    /// Nothing in flight has this packet id: a duplicate, or an id the
    /// broker made up. It acknowledges nothing.
    Unknown,
}

impl Tracker {
    /// rumqttc wrote a publish with this packet id, carrying `tag`. QoS 0
    /// publishes (packet id 0) are never acknowledged, so not tracked.
    pub(super) fn sent(&mut self, pkid: u16, tag: Option<u64>) -> Option<u64> {
        if pkid != 0 {
            self.in_flight.insert(pkid, tag);
        }
        tag
    }

    /// The broker acknowledged this packet id.
    pub(super) fn acked(&mut self, pkid: u16) -> Ack {
        match self.in_flight.remove(&pkid) {
            Some(token) => Ack::Publish(token),
            None => Ack::Unknown,
        }
    }

    /// The connection failed: take every request rumqttc kept for the next
    /// connection, publishes in creation order. Returns the tokens that were
    /// in flight but that rumqttc did not give back (none, unless rumqttc
    /// loses a publish): the caller must send those again itself.
    pub(super) fn lost(&mut self, pending: &mut VecDeque<Request>) -> Vec<u64> {
        let mut others = Vec::new();
        for request in pending.drain(..) {
            match request {
                Request::Publish(p) => {
                    if p.pkid != 0 {
                        self.in_flight.remove(&p.pkid);
                    }
                    self.held.push(Request::Publish(p));
                }
                // Acks belong to the old connection.
                Request::PubAck(_) | Request::PubRec(_) | Request::PubComp(_) => {}
                other => others.push(other),
            }
        }
        let vanished = self.in_flight.drain().filter_map(|(_, t)| t).collect();
        // Stable: untracked publishes keep their place among themselves.
        self.held.sort_by_key(|r| match r {
            Request::Publish(p) => p.tag,
            _ => None,
        });
        self.held.extend(others);
        vanished
    }

    /// A new connection: everything held goes first, with fresh packet ids
    /// (a new session does not know the old ones; a resumed one treats the
    /// copies as the duplicates QoS 1 allows).
    pub(super) fn reconnected(&mut self, pending: &mut VecDeque<Request>) {
        let mut requests: Vec<Request> = std::mem::take(&mut self.held)
            .into_iter()
            .map(|request| match request {
                Request::Publish(p) => Request::Publish(fresh(p)),
                other => other,
            })
            .collect();
        // Whatever rumqttc still has (it keeps the list when the session
        // was resumed) goes after ours.
        requests.extend(pending.drain(..));
        pending.extend(requests);
        self.in_flight.clear();
    }

    /// Tokens in flight or held, for tests of the invariant.
    #[cfg(test)]
    pub(super) fn unacked(&self) -> Vec<u64> {
        let mut tokens: Vec<u64> = self.in_flight.values().filter_map(|t| *t).collect();
        tokens.extend(self.held.iter().filter_map(|r| match r {
            Request::Publish(p) => p.tag,
            _ => None,
        }));
        tokens.sort_unstable();
        tokens
    }
}

/// A publish to be written again on a new connection.
fn fresh(mut p: Publish) -> Publish {
    p.pkid = 0;
    p.dup = false;
    p
}

#[cfg(test)]
mod tests;
