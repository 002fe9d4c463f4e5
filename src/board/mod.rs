//! The pins: a [`Board`] trait with three backends, `rppal` (the Raspberry
//! Pi's GPIO registers, on the Raspberry Pi OS kernel), `cdev` (the kernel's
//! GPIO character device, on any kernel) and `sim` (laptops, tests, the
//! demo). `choose` decides what `auto` means here, and says why.
//!
//! Backends are thin: they set pins up from one shared [`PinPlan`], report
//! "input i may have changed" on a channel, and read or drive levels.
//! Debounce, inversion and deciding what to publish live above them (in
//! `agent::inputs`), so both backends share that code path. This module knows
//! nothing of MQTT.

pub(crate) mod cdev;
pub(crate) mod choose;
pub mod edges;
mod error;
pub(crate) mod expander;
mod kernel_pwm;
pub(crate) mod mux;
pub(crate) mod rppal;
mod sim;
mod soft_pwm;
pub(crate) mod survey;

use std::time::Duration;

use crate::config::{BoardKind, Config, CountEdge, Pull, SimPulses};

pub use error::BoardError;
pub use sim::{SimBoard, SimHandle};

/// Electrical access to the configured pins, by their index in the config's
/// `inputs` and `outputs`.
pub trait Board: Send {
    /// Whether input `input`'s pin is high (before any `invert`).
    fn read_input(&self, input: usize) -> Result<bool, BoardError>;
    /// Drives output `output` high or low, stopping any PWM on it.
    fn write_output(&mut self, output: usize, high: bool) -> Result<(), BoardError>;
    /// Starts PWM on output `output`: `duty` 0.0–1.0 at `hz`.
    fn pwm(&mut self, output: usize, duty: f64, hz: f64) -> Result<(), BoardError>;
    /// Short name for logs: "rppal", "cdev" or "sim".
    fn name(&self) -> &'static str;
    /// What drives the pins, in words (the chip, for `cdev`).
    fn describe(&self) -> String {
        self.name().to_string()
    }
    /// Whether input `input`'s changes arrive already debounced (by the
    /// kernel, for the config's debounce), so the agent need not wait again.
    fn debounces(&self, _input: usize) -> bool {
        false
    }
    /// Whether an output keeps its level once pinpost lets go of it: the
    /// registers rppal writes do, a character device's freed line may not.
    fn keeps_levels_after_exit(&self) -> bool {
        true
    }
}

/// The two ends of the "input i may have changed" channel ([`edges`]):
/// backends send from whatever thread notices, the agent receives.
pub use edges::{EdgeReceiver, EdgeSender};

/// How each pin is set up, the same for every backend.
#[derive(Debug, Clone, PartialEq)]
pub struct PinPlan {
    pub(crate) inputs: Vec<InputSetup>,
    pub(crate) outputs: Vec<OutputSetup>,
}

/// How one input pin is set up.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct InputSetup {
    pub(crate) pin: u8,
    /// The character device's line by name, instead of line `pin`.
    pub(crate) line: Option<String>,
    pub(crate) pull: Pull,
    /// The config's debounce, which the character device asks of the kernel.
    pub(crate) debounce: Duration,
    /// Interrupts on both edges (always, so a change is seen at once).
    pub(crate) interrupt: bool,
    /// A counting input's pulses, as electrical edges.
    pub(crate) count: Option<CountSetup>,
}

/// Which electrical edges of a counting input are pulses (its `edge`,
/// turned over by `invert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CountSetup {
    pub(crate) rising: bool,
    pub(crate) falling: bool,
}

impl InputSetup {
    /// The filter that judges this input's edges, when it counts; with
    /// `kernel_debounced`, the kernel has already waited out the bounce.
    pub(crate) fn pulse_filter(&self, kernel_debounced: bool) -> Option<edges::PulseFilter> {
        let count = self.count?;
        let quiet = if kernel_debounced {
            Duration::ZERO
        } else {
            self.debounce
        };
        Some(edges::PulseFilter::new(count.rising, count.falling, quiet))
    }
}

/// How one output pin is set up.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutputSetup {
    pub(crate) pin: u8,
    /// The character device's line by name, instead of line `pin`.
    pub(crate) line: Option<String>,
    /// Level written before the pin becomes an output: no click at start.
    pub(crate) initial_high: bool,
    pub(crate) pwm: PwmSetup,
}

/// Which PWM, if any, an output may be driven with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PwmSetup {
    /// Levels only.
    None,
    /// The pin has a PWM peripheral channel (Pi 1–4 numbering).
    Hardware { channel: u8 },
    /// rppal's software PWM thread, on any pin.
    Software,
}

impl PinPlan {
    /// The plan for the config's `[[input]]` and `[[output]]` pins on the
    /// Pi itself, in their order: the indices the [`Board`] methods take
    /// when no pin is on an expander (`expander` maps them otherwise).
    pub fn from_config(config: &Config) -> PinPlan {
        PinPlan {
            inputs: config
                .inputs
                .iter()
                .filter_map(|i| Some((i, i.pin.gpio()?)))
                .map(|(i, pin)| InputSetup {
                    pin,
                    line: i.line.clone(),
                    pull: i.pull,
                    debounce: i.debounce,
                    interrupt: true,
                    count: i.count.as_ref().map(|c| {
                        let (on, off) = match c.edge {
                            CountEdge::Rising => (true, false),
                            CountEdge::Falling => (false, true),
                            CountEdge::Both => (true, true),
                        };
                        // Turning on is a falling edge when the input is
                        // inverted.
                        CountSetup {
                            rising: if i.invert { off } else { on },
                            falling: if i.invert { on } else { off },
                        }
                    }),
                })
                .collect(),
            outputs: config
                .outputs
                .iter()
                .filter_map(|o| Some((o, o.pin.gpio()?)))
                .map(|(o, pin)| OutputSetup {
                    pin,
                    line: o.line.clone(),
                    initial_high: o.initial,
                    pwm: match (o.pwm, crate::header::pwm_channel(pin)) {
                        (false, _) => PwmSetup::None,
                        (true, Some(channel)) => PwmSetup::Hardware { channel },
                        (true, None) => PwmSetup::Software,
                    },
                })
                .collect(),
        }
    }
}

/// A board opened, and why it is this backend.
pub(crate) struct Opened {
    pub(crate) board: Box<dyn Board>,
    /// Why this backend, in words (`auto`'s reasoning, or "asked for").
    pub(crate) why: String,
}

/// Opens the board the config asks for; `auto` as [`choose`] decides.
pub(crate) fn open(config: &Config, edges: EdgeSender) -> Result<Opened, BoardError> {
    if !config.board.expanders.is_empty() {
        return expander::open(config, edges);
    }
    let plan = PinPlan::from_config(config);
    open_plan(
        config.board.kind,
        config.board.chip.as_deref(),
        &plan,
        (&config.board.wires, &config.board.pulses),
        edges,
    )
}

/// Opens `plan` on the backend `kind` means here.
pub(crate) fn open_plan(
    kind: BoardKind,
    chip: Option<&str>,
    plan: &PinPlan,
    (wires, pulses): (&[(u8, u8)], &[SimPulses]),
    edges: EdgeSender,
) -> Result<Opened, BoardError> {
    let gpiomem = choose::gpiomem();
    let choice = choose::choose(kind, gpiomem);
    let cdev = |why: String, edges| -> Result<Opened, BoardError> {
        Ok(Opened {
            board: Box::new(cdev::CdevBoard::open(plan, chip, edges)?),
            why,
        })
    };
    match choice.backend {
        choose::Backend::Sim => {
            let mut board = SimBoard::new(plan, wires, edges).0;
            for p in pulses {
                board.start_pulses(*p)?;
            }
            Ok(Opened {
                board: Box::new(board),
                why: choice.why,
            })
        }
        choose::Backend::Cdev => cdev(choice.why, edges),
        choose::Backend::Rppal => match rppal::RppalBoard::open(plan, edges.clone()) {
            Ok(board) => Ok(Opened {
                board: Box::new(board),
                why: choice.why,
            }),
            // A board rppal's list does not have yet: the kernel knows it.
            Err(BoardError::NotAPi) if kind == BoardKind::Auto => {
                cdev(choose::unknown_to_rppal(gpiomem), edges)
            }
            Err(e) => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, from_text};

    #[test]
    fn the_plan_sets_levels_before_outputs_and_picks_pwm_kinds() {
        let c = from_text(
            "[device]\nid = \"pi\"\n[[input]]\nname = \"b\"\npin = 17\npull = \"up\"\n\
             [[output]]\nname = \"relay\"\npin = 27\ninitial = \"on\"\n\
             [[output]]\nname = \"fan\"\npin = 18\npwm = true\n\
             [[output]]\nname = \"led\"\npin = 22\npwm = true\n",
            None,
            &Overrides::default(),
        )
        .unwrap();
        let plan = PinPlan::from_config(&c);
        assert_eq!(
            plan.inputs,
            vec![InputSetup {
                pin: 17,
                line: None,
                pull: Pull::Up,
                debounce: Duration::from_millis(50),
                interrupt: true,
                count: None,
            }]
        );
        assert_eq!(
            plan.outputs,
            vec![
                OutputSetup {
                    pin: 27,
                    line: None,
                    initial_high: true,
                    pwm: PwmSetup::None
                },
                OutputSetup {
                    pin: 18,
                    line: None,
                    initial_high: false,
                    pwm: PwmSetup::Hardware { channel: 0 }
                },
                OutputSetup {
                    pin: 22,
                    line: None,
                    initial_high: false,
                    pwm: PwmSetup::Software
                },
            ]
        );
    }
}
