//! `[board]`, `[[input]]`, `[[output]]` and `[commands]`: which pins pinpost
//! may touch and how. Names become topic levels, pins are BCM numbers, and
//! no pin is claimed twice.

use std::collections::HashMap;
use std::time::Duration;

use super::error::ConfigError;
use super::expanders::{self, PinAt};
use super::model::{Board, BoardKind, CommandRules, Input, Output, Pull};
use super::origins::Origins;
use super::raw::{RawConfig, RawLevel, RawPin};
use super::values::{duration, name, word};
use crate::header::MAX_BCM_PIN;

const DEBOUNCE_DEFAULT: Duration = Duration::from_millis(50);
/// Ten changes a second at most: quick enough for any person or script
/// driving a relay, far below the kHz a command storm would reach.
const MIN_INTERVAL_DEFAULT: Duration = Duration::from_millis(100);

pub(super) struct Pins {
    pub board: Board,
    pub inputs: Vec<Input>,
    pub outputs: Vec<Output>,
    pub commands: CommandRules,
}

pub(super) fn build(raw: &RawConfig, o: &Origins<'_>) -> Result<Pins, ConfigError> {
    let kind = word(raw.board.kind.as_deref(), "board.kind", o)?.unwrap_or_default();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut pins: HashMap<u8, String> = HashMap::new();
    let mut expander_pins: HashMap<(usize, u8), String> = HashMap::new();
    let mut lines: HashMap<String, String> = HashMap::new();
    super::sim::check_unplugged(raw, kind, o)?;
    let expanders = expanders::build(raw, &mut pins, o)?;
    let mut place = |value: Option<&RawPin>, key: &str, name: &str| match value {
        Some(RawPin::Named(text)) => {
            expanders::pin(text, key, name, &expanders, &mut expander_pins, o)
        }
        Some(RawPin::Number(n)) => pin(Some(*n), key, name, &mut pins, o).map(PinAt::Gpio),
        None => pin(None, key, name, &mut pins, o).map(PinAt::Gpio),
    };
    let chip_of = |at: &PinAt| at.expander().map(|e| expanders[e.expander].chip);
    let mut inputs = Vec::new();
    for (i, r) in raw.input.iter().enumerate() {
        let at = |field: &str| format!("input[{i}].{field}");
        let name = name(r.name.as_deref(), &at("name"), &mut names, o)?;
        let pin = place(r.pin.as_ref(), &at("pin"), &name)?;
        let pull = word(r.pull.as_deref(), &at("pull"), o)?.unwrap_or_default();
        if let Some(chip) = chip_of(&pin) {
            expanders::check_input(r, pull == Pull::Down, chip, &at, o)?;
        }
        let line = line(r.line.as_deref(), &at("line"), kind, &mut lines, o)?;
        let debounce = duration(&r.debounce, &at("debounce"), o)?.unwrap_or(DEBOUNCE_DEFAULT);
        if debounce > Duration::from_secs(10) {
            return Err(o.invalid(&at("debounce"), "out of range; allowed: \"0ms\" to \"10s\""));
        }
        let poll_interval = duration(&r.poll_interval, &at("poll_interval"), o)?;
        if poll_interval.is_some_and(|p| p < Duration::from_millis(10)) {
            return Err(o.invalid(&at("poll_interval"), "too short; allowed: \"10ms\" or more"));
        }
        inputs.push(Input {
            name,
            pin,
            line,
            pull,
            debounce,
            invert: r.invert.unwrap_or(false),
            poll_interval,
            count: super::counting::build(r, i, o)?,
            button: super::button::build(r, i, o)?,
        });
    }
    let mut outputs = Vec::new();
    // Hardware PWM channel → the pwm output already on it.
    let mut channels: HashMap<u8, (u8, String)> = HashMap::new();
    for (i, r) in raw.output.iter().enumerate() {
        let at = |field: &str| format!("output[{i}].{field}");
        let name = name(r.name.as_deref(), &at("name"), &mut names, o)?;
        let pin = place(r.pin.as_ref(), &at("pin"), &name)?;
        if let Some(chip) = chip_of(&pin) {
            expanders::check_output(r, chip, &at, o)?;
        }
        let line = line(r.line.as_deref(), &at("line"), kind, &mut lines, o)?;
        if let (Some(true), Some(gpio)) = (r.pwm, pin.gpio()) {
            pwm_channel(gpio, &name, &at("pwm"), &mut channels, o)?;
        }
        outputs.push(Output {
            name,
            pin,
            line,
            initial: level(&r.initial, &at("initial"), o)?.unwrap_or(false),
            safe_state: level(&r.safe_state, &at("safe_state"), o)?,
            pwm: r.pwm.unwrap_or(false),
        });
    }
    let (wires, expander_wires) = super::sim::wires(raw, kind, (&inputs, &outputs, &expanders), o)?;
    let pulses = super::sim::pulses(raw, kind, &inputs, o)?;
    let chip = chip(raw, kind, o)?;
    Ok(Pins {
        board: Board {
            kind,
            wires,
            expanders,
            expander_wires,
            unplugged: raw
                .board
                .unplugged
                .as_ref()
                .map(|p| o.resolve("board.unplugged", p)),
            pulses,
            chip,
        },
        inputs,
        outputs,
        commands: commands(raw, o)?,
    })
}

fn pin(
    value: Option<i64>,
    key: &str,
    name: &str,
    seen: &mut HashMap<u8, String>,
    o: &Origins<'_>,
) -> Result<u8, ConfigError> {
    let Some(p) = value else {
        return Err(o.invalid(key, "missing; give the BCM GPIO number (e.g. pin = 17), or an expander's pin (pin = \"mcp0:A3\")"));
    };
    let pin = u8::try_from(p).ok().filter(|p| i64::from(*p) <= MAX_BCM_PIN).ok_or_else(|| {
        o.invalid(key, format!("{p} is not a GPIO pin; allowed: BCM numbers 0 to {MAX_BCM_PIN} (GPIO17 is pin = 17, physical pin 11)"))
    })?;
    if let Some(first) = seen.insert(pin, name.to_string()) {
        return Err(o.invalid(
            key,
            format!("GPIO{pin} is already used by {first:?}; one pin, one use"),
        ));
    }
    Ok(pin)
}

/// Two `pwm = true` outputs on one hardware PWM channel (GPIO12 and 18 are
/// both channel 0 on a Pi 1–4, GPIO13 and 19 both channel 1) would share one
/// peripheral: a command to one retunes or stops the other. Refused on every
/// model (a Pi 5 has four channels) so a config moved between Pis keeps
/// working; a software-PWM pin is the way to a third PWM output.
fn pwm_channel(
    pin: u8,
    name: &str,
    key: &str,
    seen: &mut HashMap<u8, (u8, String)>,
    o: &Origins<'_>,
) -> Result<(), ConfigError> {
    let Some(channel) = crate::header::pwm_channel(pin) else {
        return Ok(());
    };
    if let Some((first_pin, first)) = seen.get(&channel) {
        let others: Vec<String> = [12u8, 13, 18, 19]
            .into_iter()
            .filter(|p| crate::header::pwm_channel(*p) != Some(channel))
            .map(|p| format!("GPIO{p}"))
            .collect();
        return Err(o.invalid(
            key,
            format!(
                "{name:?} on GPIO{pin} and {first:?} on GPIO{first_pin} would both use hardware \
                 PWM channel {channel} (on a Pi 1–4 they are one channel: a command to one \
                 would retune or stop the other); move one of them to {} (channel {}), or to \
                 any other GPIO for software PWM (up to 10 kHz)",
                others.join(" or "),
                1 - channel.min(1)
            ),
        ));
    }
    seen.insert(channel, (pin, name.to_string()));
    Ok(())
}

fn level(
    value: &Option<RawLevel>,
    key: &str,
    o: &Origins<'_>,
) -> Result<Option<bool>, ConfigError> {
    match value {
        None => Ok(None),
        Some(RawLevel::Bool(b)) => Ok(Some(*b)),
        // The words of `crate::level`; no toggle: a starting level has
        // nothing to flip.
        Some(RawLevel::Text(t)) => match crate::level::parse(t) {
            Some(high) => Ok(Some(high)),
            None => Err(o.invalid(
                key,
                format!("{t:?} is not a level; allowed: \"on\", \"off\", true or false"),
            )),
        },
    }
}

/// An input's or output's `line`: a name the kernel could give a line
/// (gpioinfo's), only where the character device may be used, never two
/// pins on one.
fn line(
    raw: Option<&str>,
    at: &str,
    kind: BoardKind,
    taken: &mut HashMap<String, String>,
    o: &Origins<'_>,
) -> Result<Option<String>, ConfigError> {
    let Some(line) = raw else {
        return Ok(None);
    };
    if !matches!(kind, BoardKind::Cdev | BoardKind::Auto) {
        return Err(o.invalid(
            at,
            "a line name is found through the kernel's GPIO character device; set board.kind = \"cdev\" (or \"auto\")",
        ));
    }
    // The kernel keeps 31 bytes of a line's name.
    if line.is_empty() || line.len() > 31 || line.chars().any(char::is_control) {
        return Err(o.invalid(
            at,
            format!("{line:?} is not a line name; give the name `gpioinfo` shows for it (1 to 31 characters)"),
        ));
    }
    if let Some(other) = taken.insert(line.to_string(), at.to_string()) {
        return Err(o.invalid(at, format!("line {line:?} is already {other}'s")));
    }
    Ok(Some(line.to_string()))
}

/// `board.chip`: only where the character device may be used, and a
/// name the kernel could give (no path outside `/dev`).
fn chip(raw: &RawConfig, kind: BoardKind, o: &Origins<'_>) -> Result<Option<String>, ConfigError> {
    let Some(chip) = &raw.board.chip else {
        return Ok(None);
    };
    if !matches!(kind, BoardKind::Cdev | BoardKind::Auto) {
        return Err(o.invalid(
            "board.chip",
            "a chip is a GPIO character device; set board.kind = \"cdev\" (or \"auto\")",
        ));
    }
    let plain = chip.strip_prefix("/dev/").unwrap_or(chip);
    if plain.is_empty() || plain.contains('/') || plain.chars().any(char::is_control) {
        return Err(o.invalid(
            "board.chip",
            format!("{chip:?} is not a GPIO chip; give its name (\"gpiochip0\"), its device (\"/dev/gpiochip0\") or its label (`gpiodetect` lists them)"),
        ));
    }
    Ok(Some(chip.clone()))
}

fn commands(raw: &RawConfig, o: &Origins<'_>) -> Result<CommandRules, ConfigError> {
    let c = &raw.commands;
    // Bounded so every `now + duration` on them stays far from overflow,
    // and so a typo ("60000s") cannot hold a relay on for most of a day.
    let within = |value: Option<Duration>,
                  key: &str,
                  default: Duration,
                  least: Duration,
                  most: Duration,
                  allowed: &str| {
        let d = value.unwrap_or(default);
        if d < least || d > most {
            return Err(o.invalid(key, format!("out of range; allowed: {allowed}")));
        }
        Ok(d)
    };
    let max_pulse = within(
        duration(&c.max_pulse, "commands.max_pulse", o)?,
        "commands.max_pulse",
        Duration::from_secs(60),
        Duration::from_millis(1),
        Duration::from_secs(24 * 3600),
        "\"1ms\" to \"24h\"",
    )?;
    let max_age = within(
        duration(&c.max_age, "commands.max_age", o)?,
        "commands.max_age",
        Duration::from_secs(30),
        Duration::from_secs(1),
        Duration::from_secs(7 * 24 * 3600),
        "\"1s\" to \"7d\"",
    )?;
    let max_future = within(
        duration(&c.max_future, "commands.max_future", o)?,
        "commands.max_future",
        Duration::from_secs(5),
        Duration::ZERO,
        Duration::from_secs(3600),
        "\"0s\" to \"1h\"",
    )?;
    let max_payload = c.max_payload.unwrap_or(1024);
    if !(16..=65536).contains(&max_payload) {
        return Err(o.invalid(
            "commands.max_payload",
            format!("{max_payload} is out of range; allowed: 16 to 65536 (bytes)"),
        ));
    }
    let min_interval =
        duration(&c.min_interval, "commands.min_interval", o)?.unwrap_or(MIN_INTERVAL_DEFAULT);
    if min_interval > Duration::from_secs(3600) {
        return Err(o.invalid(
            "commands.min_interval",
            "out of range; allowed: \"0ms\" (no limit) to \"1h\"",
        ));
    }
    Ok(CommandRules {
        max_pulse,
        max_age,
        max_future,
        max_payload: usize::try_from(max_payload).unwrap_or(1024),
        allow_unstamped: c.allow_unstamped.unwrap_or(false),
        min_interval,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Overrides, from_text};
    use std::path::Path;
    use std::time::Duration;

    fn error(text: &str) -> String {
        from_text(text, Some(Path::new("/c.toml")), &Overrides::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    const HEAD: &str = "[device]\nid = \"pi\"\n";

    #[test]
    fn a_pin_used_twice_names_both_uses_and_the_line() {
        let e = error(&format!(
            "{HEAD}[[input]]\nname = \"a\"\npin = 17\n\n[[output]]\nname = \"b\"\npin = 17\n"
        ));
        assert!(
            e.contains("/c.toml line 9: output[0].pin: GPIO17 is already used by \"a\""),
            "{e}"
        );
    }

    #[test]
    fn names_must_be_unique_across_inputs_and_outputs() {
        let e = error(&format!(
            "{HEAD}[[input]]\nname = \"a\"\npin = 17\n[[output]]\nname = \"a\"\npin = 27\n"
        ));
        assert!(
            e.contains("output[0].name: \"a\" is already used by input[0].name"),
            "{e}"
        );
    }

    #[test]
    fn pins_are_bcm_numbers() {
        let e = error(&format!("{HEAD}[[output]]\nname = \"r\"\npin = 40\n"));
        assert!(
            e.contains("line 5: output[0].pin: 40 is not a GPIO pin; allowed: BCM numbers 0 to 27"),
            "{e}"
        );
    }

    #[test]
    fn two_pwm_outputs_on_one_hardware_channel_are_refused() {
        let out = |name: &str, pin: u8, pwm: bool| {
            format!("[[output]]\nname = \"{name}\"\npin = {pin}\npwm = {pwm}\n")
        };
        let e = error(&format!(
            "{HEAD}{}{}",
            out("fan", 12, true),
            out("led", 18, true)
        ));
        assert!(
            e.contains("output[1].pwm: \"led\" on GPIO18 and \"fan\" on GPIO12 would both use hardware PWM channel 0"),
            "{e}"
        );
        assert!(
            e.contains("move one of them to GPIO13 or GPIO19 (channel 1)"),
            "{e}"
        );
        let e = error(&format!(
            "{HEAD}{}{}",
            out("a", 19, true),
            out("b", 13, true)
        ));
        assert!(e.contains("channel 1"), "{e}");
        assert!(e.contains("GPIO12 or GPIO18 (channel 0)"), "{e}");
        // One per channel is fine, and so is a plain output on the twin pin.
        for ok in [
            format!("{HEAD}{}{}", out("a", 12, true), out("b", 19, true)),
            format!("{HEAD}{}{}", out("a", 12, true), out("b", 18, false)),
            format!("{HEAD}{}{}", out("a", 18, true), out("b", 17, true)),
        ] {
            from_text(&ok, None, &Overrides::default()).unwrap();
        }
    }

    #[test]
    fn a_chip_and_line_names_belong_to_the_character_device() {
        let pins = "[[input]]\nname = \"b\"\npin = 3\nline = \"BUTTON\"\n\
                    [[output]]\nname = \"o\"\npin = 27\n";
        let ok = from_text(
            &format!("{HEAD}[board]\nkind = \"cdev\"\nchip = \"gpiochip0\"\n{pins}"),
            None,
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(ok.board.chip.as_deref(), Some("gpiochip0"));
        assert_eq!(ok.inputs[0].line.as_deref(), Some("BUTTON"));
        assert_eq!(ok.outputs[0].line, None);
        let e = error(&format!(
            "{HEAD}[board]\nkind = \"rppal\"\nchip = \"gpiochip0\"\n"
        ));
        assert!(
            e.contains("board.chip: a chip is a GPIO character device; set board.kind = \"cdev\""),
            "{e}"
        );
        let e = error(&format!("{HEAD}[board]\nkind = \"sim\"\n{pins}"));
        assert!(
            e.contains(
                "input[0].line: a line name is found through the kernel's GPIO character device"
            ),
            "{e}"
        );
        let e = error(&format!("{HEAD}[board]\nchip = \"../../etc/passwd\"\n"));
        assert!(e.contains("is not a GPIO chip"), "{e}");
        let twice = "[[input]]\nname = \"a\"\npin = 3\nline = \"X\"\n\
                     [[input]]\nname = \"b\"\npin = 4\nline = \"X\"\n";
        let e = error(&format!("{HEAD}{twice}"));
        assert!(
            e.contains("input[1].line: line \"X\" is already input[0].line's"),
            "{e}"
        );
    }

    #[test]
    fn wires_join_an_output_to_an_input_on_the_sim_board_only() {
        let pins = "[[input]]\nname = \"i\"\npin = 17\n[[output]]\nname = \"o\"\npin = 27\n";
        let ok = from_text(
            &format!("{HEAD}[board]\nkind = \"sim\"\nwires = [[27, 17]]\n{pins}"),
            None,
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(ok.board.wires, vec![(27, 17)]);
        let e = error(&format!(
            "{HEAD}[board]\nkind = \"sim\"\nwires = [[17, 27]]\n{pins}"
        ));
        assert!(
            e.contains("board.wires: [17, 27] must join a configured output pin"),
            "{e}"
        );
        let e = error(&format!("{HEAD}[board]\nwires = [[27, 17]]\n{pins}"));
        assert!(e.contains("only on the simulated board"), "{e}");
    }

    #[test]
    fn command_limits_have_defaults_and_bounds() {
        let c = from_text(HEAD, None, &Overrides::default()).unwrap();
        assert_eq!(
            (
                c.commands.max_future,
                c.commands.max_age,
                c.commands.allow_unstamped
            ),
            (
                std::time::Duration::from_secs(5),
                std::time::Duration::from_secs(30),
                false
            )
        );
        let e = error(&format!("{HEAD}[commands]\nmax_pulse = \"1000000000y\"\n"));
        assert!(
            e.contains("commands.max_pulse: out of range; allowed: \"1ms\" to \"24h\""),
            "{e}"
        );
        let e = error(&format!("{HEAD}[commands]\nmax_future = \"2h\"\n"));
        assert!(e.contains("commands.max_future: out of range"), "{e}");
        let e = error(&format!("{HEAD}[commands]\nmax_age = \"0s\"\n"));
        assert!(e.contains("commands.max_age: out of range"), "{e}");
        let c = from_text(
            &format!("{HEAD}[commands]\nmax_future = \"0s\"\nallow_unstamped = true\n"),
            None,
            &Overrides::default(),
        )
        .unwrap();
        assert!(c.commands.allow_unstamped && c.commands.max_future.is_zero());
    }

    #[test]
    fn levels_can_be_words_or_booleans() {
        let c = from_text(
            &format!(
                "{HEAD}[[output]]\nname = \"r\"\npin = 27\ninitial = \"on\"\nsafe_state = false\n"
            ),
            None,
            &Overrides::default(),
        )
        .unwrap();
        assert!(c.outputs[0].initial);
        assert_eq!(c.outputs[0].safe_state, Some(false));
        let e = error(&format!(
            "{HEAD}[[output]]\nname = \"r\"\npin = 27\ninitial = \"maybe\"\n"
        ));
        assert!(e.contains("line 6: output[0].initial"), "{e}");
    }

    #[test]
    fn min_interval_defaults_to_100ms_and_zero_turns_it_off() {
        let c = from_text(HEAD, None, &Overrides::default()).unwrap();
        assert_eq!(c.commands.min_interval, Duration::from_millis(100));
        let c = from_text(
            &format!("{HEAD}[commands]\nmin_interval = \"0ms\"\n"),
            None,
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.commands.min_interval, Duration::ZERO);
        let e = error(&format!("{HEAD}[commands]\nmin_interval = \"2h\"\n"));
        assert!(e.contains("commands.min_interval: out of range"), "{e}");
    }
}
