//! Value parsers several sections share: durations, names that become topic
//! levels, and the one word of an enum-like key. Each reports a bad value
//! through `Origins`, with how to write a good one.
//!
//! It knows how values are written, not which key holds which value.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use super::error::ConfigError;
use super::origins::Origins;

const ID_MAX_CHARS: usize = 64;

/// The command name (`<prefix>/<id>/cmd/update`) that asks for a checked
/// release to be installed; no input, output or sensor may take it.
pub(crate) const UPDATE_COMMAND: &str = "update";

/// The word of an enum-like key (`board.kind`, `outbox.policy`, …) as its
/// enum, or `None` when the key is absent. The enum's `FromStr` lists the
/// words it takes and says what each means, so the message stays its own.
pub(super) fn word<T: FromStr<Err = String>>(
    value: Option<&str>,
    key: &str,
    o: &Origins<'_>,
) -> Result<Option<T>, ConfigError> {
    value
        .map(|text| text.parse().map_err(|problem| o.invalid(key, problem)))
        .transpose()
}

pub(super) fn duration(
    value: &Option<String>,
    key: &str,
    o: &Origins<'_>,
) -> Result<Option<Duration>, ConfigError> {
    let Some(text) = value else { return Ok(None) };
    humantime::parse_duration(text.trim())
        .map(Some)
        .map_err(|_| {
            o.invalid(
                key,
                format!("{text:?} is not a duration; write it like \"500ms\", \"30s\" or \"2m\""),
            )
        })
}

/// A device id or prefix is one MQTT topic level: wildcards or a `/` in it
/// would make its topics match, or split into, other devices' topics.
pub(super) fn check_topic_level(
    value: &str,
    key: &str,
    o: &Origins<'_>,
) -> Result<(), ConfigError> {
    let bad = value
        .chars()
        .find(|c| matches!(c, '+' | '#' | '/') || c.is_control() || c.is_whitespace());
    let problem = if value.is_empty() {
        "is empty".to_string()
    } else if let Some(c) = bad {
        format!("{value:?} contains {c:?}")
    } else if value.chars().count() > ID_MAX_CHARS {
        format!("{value:?} is longer than {ID_MAX_CHARS} characters")
    } else {
        return Ok(());
    };
    Err(o.invalid(
        key,
        format!(
            "{problem}; it becomes one level of every topic, so use letters, digits, \
             '-', '_' or '.', with no '+', '#', '/' or spaces (e.g. \"pi-01\")"
        ),
    ))
}

/// The name of an input, output or sensor: one topic level, used once
/// across all three (`seen` holds the names so far, each with its key).
pub(super) fn name(
    value: Option<&str>,
    key: &str,
    seen: &mut HashMap<String, String>,
    o: &Origins<'_>,
) -> Result<String, ConfigError> {
    let Some(name) = value else {
        return Err(o.invalid(
            key,
            "missing; every input, output and sensor needs a name (e.g. name = \"door\")",
        ));
    };
    check_topic_level(name, key, o)?;
    if name.chars().all(|c| c == '.') {
        // A counter keeps its total in a file named after its input: "."
        // and ".." are folders, not files.
        return Err(o.invalid(
            key,
            format!(
                "{name:?} is only dots; give a name with a letter or digit (e.g. name = \"door\")"
            ),
        ));
    }
    if name == UPDATE_COMMAND {
        return Err(o.invalid(
            key,
            format!(
                "{name:?} is taken: <prefix>/<id>/cmd/{UPDATE_COMMAND} is the command that \
                 installs a release; give this one another name"
            ),
        ));
    }
    if let Some(first) = seen.insert(name.to_string(), key.to_string()) {
        return Err(o.invalid(
            key,
            format!("{name:?} is already used by {first}; names must be unique"),
        ));
    }
    Ok(name.to_string())
}
