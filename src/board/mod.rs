//! The pins: a [`Board`] trait with two backends, `rppal` (a real Raspberry
//! Pi, any model through the Pi 5) and `sim` (laptops, tests, the demo).
//!
//! Backends are thin: they set pins up from one shared [`PinPlan`], report
//! "input i may have changed" on a channel, and read or drive levels.
//! Debounce, inversion and deciding what to publish live above them (in
//! `agent::inputs`), so both backends share that code path. This module knows
//! nothing of MQTT.

pub mod edges;
mod error;
pub(crate) mod mux;
pub(crate) mod rppal;
mod sim;

use crate::config::{BoardKind, Config, Pull};

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
    /// Short name for logs: "rppal" or "sim".
    fn name(&self) -> &'static str;
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
    pub(crate) pull: Pull,
    /// Interrupts on both edges (always, so a change is seen at once).
    pub(crate) interrupt: bool,
}

/// How one output pin is set up.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutputSetup {
    pub(crate) pin: u8,
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
    /// The plan for the config's `[[input]]` and `[[output]]` pins, in
    /// their order (the indices the [`Board`] methods take).
    pub fn from_config(config: &Config) -> PinPlan {
        PinPlan {
            inputs: config
                .inputs
                .iter()
                .map(|i| InputSetup {
                    pin: i.pin,
                    pull: i.pull,
                    interrupt: true,
                })
                .collect(),
            outputs: config
                .outputs
                .iter()
                .map(|o| OutputSetup {
                    pin: o.pin,
                    initial_high: o.initial,
                    pwm: match (o.pwm, crate::header::pwm_channel(o.pin)) {
                        (false, _) => PwmSetup::None,
                        (true, Some(channel)) => PwmSetup::Hardware { channel },
                        (true, None) => PwmSetup::Software,
                    },
                })
                .collect(),
        }
    }
}

/// Opens the board the config asks for. `auto` means a Raspberry Pi, and
/// says to use `sim` anywhere else.
pub(crate) fn open(config: &Config, edges: EdgeSender) -> Result<Box<dyn Board>, BoardError> {
    let plan = PinPlan::from_config(config);
    match config.board.kind {
        BoardKind::Sim => Ok(Box::new(SimBoard::new(&plan, &config.board.wires, edges).0)),
        BoardKind::Rppal | BoardKind::Auto => Ok(Box::new(rppal::RppalBoard::open(&plan, edges)?)),
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
                pull: Pull::Up,
                interrupt: true
            }]
        );
        assert_eq!(
            plan.outputs,
            vec![
                OutputSetup {
                    pin: 27,
                    initial_high: true,
                    pwm: PwmSetup::None
                },
                OutputSetup {
                    pin: 18,
                    initial_high: false,
                    pwm: PwmSetup::Hardware { channel: 0 }
                },
                OutputSetup {
                    pin: 22,
                    initial_high: false,
                    pwm: PwmSetup::Software
                },
            ]
        );
    }
}
