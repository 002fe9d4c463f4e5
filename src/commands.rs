//! Commands from the network: parse a payload, check it against the config,
//! and hand back a typed [`Command`] or a [`Refusal`] that says why, in words
//! the sender will read on the result topic.
//!
//! This is the only code that decides what the network may do to a pin:
//! only configured outputs, only within the configured limits. It is pure
//! (no pins, no MQTT), so every refusal is tested directly.

use std::time::Duration;

use serde_json::Value;

use crate::config::{Commands, Input, Output};
use crate::utc;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Set(bool),
    Toggle,
    /// On for this long, then back to the level before.
    Pulse(Duration),
    Pwm {
        duty: f64,
        hz: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Index of the output in the config.
    pub output: usize,
    pub action: Action,
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub id: Option<String>,
    pub error: String,
}

/// One command as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub name: &'a str,
    pub payload: &'a [u8],
    /// Delivered from the broker's retained store rather than live.
    pub retained: bool,
    pub now_millis: i64,
}

const MAX_PWM_HZ: f64 = 100_000.0;
const EXAMPLES: &str = "on, off, toggle, or JSON like {\"action\":\"pulse\",\"ms\":500}";

/// Parses and authorises one command.
pub fn parse(
    incoming: Incoming<'_>,
    outputs: &[Output],
    inputs: &[Input],
    limits: &Commands,
) -> Result<Command, Refusal> {
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
    let fail = |error: String| refuse(id.clone(), error);
    let Some(output) = outputs.iter().position(|o| o.name == incoming.name) else {
        let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
        let list = if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        };
        return Err(fail(if inputs.iter().any(|i| i.name == incoming.name) {
            format!(
                "{:?} is an input; only outputs take commands (outputs: {list})",
                incoming.name
            )
        } else {
            format!("no output named {:?} (outputs: {list})", incoming.name)
        }));
    };
    check_age(incoming, ts, limits).map_err(&fail)?;
    match &action {
        Action::Pulse(d) if d.is_zero() => return Err(fail("pulse needs \"ms\" above 0".into())),
        Action::Pulse(d) if *d > limits.max_pulse => {
            return Err(fail(format!(
                "pulse of {} ms is longer than the {} ms allowed (commands.max_pulse)",
                d.as_millis(),
                limits.max_pulse.as_millis()
            )));
        }
        Action::Pwm { .. } if !outputs[output].pwm => {
            return Err(fail(format!(
                "output {:?} is not set up for PWM (add pwm = true to its [[output]])",
                incoming.name
            )));
        }
        Action::Pwm { duty, .. } if !(0.0..=1.0).contains(duty) => {
            return Err(fail(format!(
                "duty {duty} is out of range; allowed: 0.0 to 1.0"
            )));
        }
        Action::Pwm { hz, .. } if !(*hz > 0.0 && *hz <= MAX_PWM_HZ) => {
            return Err(fail(format!(
                "hz {hz} is out of range; allowed: above 0 up to {MAX_PWM_HZ}"
            )));
        }
        _ => {}
    }
    Ok(Command { output, action, id })
}

/// Retained commands replay on every reconnect, and queued ones can arrive
/// long after they were meant: either is applied only with a fresh `"ts"`.
fn check_age(incoming: Incoming<'_>, ts: Option<i64>, limits: &Commands) -> Result<(), String> {
    match ts {
        Some(ts) if incoming.now_millis - ts > limits.max_age.as_millis() as i64 => Err(format!(
            "command is stamped {}, older than the {} s allowed (commands.max_age); not applied",
            utc::rfc3339_millis(ts),
            limits.max_age.as_secs()
        )),
        None if incoming.retained => Err(
            "retained command ignored: it would replay on every reconnect; publish commands without retain (-r), or stamp them with a fresh \"ts\""
                .into(),
        ),
        _ => Ok(()),
    }
}

type Decoded = (Action, Option<String>, Option<i64>);

fn decode(payload: &[u8]) -> Result<Decoded, Refusal> {
    let plain = |error: String| Refusal { id: None, error };
    let text = std::str::from_utf8(payload)
        .map_err(|_| plain(format!("command is not UTF-8 text; send {EXAMPLES}")))?
        .trim();
    if let Some(level) = word(text) {
        return Ok((level, None, None));
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
    let ts = match value.get("ts") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(utc::parse_rfc3339_millis(s).ok_or_else(|| {
            with_id(format!(
                "\"ts\" {s:?} is not an RFC 3339 time like \"2026-11-23T08:58:12Z\""
            ))
        })?),
        // Unix seconds, or milliseconds when it is that large.
        Some(Value::Number(n)) => n.as_f64().map(|t| {
            if t > 1e11 {
                t as i64
            } else {
                (t * 1000.0) as i64
            }
        }),
        Some(_) => {
            return Err(with_id(
                "\"ts\" must be a time string or a number of seconds".into(),
            ));
        }
    };
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
            Some(Value::String(s)) => match word(s) {
                Some(Action::Set(b)) => Ok(Action::Set(b)),
                _ => Err(format!("\"value\" {s:?} is not a level; use true or false")),
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
                .ok_or("pwm needs \"duty\": 0.0 to 1.0")?;
            let hz = value.get("hz").and_then(Value::as_f64).unwrap_or(1000.0);
            Ok(Action::Pwm { duty, hz })
        }
        other => Err(format!(
            "unknown action {other:?}; allowed: set, on, off, toggle, pulse, pwm"
        )),
    }
}

/// The plain-text forms, any case: `on`/`off`/`toggle`, `1`/`0`/`2`
/// (Tasmota's toggle), `true`/`false`, `high`/`low`.
fn word(text: &str) -> Option<Action> {
    match text.to_ascii_lowercase().as_str() {
        "on" | "1" | "true" | "high" => Some(Action::Set(true)),
        "off" | "0" | "false" | "low" => Some(Action::Set(false)),
        "toggle" | "2" => Some(Action::Toggle),
        _ => None,
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Pull;

    fn outputs() -> Vec<Output> {
        vec![
            Output {
                name: "relay".into(),
                pin: 27,
                initial: false,
                safe_state: Some(false),
                pwm: false,
            },
            Output {
                name: "fan".into(),
                pin: 18,
                initial: false,
                safe_state: None,
                pwm: true,
            },
        ]
    }

    fn inputs() -> Vec<Input> {
        vec![Input {
            name: "door".into(),
            pin: 17,
            pull: Pull::Up,
            debounce: Duration::from_millis(50),
            invert: false,
            poll_interval: None,
        }]
    }

    fn limits() -> Commands {
        Commands {
            max_pulse: Duration::from_secs(10),
            max_age: Duration::from_secs(30),
            max_payload: 256,
            min_interval: Duration::from_millis(100),
        }
    }

    const NOW: i64 = 1_795_430_292_000;

    fn send(name: &str, payload: &str) -> Result<Command, Refusal> {
        send_as(name, payload, false)
    }

    fn send_as(name: &str, payload: &str, retained: bool) -> Result<Command, Refusal> {
        let incoming = Incoming {
            name,
            payload: payload.as_bytes(),
            retained,
            now_millis: NOW,
        };
        parse(incoming, &outputs(), &inputs(), &limits())
    }

    fn refused(name: &str, payload: &str) -> String {
        send(name, payload).unwrap_err().error
    }

    #[test]
    fn words_in_any_case_set_or_toggle() {
        for (text, action) in [
            ("on", Action::Set(true)),
            ("OFF", Action::Set(false)),
            ("TOGGLE", Action::Toggle),
            ("1", Action::Set(true)),
            ("2", Action::Toggle),
            ("false", Action::Set(false)),
        ] {
            assert_eq!(send("relay", text).unwrap().action, action, "{text}");
        }
    }

    #[test]
    fn json_actions_carry_their_id() {
        let c = send("relay", r#"{"action":"pulse","ms":500,"id":"a1"}"#).unwrap();
        assert_eq!(
            (c.action, c.id.as_deref()),
            (Action::Pulse(Duration::from_millis(500)), Some("a1"))
        );
        let c = send("fan", r#"{"action":"pwm","duty":0.25,"hz":1000}"#).unwrap();
        assert_eq!(
            c.action,
            Action::Pwm {
                duty: 0.25,
                hz: 1000.0
            }
        );
        assert_eq!(
            send("relay", r#"{"action":"set","value":true}"#)
                .unwrap()
                .action,
            Action::Set(true)
        );
    }

    #[test]
    fn command_to_unknown_output_is_refused() {
        assert_eq!(
            refused("pump", "on"),
            "no output named \"pump\" (outputs: relay, fan)"
        );
    }

    #[test]
    fn command_to_an_input_is_refused() {
        assert!(
            refused("door", "on").starts_with("\"door\" is an input; only outputs take commands")
        );
    }

    #[test]
    fn bad_json_says_what_would_work() {
        let e = refused("relay", r#"{"action":"pulse","#);
        assert!(e.starts_with("command is not valid JSON"), "{e}");
        assert!(e.contains(EXAMPLES), "{e}");
        assert!(refused("relay", "maybe").starts_with("\"maybe\" is not a command"));
    }

    #[test]
    fn limits_are_enforced_with_the_id_echoed() {
        let r = send("fan", r#"{"action":"pwm","duty":1.5,"id":"x"}"#).unwrap_err();
        assert_eq!(
            (r.id.as_deref(), r.error.as_str()),
            (Some("x"), "duty 1.5 is out of range; allowed: 0.0 to 1.0")
        );
        assert!(
            refused("relay", r#"{"action":"pulse","ms":60000}"#)
                .contains("longer than the 10000 ms allowed")
        );
        assert!(refused("relay", r#"{"action":"pwm","duty":0.5}"#).contains("not set up for PWM"));
        assert!(refused("relay", &"x".repeat(300)).contains("at most 256 are accepted"));
        let r = send("relay", r#"{"action":"explode","id":7}"#).unwrap_err();
        assert_eq!(r.id.as_deref(), Some("7"));
        assert!(r.error.contains("unknown action \"explode\""));
    }

    #[test]
    fn retained_and_stale_commands_are_not_applied() {
        assert!(
            send_as("relay", "on", true)
                .unwrap_err()
                .error
                .starts_with("retained command ignored")
        );
        let fresh = format!(
            r#"{{"action":"on","ts":"{}"}}"#,
            utc::rfc3339_millis(NOW - 1000)
        );
        assert!(send_as("relay", &fresh, true).is_ok());
        let stale = format!(r#"{{"action":"on","ts":{}}}"#, (NOW - 60_000) / 1000);
        assert!(refused("relay", &stale).contains("older than the 30 s allowed"));
    }
}
