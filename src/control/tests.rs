//! `parse` against a fixed config: every refusal in the words a sender reads.

use super::*;
use crate::config::Pull;

fn outputs() -> Vec<Output> {
    vec![
        Output {
            name: "relay".into(),
            pin: crate::config::PinAt::Gpio(27),
            line: None,
            initial: false,
            safe_state: Some(false),
            pwm: false,
        },
        Output {
            name: "fan".into(),
            pin: crate::config::PinAt::Gpio(18),
            line: None,
            initial: false,
            safe_state: None,
            pwm: true,
        },
    ]
}

fn inputs() -> Vec<Input> {
    vec![Input {
        name: "door".into(),
        pin: crate::config::PinAt::Gpio(17),
        line: None,
        pull: Pull::Up,
        debounce: Duration::from_millis(50),
        invert: false,
        poll_interval: None,
        count: None,
        button: None,
    }]
}

fn limits() -> CommandRules {
    CommandRules {
        max_pulse: Duration::from_secs(10),
        max_age: Duration::from_secs(30),
        max_future: Duration::from_secs(5),
        max_payload: 256,
        allow_unstamped: false,
        min_interval: Duration::from_millis(100),
    }
}

const NOW: i64 = 1_795_430_292_000;

fn send(name: &str, payload: &str) -> Result<PinCommand, Refusal> {
    send_as(name, payload, false)
}

fn send_as(name: &str, payload: &str, retained: bool) -> Result<PinCommand, Refusal> {
    let incoming = Incoming {
        name,
        payload: payload.as_bytes(),
        retained,
        persistent_session: false,
        now_millis: NOW,
        clock: crate::control::ClockState::Trusted,
    };
    parse(incoming, &outputs(), &inputs(), &limits())
}

/// As it arrives with `clean_session = false`.
fn send_with_session(payload: &str, limits: &CommandRules) -> Result<PinCommand, Refusal> {
    let incoming = Incoming {
        name: "relay",
        payload: payload.as_bytes(),
        retained: false,
        persistent_session: true,
        now_millis: NOW,
        clock: crate::control::ClockState::Trusted,
    };
    parse(incoming, &outputs(), &inputs(), limits)
}

fn stamped(ts: &str) -> String {
    format!(r#"{{"action":"on","ts":{ts}}}"#)
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
    assert!(refused("door", "on").starts_with("\"door\" is an input; only outputs take commands"));
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
    let words = refused("relay", &stale);
    assert!(words.contains("older than the 30 s allowed"), "{words}");
    assert!(
        words.contains("if it was fresh, this device's clock is ahead"),
        "{words}"
    );
}

#[test]
fn a_stamp_from_the_future_is_refused_beyond_the_skew_allowance() {
    let e = refused("relay", &stamped(r#""2099-01-01T00:00:00Z""#));
    assert!(
        e.starts_with("command is stamped 2099-01-01T00:00:00.000Z,")
            && e.contains(
                "ahead of this device's clock (more than the 5 s allowed, commands.max_future)"
            ),
        "{e}"
    );
    let e = send_as("relay", &stamped(r#""2099-01-01T00:00:00Z""#), true)
        .unwrap_err()
        .error;
    assert!(e.contains("commands.max_future"), "retained too: {e}");
    // A little skew is fine; past the allowance is not.
    assert!(send("relay", &stamped(&(NOW + 4_000).to_string())).is_ok());
    assert!(refused("relay", &stamped(&(NOW + 6_000).to_string())).contains("ahead"));
    assert!(send("relay", &stamped(&format!("{}.5", NOW / 1000 + 4))).is_ok());
    assert!(refused("relay", &stamped(&format!("{}", NOW / 1000 + 60))).contains("ahead"));
}

#[test]
fn absurd_stamps_are_refused_in_words() {
    for ts in [
        "-1e300",
        "1e300",
        "-1",
        "0",
        "1.7976931348623157e308",
        "-9223372036854775808",
        "18446744073709551615",
        "99999999999999999999999",
        "946684799",
        "7258118400000",
    ] {
        let e = refused("relay", &stamped(ts));
        assert!(
            e.starts_with("\"ts\" ") && e.contains("is not a time between the years 2000 and 2199"),
            "{ts}: {e}"
        );
    }
    for ts in [
        r#""NaN""#,
        r#""inf""#,
        r#""-Infinity""#,
        r#""1795430292""#,
        r#""""#,
    ] {
        let e = refused("relay", &stamped(ts));
        assert!(e.contains("is not an RFC 3339 time"), "{ts}: {e}");
    }
    let e = refused("relay", &stamped(r#""1999-12-31T23:59:59Z""#));
    assert!(
        e.contains("not a time between the years 2000 and 2199"),
        "{e}"
    );
    let e = refused("relay", &stamped("[1]"));
    assert!(
        e.starts_with("\"ts\" must be a time string or a number"),
        "{e}"
    );
    // JSON has no NaN; serde refuses it as JSON, before any arithmetic.
    assert!(refused("relay", &stamped("NaN")).starts_with("command is not valid JSON"));
}

#[test]
fn micro_and_nanosecond_stamps_are_refused_not_read_as_far_future() {
    let micros = NOW * 1000;
    let nanos = NOW * 1_000_000;
    for ts in [micros.to_string(), nanos.to_string(), format!("{micros}.0")] {
        let e = refused("relay", &stamped(&ts));
        assert!(
            e.contains("microseconds and nanoseconds are refused"),
            "{ts}: {e}"
        );
    }
}

#[test]
fn seconds_and_milliseconds_both_read_as_the_same_time() {
    let secs = send("relay", &stamped(&(NOW / 1000).to_string())).unwrap();
    let millis = send("relay", &stamped(&NOW.to_string())).unwrap();
    let text = send(
        "relay",
        &stamped(&format!("\"{}\"", utc::rfc3339_millis(NOW))),
    )
    .unwrap();
    let at = |c: &PinCommand| c.stamp.as_ref().map(|s| s.at_millis);
    assert_eq!(
        (at(&secs), at(&millis), at(&text)),
        (Some(NOW), Some(NOW), Some(NOW))
    );
    let frac = send("relay", &stamped(&format!("{}.25", NOW / 1000))).unwrap();
    assert_eq!(at(&frac), Some(NOW + 250));
    assert_eq!(send("relay", "on").unwrap().stamp, None, "unstamped");
}

#[test]
fn the_stamp_key_is_the_id_or_a_checksum_of_the_payload() {
    let with_id = send("relay", r#"{"action":"on","id":"c1","ts":1795430292}"#).unwrap();
    assert_eq!(with_id.stamp.unwrap().key, "id:c1");
    let a = send("relay", &stamped("1795430292"))
        .unwrap()
        .stamp
        .unwrap();
    let b = send("relay", r#"{"action":"off","ts":1795430292}"#)
        .unwrap()
        .stamp
        .unwrap();
    assert_eq!(a.at_millis, b.at_millis);
    assert_ne!(a.key, b.key, "different commands at one instant stay apart");
    let long = format!(r#"{{"action":"on","id":"{}"}}"#, "i".repeat(129));
    assert!(refused("relay", &long).contains("\"id\" is 129 bytes; at most 128"));
}

#[test]
fn with_a_persistent_session_only_stamped_commands_are_applied() {
    let e = send_with_session("on", &limits()).unwrap_err().error;
    assert!(
        e.starts_with("command has no \"ts\": with clean_session = false"),
        "{e}"
    );
    assert!(send_with_session(r#"{"action":"toggle"}"#, &limits()).is_err());
    assert!(send_with_session(&stamped(&NOW.to_string()), &limits()).is_ok());
    let lenient = CommandRules {
        allow_unstamped: true,
        ..limits()
    };
    assert!(send_with_session("on", &lenient).is_ok());
    assert!(
        send("relay", "on").is_ok(),
        "without a session a live command needs no stamp"
    );
}

#[test]
fn pwm_numbers_have_bounds() {
    let pwm = |duty: &str, hz: &str| {
        send(
            "fan",
            &format!(r#"{{"action":"pwm","duty":{duty},"hz":{hz}}}"#),
        )
    };
    assert!(pwm("0.5", "1").is_ok());
    assert!(pwm("0.5", "100000").is_ok());
    for (duty, hz, words) in [
        (
            "0.5",
            "0.5",
            "hz 0.5 is out of range; allowed on GPIO18: 1 to 100000",
        ),
        ("0.5", "1e-300", "is out of range"),
        ("0.5", "0", "is out of range"),
        ("0.5", "-1", "is out of range"),
        ("0.5", "100001", "is out of range"),
        ("0.5", "1e300", "is out of range"),
        (
            "0.5",
            "\"fast\"",
            "\"hz\" \"fast\" is not a number of hertz",
        ),
        ("-0.1", "1000", "duty -0.1 is out of range"),
        ("1e300", "1000", "is out of range; allowed: 0.0 to 1.0"),
        ("\"half\"", "1000", "pwm needs \"duty\": a number"),
    ] {
        let e = pwm(duty, hz).unwrap_err().error;
        assert!(e.contains(words), "duty {duty} hz {hz}: {e}");
    }
    for ms in ["-1", "0.5", "1e300", "18446744073709551616", "\"5\""] {
        let e = refused("relay", &format!(r#"{{"action":"pulse","ms":{ms}}}"#));
        assert!(
            e.contains("pulse needs \"ms\": a whole number"),
            "{ms}: {e}"
        );
    }
    assert!(
        refused("relay", r#"{"action":"pulse","ms":18446744073709551615}"#)
            .contains("longer than the 10000 ms allowed")
    );
}

#[test]
fn software_pwm_pins_have_a_lower_ceiling() {
    let mut outs = outputs();
    outs[1].pin = crate::config::PinAt::Gpio(22);
    let incoming = Incoming {
        name: "fan",
        payload: br#"{"action":"pwm","duty":0.5,"hz":20000}"#,
        retained: false,
        persistent_session: false,
        now_millis: NOW,
        clock: crate::control::ClockState::Trusted,
    };
    let e = parse(incoming, &outs, &inputs(), &limits())
        .unwrap_err()
        .error;
    assert!(e.contains("allowed on GPIO22: 1 to 10000"), "{e}");
}

#[test]
fn a_stamp_waits_for_a_trusted_clock_and_a_jump_is_named_in_its_refusal() {
    let with_clock = |payload: &str, clock: ClockState<'_>| {
        parse(
            Incoming {
                name: "relay",
                payload: payload.as_bytes(),
                retained: false,
                persistent_session: false,
                now_millis: NOW,
                clock,
            },
            &outputs(),
            &inputs(),
            &limits(),
        )
    };
    let fresh = format!(r#"{{"action":"on","id":"a","ts":{NOW}}}"#);
    let why = "it reads 1970-01-01T00:00:03.000Z, before this pinpost was written";
    let refusal = with_clock(&fresh, ClockState::Untrusted(why)).unwrap_err();
    assert_eq!(refusal.id.as_deref(), Some("a"));
    assert!(
        refusal
            .error
            .starts_with("not applied: this device's clock is not set yet (it reads 1970"),
        "{}",
        refusal.error
    );
    assert!(
        with_clock(r#"{"action":"on"}"#, ClockState::Untrusted(why)).is_ok(),
        "an unstamped live command does not need the clock"
    );
    let stale = format!(r#"{{"action":"on","ts":{}}}"#, NOW - 60_000);
    let jumped = "the clock jumped back by 1 hour (it now reads …)";
    let refusal = with_clock(&stale, ClockState::Jumped(jumped)).unwrap_err();
    assert!(
        refusal.error.ends_with(
            "(this device's clock moved lately: the clock jumped back by 1 hour (it now reads …))"
        ),
        "{}",
        refusal.error
    );
    assert!(with_clock(&fresh, ClockState::Jumped(jumped)).is_ok());
}
