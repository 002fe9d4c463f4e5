//! Which GPIO character device holds the pins, and the kernel's errors on
//! it in words. On a Raspberry Pi the 40-pin header is one chip whose line
//! offsets are the BCM numbers; it is found by its driver's label, since
//! its number (`gpiochip0`, `gpiochip4`) changes between kernels.

use std::path::PathBuf;

use super::super::BoardError;

/// The labels the Raspberry Pi's header chip has under Debian's, Fedora's
/// and the Raspberry Pi's kernels (BCM2835/6/7, BCM2711, the Pi 5's RP1).
const PI_LABELS: [&str; 4] = [
    "pinctrl-bcm2835",
    "pinctrl-bcm2711",
    "pinctrl-rp1",
    "pinctrl-bcm2712",
];

/// One GPIO chip, as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChipFound {
    pub(crate) path: PathBuf,
    /// `gpiochip0`.
    pub(crate) name: String,
    /// The driver's label, e.g. `pinctrl-bcm2835`.
    pub(crate) label: String,
    pub(crate) lines: u32,
}

impl std::fmt::Display for ChipFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} ({} lines)", self.name, self.label, self.lines)
    }
}

/// The chip `wanted` names (`gpiochip0`, `/dev/gpiochip0` or a label), or
/// the Raspberry Pi's own when none is named.
pub(crate) fn find(wanted: Option<&str>) -> Result<ChipFound, BoardError> {
    let paths = gpiocdev::chip::chips().map_err(|e| BoardError::Other(e.to_string()))?;
    let mut chips = Vec::new();
    for path in paths {
        chips.push(describe(path)?);
    }
    pick(wanted, chips)
}

fn describe(path: PathBuf) -> Result<ChipFound, BoardError> {
    let chip = gpiocdev::Chip::from_path(&path).map_err(|e| open_error(&e, &path))?;
    let info = chip.info().map_err(|e| open_error(&e, &path))?;
    Ok(ChipFound {
        path,
        name: info.name,
        label: info.label,
        lines: info.num_lines,
    })
}

/// The choice among the chips there are, without touching any.
pub(crate) fn pick(wanted: Option<&str>, chips: Vec<ChipFound>) -> Result<ChipFound, BoardError> {
    let found = || {
        chips
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        Some(wanted) => {
            let plain = wanted.strip_prefix("/dev/").unwrap_or(wanted);
            let hit = chips
                .iter()
                .position(|c| c.name == plain)
                .or_else(|| chips.iter().position(|c| c.label == wanted));
            match hit {
                Some(i) => Ok(chips[i].clone()),
                None => Err(BoardError::NoSuchChip {
                    chip: wanted.to_string(),
                    found: if chips.is_empty() {
                        "none".into()
                    } else {
                        found()
                    },
                }),
            }
        }
        None if chips.is_empty() => Err(BoardError::NoGpio),
        None => match chips
            .iter()
            .position(|c| PI_LABELS.contains(&c.label.as_str()))
        {
            Some(i) => Ok(chips[i].clone()),
            None => Err(BoardError::NoPiChip { found: found() }),
        },
    }
}

/// The kernel's errno behind a gpiocdev error, if it gave one.
pub(crate) fn errno(e: &gpiocdev::Error) -> Option<i32> {
    match e {
        gpiocdev::Error::Os(n) => Some(n.0),
        gpiocdev::Error::Uapi(_, gpiocdev_uapi::Error::Os(n)) => Some(n.0),
        _ => None,
    }
}

const EPERM: i32 = 1;
const EBUSY: i32 = 16;
const EACCES: i32 = 13;

fn open_error(e: &gpiocdev::Error, path: &std::path::Path) -> BoardError {
    match errno(e) {
        Some(EACCES | EPERM) => BoardError::ChipPermission {
            path: path.display().to_string(),
        },
        _ => BoardError::Other(format!("cannot open {}: {e}", path.display())),
    }
}

/// A failed request for line `offset` of `chip` (the config's `pin`), in
/// words: who holds it when the kernel says it is busy.
pub(crate) fn request_error(
    e: &gpiocdev::Error,
    pin: u8,
    offset: u32,
    chip: &ChipFound,
) -> BoardError {
    match errno(e) {
        Some(EBUSY) => BoardError::LineHeld {
            pin,
            line: offset,
            chip: chip.name.clone(),
            holder: holder(chip, offset),
        },
        Some(EACCES | EPERM) => BoardError::ChipPermission {
            path: chip.path.display().to_string(),
        },
        _ => BoardError::Pin {
            pin,
            what: format!("the kernel refused line {offset} of {}: {e}", chip.name),
        },
    }
}

/// Who holds a line, as `gpioinfo` would name it.
fn holder(chip: &ChipFound, offset: u32) -> String {
    let consumer = gpiocdev::Chip::from_path(&chip.path)
        .and_then(|c| c.line_info(offset))
        .map(|info| info.consumer)
        .unwrap_or_default();
    holder_words(&consumer)
}

pub(crate) fn holder_words(consumer: &str) -> String {
    match consumer {
        "" => "a kernel driver or a program that gave no name".into(),
        "pinpost" => "another pinpost (the service, or a `pinpost gpio` still running)".into(),
        name => format!("{name:?}"),
    }
}

/// The line a config's pin is on: the line named `name` (on `chip` when
/// one was named in the config, on any chip otherwise), or line `pin` of
/// `chip`.
pub(crate) fn locate(
    chip: &ChipFound,
    chip_named: bool,
    pin: u8,
    name: Option<&str>,
) -> Result<(ChipFound, u32), BoardError> {
    let Some(name) = name else {
        has_line(chip, pin)?;
        return Ok((chip.clone(), u32::from(pin)));
    };
    let found = if chip_named {
        gpiocdev::Chip::from_path(&chip.path)
            .ok()
            .and_then(|c| c.find_line_info(name))
            .map(|info| (chip.clone(), info.offset))
    } else {
        match gpiocdev::find_named_line(name) {
            Some(line) => Some((describe(line.chip)?, line.info.offset)),
            None => None,
        }
    };
    found.ok_or_else(|| BoardError::NoSuchLineName {
        pin,
        name: name.to_string(),
        place: if chip_named {
            format!("{} ({})", chip.name, chip.label)
        } else {
            "any GPIO chip".into()
        },
    })
}

/// Line `pin` exists on `chip`.
pub(crate) fn has_line(chip: &ChipFound, pin: u8) -> Result<(), BoardError> {
    if u32::from(pin) < chip.lines {
        return Ok(());
    }
    Err(BoardError::NoSuchLine {
        pin,
        chip: chip.name.clone(),
        label: chip.label.clone(),
        last: chip.lines.saturating_sub(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chip(n: u32, label: &str, lines: u32) -> ChipFound {
        ChipFound {
            path: PathBuf::from(format!("/dev/gpiochip{n}")),
            name: format!("gpiochip{n}"),
            label: label.into(),
            lines,
        }
    }

    #[test]
    fn the_pi_chip_is_found_by_label_whatever_its_number() {
        let chips = vec![
            chip(0, "gpio-brcmstb@107d508500", 32),
            chip(4, "pinctrl-rp1", 54),
        ];
        assert_eq!(pick(None, chips).unwrap().name, "gpiochip4");
        let debian = vec![
            chip(0, "pinctrl-bcm2835", 54),
            chip(1, "raspberrypi-exp-gpio", 8),
        ];
        assert_eq!(pick(None, debian).unwrap().name, "gpiochip0");
    }

    #[test]
    fn a_named_chip_is_found_by_name_device_or_label() {
        let chips = || vec![chip(0, "9030000.pl061", 8), chip(1, "pinctrl-bcm2835", 54)];
        assert_eq!(
            pick(Some("gpiochip0"), chips()).unwrap().label,
            "9030000.pl061"
        );
        assert_eq!(pick(Some("/dev/gpiochip1"), chips()).unwrap().lines, 54);
        assert_eq!(
            pick(Some("9030000.pl061"), chips()).unwrap().name,
            "gpiochip0"
        );
        let e = pick(Some("gpiochip7"), chips()).unwrap_err().to_string();
        assert_eq!(
            e,
            "no GPIO chip \"gpiochip7\" (found: gpiochip0 \"9030000.pl061\" (8 lines), gpiochip1 \
             \"pinctrl-bcm2835\" (54 lines)): name one of these in [board] chip (`gpiodetect` \
             lists them)"
        );
    }

    #[test]
    fn a_laptop_is_told_to_name_a_chip_or_use_the_sim_board() {
        let e = pick(None, vec![chip(0, "INT34C5:00", 360)])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "no Raspberry Pi GPIO chip here (found: gpiochip0 \"INT34C5:00\" (360 lines))"
            ),
            "{e}"
        );
        assert!(e.contains("kind = \"sim\""), "{e}");
        assert_eq!(pick(None, vec![]).unwrap_err(), BoardError::NoGpio);
    }

    #[test]
    fn a_line_past_the_chip_names_the_range() {
        let c = chip(0, "9030000.pl061", 8);
        assert!(has_line(&c, 7).is_ok());
        assert_eq!(
            has_line(&c, 17).unwrap_err().to_string(),
            "GPIO17: gpiochip0 (9030000.pl061) has no line 17; its lines are 0 to 7: check the \
             pin number, or [board] chip"
        );
    }

    #[test]
    fn busy_and_refused_requests_name_the_cause() {
        let c = chip(0, "pinctrl-bcm2835", 54);
        let busy = gpiocdev::Error::Uapi(
            gpiocdev::UapiCall::GetLine,
            gpiocdev_uapi::Error::Os(gpiocdev_uapi::Errno(EBUSY)),
        );
        assert!(matches!(
            request_error(&busy, 17, 17, &c),
            BoardError::LineHeld { pin: 17, .. }
        ));
        let refused = gpiocdev::Error::Os(gpiocdev_uapi::Errno(EACCES));
        assert_eq!(
            request_error(&refused, 17, 17, &c),
            BoardError::ChipPermission {
                path: "/dev/gpiochip0".into()
            }
        );
        assert_eq!(holder_words("gpioset"), "\"gpioset\"");
        assert!(holder_words("").contains("kernel driver"));
    }
}
