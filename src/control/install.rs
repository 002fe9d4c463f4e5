//! The install command (`<prefix>/<id>/cmd/update`, Home Assistant's
//! Install button): whether it may ask for the release this device has
//! fetched and checked to be installed. It goes through the same gate as a
//! pin command (its size, a retained or queued copy needs a fresh `"ts"`),
//! though it can do less: only a release the release key signed, that the
//! operator published for this device and that the agent checked, is ever
//! installed, whoever sends it.

use serde_json::Value;

use super::{Body, Incoming, Refusal, body, check_age, shorten, stamp};
use crate::config::CommandRules;

const EXAMPLE: &str =
    "{\"action\":\"install\"} (or with \"version\": \"0.1.0-2\" to name the release)";

/// An install asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InstallCommand {
    /// The sender's `"id"`, echoed on the result topic.
    pub(crate) id: Option<String>,
    /// The release it means; `None`: the one checked.
    pub(crate) version: Option<String>,
}

/// Parses and authorises an install command.
pub(crate) fn parse(
    incoming: Incoming<'_>,
    limits: &CommandRules,
) -> Result<InstallCommand, Refusal> {
    let (value, id) = match body(
        &incoming,
        limits,
        ("install", "an install command", EXAMPLE),
    )? {
        Body::Word => {
            let plain = |error: String| Refusal { id: None, error };
            check_age(incoming, None, limits).map_err(plain)?;
            return Ok(InstallCommand {
                id: None,
                version: None,
            });
        }
        Body::Json { value, id } => (value, id),
    };
    let fail = |error: String| Refusal {
        id: id.clone(),
        error,
    };
    match value.get("action").and_then(Value::as_str) {
        Some("install") => {}
        Some(other) => {
            return Err(fail(format!(
                "{:?} is not what cmd/update does; it takes {EXAMPLE}",
                shorten(other)
            )));
        }
        None => {
            return Err(fail(format!(
                "an install command needs \"action\"; send {EXAMPLE}"
            )));
        }
    }
    let version = match value.get("version") {
        None | Some(Value::Null) => None,
        Some(Value::String(v)) if crate::release::version::valid(v) => Some(v.clone()),
        Some(v) => {
            return Err(fail(format!(
                "\"version\" {} is not a Debian version",
                shorten(&v.to_string())
            )));
        }
    };
    let ts = stamp(value.get("ts").unwrap_or(&Value::Null)).map_err(&fail)?;
    check_age(incoming, ts, limits).map_err(&fail)?;
    Ok(InstallCommand { id, version })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ClockState;

    fn incoming(payload: &str, retained: bool) -> Incoming<'_> {
        Incoming {
            name: "update",
            payload: payload.as_bytes(),
            retained,
            persistent_session: false,
            now_millis: 1_796_100_000_000,
            clock: ClockState::Trusted,
        }
    }

    fn rules() -> CommandRules {
        crate::config::from_text("[device]\nid = \"pi\"\n", None, &Default::default())
            .unwrap()
            .commands
    }

    #[test]
    fn home_assistants_install_and_a_named_version_are_taken() {
        let r = rules();
        assert_eq!(
            parse(incoming(r#"{"action":"install"}"#, false), &r).unwrap(),
            InstallCommand {
                id: None,
                version: None
            }
        );
        let named = parse(
            incoming(
                r#"{"action":"install","version":"0.1.0-2","id":"a"}"#,
                false,
            ),
            &r,
        )
        .unwrap();
        assert_eq!(named.version.as_deref(), Some("0.1.0-2"));
        assert_eq!(named.id.as_deref(), Some("a"));
        assert!(parse(incoming("install", false), &r).is_ok());
    }

    #[test]
    fn a_retained_install_replays_at_every_connect_and_is_refused_without_a_fresh_ts() {
        let r = rules();
        let err = parse(incoming(r#"{"action":"install"}"#, true), &r).unwrap_err();
        assert!(
            err.error.contains("retained command ignored"),
            "{}",
            err.error
        );
        let stale = r#"{"action":"install","ts":1796000000000}"#;
        let err = parse(incoming(stale, true), &r).unwrap_err();
        assert!(err.error.contains("older than"), "{}", err.error);
    }

    #[test]
    fn anything_else_is_refused_in_words() {
        let r = rules();
        for (payload, words) in [
            ("on", "is not an install command"),
            (r#"{"action":"toggle"}"#, "is not what cmd/update does"),
            (r#"{"version":"1"}"#, "needs \"action\""),
            (
                r#"{"action":"install","version":"../../x"}"#,
                "is not a Debian version",
            ),
        ] {
            let err = parse(incoming(payload, false), &r).unwrap_err();
            assert!(err.error.contains(words), "{payload}: {}", err.error);
        }
        let huge = format!("{{\"action\":\"install\",\"id\":\"{}\"}}", "x".repeat(5000));
        assert!(parse(incoming(&huge, false), &r).is_err());
    }
}
