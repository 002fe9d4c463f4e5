//! Pins on I2C expanders (`[[expander]]`, `pin = "mcp0:B0"`) as `pinpost
//! run` drives them against a real Mosquitto, on the sim board's simulated
//! MCP23017: a command sets an expander output, the expander input wired
//! to it is published, and an expander that stops answering is said in
//! words, refuses commands instead of claiming a level, and is set up
//! again when it answers. Asserted on what a subscriber receives.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(20);

fn value(line: &str, topic: &str) -> Option<serde_json::Value> {
    let (t, payload) = line.split_once(' ')?;
    (t == topic).then(|| serde_json::from_str(payload).ok())?
}

#[test]
fn an_expander_output_drives_its_input_and_a_vanished_expander_is_said_and_recovered() {
    let pki = Pki::new("expanders");
    let server = pki.server(&["127.0.0.1"]);
    pki.client("pi-01");
    let operator = pki.client("operator");
    let broker = Broker::mutual(&pki, server);
    let state = tempfile::tempdir().unwrap();
    let unplugged = state.path().join("unplugged");
    let config = pki.path().join("pinpost.toml");
    std::fs::write(
        &config,
        format!(
            r#"{head}[board]
kind = "sim"
wires = [["mcp0:B0", "mcp0:A0"]]
unplugged = "{unplugged}"

[outbox]
path = "{state}"

[commands]
min_interval = "0ms"

[[expander]]
name = "mcp0"
chip = "mcp23017"
address = 0x20
poll_interval = "20ms"

[[input]]
name = "door"
pin = "mcp0:A0"
debounce = "10ms"

[[output]]
name = "relay"
pin = "mcp0:B0"
"#,
            head = ConfigHead::new(broker.port),
            unplugged = unplugged.display(),
            state = state.path().display()
        ),
    )
    .unwrap();
    let mut args = strings(&["-h", "127.0.0.1", "-p", &broker.port.to_string()]);
    args.extend(tls_args(&pki.ca.cert, Some(&operator)));
    let command = |payload: &str| {
        let out = Command::new("mosquitto_pub")
            .args(&args)
            .args(["-q", "1", "-t", "pinpost/pi-01/cmd/relay", "-m", payload])
            .output()
            .expect("mosquitto_pub");
        assert!(out.status.success(), "{out:?}");
    };
    let witness = Witness::start(&broker, "pinpost/pi-01/#", &args);
    let mut agent = Background::start(&strings(&[
        "run",
        "--config",
        &config.display().to_string(),
    ]));
    agent.wait_for(
        "expander mcp0 (MCP23017 at 0x20 on /dev/i2c-1) set up",
        WAIT,
    );
    agent.wait_for("connected", WAIT);
    let door_is = |level: bool| {
        move |line: &str| {
            value(line, "pinpost/pi-01/input/door").is_some_and(|v| v["value"] == level)
        }
    };
    witness.wait_until("door low at start", WAIT, door_is(false));

    command("on");
    let seen = witness.wait_until("door high after relay on", WAIT, door_is(true));
    assert!(
        seen.iter()
            .any(|l| value(l, "pinpost/pi-01/output/relay").is_some_and(|v| v["value"] == true)),
        "relay's new state published: {seen:?}"
    );

    // Unplugged: said once in words, and a command is refused, not assumed.
    std::fs::write(&unplugged, "mcp0\n").unwrap();
    agent.wait_for(
        "expander mcp0 (MCP23017 at 0x20 on /dev/i2c-1) does not answer: nothing answers at 0x20",
        WAIT,
    );
    command(r#"{"id":"while-gone","action":"off"}"#);
    let seen = witness.wait_until("the refusal", WAIT, |l| {
        value(l, "pinpost/pi-01/cmd/relay/result").is_some_and(|v| v["id"] == "while-gone")
    });
    let result = value(seen.last().unwrap(), "pinpost/pi-01/cmd/relay/result").unwrap();
    assert_eq!(result["ok"], false, "{result}");
    let error = result["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("does not answer") && error.contains("the output was not set"),
        "{error}"
    );
    assert!(
        !seen
            .iter()
            .any(|l| value(l, "pinpost/pi-01/output/relay").is_some_and(|v| v["value"] == false)),
        "no state claimed for a write that did not happen: {seen:?}"
    );

    // Plugged back: set up again with the level last set, then commands work.
    std::fs::remove_file(&unplugged).unwrap();
    agent.wait_for(
        "answers again; set up again, with its outputs at the levels last set (relay high)",
        WAIT,
    );
    command("off");
    witness.wait_until("door low after relay off", WAIT, door_is(false));
}
