//! The real Raspberry Pi through rppal (Pi 1 to Pi 5). Interrupt callbacks
//! run on rppal's own thread and only forward "input i changed" into tokio.
//! Outputs keep their level when pinpost exits (no reset on drop), so a
//! relay stays where `safe_state` put it.
//!
//! Outputs are rppal `IoPin`s rather than `OutputPin`s: a hardware PWM
//! output must be switched between output mode and its PWM ALT function,
//! in the order [`mux`](super::mux) plans; this file only carries the steps
//! out.

use rppal::gpio::{Gpio, InputPin, IoPin, Level, Mode, Trigger};
use rppal::pwm::{Channel, Polarity, Pwm};
use rppal::system::{DeviceInfo, SoC};

use super::mux::{self, Drive, Function, HardwarePwm, Request, Soc, Step};
use super::{Board, BoardError, EdgeSender, PinPlan, PwmSetup};
use crate::config::Pull;

pub(crate) struct RppalBoard {
    inputs: Vec<InputPin>,
    outputs: Vec<Driven>,
}

/// An output pin, what drives it, and its hardware PWM channel: opened on
/// the first PWM command and kept for every later one, since dropping an
/// rppal `Pwm` disables the channel.
struct Driven {
    pin: IoPin,
    drive: Drive,
    /// `None` for a pin without a channel, or once its channel failed.
    hardware: Option<HardwarePwm>,
    channel: Option<Pwm>,
}

impl RppalBoard {
    pub(crate) fn open(plan: &PinPlan, edges: EdgeSender) -> Result<RppalBoard, BoardError> {
        let gpio = Gpio::new()
            .map_err(|e| BoardError::from_rppal_open(e, super::choose::gpiomem().is_some()))?;
        let mut inputs = Vec::new();
        for (index, setup) in plan.inputs.iter().enumerate() {
            let n = setup.pin;
            let pin = gpio
                .get(n)
                .map_err(|e| BoardError::from_rppal(e, Some(n)))?;
            let mut pin = match setup.pull {
                Pull::Up => pin.into_input_pullup(),
                Pull::Down => pin.into_input_pulldown(),
                Pull::None => pin.into_input(),
            };
            if setup.interrupt {
                let edges = edges.clone();
                let mut filter = setup.pulse_filter(false);
                // Debounce happens above, where the level is read again after
                // it settles; the event's own edge may already be stale. A
                // counting input's edges are judged here, each by its own
                // kernel timestamp.
                pin.set_async_interrupt(Trigger::Both, None, move |event| {
                    let _ = match &mut filter {
                        None => edges.send(index),
                        Some(filter) => {
                            let at = u64::try_from(event.timestamp.as_nanos()).unwrap_or(u64::MAX);
                            if filter.accept(event.trigger == Trigger::RisingEdge, at) {
                                edges.pulse(index)
                            } else {
                                Ok(())
                            }
                        }
                    };
                })
                .map_err(|e| BoardError::from_rppal(e, Some(n)))?;
            }
            inputs.push(pin);
        }
        let soc = match DeviceInfo::new().map(|d| d.soc()) {
            Ok(SoC::Bcm2712) => Soc::Bcm2712,
            _ => Soc::Bcm283x,
        };
        let mut outputs = Vec::new();
        for setup in &plan.outputs {
            let n = setup.pin;
            let pin = gpio
                .get(n)
                .map_err(|e| BoardError::from_rppal(e, Some(n)))?;
            // Taken in the function it has (no change yet), so the level is
            // latched before output mode drives it: no click at start.
            let mode = pin.mode();
            let mut driven = Driven {
                pin: pin.into_io(mode),
                drive: Drive::Level(setup.initial_high),
                hardware: match setup.pwm {
                    PwmSetup::Hardware { .. } => mux::hardware_pwm(n, soc),
                    _ => None,
                },
                channel: None,
            };
            driven.pin.set_reset_on_drop(false);
            for step in mux::take(setup.initial_high) {
                driven.carry_out(step)?;
            }
            outputs.push(driven);
        }
        Ok(RppalBoard { inputs, outputs })
    }

    fn output(&mut self, output: usize) -> Result<&mut Driven, BoardError> {
        self.outputs
            .get_mut(output)
            .ok_or_else(|| BoardError::Other(format!("no output {output}")))
    }
}

impl Driven {
    fn request(&mut self, request: Request) -> Result<(), BoardError> {
        let (steps, after) = mux::plan(self.drive, self.hardware, request);
        let starting_hardware = after == Drive::Hardware && self.drive != Drive::Hardware;
        for step in steps {
            if let Err(e) = self.carry_out(step) {
                if !starting_hardware {
                    return Err(e);
                }
                // Needs the pwm overlay in config.txt; without it, fall
                // back to software PWM rather than refuse. The channel may
                // have been opened and even enabled before the failing
                // step: disable and close it, or it would keep running.
                tracing::warn!(pin = self.pin.pin(), error = %e, "hardware PWM unavailable (dtoverlay=pwm-2chan?); using software PWM");
                for step in mux::abandon_hardware() {
                    if let Err(e) = self.carry_out(step) {
                        tracing::warn!(pin = self.pin.pin(), error = %e, ?step, "while giving up hardware PWM");
                    }
                }
                self.hardware = None;
                self.drive = Drive::Level(false);
                return self.request(request);
            }
        }
        self.drive = after;
        Ok(())
    }

    fn carry_out(&mut self, step: Step) -> Result<(), BoardError> {
        let n = self.pin.pin();
        let channel_error = |e: rppal::pwm::Error| BoardError::Other(format!("GPIO{n} PWM: {e}"));
        match step {
            Step::Latch(true) => self.pin.set_high(),
            Step::Latch(false) => self.pin.set_low(),
            Step::SetFunction(f) => self.pin.set_mode(mode(f)),
            Step::ConfigureChannel { hz, duty } => match (&self.channel, self.hardware) {
                (Some(pwm), _) => pwm.set_frequency(hz, duty).map_err(channel_error)?,
                (None, Some(hw)) => {
                    let pwm =
                        Pwm::with_frequency(channel(hw.channel), hz, duty, Polarity::Normal, false)
                            .map_err(channel_error)?;
                    self.channel = Some(pwm);
                }
                (None, None) => {
                    return Err(BoardError::Other(format!("GPIO{n} has no PWM channel")));
                }
            },
            Step::EnableChannel => {
                if let Some(pwm) = &self.channel {
                    pwm.enable().map_err(channel_error)?;
                }
            }
            Step::DisableChannel => {
                if let Some(pwm) = &self.channel {
                    pwm.disable().map_err(channel_error)?;
                }
            }
            // Dropping rppal's Pwm also disables and unexports it.
            Step::ReleaseChannel => self.channel = None,
            Step::SoftwarePwm { hz, duty } => self
                .pin
                .set_pwm_frequency(hz, duty)
                .map_err(|e| BoardError::from_rppal(e, Some(n)))?,
            Step::StopSoftwarePwm => self
                .pin
                .clear_pwm()
                .map_err(|e| BoardError::from_rppal(e, Some(n)))?,
        }
        Ok(())
    }
}

fn mode(f: Function) -> Mode {
    match f {
        Function::Output => Mode::Output,
        Function::Alt0 => Mode::Alt0,
        Function::Alt3 => Mode::Alt3,
        Function::Alt5 => Mode::Alt5,
    }
}

fn channel(n: u8) -> Channel {
    match n {
        0 => Channel::Pwm0,
        1 => Channel::Pwm1,
        2 => Channel::Pwm2,
        _ => Channel::Pwm3,
    }
}

impl Board for RppalBoard {
    fn read_input(&self, input: usize) -> Result<bool, BoardError> {
        let pin = self
            .inputs
            .get(input)
            .ok_or_else(|| BoardError::Other(format!("no input {input}")))?;
        Ok(pin.read() == Level::High)
    }

    fn write_output(&mut self, output: usize, high: bool) -> Result<(), BoardError> {
        self.output(output)?.request(Request::Level(high))
    }

    fn pwm(&mut self, output: usize, duty: f64, hz: f64) -> Result<(), BoardError> {
        self.output(output)?.request(Request::Pwm { duty, hz })
    }

    fn name(&self) -> &'static str {
        "rppal"
    }

    fn describe(&self) -> String {
        "rppal, on the Raspberry Pi's GPIO registers".into()
    }
}
