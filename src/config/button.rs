//! An `[[input]]` with `button = true`: how long a press must be held to be
//! long, and how soon a second press must follow to make a double. The
//! keys mean something only on a button; elsewhere they are refused.

use std::time::Duration;

use super::error::ConfigError;
use super::origins::Origins;
use super::raw::RawInput;
use super::values::duration;

const DOUBLE_WITHIN_DEFAULT: Duration = Duration::from_millis(400);
const LONG_AFTER_DEFAULT: Duration = Duration::from_millis(800);

/// A button's times (`button = true`): presses are published as events on
/// `button/<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ButtonTimes {
    /// A second press this soon after the first release makes a double.
    pub double_within: Duration,
    /// A press held this long is a long press.
    pub long_after: Duration,
}

/// The button keys of input `i`: `Some` for `button = true`.
pub(super) fn build(
    r: &RawInput,
    i: usize,
    o: &Origins<'_>,
) -> Result<Option<ButtonTimes>, ConfigError> {
    let at = |field: &str| format!("input[{i}].{field}");
    if r.button != Some(true) {
        for (key, set) in [
            ("double_within", r.double_within.is_some()),
            ("long_after", r.long_after.is_some()),
        ] {
            if set {
                return Err(o.invalid(
                    &at(key),
                    "means something only on a button; add button = true, or remove it",
                ));
            }
        }
        return Ok(None);
    }
    if r.count == Some(true) {
        return Err(o.invalid(
            &at("button"),
            "an input counts pulses or is a button, not both; make two inputs on two pins",
        ));
    }
    let within = |key: &str, raw: &Option<String>, default, least, most: Duration| {
        let value = duration(raw, &at(key), o)?.unwrap_or(default);
        if value < least || value > most {
            return Err(o.invalid(
                &at(key),
                format!(
                    "out of range; allowed: \"{}\" to \"{}\"",
                    humantime::format_duration(least),
                    humantime::format_duration(most)
                ),
            ));
        }
        Ok(value)
    };
    let times = ButtonTimes {
        double_within: within(
            "double_within",
            &r.double_within,
            DOUBLE_WITHIN_DEFAULT,
            Duration::from_millis(50),
            Duration::from_secs(2),
        )?,
        long_after: within(
            "long_after",
            &r.long_after,
            LONG_AFTER_DEFAULT,
            Duration::from_millis(200),
            Duration::from_secs(10),
        )?,
    };
    Ok(Some(times))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{Overrides, from_text};

    fn input(keys: &str) -> Result<crate::config::Config, String> {
        from_text(
            &format!("[device]\nid = \"pi\"\n[[input]]\nname = \"hall\"\npin = 17\n{keys}"),
            None,
            &Overrides::default(),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_button_has_its_times_or_the_defaults_and_nothing_else_takes_them() {
        let b = input("button = true\n").unwrap().inputs[0].button.unwrap();
        assert_eq!(b.double_within, Duration::from_millis(400));
        assert_eq!(b.long_after, Duration::from_millis(800));
        let b = input("button = true\ndouble_within = \"250ms\"\nlong_after = \"2s\"\n")
            .unwrap()
            .inputs[0]
            .button
            .unwrap();
        assert_eq!(
            (b.double_within, b.long_after),
            (Duration::from_millis(250), Duration::from_secs(2))
        );
        for (keys, words) in [
            ("long_after = \"1s\"\n", "add button = true"),
            (
                "button = true\ndouble_within = \"10ms\"\n",
                "allowed: \"50ms\" to \"2s\"",
            ),
            (
                "button = true\nlong_after = \"1m\"\n",
                "allowed: \"200ms\" to \"10s\"",
            ),
            (
                "button = true\ncount = true\n",
                "counts pulses or is a button",
            ),
        ] {
            let err = input(keys).expect_err(keys);
            assert!(err.contains(words), "{keys}: {err}");
        }
    }
}
