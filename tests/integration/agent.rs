//! `pinpost run` as the systemd unit runs it, against a real Mosquitto with
//! mutual TLS, on a simulated board whose relay output is wired to a button
//! input. Everything is asserted on what an independent subscriber receives.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(15);

struct Rig {
    pki: Pki,
    broker: Broker,
    operator: Files,
}

impl Rig {
    fn new() -> Rig {
        let pki = Pki::new("main");
        let server = pki.server(&["127.0.0.1"]);
        pki.client("pi-01");
        let operator = pki.client("operator");
        let broker = Broker::mutual(&pki, server);
        Rig {
            pki,
            broker,
            operator,
        }
    }

    fn config(&self) -> std::path::PathBuf {
        let path = self.pki.path().join("pinpost.toml");
        std::fs::write(
            &path,
            format!(
                r#"{head}[board]
kind = "sim"
wires = [[27, 17]]

[[input]]
name = "button"
pin = 17
debounce = "20ms"

[[output]]
name = "relay"
pin = 27
safe_state = "off"

[[output]]
name = "fan"
pin = 18
pwm = true

[commands]
max_pulse = "2s"
max_payload = 256
"#,
                head = ConfigHead::new(self.broker.port)
            ),
        )
        .unwrap();
        path
    }

    fn operator_args(&self) -> Vec<String> {
        let mut args = strings(&["-h", "127.0.0.1", "-p", &self.broker.port.to_string()]);
        args.extend(tls_args(&self.pki.ca.cert, Some(&self.operator)));
        args
    }

    /// Publishes a command as an operator would, with mosquitto_pub.
    fn command(&self, output: &str, payload: &str, retain: bool) {
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args(self.operator_args()).args([
            "-q",
            "1",
            "-t",
            &format!("pinpost/pi-01/cmd/{output}"),
            "-m",
            payload,
        ]);
        if retain {
            cmd.arg("-r");
        }
        let out = cmd.output().expect("mosquitto_pub");
        assert!(out.status.success(), "mosquitto_pub: {out:?}");
    }

    /// The one retained message on `topic`, as a late subscriber sees it.
    fn retained(&self, topic: &str) -> String {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(self.operator_args())
            .args(["-t", topic, "-C", "1", "-W", "5"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = run_limited(cmd, None, WAIT);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn json(line: &str) -> (String, serde_json::Value) {
    let (topic, payload) = line.split_once(' ').unwrap_or((line, ""));
    (
        topic.to_string(),
        serde_json::from_str(payload).unwrap_or(serde_json::Value::Null),
    )
}

fn is(topic: &str) -> impl Fn(&str) -> bool + '_ {
    move |line| line.split_once(' ').is_some_and(|(t, _)| t == topic)
}

fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn run_args(config: &Path) -> Vec<String> {
    strings(&["run", "--config", &config.display().to_string()])
}

#[test]
fn run_answers_commands_drives_the_wired_input_and_goes_safe_on_sigterm() {
    let rig = Rig::new();
    // A command left retained on the broker before the agent starts must
    // not be replayed onto the pin.
    rig.command("relay", "on", true);
    let witness = Witness::start(&rig.broker, "pinpost/pi-01/#", &rig.operator_args());
    let agent = Background::start(&run_args(&rig.config()));

    witness.wait_until("status online", WAIT, |l| {
        l == "pinpost/pi-01/status online"
    });
    let seen = witness.wait_until(
        "the retained command refused",
        WAIT,
        is("pinpost/pi-01/cmd/relay/result"),
    );
    let (_, refusal) = json(seen.last().unwrap());
    assert_eq!(refusal["ok"], false);
    assert!(
        refusal["error"]
            .as_str()
            .unwrap()
            .starts_with("retained command ignored"),
        "{refusal}"
    );
    rig.command("relay", "", true); // clear it
    assert_eq!(
        rig.retained("pinpost/pi-01/status"),
        "online",
        "status is retained"
    );
    let (_, relay) = json(&format!("x {}", rig.retained("pinpost/pi-01/output/relay")));
    assert_eq!(
        relay["value"], false,
        "the relay starts at its initial level"
    );

    rig.command("relay", r#"{"action":"on","id":"c1"}"#, false);
    let (_, result) = json(
        witness
            .wait_until(
                "the result of c1",
                WAIT,
                is("pinpost/pi-01/cmd/relay/result"),
            )
            .last()
            .unwrap(),
    );
    assert_eq!(result, serde_json::json!({"id": "c1", "ok": true}));
    let (_, state) = json(
        witness
            .wait_until("relay on", WAIT, is("pinpost/pi-01/output/relay"))
            .last()
            .unwrap(),
    );
    assert_eq!(state["value"], true);
    let relay_seq = state["seq"].as_u64().unwrap();
    let (_, edge) = json(
        witness
            .wait_until("the button edge", WAIT, is("pinpost/pi-01/input/button"))
            .last()
            .unwrap(),
    );
    assert_eq!(edge["value"], true, "the wired input follows the relay");
    assert!(edge["ts"].as_str().unwrap().ends_with('Z'));

    let bad: [(&str, &str, &str); 10] = [
        ("pump", "on", "no output named \"pump\""),
        (
            "button",
            "on",
            "\"button\" is an input; only outputs take commands",
        ),
        (
            "relay",
            r#"{"action":"pulse","#,
            "command is not valid JSON",
        ),
        ("relay", "maybe", "\"maybe\" is not a command"),
        (
            "fan",
            r#"{"action":"pwm","duty":1.5,"id":"d"}"#,
            "duty 1.5 is out of range",
        ),
        (
            "relay",
            r#"{"action":"pulse","ms":5000}"#,
            "longer than the 2000 ms allowed",
        ),
        (
            "relay",
            r#"{"action":"pwm","duty":0.5}"#,
            "not set up for PWM",
        ),
        ("relay", &"x".repeat(300), "at most 256 are accepted"),
        (
            "relay",
            r#"{"action":"off","ts":"2020-01-01T00:00:00Z"}"#,
            "older than the 30 s allowed",
        ),
        (
            "relay",
            r#"{"action":"explode"}"#,
            "unknown action \"explode\"",
        ),
    ];
    for (output, payload, words) in bad {
        rig.command(output, payload, false);
        let topic = format!("pinpost/pi-01/cmd/{output}/result");
        let seen = witness.wait_until(words, WAIT, is(&topic));
        let (_, r) = json(seen.last().unwrap());
        assert_eq!(r["ok"], false, "{payload}");
        assert!(
            r["error"].as_str().unwrap().contains(words),
            "{payload}: {r}"
        );
        assert!(
            !seen
                .iter()
                .any(|l| l.contains("/output/") || l.contains("/input/")),
            "a refused command changed state: {seen:?}"
        );
    }
    let (_, relay) = json(&format!("x {}", rig.retained("pinpost/pi-01/output/relay")));
    assert_eq!(
        (relay["value"].as_bool(), relay["seq"].as_u64()),
        (Some(true), Some(relay_seq))
    );

    sigterm(agent.pid());
    let (_, safe) = json(
        witness
            .wait_until("the safe state", WAIT, is("pinpost/pi-01/output/relay"))
            .last()
            .unwrap(),
    );
    assert_eq!(safe["value"], false, "safe_state is off");
    witness.wait_until("status offline", WAIT, |l| {
        l == "pinpost/pi-01/status offline"
    });
    let (status, _) = agent.finish(WAIT);
    assert!(status.success(), "exit {status:?}");
    assert_eq!(rig.retained("pinpost/pi-01/status"), "offline");
}

#[test]
fn a_pulse_and_a_toggle_come_back_as_states() {
    let rig = Rig::new();
    let witness = Witness::start(&rig.broker, "pinpost/pi-01/output/#", &rig.operator_args());
    let agent = Background::start(&run_args(&rig.config()));
    witness.wait_until(
        "the initial relay state",
        WAIT,
        is("pinpost/pi-01/output/relay"),
    );
    rig.command("relay", r#"{"action":"pulse","ms":300}"#, false);
    let states: Vec<bool> = (0..2)
        .map(|_| {
            json(
                witness
                    .wait_until("a relay state", WAIT, is("pinpost/pi-01/output/relay"))
                    .last()
                    .unwrap(),
            )
            .1["value"]
                .as_bool()
                .unwrap()
        })
        .collect();
    assert_eq!(states, [true, false], "on for the pulse, then back");
    rig.command("relay", "TOGGLE", false);
    let (_, s) = json(
        witness
            .wait_until("toggled", WAIT, is("pinpost/pi-01/output/relay"))
            .last()
            .unwrap(),
    );
    assert_eq!(s["value"], true);
    rig.command("fan", r#"{"action":"pwm","duty":0.25,"hz":1000}"#, false);
    let (_, fan) = json(
        witness
            .wait_until("fan pwm", WAIT, |l| {
                l.starts_with("pinpost/pi-01/output/fan") && l.contains("duty")
            })
            .last()
            .unwrap(),
    );
    assert_eq!(
        (fan["duty"].as_f64(), fan["hz"].as_f64()),
        (Some(0.25), Some(1000.0))
    );
    sigterm(agent.pid());
    assert!(agent.finish(WAIT).0.success());
}

#[test]
fn rppal_off_a_pi_says_to_use_the_simulated_board() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pinpost.toml");
    std::fs::write(&config, "[device]\nid = \"pi-01\"\n[board]\nkind = \"rppal\"\n[[output]]\nname = \"relay\"\npin = 27\n").unwrap();
    let out = pinpost(&run_args(&config), WAIT);
    assert_eq!(out.status.code(), Some(6));
    let said = stderr(&out);
    assert!(
        said.contains("this machine is not a Raspberry Pi"),
        "{said}"
    );
    assert!(said.contains("[board] kind = \"sim\""), "{said}");
    let out = pinpost(&strings(&["gpio", "read", "17"]), WAIT);
    assert_eq!(out.status.code(), Some(6));
    let out = pinpost(
        &strings(&["gpio", "--board", "sim", "write", "27", "on"]),
        WAIT,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "GPIO27 set high\n");
    let out = pinpost(
        &strings(&["gpio", "--board", "sim", "--pull", "up", "read", "17"]),
        WAIT,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "GPIO17 high\n");
    let out = pinpost(
        &strings(&["gpio", "--board", "sim", "watch", "17", "-C", "0"]),
        WAIT,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "GPIO17 low (watching; Ctrl-C to stop)\n"
    );
    let out = pinpost(&strings(&["gpio", "--board", "sim", "read", "40"]), WAIT);
    assert!(
        stderr(&out).contains("40 is not a GPIO pin"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn systemd_hears_ready_status_and_watchdog_even_while_the_broker_is_down() {
    let rig = Rig::new();
    let config = rig.config();
    let down = config.with_file_name("down.toml");
    let port = free_port("127.0.0.1");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &down,
        text.replace(
            &format!("port = {}", rig.broker.port),
            &format!("port = {port}"),
        ),
    )
    .unwrap();
    let socket_path = rig.pki.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let agent = Background::start_with_env(
        &run_args(&down),
        &[
            ("NOTIFY_SOCKET", socket_path.display().to_string()),
            ("WATCHDOG_USEC", "200000".into()),
        ],
    );
    let mut heard = Vec::new();
    let mut buf = [0u8; 4096];
    while !(heard.iter().any(|m: &String| m.contains("READY=1"))
        && heard.iter().any(|m| m.contains("WATCHDOG=1"))
        && heard.iter().any(|m| m.starts_with("STATUS=retrying in")))
    {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification ({e}); heard {heard:?}"));
        heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let status = heard
        .iter()
        .find(|m| m.starts_with("STATUS=retrying in"))
        .unwrap();
    assert!(
        status.contains("connection refused by 127.0.0.1"),
        "{status}"
    );
    sigterm(agent.pid());
    let (exit, _) = agent.finish(WAIT);
    assert!(
        exit.success(),
        "SIGTERM while offline still exits 0: {exit:?}"
    );
}
