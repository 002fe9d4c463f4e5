//! TLS for the link: PEM loading (PKCS#1, PKCS#8, SEC1), the rustls
//! `ClientConfig` with the ring provider and TLS 1.2/1.3, and turning
//! handshake failures into plain-language diagnoses.
//!
//! It knows certificates, keys and what a handshake showed; it does not know
//! topics, MQTT packets or pins.

mod cert;
mod explain;
mod identity;
mod legacy;
mod observe;
mod pem;
mod strength;

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::config::{self, TlsVersion};

pub use cert::CertSummary;
pub(crate) use cert::{issued_by, names_match, public_key_info};

/// When the certificate in `file` ends (Unix seconds), if it can be read.
pub(crate) fn cert_ends(file: &config::SourcedPath) -> Option<i64> {
    let certs = pem::certificates(file).ok()?;
    CertSummary::from_der(certs.first()?.as_ref()).map(|c| c.not_after)
}
pub use explain::TlsFailure;
pub(crate) use explain::{explain, explain_closed};
pub(crate) use identity::proof_holds;
pub use identity::{Identity, Pair, PairError, ca_certificates};
pub(crate) use observe::Observer;
pub use pem::PemError;
pub(crate) use pem::certificates;
pub use strength::Weakness;
pub(crate) use strength::{MIN_RSA_BITS, rsa_bits};

/// What a TLS setup was built from, kept to explain failures later.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsFacts {
    /// The CA file as the user named it, or `None` for the system's CAs.
    pub(crate) ca_file: Option<String>,
    /// Subjects of the trusted CAs from `ca_file`.
    pub(crate) ca_subjects: Vec<String>,
    /// Subjects and key sizes of the CAs from `ca_file` whose RSA keys are
    /// too small to verify anything they signed.
    pub(crate) weak_cas: Vec<(String, usize)>,
    pub(crate) client_cert: Option<CertSummary>,
    pub(crate) client_cert_file: Option<String>,
    pub(crate) min_version: Option<TlsVersion>,
    pub(crate) server_name: Option<String>,
    /// ALPN protocols offered.
    pub(crate) alpn: Vec<String>,
}

/// A ready rustls config plus the observer its checks report to and the
/// facts it was built from: what [`setup`] makes and the link connects with.
#[derive(Debug, Clone)]
pub struct TlsSetup {
    /// The rustls client configuration, for rumqttc or any other client.
    pub config: Arc<ClientConfig>,
    pub(crate) observer: Observer,
    pub(crate) facts: TlsFacts,
    /// The certificate and key handshakes offer; replaceable at run time.
    pub identity: Identity,
}

impl TlsSetup {
    /// The facts as they are now: a renewed pair offered since the setup
    /// is the client certificate failures are explained by.
    pub(crate) fn facts_now(&self) -> TlsFacts {
        let mut facts = self.facts.clone();
        if let Some((cert, file)) = self.identity.shown() {
            facts.client_cert = Some(cert);
            facts.client_cert_file = Some(file);
        }
        facts
    }
}

/// Why the TLS configuration could not be built, in words naming the file
/// or key to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read as PEM.
    #[error(transparent)]
    File(#[from] PemError),
    /// The CA file holds something rustls will not trust.
    #[error("{file}: {detail}")]
    BadCa {
        /// The CA file as the user named it.
        file: String,
        /// Which certificate in it is refused, and why.
        detail: String,
    },
    /// No `ca_file` is set and the system has no CA certificates.
    #[error(
        "no trusted CA certificates found on this system; install the ca-certificates \
         package, or name the broker's CA with broker.tls.ca_file (--cafile)"
    )]
    NoSystemRoots,
    /// The client key is not the certificate's key.
    #[error("{key_file} does not belong to the certificate in {cert_file}: {detail}")]
    KeyMismatch {
        /// The key file as the user named it.
        key_file: String,
        /// The certificate file as the user named it.
        cert_file: String,
        /// What to do about it.
        detail: String,
    },
    /// A key of a type the ring provider cannot sign handshakes with.
    #[error("{file}: {detail}")]
    UnsupportedKey {
        /// The key file as the user named it.
        file: String,
        /// Why, and which key types work.
        detail: String,
    },
    /// `broker.tls.server_name` is neither a DNS name nor an IP address.
    #[error("broker.tls.server_name {name:?} is not a valid DNS name or IP address")]
    BadServerName {
        /// The name as configured.
        name: String,
    },
    /// rustls refused the assembled configuration.
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

/// Builds the TLS client configuration described by `tls`.
pub fn setup(tls: &config::Tls) -> Result<TlsSetup, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut facts = TlsFacts {
        min_version: Some(tls.min_version),
        server_name: tls.server_name.clone(),
        ..TlsFacts::default()
    };
    let (roots, ca_certs) = roots(tls, &mut facts)?;
    let client_key = client_key(tls, &provider, &mut facts)?;
    let names = observe::NamePolicy {
        server_name: match &tls.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|_| TlsError::BadServerName { name: name.clone() })?,
            ),
            None => None,
        },
        legacy_common_name: tls.legacy_common_name,
        skip: tls.skip_name_check,
    };
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let observer = Observer::default();
    let v1 = (!ca_certs.is_empty())
        .then(|| legacy::LegacyV1::new(ca_certs, provider.signature_verification_algorithms));
    let verifier = observe::ObservingVerifier::new(webpki, names, v1, observer.clone());
    let identity = Identity::new(client_key);
    let resolver = observe::ObservingResolver::new(identity.clone(), observer.clone());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    // Every connection shows the broker the certificate `identity` holds
    // now: a resumed session would carry the one it was made with, so a
    // renewed (or a refused) certificate would go unseen until the broker
    // forgot the session. A full handshake per reconnect is cheap.
    config.resumption = rustls::client::Resumption::disabled();
    facts.alpn = tls.alpn.clone();
    Ok(TlsSetup {
        config: Arc::new(config),
        observer,
        facts,
        identity,
    })
}

/// Loads the client certificate and key as a connection would, so that a
/// check reports a key that does not belong to its certificate in the same
/// words. `Ok(false)` when no client certificate is configured.
pub(crate) fn client_key_loads(tls: &config::Tls) -> Result<bool, TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    Ok(client_key(tls, &provider, &mut TlsFacts::default())?.is_some())
}

/// The trust anchors, and the CA certificates themselves when they come
/// from `ca_file` (for checking X.509 v1 broker certificates).
type Roots = (RootCertStore, Vec<CertificateDer<'static>>);

fn roots(tls: &config::Tls, facts: &mut TlsFacts) -> Result<Roots, TlsError> {
    let mut roots = RootCertStore::empty();
    let Some(ca_file) = &tls.ca_file else {
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            return Err(TlsError::NoSystemRoots);
        }
        return Ok((roots, Vec::new()));
    };
    facts.ca_file = Some(ca_file.to_string());
    let certs = pem::certificates(ca_file)?;
    for der in certs.iter().cloned() {
        if let Some(summary) = CertSummary::from_der(&der) {
            if let Some(bits) = strength::rsa_bits_der(&der).filter(|b| *b < MIN_RSA_BITS) {
                facts.weak_cas.push((summary.subject.clone(), bits));
            }
            facts.ca_subjects.push(summary.subject);
        }
        roots.add(der).map_err(|e| TlsError::BadCa {
            file: ca_file.to_string(),
            detail: format!("a certificate in it cannot be used as a CA: {e}"),
        })?;
    }
    Ok((roots, certs))
}

fn client_key(
    tls: &config::Tls,
    provider: &CryptoProvider,
    facts: &mut TlsFacts,
) -> Result<Option<Arc<CertifiedKey>>, TlsError> {
    let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) else {
        return Ok(None);
    };
    let chain = pem::certificates(cert_file)?;
    facts.client_cert = chain.first().and_then(|der| CertSummary::from_der(der));
    facts.client_cert_file = Some(cert_file.to_string());
    let key = pem::private_key(key_file)?;
    match certify(chain, key, provider) {
        Ok(certified) => Ok(Some(Arc::new(certified))),
        Err(Unpaired::KeyKind(e)) => Err(TlsError::UnsupportedKey {
            file: key_file.to_string(),
            detail: format!(
                "this key type cannot sign TLS handshakes ({e}); use an RSA (2048+) or \
                 ECDSA P-256/P-384 key"
            ),
        }),
        Err(Unpaired::Mismatch) => Err(TlsError::KeyMismatch {
            key_file: key_file.to_string(),
            cert_file: cert_file.to_string(),
            detail: "use the key that was generated with this certificate's request".into(),
        }),
    }
}

/// Why a chain and a key are not a pair.
pub(crate) enum Unpaired {
    /// The key cannot sign handshakes (the provider's words).
    KeyKind(String),
    /// The key is not the leaf certificate's.
    Mismatch,
}

/// The key loaded to sign handshakes with the chain, checked against the
/// leaf's public key: what a configured pair and a renewed one both go
/// through.
pub(crate) fn certify(
    chain: Vec<CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, Unpaired> {
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| Unpaired::KeyKind(e.to_string()))?;
    // Compared here rather than with rustls's keys_match(), which parses the
    // certificate with webpki and so cannot judge the X.509 v1 certificates
    // that `openssl x509 -req` makes (brokers accept those from clients).
    let cert_spki = chain.first().and_then(|der| cert::public_key_info(der));
    if let (Some(key_spki), Some(cert_spki)) = (signer.public_key(), cert_spki) {
        if key_spki.as_ref() != cert_spki.as_slice() {
            return Err(Unpaired::Mismatch);
        }
    }
    Ok(CertifiedKey::new(chain, signer))
}
