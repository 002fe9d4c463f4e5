//! A renewed pair is taken only when it is this device's, from its CA, for
//! the key it made, and in date; a request's proof holds only for the key
//! of the certificate it carries.

use super::*;
use crate::certs::{Authority, KeyKind, request};

const NOW: i64 = 1_796_560_000;
const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

fn ca(name: &str) -> (Authority, Vec<u8>) {
    let issued = crate::certs::new_ca(name, KeyKind::EcdsaP256, NOW - 86_400).unwrap();
    let authority = Authority::load("ca.crt", &issued.cert_pem, &issued.key_pem).unwrap();
    (
        authority,
        ca_certificates(issued.cert_pem.as_bytes()).remove(0),
    )
}

/// A key and the certificate `authority` signs for it, named `id`.
fn issued(authority: &Authority, id: &str, now: i64) -> (String, String) {
    let key = request::new_key(KeyKind::EcdsaP256).unwrap();
    let csr = request::make(id, &key).unwrap();
    let checked = request::read(csr.as_bytes()).unwrap();
    let cert = authority.sign(&checked, now, HOUR).unwrap();
    (cert, key.serialize_pem())
}

#[test]
fn a_certificate_for_this_device_its_key_and_its_ca_is_taken() {
    let (authority, ca_der) = ca("fleet CA");
    let (cert, key) = issued(&authority, "pi-01", NOW);
    let pair = Pair::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    assert_eq!(pair.check_for("pi-01", &[ca_der], NOW), Ok(()));
    assert_eq!(pair.name(), Some("pi-01"));
    assert_eq!(pair.ends(), NOW + 3600);
    assert_eq!(pair.starts(), NOW - 900, "a quarter of an hour's life back");
    assert!(pair.leaf_pem().starts_with("-----BEGIN CERTIFICATE-----"));
}

#[test]
fn a_certificate_for_another_key_is_refused() {
    let (authority, _) = ca("fleet CA");
    let (cert, _) = issued(&authority, "pi-01", NOW);
    let (_, other_key) = issued(&authority, "pi-01", NOW);
    assert_eq!(
        Pair::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err(),
        PairError::WrongKey
    );
}

#[test]
fn another_device_another_ca_and_dates_out_of_range_are_refused_in_words() {
    let (authority, ca_der) = ca("fleet CA");
    let (_, stranger_der) = ca("another CA");
    let (cert, key) = issued(&authority, "pi-02", NOW);
    let pair = Pair::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let wrong_id = pair.check_for("pi-01", std::slice::from_ref(&ca_der), NOW);
    assert_eq!(
        wrong_id.unwrap_err().to_string(),
        "is made out to \"pi-02\", not to this device (\"pi-01\")"
    );
    let wrong_ca = pair.check_for("pi-02", &[stranger_der], NOW).unwrap_err();
    assert!(
        wrong_ca.to_string().contains("not signed by the CA"),
        "{wrong_ca}"
    );
    let ended = pair
        .check_for("pi-02", std::slice::from_ref(&ca_der), NOW + 3600)
        .unwrap_err();
    assert!(ended.to_string().starts_with("ended at "), "{ended}");
    let early = pair
        .check_for("pi-02", &[ca_der], NOW - 2 * 3600)
        .unwrap_err();
    assert!(
        early.to_string().starts_with("is not valid until"),
        "{early}"
    );
}

#[test]
fn a_proof_holds_for_its_message_and_key_only() {
    let (authority, _) = ca("fleet CA");
    let (cert, key) = issued(&authority, "pi-01", NOW);
    let pair = Pair::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let (scheme, signature) = pair.prove(b"the request").unwrap();
    assert_eq!(scheme, "ecdsa-p256-sha256");
    let leaf = pair.leaf().unwrap().to_vec();
    assert!(proof_holds(&leaf, &scheme, b"the request", &signature));
    assert!(!proof_holds(&leaf, &scheme, b"another request", &signature));
    let (other, _) = issued(&authority, "pi-01", NOW);
    let other = ca_certificates(other.as_bytes()).remove(0);
    assert!(!proof_holds(&other, &scheme, b"the request", &signature));
    assert!(!proof_holds(&leaf, "md5", b"the request", &signature));
}

#[test]
fn the_identity_offers_the_newest_pair_from_the_next_handshake() {
    let (authority, _) = ca("fleet CA");
    let (cert, key) = issued(&authority, "pi-01", NOW);
    let pair = Pair::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let identity = Identity::default();
    assert!(identity.current().is_none());
    identity.clone().offer(&pair, "trial.pem");
    let offered = identity.current().unwrap();
    assert_eq!(offered.cert[0].as_ref(), pair.leaf().unwrap());
    assert_eq!(identity.shown().unwrap().1, "trial.pem", "failures name it");
}
