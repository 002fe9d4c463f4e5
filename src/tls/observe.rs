//! The certificate checks rustls runs for us, wrapped so that pinpost sees
//! what happened during a handshake: the broker's certificates, the verdict,
//! whether the broker asked for a client certificate and which CAs it named.
//!
//! rustls reports only an error kind; explaining a failure in words needs
//! these facts, and with TLS 1.3 a rejected client certificate is not even a
//! handshake error (the broker closes the connection afterwards). The
//! wrappers only record and relax the one name check the user asked to relax;
//! chain, signature and date checks are always rustls's own.

use std::sync::{Arc, Mutex, MutexGuard};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::cert::CertSummary;
use super::identity::Identity;
use super::legacy::{self, LegacyV1};

/// What one connection attempt's handshake showed.
#[derive(Debug, Default, Clone)]
pub(crate) struct Observation {
    /// The broker's certificate chain, leaf first (empty if none arrived).
    pub(crate) server_chain: Vec<CertificateDer<'static>>,
    /// pinpost's verdict on it (after any relaxation the user asked for).
    pub(crate) verdict: Option<Result<(), rustls::Error>>,
    /// The name check failed but was relaxed (`legacy_common_name`/`--insecure`).
    pub(crate) relaxed_name_check: Option<&'static str>,
    /// The broker sent a CertificateRequest.
    pub(crate) client_cert_requested: bool,
    /// The CA names the broker said it accepts client certificates from.
    pub(crate) accepted_issuers: Vec<String>,
    /// pinpost answered the request with a certificate.
    pub(crate) client_cert_sent: bool,
}

impl Observation {
    pub(crate) fn server_leaf(&self) -> Option<CertSummary> {
        self.server_chain
            .first()
            .and_then(|der| CertSummary::from_der(der))
    }
}

/// Shared between the TLS config (which writes) and the link (which resets
/// it before each attempt and reads it after a failure).
#[derive(Debug, Default, Clone)]
pub(crate) struct Observer(Arc<Mutex<Observation>>);

impl Observer {
    pub(crate) fn reset(&self) {
        *self.lock() = Observation::default();
    }

    pub(crate) fn snapshot(&self) -> Observation {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Observation> {
        // A panic while holding this lock loses one observation, nothing more.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How the broker's name is checked.
#[derive(Debug, Clone, Default)]
pub(crate) struct NamePolicy {
    /// Check against this name instead of the host connected to.
    pub(crate) server_name: Option<ServerName<'static>>,
    /// Accept a certificate without subjectAltName whose Common Name matches.
    pub(crate) legacy_common_name: bool,
    /// Accept any name (the chain must still verify).
    pub(crate) skip: bool,
}

impl NamePolicy {
    fn accepts_v1(&self) -> bool {
        self.legacy_common_name
    }
}

#[derive(Debug)]
pub(crate) struct ObservingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    names: NamePolicy,
    /// Checks for X.509 v1 broker certificates, used only when the policy
    /// accepts them and a CA file is given.
    v1: Option<LegacyV1>,
    observer: Observer,
}

impl ObservingVerifier {
    pub(crate) fn new(
        inner: Arc<WebPkiServerVerifier>,
        names: NamePolicy,
        v1: Option<LegacyV1>,
        observer: Observer,
    ) -> Self {
        let v1 = v1.filter(|_| names.accepts_v1());
        ObservingVerifier {
            inner,
            names,
            v1,
            observer,
        }
    }

    fn v1_checks(&self, cert: &CertificateDer<'_>) -> Option<&LegacyV1> {
        self.v1.as_ref().filter(|_| legacy::is_v1(cert))
    }

    fn verify_leaf(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> (
        Result<ServerCertVerified, rustls::Error>,
        Option<&'static str>,
    ) {
        if let Some(v1) = self.v1_checks(end_entity) {
            let result = v1.verify(end_entity, &name.to_str(), now);
            return (
                result.map(|()| ServerCertVerified::assertion()),
                Some("legacy_common_name"),
            );
        }
        let result =
            self.inner
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now);
        match &result {
            Err(e) if is_name_error(e) => match self.relax(end_entity, name) {
                Some(how) => (Ok(ServerCertVerified::assertion()), Some(how)),
                None => (result, None),
            },
            _ => (result, None),
        }
    }

    /// webpki checks the name only after the chain and dates have passed, so
    /// a name error here means everything else about the certificate is good.
    fn relax(
        &self,
        end_entity: &CertificateDer<'_>,
        name: &ServerName<'_>,
    ) -> Option<&'static str> {
        if self.names.skip {
            return Some("--insecure");
        }
        if !self.names.legacy_common_name {
            return None;
        }
        let leaf = CertSummary::from_der(end_entity)?;
        // Like OpenSSL, fall back to the CN only when there is no subjectAltName.
        (!leaf.has_alt_names && leaf.common_name_matches(&name.to_str()))
            .then_some("legacy_common_name")
    }
}

fn is_name_error(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. }
        )
    )
}

impl ServerCertVerifier for ObservingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = self.names.server_name.as_ref().unwrap_or(server_name);
        let (result, relaxed) =
            self.verify_leaf(end_entity, intermediates, name, ocsp_response, now);
        let mut seen = self.observer.lock();
        seen.server_chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        seen.verdict = Some(result.as_ref().map(|_| ()).map_err(Clone::clone));
        seen.relaxed_name_check = relaxed;
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self.v1_checks(cert) {
            Some(v1) => v1.verify_signature(cert, message, dss),
            None => self.inner.verify_tls12_signature(message, cert, dss),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self.v1_checks(cert) {
            Some(v1) => v1.verify_signature(cert, message, dss),
            None => self.inner.verify_tls13_signature(message, cert, dss),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Offers the device certificate (if any) and records that it was asked for.
#[derive(Debug)]
pub(crate) struct ObservingResolver {
    identity: Identity,
    observer: Observer,
}

impl ObservingResolver {
    pub(crate) fn new(identity: Identity, observer: Observer) -> Self {
        ObservingResolver { identity, observer }
    }
}

impl ResolvesClientCert for ObservingResolver {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let mut seen = self.observer.lock();
        seen.client_cert_requested = true;
        seen.accepted_issuers = root_hint_subjects
            .iter()
            .filter_map(|dn| distinguished_name_text(dn))
            .collect();
        let offered = self
            .identity
            .current()
            .filter(|k| k.key.choose_scheme(sigschemes).is_some());
        seen.client_cert_sent = offered.is_some();
        offered
    }

    /// Always true: it only makes rustls keep the transcript it needs if the
    /// broker asks, and we want to record that it asked even with no key.
    fn has_certs(&self) -> bool {
        true
    }
}

/// A DER-encoded X.509 Name (as in a CertificateRequest) as `CN=…, O=…`.
fn distinguished_name_text(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer;
    x509_parser::x509::X509Name::from_der(der)
        .ok()
        .map(|(_, name)| name.to_string())
}
