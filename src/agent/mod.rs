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
//! are answered and logged within a budget (`refusals`), each output
//! changes at most once per `commands.min_interval` (only the latest early
//! command waits), and the link reads only packets a command could need.
//!
//! This module is the start-up wiring ([`run`] builds the link and the
//! agent's state) and that state; what the agent does with it lives beside
//! it: `event_loop` (what happens when), `pin_commands` (a command to
//! its output and answer), `reports` (what it publishes of its own
//! accord) and `shutdown` (the clean stop).

mod applied;
mod buttons;
mod clock_view;
mod counting;
mod counting_sync;
mod delivery;
mod discovery;
mod event_loop;
mod inputs;
mod outputs;
mod pin_commands;
mod refusals;
mod renewal;
mod reports;
mod sampling;
mod shutdown;
mod stall;
mod syncer;
mod systemd;
mod update;

use std::collections::BTreeMap;
use std::future::Future;

use tokio::time::Instant;

use crate::board::{Board, EdgeReceiver};
use crate::config::Config;
use crate::link::{Client, Link, LinkOptions, Publisher, Qos, Retry, Will};
use crate::outbox::Outbox;
use crate::sensors::{Reporting, Sensing};
use crate::tls::{self, TlsError};
use crate::topics::{self, Topics};
use delivery::Delivery;

use applied::Applied;
use clock_view::ClockView;
use discovery::Discovery;
use inputs::Inputs;
use outputs::Outputs;
use pin_commands::Waiting;
use refusals::Refusals;
use renewal::Renewal;
use sampling::Sampling;
use update::Updater;

/// What the agent last recorded as announced to Home Assistant, for `pinpost ha`.
pub(crate) use discovery::record as homeassistant_record;
/// The pair the agent renewed, for the tools (see `renewal`).
pub(crate) use renewal::renewed_pair;

/// Why [`run`] returned before its shutdown future resolved.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The TLS settings could not be loaded (certificates, key, CA).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The link ended (it reports no more events) while the agent still ran.
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
    // The operator's answer to a renewal request, when one could be made
    // (see `renewal`).
    let renews = config
        .broker
        .tls
        .as_ref()
        .is_some_and(|t| t.cert_file.is_some() && t.key_file.is_some() && t.ca_file.is_some());
    if renews {
        subscriptions.push((topics.cert_issued(), Qos::AtLeastOnce));
    }
    // Signed releases, when this device has a release key to check them.
    let updates = config.update.release_key.is_some();
    if updates {
        subscriptions.push((topics.release(), Qos::AtLeastOnce));
        subscriptions.push((topics.config(), Qos::AtLeastOnce));
    }
    let max_incoming = command_packet_limit(&topics, &config.commands)
        .max(
            // HA's status topic, `online`, the topic's length and a packet id.
            ha_status.map_or(0, |t| t.len().saturating_add(16)),
        )
        .max(if renews {
            topics::CERT_ANSWER_MAX.saturating_add(topics.cert_issued().len() + 4)
        } else {
            0
        })
        .max(if updates {
            // A chunk, its topic (a SHA-256 in hex and a chunk number),
            // and a packet id.
            topics::RELEASE_CHUNK
                .saturating_add(topics.release_chunk(&"0".repeat(64), u64::MAX).len() + 4)
                .max(crate::release::manifest::MAX_MANIFEST + topics.release().len() + 4)
                .max(crate::release::config::MAX_SIGNED_CONFIG + topics.config().len() + 4)
        } else {
            0
        });
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
    let identity = tls.as_ref().map(|t| t.identity.clone());
    let link = Link::start(options, tls);
    // Before the first handshake (nothing has awaited yet): a renewed pair
    // that has connected before is offered from the start.
    let renewal = identity.and_then(|identity| {
        let started = Renewal::start(
            &config,
            &config.outbox.path,
            identity,
            link.reconnector(),
            link.publisher(),
        );
        if let Some(words) = started.words {
            tracing::info!("{words}");
        }
        started.renewal
    });
    let (outbox, opened) = Outbox::open(&config.outbox.path, delivery::limits(&config.outbox));
    delivery::report_opened(&outbox, &opened);
    tracing::info!(
        device = %config.device.id,
        board = %board.describe(),
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
    if let Some(renewal) = &renewal {
        agent.cert_ends = Some(crate::utc::rfc3339_millis(
            renewal.ends().saturating_mul(1000),
        ));
    }
    agent.renewal = renewal;
    if let Some(key) = &agent.config.update.release_key {
        match Updater::start(
            key,
            &agent.config.outbox.path,
            &agent.config.update.helper_dir,
            agent.config.update.install,
            (&agent.config.device.id, agent.config.file.as_deref()),
            agent.topics.clone(),
            link.publisher(),
        ) {
            Ok(updater) => agent.updater = Some(updater),
            Err(words) => tracing::error!("{words}"),
        }
    }
    agent.read_all_inputs();
    agent.serve(link, edges, shutdown).await
}

struct Agent {
    config: Config,
    board: Box<dyn Board>,
    topics: Topics,
    inputs: Inputs,
    /// The buttons' presses, from their inputs' levels.
    buttons: buttons::Buttons,
    /// The counting inputs' totals.
    counting: counting::Counting,
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
    /// The broker of the current connection, until its first message is
    /// acknowledged (then the STATUS line says it delivers: the update
    /// helper's health gate reads it).
    undelivered: Option<String>,
    /// The broker was found rewriting `.` in this device's topics (said once).
    dots_said: bool,
    /// The wall clock: its jumps, and whether it is trusted.
    clock: ClockView,
    /// When the client certificate ends (RFC 3339), for `stats`: a fleet
    /// renewing by hand sees it coming.
    cert_ends: Option<String>,
    /// Renewing the client certificate over MQTT, when it has one.
    renewal: Option<Renewal>,
    /// Fetching signed releases, when it has a release key.
    updater: Option<Updater>,
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
            // One debounce, not two: the kernel's already held the change.
            if board.debounces(i) {
                inputs.settled_by_board(i);
            }
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
        // Outputs, then every input at outputs.len() + its index: a counting
        // input's stamped commands are applied once like an output's.
        let names: Vec<String> = config
            .outputs
            .iter()
            .map(|o| o.name.clone())
            .chain(config.inputs.iter().map(|i| i.name.clone()))
            .collect();
        let (applied, problems) = Applied::load(outbox.dir(), &names);
        for problem in problems {
            tracing::warn!("{problem}");
        }
        let counting = counting::Counting::open(&config.inputs, outbox.dir(), now);
        let refusals = Refusals::new(config.outputs.len(), now);
        let clock = ClockView::new(&config.clock, outbox.dir());
        let cert_ends = config
            .broker
            .tls
            .as_ref()
            .and_then(|t| t.cert_file.as_ref())
            .and_then(crate::tls::cert_ends)
            .map(|unix| crate::utc::rfc3339_millis(unix.saturating_mul(1000)));
        Agent {
            delivery: Delivery::new(outbox, publisher, stall_after(config.broker.keep_alive)),
            counting,
            buttons: buttons::Buttons::new(&config.inputs),
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
            undelivered: None,
            dots_said: false,
            clock,
            cert_ends,
            renewal: None,
            updater: None,
            connections: 0,
            safe: false,
            refusals,
            waiting,
            discovery: None,
            last_readings: BTreeMap::new(),
        }
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

/// How long a full window may stand still before it is called a stall:
/// the keep-alive, within which a live broker answers anything (a minute
/// when keep-alive is off).
fn stall_after(keep_alive: std::time::Duration) -> std::time::Duration {
    if keep_alive.is_zero() {
        std::time::Duration::from_secs(60)
    } else {
        keep_alive
    }
}

#[cfg(test)]
mod tests;
