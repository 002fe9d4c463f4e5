//! The agent's side of delivery: messages go into the outbox, the outbox
//! feeds the link as acknowledgements come back, and the counters are
//! published on `stats`. Everything here runs on the agent's loop.

use std::time::Duration;

use crate::link::{LinkError, Qos};
use crate::outbox::{Limits, Opened, Outbox, Pushed};
use crate::topics::StatsReport;
use crate::utc;

use super::Agent;

/// Unix milliseconds for the outbox (which counts ages, never before 1970).
pub(super) fn now_ms() -> u64 {
    u64::try_from(utc::now_unix_millis()).unwrap_or(0)
}

/// How often spool writes are made durable and acknowledged messages
/// removed from it: one disk sync per interval, not one per message. A
/// power cut can lose at most this much of an outage's readings.
pub(super) const SYNC_INTERVAL: Duration = Duration::from_millis(200);

pub(super) fn limits(config: &crate::config::Outbox) -> Limits {
    Limits {
        memory_limit: config.memory_limit,
        max_bytes: config.max_bytes,
        max_age: config.max_age,
        policy: config.policy,
        window: crate::link::WINDOW,
    }
}

/// Says what the start found in the spool.
pub(super) fn report_opened(outbox: &Outbox, opened: &Opened) {
    let dir = outbox.dir().display();
    if let Some(why) = &opened.unavailable {
        tracing::error!(
            "{why}. Messages are kept in memory only and are lost if pinpost stops while \
             offline; give the service user a writable outbox.path (the unit's \
             StateDirectory is /var/lib/pinpost)"
        );
    }
    if let Some(damage) = &opened.damage {
        tracing::warn!("outbox spool damaged (a crash or power cut mid-write): {damage}");
    }
    if opened.unclean {
        tracing::warn!(
            "the last run did not stop cleanly (killed, crashed or lost power); seq numbers \
             continue after those it had set aside, so subscribers see a gap of up to {} per \
             topic rather than a seq reused for a different reading",
            crate::outbox::SEQ_RESERVE
        );
    }
    if opened.dropped > 0 {
        tracing::warn!(
            dropped = opened.dropped,
            bytes = opened.dropped_bytes,
            "{} messages ({} bytes) kept in {dir} by an earlier run were dropped: with them the \
             outbox would be over outbox.max_bytes ({}); outbox.policy chose which",
            opened.dropped,
            opened.dropped_bytes,
            outbox.max_bytes()
        );
    }
    if opened.replayed > 0 {
        tracing::info!(
            messages = opened.replayed,
            bytes = opened.replayed_bytes,
            "sending {} messages kept in {dir} by an earlier run first",
            opened.replayed
        );
    }
}

impl Agent {
    /// Queues a message for the broker; it is sent when the link has room.
    pub(super) fn send(&mut self, topic: &str, payload: Vec<u8>, retain: bool, seq: Option<u64>) {
        let now = now_ms();
        match self.outbox.push(topic, payload, retain, seq, now) {
            Pushed::Queued => {}
            Pushed::QueuedDropping(n) => self.note_dropped(n as u64, "oldest"),
            Pushed::Dropped => self.note_dropped(1, "newest"),
        }
        self.pump();
    }

    fn note_dropped(&mut self, n: u64, which: &str) {
        let before = self.dropped_logged;
        self.dropped_logged += n;
        // Once per doubling: a long outage logs a handful of lines, not one
        // per reading.
        if (before + 1).next_power_of_two() <= self.dropped_logged {
            tracing::warn!(
                dropped = self.dropped_logged,
                "the outbox is full (outbox.max_bytes); dropping the {which} messages \
                 (outbox.policy)"
            );
        }
    }

    /// Hands the link as many messages as the window allows.
    pub(super) fn pump(&mut self) {
        while let Some(record) = self.outbox.next_to_send(now_ms()) {
            let id = record.id;
            match self
                .publisher
                .try_send(id, &record.topic, record.payload, record.retain)
            {
                Ok(()) => {}
                Err(LinkError::Busy | LinkError::Stopped) => {
                    self.outbox.requeue(id);
                    break;
                }
                Err(e) => {
                    tracing::error!(topic = %record.topic, "dropped, it can never be sent: {e}");
                    self.outbox.discard(id);
                }
            }
        }
    }

    pub(super) fn on_acked(&mut self, token: Option<u64>) {
        if let Some(id) = token {
            self.outbox.acked(id);
            self.pump();
            // Everything queued so far has reached the broker, discovery
            // removals included: their record may forget them.
            if self.outbox.is_empty() {
                if let Some(problem) = self.discovery.as_mut().and_then(|d| d.confirmed()) {
                    tracing::warn!("{problem}");
                }
            }
        }
    }

    /// Group commit of the spool, and a log line for a spool failure.
    pub(super) fn sync_outbox(&mut self) {
        if self.outbox.needs_sync() {
            self.outbox.sync();
        }
        if let Some(problem) = self.outbox.take_problem() {
            if self.last_spool_problem.as_deref() != Some(problem.as_str()) {
                tracing::error!(
                    "{problem}; unacknowledged messages stay in memory (bounded by \
                     outbox.max_bytes) until the disk works again"
                );
                self.last_spool_problem = Some(problem);
            }
        }
    }

    /// The counters on `<prefix>/<id>/stats`: retained and QoS 0, since a
    /// stale copy is worthless and must never wait in the outbox.
    pub(super) fn publish_stats(&mut self) {
        let s = self.outbox.stats();
        let report = StatsReport {
            queued: s.queued,
            queued_bytes: s.queued_bytes,
            in_flight: s.in_flight,
            spooled: s.spooled,
            spool_bytes: s.spool_file_bytes,
            dropped: s.dropped,
            expired: s.expired,
            reconnects: self.connections.saturating_sub(1),
            ts: utc::rfc3339_millis(utc::now_unix_millis()),
        };
        tracing::debug!(?report, "stats");
        if self.connected {
            let _ = self.publisher.try_publish(
                &self.topics.stats(),
                report.to_json(),
                Qos::AtMostOnce,
                true,
            );
        }
    }
}
