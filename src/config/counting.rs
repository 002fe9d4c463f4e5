//! An `[[input]]` with `count = true`: which edges count, what one pulse is
//! worth, and how often the total is published. The keys mean something
//! only on a counting input; elsewhere they are refused by name, so a typo
//! or a forgotten `count = true` never silently does nothing.

use std::str::FromStr;
use std::time::Duration;

use super::error::ConfigError;
use super::origins::Origins;
use super::raw::RawInput;
use super::values::{duration, word};

const RATE_WINDOW_DEFAULT: Duration = Duration::from_secs(60);
const INTERVAL_DEFAULT: Duration = Duration::from_secs(10);
/// Longer than anyone reads a rate over, short enough that the window's
/// samples stay a few dozen.
const RATE_WINDOW_MAX: Duration = Duration::from_secs(3600);
const INTERVAL_MAX: Duration = Duration::from_secs(3600);
const UNIT_MAX_CHARS: usize = 16;

/// Which change of a counting input's published value (after `invert`)
/// is one pulse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountEdge {
    /// The input turning on.
    Rising,
    /// The input turning off.
    Falling,
    /// Either.
    Both,
}

/// What a counter measures, for Home Assistant's energy dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meter {
    /// Watt-hours and their multiples.
    Energy,
    /// Litres, cubic metres, gallons of water.
    Water,
    /// Cubic metres of gas.
    Gas,
    /// Anything else: a plain total.
    None,
}

/// A counting input (`count = true`): its total is published on
/// `counter/<name>` instead of its level on `input/<name>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Counting {
    /// Which edge is one pulse.
    pub edge: CountEdge,
    /// What one pulse is worth in `unit` (0.001 kWh for 1000 imp/kWh).
    pub per_pulse: f64,
    /// The meter's unit ("kWh"); empty for plain pulses.
    pub unit: String,
    /// The rate is the pulses within this window, per hour.
    pub rate_window: Duration,
    /// How often the total is published while it changes.
    pub interval: Duration,
    /// What it measures, for Home Assistant.
    pub meter: Meter,
}

impl FromStr for CountEdge {
    type Err = String;

    /// `input.edge`: which change of the published value is one pulse.
    fn from_str(word: &str) -> Result<Self, String> {
        match word {
            "rising" => Ok(CountEdge::Rising),
            "falling" => Ok(CountEdge::Falling),
            "both" => Ok(CountEdge::Both),
            other => Err(format!(
                "{other:?} is not an edge; allowed: \"rising\" (the input turning on, after \
                 invert), \"falling\" or \"both\""
            )),
        }
    }
}

impl FromStr for Meter {
    type Err = String;

    /// `input.meter`: what Home Assistant's energy dashboard files it under.
    fn from_str(word: &str) -> Result<Self, String> {
        match word {
            "energy" => Ok(Meter::Energy),
            "water" => Ok(Meter::Water),
            "gas" => Ok(Meter::Gas),
            "none" => Ok(Meter::None),
            other => Err(format!(
                "{other:?} is not a meter; allowed: \"energy\", \"water\", \"gas\" or \"none\""
            )),
        }
    }
}

/// The counting keys of input `i`: `Some` for `count = true`.
pub(super) fn build(
    r: &RawInput,
    i: usize,
    o: &Origins<'_>,
) -> Result<Option<Counting>, ConfigError> {
    let at = |field: &str| format!("input[{i}].{field}");
    if r.count != Some(true) {
        let stray = [
            ("edge", r.edge.is_some()),
            ("per_pulse", r.per_pulse.is_some()),
            ("unit", r.unit.is_some()),
            ("rate_window", r.rate_window.is_some()),
            ("interval", r.interval.is_some()),
            ("meter", r.meter.is_some()),
        ];
        if let Some((key, _)) = stray.into_iter().find(|(_, set)| *set) {
            return Err(o.invalid(
                &at(key),
                "means something only on a counting input; add count = true, or remove it",
            ));
        }
        return Ok(None);
    }
    if r.poll_interval.is_some() {
        return Err(o.invalid(
            &at("poll_interval"),
            "a counting input counts edges as they happen, it is never polled; remove \
             poll_interval",
        ));
    }
    let per_pulse = match r.per_pulse {
        None => 1.0,
        Some(v) if v.is_finite() && v > 0.0 && v <= 1e9 => v,
        Some(v) => {
            return Err(o.invalid(
                &at("per_pulse"),
                format!(
                    "{v} is not what a pulse can be worth; give a number above 0 (0.001 for a \
                     meter of 1000 impulses per kWh with unit = \"kWh\")"
                ),
            ));
        }
    };
    let unit = r.unit.clone().unwrap_or_default();
    if unit.chars().count() > UNIT_MAX_CHARS || unit.chars().any(char::is_control) {
        return Err(o.invalid(
            &at("unit"),
            format!("give a short unit such as \"kWh\", \"m³\" or \"L\" (at most {UNIT_MAX_CHARS} characters)"),
        ));
    }
    let within = |key: &str, value: Option<Duration>, default, max: Duration| {
        let value = value.unwrap_or(default);
        if value < Duration::from_secs(1) || value > max {
            return Err(o.invalid(
                &at(key),
                format!(
                    "out of range; allowed: \"1s\" to \"{}\"",
                    humantime::format_duration(max)
                ),
            ));
        }
        Ok(value)
    };
    let rate_window = within(
        "rate_window",
        duration(&r.rate_window, &at("rate_window"), o)?,
        RATE_WINDOW_DEFAULT,
        RATE_WINDOW_MAX,
    )?;
    let interval = within(
        "interval",
        duration(&r.interval, &at("interval"), o)?,
        INTERVAL_DEFAULT,
        INTERVAL_MAX,
    )?;
    let meter = word(r.meter.as_deref(), &at("meter"), o)?.unwrap_or_else(|| implied(&unit));
    Ok(Some(Counting {
        edge: word(r.edge.as_deref(), &at("edge"), o)?.unwrap_or(CountEdge::Rising),
        per_pulse,
        unit,
        rate_window,
        interval,
        meter,
    }))
}

/// The meter a unit implies: energy for watt-hours, water for litres and
/// cubic metres (gas meters in m³ say `meter = "gas"`).
fn implied(unit: &str) -> Meter {
    match unit {
        "Wh" | "kWh" | "MWh" => Meter::Energy,
        "L" | "l" | "m³" | "m3" | "gal" | "ft³" => Meter::Water,
        _ => Meter::None,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{CountEdge, Meter, Overrides, from_text};

    fn counting(keys: &str) -> Result<crate::config::Config, String> {
        from_text(
            &format!(
                "[device]\nid = \"pi\"\n[board]\nkind = \"sim\"\n[[input]]\nname = \"meter\"\n\
                 pin = 17\n{keys}"
            ),
            None,
            &Overrides::default(),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_meter_is_described_in_its_own_unit_and_its_kind_follows_from_it() {
        let c = counting("count = true\nper_pulse = 0.001\nunit = \"kWh\"\nedge = \"falling\"\n")
            .unwrap();
        let m = c.inputs[0].count.clone().unwrap();
        assert_eq!((m.per_pulse, m.unit.as_str()), (0.001, "kWh"));
        assert_eq!((m.edge, m.meter), (CountEdge::Falling, Meter::Energy));
        let plain = counting("count = true\n").unwrap().inputs[0]
            .count
            .clone()
            .unwrap();
        assert_eq!(
            (plain.per_pulse, plain.edge, plain.meter),
            (1.0, CountEdge::Rising, Meter::None)
        );
        let gas =
            counting("count = true\nunit = \"m³\"\nmeter = \"gas\"\nper_pulse = 1\n").unwrap();
        assert_eq!(gas.inputs[0].count.as_ref().unwrap().meter, Meter::Gas);
        assert!(counting("").unwrap().inputs[0].count.is_none());
    }

    #[test]
    fn a_counting_key_without_count_or_a_bad_value_is_refused_in_words() {
        for (keys, words) in [
            ("per_pulse = 0.001\n", "input[0].per_pulse"),
            ("unit = \"kWh\"\n", "add count = true"),
            ("count = true\nper_pulse = 0\n", "give a number above 0"),
            ("count = true\nper_pulse = -1\n", "give a number above 0"),
            ("count = true\nedge = \"up\"\n", "\"up\" is not an edge"),
            ("count = true\nmeter = \"oil\"\n", "\"oil\" is not a meter"),
            (
                "count = true\ninterval = \"100ms\"\n",
                "allowed: \"1s\" to \"1h\"",
            ),
            (
                "count = true\nrate_window = \"2h\"\n",
                "allowed: \"1s\" to \"1h\"",
            ),
            (
                "count = true\npoll_interval = \"1s\"\n",
                "it is never polled",
            ),
            (
                "count = true\nunit = \"a very long unit name\"\n",
                "at most 16 characters",
            ),
        ] {
            let err = counting(keys).expect_err(keys);
            assert!(err.contains(words), "{keys}: {err}");
        }
    }

    #[test]
    fn simulated_pulses_go_into_a_configured_input_of_the_sim_board_only() {
        let ok = counting("count = true\n").map(|_| ());
        assert!(ok.is_ok());
        let text = |board: &str, pulses: &str| {
            from_text(
                &format!(
                    "[device]\nid = \"pi\"\n[board]\nkind = \"{board}\"\npulses = [{pulses}]\n\
                     [[input]]\nname = \"meter\"\npin = 17\ncount = true\n"
                ),
                None,
                &Overrides::default(),
            )
            .map_err(|e| e.to_string())
        };
        let c = text("sim", "[17, 50.0, 100]").unwrap();
        assert_eq!(c.board.pulses[0].count, 100);
        assert!(
            text("cdev", "[17, 50.0, 100]")
                .unwrap_err()
                .contains("only on the simulated")
        );
        assert!(
            text("sim", "[18, 50.0, 100]")
                .unwrap_err()
                .contains("on a configured input pin")
        );
        assert!(
            text("sim", "[17, 0.0, 100]")
                .unwrap_err()
                .contains("0.01 to 1000000)")
        );
    }
}
