//! The pin-mux sequence of a PWM-capable output, as pure steps both
//! backends carry out (rppal on the registers, sim into a log tests read).
//!
//! A hardware PWM channel only reaches its pin while the pin is in the
//! channel's ALT function (`dtoverlay=pwm`/`pwm-2chan` sets it at boot);
//! in plain output mode the pin shows its output latch and the channel is
//! disconnected. So: on/off is output mode, hardware PWM is the ALT
//! function, and each change is ordered so the pin never glitches:
//!
//! - to PWM: configure and enable the channel, then switch the pin to ALT;
//! - PWM again: only reconfigure the running channel (never disable it);
//! - to a level: write the latch (invisible in ALT), switch to output (the
//!   pin takes the new level at once), then disable the channel.
//!
//! Software PWM (rppal's thread) runs in output mode. This module knows no
//! rppal types; `rppal.rs` maps [`Function`] to `rppal::gpio::Mode`.

pub(crate) use crate::header::{Function, HardwarePwm, Soc, hardware_pwm};

/// What drives the pin now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Drive {
    /// Output mode at this level.
    Level(bool),
    /// The hardware channel, the pin in its ALT function.
    Hardware,
    /// rppal's software PWM thread, the pin in output mode.
    Software,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Step {
    /// Write the output latch: the pin's level in output mode, kept (and
    /// not shown) while in an ALT function.
    Latch(bool),
    SetFunction(Function),
    /// Set the channel's frequency and duty (opening it first if needed).
    ConfigureChannel {
        hz: f64,
        duty: f64,
    },
    EnableChannel,
    DisableChannel,
    /// Close the channel: it is not opened again for this pin.
    ReleaseChannel,
    SoftwarePwm {
        hz: f64,
        duty: f64,
    },
    StopSoftwarePwm,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Request {
    Level(bool),
    Pwm { duty: f64, hz: f64 },
}

/// Taking the pin at start: whatever function it had (the PWM overlay
/// leaves 12/13/18/19 in ALT), the latch first, then output mode.
pub(crate) fn take(initial: bool) -> Vec<Step> {
    vec![Step::Latch(initial), Step::SetFunction(Function::Output)]
}

/// Giving up a hardware channel that failed part way through starting
/// (e.g. enabled, but the pin refused its ALT function): the pin back in
/// output mode, the channel disabled and closed, so no half-started
/// channel keeps running beside the software PWM that replaces it. Each
/// step is tried even if one before it failed.
pub(crate) fn abandon_hardware() -> Vec<Step> {
    vec![
        Step::SetFunction(Function::Output),
        Step::DisableChannel,
        Step::ReleaseChannel,
    ]
}

/// The steps from `now` to `request`, and what drives the pin after them.
/// `hardware` is `None` for a pin without a channel, or whose channel
/// turned out unavailable (software PWM is then used).
pub(crate) fn plan(
    now: Drive,
    hardware: Option<HardwarePwm>,
    request: Request,
) -> (Vec<Step>, Drive) {
    use Step::*;
    match (request, now, hardware) {
        (Request::Level(high), Drive::Level(_), _) => (vec![Latch(high)], Drive::Level(high)),
        (Request::Level(high), Drive::Software, _) => {
            (vec![StopSoftwarePwm, Latch(high)], Drive::Level(high))
        }
        (Request::Level(high), Drive::Hardware, _) => (
            vec![Latch(high), SetFunction(Function::Output), DisableChannel],
            Drive::Level(high),
        ),
        (Request::Pwm { duty, hz }, Drive::Hardware, Some(_)) => {
            (vec![ConfigureChannel { hz, duty }], Drive::Hardware)
        }
        (Request::Pwm { duty, hz }, now, Some(hw)) => {
            let mut steps = if now == Drive::Software {
                vec![StopSoftwarePwm]
            } else {
                Vec::new()
            };
            steps.extend([
                ConfigureChannel { hz, duty },
                EnableChannel,
                SetFunction(hw.function),
            ]);
            (steps, Drive::Hardware)
        }
        (Request::Pwm { duty, hz }, Drive::Hardware, None) => (
            vec![
                SetFunction(Function::Output),
                DisableChannel,
                SoftwarePwm { hz, duty },
            ],
            Drive::Software,
        ),
        (Request::Pwm { duty, hz }, _, None) => (vec![SoftwarePwm { hz, duty }], Drive::Software),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Step::*;

    const PIN18: Option<HardwarePwm> = Some(HardwarePwm {
        channel: 0,
        function: Function::Alt5,
    });

    fn pwm(duty: f64, hz: f64) -> Request {
        Request::Pwm { duty, hz }
    }

    #[test]
    fn taking_a_pin_writes_the_level_before_leaving_its_boot_function() {
        assert_eq!(take(true), vec![Latch(true), SetFunction(Function::Output)]);
    }

    #[test]
    fn hardware_pwm_runs_the_channel_before_handing_it_the_pin() {
        let (steps, after) = plan(Drive::Level(false), PIN18, pwm(0.25, 1000.0));
        assert_eq!(
            steps,
            vec![
                ConfigureChannel {
                    hz: 1000.0,
                    duty: 0.25
                },
                EnableChannel,
                SetFunction(Function::Alt5),
            ]
        );
        assert_eq!(after, Drive::Hardware);
    }

    #[test]
    fn a_channel_that_failed_to_start_is_disabled_and_closed_before_software_pwm() {
        let steps = abandon_hardware();
        let disable = steps.iter().position(|s| *s == DisableChannel);
        let release = steps.iter().position(|s| *s == ReleaseChannel);
        assert!(disable.is_some() && disable < release, "{steps:?}");
        assert_eq!(
            steps[0],
            SetFunction(Function::Output),
            "the pin leaves ALT first"
        );
        // Then, without the channel, the same request runs in software.
        let (steps, after) = plan(Drive::Level(false), None, pwm(0.25, 1000.0));
        assert_eq!(
            steps,
            vec![SoftwarePwm {
                hz: 1000.0,
                duty: 0.25
            }]
        );
        assert_eq!(after, Drive::Software);
    }

    #[test]
    fn a_second_pwm_command_only_reconfigures_the_running_channel() {
        let (steps, after) = plan(Drive::Hardware, PIN18, pwm(0.75, 2000.0));
        assert_eq!(
            steps,
            vec![ConfigureChannel {
                hz: 2000.0,
                duty: 0.75
            }]
        );
        assert!(!steps.contains(&DisableChannel), "PWM stays on");
        assert_eq!(after, Drive::Hardware);
    }

    #[test]
    fn on_or_off_after_pwm_latches_the_level_then_takes_the_pin_back() {
        let (steps, after) = plan(Drive::Hardware, PIN18, Request::Level(true));
        assert_eq!(
            steps,
            vec![Latch(true), SetFunction(Function::Output), DisableChannel]
        );
        assert_eq!(after, Drive::Level(true));
        let (steps, _) = plan(after, PIN18, Request::Level(false));
        assert_eq!(
            steps,
            vec![Latch(false)],
            "plain on/off stays in output mode"
        );
    }

    #[test]
    fn software_pwm_stays_in_output_mode() {
        let (steps, after) = plan(Drive::Level(false), None, pwm(0.5, 50.0));
        assert_eq!(
            steps,
            vec![SoftwarePwm {
                hz: 50.0,
                duty: 0.5
            }]
        );
        assert_eq!(after, Drive::Software);
        let (steps, _) = plan(after, None, Request::Level(true));
        assert_eq!(steps, vec![StopSoftwarePwm, Latch(true)]);
        // A channel that failed mid-way hands over to software PWM.
        let (steps, after) = plan(Drive::Hardware, None, pwm(0.5, 50.0));
        assert_eq!(
            steps,
            vec![
                SetFunction(Function::Output),
                DisableChannel,
                SoftwarePwm {
                    hz: 50.0,
                    duty: 0.5
                }
            ]
        );
        assert_eq!(after, Drive::Software);
    }

    #[test]
    fn pwm_pins_and_functions_differ_between_soc_families() {
        let f = |pin, soc| hardware_pwm(pin, soc).map(|h| (h.channel, h.function));
        assert_eq!(f(12, Soc::Bcm283x), Some((0, Function::Alt0)));
        assert_eq!(f(13, Soc::Bcm283x), Some((1, Function::Alt0)));
        assert_eq!(f(18, Soc::Bcm283x), Some((0, Function::Alt5)));
        assert_eq!(f(19, Soc::Bcm283x), Some((1, Function::Alt5)));
        assert_eq!(f(18, Soc::Bcm2712), Some((2, Function::Alt3)));
        assert_eq!(f(19, Soc::Bcm2712), Some((3, Function::Alt3)));
        assert_eq!(f(17, Soc::Bcm283x), None);
    }
}
