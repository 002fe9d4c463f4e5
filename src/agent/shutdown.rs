//! A clean stop: outputs to their `safe_state`, held commands answered,
//! the record of applied commands closed, the outbox given [`FLUSH_LIMIT`]
//! to empty, `offline` published, and the rest kept on disk.
//!
//! It runs once, after the event loop has ended; a panic or any other way
//! out is covered by `Agent`'s `Drop`, not here.

use std::time::Duration;

use tokio::time::Instant;

use super::pin_commands::log_unanswered;
use super::{Agent, systemd};
use crate::control;
use crate::link::{Link, LinkEvent};
use crate::topics;

/// How long queued messages (and `offline`) get to reach the broker at shutdown.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

impl Agent {
    pub(super) async fn shut_down(&mut self, mut link: Link) {
        systemd::stopping();
        tracing::info!("shutting down: outputs to their safe state, status offline");
        let now = Instant::now();
        for (i, output) in self.config.outputs.clone().iter().enumerate() {
            if let Some(level) = output.safe_state {
                self.drive(i, &control::Action::Set(level), None, now);
            }
        }
        self.safe = true;
        for output in 0..self.waiting.len() {
            if let Some(held) = self.waiting[output].take() {
                let name = self.config.outputs[output].name.clone();
                self.refuse(
                    &name,
                    held.id.as_deref(),
                    "not applied: pinpost is stopping (the output goes to its safe state)",
                );
            }
        }
        // No command is carried out from here on: the record goes to the
        // disk marked clean, which the next boot trusts.
        if let Some(problem) = self.applied.close() {
            tracing::warn!("{problem}");
        }
        self.clock.close();
        if let Some(n) = self.refusals.take_unanswered() {
            log_unanswered(n);
        }
        // Whatever waited for the clock goes now, flagged if need be: the
        // stop does not wait for a time source.
        self.delivery.hold(false);
        let deadline = Instant::now() + FLUSH_LIMIT;
        if self.connected {
            self.drain(&mut link, deadline).await;
        }
        self.publish_status(topics::OFFLINE);
        // DISCONNECT goes after everything queued before it, so seeing it
        // written means `offline` has left.
        if link.disconnect().await.is_ok() {
            let _ = tokio::time::timeout_at(deadline, async {
                while let Some(event) = link.next_event().await {
                    match event {
                        LinkEvent::Closed => return,
                        LinkEvent::Acked { token, .. } => self.on_acked(token),
                        _ => {}
                    }
                }
            })
            .await;
        }
        self.delivery.persist().await;
    }

    /// Until the outbox is empty, the link drops, or the deadline passes.
    async fn drain(&mut self, link: &mut Link, deadline: Instant) {
        let _ = tokio::time::timeout_at(deadline, async {
            while !self.delivery.is_empty() {
                tokio::select! {
                    event = link.next_event() => match event {
                        Some(LinkEvent::Acked { token, .. }) => self.on_acked(token),
                        Some(LinkEvent::Down { .. }) | None => return,
                        Some(_) => {}
                    },
                    // Messages only on disk leave once the spool thread has
                    // read them back, and new ones once their seq is
                    // reserved: without its answers the rest would wait
                    // out the deadline here.
                    answer = self.delivery.next_answer() => self.delivery.on_answer(answer),
                }
            }
        })
        .await;
    }
}
