//! What the agent does with a message from the broker: its own `status`
//! and Home Assistant's birth message are recognised; a command is parsed
//! ([`control`]), refused within the [`refusals`](super::refusals) budget,
//! held for `commands.min_interval` (only the latest waits), recorded once
//! ([`applied`](super::applied)), carried out on its output, and answered.
//!
//! It drives outputs through [`outputs`](super::outputs); it does not
//! decide when timers fire or how messages reach the broker.

use tokio::time::Instant;

use super::{Agent, refusals};
use crate::control::{self, Incoming};
use crate::topics;
use crate::utc;

impl Agent {
    pub(super) fn on_message(&mut self, topic: &str, payload: &[u8], retained: bool) {
        if topic == self.topics.status() {
            if payload == topics::OFFLINE.as_bytes() && self.connected {
                tracing::info!(
                    "the broker says this device is offline (a Last Will from a connection it \
                     had given up on late, or from another node); saying online again"
                );
                self.publish_status(topics::ONLINE);
            }
            return;
        }
        if let Some(discovery) = &mut self.discovery {
            if discovery.status_topic() == Some(topic) {
                if discovery.on_status(payload, Instant::now()) {
                    tracing::debug!("Home Assistant is online: discovery follows shortly");
                }
                return;
            }
        }
        let Some(name) = self.topics.command_name(topic) else {
            match self.topics.rewritten_dots(topic) {
                Some(words) if !std::mem::replace(&mut self.dots_said, true) => {
                    tracing::error!("{words}");
                }
                _ => tracing::debug!(topic, "ignoring a message that is not a command"),
            }
            return;
        };
        if payload.is_empty() {
            // How MQTT clears a retained message; not a command to answer.
            tracing::debug!(
                topic,
                "ignoring an empty command (a retained command being cleared)"
            );
            return;
        }
        let incoming = Incoming {
            name,
            payload,
            retained,
            persistent_session: !self.config.broker.clean_session,
            now_millis: utc::now_unix_millis(),
            clock: self.clock.state(Instant::now()),
        };
        if name == crate::config::UPDATE_COMMAND {
            let parsed = control::install::parse(incoming, &self.config.commands);
            return self.on_install_command(parsed);
        }
        if let Some(i) = self.config.inputs.iter().position(|i| i.name == name) {
            if self.counting.counts(i) {
                let parsed = control::counter::parse(incoming, &self.config.commands);
                return self.on_counter_command(i, parsed);
            }
        }
        match control::parse(
            incoming,
            &self.config.outputs,
            &self.config.inputs,
            &self.config.commands,
        ) {
            Ok(command) => self.on_command(command, Instant::now()),
            Err(refusal) => self.refuse(name, refusal.id.as_deref(), &refusal.error),
        }
    }

    /// `cmd/update`: the release fetched and held goes to the install
    /// helper, if the command passes the same gate as a pin command.
    fn on_install_command(
        &mut self,
        parsed: Result<control::install::InstallCommand, control::Refusal>,
    ) {
        let name = crate::config::UPDATE_COMMAND;
        let command = match parsed {
            Ok(c) => c,
            Err(refusal) => return self.refuse(name, refusal.id.as_deref(), &refusal.error),
        };
        let answer = match &mut self.updater {
            Some(updater) => updater.install_asked(command.version.as_deref()),
            None => Err("updates are off on this device ([update] release_key is not set)".into()),
        };
        match answer {
            Ok(words) => {
                tracing::info!("install command: {words}");
                let body = topics::result_json(command.id.as_deref(), Ok(()));
                self.delivery
                    .send(&self.topics.result(name), body, false, None);
            }
            Err(error) => self.refuse(name, command.id.as_deref(), &error),
        }
        self.send_update_reports();
    }

    /// `cmd/<counter>`: a reset or a set, applied once (by its stamp), the
    /// total synced, published and answered.
    fn on_counter_command(
        &mut self,
        i: usize,
        parsed: Result<control::counter::CounterCommand, control::Refusal>,
    ) {
        let name = self.config.inputs[i].name.clone();
        let command = match parsed {
            Ok(c) => c,
            Err(refusal) => return self.refuse(&name, refusal.id.as_deref(), &refusal.error),
        };
        if let Some(stamp) = &command.stamp {
            let slot = self.config.outputs.len() + i;
            if let Err(error) = self.applied.record(slot, stamp) {
                return self.refuse(&name, command.id.as_deref(), &error);
            }
        }
        let value = match command.action {
            control::counter::CounterAction::Reset => 0.0,
            control::counter::CounterAction::Set(v) => v,
        };
        let now = Instant::now();
        match self.counting.set(i, value, now) {
            Ok(count) => {
                tracing::info!(counter = %name, count, "counter set to {value} by a command");
                let body = topics::result_json(command.id.as_deref(), Ok(()));
                self.delivery
                    .send(&self.topics.result(&name), body, false, None);
                self.counting.due(now);
            }
            Err(error) => self.refuse(&name, command.id.as_deref(), &error),
        }
    }

    /// Answers and logs a refusal, as often as [`Refusals`](super::refusals::Refusals) allows: the
    /// rest are only counted, so a flood costs neither log nor outbox.
    pub(super) fn refuse(&mut self, name: &str, id: Option<&str>, error: &str) {
        let output = self.config.outputs.iter().position(|o| o.name == name);
        if !self.refusals.admit(output, Instant::now()) {
            return;
        }
        tracing::warn!(output = name, "command refused: {error}");
        let body = topics::result_json(id, Err(error));
        let topic = self.topics.result(name);
        self.delivery.send(&topic, body, false, None);
    }

    /// Carries out a command now, or holds it until its output may change
    /// again (`commands.min_interval`); only the latest one is held: the one
    /// meant latest (by `"ts"`; an unstamped command counts as meant when it
    /// arrived), so a late older command cannot replace a newer one.
    pub(super) fn on_command(&mut self, command: control::PinCommand, now: Instant) {
        self.on_command_at(command, now, utc::now_unix_millis());
    }

    pub(super) fn on_command_at(
        &mut self,
        command: control::PinCommand,
        now: Instant,
        now_millis: i64,
    ) {
        let min_interval = self.config.commands.min_interval;
        let name = self.config.outputs[command.output].name.clone();
        if let control::Action::Pulse(length) = command.action {
            if length < min_interval {
                return self.refuse(
                    &name,
                    command.id.as_deref(),
                    &format!(
                        "pulse of {} ms is shorter than commands.min_interval ({} ms), the least \
                         time between two changes of an output; not applied",
                        length.as_millis(),
                        min_interval.as_millis()
                    ),
                );
            }
        }
        // A replay is answered at once, whether or not the output could
        // change now; it is recorded only when it is carried out.
        if let Some(stamp) = &command.stamp {
            if let Err(error) = self.applied.check(command.output, stamp) {
                let error = error + &self.clock.state(now).note();
                return self.refuse(&name, command.id.as_deref(), &error);
            }
        }
        let held = Waiting {
            action: command.action,
            id: command.id,
            meant_millis: command
                .stamp
                .as_ref()
                .map_or(now_millis, |stamp| stamp.at_millis),
            stamp: command.stamp,
            at: now,
        };
        let Some(at) = self.outputs.ready_at(command.output, now) else {
            return self.carry_out(command.output, held, now);
        };
        let held = Waiting { at, ..held };
        let slot = &mut self.waiting[command.output];
        let newer = slot
            .as_ref()
            .filter(|waiting| waiting.meant_millis > held.meant_millis)
            .map(|waiting| waiting.meant_millis);
        if let Some(newer) = newer {
            // A late older command: the newer one keeps its place.
            return self.refuse(
                &name,
                held.id.as_deref(),
                &format!(
                    "a command meant later ({}) is already waiting for the output to be \
                     allowed to change again (commands.min_interval is {} ms); this older \
                     one is not applied",
                    utc::rfc3339_millis(newer),
                    min_interval.as_millis()
                ),
            );
        }
        if let Some(replaced) = slot.replace(held) {
            self.refuse(
                &name,
                replaced.id.as_deref(),
                &format!(
                    "replaced by a later command before the output could change again \
                     (commands.min_interval is {} ms); not applied",
                    min_interval.as_millis()
                ),
            );
        }
    }

    /// Carries out held commands whose output may change again.
    pub(super) fn apply_waiting(&mut self, now: Instant) {
        self.apply_waiting_at(now, utc::now_unix_millis());
    }

    /// A stamped command is checked for freshness again before it is carried
    /// out: `commands.min_interval` (up to an hour) can be far longer than
    /// `commands.max_age`. An unstamped one is carried out however long it
    /// waited: its sender set no limit, and `min_interval` is the wait the
    /// config asked for.
    pub(super) fn apply_waiting_at(&mut self, now: Instant, now_millis: i64) {
        for output in 0..self.waiting.len() {
            let Some(held) = self.waiting[output].take_if(|w| w.at <= now) else {
                continue;
            };
            // A pulse's end may have changed the output meanwhile.
            if let Some(at) = self.outputs.ready_at(output, now) {
                self.waiting[output] = Some(Waiting { at, ..held });
                continue;
            }
            if let Some(stamp) = &held.stamp {
                if let Err(error) =
                    control::check_stamp(stamp.at_millis, now_millis, &self.config.commands)
                {
                    let name = self.config.outputs[output].name.clone();
                    let error = format!(
                        "while it waited for commands.min_interval: {error}{}",
                        self.clock.state(now).note()
                    );
                    self.refuse(&name, held.id.as_deref(), &error);
                    continue;
                }
            }
            self.carry_out(output, held, now);
        }
    }

    /// Drives the output for a command and answers it. A stamped command is
    /// applied once: recorded on disk before the pin moves, so no replay
    /// after a reconnect or restart applies it again.
    fn carry_out(&mut self, output: usize, command: Waiting, now: Instant) {
        let topic = self.topics.result(&self.config.outputs[output].name);
        if let Some(stamp) = &command.stamp {
            if let Err(error) = self.applied.record(output, stamp) {
                let name = self.config.outputs[output].name.clone();
                return self.refuse(&name, command.id.as_deref(), &error);
            }
        }
        self.drive(
            output,
            &command.action,
            Some((&topic, command.id.as_deref())),
            now,
        );
    }

    /// Applies an action to an output, then reports: the result (for a
    /// command) once the pin has changed, and the output's new state.
    pub(super) fn drive(
        &mut self,
        output: usize,
        action: &control::Action,
        reply: Option<(&str, Option<&str>)>,
        now: Instant,
    ) {
        let name = self.config.outputs[output].name.clone();
        let outcome = self.outputs.apply(self.board.as_mut(), output, action, now);
        if let Some((topic, id)) = reply {
            let body =
                topics::result_json(id, outcome.as_ref().map(|_| ()).map_err(String::as_str));
            self.delivery.send(topic, body, false, None);
        }
        match outcome {
            Ok(state) => {
                tracing::info!(output = %name, ?action, "applied");
                let topic = self.topics.output(&name);
                self.delivery
                    .send(&topic, state.to_json(), true, Some(state.seq));
            }
            Err(e) => tracing::error!(output = %name, "cannot drive: {e}"),
        }
    }
}

/// A command held until its output may change again.
#[derive(Debug)]
pub(super) struct Waiting {
    action: control::Action,
    pub(super) id: Option<String>,
    /// Recorded as applied only when it really is carried out.
    stamp: Option<control::Stamp>,
    /// When the command was meant (Unix milliseconds): its `"ts"`, or for
    /// an unstamped live command the moment it arrived. Of two commands
    /// for the held slot the one meant later wins, whichever arrives last.
    meant_millis: i64,
    /// When it may be carried out.
    pub(super) at: Instant,
}

/// The summary of refusals [`Refusals`](super::refusals::Refusals) left unanswered.
pub(super) fn log_unanswered(n: u64) {
    tracing::warn!(
        unanswered = n,
        "{n} more commands were refused without an answer or a log line: at most {} refusals \
         are answered at once and {} a second after that, per configured output and for all \
         other names together, so a flood of bad commands cannot fill the log or hold up good \
         ones",
        refusals::BURST,
        1000 / refusals::REFILL_EVERY.as_millis()
    );
}
