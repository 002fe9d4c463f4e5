//! GPIO failures in words that say what to do.

/// Why the pins could not be opened or driven; each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoardError {
    /// rppal could not identify a Raspberry Pi model.
    #[error(
        "this machine is not a Raspberry Pi (its model could not be identified): on a laptop, \
         in tests or in the demo use the simulated board: [board] kind = \"sim\" (or --board sim)"
    )]
    NotAPi,
    /// The GPIO device file may not be opened by this user.
    #[error(
        "permission denied opening {path}: add the user to the gpio group \
         (`sudo usermod -aG gpio $USER`, then log in again); the pinpost service gets it \
         from SupplementaryGroups=gpio"
    )]
    PermissionDenied {
        /// The device file, e.g. `/dev/gpiomem`.
        path: String,
    },
    /// Another program or a kernel driver holds the pin.
    #[error(
        "GPIO{pin} is already in use, by another program or a kernel driver (1-Wire, I2C, SPI \
         or UART overlays claim pins): free it or choose another pin"
    )]
    PinInUse {
        /// BCM number.
        pin: u8,
    },
    /// The pin number does not exist on this model.
    #[error("GPIO{pin} does not exist on this Raspberry Pi model: check the pin number (BCM)")]
    NoSuchPin {
        /// BCM number.
        pin: u8,
    },
    /// rppal on a kernel without `/dev/gpiomem` that refuses `/dev/mem`.
    #[error(
        "this kernel has no /dev/gpiomem (it is not the Raspberry Pi OS kernel) and refuses \
         /dev/mem for the GPIO registers (it allows that only when booted with iomem=relaxed, \
         which pinpost never asks for): use the kernel's GPIO character device instead: \
         [board] kind = \"cdev\", or \"auto\", which chooses it here (--board cdev for the tools)"
    )]
    NoGpiomem,
    /// No GPIO at all: neither gpiomem nor a GPIO character device.
    #[error(
        "no GPIO here: neither /dev/gpiomem nor any /dev/gpiochip* exists, so this is not a \
         Raspberry Pi (or its kernel has no GPIO driver): on a laptop, in tests or in the demo \
         use the simulated board: [board] kind = \"sim\" (or --board sim)"
    )]
    NoGpio,
    /// GPIO chips exist, but none is a Raspberry Pi's and none was named.
    #[error(
        "no Raspberry Pi GPIO chip here (found: {found}): if the pins are on one of these, \
         name it: [board] chip = \"gpiochip0\" (or --chip); on a laptop use the simulated \
         board: [board] kind = \"sim\""
    )]
    NoPiChip {
        /// Each chip as `gpiochip0 "label" (N lines)`.
        found: String,
    },
    /// `board.chip` names no chip.
    #[error(
        "no GPIO chip {chip:?} (found: {found}): name one of these in [board] chip (`gpiodetect` lists them)"
    )]
    NoSuchChip {
        /// What the config asked for.
        chip: String,
        /// Each chip as `gpiochip0 "label" (N lines)`.
        found: String,
    },
    /// The character device may not be opened by this user.
    #[error(
        "permission denied opening {path}: add the user to the gpio group (`sudo usermod -aG \
         gpio $USER`, then log in again; the pinpost service has it). Where /dev/gpiochip* \
         belongs to root alone (Debian, Fedora), the pinpost package's udev rule \
         /usr/lib/udev/rules.d/60-pinpost.rules gives it to the gpio group; without the \
         package, add that rule: SUBSYSTEM==\"gpio\", KERNEL==\"gpiochip*\", GROUP=\"gpio\", \
         MODE=\"0660\" (then `sudo udevadm trigger`)"
    )]
    ChipPermission {
        /// The device file, e.g. `/dev/gpiochip0`.
        path: String,
    },
    /// Another consumer holds the line.
    #[error(
        "GPIO{pin} is already in use by {holder} (line {line} of {chip}): stop it, or choose \
         another pin (`gpioinfo {chip}` shows who holds each line)"
    )]
    LineHeld {
        /// The config's pin.
        pin: u8,
        /// The line's offset on its chip.
        line: u32,
        /// The chip's name, e.g. `gpiochip0`.
        chip: String,
        /// Who, in words: `"gpioset"`, or a kernel driver.
        holder: String,
    },
    /// The chip has fewer lines than the pin number.
    #[error(
        "GPIO{pin}: {chip} ({label}) has no line {pin}; its lines are 0 to {last}: check the pin number, or [board] chip"
    )]
    NoSuchLine {
        /// BCM number (the line's offset).
        pin: u8,
        /// The chip's name.
        chip: String,
        /// The chip's label.
        label: String,
        /// Its highest line.
        last: u32,
    },
    /// No line has the name the config gives.
    #[error(
        "GPIO{pin}: no line is named {name:?} on {place}: give a name `gpioinfo` shows, or leave line out to use line {pin}"
    )]
    NoSuchLineName {
        /// The config's pin.
        pin: u8,
        /// The name asked for.
        name: String,
        /// Where it was looked for, in words.
        place: String,
    },
    /// Any other failure on one pin.
    #[error("GPIO{pin}: {what}")]
    Pin {
        /// BCM number.
        pin: u8,
        /// What went wrong, in words.
        what: String,
    },
    /// A failure not tied to one pin.
    #[error("GPIO: {0}")]
    Other(String),
    /// An I2C expander that does not answer, or did not take a write.
    #[error("{0}")]
    Expander(String),
}

impl BoardError {
    /// rppal's error when opening the GPIO: on a kernel without gpiomem,
    /// "permission denied on /dev/mem" is the kernel's refusal, not a
    /// missing group.
    pub(crate) fn from_rppal_open(e: ::rppal::gpio::Error, gpiomem_exists: bool) -> BoardError {
        match BoardError::from_rppal(e, None) {
            BoardError::PermissionDenied { path } if path == "/dev/mem" && !gpiomem_exists => {
                BoardError::NoGpiomem
            }
            other => other,
        }
    }

    /// rppal's error for an operation on `pin` (if one) → words.
    pub(crate) fn from_rppal(e: ::rppal::gpio::Error, pin: Option<u8>) -> BoardError {
        use ::rppal::gpio::Error as E;
        match e {
            E::UnknownModel => BoardError::NotAPi,
            E::PermissionDenied(path) => BoardError::PermissionDenied { path },
            E::PinUsed(p) => BoardError::PinInUse { pin: p },
            E::PinNotAvailable(p) => BoardError::NoSuchPin { pin: p },
            E::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
                BoardError::PermissionDenied {
                    path: "/dev/gpiochip0".into(),
                }
            }
            // The character device answers EBUSY for a line another
            // consumer (a driver or program) holds.
            E::Io(io) if io.raw_os_error() == Some(16) => match pin {
                Some(pin) => BoardError::PinInUse { pin },
                None => BoardError::Other(io.to_string()),
            },
            other => match pin {
                Some(pin) => BoardError::Pin {
                    pin,
                    what: other.to_string(),
                },
                None => BoardError::Other(other.to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::rppal::gpio::Error as E;

    #[test]
    fn rppal_errors_become_advice() {
        assert_eq!(
            BoardError::from_rppal(E::UnknownModel, None),
            BoardError::NotAPi
        );
        let e = BoardError::from_rppal(E::PermissionDenied("/dev/gpiomem".into()), Some(4));
        assert!(
            e.to_string().starts_with(
                "permission denied opening /dev/gpiomem: add the user to the gpio group"
            )
        );
        assert_eq!(
            BoardError::from_rppal(E::PinUsed(17), Some(17)),
            BoardError::PinInUse { pin: 17 }
        );
        assert!(
            BoardError::from_rppal(E::PinNotAvailable(30), Some(30))
                .to_string()
                .contains("does not exist on this Raspberry Pi model")
        );
        let busy = std::io::Error::from_raw_os_error(16);
        assert_eq!(
            BoardError::from_rppal(E::Io(busy), Some(5)),
            BoardError::PinInUse { pin: 5 }
        );
        assert!(BoardError::NotAPi.to_string().contains("kind = \"sim\""));
    }

    #[test]
    fn dev_mem_refused_without_gpiomem_is_the_kernel_not_a_group() {
        let refused = || E::PermissionDenied("/dev/mem".into());
        let e = BoardError::from_rppal_open(refused(), false);
        assert_eq!(e, BoardError::NoGpiomem);
        let words = e.to_string();
        assert!(words.contains("no /dev/gpiomem"), "{words}");
        assert!(words.contains("kind = \"cdev\""), "{words}");
        assert!(!words.contains("gpio group"), "{words}");
        // With gpiomem present, /dev/mem was only rppal's second try.
        assert!(matches!(
            BoardError::from_rppal_open(refused(), true),
            BoardError::PermissionDenied { .. }
        ));
    }
}
