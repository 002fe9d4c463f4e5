//! Pin commands from the network: parse a payload, check it against the config,
//! and hand back a typed [`PinCommand`] or a [`Refusal`] that says why, in words
//! the sender will read on the result topic.
//!
//! This is the only code that decides what the network may do to a pin:
//! only configured outputs, only within the configured limits. It is pure
//! (no pins, no MQTT), so every refusal is tested directly. The plain-text
//! commands (`on`, `off`, `toggle`, …) are the words of `crate::level`.

use std::time::Duration;

use serde_json::Value;

use crate::config::{CommandRules, Input, Output};
use crate::level::{self, Word};
use crate::utc;

/// What a command does to its output.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Drive the output to this level (`true` is high).
    Set(bool),
    /// Flip the output from its current level.
    Toggle,
    /// Flip the output from its current level, hold it for this long, then
    /// flip it back (so a high output pulses low).
    Pulse(Duration),
    /// Run PWM on the output: `duty` from 0.0 to 1.0, at `hz` hertz.
    Pwm {
        /// Fraction of each period the output is high.
        duty: f64,
        /// Periods per second.
        hz: f64,
    },
}

/// A command that passed every check, ready for the agent to carry out.
#[derive(Debug, Clone, PartialEq)]
pub struct PinCommand {
    /// Index of the output in the config.
    pub output: usize,
    /// What to do to it.
    pub action: Action,
    /// The sender's `"id"`, echoed on the result topic.
    pub id: Option<String>,
    /// Set when the command carried a `"ts"`: what makes it applied once.
    pub stamp: Option<Stamp>,
}

/// When a stamped command was meant, and what tells it apart from another
/// command stamped the same instant: its `id`, else a checksum of its
/// payload (a replay is byte for byte the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The `"ts"`, as Unix milliseconds.
    pub at_millis: i64,
    /// `id:<id>`, or `crc:<checksum of the payload>` without an id.
    pub key: String,
}

/// Why a command is not carried out, in words for its sender.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The command's `"id"`, when it got far enough to be read.
    pub id: Option<String>,
    /// What was wrong and what would work.
    pub error: String,
}

/// One command as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The output it names (the last level of its topic).
    pub name: &'a str,
    /// The payload, as received.
    pub payload: &'a [u8],
    /// Delivered from the broker's retained store rather than live.
    pub retained: bool,
    /// The broker keeps a session for us (`clean_session = false`), so any
    /// command may have waited in its queue for any length of time.
    pub persistent_session: bool,
    /// This device's clock on arrival (Unix milliseconds), for `"ts"`.
    pub now_millis: i64,
    /// What is known of that clock.
    pub clock: ClockState<'a>,
}

/// What is known of this device's clock when a command arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockState<'a> {
    /// Trusted, and steady for a while.
    Trusted,
    /// Not set yet, and why it is not trusted: no `"ts"` can be judged.
    Untrusted(&'a str),
    /// Trusted, but it jumped lately (the words say how): a refusal of a
    /// stamp names it as a possible cause.
    Jumped(&'a str),
}

impl ClockState<'_> {
    /// What a refusal about a `"ts"` adds, if anything.
    pub fn note(&self) -> String {
        match self {
            ClockState::Jumped(words) => format!(" (this device's clock moved lately: {words})"),
            _ => String::new(),
        }
    }
}

/// Below 1 Hz PWM is a blink, better done by commands; rppal's software PWM
/// and the kernel's PWM period (nanoseconds in a `u64`) also need a floor.
pub(crate) const MIN_PWM_HZ: f64 = 1.0;
/// The hardware PWM clock manages this with some resolution left; software
/// PWM (a thread toggling the pin) tops out far lower on a Pi.
pub(crate) const MAX_PWM_HZ: f64 = 100_000.0;
pub(crate) const MAX_SOFTWARE_PWM_HZ: f64 = 10_000.0;
/// An `id` is echoed in results and remembered on disk: a name, not a payload.
pub(crate) const MAX_ID_BYTES: usize = 128;

/// `"ts"` must fall in 2000-01-01 ..= 2199-12-31 (UTC). That range tells
/// seconds from milliseconds without overlap (seconds end below 7.3e9,
/// milliseconds start at 9.5e11) and refuses microseconds (~1.8e15) and
/// nanoseconds (~1.8e18) instead of reading them as far-future times.
const MIN_TS_SECS: i64 = 946_684_800;
const END_TS_SECS: i64 = 7_258_118_400;
const MIN_TS_MILLIS: i64 = MIN_TS_SECS * 1000;
const END_TS_MILLIS: i64 = END_TS_SECS * 1000;
const EXAMPLES: &str = "on, off, toggle, or JSON like {\"action\":\"pulse\",\"ms\":500}";

/// Parses and authorises one command: the [`PinCommand`] to carry out, or
/// the [`Refusal`] to publish on its result topic.
pub fn parse(
    incoming: Incoming<'_>,
    outputs: &[Output],
    inputs: &[Input],
    limits: &CommandRules,
) -> Result<PinCommand, Refusal> {
    let refuse = |id: Option<String>, error: String| Refusal { id, error };
    if incoming.payload.len() > limits.max_payload {
        return Err(refuse(
            None,
            format!(
                "command is {} bytes; at most {} are accepted (commands.max_payload)",
                incoming.payload.len(),
                limits.max_payload
            ),
        ));
    }
    let (action, id, ts) = decode(incoming.payload)?;
    if let Some(long) = id.as_ref().filter(|id| id.len() > MAX_ID_BYTES) {
        return Err(refuse(
            None,
            format!(
                "\"id\" is {} bytes; at most {MAX_ID_BYTES} are accepted",
                long.len()
            ),
        ));
    }
    let fail = |error: String| refuse(id.clone(), error);
    let output = find_output(incoming.name, outputs, inputs).map_err(&fail)?;
    check_age(incoming, ts, limits).map_err(&fail)?;
    check_limits(&action, &outputs[output], limits).map_err(&fail)?;
    let stamp = stamp_of(ts, id.as_deref(), incoming.payload);
    Ok(PinCommand {
        output,
        action,
        id,
        stamp,
    })
}

/// The index of the output `name` names, or why a command cannot go there.
fn find_output(name: &str, outputs: &[Output], inputs: &[Input]) -> Result<usize, String> {
    if let Some(output) = outputs.iter().position(|o| o.name == name) {
        return Ok(output);
    }
    let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
    let list = if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    };
    Err(if inputs.iter().any(|i| i.name == name) {
        format!("{name:?} is an input; only outputs take commands (outputs: {list})")
    } else {
        format!("no output named {name:?} (outputs: {list})")
    })
}

/// Whether `action` is within what the config allows on `output`.
fn check_limits(action: &Action, output: &Output, limits: &CommandRules) -> Result<(), String> {
    match action {
        Action::Pulse(d) if d.is_zero() => Err("pulse needs \"ms\" above 0".into()),
        Action::Pulse(d) if *d > limits.max_pulse => Err(format!(
            "pulse of {} ms is longer than the {} ms allowed (commands.max_pulse)",
            d.as_millis(),
            limits.max_pulse.as_millis()
        )),
        Action::Pwm { .. } if !output.pwm => Err(format!(
            "output {:?} is not set up for PWM (add pwm = true to its [[output]])",
            output.name
        )),
        Action::Pwm { duty, .. } if !(0.0..=1.0).contains(duty) => {
            Err(format!("duty {duty} is out of range; allowed: 0.0 to 1.0"))
        }
        Action::Pwm { hz, .. } => {
            let hardware = output.pin.gpio().and_then(crate::header::pwm_channel);
            let most = if hardware.is_some() {
                MAX_PWM_HZ
            } else {
                MAX_SOFTWARE_PWM_HZ
            };
            if (MIN_PWM_HZ..=most).contains(hz) {
                Ok(())
            } else {
                Err(format!(
                    "hz {hz} is out of range; allowed on {}: {MIN_PWM_HZ} to {most}",
                    output.pin
                ))
            }
        }
        Action::Set(_) | Action::Toggle | Action::Pulse(_) => Ok(()),
    }
}

/// Retained commands replay on every reconnect, and queued ones can arrive
/// long after they were meant: either is applied only with a fresh `"ts"`.
/// A stamp from the future is refused too: it would stay "fresh" for as
/// long as it is ahead, replaying on every reconnect until then.
fn check_age(incoming: Incoming<'_>, ts: Option<i64>, limits: &CommandRules) -> Result<(), String> {
    let Some(ts) = ts else {
        if incoming.retained {
            return Err(
                "retained command ignored: it would replay on every reconnect; publish commands without retain (-r), or stamp them with a fresh \"ts\""
                    .into(),
            );
        }
        if incoming.persistent_session && !limits.allow_unstamped {
            return Err(
                "command has no \"ts\": with clean_session = false the broker may have queued it for any length of time while pinpost was away, so only commands stamped with a fresh \"ts\" are applied (stamp it, or set commands.allow_unstamped = true)"
                    .into(),
            );
        }
        return Ok(());
    };
    if let ClockState::Untrusted(why) = incoming.clock {
        return Err(format!(
            "not applied: this device's clock is not set yet ({why}), so its \"ts\" cannot be told from a replay or a command long past; send it again once the device logs \"the clock is trusted\" (commands without \"ts\" are not affected where they are allowed)"
        ));
    }
    check_stamp(ts, incoming.now_millis, limits).map_err(|e| e + &incoming.clock.note())
}

/// Whether a command stamped `ts` (Unix milliseconds) is fresh at
/// `now_millis`: neither older than `commands.max_age` nor further ahead
/// than `commands.max_future`. Checked on arrival, and again when a command
/// held for `commands.min_interval` is finally carried out (it may have
/// gone stale while it waited).
pub(crate) fn check_stamp(ts: i64, now: i64, limits: &CommandRules) -> Result<(), String> {
    let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if ts > now.saturating_add(millis(limits.max_future)) {
        return Err(format!(
            "command is stamped {}, {} s ahead of this device's clock (more than the {} s allowed, commands.max_future); not applied. Check the sender's clock, and this device's",
            utc::rfc3339_millis(ts),
            ts.saturating_sub(now) / 1000,
            limits.max_future.as_secs()
        ));
    }
    if now.saturating_sub(ts) > millis(limits.max_age) {
        // Stale by the sender's clock, or this device's clock is ahead: a
        // Pi without a real-time clock can be either way, so both are said.
        return Err(format!(
            "command is stamped {}, {} s before this device's clock ({}), older than the {} s allowed (commands.max_age); not applied. Send it again with a fresh \"ts\"; if it was fresh, this device's clock is ahead: check its time source",
            utc::rfc3339_millis(ts),
            now.saturating_sub(ts) / 1000,
            utc::rfc3339_millis(now),
            limits.max_age.as_secs()
        ));
    }
    Ok(())
}

/// `"ts"` as Unix milliseconds, or why it is not a time pinpost accepts.
fn stamp(value: &Value) -> Result<Option<i64>, String> {
    const FORMS: &str = "send RFC 3339 text like \"2026-11-23T08:58:12Z\", or a number of Unix seconds or milliseconds (microseconds and nanoseconds are refused)";
    let out_of_range = |shown: &dyn std::fmt::Display| {
        format!("\"ts\" {shown} is not a time between the years 2000 and 2199; {FORMS}")
    };
    match value {
        Value::Null => Ok(None),
        Value::String(s) => match utc::parse_rfc3339_millis(s) {
            Some(ms) if (MIN_TS_MILLIS..END_TS_MILLIS).contains(&ms) => Ok(Some(ms)),
            Some(_) => Err(out_of_range(&format_args!("{s:?}"))),
            None => Err(format!(
                "\"ts\" {:?} is not an RFC 3339 time like \"2026-11-23T08:58:12Z\"",
                shorten(s)
            )),
        },
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                if (MIN_TS_SECS..END_TS_SECS).contains(&i) {
                    return i.checked_mul(1000).map(Some).ok_or_else(|| out_of_range(n));
                }
                if (MIN_TS_MILLIS..END_TS_MILLIS).contains(&i) {
                    return Ok(Some(i));
                }
                return Err(out_of_range(n));
            }
            // Fractional seconds (or milliseconds), or a number too large
            // for an integer: only a finite value inside the range is
            // converted, so the cast below cannot saturate.
            match n.as_f64() {
                Some(t)
                    if t.is_finite() && (MIN_TS_SECS as f64..END_TS_SECS as f64).contains(&t) =>
                {
                    Ok(Some((t * 1000.0).round() as i64))
                }
                Some(t)
                    if t.is_finite()
                        && (MIN_TS_MILLIS as f64..END_TS_MILLIS as f64).contains(&t) =>
                {
                    Ok(Some(t.round() as i64))
                }
                _ => Err(out_of_range(n)),
            }
        }
        _ => Err(format!("\"ts\" must be a time string or a number; {FORMS}")),
    }
}

type Decoded = (Action, Option<String>, Option<i64>);

fn decode(payload: &[u8]) -> Result<Decoded, Refusal> {
    let plain = |error: String| Refusal { id: None, error };
    let text = std::str::from_utf8(payload)
        .map_err(|_| plain(format!("command is not UTF-8 text; send {EXAMPLES}")))?
        .trim();
    if let Some(word) = level::parse_or_toggle(text) {
        let action = match word {
            Word::Level(high) => Action::Set(high),
            Word::Toggle => Action::Toggle,
        };
        return Ok((action, None, None));
    }
    if !text.starts_with('{') {
        return Err(plain(format!(
            "{:?} is not a command; send {EXAMPLES}",
            shorten(text)
        )));
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| plain(format!("command is not valid JSON ({e}); send {EXAMPLES}")))?;
    let id = match value.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    // From here on the id is known, and echoed with any refusal.
    let with_id = |error: String| Refusal {
        id: id.clone(),
        error,
    };
    let ts = stamp(value.get("ts").unwrap_or(&Value::Null)).map_err(&with_id)?;
    let action = action(&value).map_err(with_id)?;
    Ok((action, id, ts))
}

fn action(value: &Value) -> Result<Action, String> {
    let name = value.get("action").and_then(Value::as_str).ok_or_else(|| {
        format!(
            "JSON command needs an \"action\": set, on, off, toggle, pulse or pwm; e.g. {EXAMPLES}"
        )
    })?;
    match name.to_ascii_lowercase().as_str() {
        "set" => match value.get("value") {
            Some(Value::Bool(b)) => Ok(Action::Set(*b)),
            Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(Action::Set(true)),
            Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(Action::Set(false)),
            Some(Value::String(s)) => match level::parse(s) {
                Some(high) => Ok(Action::Set(high)),
                None => Err(format!("\"value\" {s:?} is not a level; use true or false")),
            },
            _ => Err("set needs \"value\": true or false".into()),
        },
        "on" => Ok(Action::Set(true)),
        "off" => Ok(Action::Set(false)),
        "toggle" => Ok(Action::Toggle),
        "pulse" => {
            let ms = value
                .get("ms")
                .and_then(Value::as_u64)
                .ok_or("pulse needs \"ms\": a whole number of milliseconds")?;
            Ok(Action::Pulse(Duration::from_millis(ms)))
        }
        "pwm" => {
            let duty = value
                .get("duty")
                .and_then(Value::as_f64)
                .ok_or("pwm needs \"duty\": a number from 0.0 to 1.0")?;
            // Absent means the default; present but not a number is a
            // mistake to report, not to replace by the default.
            let hz = match value.get("hz") {
                None | Some(Value::Null) => 1000.0,
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| format!("\"hz\" {v} is not a number of hertz"))?,
            };
            Ok(Action::Pwm { duty, hz })
        }
        other => Err(format!(
            "unknown action {other:?}; allowed: set, on, off, toggle, pulse, pwm"
        )),
    }
}

/// What a named command (install, a counter's) sent: its one plain word,
/// or JSON and the `"id"` in it.
pub(crate) enum Body {
    /// The plain word the command takes without JSON (`install`, `reset`).
    Word,
    /// A JSON object, and its checked `"id"`.
    Json { value: Value, id: Option<String> },
}

/// The gate every named command passes before its own fields are read:
/// its size, UTF-8, then `word` alone or JSON with a sane `"id"`. `what`
/// names it in the refusal of anything else ("an install command").
pub(crate) fn body(
    incoming: &Incoming<'_>,
    limits: &CommandRules,
    (word, what, example): (&str, &str, &str),
) -> Result<Body, Refusal> {
    let plain = |error: String| Refusal { id: None, error };
    if incoming.payload.len() > limits.max_payload {
        return Err(plain(format!(
            "command is {} bytes; at most {} are accepted (commands.max_payload)",
            incoming.payload.len(),
            limits.max_payload
        )));
    }
    let text = std::str::from_utf8(incoming.payload)
        .map_err(|_| plain(format!("command is not UTF-8 text; send {example}")))?
        .trim();
    if text == word {
        return Ok(Body::Word);
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|_| plain(format!("{:?} is not {what}; send {example}", shorten(text))))?;
    let id = match value.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= MAX_ID_BYTES => Some(s.clone()),
        Some(_) => {
            return Err(plain(format!(
                "\"id\" must be text of at most {MAX_ID_BYTES} bytes"
            )));
        }
    };
    Ok(Body::Json { value, id })
}

/// What makes a command stamped `ts` applied once: its `id`, else a
/// checksum of its payload (a replay is byte for byte the same).
fn stamp_of(ts: Option<i64>, id: Option<&str>, payload: &[u8]) -> Option<Stamp> {
    ts.map(|at_millis| Stamp {
        at_millis,
        key: match id {
            Some(id) => format!("id:{id}"),
            None => format!("crc:{:08x}", crc32fast::hash(payload)),
        },
    })
}

fn shorten(text: &str) -> String {
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text.to_string()
    }
}

pub(crate) mod counter;
pub(crate) mod install;

#[cfg(test)]
mod tests;
