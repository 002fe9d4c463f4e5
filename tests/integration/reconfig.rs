//! Signed configs through a real Mosquitto with the ACL `certs mosquitto`
//! writes: `release sign-config` checks a device's config with the
//! device's own checker and signs it, `release publish` leaves it on that
//! device's `config` topic alone, and the agent checks it again and hands
//! it to the install helper (`update/ready/config.signed`). A config for
//! another device, an unsigned one, or one signed by another key, sent by
//! the operator's account as a broker could, changes nothing. The
//! operator's subscriber on `+/config/state` is the witness. Applying it
//! (the root helper writing the file, the health gate, the way back) is
//! `update_helper.rs`'s, with the real files in a Debian root.

use crate::common::*;
use crate::rollout::{Fleet, sha256};

const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn state_of(witness: &Witness, state: &str) -> serde_json::Value {
    let lines = witness.wait_until(&format!("pi-01's config {state}"), WAIT, |l| {
        l.starts_with("pinpost/pi-01/config/state ")
            && l.contains(&format!("\"state\":\"{state}\""))
    });
    let line = lines.last().unwrap();
    serde_json::from_str(line.split_once(' ').unwrap().1).unwrap()
}

#[test]
fn a_signed_config_reaches_its_device_alone_is_checked_there_and_forgeries_change_nothing() {
    let fleet = Fleet::new();
    let witness = Witness::start(&fleet.broker, "pinpost/+/config/state", &fleet.operator());
    let _agent = fleet.agent("pi-01");
    let runs = std::fs::read_to_string(fleet.pi("pi-01").join("pinpost.toml")).unwrap();
    let running = state_of(&witness, "running");
    assert_eq!(
        running["running"],
        sha256(runs.as_bytes()),
        "the config it runs, by its hash"
    );

    let laptop = fleet.dir.path();
    let key = fleet.release_key().display().to_string();
    // What the device's checker would refuse is not signed.
    let bad = laptop.join("bad.toml");
    std::fs::write(&bad, format!("{runs}\n[outbox]\nmax_age = \"soon\"\n")).unwrap();
    let (ok, said) = fleet.release(&["sign-config", &bad.display().to_string(), "--key", &key]);
    assert!(!ok && said.contains("outbox.max_age"), "{said}");

    let new_text = format!("{runs}\n[outbox]\nstats_interval = \"2m\"\n");
    let file = laptop.join("pi-01.toml");
    std::fs::write(&file, &new_text).unwrap();
    let (ok, said) = fleet.release(&["sign-config", &file.display().to_string(), "--key", &key]);
    assert!(ok && said.contains("Signed the config of pi-01"), "{said}");
    let signed = laptop.join("pi-01.toml.signed");
    let signed_arg = signed.display().to_string();
    let (ok, said) = fleet.release(&["publish", &signed_arg, "--devices", "pi-02"]);
    assert!(
        !ok && said.contains("is the config of pi-01 alone"),
        "{said}"
    );
    let (ok, said) = fleet.release(&["publish", &signed_arg, "--devices", "pi-01"]);
    assert!(ok, "{said}");
    let applying = state_of(&witness, "applying");
    assert_eq!(applying["config"], sha256(new_text.as_bytes()));
    let handed = fleet.updates("pi-01").join("ready/config.signed");
    assert_eq!(
        std::fs::read(&handed).unwrap(),
        std::fs::read(&signed).unwrap()
    );

    let (ok, said) = fleet.release(&["status"]);
    assert!(ok, "{said}");
    let line = said
        .lines()
        .rev()
        .find(|l| l.starts_with("pi-01"))
        .unwrap_or_default();
    assert!(
        line.contains("applying") && line.contains(&sha256(new_text.as_bytes())[..12]),
        "release status shows the config: {said}"
    );
    eprintln!("{said}");

    // pi-02's config, sent to pi-01 by the operator's account (what a
    // broker could do): refused in words, nothing handed over.
    let other = laptop.join("pi-02.toml");
    std::fs::write(&other, runs.replace("\"pi-01\"", "\"pi-02\"")).unwrap();
    let (ok, said) = fleet.release(&["sign-config", &other.display().to_string(), "--key", &key]);
    assert!(ok, "{said}");
    std::fs::remove_file(&handed).unwrap();
    fleet.publish_raw("pinpost/pi-01/config", &laptop.join("pi-02.toml.signed"));
    let refused = state_of(&witness, "refused");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("signed for pi-02, and this device is pi-01"),
        "{refused}"
    );
    // A config in plain TOML, unsigned.
    fleet.publish_raw("pinpost/pi-01/config", &file);
    let lines = witness.wait_until("the unsigned config refused", WAIT, |l| {
        l.starts_with("pinpost/pi-01/config/state ") && l.contains("is not a signed config")
    });
    assert!(!lines.is_empty());
    assert!(
        !handed.exists(),
        "nothing unsigned or misdirected reaches the helper"
    );
}
