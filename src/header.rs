//! What the Raspberry Pi's 40-pin header offers, as facts from the SoC
//! manuals: which BCM numbers are GPIO pins and which pins carry a hardware
//! PWM channel in which ALT function. The config checks pins against it,
//! pin commands bound PWM by it, and the board drives pins with it.
//!
//! It knows no config, no pins being driven, no MQTT: only numbers, so every
//! module may use it without depending on another.

/// BCM GPIO numbers on the 40-pin header of every Pi from the B+ to the Pi 5.
pub(crate) const MAX_BCM_PIN: i64 = 27;

/// A pin's function select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Function {
    Output,
    Alt0,
    Alt3,
    Alt5,
}

/// The SoC family, for which ALT function and channel a pin's PWM is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Soc {
    /// BCM2835/6/7 and BCM2711: Pi 1 to 4, Zero.
    Bcm283x,
    /// BCM2712 with RP1: Pi 5.
    Bcm2712,
}

/// A hardware PWM channel and the function that connects it to its pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HardwarePwm {
    pub(crate) channel: u8,
    pub(crate) function: Function,
}

/// From the BCM2835 peripherals manual (GPIO12/13 ALT0, GPIO18/19 ALT5 on
/// one two-channel PWM) and the RP1 datasheet (PWM0 channels 0-3 on
/// GPIO12/13 as a0 and GPIO18/19 as a3).
pub(crate) fn hardware_pwm(pin: u8, soc: Soc) -> Option<HardwarePwm> {
    let (channel, function) = match (soc, pin) {
        (_, 12) => (0, Function::Alt0),
        (_, 13) => (1, Function::Alt0),
        (Soc::Bcm283x, 18) => (0, Function::Alt5),
        (Soc::Bcm283x, 19) => (1, Function::Alt5),
        (Soc::Bcm2712, 18) => (2, Function::Alt3),
        (Soc::Bcm2712, 19) => (3, Function::Alt3),
        _ => return None,
    };
    Some(HardwarePwm { channel, function })
}

/// The hardware PWM channel of a pin in the numbering of a Pi 1 to 4
/// (GPIO12/18 are PWM0, GPIO13/19 PWM1): two pins on one channel cannot
/// run different PWM. The rppal backend renumbers them for a Pi 5
/// ([`hardware_pwm`] with [`Soc::Bcm2712`]).
pub(crate) fn pwm_channel(pin: u8) -> Option<u8> {
    hardware_pwm(pin, Soc::Bcm283x).map(|h| h.channel)
}
