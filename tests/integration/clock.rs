//! A Pi without a clock. The agent runs under libfaketime (the wall clock
//! moved, the monotonic and boot-time clocks left alone, as a real NTP step
//! leaves them); the clock is trusted only once `clock.mark` exists, as on
//! a Pi where systemd-timesyncd makes its mark. Against a real Mosquitto,
//! with a subscriber as the witness, each case checks what the README's
//! "Time on a Pi" promises:
//!
//! - no reading is lost, and nothing expires because the clock moved;
//! - every delivered reading is either dated right (its `ts` is the real
//!   time it was made) or says `"clock":"untrusted"`;
//! - within a boot, `ts` never goes back in `seq` order;
//! - a stamped command is refused until the clock is trusted, never
//!   applied twice (a power cut included), and a correctly stamped one is
//!   accepted within seconds of the clock being trusted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::*;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const WAIT: Duration = Duration::from_secs(15);
const SENSOR: &str = "pinpost/pi-01/sensor/temp";
const RELAY: &str = "pinpost/pi-01/output/relay";
const RESULT: &str = "pinpost/pi-01/cmd/relay/result";

struct Rig {
    pki: Pki,
    broker: Broker,
    gate: Gate,
    operator: Files,
    state: tempfile::TempDir,
    /// libfaketime's offset, read on every call.
    faketime: PathBuf,
    /// `clock.mark`: made when the test says a time source set the clock.
    mark: PathBuf,
    config: PathBuf,
}

impl Rig {
    fn new(max_age: &str) -> Rig {
        require_tool("faketime", "faketime");
        assert!(
            Path::new(LIBFAKETIME).exists(),
            "{LIBFAKETIME} is missing: install Debian's libfaketime (scripts/test.sh does)"
        );
        let pki = Pki::new("clock");
        let server = pki.server(&["127.0.0.1"]);
        pki.client("pi-01");
        let operator = pki.client("operator");
        let broker = Broker::mutual(&pki, server);
        let gate = Gate::start("127.0.0.1", broker.port);
        let state = tempfile::tempdir().unwrap();
        let dir = pki.path();
        let mark = dir.join("synchronized");
        let config = dir.join("pinpost.toml");
        std::fs::write(
            &config,
            format!(
                "{head}[reconnect]\ninitial = \"100ms\"\nmax = \"500ms\"\n[board]\nkind = \"sim\"\n\
                 [[output]]\nname = \"relay\"\npin = 27\n\
                 [commands]\nmin_interval = \"0s\"\n\
                 [outbox]\npath = \"{spool}\"\nmax_age = \"{max_age}\"\n\
                 [[sensor]]\nname = \"temp\"\nkind = \"sim\"\ninterval = \"100ms\"\nunit = \"°C\"\n",
                head = ConfigHead::new(gate.port)
                    .host("127.0.0.1")
                    .clock_mark(&mark),
                spool = state.path().display(),
            ),
        )
        .unwrap();
        Rig {
            faketime: dir.join("faketime"),
            pki,
            broker,
            gate,
            operator,
            state,
            mark,
            config,
        }
    }

    /// Sets the agent's wall clock (`-21d`, `+1h`, `+0`) and whether a
    /// time source has said it is set.
    fn clock(&self, offset: &str, synchronised: bool) {
        std::fs::write(&self.faketime, format!("{offset}\n")).unwrap();
        if synchronised {
            std::fs::write(&self.mark, "").unwrap();
        } else {
            let _ = std::fs::remove_file(&self.mark);
        }
    }

    fn start(&self) -> Background {
        let mut agent = Background::start_with_env(
            &strings(&["run", "--config", &self.config.display().to_string()]),
            &[
                ("RUST_LOG", "pinpost=info".to_string()),
                ("LD_PRELOAD", LIBFAKETIME.to_string()),
                (
                    "FAKETIME_TIMESTAMP_FILE",
                    self.faketime.display().to_string(),
                ),
                ("FAKETIME_NO_CACHE", "1".to_string()),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
            ],
        );
        agent.wait_for("starting", Duration::from_secs(10));
        agent
    }

    /// Starts the agent and waits until it is connected and subscribed:
    /// its first state comes after its subscription.
    fn start_online(&self, witness: &Witness) -> (Background, Vec<String>) {
        let agent = self.start();
        let seen = witness.wait_until("the relay's state", WAIT, |line| {
            line.starts_with(&format!("{RELAY} "))
        });
        (agent, seen)
    }

    fn operator_args(&self) -> Vec<String> {
        let mut args = strings(&["-h", "127.0.0.1", "-p", &self.broker.port.to_string()]);
        args.extend(tls_args(&self.pki.ca.cert, Some(&self.operator)));
        args
    }

    fn witness(&self) -> Witness {
        Witness::start(&self.broker, "pinpost/pi-01/#", &self.operator_args())
    }

    fn command(&self, payload: &str) {
        let out = Command::new("mosquitto_pub")
            .args(self.operator_args())
            .args(["-q", "1", "-t", "pinpost/pi-01/cmd/relay", "-m", payload])
            .output()
            .expect("mosquitto_pub");
        assert!(out.status.success(), "mosquitto_pub: {out:?}");
    }

    /// Sends a command and returns its result, with every message seen
    /// up to it.
    fn ask(&self, witness: &Witness, id: &str, body: &str) -> (serde_json::Value, Vec<String>) {
        self.command(&format!(r#"{{"id":"{id}",{body}}}"#));
        let seen = witness.wait_until(&format!("the result of {id}"), WAIT, |line| {
            line.starts_with(RESULT) && json(line)["id"] == id
        });
        (json(seen.last().unwrap()), seen)
    }

    /// Sends a correctly stamped command every half second until one is
    /// accepted; returns how long that took.
    fn accepted_within(&self, witness: &Witness, seen: &mut Vec<String>) -> Duration {
        let t0 = Instant::now();
        for i in 0.. {
            let (result, lines) = self.ask(
                witness,
                &format!("fresh-{i}"),
                &format!(r#""action":"toggle","ts":{}"#, real_ms()),
            );
            seen.extend(lines);
            if result["ok"] == true {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < WAIT,
                "a correctly stamped command is still refused: {result}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        unreachable!()
    }
}

fn real_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn json(line: &str) -> serde_json::Value {
    let (_, body) = line.split_once(' ').unwrap_or((line, ""));
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// RFC 3339 with milliseconds and `Z`, as pinpost writes it, to Unix ms.
fn unix_ms(ts: &str) -> i64 {
    pinpost::utc::parse_rfc3339_millis(ts).unwrap_or_else(|| panic!("not a ts: {ts}"))
}

/// What the witness saw of one topic's readings, checked against the
/// promises: seqs from `first` without a gap, `ts` never back in seq
/// order, and every reading either dated within `real` (the real time
/// the run took) or flagged. Returns (readings, flagged).
fn check_readings(topic: &str, seen: &[String], first: u64, real: (i64, i64)) -> (usize, usize) {
    let mut readings: Vec<(u64, serde_json::Value)> = Vec::new();
    for line in seen
        .iter()
        .filter(|l| l.split_once(' ').is_some_and(|(t, _)| t == topic))
    {
        let v = json(line);
        let seq = v["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seq: {line}"));
        // A QoS 1 duplicate says nothing new.
        if !readings.iter().any(|(s, _)| *s == seq) {
            readings.push((seq, v));
        }
    }
    readings.sort_by_key(|(seq, _)| *seq);
    assert!(!readings.is_empty(), "no {topic} at all");
    let seqs: Vec<u64> = readings.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs[0], first,
        "{topic}: the first reading was lost: {seqs:?}"
    );
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "{topic}: readings lost: {seqs:?}");
    }
    let mut flagged = 0;
    let mut last = i64::MIN;
    for (seq, v) in &readings {
        let ts = unix_ms(v["ts"].as_str().unwrap_or_else(|| panic!("no ts: {v}")));
        assert!(ts >= last, "{topic}: ts went back at seq {seq}: {v}");
        last = ts;
        if v["clock"] == "untrusted" {
            assert!(
                v["boot"].as_str().is_some_and(|b| b.len() == 36) && v["uptime_ms"].is_u64(),
                "a flagged reading says its boot and uptime: {v}"
            );
            flagged += 1;
        } else {
            assert!(v.get("clock").is_none(), "{v}");
            assert!(
                (real.0 - 1000..=real.1 + 1000).contains(&ts),
                "{topic} seq {seq} is not flagged, so its ts must be the real time it was made \
                 ({} ..= {}): {v}",
                real.0,
                real.1
            );
        }
    }
    (readings.len(), flagged)
}

/// The clock starts `behind`, online, untrusted; a stamped command is
/// refused in words, an unstamped one goes; then the clock is set.
#[test]
fn a_clock_three_weeks_behind_set_while_online() {
    let rig = Rig::new("1h");
    let witness = rig.witness();
    rig.clock("-21d", false);
    let real_start = real_ms();
    let (mut agent, mut seen) = rig.start_online(&witness);
    let (refused, lines) = rig.ask(
        &witness,
        "early",
        &format!(r#""action":"on","ts":{}"#, real_ms()),
    );
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(
        refused["ok"] == false
            && error.starts_with("not applied: this device's clock is not set yet"),
        "{refused}"
    );
    seen.extend(lines);
    let (unstamped, lines) = rig.ask(&witness, "live", r#""action":"on""#);
    seen.extend(lines);
    assert_eq!(unstamped["ok"], true, "{unstamped}");
    seen.extend(witness.messages(Duration::from_secs(1)));

    rig.clock("+0", true);
    let took = rig.accepted_within(&witness, &mut seen);
    seen.extend(witness.messages(Duration::from_secs(2)));
    let log = agent.log(Duration::from_millis(200));
    let (n, flagged) = check_readings(SENSOR, &seen, 1, (real_start, real_ms()));
    assert!(
        flagged >= 5,
        "the readings before the clock was set are flagged: {flagged} of {n}"
    );
    assert!(
        n - flagged >= 10,
        "and those after are dated: {flagged} of {n} flagged"
    );
    // The relay's retained state went again with a date.
    let last_state = seen
        .iter()
        .rev()
        .find(|l| l.starts_with(&format!("{RELAY} ")))
        .unwrap();
    assert!(json(last_state).get("clock").is_none(), "{last_state}");
    for words in [
        "the clock is not trusted: ",
        // "3 weeks", or "2 weeks 6 days" on a loaded machine.
        "the clock jumped forward by",
        "the clock is trusted: ",
    ] {
        assert!(log.contains(words), "the log says {words:?}: {log}");
    }
    assert!(!log.contains("expired"), "{log}");
    // stats says when the certificate ends (a fleet renewing by hand).
    let stats = seen
        .iter()
        .rev()
        .find(|l| l.starts_with("pinpost/pi-01/stats "))
        .expect("stats on connect");
    let ends = json(stats)["cert_ends"].as_str().map(unix_ms);
    assert!(ends.is_some_and(|t| t > real_ms()), "{stats}");
    println!(
        "-21d: {n} readings in order, {flagged} flagged before the clock was set; a stamped \
         command was accepted {took:?} after it was"
    );
}

/// At 1970 no certificate is valid yet, so the agent cannot connect: it
/// says why, keeps its readings, and once the clock is set connects and
/// sends them dated.
#[test]
fn a_clock_at_1970_set_while_the_broker_is_there() {
    let rig = Rig::new("1h");
    let witness = rig.witness();
    rig.clock(&format!("-{}d", real_ms() / 86_400_000), false);
    let real_start = real_ms();
    let mut agent = rig.start();
    std::thread::sleep(Duration::from_secs(3));
    let log = agent.log(Duration::from_millis(200));
    assert!(
        log.contains("but this machine's clock says 1970-01-01")
            && log.contains("the clock is not trusted: it reads 1970-01-01"),
        "why it cannot connect, and that its readings are flagged: {log}"
    );
    // The clock is set first; the time source's mark follows a moment
    // later (a hook of a time service other than timesyncd). The link
    // comes up in between: what waited must still go dated.
    rig.clock("+0", false);
    std::thread::sleep(Duration::from_millis(1500));
    rig.clock("+0", true);
    let mut seen = witness.wait_until("the relay's state", WAIT, |line| {
        line.starts_with(&format!("{RELAY} "))
    });
    let took = rig.accepted_within(&witness, &mut seen);
    seen.extend(witness.messages(Duration::from_secs(2)));
    let (n, flagged) = check_readings(SENSOR, &seen, 1, (real_start, real_ms()));
    assert_eq!(flagged, 0, "{seen:?}");
    println!(
        "1970: {n} readings, all dated; a stamped command accepted {took:?} after the clock was set"
    );
}

/// Offline across the jump: everything made before it is still waiting
/// when the clock becomes trusted, so it goes dated, none flagged, and
/// nothing expires though `max_age` is shorter than the jump.
fn set_while_offline(behind: &str, max_age: &str) {
    let rig = Rig::new(max_age);
    let witness = rig.witness();
    rig.gate.close();
    rig.clock(behind, false);
    let real_start = real_ms();
    let mut agent = rig.start();
    std::thread::sleep(Duration::from_secs(3));
    rig.clock("+0", true);
    std::thread::sleep(Duration::from_millis(1500));
    rig.gate.open();
    let seen = witness.messages(Duration::from_secs(6));
    let log = agent.log(Duration::from_millis(200));
    let (n, flagged) = check_readings(SENSOR, &seen, 1, (real_start, real_ms()));
    assert_eq!(
        flagged, 0,
        "made before the clock was set, dated once it was: {seen:?}"
    );
    assert!(n >= 40, "{n} readings");
    assert!(
        !log.contains("expired"),
        "nothing may expire by a clock jump: {log}"
    );
    println!("{behind} offline: {n} readings, every one dated, none expired (max_age {max_age})");
}

#[test]
fn readings_made_offline_at_1970_arrive_dated() {
    set_while_offline(&format!("-{}d", real_ms() / 86_400_000), "1h");
}

#[test]
fn readings_made_offline_three_weeks_behind_arrive_dated() {
    set_while_offline("-21d", "7d");
}

#[test]
fn a_clock_an_hour_ahead_stepped_back() {
    let rig = Rig::new("1h");
    let witness = rig.witness();
    rig.clock("+1h", false);
    let real_start = real_ms();
    let (mut agent, mut seen) = rig.start_online(&witness);
    seen.extend(witness.messages(Duration::from_secs(2)));
    rig.clock("+0", true);
    let took = rig.accepted_within(&witness, &mut seen);
    seen.extend(witness.messages(Duration::from_secs(2)));
    let log = agent.log(Duration::from_millis(200));
    let (n, flagged) = check_readings(SENSOR, &seen, 1, (real_start, real_ms()));
    // The hour ahead was handed out; ts holds there (flagged) rather than
    // going back, until the clock passes it.
    assert_eq!(flagged, n, "every reading's ts is the held guess: {n}");
    // "1 hour", or "59 minutes 59 seconds" on a loaded machine.
    assert!(log.contains("the clock jumped back by"), "{log}");
    println!(
        "+1h then set back: {n} readings, ts never back; a stamped command accepted {took:?} after"
    );
}

/// A power cut: a command applied, the agent killed, its record of applied
/// commands lost as a power cut loses it, and the next boot's clock at
/// `reads`, untrusted. The replay is refused before and after the clock is
/// set, as is anything stamped before the real start; a fresh one goes.
fn power_cut(reads: &str, at_1970: bool) {
    let rig = Rig::new("1h");
    let witness = rig.witness();
    rig.clock("+0", true);
    let (agent, mut seen) = rig.start_online(&witness);
    let applied = format!(r#""action":"on","ts":{}"#, real_ms());
    let (first, lines) = rig.ask(&witness, "c1", &applied);
    seen.extend(lines);
    assert_eq!(first["ok"], true, "{first}");
    std::thread::sleep(Duration::from_millis(300));
    let killed = Command::new("kill")
        .args(["-KILL", &agent.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = agent.finish(WAIT);
    // What a power cut leaves: the marks of another boot, and a record
    // that never got the command.
    let other = "00000000-0000-4000-8000-00000000dead";
    std::fs::write(
        rig.state.path().join("applied-commands.json"),
        format!(r#"{{"boot":"{other}","clean":false,"outputs":{{}}}}"#),
    )
    .unwrap();
    std::fs::write(rig.state.path().join("boot"), format!("{other} open\n")).unwrap();

    seen.extend(witness.messages(Duration::from_millis(500)));

    rig.clock(reads, false);
    let real_start = real_ms();
    let mut agent = if at_1970 {
        // No certificate is valid at 1970: it connects once the clock is set.
        let agent = rig.start();
        std::thread::sleep(Duration::from_secs(2));
        rig.clock("+0", true);
        seen.extend(witness.wait_until("the relay's state", WAIT, |line| {
            line.starts_with(&format!("{RELAY} "))
        }));
        agent
    } else {
        let (agent, lines) = rig.start_online(&witness);
        seen.extend(lines);
        let (early, lines) = rig.ask(&witness, "c1", &applied);
        seen.extend(lines);
        assert!(
            early["error"]
                .as_str()
                .unwrap_or_default()
                .contains("clock is not set yet"),
            "{early}"
        );
        rig.clock("+0", true);
        agent
    };
    // The replay again until the clock is trusted: then it is refused for
    // being from before this start, which the clock now dates right.
    let t0 = Instant::now();
    let floor = loop {
        let (result, lines) = rig.ask(&witness, "c1", &applied);
        seen.extend(lines);
        let error = result["error"].as_str().unwrap_or_default().to_string();
        assert_eq!(
            result["ok"], false,
            "{reads}: the replay was applied: {result}"
        );
        if !error.contains("clock is not set yet") {
            break error;
        }
        assert!(t0.elapsed() < WAIT, "the clock is never trusted");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        floor.contains("when pinpost started without a complete record"),
        "{reads}: {floor}"
    );
    let (result, lines) = rig.ask(
        &witness,
        "before-start",
        &format!(r#""action":"off","ts":{}"#, real_start - 5_000),
    );
    seen.extend(lines);
    assert!(
        result["ok"] == false
            && result["error"]
                .as_str()
                .unwrap_or_default()
                .contains("without a complete record"),
        "{reads}: stamped 5 s before the real start: {result}"
    );
    let took = rig.accepted_within(&witness, &mut seen);
    let log = agent.log(Duration::from_millis(200));
    assert!(log.contains("the clock is trusted"), "{log}");
    let oks = seen
        .iter()
        .filter(|l| l.starts_with(RESULT) && json(l)["id"] == "c1" && json(l)["ok"] == true)
        .count();
    assert_eq!(oks, 1, "c1 applied once: {seen:?}");
    println!(
        "power cut, next boot at {reads}: the replay refused before and after the clock was set; a fresh command accepted {took:?} after"
    );
}

#[test]
fn a_power_cut_then_a_clock_at_1970() {
    power_cut(&format!("-{}d", real_ms() / 86_400_000), true);
}

#[test]
fn a_power_cut_then_a_clock_three_weeks_behind() {
    power_cut("-21d", false);
}

#[test]
fn a_power_cut_then_a_clock_an_hour_ahead() {
    power_cut("+1h", false);
}
