//! Counter commands (`<prefix>/<id>/cmd/<counter>`, for an input with
//! `count = true`): `reset` to 0, or `set` to a value in the meter's unit,
//! as when a meter is replaced or read by eye. They pass the pin commands'
//! gate (size, a retained or queued copy needs a fresh `"ts"`, a stamp is
//! applied once), since a replayed `set` would take a total back.

use serde_json::Value;

use super::{Body, Incoming, Refusal, Stamp, body, check_age, shorten, stamp, stamp_of};
use crate::config::CommandRules;

const EXAMPLE: &str =
    "{\"action\":\"reset\"} or {\"action\":\"set\",\"value\":1234.5} (in the counter's unit)";

/// What a counter command does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum CounterAction {
    /// Back to 0.
    Reset,
    /// To this value, in the counter's unit.
    Set(f64),
}

/// A counter command that passed the gate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CounterCommand {
    pub(crate) action: CounterAction,
    /// The sender's `"id"`, echoed on the result topic.
    pub(crate) id: Option<String>,
    /// Set when it carried a `"ts"`: what makes it applied once.
    pub(crate) stamp: Option<Stamp>,
}

/// Parses and authorises a command for a counting input.
pub(crate) fn parse(
    incoming: Incoming<'_>,
    limits: &CommandRules,
) -> Result<CounterCommand, Refusal> {
    let (value, id) = match body(&incoming, limits, ("reset", "a counter command", EXAMPLE))? {
        Body::Word => {
            let plain = |error: String| Refusal { id: None, error };
            check_age(incoming, None, limits).map_err(plain)?;
            return Ok(CounterCommand {
                action: CounterAction::Reset,
                id: None,
                stamp: None,
            });
        }
        Body::Json { value, id } => (value, id),
    };
    let fail = |error: String| Refusal {
        id: id.clone(),
        error,
    };
    let action = match value.get("action").and_then(Value::as_str) {
        Some("reset") => CounterAction::Reset,
        Some("set") => match value.get("value").and_then(Value::as_f64) {
            Some(v) if v.is_finite() && v >= 0.0 => CounterAction::Set(v),
            Some(v) => {
                return Err(fail(format!(
                    "\"value\" {v} cannot be a total; give 0 or more, in the counter's unit"
                )));
            }
            None => {
                return Err(fail(format!(
                    "set needs a number in \"value\"; send {EXAMPLE}"
                )));
            }
        },
        Some(other) => {
            return Err(fail(format!(
                "{:?} is not what a counter does; it takes {EXAMPLE}",
                shorten(other)
            )));
        }
        None => {
            return Err(fail(format!(
                "a counter command needs \"action\"; send {EXAMPLE}"
            )));
        }
    };
    let ts = stamp(value.get("ts").unwrap_or(&Value::Null)).map_err(&fail)?;
    check_age(incoming, ts, limits).map_err(&fail)?;
    let stamp = stamp_of(ts, id.as_deref(), incoming.payload);
    Ok(CounterCommand { action, id, stamp })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ClockState;

    const NOW: i64 = 1_796_100_000_000;

    fn incoming(payload: &str, retained: bool) -> Incoming<'_> {
        Incoming {
            name: "meter",
            payload: payload.as_bytes(),
            retained,
            persistent_session: false,
            now_millis: NOW,
            clock: ClockState::Trusted,
        }
    }

    fn rules() -> CommandRules {
        crate::config::from_text("[device]\nid = \"pi\"\n", None, &Default::default())
            .unwrap()
            .commands
    }

    #[test]
    fn reset_and_set_in_the_counters_unit_are_taken_with_their_stamp() {
        let r = rules();
        let reset = parse(incoming("reset", false), &r).unwrap();
        assert_eq!(reset.action, CounterAction::Reset);
        let set = parse(
            incoming(
                &format!(r#"{{"action":"set","value":1234.5,"id":"m1","ts":{NOW}}}"#),
                false,
            ),
            &r,
        )
        .unwrap();
        assert_eq!(set.action, CounterAction::Set(1234.5));
        assert_eq!(set.stamp.unwrap().key, "id:m1");
    }

    #[test]
    fn a_retained_stale_or_future_or_nonsense_command_is_refused_in_words() {
        let r = rules();
        let refused = |payload: &str, retained: bool| {
            parse(incoming(payload, retained), &r).unwrap_err().error
        };
        assert!(refused("reset", true).starts_with("retained command ignored"));
        let old = NOW - 3_600_000;
        assert!(refused(&format!(r#"{{"action":"reset","ts":{old}}}"#), false).contains("old"));
        let ahead = NOW + 3_600_000;
        assert!(refused(&format!(r#"{{"action":"reset","ts":{ahead}}}"#), false).contains("ahead"));
        assert!(refused(r#"{"action":"set","value":-5}"#, false).contains("give 0 or more"));
        assert!(refused(r#"{"action":"set"}"#, false).contains("set needs a number"));
        assert!(refused(r#"{"action":"on"}"#, false).contains("is not what a counter does"));
        assert!(refused("lots", false).contains("is not a counter command"));
        assert!(refused(&"x".repeat(5000), false).contains("at most"));
    }
}
