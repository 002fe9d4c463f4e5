//! The agent behind `pinpost run`: wires board → inputs → link and link →
//! commands → outputs together in one loop, and owns shutdown.
//!
//! The loop never waits on the network: every reading, state and result
//! goes into the [`outbox`](crate::outbox), which feeds the link as it
//! acknowledges, so a dead link cannot stop commands, edges or shutdown.
//! On shutdown (the future passed in resolves) outputs go to their
//! `safe_state`, the outbox gets a bounded time to empty, `offline` is
//! published, and whatever is still unacknowledged is kept on disk for the
//! next start. It knows no wire formats beyond calling `topics`.
//!
//! Whoever may publish commands cannot make it grow or chatter: refusals
//! are answered and logged within a budget ([`refusals`]), each output
//! changes at most once per `commands.min_interval` (only the latest early
//! command waits), and the link reads only packets a command could need.

mod applied;
mod delivery;
mod discovery;
mod inputs;
mod outputs;
mod refusals;
mod sampling;
mod syncer;
mod systemd;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::board::{Board, EdgeReceiver};
use crate::config::Config;
use crate::control::{self, Incoming};
use crate::link::{Client, Failure, Link, LinkEvent, LinkOptions, Publisher, Qos, Retry, Will};
use crate::outbox::Outbox;
use crate::sensors::{Outcome, Reporting, Sensing, SensorError};
use crate::tls::{self, TlsError};
use crate::topics::{self, PinState, Reading, SensorFailure, Topics};
use crate::utc;
use delivery::Delivery;

use applied::Applied;
use discovery::Discovery;
use inputs::Inputs;
use outputs::Outputs;
use refusals::Refusals;
use sampling::Sampling;

/// What the agent last recorded as announced to Home Assistant, for `pinpost ha`.
pub use discovery::record as homeassistant_record;

/// How long queued messages (and `offline`) get to reach the broker at shutdown.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the link stopped unexpectedly")]
    LinkStopped,
}

/// Runs until `shutdown` resolves. `edges` carries "input i may have
/// changed" from the board.
pub async fn run(
    config: Config,
    board: Box<dyn Board>,
    edges: EdgeReceiver,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let topics = Topics::new(&config.device.topic_prefix, &config.device.id);
    let tls = config.broker.tls.as_ref().map(tls::setup).transpose()?;
    let (discovery, problems) = Discovery::start(&config, &config.outbox.path);
    for problem in problems {
        tracing::warn!("{problem}");
    }
    let mut subscriptions = vec![
        (topics.commands(), Qos::AtLeastOnce),
        // Its own status: a broker that lost track of an earlier connection
        // (a cut it noticed late, a node of a pair or cluster left behind)
        // publishes the Last Will while this one is up; seen, it is put
        // right at once.
        (topics.status(), Qos::AtLeastOnce),
    ];
    // HA's birth message: HA has (re)started and needs discovery again.
    let ha_status = discovery.as_ref().and_then(|d| d.status_topic());
    if let Some(status) = ha_status {
        subscriptions.push((status.to_string(), Qos::AtLeastOnce));
    }
    let max_incoming = command_packet_limit(&topics, &config.commands).max(
        // HA's status topic, `online`, the topic's length and a packet id.
        ha_status.map_or(0, |t| t.len().saturating_add(16)),
    );
    let options = LinkOptions {
        will: Some(Will {
            topic: topics.status(),
            payload: topics::OFFLINE.as_bytes().to_vec(),
            retain: true,
        }),
        subscriptions,
        max_incoming: Some(max_incoming),
        ..LinkOptions::new(
            &config.broker,
            &config.reconnect,
            &config.device.id,
            Client::Agent,
            Retry::Forever,
        )
    };
    let link = Link::start(options, tls);
    let (outbox, opened) = Outbox::open(&config.outbox.path, delivery::limits(&config.outbox));
    delivery::report_opened(&outbox, &opened);
    tracing::info!(
        device = %config.device.id,
        board = board.name(),
        broker = %config
            .broker
            .endpoints
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        "starting"
    );
    let mut agent = Agent::new(config, board, link.publisher(), outbox);
    agent.discovery = discovery;
    agent.read_all_inputs();
    agent.serve(link, edges, shutdown).await
}

struct Agent {
    config: Config,
    board: Box<dyn Board>,
    topics: Topics,
    inputs: Inputs,
    outputs: Outputs,
    /// Stamped commands already applied, so each is applied once.
    applied: Applied,
    notified_ready: bool,
    /// The kind of the last failure logged, to log each outage once.
    last_failure: Option<&'static str>,
    /// The outbox, its spool thread and the link's publisher.
    delivery: Delivery,
    sensing: Sensing,
    sampling: Sampling,
    reporting: Reporting,
    /// Each sensor's current error, to log and publish once per change.
    failing: Vec<Option<String>>,
    connected: bool,
    /// Connections made (CONNACKs), for the reconnect count.
    connections: u64,
    /// Outputs have been put in their safe state (by shutdown).
    safe: bool,
    /// Which refusals are answered and logged.
    refusals: Refusals,
    /// Per output, the latest command waiting for `commands.min_interval`.
    waiting: Vec<Option<Waiting>>,
    /// Home Assistant discovery, when on (or cleaning up after it).
    discovery: Option<Discovery>,
    /// With discovery on, each sensor topic's last reading, sent again
    /// when Home Assistant restarts (readings are not retained).
    last_readings: BTreeMap<String, Vec<u8>>,
}

/// A command held until its output may change again.
#[derive(Debug)]
struct Waiting {
    action: control::Action,
    id: Option<String>,
    /// Recorded as applied only when it really is carried out.
    stamp: Option<control::Stamp>,
    /// When the command was meant (Unix milliseconds): its `"ts"`, or for
    /// an unstamped live command the moment it arrived. Of two commands
    /// for the held slot the one meant later wins, whichever arrives last.
    meant_millis: i64,
    at: Instant,
}

impl Drop for Agent {
    /// Runs on every way out, including a panic unwinding (which is why the
    /// release profile keeps `panic = "unwind"`): outputs with a
    /// `safe_state` never stay energised because pinpost failed.
    fn drop(&mut self) {
        if self.safe {
            return;
        }
        for (i, output) in self.config.outputs.iter().enumerate() {
            if let Some(level) = output.safe_state {
                if let Err(e) = self.board.write_output(i, level) {
                    eprintln!("pinpost: cannot put {} in its safe state: {e}", output.name);
                }
            }
        }
    }
}

impl Agent {
    fn new(config: Config, board: Box<dyn Board>, publisher: Publisher, outbox: Outbox) -> Agent {
        let now = Instant::now();
        let topics = Topics::new(&config.device.topic_prefix, &config.device.id);
        // Sequence numbers continue where the last run stopped.
        let mut inputs = Inputs::new(&config.inputs, now);
        for (i, input) in config.inputs.iter().enumerate() {
            if let Some(last) = outbox.last_seq(&topics.input(&input.name)) {
                inputs.resume(i, last);
            }
        }
        let mut outputs =
            Outputs::new(&config.outputs).with_min_interval(config.commands.min_interval);
        let waiting = std::iter::repeat_with(|| None)
            .take(config.outputs.len())
            .collect();
        for (i, output) in config.outputs.iter().enumerate() {
            if let Some(last) = outbox.last_seq(&topics.output(&output.name)) {
                outputs.resume(i, last);
            }
        }
        let names: Vec<String> = config.outputs.iter().map(|o| o.name.clone()).collect();
        let (applied, problems) = Applied::load(outbox.dir(), &names, utc::now_unix_millis());
        for problem in problems {
            tracing::warn!("{problem}");
        }
        let refusals = Refusals::new(config.outputs.len(), now);
        Agent {
            delivery: Delivery::new(outbox, publisher),
            inputs,
            outputs,
            applied,
            sensing: Sensing::start(&config.sensors),
            sampling: Sampling::new(config.sensors.iter().map(|s| s.interval), now),
            reporting: Reporting::default(),
            failing: vec![None; config.sensors.len()],
            topics,
            board,
            config,
            notified_ready: false,
            last_failure: None,
            connected: false,
            connections: 0,
            safe: false,
            refusals,
            waiting,
            discovery: None,
            last_readings: BTreeMap::new(),
        }
    }

    async fn serve(
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
        loop {
            let wake = [
                self.inputs.next_due(),
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
                    None => return Err(AgentError::LinkStopped),
                },
                Some(input) = edges.recv() => self.on_edge(input, Instant::now()),
                Some(outcome) = self.sensing.next() => self.on_reading(outcome),
                () = sleep_until(wake) => self.on_timers(Instant::now()),
                answer = self.delivery.next_answer() => self.delivery.on_answer(answer),
                _ = stats_tick.tick() => self.publish_stats(),
                _ = watchdog_tick.tick(), if watchdog.is_some() => systemd::watchdog(),
            }
        }
        self.shut_down(link).await;
        Ok(())
    }

    fn on_link(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Connected { broker, .. } => {
                let target = broker.to_string();
                tracing::info!(broker = %target, "connected");
                systemd::status(&format!("connected to {target}"));
                self.last_failure = None;
                self.connected = true;
                self.connections += 1;
                // What earlier runs or the outage left goes now, even on a
                // device with no input or output state to send.
                self.delivery.online();
                self.ready();
                self.publish_everything();
                self.publish_stats();
            }
            LinkEvent::Down {
                failure, retry_in, ..
            } => {
                self.connected = false;
                // Whatever is in memory goes to disk now, so a crash or a
                // power cut during the outage loses nothing.
                self.delivery.offline();
                self.on_down(&failure, retry_in);
            }
            LinkEvent::Acked { token, .. } => self.on_acked(token),
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

    fn on_acked(&mut self, token: Option<u64>) {
        // Everything queued so far has reached the broker, discovery
        // removals included: their record may forget them.
        if self.delivery.acked(token) && self.delivery.is_empty() {
            if let Some(problem) = self.discovery.as_mut().and_then(|d| d.confirmed()) {
                tracing::warn!("{problem}");
            }
        }
    }

    fn publish_stats(&mut self) {
        self.delivery.publish_stats(
            &self.topics.stats(),
            self.connected,
            self.connections.saturating_sub(1),
        );
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

    /// On every connect: the broker may have lost retained messages (a
    /// restart without persistence), so status, discovery and all states
    /// go again.
    fn publish_everything(&mut self) {
        self.publish_status(topics::ONLINE);
        self.announce();
        self.publish_states();
    }

    /// Home Assistant's discovery messages (retained), before the states
    /// they describe.
    fn announce(&mut self) {
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
    fn publish_states_for_home_assistant(&mut self) {
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
    fn publish_status(&mut self, status: &str) {
        if let Err(e) = self.delivery.publisher().try_publish(
            &self.topics.status(),
            status.as_bytes().to_vec(),
            Qos::AtLeastOnce,
            true,
        ) {
            tracing::debug!("status {status} not queued: {e}");
        }
    }

    fn on_reading(&mut self, outcome: Outcome) {
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
            let topic = match &m.name {
                Some(part) => format!("{}/{part}", self.topics.sensor(&config.name)),
                None => self.topics.sensor(&config.name),
            };
            let seq = self.delivery.next_seq(&topic);
            let reading = Reading {
                value: m.value,
                unit: &m.unit,
                ts: utc::rfc3339_millis(utc::now_unix_millis()),
                seq,
            };
            let payload = reading.to_json();
            self.remember_reading(&topic, &payload);
            self.delivery.send(&topic, payload, false, Some(seq));
        }
    }

    /// Logs and publishes a sensor's error once per change, not every
    /// interval; the other sensors carry on.
    fn sensor_failed(&mut self, i: usize, e: &SensorError) {
        let text = e.to_string();
        if self.failing[i].as_deref() == Some(text.as_str()) {
            return;
        }
        let name = self.config.sensors[i].name.clone();
        tracing::warn!(sensor = %name, "cannot read: {text}");
        let topic = self.topics.sensor(&name);
        let seq = self.delivery.next_seq(&topic);
        let failure = SensorFailure {
            error: &text,
            ts: utc::rfc3339_millis(utc::now_unix_millis()),
            seq,
        };
        let payload = failure.to_json();
        self.remember_reading(&topic, &payload);
        self.delivery.send(&topic, payload, false, Some(seq));
        self.failing[i] = Some(text);
    }

    /// The starting levels; they are published with everything else once
    /// the link is up.
    fn read_all_inputs(&mut self) {
        for i in 0..self.config.inputs.len() {
            match self.board.read_input(i) {
                Ok(high) => {
                    self.inputs.observe(i, high);
                }
                Err(e) => tracing::warn!(input = %self.config.inputs[i].name, "cannot read: {e}"),
            }
        }
    }

    fn read_input(&mut self, i: usize) {
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
                }
            }
            Err(e) => tracing::warn!(input = %self.config.inputs[i].name, "cannot read: {e}"),
        }
    }

    /// An input may have changed. With no debounce it is read at once:
    /// tokio's timers tick in whole milliseconds, so even a wait until
    /// `now` cost ~1 ms on the edge → subscriber path (issue 17).
    fn on_edge(&mut self, input: usize, now: Instant) {
        self.inputs.edge(input, now);
        if self.inputs.next_due().is_some_and(|at| at <= now) {
            for i in self.inputs.due(now) {
                self.read_input(i);
            }
        }
    }

    fn on_timers(&mut self, now: Instant) {
        for i in self.inputs.due(now) {
            self.read_input(i);
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

    fn on_message(&mut self, topic: &str, payload: &[u8], retained: bool) {
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
            tracing::debug!(topic, "ignoring a message that is not a command");
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
        };
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

    /// Answers and logs a refusal, as often as [`Refusals`] allows: the
    /// rest are only counted, so a flood costs neither log nor outbox.
    fn refuse(&mut self, name: &str, id: Option<&str>, error: &str) {
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
    fn on_command(&mut self, command: control::PinCommand, now: Instant) {
        self.on_command_at(command, now, utc::now_unix_millis());
    }

    fn on_command_at(&mut self, command: control::PinCommand, now: Instant, now_millis: i64) {
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
    fn apply_waiting(&mut self, now: Instant) {
        self.apply_waiting_at(now, utc::now_unix_millis());
    }

    /// A stamped command is checked for freshness again before it is carried
    /// out: `commands.min_interval` (up to an hour) can be far longer than
    /// `commands.max_age`. An unstamped one is carried out however long it
    /// waited: its sender set no limit, and `min_interval` is the wait the
    /// config asked for.
    fn apply_waiting_at(&mut self, now: Instant, now_millis: i64) {
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
                    let error = format!("while it waited for commands.min_interval: {error}");
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
    fn drive(
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

    async fn shut_down(&mut self, mut link: Link) {
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
        if let Some(n) = self.refusals.take_unanswered() {
            log_unanswered(n);
        }
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

/// Room for the output name in a command topic: a configured name is at
/// most 64 characters of up to 4 bytes each.
const NAME_ROOM: usize = 256;

/// The largest packet a command this agent could accept needs (its
/// remaining length): the topic with a name of up to [`NAME_ROOM`] bytes,
/// the topic's length and the packet id (2 bytes each), and a payload of
/// `commands.max_payload`. The broker's other messages to the agent are its
/// acknowledgements, far smaller. Anything larger is not read at all.
fn command_packet_limit(topics: &Topics, commands: &crate::config::CommandRules) -> usize {
    // "<prefix>/<id>/cmd/+" without the "+".
    let base = topics.commands().len().saturating_sub(1);
    base.saturating_add(NAME_ROOM)
        .saturating_add(4)
        .saturating_add(commands.max_payload)
}

/// The summary of refusals [`Refusals`] left unanswered.
fn log_unanswered(n: u64) {
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

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::{PinPlan, SimBoard};
    use crate::config::{Overrides, from_text};

    /// An agent on a sim board with one output, `relay` on GPIO27, and
    /// `extra` appended to the config; the link goes nowhere.
    fn relay_agent(extra: &str) -> (Agent, crate::board::SimHandle, tempfile::TempDir, Link) {
        let config = from_text(
            &format!(
                "[device]\nid = \"pi\"\n[broker]\nport = 9\n[board]\nkind = \"sim\"\n\
                 [[output]]\nname = \"relay\"\npin = 27\n{extra}"
            ),
            None,
            &Overrides::default(),
        )
        .unwrap();
        let (edges, _) = crate::board::edges::channel(0);
        let (board, pins) = SimBoard::new(&PinPlan::from_config(&config), &[], edges);
        let link = Link::start(
            LinkOptions {
                broker: config.broker.clone(),
                client_id: "t".into(),
                reconnect: config.reconnect.clone(),
                retry: Retry::Never,
                will: None,
                subscriptions: vec![],
                max_incoming: None,
            },
            None,
        );
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = Outbox::open(dir.path(), delivery::limits(&config.outbox));
        let agent = Agent::new(config, Box::new(board), link.publisher(), outbox);
        (agent, pins, dir, link)
    }

    /// The results queued so far, in order, as (id, ok, error); they are
    /// taken out of the outbox.
    fn results(agent: &mut Agent) -> Vec<(Option<String>, bool, Option<String>)> {
        let outbox = agent.delivery.outbox();
        outbox.online();
        let mut out = Vec::new();
        loop {
            let record = match outbox.next_to_send(delivery::now_ms()) {
                Some(record) => record,
                // Waiting for the spool thread (a seq to reserve).
                None if !outbox.is_empty() && outbox.settle().is_empty() => {
                    match outbox.next_to_send(delivery::now_ms()) {
                        Some(record) => record,
                        None => break,
                    }
                }
                None => break,
            };
            outbox.acked(record.id);
            if record.topic.ends_with("/result") {
                let v: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
                out.push((
                    v["id"].as_str().map(String::from),
                    v["ok"].as_bool().unwrap(),
                    v["error"].as_str().map(String::from),
                ));
            }
        }
        outbox.offline();
        out
    }

    fn stamped(action: control::Action, id: &str, at_millis: i64) -> control::PinCommand {
        control::PinCommand {
            output: 0,
            action,
            id: Some(id.into()),
            stamp: Some(control::Stamp {
                at_millis,
                key: format!("id:{id}"),
            }),
        }
    }

    #[tokio::test]
    async fn an_edge_without_debounce_is_read_at_once_not_on_a_timer_tick() {
        let input = |debounce: &str| {
            format!("[[input]]\nname = \"door\"\npin = 17\ndebounce = \"{debounce}\"\n")
        };
        let (mut agent, pins, _dir, _link) = relay_agent(&input("0ms"));
        pins.set_input(17, true);
        agent.on_edge(0, Instant::now());
        assert_eq!(
            agent.inputs.last(0).map(|(value, _)| value),
            Some(true),
            "read and published in the same turn"
        );
        assert_eq!(agent.inputs.next_due(), None, "nothing left for a timer");

        let (mut agent, pins, _dir, _link) = relay_agent(&input("20ms"));
        pins.set_input(17, true);
        let t0 = Instant::now();
        agent.on_edge(0, t0);
        assert_eq!(agent.inputs.last(0), None, "a debounced edge waits");
        agent.on_timers(t0 + Duration::from_millis(20));
        assert_eq!(agent.inputs.last(0).map(|(value, _)| value), Some(true));
    }

    #[tokio::test]
    async fn a_late_older_command_does_not_replace_a_newer_one_waiting() {
        let (mut agent, pins, _dir, _link) = relay_agent("");
        let ms = |n| Duration::from_millis(n);
        let t0 = Instant::now();
        let wall = utc::now_unix_millis();
        agent.on_command_at(
            stamped(control::Action::Set(true), "a", wall - 300),
            t0,
            wall,
        );
        // "b" (off, meant at -100) waits; "c" (on, meant at -200) arrives later.
        let b = stamped(control::Action::Set(false), "b", wall - 100);
        agent.on_command_at(b, t0 + ms(10), wall + 10);
        let c = stamped(control::Action::Set(true), "c", wall - 200);
        agent.on_command_at(c, t0 + ms(20), wall + 20);
        assert_eq!(
            agent.waiting[0].as_ref().and_then(|w| w.id.as_deref()),
            Some("b"),
            "the newer command keeps its place"
        );
        agent.apply_waiting_at(t0 + ms(100), wall + 100);
        assert_eq!(pins.level(27), Some(false), "the newer \"off\" is applied");
        let results = results(&mut agent);
        let c = results
            .iter()
            .find(|r| r.0.as_deref() == Some("c"))
            .unwrap();
        assert!(!c.1, "the older one is refused: {c:?}");
        assert!(c.2.as_deref().unwrap().contains("already waiting"), "{c:?}");
        let b = results
            .iter()
            .find(|r| r.0.as_deref() == Some("b"))
            .unwrap();
        assert!(b.1, "{b:?}");

        // An unstamped command counts as meant when it arrived: it replaces
        // a waiting command stamped earlier, not one stamped later.
        let unstamped = |id: &str| control::PinCommand {
            output: 0,
            action: control::Action::Toggle,
            id: Some(id.into()),
            stamp: None,
        };
        let t1 = t0 + ms(1000);
        agent.on_command_at(
            stamped(control::Action::Set(true), "d", wall + 900),
            t1,
            wall + 1000,
        );
        agent.on_command_at(
            stamped(control::Action::Set(false), "e", wall + 1000),
            t1 + ms(1),
            wall + 1001,
        );
        agent.on_command_at(unstamped("f"), t1 + ms(2), wall + 1002);
        assert_eq!(
            agent.waiting[0].as_ref().and_then(|w| w.id.as_deref()),
            Some("f")
        );
        agent.on_command_at(
            stamped(control::Action::Set(false), "g", wall + 1500),
            t1 + ms(3),
            wall + 1003,
        );
        assert_eq!(
            agent.waiting[0].as_ref().and_then(|w| w.id.as_deref()),
            Some("g")
        );
        agent.on_command_at(unstamped("h"), t1 + ms(4), wall + 1004);
        assert_eq!(
            agent.waiting[0].as_ref().and_then(|w| w.id.as_deref()),
            Some("g"),
            "a command stamped ahead (within max_future) is newer than one arriving now"
        );
    }

    #[tokio::test]
    async fn a_held_stamped_command_that_went_stale_while_waiting_is_refused() {
        let (mut agent, pins, _dir, _link) =
            relay_agent("[commands]\nmin_interval = \"1h\"\nmax_age = \"30s\"\n");
        let t0 = Instant::now();
        let wall = utc::now_unix_millis();
        agent.on_command_at(stamped(control::Action::Set(true), "a", wall), t0, wall);
        let b = stamped(control::Action::Set(false), "b", wall + 1000);
        agent.on_command_at(b, t0 + Duration::from_secs(1), wall + 1000);
        assert!(agent.waiting[0].is_some(), "held for min_interval");
        let hour = Duration::from_secs(3600);
        agent.apply_waiting_at(t0 + hour, wall + 3_600_000);
        assert_eq!(
            pins.level(27),
            Some(true),
            "a stale command does not move the pin"
        );
        assert!(agent.waiting[0].is_none());
        let results = results(&mut agent);
        let b = results
            .iter()
            .find(|r| r.0.as_deref() == Some("b"))
            .unwrap();
        assert!(!b.1, "{b:?}");
        assert!(
            b.2.as_deref().unwrap().contains("commands.max_age"),
            "{b:?}"
        );

        // Still fresh when its turn comes: carried out.
        let t1 = t0 + hour * 2;
        let w1 = wall + 7_200_000;
        agent.on_command_at(stamped(control::Action::Set(false), "c", w1), t1, w1);
        assert_eq!(pins.level(27), Some(false));
        let d = stamped(control::Action::Set(true), "d", w1 + 3_590_000);
        agent.on_command_at(d, t1 + Duration::from_secs(3590), w1 + 3_590_000);
        agent.apply_waiting_at(t1 + hour, w1 + 3_600_000);
        assert_eq!(pins.level(27), Some(true), "10 s old when applied");
    }

    #[tokio::test]
    async fn after_a_flood_to_made_up_names_a_refusal_on_a_real_output_is_still_answered() {
        let (mut agent, _pins, _dir, _link) = relay_agent("");
        for i in 0..10_000 {
            let topic = format!("pinpost/pi/cmd/nothing-{i}");
            agent.on_message(&topic, b"on", false);
        }
        let flood = results(&mut agent);
        assert_eq!(
            flood.len(),
            refusals::BURST as usize,
            "the flood is answered within budget"
        );
        agent.on_message(
            "pinpost/pi/cmd/relay",
            br#"{"action":"on","id":"late","ts":1000000000000}"#,
            false,
        );
        let answers = results(&mut agent);
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert_eq!(answers[0].0.as_deref(), Some("late"));
        assert!(!answers[0].1);
        assert!(
            answers[0]
                .2
                .as_deref()
                .unwrap()
                .contains("commands.max_age"),
            "{answers:?}"
        );
    }

    #[tokio::test]
    async fn inside_min_interval_only_the_latest_command_waits_and_is_applied() {
        let (mut agent, pins, _dir, _link) = relay_agent("");
        let command = |action, id: &str| control::PinCommand {
            output: 0,
            action,
            id: Some(id.into()),
            stamp: None,
        };
        let ms = |n| Duration::from_millis(n);
        let t0 = Instant::now();
        agent.on_command(command(control::Action::Set(true), "a"), t0);
        assert_eq!(pins.level(27), Some(true), "the first one at once");
        agent.on_command(command(control::Action::Set(false), "b"), t0 + ms(10));
        agent.on_command(command(control::Action::Toggle, "c"), t0 + ms(20));
        assert_eq!(pins.level(27), Some(true), "held, not applied");
        assert_eq!(
            agent.waiting[0].as_ref().map(|w| (w.id.as_deref(), w.at)),
            Some((Some("c"), t0 + ms(100))),
            "only the latest waits, until 100 ms after the last change"
        );
        agent.apply_waiting(t0 + ms(99));
        assert_eq!(pins.level(27), Some(true));
        agent.apply_waiting(t0 + ms(100));
        assert_eq!(pins.level(27), Some(false), "the toggle, once allowed");
        assert!(agent.waiting[0].is_none());
        // "b" was answered as replaced, "a" and "c" as done.
        assert_eq!(
            agent.delivery.outbox().stats().queued,
            5,
            "3 results and 2 states"
        );
        agent.on_command(command(control::Action::Pulse(ms(50)), "d"), t0 + ms(500));
        assert_eq!(
            pins.level(27),
            Some(false),
            "a pulse under 100 ms is refused"
        );
    }

    #[tokio::test]
    async fn a_panic_still_leaves_outputs_in_their_safe_state() {
        let (agent, pins, _dir, _link) = relay_agent("initial = \"on\"\nsafe_state = \"off\"\n");
        assert_eq!(pins.level(27), Some(true));
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _agent = agent;
            panic!("a bug");
        }));
        assert!(unwound.is_err());
        assert_eq!(
            pins.level(27),
            Some(false),
            "safe_state applied while unwinding"
        );
    }
}
