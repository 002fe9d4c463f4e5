//! `pinpost demo`: the whole system in one process, as a newcomer runs it
//! first (the README's first command is `cargo run --release -- demo`;
//! `scripts/test.sh` runs exactly that too).

use std::time::Duration;

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(60);

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ten_seconds_show_every_stage_and_exit_0() {
    let out = pinpost(&strings(&["demo", "--duration", "10s"]), LIMIT);
    let shown = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}\n{}", stderr(&out));
    for line in [
        "a broker built into this process on mqtts://127.0.0.1:",
        "status   online",
        "sensor   temperature 21.00 °C (seq 1)",
        "input    button on (seq 2)",
        "command  → relay: {\"action\":\"toggle\",\"id\":\"demo-1\"}",
        "result   relay demo-1 ok",
        "output   relay on (seq 2)",
        "input    door on (seq 2)   ← wired to relay",
        "demo     every stage seen",
    ] {
        assert!(shown.contains(line), "no {line:?} in:\n{shown}");
    }
    assert!(
        stderr(&out).is_empty(),
        "nothing on stderr: {}",
        stderr(&out)
    );
}

#[test]
fn too_short_a_run_names_the_stages_it_did_not_see() {
    // Commands start after 2 s.
    let out = pinpost(&strings(&["demo", "--duration", "1s"]), LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let said = stderr(&out);
    assert!(
        said.contains("the demo ended without showing")
            && said.contains("a command sent to the relay")
            && said.contains("the input wired to the relay following it"),
        "{said}"
    );
}

#[test]
fn config_prints_a_config_to_start_from() {
    let out = pinpost(&strings(&["demo", "--duration", "3s", "--config"]), LIMIT);
    let shown = stdout(&out);
    for part in [
        "[device]\nid = \"demo-pi\"",
        "[broker.tls]",
        "[[input]]\nname = \"door\"",
        "[[output]]\nname = \"relay\"",
        "[[sensor]]\nname = \"temperature\"",
    ] {
        assert!(shown.contains(part), "no {part:?} in:\n{shown}");
    }
}

#[test]
fn the_same_demo_runs_against_a_real_mosquitto() {
    let pki = Pki::new("main");
    let server = pki.server(&["127.0.0.1"]);
    let device = pki.client("pi-01");
    let broker = Broker::mutual(&pki, server);
    let out = pinpost(
        &strings(&[
            "demo",
            "--duration",
            "7s",
            "--id",
            "pi-01",
            "--broker",
            &format!("127.0.0.1:{}", broker.port),
            "--cafile",
            &pki.ca.cert.display().to_string(),
            "--cert",
            &device.cert.display().to_string(),
            "--key",
            &device.key.display().to_string(),
        ]),
        LIMIT,
    );
    let shown = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}\n{}", stderr(&out));
    assert!(shown.contains(&format!("the broker at mqtts://127.0.0.1:{}", broker.port)));
    assert!(shown.contains("result   relay demo-1 ok"), "{shown}");
}

#[test]
fn bad_flags_say_what_to_write() {
    let out = pinpost(&strings(&["demo", "--duration", "soon"]), LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("write it like \"10s\""),
        "{}",
        stderr(&out)
    );
    let out = pinpost(&strings(&["demo", "--broker", "127.0.0.1:1"]), LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--broker needs --cafile, --cert and --key"),
        "{}",
        stderr(&out)
    );
}
