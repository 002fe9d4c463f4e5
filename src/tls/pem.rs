//! Reading certificates and keys from PEM files, with an error for each way
//! a real file goes wrong: DER instead of PEM, swapped cert and key, a key
//! under a passphrase.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::SourcedPath;
use crate::words::io_words;

/// Why a certificate or key file could not be used, one variant per way a
/// real file goes wrong, each worded with what to do.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file could not be read at all.
    #[error("cannot read {file}: {reason}")]
    Read {
        /// The file and where it was named (config line or flag).
        file: String,
        /// The operating system's reason, in words.
        reason: String,
    },
    /// No PEM block at all (binary DER, or some other file).
    #[error("{file} is not a PEM file: {what}")]
    NotPem {
        /// The file and where it was named (config line or flag).
        file: String,
        /// What it looks like instead, and how to convert it.
        what: String,
    },
    /// A PEM block that does not decode.
    #[error(
        "{file} has a damaged PEM block ({detail}); copy the file again from where it was made"
    )]
    Damaged {
        /// The file and where it was named (config line or flag).
        file: String,
        /// What the PEM parser found.
        detail: String,
    },
    /// A key where a certificate was expected.
    #[error(
        "{file} holds a private key, not a certificate: are cert_file and key_file \
         (--cert and --key) swapped?"
    )]
    KeyInsteadOfCert {
        /// The file and where it was named (config line or flag).
        file: String,
    },
    /// A certificate where a key was expected.
    #[error(
        "{file} holds a certificate, not a private key: are cert_file and key_file \
         (--cert and --key) swapped?"
    )]
    CertInsteadOfKey {
        /// The file and where it was named (config line or flag).
        file: String,
    },
    /// PEM, but no certificate block.
    #[error("{file} holds no certificate (no \"BEGIN CERTIFICATE\" block)")]
    NoCertificate {
        /// The file and where it was named (config line or flag).
        file: String,
    },
    /// PEM, but no private key block.
    #[error("{file} holds no private key (no \"BEGIN ... PRIVATE KEY\" block)")]
    NoKey {
        /// The file and where it was named (config line or flag).
        file: String,
    },
    /// A key under a passphrase, which an unattended agent cannot enter.
    #[error(
        "{file} is encrypted with a passphrase, and pinpost runs unattended so it cannot \
         ask for one. Write a decrypted copy and point key_file at it: \
         `openssl pkey -in {path} -out device.key && chmod 600 device.key`"
    )]
    EncryptedKey {
        /// The file and where it was named (config line or flag).
        file: String,
        /// The bare path, for the `openssl` command to paste.
        path: String,
    },
}

fn read(file: &SourcedPath) -> Result<Vec<u8>, PemError> {
    std::fs::read(file.path()).map_err(|e| PemError::Read {
        file: file.to_string(),
        reason: io_words(&e),
    })
}

fn require_pem(file: &SourcedPath, bytes: &[u8], kind: &str) -> Result<(), PemError> {
    if contains(bytes, b"-----BEGIN") {
        return Ok(());
    }
    let p = file.path().display();
    let what = if bytes.first() == Some(&0x30) {
        match kind {
            "key" => format!(
                "it looks like binary DER; convert it with `openssl pkey -inform der -in {p} -out key.pem`"
            ),
            _ => format!(
                "it looks like binary DER; convert it with `openssl x509 -inform der -in {p} -out cert.pem`"
            ),
        }
    } else {
        format!("it has no \"-----BEGIN\" line, so it is not a {kind} file")
    };
    Err(PemError::NotPem {
        file: file.to_string(),
        what,
    })
}

/// Every certificate in a PEM file (a CA bundle, or a client chain).
pub(crate) fn certificates(file: &SourcedPath) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = read(file)?;
    require_pem(file, &bytes, "certificate")?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Damaged {
            file: file.to_string(),
            detail: e.to_string(),
        })?;
    if !certs.is_empty() {
        return Ok(certs);
    }
    if contains(&bytes, b"PRIVATE KEY-----") {
        Err(PemError::KeyInsteadOfCert {
            file: file.to_string(),
        })
    } else {
        Err(PemError::NoCertificate {
            file: file.to_string(),
        })
    }
}

/// The private key in a PEM file: PKCS#1 (`BEGIN RSA PRIVATE KEY`), PKCS#8
/// (`BEGIN PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`).
pub(crate) fn private_key(file: &SourcedPath) -> Result<PrivateKeyDer<'static>, PemError> {
    let bytes = read(file)?;
    require_pem(file, &bytes, "key")?;
    if contains(&bytes, b"ENCRYPTED PRIVATE KEY") || contains(&bytes, b"Proc-Type: 4,ENCRYPTED") {
        return Err(PemError::EncryptedKey {
            file: file.to_string(),
            path: file.path().display().to_string(),
        });
    }
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(_) if contains(&bytes, b"BEGIN CERTIFICATE") => Err(PemError::CertInsteadOfKey {
            file: file.to_string(),
        }),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => Err(PemError::NoKey {
            file: file.to_string(),
        }),
        Err(e) => Err(PemError::Damaged {
            file: file.to_string(),
            detail: e.to_string(),
        }),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(content: &[u8]) -> (tempfile::NamedTempFile, SourcedPath) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        let sourced = SourcedPath {
            path: f.path().to_path_buf(),
            origin: "--test".into(),
        };
        (f, sourced)
    }

    fn generated() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn swapped_certificate_and_key_are_named_as_swapped() {
        let (cert, key) = generated();
        let (_k, as_cert) = file_with(key.as_bytes());
        let e = certificates(&as_cert).unwrap_err().to_string();
        assert!(e.contains("holds a private key, not a certificate"), "{e}");
        let (_c, as_key) = file_with(cert.as_bytes());
        let e = private_key(&as_key).unwrap_err().to_string();
        assert!(e.contains("holds a certificate, not a private key"), "{e}");
    }

    #[test]
    fn an_encrypted_key_says_how_to_decrypt_it() {
        let pem =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let (_f, file) = file_with(pem.as_bytes());
        let e = private_key(&file).unwrap_err().to_string();
        assert!(e.contains("encrypted with a passphrase"), "{e}");
        assert!(e.contains("openssl pkey -in"), "{e}");
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: DES-EDE3-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let (_f, file) = file_with(legacy.as_bytes());
        assert!(matches!(
            private_key(&file),
            Err(PemError::EncryptedKey { .. })
        ));
    }

    #[test]
    fn a_der_file_is_recognised_and_the_conversion_shown() {
        let (_f, file) = file_with(&[0x30, 0x82, 0x01, 0x0a]);
        let e = certificates(&file).unwrap_err().to_string();
        assert!(e.contains("binary DER"), "{e}");
        assert!(e.contains("openssl x509 -inform der"), "{e}");
    }

    #[test]
    fn a_missing_file_is_named_with_its_origin() {
        let file = SourcedPath {
            path: "/nonexistent/ca.crt".into(),
            origin: "--cafile".into(),
        };
        let e = certificates(&file).unwrap_err().to_string();
        assert_eq!(
            e,
            "cannot read /nonexistent/ca.crt (--cafile): no such file"
        );
    }
}
