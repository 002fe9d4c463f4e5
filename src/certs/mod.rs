//! Making the certificates a pinpost fleet needs: a CA, a broker certificate
//! for every name the broker is reached by, and one client certificate per
//! device, plus the Mosquitto settings that use them (`mosquitto`).
//!
//! It knows X.509 and key generation (rcgen on ring, so the binary carries
//! one crypto library; RSA keys come from the `rsa` crate because ring
//! cannot generate them). It does not know files, the config or MQTT
//! connections: the `certs` command writes what this returns.

pub(crate) mod mosquitto;
pub(crate) mod request;
pub(crate) mod revocation;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

/// How long what we make is valid. A CA outlives many device certificates;
/// leaf certificates are renewed more often (and `pinpost check` warns 30
/// days ahead).
pub(crate) const CA_DAYS: u32 = 3650;
/// See [`CA_DAYS`].
pub(crate) const LEAF_DAYS: u32 = 825;

/// Why a key or certificate could not be made (the `certs` command's
/// failures that are not about files).
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// Key generation failed.
    #[error("cannot make the key: {0}")]
    KeyGen(String),
    /// Building or signing the certificate failed.
    #[error("cannot make the certificate: {0}")]
    Sign(String),
    /// A broker name that is neither a DNS name nor an IP address.
    #[error("{what} is not a valid host name or IP address")]
    BadHost {
        /// The name as given.
        what: String,
    },
    /// An existing CA certificate or key that cannot be used to sign.
    #[error("{file}: {detail}")]
    BadCa {
        /// The file as given.
        file: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// The key algorithm of a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// ECDSA P-256: small, fast, what every current broker accepts.
    EcdsaP256,
    /// RSA 2048 with SHA-256, for old brokers and devices.
    Rsa2048,
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

/// A CA that can sign: its certificate (as read) and key.
pub(crate) struct Authority {
    /// What rcgen signs with: the CA's subject and key, rebuilt once.
    issuer: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate's subject, DER, which every issued certificate's
    /// issuer must equal byte for byte for chains to build.
    subject_der: Vec<u8>,
    /// The CA's public key, to check each new certificate's signature.
    spki: Vec<u8>,
}

/// Makes a new self-signed CA named `name`.
pub(crate) fn new_ca(name: &str, kind: KeyKind, now_unix: i64) -> Result<Issued, CertsError> {
    let key = new_key(kind)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = names(&[
        (DnType::CommonName, name),
        (DnType::OrganizationName, "pinpost"),
    ]);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, now_unix, CA_DAYS);
    let cert = params
        .self_signed(&key)
        .map_err(|e| CertsError::Sign(e.to_string()))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

impl Authority {
    /// Loads a CA from its PEM certificate and key. `file` names the
    /// certificate file in errors.
    pub(crate) fn load(file: &str, cert_pem: &str, key_pem: &str) -> Result<Authority, CertsError> {
        let bad = |detail: String| CertsError::BadCa {
            file: file.to_string(),
            detail,
        };
        let der = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| bad("holds no PEM certificate".into()))?;
        let (_, cert) = X509Certificate::from_der(&der)
            .map_err(|e| bad(format!("is not a readable certificate ({e})")))?;
        if !cert.is_ca() {
            return Err(bad(
                "is not a CA certificate (no basicConstraints CA:TRUE); run `pinpost certs ca` \
                 to make one"
                    .into(),
            ));
        }
        let key =
            KeyPair::from_pem(key_pem).map_err(|e| bad(format!("its key cannot be read: {e}")))?;
        let spki = cert.public_key().raw.to_vec();
        if key.public_key_der() != spki {
            return Err(bad(
                "the CA key does not belong to this CA certificate (ca.key and ca.crt come from \
                 different runs)"
                    .into(),
            ));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&cert).map_err(bad)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        // It may sign the fleet's revocation list when its own certificate
        // says so (or sets no key usage at all): a CRL signed otherwise is
        // refused by OpenSSL, and with it every client.
        let crl_sign = match cert.key_usage() {
            Ok(Some(usage)) => usage.value.crl_sign(),
            Ok(None) => true,
            Err(_) => false,
        };
        if crl_sign {
            params.key_usages.push(KeyUsagePurpose::CrlSign);
        }
        let issuer = params
            .self_signed(&key)
            .map_err(|e| CertsError::Sign(e.to_string()))?;
        Ok(Authority {
            issuer,
            key,
            subject_der: cert.subject().as_raw().to_vec(),
            spki,
        })
    }

    /// A broker certificate valid for every one of `hosts` (IP addresses
    /// and DNS names); the first is also the Common Name.
    pub(crate) fn broker(
        &self,
        hosts: &[String],
        kind: KeyKind,
        now: i64,
    ) -> Result<Issued, CertsError> {
        let first = hosts.first().ok_or_else(|| CertsError::BadHost {
            what: "(none)".into(),
        })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = names(&[(DnType::CommonName, first)]);
        params.subject_alt_names = hosts
            .iter()
            .map(|h| alt_name(h))
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, kind, now)
    }

    /// A client certificate for device (or operator) `id`: the CN is the id,
    /// which Mosquitto's `use_identity_as_username` makes the user name.
    pub(crate) fn client(&self, id: &str, kind: KeyKind, now: i64) -> Result<Issued, CertsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = names(&[(DnType::CommonName, id)]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, kind, now)
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        kind: KeyKind,
        now: i64,
    ) -> Result<Issued, CertsError> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if kind == KeyKind::Rsa2048 {
            // RSA key exchange in TLS 1.2 encrypts with the key; ECDSA never does.
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, now, LEAF_DAYS);
        let key = new_key(kind)?;
        let cert = params
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(|e| CertsError::Sign(e.to_string()))?;
        self.confirm(cert.der())?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Checks that a new certificate really chains to the CA as read, so a
    /// CA whose subject we could not reproduce exactly fails here, not later
    /// in a handshake.
    fn confirm(&self, der: &[u8]) -> Result<(), CertsError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| CertsError::Sign(e.to_string()))?;
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&self.spki)
            .map_err(|e| CertsError::Sign(e.to_string()))?;
        if cert.issuer().as_raw() != self.subject_der.as_slice()
            || cert.verify_signature(Some(&spki)).is_err()
        {
            return Err(CertsError::Sign(
                "the certificate would not chain to this CA (its subject uses an encoding \
                 pinpost cannot reproduce); issue certificates with the tool that made the CA, \
                 or make a new CA with `pinpost certs ca`"
                    .into(),
            ));
        }
        Ok(())
    }
}

fn names(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (kind, value) in parts {
        dn.push(kind.clone(), DnValue::Utf8String((*value).to_string()));
    }
    dn
}

/// The CA's subject as rcgen parameters, keeping each value's string type so
/// the issuer name of what we sign matches the CA's subject byte for byte.
fn distinguished_name(cert: &X509Certificate<'_>) -> Result<DistinguishedName, String> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let mut dn = DistinguishedName::new();
    for attr in cert.subject().iter_attributes() {
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .map(|arcs| arcs.collect())
            .ok_or("its subject has an attribute pinpost cannot read")?;
        let kind = DnType::from_oid(&oid);
        let any = attr.attr_value();
        let text = attr
            .as_str()
            .map_err(|_| "its subject has a value pinpost cannot read")?
            .to_string();
        let value = match any.tag() {
            Tag::PrintableString => DnValue::PrintableString(
                text.try_into()
                    .map_err(|_| "its subject has an invalid PrintableString")?,
            ),
            Tag::Ia5String => DnValue::Ia5String(
                text.try_into()
                    .map_err(|_| "its subject has an invalid IA5String")?,
            ),
            Tag::TeletexString => DnValue::TeletexString(
                text.try_into()
                    .map_err(|_| "its subject has an invalid TeletexString")?,
            ),
            _ => DnValue::Utf8String(text),
        };
        dn.push(kind, value);
    }
    Ok(dn)
}

fn alt_name(host: &str) -> Result<SanType, CertsError> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
        });
    if !valid {
        return Err(CertsError::BadHost {
            what: format!("{host:?}"),
        });
    }
    host.to_string()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|_| CertsError::BadHost {
            what: format!("{host:?}"),
        })
}

/// Valid from yesterday (clocks on small devices drift, and rcgen takes
/// whole days) for `days`.
fn validity(params: &mut CertificateParams, now: i64, days: u32) {
    let at = |unix: i64| {
        let (y, m, d) = crate::utc::date(unix);
        rcgen::date_time_ymd(y as i32, m as u8, d as u8)
    };
    params.not_before = at(now - 86_400);
    params.not_after = at(now + i64::from(days) * 86_400);
}

/// A signed request's validity: from a little before `now` (clocks
/// disagree; a quarter of a short life at most, so a certificate that
/// lives minutes is not due for renewal as it arrives) to `life` after it.
fn leaf_validity(params: &mut CertificateParams, now: i64, life: std::time::Duration) {
    let life_secs = i64::try_from(life.as_secs()).unwrap_or(i64::MAX / 2);
    let back = (life_secs / 4).min(86_400);
    let at = |unix: i64| {
        rcgen::date_time_ymd(1970, 1, 1)
            + std::time::Duration::from_secs(u64::try_from(unix.max(0)).unwrap_or(0))
    };
    params.not_before = at(now.saturating_sub(back));
    params.not_after = at(now.saturating_add(life_secs));
}

/// How long a device certificate lasts unless the operator says otherwise
/// (`--valid-for`'s default says the same).
#[cfg(test)]
pub(crate) const LEAF_LIFE: std::time::Duration =
    std::time::Duration::from_secs(LEAF_DAYS as u64 * 86_400);

fn new_key(kind: KeyKind) -> Result<KeyPair, CertsError> {
    match kind {
        KeyKind::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CertsError::KeyGen(e.to_string())),
        KeyKind::Rsa2048 => {
            use rsa::pkcs8::EncodePrivateKey;
            let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
                .map_err(|e| CertsError::KeyGen(e.to_string()))?;
            let der = private
                .to_pkcs8_der()
                .map_err(|e| CertsError::KeyGen(e.to_string()))?;
            KeyPair::from_pkcs8_der_and_sign_algo(
                &PrivatePkcs8KeyDer::from(der.as_bytes().to_vec()),
                &rcgen::PKCS_RSA_SHA256,
            )
            .map_err(|e| CertsError::KeyGen(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_430_292; // 2026-11-23

    fn parse(pem: &str) -> crate::tls::CertSummary {
        let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        crate::tls::CertSummary::from_der(&der).unwrap()
    }

    #[test]
    fn a_broker_certificate_names_every_host_and_chains_to_the_ca() {
        let ca = new_ca("pinpost CA", KeyKind::EcdsaP256, NOW).unwrap();
        let authority = Authority::load("ca.crt", &ca.cert_pem, &ca.key_pem).unwrap();
        let hosts = vec!["192.168.1.5".to_string(), "broker.local".to_string()];
        let broker = authority.broker(&hosts, KeyKind::EcdsaP256, NOW).unwrap();
        let summary = parse(&broker.cert_pem);
        assert_eq!(summary.alt_names, ["192.168.1.5", "broker.local"]);
        assert_eq!(summary.common_name.as_deref(), Some("192.168.1.5"));
        assert_eq!(summary.issuer, parse(&ca.cert_pem).subject);
        assert_ne!(summary.subject, summary.issuer, "distinct subjects");
        assert!(summary.not_after - NOW > 800 * 86_400);
        assert!(summary.not_before < NOW);
    }

    #[test]
    fn a_device_certificate_is_named_for_the_device() {
        let ca = new_ca("pinpost CA", KeyKind::EcdsaP256, NOW).unwrap();
        let authority = Authority::load("ca.crt", &ca.cert_pem, &ca.key_pem).unwrap();
        let device = authority.client("pi-01", KeyKind::EcdsaP256, NOW).unwrap();
        assert_eq!(parse(&device.cert_pem).subject, "CN=pi-01");
        assert!(device.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn an_rsa_ca_signs_rsa_devices() {
        let ca = new_ca("old CA", KeyKind::Rsa2048, NOW).unwrap();
        let authority = Authority::load("ca.crt", &ca.cert_pem, &ca.key_pem).unwrap();
        let device = authority.client("pi-02", KeyKind::Rsa2048, NOW).unwrap();
        assert_eq!(parse(&device.cert_pem).issuer, "CN=old CA, O=pinpost");
    }

    #[test]
    fn a_mismatched_ca_key_or_a_leaf_as_ca_is_refused() {
        let ca = new_ca("one", KeyKind::EcdsaP256, NOW).unwrap();
        let other = new_ca("two", KeyKind::EcdsaP256, NOW).unwrap();
        let err = Authority::load("ca.crt", &ca.cert_pem, &other.key_pem)
            .err()
            .unwrap();
        assert!(err.to_string().contains("does not belong"), "{err}");
        let authority = Authority::load("ca.crt", &ca.cert_pem, &ca.key_pem).unwrap();
        let leaf = authority.client("pi", KeyKind::EcdsaP256, NOW).unwrap();
        let err = Authority::load("pi.crt", &leaf.cert_pem, &leaf.key_pem)
            .err()
            .unwrap();
        assert!(err.to_string().contains("is not a CA certificate"), "{err}");
    }

    #[test]
    fn bad_host_names_are_refused() {
        for bad in ["", "has space", "a..b", "under_score"] {
            assert!(alt_name(bad).is_err(), "{bad:?}");
        }
        assert!(alt_name("::1").is_ok());
    }
}
