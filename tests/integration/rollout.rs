//! Signed releases delivered over MQTT through a real Mosquitto with the
//! ACL `certs mosquitto` writes: `release publish` sends a package from
//! `scripts/package.sh` to the devices named and to no other; a transfer
//! cut by `kill -9` and by a broker restart goes on where it was; and
//! packages that are tampered with, truncated, unsigned, for another
//! architecture, older, replayed or flooded in are refused in words, with
//! nothing kept. The operator's subscriber on `+/update` is the witness.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(90);
/// `topics::RELEASE_CHUNK`.
const CHUNK: usize = 32 * 1024;

/// A laptop folder (CA, broker, operator, three devices, the release
/// key), a Mosquitto with persistence, and a config per device.
pub(crate) struct Fleet {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) certs: PathBuf,
    pub(crate) broker: Broker,
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Fleet {
    pub(crate) fn new() -> Fleet {
        require_tool("mosquitto", "mosquitto");
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let fleet_cmd = |args: &[&str]| {
            let mut all = strings(&["certs", "--dir", &certs.display().to_string()]);
            all.extend(strings(args));
            let (ok, said) = pinpost_in(dir.path(), &all);
            assert!(ok, "certs {args:?}: {said}");
        };
        for args in [
            &["ca"][..],
            &["broker", "--host", "127.0.0.1"],
            &["device", "operator"],
            &["device", "pi-01"],
            &["device", "pi-02"],
            &["device", "pi-03"],
            &["release-key"],
        ] {
            fleet_cmd(args);
        }
        let broker_dir = certs.join("broker").display().to_string();
        fleet_cmd(&["mosquitto", "--cert-dir", &broker_dir]);
        let conf = std::fs::read_to_string(certs.join("broker/pinpost.conf")).unwrap();
        let broker = Broker::start(&BrokerSetup {
            listener_conf: Some(conf.replace(
                "/etc/mosquitto/pinpost.acl",
                &certs.join("broker/pinpost.acl").display().to_string(),
            )),
            // Retained chunks outlive a broker restart, as on a real one.
            persistence: true,
            ..BrokerSetup::default()
        });
        let fleet = Fleet { dir, certs, broker };
        for id in ["pi-01", "pi-02", "pi-03"] {
            let folder = fleet.certs.join("devices").join(id);
            let head = ConfigHead::new(fleet.broker.port)
                .id(id)
                .ca(folder.join("ca.crt"))
                .client_files(
                    folder.join(format!("{id}.crt")),
                    folder.join(format!("{id}.key")),
                );
            let pi = fleet.pi(id);
            std::fs::create_dir_all(pi.join("state")).unwrap();
            std::fs::write(
                pi.join("pinpost.toml"),
                format!(
                    "{head}[reconnect]\ninitial = \"200ms\"\nmax = \"1s\"\n[board]\nkind = \"sim\"\n\
                     [update]\nrelease_key = {:?}\n",
                    fleet.certs.join("release.pub").display().to_string()
                ),
            )
            .unwrap();
        }
        fleet
    }

    pub(crate) fn pi(&self, id: &str) -> PathBuf {
        self.dir.path().join(id)
    }

    pub(crate) fn state(&self, id: &str) -> PathBuf {
        self.pi(id).join("state")
    }

    /// The agent's update folder (beside its spool).
    pub(crate) fn updates(&self, id: &str) -> PathBuf {
        self.state(id).join("outbox/update")
    }

    pub(crate) fn agent(&self, id: &str) -> Background {
        let mut agent = Background::start_with_env(
            &strings(&[
                "run",
                "--config",
                &self.pi(id).join("pinpost.toml").display().to_string(),
            ]),
            &[("STATE_DIRECTORY", self.state(id).display().to_string())],
        );
        agent.wait_for("connected", WAIT);
        agent
    }

    /// The operator's connection flags on the agents' port (where the
    /// witness listens).
    pub(crate) fn operator(&self) -> Vec<String> {
        self.operator_on(self.broker.port)
    }

    /// The same on `port`: the tools' port, where a second operator
    /// connection does not take the witness's place (the agents' port
    /// names clients by their certificate).
    pub(crate) fn operator_on(&self, port: u16) -> Vec<String> {
        operator_flags(&self.certs, port)
    }

    pub(crate) fn witness(&self) -> Witness {
        Witness::start(&self.broker, "pinpost/+/update", &self.operator())
    }

    /// `pinpost release …` run from the laptop folder.
    pub(crate) fn release(&self, args: &[&str]) -> (bool, String) {
        let mut all = strings(&["release"]);
        all.extend(strings(args));
        if matches!(args.first(), Some(&"publish" | &"status" | &"withdraw")) {
            all.extend(strings(&["--dir", &self.certs.display().to_string()]));
            all.extend(self.operator_on(self.broker.more_ports[0]));
        }
        pinpost_in(self.dir.path(), &all)
    }

    /// Signs `deb` (a copy in the laptop folder) with `key`: the manifest.
    pub(crate) fn sign(&self, deb: &Path, key: &Path, more: &[&str]) -> PathBuf {
        let copy = self.dir.path().join(deb.file_name().unwrap());
        if copy != deb {
            std::fs::copy(deb, &copy).unwrap();
        }
        let mut args = strings(&["sign", &copy.display().to_string(), "--key"]);
        args.push(key.display().to_string());
        args.extend(strings(more));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, said) = self.release(&refs);
        assert!(ok, "sign: {said}");
        PathBuf::from(format!("{}.manifest", copy.display()))
    }

    pub(crate) fn release_key(&self) -> PathBuf {
        self.certs.join("private/release.key")
    }

    pub(crate) fn publish(&self, manifest: &Path, to: &str) -> String {
        let (ok, said) =
            self.release(&["publish", &manifest.display().to_string(), "--devices", to]);
        assert!(ok, "publish: {said}");
        said
    }

    /// `pinpost publish` as the operator: what a broker or an operator
    /// account could send without the release key.
    pub(crate) fn publish_raw(&self, topic: &str, file: &Path) {
        let mut args = strings(&["publish"]);
        args.extend(self.operator_on(self.broker.more_ports[0]));
        args.extend(strings(&[
            "-r",
            "-t",
            topic,
            "-f",
            &file.display().to_string(),
        ]));
        let out = pinpost(&args, WAIT);
        assert!(out.status.success(), "publish {topic}: {}", stderr(&out));
    }

    /// `pieces` (chunks `first`… of `whole`) published retained as the
    /// operator, one by one, as `release publish` would.
    pub(crate) fn put_chunks(&self, whole: &[u8], pieces: &[&[u8]], first: usize) {
        let sha = sha256(whole);
        for (i, piece) in pieces.iter().enumerate() {
            let file = self.dir.path().join("chunk");
            std::fs::write(&file, piece).unwrap();
            self.publish_raw(&format!("pinpost/release/{sha}/{}", first + i), &file);
        }
    }

    /// Waits until `id`'s part holds `chunks` whole chunks.
    pub(crate) fn wait_for_part(&self, id: &str, chunks: u64) {
        let part = self.updates(id).join("package.part");
        let deadline = std::time::Instant::now() + WAIT;
        while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < chunks * CHUNK as u64 {
            assert!(
                std::time::Instant::now() < deadline,
                "{id} never had chunks 0..{chunks}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn ready(&self, id: &str) -> Vec<PathBuf> {
        std::fs::read_dir(self.updates(id).join("ready"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

/// The first report of `id` in state `state`, waited for.
fn report(witness: &Witness, id: &str, state: &str) -> serde_json::Value {
    let topic = format!("pinpost/{id}/update ");
    let lines = witness.wait_until(&format!("{id} {state}"), WAIT, |line| {
        line.strip_prefix(&topic)
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .is_some_and(|v| v["state"] == state)
    });
    let last = lines.last().unwrap();
    serde_json::from_str(&last[topic.len()..]).unwrap()
}

/// Waits for pi-01's report in `state` and checks its reason holds
/// `words`.
fn said_why(witness: &Witness, state: &str, words: &str) {
    let report = report(witness, "pi-01", state);
    let reason = report["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(words), "{report}");
}

/// Waits until `id` reports fetching at `percent` or more.
fn at_least(witness: &Witness, id: &str, percent: u64) {
    let topic = format!("pinpost/{id}/update ");
    witness.wait_until(&format!("{id} at {percent}%"), WAIT, |line| {
        line.strip_prefix(&topic)
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .and_then(|v| v["percent"].as_u64())
            .is_some_and(|p| p >= percent)
    });
}

#[test]
fn a_signed_release_reaches_the_two_devices_named_and_not_the_third() {
    let fleet = Fleet::new();
    let witness = fleet.witness();
    let _agents: Vec<Background> = ["pi-01", "pi-02", "pi-03"]
        .iter()
        .map(|id| fleet.agent(id))
        .collect();
    let deb = built_package("amd64");
    let manifest = fleet.sign(&deb, &fleet.release_key(), &[]);
    let said = fleet.publish(&manifest, "pi-01,pi-02");
    assert!(said.contains("and its manifest to pi-01, pi-02."), "{said}");
    println!("{said}");
    let version = format!("{}-1", env!("CARGO_PKG_VERSION"));
    let bytes = std::fs::read(&deb).unwrap();
    // Both, in whichever order they finish.
    let done = std::cell::RefCell::new(std::collections::BTreeMap::new());
    witness.wait_until("pi-01 and pi-02 verified", WAIT, |line| {
        let mut done = done.borrow_mut();
        if let Some((topic, payload)) = line.split_once(' ') {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(payload) {
                if v["state"] == "verified" {
                    done.insert(topic.to_string(), v);
                }
            }
        }
        done.len() == 2
    });
    let done = done.into_inner();
    for id in ["pi-01", "pi-02"] {
        let verified = &done[&format!("pinpost/{id}/update")];
        assert_eq!(verified["percent"], 100, "{verified}");
        assert_eq!(verified["version"], version.as_str(), "{verified}");
        assert_eq!(
            verified["installed"],
            env!("CARGO_PKG_VERSION"),
            "{verified}"
        );
        let ready = fleet
            .updates(id)
            .join(format!("ready/pinpost_{version}_amd64.deb"));
        let got = std::fs::read(&ready).unwrap_or_else(|e| panic!("{}: {e}", ready.display()));
        assert_eq!(
            sha256(&got),
            sha256(&bytes),
            "{id}'s package is the one signed"
        );
        assert!(
            !fleet.updates(id).join("package.part").exists(),
            "no part is left beside the checked package"
        );
    }
    let seen = witness.messages(Duration::from_secs(2));
    assert!(
        !seen.iter().any(|l| l.starts_with("pinpost/pi-03/")),
        "pi-03 was not named and fetched nothing: {seen:?}"
    );
    assert!(!fleet.updates("pi-03").exists());
    let (ok, status) = fleet.release(&["status"]);
    assert!(ok, "{status}");
    println!("{status}");
    let line = |id: &str| {
        status
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no {id} in {status}"))
            .to_string()
    };
    assert!(
        line("pi-01").contains("verified") && line("pi-01").contains(&version),
        "{status}"
    );
    assert!(line("pi-02").contains("verified"), "{status}");
    assert!(
        line("pi-03").contains("idle") && line("pi-03").contains(env!("CARGO_PKG_VERSION")),
        "pi-03 says what it runs and that nothing is under way: {status}"
    );

    // Withdrawn: each device that holds the manifest drops what it
    // fetched, and the broker keeps none of the chunks.
    let (ok, said) = fleet.release(&["withdraw", &manifest.display().to_string()]);
    assert!(ok, "{said}");
    let chunks = bytes.len().div_ceil(CHUNK);
    assert!(
        said.contains("cleared the manifest of pi-01, pi-02")
            && said.contains(&format!("cleared its {chunks} chunks")),
        "{said}"
    );
    println!("{said}");
    let done = std::cell::RefCell::new(std::collections::BTreeSet::new());
    witness.wait_until("pi-01 and pi-02 withdrawn", WAIT, |line| {
        if line.contains("\"state\":\"withdrawn\"") {
            done.borrow_mut()
                .insert(line.split(' ').next().unwrap_or("").to_string());
        }
        done.borrow().len() == 2
    });
    for id in ["pi-01", "pi-02"] {
        assert!(fleet.ready(id).is_empty(), "{id}: {:?}", fleet.ready(id));
    }
    let chunks = Witness::start(&fleet.broker, "pinpost/release/#", &fleet.operator());
    let left = chunks.messages(Duration::from_secs(2));
    assert!(left.is_empty(), "no chunk stays retained: {left:?}");
}

#[test]
fn a_transfer_cut_by_kill_9_and_by_a_broker_restart_goes_on_where_it_was() {
    let mut fleet = Fleet::new();
    let witness = fleet.witness();
    // 4 MiB: 128 chunks. Only the first 50 are on the broker at first, so
    // the device is cut in the middle of the transfer, whatever its speed.
    let deb = deb(fleet.dir.path(), "50.0", "amd64", 4 * 1024 * 1024);
    let manifest = fleet.sign(&deb, &fleet.release_key(), &[]);
    let bytes = std::fs::read(&deb).unwrap();
    let chunks: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
    fleet.put_chunks(&bytes, &chunks[..50], 0);
    fleet.publish_raw("pinpost/pi-01/release", &manifest);
    let agent = fleet.agent("pi-01");
    at_least(&witness, "pi-01", 30);
    fleet.wait_for_part("pi-01", 50);
    let status = Command::new("kill")
        .args(["-9", &agent.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    drop(agent);

    let mut agent = fleet.agent("pi-01");
    agent.wait_for("50 here already", WAIT);
    let resumed = report(&witness, "pi-01", "fetching");
    assert_eq!(
        resumed["percent"].as_u64(),
        Some(50 * 100 / chunks.len() as u64),
        "went on from chunk 50 of {}: {resumed}",
        chunks.len()
    );
    fleet.put_chunks(&bytes, &chunks[50..100], 50);
    at_least(&witness, "pi-01", 70);
    fleet.wait_for_part("pi-01", 100);
    // The broker goes down and comes back (retained chunks kept) while
    // the device waits for chunk 100.
    fleet.broker.restart();
    // mosquitto_sub does not reconnect: a new witness.
    let witness = fleet.witness();
    fleet.put_chunks(&bytes, &chunks[100..], 100);
    let verified = report(&witness, "pi-01", "verified");
    assert_eq!(verified["version"], "50.0", "{verified}");
    let log = agent.log(Duration::from_secs(1));
    let got = std::fs::read(fleet.updates("pi-01").join("ready/pinpost_50.0_amd64.deb")).unwrap();
    assert_eq!(sha256(&got), sha256(&bytes), "{log}");
}

#[test]
fn releases_for_another_architecture_older_unsigned_or_replayed_are_refused_in_words() {
    let fleet = Fleet::new();
    let witness = fleet.witness();
    let _agent = fleet.agent("pi-01");
    let d = fleet.dir.path();

    // Another architecture: the real armhf package.
    let manifest = fleet.sign(&built_package("armhf"), &fleet.release_key(), &[]);
    fleet.publish(&manifest, "pi-01");
    said_why(
        &witness,
        "refused",
        "built for armhf, and this device is amd64",
    );

    // Older than what runs.
    let manifest = fleet.sign(&deb(d, "0.0.1", "amd64", 1000), &fleet.release_key(), &[]);
    fleet.publish(&manifest, "pi-01");
    said_why(&witness, "refused", "0.0.1 is older than the installed");

    // Signed by a key this device does not hold (a second release key, as
    // someone with the broker or the operator's certificate could make).
    let other = tempfile::tempdir().unwrap();
    let (ok, said) = pinpost_in(
        other.path(),
        &strings(&[
            "certs",
            "--dir",
            &other.path().join("certs").display().to_string(),
            "release-key",
        ]),
    );
    assert!(ok, "{said}");
    let forged = fleet.sign(
        &deb(d, "60.0", "amd64", 1000),
        &other.path().join("certs/private/release.key"),
        &[],
    );
    fleet.publish_raw("pinpost/pi-01/release", &forged);
    said_why(&witness, "refused", "and this device trusts only");

    // A signed manifest edited: its version raised.
    let good = fleet.sign(&deb(d, "61.0", "amd64", 1000), &fleet.release_key(), &[]);
    let text = std::fs::read_to_string(&good)
        .unwrap()
        .replace("61.0", "62.0");
    let edited = d.join("edited.manifest");
    std::fs::write(&edited, text).unwrap();
    fleet.publish_raw("pinpost/pi-01/release", &edited);
    said_why(&witness, "refused", "does not verify");

    // A newer release taken, then an older signed manifest replayed.
    let older = fleet.sign(&deb(d, "70.0", "amd64", 1000), &fleet.release_key(), &[]);
    std::thread::sleep(Duration::from_millis(1100));
    let newer = fleet.sign(&deb(d, "71.0", "amd64", 1000), &fleet.release_key(), &[]);
    fleet.publish(&newer, "pi-01");
    report(&witness, "pi-01", "verified");
    fleet.publish(&older, "pi-01");
    said_why(&witness, "refused", "an old manifest replayed");
    let ready = fleet.ready("pi-01");
    assert!(
        ready
            .iter()
            .all(|p| p.display().to_string().contains("71.0")),
        "only the release signed for it is kept: {ready:?}"
    );
}

#[test]
fn tampered_truncated_oversized_and_flooded_chunks_are_refused_and_nothing_is_kept() {
    let fleet = Fleet::new();
    let witness = fleet.witness();
    let mut agent = fleet.agent("pi-01");
    let d = fleet.dir.path();
    let chunk = 32 * 1024;

    // A signed manifest whose chunks on the broker are another file's
    // (a byte changed): fetched whole, then refused by its hash.
    let deb = deb(d, "80.0", "amd64", 3 * chunk);
    let manifest = fleet.sign(&deb, &fleet.release_key(), &[]);
    let bytes = std::fs::read(&deb).unwrap();
    let sha = sha256(&bytes);
    let mut tampered = bytes.clone();
    tampered[chunk + 7] ^= 1;
    let put_chunks = |data: &[u8]| {
        let pieces: Vec<&[u8]> = data.chunks(chunk).collect();
        fleet.put_chunks(&bytes, &pieces, 0);
    };
    put_chunks(&tampered);
    fleet.publish_raw("pinpost/pi-01/release", &manifest);
    said_why(&witness, "failed", "SHA-256 is not its manifest's");
    assert!(fleet.ready("pi-01").is_empty(), "nothing kept");
    assert!(
        !fleet.updates("pi-01").join("package.part").exists(),
        "the bad part is gone"
    );

    // Truncated: the last chunk short. Publishing the manifest again makes
    // the device try at once.
    put_chunks(&bytes[..bytes.len() - 10]);
    fleet.publish_raw("pinpost/pi-01/release", &manifest);
    said_why(
        &witness,
        "failed",
        &format!("chunk {} of the package is", (bytes.len() - 1) / chunk),
    );

    // Oversized: far more than a chunk on the topic it asks for next (the
    // whole chunks before it are kept from the try before).
    let huge = d.join("huge");
    std::fs::write(&huge, vec![0u8; 4 * chunk]).unwrap();
    let last = (bytes.len() - 1) / chunk;
    fleet.publish_raw(&format!("pinpost/release/{sha}/{last}"), &huge);
    fleet.publish_raw("pinpost/pi-01/release", &manifest);
    said_why(&witness, "failed", "larger than any chunk");
    assert!(fleet.ready("pi-01").is_empty(), "nothing kept");

    // A flood of 500 junk manifests: refused, said once, and the device
    // still takes the release that follows.
    let junk: String = (0..500).map(|i| format!("{{\"junk\":{i}}}\n")).collect();
    let mut args = strings(&["publish"]);
    args.extend(fleet.operator_on(fleet.broker.more_ports[0]));
    args.extend(strings(&["-t", "pinpost/pi-01/release", "-l"]));
    let out = pinpost_with_stdin(&args, Some(&junk), WAIT);
    assert!(out.status.success(), "{}", stderr(&out));
    report(&witness, "pi-01", "refused");

    // The right chunks: the same release now goes through.
    put_chunks(&bytes);
    fleet.publish_raw("pinpost/pi-01/release", &manifest);
    let seen = witness.wait_until("pi-01 verified", WAIT, |l| {
        l.starts_with("pinpost/pi-01/update ") && l.contains("\"state\":\"verified\"")
    });
    let refusals = seen
        .iter()
        .filter(|l| l.contains("\"state\":\"refused\""))
        .count();
    assert!(
        refusals <= 1,
        "500 junk manifests made {refusals} more reports: {seen:?}"
    );
    agent.wait_for("is here and checked", WAIT);
}
