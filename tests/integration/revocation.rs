//! `certs revoke` and `certs rotate-ca` cut short at each step (a power
//! cut, Ctrl-C: the folder is put in the state each cut leaves) are
//! finished by running them again: never a broker that still accepts a
//! revoked device, never a CA whose key is not its certificate's. A
//! revocation list too large to be the fleet's is refused with nothing
//! written.

use std::path::Path;
use std::time::Duration;

use crate::common::*;

fn certs(dir: &Path, args: &[&str]) -> (bool, String) {
    let mut all = strings(&["certs", "--dir", &dir.display().to_string()]);
    all.extend(strings(args));
    let out = pinpost(&all, Duration::from_secs(120));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    (out.status.success(), said)
}

/// A laptop folder with a CA, the broker, the operator and `devices`,
/// and the broker's files from `certs mosquitto`.
fn fleet(devices: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut steps: Vec<Vec<&str>> = vec![
        vec!["ca"],
        vec!["broker", "--host", "127.0.0.1"],
        vec!["device", "operator"],
    ];
    for id in devices {
        steps.push(vec!["device", id]);
    }
    steps.push(vec!["mosquitto"]);
    for step in steps {
        let (ok, said) = certs(dir.path(), &step);
        assert!(ok, "{step:?}: {said}");
    }
    dir
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

#[test]
fn a_revocation_cut_short_at_any_step_is_finished_by_running_it_again() {
    let dir = fleet(&["pi-01", "pi-02"]);
    let d = dir.path();
    let (conf_before, acl_before) = (
        read(d, "broker/pinpost.conf"),
        read(d, "broker/pinpost.acl"),
    );
    assert!(!conf_before.contains("crlfile"), "{conf_before}");

    // Cut after the list was written, before the folder moved: the state
    // is the list with the serial and everything else as before.
    let (ok, said) = certs(d, &["revoke", "pi-01"]);
    assert!(ok, "{said}");
    let list_once = read(d, "revoked.txt");
    let kept = std::fs::read_dir(d.join("revoked"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::rename(&kept, d.join("devices/pi-01")).unwrap();
    std::fs::write(d.join("broker/pinpost.conf"), &conf_before).unwrap();
    std::fs::write(d.join("broker/pinpost.acl"), &acl_before).unwrap();
    std::fs::remove_file(d.join("broker/crl.pem")).unwrap();
    let (ok, said) = certs(d, &["revoke", "pi-01"]);
    assert!(ok, "{said}");
    assert_eq!(read(d, "revoked.txt"), list_once, "listed once, not twice");
    assert!(!d.join("devices/pi-01").exists());
    assert!(read(d, "broker/pinpost.conf").contains("crlfile"));
    assert!(!read(d, "broker/pinpost.acl").contains("pi-01"));
    assert!(d.join("broker/crl.pem").exists());

    // Cut after the folder moved, before the broker's files were written:
    // the old listener (no crlfile) would still let pi-02 in.
    let (ok, said) = certs(d, &["revoke", "pi-02"]);
    assert!(ok, "{said}");
    std::fs::write(d.join("broker/pinpost.conf"), &conf_before).unwrap();
    std::fs::write(d.join("broker/pinpost.acl"), &acl_before).unwrap();
    let (ok, said) = certs(d, &["revoke", "pi-02"]);
    assert!(ok, "{said}");
    assert!(
        said.contains("pi-02 is revoked already (listed in")
            && said.contains("sudo systemctl restart mosquitto"),
        "{said}"
    );
    assert!(read(d, "broker/pinpost.conf").contains("crlfile"));
    let acl = read(d, "broker/pinpost.acl");
    assert!(!acl.contains("pi-02") && !acl.contains("pi-01"), "{acl}");
    let crl = std::process::Command::new("openssl")
        .args(["crl", "-noout", "-text", "-in"])
        .arg(d.join("broker/crl.pem"))
        .output()
        .unwrap();
    let crl = String::from_utf8_lossy(&crl.stdout);
    assert_eq!(
        crl.matches("Serial Number:").count(),
        2,
        "both devices: {crl}"
    );

    // A device never issued and never revoked is still an error in words.
    let (ok, said) = certs(d, &["revoke", "pi-09"]);
    assert!(!ok);
    assert!(said.contains("was it revoked already"), "{said}");
}

#[test]
fn a_revocation_list_too_large_to_be_the_fleets_is_refused_and_nothing_changes() {
    let dir = fleet(&["pi-01"]);
    let d = dir.path();
    let huge = "00 pi-00 0\n".repeat(5 * 1024 * 1024 / 11);
    std::fs::write(d.join("revoked.txt"), &huge).unwrap();
    let acl_before = read(d, "broker/pinpost.acl");
    let (ok, said) = certs(d, &["revoke", "pi-01"]);
    assert!(!ok, "{said}");
    assert!(
        said.contains("revoked.txt: ") && said.contains("too large"),
        "{said}"
    );
    assert!(
        d.join("devices/pi-01/pi-01.crt").exists(),
        "the device's folder stays"
    );
    assert_eq!(read(d, "broker/pinpost.acl"), acl_before);
    assert!(!d.join("broker/crl.pem").exists());
    assert_eq!(
        std::fs::metadata(d.join("revoked.txt")).unwrap().len(),
        huge.len() as u64
    );
}

/// What the laptop's folder holds before and after `certs rotate-ca`.
struct Rotation {
    old_crt: Vec<u8>,
    old_key: Vec<u8>,
    new_crt: Vec<u8>,
    new_key: Vec<u8>,
}

fn file(d: &Path, name: &str) -> Vec<u8> {
    std::fs::read(d.join(name)).unwrap_or_default()
}

fn put(d: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(d.join(name), bytes).unwrap();
}

/// The folder as a cut at one step of `rotate-ca` leaves it.
fn cut_rotation(d: &Path, r: &Rotation, step: &str) {
    for name in [
        "ca-old.crt",
        "private/ca-old.key",
        "ca-next.crt",
        "private/ca-next.key",
    ] {
        let _ = std::fs::remove_file(d.join(name));
    }
    let folders = [
        "broker/ca.crt",
        "devices/pi-01/ca.crt",
        "devices/operator/ca.crt",
    ];
    let (crt, key) = (&r.old_crt, &r.old_key);
    put(d, "ca.crt", crt);
    put(d, "private/ca.key", key);
    let _ = std::fs::remove_file(d.join("ca-bundle.crt"));
    for f in folders {
        put(d, f, crt);
    }
    put(d, "ca-next.crt", &r.new_crt);
    put(d, "private/ca-next.key", &r.new_key);
    if step == "new CA made" {
        return;
    }
    put(d, "private/ca-old.key", &r.old_key);
    put(d, "ca-old.crt", &r.old_crt);
    if step == "old CA aside" {
        return;
    }
    std::fs::rename(d.join("private/ca-next.key"), d.join("private/ca.key")).unwrap();
    if step == "new key in place" {
        return;
    }
    std::fs::rename(d.join("ca-next.crt"), d.join("ca.crt")).unwrap();
    let mut bundle = r.new_crt.clone();
    bundle.extend_from_slice(&r.old_crt);
    put(d, "ca-bundle.crt", &bundle);
    put(d, folders[0], &bundle);
    assert_eq!(step, "bundle half written");
}

#[test]
fn a_ca_rotation_cut_short_at_any_step_is_finished_by_running_it_again() {
    let dir = fleet(&["pi-01"]);
    let d = dir.path();
    let (old_crt, old_key) = (file(d, "ca.crt"), file(d, "private/ca.key"));
    let (ok, said) = certs(d, &["rotate-ca"]);
    assert!(ok, "{said}");
    let r = Rotation {
        old_crt,
        old_key,
        new_crt: file(d, "ca.crt"),
        new_key: file(d, "private/ca.key"),
    };
    let whole = |step: &str| {
        let mut bundle = r.new_crt.clone();
        bundle.extend_from_slice(&r.old_crt);
        assert_eq!(file(d, "ca.crt"), r.new_crt, "after {step}");
        assert_eq!(file(d, "private/ca.key"), r.new_key, "after {step}");
        assert_eq!(file(d, "ca-old.crt"), r.old_crt, "after {step}");
        assert_eq!(file(d, "private/ca-old.key"), r.old_key, "after {step}");
        assert_eq!(file(d, "ca-bundle.crt"), bundle, "after {step}");
        for f in [
            "broker/ca.crt",
            "devices/pi-01/ca.crt",
            "devices/operator/ca.crt",
        ] {
            assert_eq!(file(d, f), bundle, "{f} after {step}");
        }
        assert!(!d.join("ca-next.crt").exists() && !d.join("private/ca-next.key").exists());
    };
    whole("the first run");
    let (ok, said) = certs(d, &["rotate-ca"]);
    assert!(!ok && said.contains("a change-over is under way"), "{said}");
    for step in [
        "new CA made",
        "old CA aside",
        "new key in place",
        "bundle half written",
    ] {
        cut_rotation(d, &r, step);
        let (ok, said) = certs(d, &["rotate-ca"]);
        assert!(ok, "cut at {step}: {said}");
        if step != "new CA made" {
            assert!(
                said.contains("A change-over was cut short; it is finished now."),
                "{said}"
            );
        }
        whole(step);
        // The new CA signs.
        let (ok, said) = certs(d, &["device", "pi-07", "--force"]);
        assert!(ok, "after {step}: {said}");
    }
    let (ok, said) = certs(d, &["rotate-ca", "--finish"]);
    assert!(!ok, "pi-01 still holds an old certificate: {said}");
}
