//! The fleet's certificate revocation list: every device certificate the
//! operator revoked (`pinpost certs revoke`), signed by the CA, for the
//! broker's `crlfile`. A revoked device is refused at its next TLS
//! handshake, whatever its certificate's dates say.
//!
//! Its next update is set as far as the CA's own life: OpenSSL refuses
//! every client once a CRL's next update has passed, and a fleet must not
//! go dark because nobody re-signed a list. Dates are whole days, as for
//! the certificates (rcgen takes dates).
//!
//! It knows X.509; not files or which device a serial was.

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Authority, CA_DAYS, CertsError};

/// One revoked certificate: its serial number and when it was revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Revoked {
    pub(crate) serial: Vec<u8>,
    pub(crate) at: i64,
}

/// The serial number of the first certificate in `pem`.
pub(crate) fn serial(pem: &[u8]) -> Option<Vec<u8>> {
    let der = CertificateDer::from_pem_slice(pem).ok()?;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
    Some(cert.raw_serial().to_vec())
}

impl Authority {
    /// The CRL listing `revoked`, numbered `number` (it must grow with
    /// every list), issued `now` (Unix seconds), PEM.
    pub(crate) fn crl(
        &self,
        revoked: &[Revoked],
        number: u64,
        now: i64,
    ) -> Result<String, CertsError> {
        let day = |unix: i64| {
            let (y, m, d) = crate::utc::date(unix);
            rcgen::date_time_ymd(y as i32, m as u8, d as u8)
        };
        let params = CertificateRevocationListParams {
            this_update: day(now),
            next_update: day(now + i64::from(CA_DAYS) * 86_400),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|r| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&r.serial),
                    revocation_time: day(r.at.min(now)),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer, &self.key)
            .and_then(|crl| crl.pem())
            .map_err(|e| CertsError::Sign(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::KeyKind;

    const NOW: i64 = 1_796_560_000;

    #[test]
    fn a_revoked_certificate_is_listed_under_the_cas_signature() {
        let issued = crate::certs::new_ca("test CA", KeyKind::EcdsaP256, NOW).unwrap();
        let ca = Authority::load("ca.crt", &issued.cert_pem, &issued.key_pem).unwrap();
        let device = ca.client("pi-01", KeyKind::EcdsaP256, NOW).unwrap();
        let serial = serial(device.cert_pem.as_bytes()).unwrap();
        let pem = ca
            .crl(
                &[Revoked {
                    serial: serial.clone(),
                    at: NOW,
                }],
                1,
                NOW,
            )
            .unwrap();
        let der =
            rustls_pki_types::CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, crl) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(der.as_ref())
                .unwrap();
        let listed: Vec<Vec<u8>> = crl
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().to_vec())
            .collect();
        assert_eq!(listed, [serial]);
        let ca_der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        let (_, ca_cert) = X509Certificate::from_der(ca_der.as_ref()).unwrap();
        assert!(crl.verify_signature(ca_cert.public_key()).is_ok());
        assert!(
            crl.next_update()
                .is_some_and(|t| t.timestamp() > NOW + 3000 * 86_400)
        );
    }
}
