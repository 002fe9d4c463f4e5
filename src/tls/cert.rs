//! What a certificate says, in the terms a person compares: subject, issuer,
//! the names it is valid for, its dates. Used to explain failures.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The parts of a certificate that explanations refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The subject, as `CN=…, O=…`.
    pub(crate) subject: String,
    /// The issuer, in the same form.
    pub(crate) issuer: String,
    /// The subject's Common Name.
    pub(crate) common_name: Option<String>,
    /// DNS names and IP addresses from subjectAltName.
    pub(crate) alt_names: Vec<String>,
    /// Whether there is a subjectAltName extension at all.
    pub(crate) has_alt_names: bool,
    /// Unix seconds.
    pub(crate) not_before: i64,
    /// Unix seconds.
    pub(crate) not_after: i64,
    /// Whether basicConstraints says CA.
    pub(crate) is_ca: bool,
    /// 1 for the old X.509 v1 certificates (no extensions at all), else 3.
    pub(crate) version: u32,
}

impl CertSummary {
    pub(crate) fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let san = cert.subject_alternative_name().ok().flatten();
        let alt_names = san
            .as_ref()
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::DNSName(dns) => Some((*dns).to_string()),
                        GeneralName::IPAddress(bytes) => ip_text(bytes),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(CertSummary {
            subject: name_text(&cert.subject().to_string()),
            issuer: name_text(&cert.issuer().to_string()),
            common_name: cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_string),
            alt_names,
            has_alt_names: san.is_some(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            is_ca: cert.is_ca(),
            version: cert.version().0 + 1,
        })
    }

    pub(crate) fn self_signed(&self) -> bool {
        self.subject == self.issuer
    }

    /// Whether the Common Name alone names `host` (DNS case-insensitively,
    /// IP addresses by value).
    pub(crate) fn common_name_matches(&self, host: &str) -> bool {
        self.common_name
            .as_deref()
            .is_some_and(|cn| names_match(cn, host))
    }
}

/// The DER SubjectPublicKeyInfo of a certificate, whatever its version.
pub(crate) fn public_key_info(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.public_key().raw.to_vec())
}

/// Whether `ca_der` signed `leaf_der`: the issuer names the CA's subject and
/// the CA's key verifies the signature.
pub(crate) fn issued_by(leaf_der: &[u8], ca_der: &[u8]) -> bool {
    let (Ok((_, leaf)), Ok((_, ca))) = (
        X509Certificate::from_der(leaf_der),
        X509Certificate::from_der(ca_der),
    ) else {
        return false;
    };
    leaf.issuer().as_raw() == ca.subject().as_raw()
        && leaf.verify_signature(Some(ca.public_key())).is_ok()
}

pub(crate) fn names_match(a: &str, b: &str) -> bool {
    match (a.parse::<std::net::IpAddr>(), b.parse::<std::net::IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a
            .trim_end_matches('.')
            .eq_ignore_ascii_case(b.trim_end_matches('.')),
    }
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}

/// An empty subject (openssl's "." answers) would print as nothing.
fn name_text(name: &str) -> String {
    if name.is_empty() {
        "(empty subject)".to_string()
    } else {
        name.to_string()
    }
}
