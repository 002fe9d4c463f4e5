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
}

impl BoardError {
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
}
