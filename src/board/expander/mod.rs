//! Pins on I2C GPIO expanders (`[[expander]]`, `pin = "mcp0:A3"`), behind
//! the same [`Board`] the agent drives: [`Expanded`] sends each input and
//! output either to the Pi's own backend (rppal, cdev or sim, opened with
//! only the Pi's pins) or to the expander's worker thread (`worker`),
//! which talks to the chip (`chips`; simulated chips on the sim board,
//! `sim`). An expander's INT line is one more input of the Pi's backend,
//! which wakes the worker instead of reaching the agent.
//!
//! Without expanders none of this exists: `board::open` opens the Pi's
//! backend directly, as before. It knows nothing of MQTT or debounce.

mod chips;
pub(crate) mod sim;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};

use crate::config::{Config, ExpanderChip, PinAt, Pull};
use crate::i2c_bus::PiBus;

use super::{Board, BoardError, EdgeSender, InputSetup, Opened, PinPlan, edges};
use chips::{Mcp23017, Port, Setup};
use worker::{Handle, Opener, Plan};

/// Where one of the agent's inputs or outputs is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Index `n` of the Pi backend's plan.
    Pi(usize),
    /// Bit `bit` of expander `expander`.
    Chip { expander: usize, bit: u8 },
}

/// The Pi's backend and the expanders, as one board.
pub(crate) struct Expanded {
    pi: Box<dyn Board>,
    inputs: Vec<Slot>,
    outputs: Vec<Slot>,
    workers: Vec<Handle>,
    what: String,
}

/// The Pi backend's plan and where each of the agent's pins went.
struct Split {
    plan: PinPlan,
    inputs: Vec<Slot>,
    outputs: Vec<Slot>,
    /// (the plan's input index, expander): each INT line.
    interrupts: Vec<(usize, usize)>,
}

/// Each pin's slot: the Pi's pins numbered in order, as `PinPlan` has them.
fn slots<'a>(pins: impl Iterator<Item = &'a PinAt>) -> Vec<Slot> {
    let mut k = 0;
    pins.map(|pin| match pin {
        PinAt::Gpio(_) => {
            k += 1;
            Slot::Pi(k - 1)
        }
        PinAt::Expander(e) => Slot::Chip {
            expander: e.expander,
            bit: e.bit,
        },
    })
    .collect()
}

/// The Pi's pins of `config` as a plan, with each config pin's slot, and
/// each expander's INT line as one more input (→ its expander).
fn split(config: &Config) -> Split {
    let mut plan = PinPlan::from_config(config);
    let inputs = slots(config.inputs.iter().map(|i| &i.pin));
    let outputs = slots(config.outputs.iter().map(|o| &o.pin));
    let mut interrupts = Vec::new();
    for (n, e) in config.board.expanders.iter().enumerate() {
        if let Some(pin) = e.interrupt {
            plan.inputs.push(InputSetup {
                pin,
                line: None,
                // Open drain, low while a change waits to be read.
                pull: Pull::Up,
                debounce: std::time::Duration::ZERO,
                interrupt: true,
                count: None,
            });
            interrupts.push((plan.inputs.len() - 1, n));
        }
    }
    Split {
        plan,
        inputs,
        outputs,
        interrupts,
    }
}

/// Each expander's worker plan.
fn plans(config: &Config) -> Vec<Plan> {
    config
        .board
        .expanders
        .iter()
        .enumerate()
        .map(|(n, e)| {
            let mut setup = Setup {
                interrupt: e.interrupt.is_some(),
                ..Setup::default()
            };
            let mut inputs = Vec::new();
            let mut outputs = Vec::new();
            for (i, input) in config.inputs.iter().enumerate() {
                if let Some(p) = input.pin.expander().filter(|p| p.expander == n) {
                    inputs.push((p.bit, i));
                    if input.pull == Pull::Up {
                        setup.pull_ups |= 1 << p.bit;
                    }
                }
            }
            for output in &config.outputs {
                if let Some(p) = output.pin.expander().filter(|p| p.expander == n) {
                    setup.outputs |= 1 << p.bit;
                    if output.initial {
                        setup.levels |= 1 << p.bit;
                    }
                    outputs.push((p.bit, output.name.clone()));
                }
            }
            Plan {
                what: e.describe(),
                setup,
                inputs,
                outputs,
                poll: e.poll_interval,
            }
        })
        .collect()
}

/// How expander `n`'s chip is reached: rppal's `/dev/i2c-N`, or the sim
/// board's simulated chips.
fn opener(config: &Config, n: usize, world: Option<&Arc<Mutex<sim::World>>>) -> Opener {
    let e = config.board.expanders[n].clone();
    if let Some(world) = world {
        let world = world.clone();
        return Box::new(move || Ok(port(e.chip, sim::SimBus::new(world.clone(), n), e.address)));
    }
    Box::new(move || Ok(port(e.chip, PiBus::open(e.bus)?, e.address)))
}

fn port<B>(chip: ExpanderChip, bus: B, address: u8) -> Box<dyn Port>
where
    B: embedded_hal::i2c::I2c + Send + 'static,
    B::Error: std::fmt::Display,
{
    match chip {
        ExpanderChip::Mcp23017 => Box::new(Mcp23017::new(bus, address)),
        _ => Box::new(chips::Pcf857x::new(chip, bus, address)),
    }
}

/// Whether expander `e` answers on its bus: one read, nothing written.
pub(crate) fn probe(e: &crate::config::Expander) -> Result<(), String> {
    port(e.chip, PiBus::open(e.bus)?, e.address)
        .read()
        .map(|_| ())
}

/// Opens the Pi's backend for the Pi's pins and starts a worker per
/// expander.
pub(crate) fn open(config: &Config, edges: EdgeSender) -> Result<Opened, BoardError> {
    let Split {
        plan,
        inputs,
        outputs,
        interrupts,
    } = split(config);
    let (inner_tx, mut inner_rx) = edges::channel(plan.inputs.len());
    let opened = super::open_plan(
        config.board.kind,
        config.board.chip.as_deref(),
        &plan,
        (&config.board.wires, &config.board.pulses),
        inner_tx,
    )?;
    let world = (opened.board.name() == "sim").then(|| {
        sim::World::new(
            &config.board.expanders,
            &config.board.expander_wires,
            config.board.unplugged.clone(),
        )
    });
    let mut workers = Vec::new();
    for (n, p) in plans(config).into_iter().enumerate() {
        let open = opener(config, n, world.as_ref());
        workers.push(Handle::start(p, open, edges.clone()).map_err(BoardError::Other)?);
    }
    // The Pi backend's notices: its inputs to the agent (by the agent's
    // index, with their pulses), its INT lines to their workers.
    let to_agent: Vec<Option<usize>> = (0..plan.inputs.len())
        .map(|k| inputs.iter().position(|s| *s == Slot::Pi(k)))
        .collect();
    let wakers: Vec<(usize, worker::Waker)> = interrupts
        .iter()
        .filter_map(|&(k, n)| workers.get(n).map(|w| (k, w.waker())))
        .collect();
    std::thread::Builder::new()
        .name("pinpost-pi-edges".into())
        .spawn(move || {
            while let Some(k) = inner_rx.blocking_recv() {
                if let Some(Some(i)) = to_agent.get(k) {
                    let _ = edges.pulses(*i, inner_rx.take_pulses(k));
                } else if let Some((_, waker)) = wakers.iter().find(|(at, _)| *at == k) {
                    waker.wake();
                }
            }
        })
        .map_err(|e| BoardError::Other(format!("cannot start the edge thread: {e}")))?;
    let what = config
        .board
        .expanders
        .iter()
        .map(|e| e.describe())
        .collect::<Vec<_>>()
        .join(", ");
    Ok(Opened {
        board: Box::new(Expanded {
            pi: opened.board,
            inputs,
            outputs,
            workers,
            what,
        }),
        why: opened.why,
    })
}

impl Expanded {
    fn worker(&self, expander: usize) -> Result<&Handle, BoardError> {
        self.workers
            .get(expander)
            .ok_or_else(|| BoardError::Other(format!("no expander {expander}")))
    }
}

impl Board for Expanded {
    fn read_input(&self, input: usize) -> Result<bool, BoardError> {
        match self.inputs.get(input) {
            Some(Slot::Pi(k)) => self.pi.read_input(*k),
            Some(Slot::Chip { expander, bit }) => self
                .worker(*expander)?
                .level(*bit)
                .map_err(BoardError::Expander),
            None => Err(BoardError::Other(format!("no input {input}"))),
        }
    }

    fn write_output(&mut self, output: usize, high: bool) -> Result<(), BoardError> {
        match self.outputs.get(output).copied() {
            Some(Slot::Pi(k)) => self.pi.write_output(k, high),
            Some(Slot::Chip { expander, bit }) => self
                .worker(expander)?
                .write(bit, high)
                .map_err(BoardError::Expander),
            None => Err(BoardError::Other(format!("no output {output}"))),
        }
    }

    fn pwm(&mut self, output: usize, duty: f64, hz: f64) -> Result<(), BoardError> {
        match self.outputs.get(output).copied() {
            Some(Slot::Pi(k)) => self.pi.pwm(k, duty, hz),
            // The config refuses pwm on an expander's pin; control never asks.
            _ => Err(BoardError::Expander("an expander's pin has no PWM".into())),
        }
    }

    fn name(&self) -> &'static str {
        self.pi.name()
    }

    fn describe(&self) -> String {
        format!("{}, with {}", self.pi.describe(), self.what)
    }

    fn debounces(&self, input: usize) -> bool {
        match self.inputs.get(input) {
            Some(Slot::Pi(k)) => self.pi.debounces(*k),
            _ => false,
        }
    }

    fn keeps_levels_after_exit(&self) -> bool {
        self.pi.keeps_levels_after_exit()
    }
}
