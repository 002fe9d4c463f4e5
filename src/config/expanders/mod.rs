//! `[[expander]]`: I2C GPIO expanders (MCP23017, PCF8574, PCF8574A,
//! PCF8575) whose pins an `[[input]]` or `[[output]]` names as
//! `pin = "<expander>:<pin>"` (`"mcp0:A3"`). What each chip's pins are
//! called, the addresses it can have, and what its pins cannot do: PWM
//! (none of them has it), counting (they are read by polling, so pulses
//! between two reads would be lost) and pull-down resistors (none has one).
//! It knows nothing of I2C itself.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use super::error::ConfigError;
use super::origins::Origins;
use super::raw::{RawConfig, RawInput, RawOutput, RawPin};
use super::values::{check_topic_level, duration, word};
use crate::header::MAX_BCM_PIN;

/// Polled this often without an interrupt line: quicker than a person
/// presses, a few percent of a 100 kHz bus.
const POLL_DEFAULT: Duration = Duration::from_millis(50);
/// With an interrupt line, the poll only finds a missed interrupt or a
/// chip that went away.
const POLL_WITH_INTERRUPT_DEFAULT: Duration = Duration::from_secs(1);
const POLL_MIN: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_secs(10);
/// Eight addresses per chip kind and bus; more expanders than this is a
/// typo, not a Pi.
const MAX_EXPANDERS: usize = 16;

/// The chips pinpost drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpanderChip {
    /// 16 pins in ports A and B, registers, pull-ups, an interrupt line.
    Mcp23017,
    /// 8 quasi-bidirectional pins at 0x20–0x27.
    Pcf8574,
    /// The same chip at 0x38–0x3F.
    Pcf8574a,
    /// 16 quasi-bidirectional pins in ports 0 and 1.
    Pcf8575,
}

const CHIPS: &str = "\"mcp23017\", \"pcf8574\", \"pcf8574a\" or \"pcf8575\"";

impl FromStr for ExpanderChip {
    type Err = String;

    fn from_str(word: &str) -> Result<Self, String> {
        match word.to_ascii_lowercase().as_str() {
            "mcp23017" => Ok(ExpanderChip::Mcp23017),
            "pcf8574" => Ok(ExpanderChip::Pcf8574),
            "pcf8574a" => Ok(ExpanderChip::Pcf8574a),
            "pcf8575" => Ok(ExpanderChip::Pcf8575),
            _ => Err(format!(
                "{word:?} is not an expander pinpost drives; allowed: {CHIPS}"
            )),
        }
    }
}

impl ExpanderChip {
    /// The chip's name as people write it.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpanderChip::Mcp23017 => "MCP23017",
            ExpanderChip::Pcf8574 => "PCF8574",
            ExpanderChip::Pcf8574a => "PCF8574A",
            ExpanderChip::Pcf8575 => "PCF8575",
        }
    }

    /// How many pins it has.
    pub fn pins(self) -> u8 {
        match self {
            ExpanderChip::Mcp23017 | ExpanderChip::Pcf8575 => 16,
            ExpanderChip::Pcf8574 | ExpanderChip::Pcf8574a => 8,
        }
    }

    /// The addresses its three address pins can give it.
    pub fn addresses(self) -> std::ops::RangeInclusive<u8> {
        match self {
            ExpanderChip::Pcf8574a => 0x38..=0x3F,
            _ => 0x20..=0x27,
        }
    }

    /// Pin `bit` as the datasheet names it: `A0`–`B7` on an MCP23017,
    /// `P0`–`P7` on a PCF8574, `P00`–`P17` on a PCF8575.
    pub fn pin_name(self, bit: u8) -> String {
        match self {
            ExpanderChip::Mcp23017 => {
                format!("{}{}", if bit < 8 { 'A' } else { 'B' }, bit % 8)
            }
            ExpanderChip::Pcf8574 | ExpanderChip::Pcf8574a => format!("P{bit}"),
            ExpanderChip::Pcf8575 => format!("P{}{}", bit / 8, bit % 8),
        }
    }

    /// The bit of the pin named `name` (any case; `GPA3` as well as `A3`).
    pub fn parse_pin(self, name: &str) -> Option<u8> {
        let upper = name.trim().to_ascii_uppercase();
        let plain = upper.strip_prefix("GP").unwrap_or(&upper);
        (0..self.pins()).find(|&bit| self.pin_name(bit) == plain)
    }

    fn pin_names(self) -> String {
        format!(
            "{} to {}",
            self.pin_name(0),
            self.pin_name(self.pins().saturating_sub(1))
        )
    }

    /// Whether every pin always has a weak pull-up (quasi-bidirectional).
    pub fn always_pulled_up(self) -> bool {
        !matches!(self, ExpanderChip::Mcp23017)
    }
}

/// An `[[expander]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expander {
    /// What pins name it by: `pin = "<name>:A3"`.
    pub name: String,
    /// Which chip it is.
    pub chip: ExpanderChip,
    /// `/dev/i2c-<bus>`.
    pub bus: u8,
    /// Its I2C address.
    pub address: u8,
    /// The Pi GPIO its INT line is wired to (open drain, low when an input
    /// changed): a change is read at once instead of at the next poll.
    pub interrupt: Option<u8>,
    /// How often its inputs are read (and its presence checked).
    pub poll_interval: Duration,
}

impl Expander {
    /// "mcp0 (MCP23017 at 0x20 on /dev/i2c-1)", for logs and errors.
    pub fn describe(&self) -> String {
        format!(
            "expander {} ({} at {:#04x} on /dev/i2c-{})",
            self.name,
            self.chip.as_str(),
            self.address,
            self.bus
        )
    }
}

/// One pin of an expander: bit `bit` of `[[expander]]` number `expander`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpanderPin {
    /// The `[[expander]]`'s index in the file.
    pub expander: usize,
    /// Pin n of the chip: A0–A7 are 0–7 and B0–B7 8–15 on an MCP23017.
    pub bit: u8,
    /// As people write it: `"mcp0:A3"`.
    pub label: String,
}

/// Where an input or output is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinAt {
    /// A BCM GPIO of the Pi's header.
    Gpio(u8),
    /// A pin of an expander.
    Expander(ExpanderPin),
}

impl PinAt {
    /// The BCM number, for a pin of the Pi's header.
    pub fn gpio(&self) -> Option<u8> {
        match self {
            PinAt::Gpio(p) => Some(*p),
            PinAt::Expander(_) => None,
        }
    }

    /// The expander pin, for one.
    pub fn expander(&self) -> Option<&ExpanderPin> {
        match self {
            PinAt::Gpio(_) => None,
            PinAt::Expander(e) => Some(e),
        }
    }
}

impl std::fmt::Display for PinAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PinAt::Gpio(p) => write!(f, "GPIO{p}"),
            PinAt::Expander(e) => f.write_str(&e.label),
        }
    }
}

/// Every `[[expander]]`, its interrupt GPIO entered in `gpios` (GPIO →
/// its user) so no input or output takes it too.
pub(super) fn build(
    raw: &RawConfig,
    gpios: &mut HashMap<u8, String>,
    o: &Origins<'_>,
) -> Result<Vec<Expander>, ConfigError> {
    if raw.expander.len() > MAX_EXPANDERS {
        return Err(o.invalid(
            "expander",
            format!(
                "{} expanders; at most {MAX_EXPANDERS} are allowed",
                raw.expander.len()
            ),
        ));
    }
    let mut names: HashMap<String, String> = HashMap::new();
    let mut places: HashMap<(u8, u8), String> = HashMap::new();
    let mut list = Vec::new();
    for (i, r) in raw.expander.iter().enumerate() {
        let at = |field: &str| format!("expander[{i}].{field}");
        let Some(name) = r.name.as_deref() else {
            return Err(o.invalid(
                &at("name"),
                "missing; pins name their expander by it (name = \"mcp0\", then pin = \"mcp0:A3\")",
            ));
        };
        check_topic_level(name, &at("name"), o)?;
        if name.contains(':') {
            return Err(o.invalid(
                &at("name"),
                format!("{name:?} contains ':', which separates the expander from its pin in pin = \"{name}:…\""),
            ));
        }
        if let Some(first) = names.insert(name.to_string(), at("name")) {
            return Err(o.invalid(
                &at("name"),
                format!("{name:?} is already {first}; each expander needs its own name"),
            ));
        }
        let Some(chip) = word::<ExpanderChip>(r.chip.as_deref(), &at("chip"), o)? else {
            return Err(o.invalid(
                &at("chip"),
                format!("missing; say which chip it is: {CHIPS}"),
            ));
        };
        let bus = match r.bus {
            None => 1,
            Some(b) => u8::try_from(b).ok().filter(|b| *b <= 31).ok_or_else(|| {
                o.invalid(
                    &at("bus"),
                    format!("{b} is not an I2C bus; allowed: 0 to 31 (/dev/i2c-1 is bus = 1)"),
                )
            })?,
        };
        let range = chip.addresses();
        let address = match r.address {
            None => *range.start(),
            Some(a) => u8::try_from(a)
                .ok()
                .filter(|a| range.contains(a))
                .ok_or_else(|| {
                    o.invalid(
                        &at("address"),
                        format!(
                            "{a:#04x} is not an address a {} can have; allowed: {:#04x} to {:#04x} \
                             (set by its A0–A2 pins; `pinpost sensors --scan` lists what answers)",
                            chip.as_str(),
                            range.start(),
                            range.end()
                        ),
                    )
                })?,
        };
        if let Some(first) = places.insert((bus, address), at("address")) {
            return Err(o.invalid(
                &at("address"),
                format!("{address:#04x} on bus {bus} is already {first}; two chips cannot answer at one address"),
            ));
        }
        let interrupt = match r.interrupt {
            None => None,
            Some(p) => {
                let pin = u8::try_from(p)
                    .ok()
                    .filter(|p| i64::from(*p) <= MAX_BCM_PIN)
                    .ok_or_else(|| {
                        o.invalid(
                            &at("interrupt"),
                            format!("{p} is not a GPIO pin; give the BCM number its INT line is wired to (0 to {MAX_BCM_PIN})"),
                        )
                    })?;
                let user = format!("expander {name:?}'s interrupt");
                if let Some(first) = gpios.insert(pin, user) {
                    return Err(o.invalid(
                        &at("interrupt"),
                        format!("GPIO{pin} is already used by {first}; one pin, one use"),
                    ));
                }
                Some(pin)
            }
        };
        let poll_interval = duration(&r.poll_interval, &at("poll_interval"), o)?.unwrap_or(
            if interrupt.is_some() {
                POLL_WITH_INTERRUPT_DEFAULT
            } else {
                POLL_DEFAULT
            },
        );
        if !(POLL_MIN..=POLL_MAX).contains(&poll_interval) {
            return Err(o.invalid(
                &at("poll_interval"),
                "out of range; allowed: \"10ms\" to \"10s\"",
            ));
        }
        list.push(Expander {
            name: name.to_string(),
            chip,
            bus,
            address,
            interrupt,
            poll_interval,
        });
    }
    Ok(list)
}

/// `"mcp0:A3"`: a pin of a configured expander, not already used
/// (`seen`: (expander, bit) → its user).
pub(super) fn pin(
    text: &str,
    key: &str,
    user: &str,
    expanders: &[Expander],
    seen: &mut HashMap<(usize, u8), String>,
    o: &Origins<'_>,
) -> Result<PinAt, ConfigError> {
    let Some((name, pin)) = text.split_once(':') else {
        return Err(o.invalid(
            key,
            format!("{text:?} is not a pin; give a BCM GPIO number (pin = 17) or an expander's pin (pin = \"mcp0:A3\")"),
        ));
    };
    let Some(index) = expanders.iter().position(|e| e.name == name) else {
        let known: Vec<String> = expanders.iter().map(|e| format!("{:?}", e.name)).collect();
        return Err(o.invalid(
            key,
            if known.is_empty() {
                format!("{text:?} names expander {name:?}, but no [[expander]] is configured; add one with name = {name:?}")
            } else {
                format!("{text:?} names expander {name:?}, which is not configured; the expanders are {}", known.join(", "))
            },
        ));
    };
    let chip = expanders[index].chip;
    let Some(bit) = chip.parse_pin(pin) else {
        return Err(o.invalid(
            key,
            format!(
                "{pin:?} is not a pin of {name:?} ({}); its pins are {}",
                chip.as_str(),
                chip.pin_names()
            ),
        ));
    };
    let label = format!("{name}:{}", chip.pin_name(bit));
    if let Some(first) = seen.insert((index, bit), user.to_string()) {
        return Err(o.invalid(
            key,
            format!("{label} is already used by {first:?}; one pin, one use"),
        ));
    }
    Ok(PinAt::Expander(ExpanderPin {
        expander: index,
        bit,
        label,
    }))
}

/// What an input on an expander cannot be.
pub(super) fn check_input(
    r: &RawInput,
    pull_down: bool,
    chip: ExpanderChip,
    at: &dyn Fn(&str) -> String,
    o: &Origins<'_>,
) -> Result<(), ConfigError> {
    if r.count == Some(true) {
        return Err(o.invalid(
            &at("count"),
            "an expander's pins are read by polling, so pulses between two reads would be lost; \
             wire the meter to a GPIO of the Pi",
        ));
    }
    if r.line.is_some() {
        return Err(o.invalid(
            &at("line"),
            "a line is a pin of the Pi's GPIO chip; an expander's pin is named by pin = \"<expander>:<pin>\"",
        ));
    }
    if r.poll_interval.is_some() {
        return Err(o.invalid(
            &at("poll_interval"),
            "an expander's inputs are read on the expander's own poll_interval; set it there",
        ));
    }
    if pull_down {
        return Err(o.invalid(
            &at("pull"),
            format!(
                "a {} has no pull-down resistors; use pull = \"up\" and wire the input to ground, \
                 or fit a resistor",
                chip.as_str()
            ),
        ));
    }
    Ok(())
}

/// What an output on an expander cannot be.
pub(super) fn check_output(
    r: &RawOutput,
    chip: ExpanderChip,
    at: &dyn Fn(&str) -> String,
    o: &Origins<'_>,
) -> Result<(), ConfigError> {
    if r.pwm == Some(true) {
        return Err(o.invalid(
            &at("pwm"),
            format!(
                "a {} has no PWM; use a GPIO of the Pi for a PWM output",
                chip.as_str()
            ),
        ));
    }
    if r.line.is_some() {
        return Err(o.invalid(
            &at("line"),
            "a line is a pin of the Pi's GPIO chip; an expander's pin is named by pin = \"<expander>:<pin>\"",
        ));
    }
    Ok(())
}

/// A raw pin in words, for errors about `board.wires`.
pub(super) fn raw_words(p: &RawPin) -> String {
    match p {
        RawPin::Number(n) => n.to_string(),
        RawPin::Named(s) => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests;
