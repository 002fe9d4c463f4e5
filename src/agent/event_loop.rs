//! The agent's event loop: one `select!` over the link's events, the
//! board's edges, sensor readings, timers, the spool's answers, stats and
//! the systemd watchdog, each handed to its handler until shutdown.
//!
//! It decides when things happen, not what a command or a report says
//! (those are [`pin_commands`](super::pin_commands) and
//! [`reports`](super::reports)); it never waits on the network.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::discovery::{self, Discovery};
use super::pin_commands::log_unanswered;
use super::{Agent, AgentError, systemd};
use crate::board::EdgeReceiver;
use crate::control;
use crate::link::{Failure, Link, LinkEvent};
use crate::sensors::SensorError;

impl Agent {
    pub(super) async fn serve(
        &mut self,
        mut link: Link,
        mut edges: EdgeReceiver,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AgentError> {
        tokio::pin!(shutdown);
        let watchdog = systemd::watchdog_interval();
        let mut watchdog_tick =
            tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        let mut stats_tick = tokio::time::interval(self.config.outbox.stats_interval);
        // Often enough that a log line right after a jump is on the new clock.
        let mut clock_tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let wake = [
                self.inputs.next_due(),
                self.counting.next_due(),
                self.buttons.next_due(),
                self.outputs.next_due(),
                self.waiting.iter().flatten().map(|w| w.at).min(),
                self.refusals.next_due(),
                self.sampling.next_due(),
                self.sensing.next_deadline(&self.config.sensors),
                self.discovery.as_ref().and_then(Discovery::next_due),
            ]
            .into_iter()
            .flatten()
            .min();
            tokio::select! {
                () = &mut shutdown => break,
                event = link.next_event() => match event {
                    Some(event) => self.on_link(event),
                    None => {
                        self.counting.stop(|i| edges.take_pulses(i), Instant::now());
                        return Err(AgentError::LinkStopped);
                    }
                },
                Some(input) = edges.recv() => {
                    let pulses = edges.take_pulses(input);
                    self.on_edge(input, pulses, Instant::now());
                }
                Some(outcome) = self.sensing.next() => self.on_reading(outcome),
                Some((i, total)) = self.counting.durable() => self.publish_total(i, &total),
                () = sleep_until(wake) => self.on_timers(Instant::now()),
                answer = self.delivery.next_answer() => self.delivery.on_answer(answer),
                done = update_done(&mut self.updater) => {
                    if let Some(updater) = &mut self.updater {
                        updater.on_done(done);
                    }
                    self.send_update_reports();
                }
                _ = stats_tick.tick() => self.publish_stats(),
                _ = clock_tick.tick() => self.watch_clock(),
                _ = watchdog_tick.tick(), if watchdog.is_some() => systemd::watchdog(),
            }
        }
        self.shut_down(link).await;
        // The pulses the board counted after the loop's last take (a notice
        // the stop won over, pulses during the flush) are in the total too.
        self.counting.stop(|i| edges.take_pulses(i), Instant::now());
        Ok(())
    }

    fn on_link(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Connected { broker, .. } => {
                let target = broker.to_string();
                tracing::info!(broker = %target, "connected");
                systemd::status(&crate::health::connected(&target));
                self.undelivered = Some(target.clone());
                self.last_failure = None;
                self.connected = true;
                self.connections += 1;
                // The clock is often set just before a link comes up (the
                // same network brings both): look now, so what waited goes
                // dated rather than flagged (the states go below anyway).
                self.look_at_clock();
                // What earlier runs or the outage left goes now, even on a
                // device with no input or output state to send.
                self.delivery.online();
                self.ready();
                self.publish_everything();
                self.renewal_connected();
                if let Some(updater) = &mut self.updater {
                    updater.on_connected();
                }
                self.send_update_reports();
                self.publish_stats();
            }
            LinkEvent::Down {
                failure, retry_in, ..
            } => {
                self.connected = false;
                self.undelivered = None;
                // Whatever is in memory goes to disk now, so a crash or a
                // power cut during the outage loses nothing.
                self.delivery.offline();
                if let Some(renewal) = &mut self.renewal {
                    renewal.on_down(&failure);
                }
                if let Some(updater) = &mut self.updater {
                    updater.on_down(&failure);
                }
                self.send_update_reports();
                self.on_down(&failure, retry_in);
            }
            LinkEvent::Acked { token, .. } => self.on_acked(token),
            LinkEvent::Message { topic, payload, .. } if topic == self.topics.cert_issued() => {
                if let Some(renewal) = &mut self.renewal {
                    renewal.on_issued(&payload);
                }
            }
            LinkEvent::Message { topic, payload, .. }
                if self.updater.is_some() && topic == self.topics.config() =>
            {
                if let Some(updater) = &mut self.updater {
                    updater.on_config(&payload);
                }
                self.send_update_reports();
            }
            LinkEvent::Message {
                topic,
                payload,
                retain,
            } if self.updater.is_some()
                && (topic == self.topics.release() || self.topics.is_release_chunk(&topic)) =>
            {
                if let Some(updater) = &mut self.updater {
                    if topic == self.topics.release() {
                        updater.on_manifest(&payload, retain);
                    } else {
                        updater.on_chunk(&topic, payload);
                    }
                }
                self.send_update_reports();
            }
            LinkEvent::Message {
                topic,
                payload,
                retain,
            } => self.on_message(&topic, &payload, retain),
            LinkEvent::Subscribed { refused } if !refused.is_empty() => tracing::error!(
                "the broker refused the subscription to {}: this device may not read its own \
                 commands or status (check the broker's ACL: it must let the device read {})",
                refused.join(", "),
                self.topics.own()
            ),
            _ => {}
        }
    }

    pub(super) fn on_acked(&mut self, token: Option<u64>) {
        if let Some(broker) = self.undelivered.take() {
            systemd::status(&crate::health::delivering(&broker));
        }
        // Everything queued so far has reached the broker, discovery
        // removals included: their record may forget them.
        if self.delivery.acked(token) && self.delivery.is_empty() {
            if let Some(problem) = self.discovery.as_mut().and_then(|d| d.confirmed()) {
                tracing::warn!("{problem}");
            }
        }
    }

    fn on_down(&mut self, failure: &Failure, retry_in: Option<Duration>) {
        let wait = retry_in.map_or("0s".to_string(), |d| format!("{:.1}s", d.as_secs_f64()));
        // Once per outage (or when the reason changes), not every attempt.
        if self.last_failure != Some(failure.kind()) {
            tracing::warn!("{failure}; retrying in {wait}");
            self.last_failure = Some(failure.kind());
        } else {
            tracing::debug!("{failure}; retrying in {wait}");
        }
        systemd::status(&format!("retrying in {wait}: {failure}"));
        // Do not hold up boot waiting for the network.
        self.ready();
    }

    fn ready(&mut self) {
        if !self.notified_ready {
            systemd::ready();
            self.notified_ready = true;
        }
    }

    /// An input may have changed (a counting input: `pulses` more). With no
    /// debounce it is read at once, not on a timer: tokio's timers tick in
    /// whole milliseconds.
    pub(super) fn on_edge(&mut self, input: usize, pulses: u64, now: Instant) {
        if self.counting.counts(input) {
            self.counting.add(input, pulses, now);
            return;
        }
        self.inputs.edge(input, now);
        if self.inputs.next_due().is_some_and(|at| at <= now) {
            for i in self.inputs.due(now) {
                self.read_input(i);
            }
        }
    }

    pub(super) fn on_timers(&mut self, now: Instant) {
        for i in self.inputs.due(now) {
            self.read_input(i);
        }
        self.counting.due(now);
        for (i, press) in self.buttons.due(now) {
            self.publish_press(i, press);
        }
        for end in self.outputs.due(now) {
            let action = control::Action::Set(end.level);
            self.drive(end.output, &action, None, now);
        }
        self.apply_waiting(now);
        if let Some(n) = self.refusals.due(now) {
            log_unanswered(n);
        }
        for i in self.sampling.due(now) {
            self.sensing.request(i, now);
        }
        for i in self.sensing.overdue(&self.config.sensors, now) {
            let timeout = self.config.sensors[i].timeout;
            self.sensor_failed(i, &SensorError::Timeout(timeout));
        }
        match self.discovery.as_mut().and_then(|d| d.due(now)) {
            Some(discovery::Due::Announce) => {
                tracing::info!("answering Home Assistant's birth message: discovery again");
                self.announce();
            }
            Some(discovery::Due::States) => self.publish_states_for_home_assistant(),
            None => {}
        }
    }
}

/// The update's blocking job, done (pending when there is none).
async fn update_done(updater: &mut Option<super::update::Updater>) -> super::update::Done {
    match updater {
        Some(updater) => updater.done().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
