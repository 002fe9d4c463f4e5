//! Requests as `pinpost enroll` makes them, and the ones `certs sign` must
//! refuse: changed on the way, naming no device or two, an unwelcome key,
//! asking for more than a device gets.

use super::*;

const NOW: i64 = 1_796_560_000;

fn ca() -> Authority {
    let issued = crate::certs::new_ca("test CA", KeyKind::EcdsaP256, NOW).unwrap();
    Authority::load("ca.crt", &issued.cert_pem, &issued.key_pem).unwrap()
}

fn request_with(params: CertificateParams, key: &KeyPair) -> String {
    params.serialize_request(key).unwrap().pem().unwrap()
}

fn named(parts: &[(DnType, &str)]) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for (kind, value) in parts {
        dn.push(kind.clone(), DnValue::Utf8String((*value).to_string()));
    }
    params.distinguished_name = dn;
    params
}

#[test]
fn an_enrolled_request_is_signed_for_its_own_key_and_chains_to_the_ca() {
    let key = new_key(KeyKind::EcdsaP256).unwrap();
    let pem = make("pi-01", &key).unwrap();
    let request = read(pem.as_bytes()).unwrap();
    assert_eq!(request.id, "pi-01");
    let cert = ca().sign(&request, NOW, crate::certs::LEAF_LIFE).unwrap();
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    let (_, parsed) = x509_parser::prelude::X509Certificate::from_der(der.as_ref()).unwrap();
    assert_eq!(
        parsed.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw(),
        "the certificate is for the device's key"
    );
    let cn = parsed.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "pi-01");
    assert!(!parsed.is_ca());
    // A Pi that already holds its key asks again with the same key.
    let again = make("pi-01", &read_key(&key.serialize_pem()).unwrap()).unwrap();
    assert!(read(again.as_bytes()).is_ok());
}

#[test]
fn a_request_changed_on_the_way_is_refused() {
    let key = new_key(KeyKind::EcdsaP256).unwrap();
    let pem = make("pi-01", &key).unwrap();
    let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).unwrap();
    let mut bytes = der.as_ref().to_vec();
    // The last byte of the name "pi-01": now "pi-02".
    let at = bytes.windows(5).position(|w| w == b"pi-01").unwrap() + 4;
    bytes[at] = b'2';
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64(&bytes)
    );
    assert_eq!(
        read(tampered.as_bytes()).unwrap_err(),
        RequestError::BadSignature
    );
    assert_eq!(read(b"hello").unwrap_err(), RequestError::NotPem);
    let words = read(&vec![b'x'; MAX_REQUEST_BYTES + 1])
        .unwrap_err()
        .to_string();
    assert!(words.contains("far larger than a request"), "{words}");
}

#[test]
fn a_request_must_name_exactly_one_device() {
    let key = new_key(KeyKind::EcdsaP256).unwrap();
    let two = request_with(
        named(&[
            (DnType::CommonName, "pi-01"),
            (DnType::OrganizationName, "x"),
        ]),
        &key,
    );
    let words = read(two.as_bytes()).unwrap_err().to_string();
    assert!(
        words.starts_with("it must name exactly one device (one Common Name), but names CN=\"pi-01\", 2.5.4.10=\"x\""),
        "{words}"
    );
    let none = request_with(named(&[]), &key);
    assert_eq!(
        read(none.as_bytes()).unwrap_err().to_string(),
        "it must name exactly one device (one Common Name), but names nothing"
    );
}

#[test]
fn a_request_that_asks_for_more_than_a_device_gets_is_refused() {
    let key = new_key(KeyKind::EcdsaP256).unwrap();
    let mut params = named(&[(DnType::CommonName, "pi-01")]);
    params.subject_alt_names = vec![rcgen::SanType::DnsName(
        "broker.example".try_into().unwrap(),
    )];
    let words = read(request_with(params, &key).as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        words.starts_with("it asks for extensions (more names (subjectAltName)), which the CA does not give a device"),
        "{words}"
    );
}

#[test]
fn a_key_the_ca_does_not_give_certificates_for_is_refused() {
    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let words = read(make("pi-01", &ed).unwrap().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        words.starts_with(
            "its key is of a kind the CA does not give certificates for (1.3.101.112)"
        ),
        "{words}"
    );
    let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let words = read(make("pi-01", &p384).unwrap().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        words.contains("on the elliptic curve 1.3.132.0.34, not P-256"),
        "{words}"
    );
    assert_eq!(rsa_bits(&[0, 0x01, 0xff]), 9);
    assert_eq!(rsa_bits(&[0x80; 128]), 1024);
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
