//! SECURITY.md states who can reach which topic and what the broker
//! enforces; those claims must stay what `pinpost certs mosquitto` writes,
//! and the address to report to must be the maintainers' own.

use std::time::Duration;

use crate::common::*;

const POLICY: &str = include_str!("../../SECURITY.md");
const CARGO: &str = include_str!("../../Cargo.toml");

#[test]
fn the_policy_says_how_to_report_a_problem_privately() {
    let maintainer = CARGO
        .lines()
        .find_map(|l| l.strip_prefix("maintainer = "))
        .expect("a maintainer in Cargo.toml");
    let address = maintainer
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(address, _)| address)
        .expect("an e-mail address in the maintainer");
    assert!(POLICY.contains("## Reporting a problem"), "{POLICY}");
    assert!(POLICY.contains(&format!("**{address}**")), "{POLICY}");
    assert!(POLICY.contains("privately"), "{POLICY}");
}

#[test]
fn the_policy_describes_the_acl_and_listener_pinpost_writes() {
    let dir = tempfile::tempdir().unwrap();
    let out = pinpost(
        &strings(&[
            "certs",
            "--dir",
            &dir.path().display().to_string(),
            "mosquitto",
        ]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let acl = std::fs::read_to_string(dir.path().join("broker/pinpost.acl")).unwrap();
    let conf = std::fs::read_to_string(dir.path().join("broker/pinpost.conf")).unwrap();
    let has = |text: &str, line: &str| text.lines().any(|l| l.trim() == line);

    // A device: reads its own subtree, writes only what the agent publishes
    // there (never its own commands).
    assert!(has(&acl, "pattern read pinpost/%u/#"), "{acl}");
    assert!(has(&acl, "pattern read pinpost/release/#"), "{acl}");
    assert!(
        POLICY.contains(
            "| a device `pi-01` | `pi-01.crt`/`.key`, CN `pi-01` | `pinpost/pi-01/#`, \
             `pinpost/release/#` | \
             `pinpost/pi-01/` + `status`, `input/#`, `output/#`, `sensor/#`, `stats`, `check`, \
             `cmd/+/result`, `cert/request`, `update`, `config/state` |"
        ),
        "{POLICY}"
    );
    // The operator: reads everything, writes only commands and renewed
    // certificates, on both ports.
    for line in [
        "user operator",
        "user CN=operator",
        "topic read #",
        "topic write pinpost/+/cmd/#",
        "topic write pinpost/+/cert/issued",
    ] {
        assert!(has(&acl, line), "{line:?} in:\n{acl}");
    }
    assert!(
        POLICY.contains(
            "| the operator | `operator.crt`/`.key` | `#` | `pinpost/+/cmd/#`, \
             `pinpost/+/cert/issued`, `pinpost/+/release`, `pinpost/release/#`, \
             `pinpost/+/config` |"
        ),
        "{POLICY}"
    );
    // Nothing else may read or write: no other rule in the ACL.
    let rules: Vec<_> = acl
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        rules,
        [
            "user operator",
            "topic read #",
            "topic write pinpost/+/cmd/#",
            "topic write pinpost/+/cert/issued",
            "topic write pinpost/+/release",
            "topic write pinpost/release/#",
            "topic write pinpost/+/config",
            "user CN=operator",
            "topic read #",
            "topic write pinpost/+/cmd/#",
            "topic write pinpost/+/cert/issued",
            "topic write pinpost/+/release",
            "topic write pinpost/release/#",
            "topic write pinpost/+/config",
            "pattern read pinpost/%u/#",
            "pattern read pinpost/release/#",
            "pattern write pinpost/%u/status",
            "pattern write pinpost/%u/input/#",
            "pattern write pinpost/%u/output/#",
            "pattern write pinpost/%u/sensor/#",
            "pattern write pinpost/%u/stats",
            "pattern write pinpost/%u/check",
            "pattern write pinpost/%u/cmd/+/result",
            "pattern write pinpost/%u/cert/request",
            "pattern write pinpost/%u/update",
            "pattern write pinpost/%u/config/state",
        ],
        "SECURITY.md's table lists every rule"
    );
    // What the broker must enforce, as the listener says it.
    for (line, words) in [
        ("require_certificate true", "`require_certificate true`"),
        ("allow_anonymous false", "`allow_anonymous false`"),
        (
            "use_identity_as_username true",
            "`use_identity_as_username true`",
        ),
        (
            "use_username_as_clientid true",
            "`use_username_as_clientid true`",
        ),
        ("tls_version tlsv1.2", "TLS 1.2 or newer"),
    ] {
        assert!(has(&conf, line), "{line:?} in:\n{conf}");
        assert!(POLICY.contains(words), "{words:?} in SECURITY.md");
    }
}

#[test]
fn home_assistant_rules_are_opt_in_and_each_device_announces_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let out = pinpost(
        &strings(&[
            "certs",
            "--dir",
            &dir.path().display().to_string(),
            "mosquitto",
            "--homeassistant",
        ]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let acl = std::fs::read_to_string(dir.path().join("broker/pinpost.acl")).unwrap();
    let ha: Vec<_> = acl
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains("homeassistant"))
        .collect();
    assert_eq!(
        ha,
        [
            "topic write homeassistant/status",
            "topic write homeassistant/status",
            "pattern write homeassistant/+/%u/+/config",
            "pattern write homeassistant/device/%u/config",
            "pattern read homeassistant/status",
        ],
        "{acl}"
    );
    for words in [
        "`homeassistant/+/pi-01/+/config`",
        "`homeassistant/device/pi-01/config`",
        "may write\n`homeassistant/status`",
    ] {
        assert!(POLICY.contains(words), "{words:?} in SECURITY.md");
    }
}
