//! The sim board's own keys: `[board] wires` (an output driving an input,
//! between two GPIOs or between two expander pins) and `[board] pulses`
//! (simulated meters). Refused on every other board, where they would
//! silently do nothing.

use super::error::ConfigError;
use super::expanders::{Expander, ExpanderPin, PinAt, raw_words};
use super::model::{BoardKind, Input, Output, SimPulses};
use super::origins::Origins;
use super::raw::{RawConfig, RawPin};

type Wires = (Vec<(u8, u8)>, Vec<(ExpanderPin, ExpanderPin)>);

/// `board.wires`: `[output pin, input pin]` pairs, GPIO to GPIO (or to
/// an expander's `interrupt` GPIO), or expander pin to expander pin.
pub(super) fn wires(
    raw: &RawConfig,
    kind: BoardKind,
    (inputs, outputs, expanders): (&[Input], &[Output], &[Expander]),
    o: &Origins<'_>,
) -> Result<Wires, ConfigError> {
    let Some(list) = &raw.board.wires else {
        return Ok((Vec::new(), Vec::new()));
    };
    if kind != BoardKind::Sim && !list.is_empty() {
        return Err(o.invalid(
            "board.wires",
            "wires exist only on the simulated board; set board.kind = \"sim\"",
        ));
    }
    let mut gpio = Vec::new();
    let mut expander = Vec::new();
    for (from, to) in list {
        let output = outputs.iter().find(|out| same(&out.pin, from));
        let input = inputs.iter().find(|inp| same(&inp.pin, to));
        // An expander's INT line, driven by a Pi output: how tests (and a
        // demo) make the chip's interrupt fall.
        let interrupt = expanders
            .iter()
            .filter_map(|e| e.interrupt)
            .find(|p| *to == RawPin::Number(i64::from(*p)));
        if let (Some(PinAt::Gpio(a)), None, Some(b)) = (output.map(|o| &o.pin), input, interrupt) {
            gpio.push((*a, b));
            continue;
        }
        match (output.map(|o| &o.pin), input.map(|i| &i.pin)) {
            (Some(PinAt::Gpio(a)), Some(PinAt::Gpio(b))) => gpio.push((*a, *b)),
            (Some(PinAt::Expander(a)), Some(PinAt::Expander(b))) => {
                expander.push((a.clone(), b.clone()));
            }
            (Some(_), Some(_)) => {
                return Err(o.invalid(
                    "board.wires",
                    format!(
                        "[{}, {}] joins a GPIO to an expander's pin, which the sim board does not \
                         simulate; join two GPIOs or two expander pins",
                        raw_words(from),
                        raw_words(to)
                    ),
                ));
            }
            _ => {
                return Err(o.invalid(
                    "board.wires",
                    format!(
                        "[{}, {}] must join a configured output pin to a configured input pin ([output, input])",
                        raw_words(from),
                        raw_words(to)
                    ),
                ));
            }
        }
    }
    Ok((gpio, expander))
}

/// Whether `at` is the pin `raw` names (`"mcp0:a3"` is `mcp0:A3`).
fn same(at: &PinAt, raw: &RawPin) -> bool {
    match (at, raw) {
        (PinAt::Gpio(p), RawPin::Number(n)) => i64::from(*p) == *n,
        (PinAt::Expander(e), RawPin::Named(text)) => {
            let (name, pin) = e.label.split_once(':').unwrap_or_default();
            text.split_once(':').is_some_and(|(n, p)| {
                n == name && p.trim().to_ascii_uppercase().trim_start_matches("GP") == pin
            })
        }
        _ => false,
    }
}

/// `board.pulses`: simulated meters, on the sim board only, each into a
/// configured GPIO input, at 0.01 to 1,000,000 pulses a second.
pub(super) fn pulses(
    raw: &RawConfig,
    kind: BoardKind,
    inputs: &[Input],
    o: &Origins<'_>,
) -> Result<Vec<SimPulses>, ConfigError> {
    let Some(list) = &raw.board.pulses else {
        return Ok(Vec::new());
    };
    if kind != BoardKind::Sim && !list.is_empty() {
        return Err(o.invalid(
            "board.pulses",
            "simulated pulses exist only on the simulated board; set board.kind = \"sim\"",
        ));
    }
    list.iter()
        .map(|&(pin, hz, count)| {
            let input = inputs
                .iter()
                .find_map(|i| i.pin.gpio().filter(|p| i64::from(*p) == pin));
            match input {
                Some(p) if (0.01..=1_000_000.0).contains(&hz) && count >= 0 => Ok(SimPulses {
                    pin: p,
                    hz,
                    count: count.unsigned_abs(),
                }),
                _ => Err(o.invalid(
                    "board.pulses",
                    format!(
                        "[{pin}, {hz}, {count}] must be [input pin, pulses a second (0.01 to \
                         1000000), how many (0: no end)], on a configured input pin"
                    ),
                )),
            }
        })
        .collect()
}

/// The sim board's `unplugged` file is only for the sim board.
pub(super) fn check_unplugged(
    raw: &RawConfig,
    kind: BoardKind,
    o: &Origins<'_>,
) -> Result<(), ConfigError> {
    if raw.board.unplugged.is_some() && kind != BoardKind::Sim {
        return Err(o.invalid(
            "board.unplugged",
            "unplugging a simulated expander exists only on the simulated board; set board.kind = \"sim\"",
        ));
    }
    Ok(())
}
