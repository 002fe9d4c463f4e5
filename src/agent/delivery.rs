//! The agent's side of delivery: messages go into the outbox, the outbox
//! feeds the link as acknowledgements come back, the spool thread's answers
//! are applied, and the counters are published on `stats`. Everything here
//! runs on the agent's loop and never waits on the disk.

use std::time::{Duration, Instant};

use super::stall::StallWatch;
use crate::link::{LinkError, Publisher, Qos, WINDOW};
use crate::outbox::{Answer, Limits, Opened, Outbox, Pushed, SpoolError};
use crate::topics::StatsReport;
use crate::utc;

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
    if opened.power_cut {
        tracing::warn!(
            "the machine restarted while the last run was still going (a power cut or a \
             crash): readings it had not yet synced (normally its last 200 ms) may be lost, so \
             seq numbers skip {} ahead per topic and a loss shows as a gap, never as a seq \
             reused for a different reading",
            crate::outbox::SEQ_RESERVE
        );
    }
    if let Some(problem) = &opened.mark_problem {
        tracing::warn!(
            "outbox: {problem}; after a power cut, seq numbers may repeat. Check that the \
             outbox directory is writable"
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

/// Everything between the agent's messages and the broker's
/// acknowledgements: the outbox (with its spool thread), the link's
/// publisher, and what was already said in the log about drops and disk
/// trouble.
pub(super) struct Delivery {
    outbox: Outbox,
    publisher: Publisher,
    /// Drops already reported in the log.
    dropped_logged: u64,
    /// Drops for a disk that fell behind, reported in the log.
    behind_logged: u64,
    /// The last disk trouble logged, to log each kind once in a row.
    last_spool_problem: Option<String>,
    /// A full window the broker stopped acknowledging.
    stall: StallWatch,
    /// Nothing goes to the link for now (the clock just jumped and may be
    /// trusted in a moment: see `ClockView::holding`).
    held: bool,
}

impl Delivery {
    /// `stall_after`: how long a full window may go unacknowledged before
    /// it is called a stall (the keep-alive).
    pub(super) fn new(outbox: Outbox, publisher: Publisher, stall_after: Duration) -> Delivery {
        Delivery {
            outbox,
            publisher,
            dropped_logged: 0,
            behind_logged: 0,
            last_spool_problem: None,
            stall: StallWatch::new(stall_after),
            held: false,
        }
    }

    /// Queues a message for the broker; it is sent when the link has room.
    pub(super) fn send(&mut self, topic: &str, payload: Vec<u8>, retain: bool, seq: Option<u64>) {
        let now = self.outbox.now_ms();
        match self.outbox.push(topic, payload, retain, seq, now) {
            Pushed::Queued => {}
            Pushed::QueuedDropping(n) => self.note_dropped(n as u64, "oldest"),
            Pushed::Dropped => self.note_dropped(1, "newest"),
            Pushed::DiskBehind => self.disk_behind(),
        }
        self.pump();
    }

    /// Holds what waits back from the link, or lets it go.
    pub(super) fn hold(&mut self, held: bool) {
        let released = self.held && !held;
        self.held = held;
        if released {
            self.pump();
        }
    }

    /// Sends a message past the outbox (QoS 0 or a status), for the caller
    /// to say what a refusal means.
    pub(super) fn publisher(&self) -> &Publisher {
        &self.publisher
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

    /// Messages dropped because the disk stopped keeping up: said once per
    /// doubling, like drops for a full outbox.
    fn disk_behind(&mut self) {
        let before = self.behind_logged;
        self.behind_logged += 1;
        if (before + 1).next_power_of_two() <= self.behind_logged {
            tracing::error!(
                dropped = self.behind_logged,
                "the outbox spool's disk is not keeping up (writes are not returning); \
                 new messages are dropped rather than piled up in memory until it does \
                 (check the SD card: dmesg, and a card that is failing or full)"
            );
        }
    }

    /// Hands the link as many messages as the window allows. One made
    /// before the clock was trusted goes dated, if it can be now.
    pub(super) fn pump(&mut self) {
        if self.held {
            return;
        }
        while let Some(record) = self.outbox.next_to_send(self.outbox.now_ms()) {
            let id = record.id;
            let payload = crate::clock::dating::redate(&record.payload).unwrap_or(record.payload);
            match self
                .publisher
                .try_send(id, &record.topic, payload, record.retain)
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

    /// The broker acknowledged the message with this token; true if it was
    /// one of the outbox's.
    pub(super) fn acked(&mut self, token: Option<u64>) -> bool {
        let Some(id) = token else {
            return false;
        };
        if let Some(words) = self.stall.acked(Instant::now()) {
            tracing::info!("{words}");
        }
        self.outbox.acked(id);
        self.pump();
        true
    }

    /// The link is up: what waits goes out.
    pub(super) fn online(&mut self) {
        self.outbox.online();
        self.pump();
    }

    /// The link is down: what is in memory goes to disk.
    pub(super) fn offline(&mut self) {
        self.outbox.offline();
    }

    /// What the spool thread did next (cancel-safe, for `select!`).
    pub(super) async fn next_answer(&mut self) -> Answer {
        self.outbox.next_answer().await
    }

    /// Applies the spool thread's answer: messages read back or reserved
    /// may leave now, and disk trouble is logged.
    pub(super) fn on_answer(&mut self, answer: Answer) {
        if let Some(error) = self.outbox.on_answer(answer) {
            self.spool_problem(&error);
        }
        self.pump();
    }

    /// Logs disk trouble in words, once per kind in a row.
    fn spool_problem(&mut self, error: &SpoolError) {
        let problem = error.to_string();
        if self.last_spool_problem.as_deref() != Some(problem.as_str()) {
            tracing::error!(
                "{problem}; unacknowledged messages stay in memory (bounded by \
                 outbox.max_bytes) until the disk works again"
            );
            self.last_spool_problem = Some(problem);
        }
    }

    pub(super) fn next_seq(&mut self, stream: &str) -> u64 {
        self.outbox.next_seq(stream)
    }

    /// Nothing waits and nothing is in flight.
    pub(super) fn is_empty(&self) -> bool {
        self.outbox.is_empty()
    }

    /// The counters on `<prefix>/<id>/stats`: retained and QoS 0, since a
    /// stale copy is worthless and must never wait in the outbox.
    pub(super) fn publish_stats(
        &mut self,
        topic: &str,
        connected: bool,
        reconnects: u64,
        clock_trusted: bool,
        cert_ends: Option<String>,
    ) {
        let s = self.outbox.stats();
        let report = StatsReport {
            queued: s.queued,
            queued_bytes: s.queued_bytes,
            in_flight: s.in_flight,
            spooled: s.spooled,
            spool_bytes: s.spool_file_bytes,
            dropped: s.dropped,
            expired: s.expired,
            reconnects,
            clock: if clock_trusted {
                "trusted"
            } else {
                "untrusted"
            },
            cert_ends,
            ts: utc::rfc3339_millis(utc::now_unix_millis()),
        };
        tracing::debug!(?report, "stats");
        let stalled = self
            .stall
            .check(s.in_flight, WINDOW, s.queued, connected, Instant::now());
        if let Some(words) = stalled {
            tracing::warn!("{words}");
        }
        if connected {
            let _ = self
                .publisher
                .try_publish(topic, report.to_json(), Qos::AtMostOnce, true);
        }
    }

    /// At shutdown: what is unacknowledged to disk, and the last words
    /// about it.
    pub(super) async fn persist(&mut self) {
        let mut problems = Vec::new();
        let persisted = self.outbox.persist(|e| problems.push(e)).await;
        for problem in &problems {
            self.spool_problem(problem);
        }
        if let Some(words) = persisted.words(self.outbox.dir()) {
            if persisted.lost > 0 {
                tracing::error!("{words}");
            } else {
                tracing::warn!("{words}");
            }
        }
    }

    #[cfg(test)]
    pub(super) fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }
}
