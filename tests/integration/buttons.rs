//! Buttons (`button = true`) as `pinpost run` publishes them to a real
//! Mosquitto: a sim board's relay wired to the button's pin, pressed by
//! pulse commands, and single, double and long presses told apart at the
//! configured times. Asserted on what a subscriber receives.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn single_double_and_long_presses_are_published_as_events() {
    let pki = Pki::new("buttons");
    let server = pki.server(&["127.0.0.1"]);
    pki.client("pi-01");
    let operator = pki.client("operator");
    let broker = Broker::mutual(&pki, server);
    let state = tempfile::tempdir().unwrap();
    let config = pki.path().join("pinpost.toml");
    std::fs::write(
        &config,
        format!(
            r#"{head}[board]
kind = "sim"
wires = [[27, 17]]

[outbox]
path = "{state}"

[commands]
max_pulse = "3s"
min_interval = "0ms"

[[input]]
name = "hall"
pin = 17
debounce = "10ms"
button = true
double_within = "400ms"
long_after = "1s"

[[output]]
name = "finger"
pin = 27
"#,
            head = ConfigHead::new(broker.port),
            state = state.path().display()
        ),
    )
    .unwrap();
    let mut args = strings(&["-h", "127.0.0.1", "-p", &broker.port.to_string()]);
    args.extend(tls_args(&pki.ca.cert, Some(&operator)));
    let press = |ms: u64| {
        let out = Command::new("mosquitto_pub")
            .args(&args)
            .args([
                "-q",
                "1",
                "-t",
                "pinpost/pi-01/cmd/finger",
                "-m",
                &format!(r#"{{"action":"pulse","ms":{ms}}}"#),
            ])
            .output()
            .expect("mosquitto_pub");
        assert!(out.status.success(), "{out:?}");
    };
    let witness = Witness::start(&broker, "pinpost/pi-01/button/hall", &args);
    let mut agent = Background::start(&strings(&[
        "run",
        "--config",
        &config.display().to_string(),
    ]));
    agent.wait_for("connected", WAIT);
    let event = |line: &str| -> String {
        let (_, payload) = line.split_once(' ').unwrap_or(("", ""));
        serde_json::from_str::<serde_json::Value>(payload).unwrap_or_default()["event_type"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let next = |what: &str| event(witness.wait_until(what, WAIT, |_| true).last().unwrap());

    // One short press.
    press(100);
    assert_eq!(next("a single press"), "single");
    // Two short presses 250 ms apart.
    press(100);
    std::thread::sleep(Duration::from_millis(250));
    press(100);
    assert_eq!(next("a double press"), "double");
    // Held 1.6 s: long while held, then its release.
    press(1600);
    assert_eq!(next("a long press"), "long");
    assert_eq!(next("its release"), "long_release");
    // Two presses further apart than double_within: two singles.
    press(100);
    std::thread::sleep(Duration::from_millis(900));
    press(100);
    assert_eq!(next("the first of two singles"), "single");
    assert_eq!(next("the second"), "single");
    let quiet = witness.messages(Duration::from_secs(1));
    assert!(quiet.is_empty(), "nothing more: {quiet:?}");
}
