//! A manifest opens only with its key and unchanged; a device admits only
//! a release for itself, newer, in date and not older than what it took.

use super::*;
use crate::release::key;

const NOW: i64 = 1_796_560_000;

fn keys() -> (Signer, Public) {
    let (private, public) = key::generate().unwrap();
    (
        Signer::from_pem(private.as_bytes()).unwrap(),
        Public::from_pem(public.as_bytes()).unwrap(),
    )
}

fn release(version: &str) -> Manifest {
    Manifest {
        format: 1,
        package: "pinpost".into(),
        version: version.into(),
        architecture: "arm64".into(),
        size: 1000,
        sha256: "ab".repeat(32),
        replaces: Vec::new(),
        downgrade: false,
        issued: NOW - 60,
        expires: NOW + 30 * 86_400,
    }
}

fn pi(version: &str) -> Installed<'_> {
    Installed {
        package: "pinpost",
        version,
        architecture: "arm64",
        newest_issued: None,
    }
}

#[test]
fn a_manifest_opens_with_its_key_and_says_what_was_signed() {
    let (signer, public) = keys();
    let signed = release("0.2.0").sign(&signer).unwrap();
    assert_eq!(open(&signed, &public).unwrap(), release("0.2.0"));
    assert_eq!(public, signer.public());
}

#[test]
fn a_changed_manifest_or_another_key_is_refused_in_words() {
    let (signer, public) = keys();
    let signed = String::from_utf8(release("0.2.0").sign(&signer).unwrap()).unwrap();
    let changed = signed.replace("0.2.0", "0.2.1");
    let e = open(changed.as_bytes(), &public).unwrap_err();
    assert!(e.to_string().contains("does not verify"), "{e}");
    let (other, other_public) = keys();
    let e = open(&release("0.2.0").sign(&other).unwrap(), &public).unwrap_err();
    assert!(e.to_string().contains("this device trusts only"), "{e}");
    // Another key's id put on this key's envelope: the signature decides.
    let forged = String::from_utf8(release("0.2.0").sign(&other).unwrap())
        .unwrap()
        .replace(&other_public.id(), &public.id());
    let e = open(forged.as_bytes(), &public).unwrap_err();
    assert!(e.to_string().contains("does not verify"), "{e}");
    let e = open(&vec![b' '; MAX_MANIFEST + 1], &public).unwrap_err();
    assert!(e.to_string().contains("far larger than a manifest"), "{e}");
}

#[test]
fn impossible_fields_are_refused_even_when_signed() {
    let (signer, _) = keys();
    let mut m = release("0.2.0");
    m.size = MAX_PACKAGE + 1;
    assert!(m.sign(&signer).is_err());
    let mut m = release("v2");
    m.size = 1;
    assert!(m.sign(&signer).unwrap_err().to_string().contains("version"));
    let mut m = release("0.2.0");
    m.expires = m.issued + MAX_LIFE + 1;
    assert!(m.sign(&signer).is_err(), "a manifest frozen for years");
}

#[test]
fn a_device_admits_only_a_newer_release_for_itself_in_date() {
    let m = release("0.2.0");
    assert_eq!(m.admit(&pi("0.1.0"), Some(NOW)), Ok(()));
    let said = |m: &Manifest, i: &Installed<'_>, now| m.admit(i, now).unwrap_err().to_string();
    assert!(said(&m, &pi("0.2.0"), Some(NOW)).contains("installed already"));
    assert!(said(&m, &pi("0.3.0"), Some(NOW)).contains("older than the installed 0.3.0"));
    let mut armhf = pi("0.1.0");
    armhf.architecture = "armhf";
    assert!(said(&m, &armhf, Some(NOW)).contains("built for arm64, and this device is armhf"));
    assert!(said(&m, &pi("0.1.0"), None).contains("clock is not set yet"));
    assert!(said(&m, &pi("0.1.0"), Some(m.expires)).contains("expired at"));
    assert!(said(&m, &pi("0.1.0"), Some(m.issued - 7200)).contains("ahead of this device's clock"));
    let mut seen = pi("0.1.0");
    seen.newest_issued = Some(m.issued + 1);
    assert!(said(&m, &seen, Some(NOW)).contains("an old manifest replayed"));
    let mut back = release("0.1.0");
    back.downgrade = true;
    assert_eq!(back.admit(&pi("0.2.0"), Some(NOW)), Ok(()));
    let mut only = release("0.2.0");
    only.replaces = vec!["0.1.5".into()];
    assert!(said(&only, &pi("0.1.0"), Some(NOW)).contains("may replace only 0.1.5"));
}

#[test]
fn a_package_matches_its_manifest_by_size_and_hash() {
    let data = b"a package";
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut m = release("0.2.0");
    m.size = data.len() as u64;
    m.sha256 = crate::hex::hex(digest.as_ref());
    assert_eq!(m.describes(data.len() as u64, digest.as_ref()), Ok(()));
    assert!(
        m.describes(3, digest.as_ref())
            .unwrap_err()
            .to_string()
            .contains("truncated")
    );
    let other = ring::digest::digest(&ring::digest::SHA256, b"another");
    assert!(
        m.describes(data.len() as u64, other.as_ref())
            .unwrap_err()
            .to_string()
            .contains("SHA-256")
    );
}
