//! The real Raspberry Pi through rppal (Pi 1 to Pi 5). Interrupt callbacks
//! run on rppal's own thread and only forward "input i changed" into tokio.
//! Outputs keep their level when pinpost exits (no reset on drop), so a
//! relay stays where `safe_state` put it.

use rppal::gpio::{Gpio, InputPin, Level, OutputPin, Trigger};
use rppal::pwm::{Channel, Polarity, Pwm};

use super::{Board, BoardError, EdgeSender, PinPlan, PwmSetup};
use crate::config::Pull;

pub struct RppalBoard {
    inputs: Vec<InputPin>,
    outputs: Vec<Driven>,
}

/// An output pin, and its hardware PWM channel once one is in use.
struct Driven {
    pin: OutputPin,
    pwm: PwmSetup,
    hardware: Option<Pwm>,
}

impl RppalBoard {
    pub fn open(plan: &PinPlan, edges: EdgeSender) -> Result<RppalBoard, BoardError> {
        let gpio = Gpio::new().map_err(|e| BoardError::from_rppal(e, None))?;
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
                // Debounce happens above, where the level is read again after
                // it settles; the event's own edge may already be stale.
                pin.set_async_interrupt(Trigger::Both, None, move |_| {
                    let _ = edges.send(index);
                })
                .map_err(|e| BoardError::from_rppal(e, Some(n)))?;
            }
            inputs.push(pin);
        }
        let mut outputs = Vec::new();
        for setup in &plan.outputs {
            let n = setup.pin;
            let pin = gpio
                .get(n)
                .map_err(|e| BoardError::from_rppal(e, Some(n)))?;
            // into_output_* writes the level first, then switches the mode.
            let mut pin = if setup.initial_high {
                pin.into_output_high()
            } else {
                pin.into_output_low()
            };
            pin.set_reset_on_drop(false);
            outputs.push(Driven {
                pin,
                pwm: setup.pwm,
                hardware: None,
            });
        }
        Ok(RppalBoard { inputs, outputs })
    }
}

fn channel(n: u8) -> Channel {
    if n == 0 { Channel::Pwm0 } else { Channel::Pwm1 }
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
        let out = self
            .outputs
            .get_mut(output)
            .ok_or_else(|| BoardError::Other(format!("no output {output}")))?;
        if let Some(hw) = out.hardware.take() {
            let _ = hw.disable();
        }
        let _ = out.pin.clear_pwm();
        if high {
            out.pin.set_high();
        } else {
            out.pin.set_low();
        }
        Ok(())
    }

    fn pwm(&mut self, output: usize, duty: f64, hz: f64) -> Result<(), BoardError> {
        let out = self
            .outputs
            .get_mut(output)
            .ok_or_else(|| BoardError::Other(format!("no output {output}")))?;
        let n = out.pin.pin();
        if let PwmSetup::Hardware { channel: c } = out.pwm {
            // Needs the pwm overlay in config.txt; without it, fall back to
            // software PWM rather than refuse.
            match Pwm::with_frequency(channel(c), hz, duty, Polarity::Normal, true) {
                Ok(hw) => {
                    out.hardware = Some(hw);
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(pin = n, error = %e, "hardware PWM unavailable (dtoverlay=pwm-2chan?); using software PWM")
                }
            }
        }
        out.pin
            .set_pwm_frequency(hz, duty)
            .map_err(|e| BoardError::from_rppal(e, Some(n)))
    }

    fn name(&self) -> &'static str {
        "rppal"
    }
}
