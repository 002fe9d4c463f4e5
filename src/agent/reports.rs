//! What the agent publishes of its own accord: inputs' levels, sensor
//! readings and failures, every pin's state on (re)connect, `status`,
//! `stats` and Home Assistant's discovery messages.
//!
//! It knows payloads only through `topics`, and sends through the
//! outbox ([`Delivery`](super::delivery::Delivery)), except `status`; when
//! to report is the event loop's business.

use tokio::time::Instant;

use super::Agent;
use crate::link::Qos;
use crate::sensors::{Outcome, SensorError};
use crate::topics::{self, PinState, Reading, SensorFailure};

impl Agent {
    /// Looks at the clock; when it has just become trusted, the retained
    /// states go again with a date instead of the guess they carried.
    pub(super) fn watch_clock(&mut self) {
        if self.look_at_clock() {
            self.publish_states();
            self.publish_stats();
        }
        if let Some(renewal) = &mut self.renewal {
            renewal.tick(self.clock.trusted(), self.connected);
            if self.connected && renewal.ready() {
                renewal.switch_now();
            }
        }
        if let Some(updater) = &mut self.updater {
            updater.tick(self.clock.trusted(), Instant::now());
        }
        self.send_update_reports();
    }

    /// What the update has to say goes out on `update`, retained, through
    /// the outbox like any state.
    pub(super) fn send_update_reports(&mut self) {
        let Some(updater) = &mut self.updater else {
            return;
        };
        let topic = self.topics.update();
        for report in updater.reports() {
            self.delivery.send(&topic, report.to_json(), true, None);
        }
        let topic = self.topics.config_state();
        for report in updater.config_reports() {
            self.delivery.send(&topic, report.to_json(), true, None);
        }
    }

    /// A connection is up: the renewal publishes, tries or keeps a pair;
    /// a pair kept changes the end `stats` shows.
    pub(super) fn renewal_connected(&mut self) {
        let Some(renewal) = &mut self.renewal else {
            return;
        };
        if renewal.on_connected() {
            self.cert_ends = Some(crate::utc::rfc3339_millis(
                renewal.ends().saturating_mul(1000),
            ));
        }
    }

    /// Looks at the clock and holds the outbox while it may be about to be
    /// trusted; true when it has just become trusted.
    pub(super) fn look_at_clock(&mut self) -> bool {
        let now = Instant::now();
        let trusted_now = self.clock.look(now);
        self.delivery.hold(self.clock.holding(now));
        trusted_now
    }

    pub(super) fn publish_stats(&mut self) {
        self.delivery.publish_stats(
            &self.topics.stats(),
            self.connected,
            self.connections.saturating_sub(1),
            self.clock.trusted(),
            self.cert_ends.clone(),
        );
    }

    /// On every connect: the broker may have lost retained messages (a
    /// restart without persistence), so status, discovery and all states
    /// go again.
    pub(super) fn publish_everything(&mut self) {
        self.publish_status(topics::ONLINE);
        self.announce();
        self.publish_states();
    }

    /// Home Assistant's discovery messages (retained), before the states
    /// they describe.
    pub(super) fn announce(&mut self) {
        let Some(discovery) = &self.discovery else {
            return;
        };
        let messages = discovery.messages().to_vec();
        tracing::debug!(messages = messages.len(), "home assistant discovery");
        for m in messages {
            self.delivery.send(&m.topic, m.payload, true, None);
        }
    }

    /// The last state of every pin (same `seq`: a repeat, not a change).
    fn publish_states(&mut self) {
        for (i, input) in self.config.inputs.iter().enumerate() {
            if let Some((value, seq)) = self.inputs.last(i) {
                self.delivery.send(
                    &self.topics.input(&input.name),
                    PinState::level(value, seq).to_json(),
                    true,
                    Some(seq),
                );
            }
        }
        for (i, output) in self.config.outputs.iter().enumerate() {
            if let Some(state) = self.outputs.state(i) {
                let seq = state.seq;
                self.delivery.send(
                    &self.topics.output(&output.name),
                    state.to_json(),
                    true,
                    Some(seq),
                );
            }
        }
    }

    /// After Home Assistant restarted: the pins' states, the sensors' last
    /// readings and the stats again, for entities it has just subscribed to.
    pub(super) fn publish_states_for_home_assistant(&mut self) {
        self.publish_status(topics::ONLINE);
        self.publish_states();
        for (topic, payload) in &self.last_readings {
            self.delivery.send(topic, payload.clone(), false, None);
        }
        self.publish_stats();
    }

    fn remember_reading(&mut self, topic: &str, payload: &[u8]) {
        if self.discovery.is_some() {
            self.last_readings
                .insert(topic.to_string(), payload.to_vec());
        }
    }

    /// `online`/`offline` bypass the outbox: a status kept on disk and
    /// replayed after the next `online` would say the opposite of the truth.
    pub(super) fn publish_status(&mut self, status: &str) {
        if let Err(e) = self.delivery.publisher().try_publish(
            &self.topics.status(),
            status.as_bytes().to_vec(),
            Qos::AtLeastOnce,
            true,
        ) {
            tracing::debug!("status {status} not queued: {e}");
        }
    }

    pub(super) fn on_reading(&mut self, outcome: Outcome) {
        let i = outcome.sensor;
        let Some(config) = self.config.sensors.get(i).cloned() else {
            return;
        };
        let measurements = match outcome.result {
            Ok(m) => m,
            Err(e) => return self.sensor_failed(i, &e),
        };
        if let Some(was) = self.failing[i].take() {
            tracing::info!(sensor = %config.name, "reading again (it failed: {was})");
        }
        let now = Instant::now();
        for m in measurements {
            if !self.reporting.worth_it(i, &config, &m, now) {
                continue;
            }
            let topic = self.topics.sensor(&config.name, m.name.as_deref());
            let seq = self.delivery.next_seq(&topic);
            let reading = Reading {
                value: m.value,
                unit: &m.unit,
                when: crate::clock::dating::now(),
                seq,
            };
            let payload = reading.to_json();
            self.remember_reading(&topic, &payload);
            self.delivery.send(&topic, payload, false, Some(seq));
        }
    }

    /// Logs and publishes a sensor's error once per change, not every
    /// interval; the other sensors carry on.
    pub(super) fn sensor_failed(&mut self, i: usize, e: &SensorError) {
        let text = e.to_string();
        if self.failing[i].as_deref() == Some(text.as_str()) {
            return;
        }
        let name = self.config.sensors[i].name.clone();
        tracing::warn!(sensor = %name, "cannot read: {text}");
        let topic = self.topics.sensor(&name, None);
        let seq = self.delivery.next_seq(&topic);
        let failure = SensorFailure {
            value: (),
            error: &text,
            when: crate::clock::dating::now(),
            seq,
        };
        let payload = failure.to_json();
        self.remember_reading(&topic, &payload);
        self.delivery.send(&topic, payload, false, Some(seq));
        self.failing[i] = Some(text);
    }

    /// The starting levels; they are published with everything else once
    /// the link is up.
    pub(super) fn read_all_inputs(&mut self) {
        for i in 0..self.config.inputs.len() {
            match self.board.read_input(i) {
                Ok(high) => {
                    self.inputs.observe(i, high);
                }
                Err(e) => tracing::warn!(input = %self.config.inputs[i].name, "cannot read: {e}"),
            }
        }
    }

    pub(super) fn read_input(&mut self, i: usize) {
        if self.counting.counts(i) {
            // Its pulses are its news; a level would flood at a meter's rate.
            return;
        }
        match self.board.read_input(i) {
            Ok(high) => {
                if let Some((value, seq)) = self.inputs.observe(i, high) {
                    let name = &self.config.inputs[i].name;
                    tracing::info!(input = %name, value, seq, "input changed");
                    let topic = self.topics.input(name);
                    self.delivery.send(
                        &topic,
                        PinState::level(value, seq).to_json(),
                        true,
                        Some(seq),
                    );
                    if let Some(press) = self.buttons.level(i, value, Instant::now()) {
                        self.publish_press(i, press);
                    }
                }
            }
            Err(e) => tracing::warn!(input = %self.config.inputs[i].name, "cannot read: {e}"),
        }
    }

    /// A counting input's total, retained on `counter/<name>`.
    pub(super) fn publish_total(&mut self, i: usize, total: &crate::counter::Total) {
        let Some(input) = self.config.inputs.get(i) else {
            return;
        };
        let Some(counting) = &input.count else {
            return;
        };
        let topic = self.topics.counter(&input.name);
        let seq = self.delivery.next_seq(&topic);
        let unit = if counting.unit.is_empty() {
            "pulses"
        } else {
            counting.unit.as_str()
        };
        let payload = crate::topics::CounterTotal {
            value: total.value,
            unit,
            count: total.count,
            rate: total.rate,
            rate_unit: format!("{unit}/h"),
            when: crate::clock::dating::now(),
            seq,
        }
        .to_json();
        tracing::debug!(counter = %input.name, count = total.count, rate = total.rate, "total");
        self.delivery.send(&topic, payload, true, Some(seq));
    }

    /// A button's press, on `button/<name>` (an event: not retained).
    pub(super) fn publish_press(&mut self, i: usize, press: super::buttons::Press) {
        let Some(input) = self.config.inputs.get(i) else {
            return;
        };
        let topic = self.topics.button(&input.name);
        let seq = self.delivery.next_seq(&topic);
        tracing::info!(button = %input.name, press = press.as_str(), seq, "pressed");
        let payload = crate::topics::ButtonPress {
            event_type: press.as_str(),
            when: crate::clock::dating::now(),
            seq,
        }
        .to_json();
        self.delivery.send(&topic, payload, false, Some(seq));
    }
}
