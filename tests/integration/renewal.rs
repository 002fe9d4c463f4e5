//! Certificates renewed over MQTT through a real Mosquitto with the ACL
//! `certs mosquitto` writes: an enrolled device whose certificate lasts a
//! minute asks for a new one, `certs renew` signs it, and the agent switches
//! with no restart and no reading lost (the operator's subscriber counts
//! them). Requests for another id, tampered requests and a certificate for
//! the wrong key are refused in words; `kill -9` at each step of the swap
//! leaves an agent that connects; a switch the broker refuses goes back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(60);

/// A laptop folder (CA, broker, operator, pi-02 made here), a Mosquitto
/// with its listener and ACL, and pi-01 enrolled with a one-minute
/// certificate: its key made in its own folder.
struct Fleet {
    dir: tempfile::TempDir,
    certs: PathBuf,
    broker: Broker,
    pi: PathBuf,
    config: PathBuf,
    state: PathBuf,
}

fn certs(dir: &Path, args: &[&str]) -> String {
    let mut all = strings(&["certs", "--dir", &dir.display().to_string()]);
    all.extend(strings(args));
    let out = pinpost(&all, WAIT);
    assert!(out.status.success(), "certs {args:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Fleet {
    fn new(renew_before: &str) -> Fleet {
        Fleet::with_clock(renew_before, None)
    }

    /// With `mark`: the clock is trusted only while that file exists.
    fn with_clock(renew_before: &str, mark: Option<&Path>) -> Fleet {
        require_tool("mosquitto", "mosquitto");
        require_tool("openssl", "openssl");
        let dir = tempfile::tempdir().unwrap();
        let certs_dir = dir.path().join("certs");
        for args in [
            &["ca"][..],
            &["broker", "--host", "127.0.0.1"],
            &["device", "operator"],
            &["device", "pi-02"],
        ] {
            certs(&certs_dir, args);
        }
        let broker_dir = certs_dir.join("broker").display().to_string();
        certs(&certs_dir, &["mosquitto", "--cert-dir", &broker_dir]);
        let conf = std::fs::read_to_string(certs_dir.join("broker/pinpost.conf")).unwrap();
        let broker = Broker::start(&BrokerSetup {
            listener_conf: Some(conf.replace(
                "/etc/mosquitto/pinpost.acl",
                &certs_dir.join("broker/pinpost.acl").display().to_string(),
            )),
            ..BrokerSetup::default()
        });
        let pi = dir.path().join("pi-01");
        std::fs::create_dir(&pi).unwrap();
        let config = pi.join("pinpost.toml");
        let mut head =
            ConfigHead::new(broker.port).tls(&format!("renew_before = \"{renew_before}\""));
        if let Some(mark) = mark {
            head = head.clock_mark(mark);
        }
        std::fs::write(
            &config,
            format!(
                "{head}[reconnect]\ninitial = \"200ms\"\nmax = \"1s\"\n[board]\nkind = \"sim\"\n\
                 [[sensor]]\nname = \"s\"\nkind = \"sim\"\ninterval = \"50ms\"\nunit = \"V\"\n\
                 start = 0.0\nstep = 0.1\n"
            ),
        )
        .unwrap();
        let out = pinpost(
            &strings(&["enroll", "--config", &config.display().to_string()]),
            WAIT,
        );
        assert!(out.status.success(), "enroll: {}", stderr(&out));
        let request = dir.path().join("pi-01.csr");
        std::fs::copy(pi.join("pi-01.csr"), &request).unwrap();
        let request = request.display().to_string();
        certs(&certs_dir, &["sign", &request, "--valid-for", "1m"]);
        for name in ["ca.crt", "pi-01.crt"] {
            std::fs::copy(certs_dir.join("devices/pi-01").join(name), pi.join(name)).unwrap();
        }
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        Fleet {
            certs: certs_dir,
            broker,
            pi,
            config,
            state,
            dir,
        }
    }

    fn agent(&self) -> Background {
        let mut agent = Background::start_with_env(
            &strings(&["run", "--config", &self.config.display().to_string()]),
            &[("STATE_DIRECTORY", self.state.display().to_string())],
        );
        agent.wait_for("connected", WAIT);
        agent
    }

    /// The operator's connection flags (both CAs during a rotation), on
    /// the agents' port (where the witness listens).
    fn operator(&self) -> Vec<String> {
        self.operator_on(self.broker.port)
    }

    /// The same on `port`: the tools' port, where a second operator
    /// connection does not take the witness's place.
    fn operator_on(&self, port: u16) -> Vec<String> {
        operator_flags(&self.certs, port)
    }

    /// One pass of `certs renew`: (success, stdout + stderr).
    fn renew(&self, more: &[&str]) -> (bool, String) {
        let mut args = strings(&["certs", "--dir", &self.certs.display().to_string(), "renew"]);
        args.extend(self.operator_on(self.broker.more_ports[0]));
        args.extend(strings(more));
        let out = pinpost(&args, WAIT);
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        (out.status.success(), said)
    }

    /// `pinpost publish` retained to `topic` as `who` (a device folder on
    /// the laptop, or the operator's).
    fn publish_as(&self, who: &str, topic: &str, payload: &str) {
        let folder = self.certs.join("devices").join(who);
        let mut args = strings(&["publish", "-h", "127.0.0.1", "-p"]);
        args.push(self.broker.more_ports[0].to_string());
        args.extend(tls_args(
            &self.pi.join("ca.crt"),
            Some(&Files {
                cert: folder.join(format!("{who}.crt")),
                key: folder.join(format!("{who}.key")),
            }),
        ));
        args.extend(strings(&["-r", "-t", topic, "-m", payload]));
        let out = pinpost(&args, WAIT);
        assert!(out.status.success(), "publish as {who}: {}", stderr(&out));
    }

    fn witness(&self, topic: &str) -> Witness {
        Witness::start(&self.broker, topic, &self.operator())
    }

    /// A request for `id` with a fresh key, made by openssl (PEM).
    fn openssl_request(&self, id: &str) -> String {
        let key = self.dir.path().join(format!("{id}-other.key"));
        let out = Command::new("openssl")
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
            .arg("ec_paramgen_curve:P-256")
            .args(["-nodes", "-subj", &format!("/CN={id}"), "-keyout"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// The payload of the last `topic` line the witness saw.
fn last_payload(lines: &[String], topic: &str) -> Option<String> {
    lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{topic} ")).map(str::to_string))
}

/// Every seq of sensor s the witness saw, in order of arrival.
fn seqs(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("pinpost/pi-01/sensor/s "))
        .filter_map(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        .filter_map(|v| v["seq"].as_u64())
        .collect()
}

#[test]
fn a_certificate_that_lapses_in_a_minute_is_renewed_over_mqtt_with_no_reading_lost() {
    let fleet = Fleet::new("50s");
    let everything = fleet.witness("pinpost/#");
    let started = Instant::now();
    let mut agent = fleet.agent();
    let pid = agent.pid();
    agent.wait_for(
        "asked for its certificate on pinpost/pi-01/cert/request",
        WAIT,
    );
    let asked = started.elapsed();
    // Nobody answers yet: the agent says so (every tenth of renew_before,
    // at most daily), with the time left, and keeps working.
    agent.wait_for(
        "and no certificate has come (is `pinpost certs renew` running",
        WAIT,
    );
    let mut seen = everything.wait_until("the request", WAIT, |l| {
        l.starts_with("pinpost/pi-01/cert/request {")
    });
    let request = last_payload(&seen, "pinpost/pi-01/cert/request").unwrap();
    assert!(!request.contains("PRIVATE KEY"), "{request}");

    // A certificate for another key, published for pi-01 (the operator
    // may publish there: a mistake, or a stolen operator account), is
    // refused by the agent.
    let stray = fleet.dir.path().join("stray.csr");
    std::fs::write(&stray, fleet.openssl_request("pi-01")).unwrap();
    let stray_dir = fleet.dir.path().join("stray");
    std::fs::create_dir(&stray_dir).unwrap();
    for name in ["ca.crt", "private"] {
        let from = fleet.certs.join(name);
        let status = Command::new("cp")
            .arg("-a")
            .arg(&from)
            .arg(&stray_dir)
            .status()
            .unwrap();
        assert!(status.success());
    }
    certs(&stray_dir, &["sign", &stray.display().to_string()]);
    let wrong_key = std::fs::read_to_string(stray_dir.join("devices/pi-01/pi-01.crt")).unwrap();
    let answer = serde_json::json!({"cert": wrong_key, "ts": "2026-12-06T00:00:00Z"});
    fleet.publish_as("operator", "pinpost/pi-01/cert/issued", &answer.to_string());
    agent.wait_for(
        "refused the certificate published on pinpost/pi-01/cert/issued: it is for another key \
         than the one this device made for it",
        WAIT,
    );

    // Another device that asks for pi-01 on its own topic is refused in
    // words; pi-01's own request is signed.
    fleet.publish_as("pi-02", "pinpost/pi-02/cert/request", &request);
    // A device may not write another's request at all (the ACL).
    let mut forged: serde_json::Value = serde_json::from_str(&request).unwrap();
    let forged_csr = fleet.openssl_request("pi-02");
    forged["csr"] = forged_csr.clone().into();
    forged["cert"] = std::fs::read_to_string(fleet.certs.join("devices/pi-02/pi-02.crt"))
        .unwrap()
        .into();
    fleet.publish_as("pi-02", "pinpost/pi-01/cert/request", &forged.to_string());
    let (ok, said) = fleet.renew(&[]);
    assert!(ok, "{said}");
    assert!(
        said.contains(
            "pi-02: refused its renewal request: it asks for a certificate for \"pi-01\" on \
             pi-02's topic; a device is given certificates for its own id only"
        ),
        "{said}"
    );
    assert!(said.contains("pi-01: signed its renewal request"), "{said}");
    // An endless request is not read as one.
    let huge = format!("{{\"csr\":\"{}\"}}", "A".repeat(20 * 1024));
    fleet.publish_as("pi-02", "pinpost/pi-02/cert/request", &huge);
    let (ok, said) = fleet.renew(&[]);
    assert!(ok, "{said}");
    assert!(
        said.contains(
            "pi-02: refused its renewal request: it is 20490 bytes, far larger than a request"
        ),
        "{said}"
    );
    // A request pi-02 makes for itself with a proof it cannot make.
    fleet.publish_as("pi-02", "pinpost/pi-02/cert/request", &forged.to_string());
    let (ok, said) = fleet.renew(&[]);
    assert!(ok, "{said}");
    assert!(
        said.contains(
            "pi-02: refused its renewal request: its proof does not verify: it was not signed \
             with the key of the certificate it carries"
        ),
        "{said}"
    );
    assert!(!said.contains("pi-01: signed"), "answered once: {said}");
    seen.extend(everything.wait_until("pi-02's refusal", WAIT, |l| {
        l.starts_with("pinpost/pi-02/cert/issued {\"error\"")
    }));
    let first_line = forged_csr.lines().nth(1).unwrap_or_default().to_string();
    assert!(
        !seen
            .iter()
            .any(|l| l.starts_with("pinpost/pi-01/cert/request") && l.contains(&first_line)),
        "pi-02's write to pi-01's request was refused by the ACL"
    );
    agent.wait_for("received and checked the renewed certificate", WAIT);
    agent.wait_for("switched to the renewed certificate", WAIT);
    let switched = started.elapsed();
    assert_eq!(agent.pid(), pid, "no restart");
    seen.extend(everything.messages(Duration::from_secs(3)));
    assert!(
        seen.iter()
            .any(|l| l == "pinpost/pi-01/cert/request (null)"),
        "the retained request is cleared once renewed"
    );
    let renewed = std::fs::read_to_string(fleet.state.join("outbox/identity/current.pem")).unwrap();
    assert!(renewed.contains("PRIVATE KEY") && renewed.contains("CERTIFICATE"));
    let laptop = std::fs::read_to_string(fleet.certs.join("devices/pi-01/pi-01.crt")).unwrap();
    assert!(
        renewed.contains(laptop.trim()),
        "the laptop keeps the newest certificate"
    );
    assert!(
        std::fs::read_to_string(fleet.certs.join("issued.txt"))
            .unwrap()
            .contains(" pi-01 "),
        "issued.txt lists it, for certs revoke"
    );

    // The first certificate lapses; a broker restart after that finds the
    // agent connecting with the renewed one.
    let lapse = Duration::from_secs(62).saturating_sub(started.elapsed());
    std::thread::sleep(lapse);
    // The switch's reconnect reads the PUBACKs after its DISCONNECT, so
    // nothing the broker had is sent again (the restart below may).
    let before = seqs(&seen);
    let mut once = before.clone();
    once.sort_unstable();
    once.dedup();
    assert_eq!(
        before.len(),
        once.len(),
        "readings sent twice across the switch: {before:?}"
    );
    let mut broker = fleet.broker;
    broker.restart();
    agent.wait_for("connected", WAIT);
    seen.extend(everything.messages(Duration::from_secs(2)));
    let seqs = seqs(&seen);
    let mut unique = seqs.clone();
    unique.sort_unstable();
    unique.dedup();
    let first = unique.first().copied().unwrap_or(0);
    let last = unique.last().copied().unwrap_or(0);
    let gaps = (first..=last)
        .filter(|s| unique.binary_search(s).is_err())
        .count();
    let ends: Vec<String> = seen
        .iter()
        .filter_map(|l| l.strip_prefix("pinpost/pi-01/stats "))
        .filter_map(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        .filter_map(|v| v["cert_ends"].as_str().map(str::to_string))
        .collect();
    eprintln!(
        "renewal: asked {:.1} s after start, switched at {:.1} s; readings seq {first}..{last}, \
         {} received, {gaps} missing; cert_ends went {:?}",
        asked.as_secs_f64(),
        switched.as_secs_f64(),
        seqs.len(),
        ends
    );
    assert_eq!(first, 1, "from the first reading");
    assert_eq!(gaps, 0, "no reading lost across the switch and the restart");
    assert!(last > 100, "the agent kept publishing: {last}");
    assert!(
        ends.windows(2).any(|w| w[0] != w[1]),
        "stats show the new end: {ends:?}"
    );
    assert_eq!(agent.pid(), pid, "no restart");
    // `pinpost check` on the Pi (as root) looks at the pair in use, not at
    // the config's, which has ended.
    let mut cmd = Command::new(PINPOST);
    cmd.args(["check", "--offline", "--config"])
        .arg(&fleet.config)
        .env("STATE_DIRECTORY", &fleet.state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = run_limited(cmd, None, WAIT);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("outbox/identity/current.pem (CN=pi-01) is valid until 2029"),
        "{said}"
    );
    let log = agent.log(Duration::from_millis(100));
    assert!(!log.contains("panicked"), "{log}");
    drop(broker);
}

/// Waits for `needle`, then `kill -9`s the agent: a power cut at that step.
fn cut_at(agent: Background, needle: &str) {
    let mut agent = agent;
    agent.wait_for(needle, WAIT);
    let status = Command::new("kill")
        .args(["-9", &agent.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_power_cut_at_each_step_of_the_swap_leaves_an_agent_that_connects() {
    let marks = tempfile::tempdir().unwrap();
    let mark = marks.path().join("synchronized");
    std::fs::write(&mark, "").unwrap();
    let mut fleet = Fleet::with_clock("50s", Some(&mark));
    // Cut just after the new key is kept and asked for.
    cut_at(fleet.agent(), "asked for its certificate");
    assert!(fleet.state.join("outbox/identity/next.key").exists());
    let key_before = std::fs::read(fleet.state.join("outbox/identity/next.key")).unwrap();
    // Back, after a power cut that took the time with it (no mark yet): it
    // asks again for the same key, but judges no certificate's dates on a
    // clock it does not trust; it keeps the answer until the clock is set.
    std::fs::remove_file(&mark).unwrap();
    let mut agent = fleet.agent();
    let (ok, said) = fleet.renew(&[]);
    assert!(ok && said.contains("pi-01: signed"), "{said}");
    agent.wait_for(
        "while the clock is not trusted; it is checked once the clock is set",
        WAIT,
    );
    let early = agent.log(Duration::from_secs(1));
    assert!(!early.contains("received and checked"), "{early}");
    // Cut once the certificate is checked and kept, before the switch: the
    // broker is down when the clock is set, so the switch (which needs a
    // link) cannot begin before the cut however slowly the test runs. The
    // lost link must not lose the request either: the answer kept for the
    // clock is still the answer to this device's key.
    fleet.broker.stop();
    agent.wait_for("lost the connection to", WAIT);
    std::fs::write(&mark, "").unwrap();
    cut_at(agent, "received and checked the renewed certificate");
    fleet.broker.start_again();
    assert!(fleet.state.join("outbox/identity/trial.pem").exists());
    assert!(!fleet.state.join("outbox/identity/next.key").exists());
    let trial = std::fs::read_to_string(fleet.state.join("outbox/identity/trial.pem")).unwrap();
    assert!(
        trial.contains(std::str::from_utf8(&key_before).unwrap().trim()),
        "the key asked with before the cut is the one kept"
    );
    // Back: it connects on the old pair and tries the new one; cut while
    // it reconnects with it.
    cut_at(fleet.agent(), "reconnecting with the renewed certificate");
    // Back again: connects, switches; cut once switched.
    cut_at(fleet.agent(), "switched to the renewed certificate");
    assert!(fleet.state.join("outbox/identity/current.pem").exists());
    assert!(!fleet.state.join("outbox/identity/trial.pem").exists());
    // The last start uses the renewed pair from the first handshake.
    let mut agent = Background::start_with_env(
        &strings(&["run", "--config", &fleet.config.display().to_string()]),
        &[("STATE_DIRECTORY", fleet.state.display().to_string())],
    );
    agent.wait_for("using the renewed certificate in", WAIT);
    agent.wait_for("connected", WAIT);
    // And a torn or foreign current.pem is never used: the config's pair is.
    drop(agent);
    std::fs::write(fleet.state.join("outbox/identity/current.pem"), "garbage").unwrap();
    let mut agent = Background::start_with_env(
        &strings(&["run", "--config", &fleet.config.display().to_string()]),
        &[("STATE_DIRECTORY", fleet.state.display().to_string())],
    );
    agent.wait_for("is not usable (the certificate holds no readable", WAIT);
}

#[test]
fn a_switch_the_broker_refuses_goes_back_to_the_old_pair_and_says_why() {
    let fleet = Fleet::new("50s");
    // A second CA the device trusts (its ca.crt holds both) but the broker
    // does not: a CA change the operator began on the device side only.
    let other = fleet.dir.path().join("other");
    certs(&other, &["ca", "--name", "another CA"]);
    let mut both = std::fs::read(other.join("ca.crt")).unwrap();
    both.extend(std::fs::read(fleet.certs.join("ca.crt")).unwrap());
    std::fs::write(fleet.pi.join("ca.crt"), &both).unwrap();
    let renew_other = |more: &[&str]| {
        let mut args = strings(&["certs", "--dir", &other.display().to_string(), "renew"]);
        args.extend(fleet.operator_on(fleet.broker.more_ports[0]));
        args.extend(strings(more));
        let out = pinpost(&args, WAIT);
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        (out.status.success(), said)
    };
    let mut agent = fleet.agent();
    agent.wait_for("asked for its certificate", WAIT);
    // Before that CA trusts the first one, it refuses, and the device
    // hears why.
    let (ok, said) = renew_other(&[]);
    assert!(ok, "{said}");
    assert!(
        said.contains(
            "pi-01: refused its renewal request: the certificate it carries was not signed by \
             this CA"
        ),
        "{said}"
    );
    agent.wait_for(
        "the operator refused this device's request: the certificate it carries was not \
         signed by this CA; the current certificate ends",
        WAIT,
    );
    std::fs::write(other.join("ca-bundle.crt"), &both).unwrap();
    let (ok, said) = renew_other(&[]);
    assert!(ok && said.contains("pi-01: signed"), "{said}");
    agent.wait_for("reconnecting with the renewed certificate", WAIT);
    agent.wait_for("the broker refused the renewed certificate", WAIT);
    agent.wait_for("connected", WAIT);
    let log = agent.log(Duration::from_secs(2));
    let refusal = log
        .lines()
        .find(|l| l.contains("the broker refused the renewed certificate"))
        .unwrap_or_default();
    assert!(
        refusal.contains("(it answered \"unknown CA\")")
            && refusal.contains("issued by \"CN=another CA")
            && refusal.contains("back on the current one"),
        "the words are about the renewed certificate: {refusal}"
    );
    assert!(
        !log.contains("which asked for none"),
        "the refused certificate, still retained, is not a stranger: {log}"
    );
    assert!(fleet.state.join("outbox/identity/rejected.pem").exists());
    assert!(!fleet.state.join("outbox/identity/current.pem").exists());
}
