//! The tracker on its own, then the tracker and rumqttc's own protocol
//! state driven together through random interleavings of publishes,
//! acknowledgements, closes and reconnects, checking after every step that
//! each message is exactly one of queued, in flight or acknowledged.

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;
use rumqttc::{Event, Incoming, MqttState, Outgoing, Packet, PubAck, Publish, QoS, Request};

use super::*;

fn tagged(pkid: u16, tag: u64) -> Request {
    let mut p = Publish::new(format!("t/{tag}"), QoS::AtLeastOnce, vec![]);
    p.pkid = pkid;
    p.tag = Some(tag);
    Request::Publish(p)
}

fn order(pending: &VecDeque<Request>) -> Vec<(Option<u64>, u16)> {
    pending
        .iter()
        .filter_map(|r| match r {
            Request::Publish(p) => Some((p.tag, p.pkid)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_ack_names_the_token_written_with_its_packet_id() {
    let mut t = Tracker::default();
    t.sent(1, Some(10));
    t.sent(2, Some(11));
    assert_eq!(t.acked(2), Ack::Publish(Some(11)));
    assert_eq!(t.acked(1), Ack::Publish(Some(10)));
    assert_eq!(t.acked(1), Ack::Unknown, "an ack counts once");
    assert_eq!(
        t.acked(99),
        Ack::Unknown,
        "an id never used acknowledges nothing"
    );
}

#[test]
fn a_qos0_publish_is_never_in_flight() {
    let mut t = Tracker::default();
    assert_eq!(t.sent(0, None), None);
    assert!(t.unacked().is_empty());
}

#[test]
fn a_lost_session_resends_everything_unacked_in_creation_order() {
    let mut t = Tracker::default();
    t.sent(7, Some(1));
    t.sent(8, Some(2));
    assert_eq!(t.acked(7), Ack::Publish(Some(1)));
    // The link drops: rumqttc's clean() leaves the unacked publish (8)
    // and the two never written (tokens 3, 4) in `pending`.
    let mut pending: VecDeque<Request> = [tagged(8, 2), tagged(0, 3), tagged(0, 4)].into();
    assert!(t.lost(&mut pending).is_empty());
    assert!(pending.is_empty());
    assert_eq!(t.unacked(), [2, 3, 4]);
    // CONNACK without a session: rumqttc cleared `pending` itself.
    t.reconnected(&mut pending);
    assert_eq!(order(&pending), [(Some(2), 0), (Some(3), 0), (Some(4), 0)]);
}

#[test]
fn order_is_restored_when_rumqttc_appends_newer_after_older() {
    let mut t = Tracker::default();
    let mut pending: VecDeque<Request> = [tagged(0, 1), tagged(0, 2), tagged(0, 3)].into();
    t.lost(&mut pending);
    t.reconnected(&mut pending);
    // Only 1 is written before the next failure; rumqttc then puts its
    // unacked copy after the unsent 2 and 3.
    let _ = pending.pop_front();
    t.sent(1, Some(1));
    let mut pending: VecDeque<Request> = pending.into_iter().chain([tagged(1, 1)]).collect();
    t.lost(&mut pending);
    t.reconnected(&mut pending);
    assert_eq!(order(&pending), [(Some(1), 0), (Some(2), 0), (Some(3), 0)]);
}

#[test]
fn other_requests_survive_after_the_publishes() {
    let mut t = Tracker::default();
    let mut pending: VecDeque<Request> = [
        Request::Disconnect(rumqttc::Disconnect),
        tagged(0, 1),
        Request::PubAck(PubAck::new(3)),
    ]
    .into();
    t.lost(&mut pending);
    t.reconnected(&mut pending);
    assert!(matches!(pending[0], Request::Publish(_)));
    assert!(matches!(pending[1], Request::Disconnect(_)));
    assert_eq!(pending.len(), 2, "old acks are dropped");
}

#[test]
fn a_publish_rumqttc_did_not_give_back_is_reported_not_forgotten() {
    let mut t = Tracker::default();
    t.sent(1, Some(5));
    let vanished = t.lost(&mut VecDeque::new());
    assert_eq!(vanished, [5]);
    assert!(t.unacked().is_empty());
}

/// rumqttc's in-flight limit in this world, and the outbox's window below it.
const MAX_INFLIGHT: usize = 10;
const WINDOW: usize = 8;

/// One step of the world around the link.
#[derive(Debug, Clone)]
enum Step {
    /// The agent hands the link a new message.
    Hand,
    /// rumqttc writes the next request it has (its `pending` first).
    Write,
    /// The broker acknowledges what it received, the n-th oldest.
    Ack(usize),
    /// The broker acknowledges the same packet twice.
    DuplicateAck(usize),
    /// The broker acknowledges an id it never received.
    UnknownAck(u16),
    /// A PUBACK from an earlier connection arrives on this one.
    LateAck(usize),
    /// The broker acknowledges, then closes at once.
    AckThenClose(usize),
    /// The connection drops.
    Close,
    /// A new connection; `true` if the broker kept the session.
    Reconnect(bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Hand),
        6 => Just(Step::Write),
        5 => (0..8usize).prop_map(Step::Ack),
        1 => (0..8usize).prop_map(Step::DuplicateAck),
        1 => (1..120u16).prop_map(Step::UnknownAck),
        1 => (0..8usize).prop_map(Step::LateAck),
        1 => (0..8usize).prop_map(Step::AckThenClose),
        1 => Just(Step::Close),
        1 => any::<bool>().prop_map(Step::Reconnect),
    ]
}

/// rumqttc's `MqttState` and `EventLoop` bookkeeping as the patched event
/// loop drives it, the tracker as the supervisor drives it, and a broker.
struct World {
    state: MqttState,
    /// The request channel towards rumqttc.
    channel: VecDeque<Request>,
    /// `EventLoop::pending`.
    pending: VecDeque<Request>,
    tracker: Tracker,
    connected: bool,
    /// What the broker received on this connection and has not
    /// acknowledged yet, oldest first.
    received: Vec<u16>,
    /// Packet ids acknowledged on this connection or earlier ones.
    acked_ids: Vec<u16>,
    /// How many times each token was reported acknowledged.
    acks: BTreeMap<u64, usize>,
    next_token: u64,
}

impl World {
    fn new() -> World {
        World {
            state: MqttState::new(MAX_INFLIGHT as u16, false),
            channel: VecDeque::new(),
            pending: VecDeque::new(),
            tracker: Tracker::default(),
            connected: true,
            received: Vec::new(),
            acked_ids: Vec::new(),
            acks: BTreeMap::new(),
            next_token: 1,
        }
    }

    /// The supervisor's side: every event rumqttc produced, in order.
    fn deliver(&mut self) {
        while let Some(event) = self.state.events.pop_front() {
            match event {
                Event::Outgoing(Outgoing::Tagged { pkid, tag }) => {
                    self.tracker.sent(pkid, Some(tag));
                }
                Event::Outgoing(Outgoing::Publish(pkid)) => {
                    self.tracker.sent(pkid, None);
                }
                Event::Incoming(Incoming::PubAck(ack)) => {
                    if let Ack::Publish(Some(token)) = self.tracker.acked(ack.pkid) {
                        *self.acks.entry(token).or_default() += 1;
                    }
                }
                _ => {}
            }
        }
    }

    fn puback(&mut self, pkid: u16) {
        let result = self
            .state
            .handle_incoming_packet(Packet::PubAck(PubAck::new(pkid)));
        match result {
            // The PUBACK freed the packet id a collision waited for: the
            // held publish is written at once.
            Ok(Some(Packet::Publish(p))) => self.received.push(p.pkid),
            Ok(_) => {}
            Err(e) => panic!("a PUBACK never ends the connection: {e:?}"),
        }
        self.acked_ids.push(pkid);
    }

    fn run(&mut self, step: Step) {
        match step {
            // The outbox hands no more than the window, below rumqttc's
            // in-flight limit, as `link::WINDOW` is below 100.
            Step::Hand if self.outstanding() < WINDOW => {
                self.channel.push_back(tagged(0, self.next_token));
                self.next_token += 1;
            }
            Step::Write if self.connected => {
                // The event loop's guard: pending first, else the channel
                // while there is room and no collision.
                let request = if self.state.collision.is_some() {
                    None
                } else if let Some(r) = self.pending.pop_front() {
                    Some(r)
                } else if (self.state.inflight() as usize) < MAX_INFLIGHT {
                    self.channel.pop_front()
                } else {
                    None
                };
                if let Some(request) = request {
                    let out = self.state.handle_outgoing_packet(request);
                    if let Ok(Some(Packet::Publish(p))) = out {
                        self.received.push(p.pkid);
                    }
                }
            }
            Step::Ack(n) if self.connected && !self.received.is_empty() => {
                let pkid = self.received.remove(n % self.received.len());
                self.puback(pkid);
            }
            Step::DuplicateAck(n) if self.connected && !self.acked_ids.is_empty() => {
                let pkid = self.acked_ids[n % self.acked_ids.len()];
                self.puback(pkid);
            }
            Step::UnknownAck(pkid) if self.connected => self.puback(pkid),
            Step::LateAck(n) if self.connected && !self.acked_ids.is_empty() => {
                let pkid = self.acked_ids[self.acked_ids.len() - 1 - n % self.acked_ids.len()];
                self.puback(pkid);
            }
            Step::AckThenClose(n) if self.connected && !self.received.is_empty() => {
                let pkid = self.received.remove(n % self.received.len());
                self.puback(pkid);
                self.close();
            }
            Step::Close if self.connected => self.close(),
            Step::Reconnect(session) if !self.connected => {
                // rumqttc at CONNACK, then the supervisor.
                if !session {
                    self.pending.clear();
                }
                self.tracker.reconnected(&mut self.pending);
                self.connected = true;
            }
            _ => {}
        }
        self.deliver();
    }

    /// `EventLoop::abandon`: state to `pending`, the channel after it; the
    /// events the connection produced are delivered before the error.
    fn close(&mut self) {
        self.pending.extend(self.state.clean());
        let channel: Vec<Request> = self.channel.drain(..).collect();
        self.pending.extend(channel);
        self.deliver();
        let vanished = self.tracker.lost(&mut self.pending);
        assert!(vanished.is_empty(), "rumqttc lost {vanished:?}");
        self.received.clear();
        self.connected = false;
    }

    /// Tokens handed out and not acknowledged.
    fn outstanding(&self) -> usize {
        (self.next_token - 1) as usize - self.acks.len()
    }

    /// Every token handed out is exactly one of queued, in flight or
    /// acknowledged (once).
    fn check(&self) {
        let mut queued: Vec<u64> = self
            .channel
            .iter()
            .chain(self.pending.iter())
            .filter_map(|r| match r {
                Request::Publish(p) => p.tag,
                _ => None,
            })
            .collect();
        queued.extend(self.tracker.held.iter().filter_map(|r| match r {
            Request::Publish(p) => p.tag,
            _ => None,
        }));
        // Held back by a packet-id collision: rumqttc writes it once the
        // id is acknowledged.
        queued.extend(self.state.collision.iter().filter_map(|p| p.tag));
        let in_flight: Vec<u64> = self.tracker.in_flight.values().filter_map(|t| *t).collect();
        for token in 1..self.next_token {
            let q = queued.iter().filter(|&&t| t == token).count();
            let f = in_flight.iter().filter(|&&t| t == token).count();
            let a = self.acks.get(&token).copied().unwrap_or(0);
            assert!(
                matches!((q, f, a), (1, 0, 0) | (0, 1, 0) | (0, 0, 1)),
                "token {token}: queued {q}×, in flight {f}×, acknowledged {a}×"
            );
        }
    }

    /// A calm ending: reconnect, write everything, the broker acknowledges
    /// all. Every token must come out acknowledged exactly once.
    fn settle(&mut self) {
        self.run(Step::Reconnect(false));
        for _ in 0..10_000 {
            let idle =
                self.pending.is_empty() && self.channel.is_empty() && self.received.is_empty();
            if idle && self.state.collision.is_none() {
                break;
            }
            self.run(Step::Write);
            self.run(Step::Ack(0));
        }
        self.check();
        for token in 1..self.next_token {
            assert_eq!(
                self.acks.get(&token),
                Some(&1),
                "token {token} not acknowledged once"
            );
        }
        assert!(self.tracker.unacked().is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_message_is_queued_in_flight_or_acknowledged(steps in prop::collection::vec(step(), 1..200)) {
        let mut world = World::new();
        for step in steps {
            world.run(step);
            world.check();
        }
        world.settle();
    }
}
