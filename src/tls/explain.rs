//! rustls errors plus what the handshake showed → what went wrong and what
//! to do, in words. This is the one place that knows how a TLS failure looks
//! from the outside; `check`, `publish` and `run` all report through it.

use std::fmt;

use rustls::{AlertDescription, CertificateError};

use super::TlsFacts;
use super::cert::CertSummary;
use super::observe::Observation;
use super::strength::{self, MIN_RSA_BITS, Weakness};
use crate::config::TlsVersion;
use crate::utc;

/// A TLS failure, explained: what the handshake showed, kept as data so the
/// words (its `Display`) can name certificates, files and what to do.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsFailure {
    /// The broker's certificate is not signed by a CA pinpost trusts.
    UnknownCa {
        /// The broker's certificate, if it sent one that parses.
        leaf: Option<CertSummary>,
        /// The configured CA file, `None` for the system's CAs.
        ca_file: Option<String>,
        /// Subjects of the CAs in `ca_file`.
        ca_subjects: Vec<String>,
    },
    /// The broker's certificate is not valid for the name connected to.
    NameMismatch {
        /// The name checked: `server_name`, or the host connected to.
        used: String,
        /// The subjectAltName entries the certificate has.
        valid_for: Vec<String>,
        /// Its Common Name (rustls never checks it).
        common_name: Option<String>,
        /// Whether it has a subjectAltName extension at all.
        has_alt_names: bool,
    },
    /// The broker's certificate has expired (or the clock is wrong).
    Expired {
        /// Unix seconds.
        not_after: i64,
        /// Unix seconds, this machine's clock.
        now: i64,
    },
    /// The broker's certificate is not valid yet (or the clock is wrong).
    NotYetValid {
        /// Unix seconds.
        not_before: i64,
        /// Unix seconds, this machine's clock.
        now: i64,
    },
    /// The broker asked for a client certificate and none was configured.
    ClientCertRequired {
        /// The CA names the broker said it accepts.
        accepted: Vec<String>,
    },
    /// The broker refused the client certificate that was sent.
    ClientCertRejected {
        /// The broker's TLS alert in words, if it sent one (TLS 1.3
        /// brokers often just close the connection).
        alert: Option<String>,
        /// The client certificate sent.
        ours: Option<CertSummary>,
        /// Where it was read from.
        file: Option<String>,
        /// The CA names the broker said it accepts.
        accepted: Vec<String>,
    },
    /// The broker refused this device's certificate as revoked (it is on
    /// the fleet's CRL).
    Revoked {
        /// Where it was read from.
        file: Option<String>,
    },
    /// The broker's certificate is X.509 version 1, which webpki refuses.
    VersionOne {
        /// Its Common Name.
        common_name: Option<String>,
    },
    /// A certificate signed with a broken hash or with a small RSA key.
    Weak {
        /// The broker certificate's Common Name.
        common_name: Option<String>,
        /// Its X.509 version (1 or 3).
        version: u32,
        /// What is too weak.
        weakness: Weakness,
    },
    /// No TLS version both sides accept.
    NoCommonVersion {
        /// `broker.tls.min_version`.
        min: Option<TlsVersion>,
        /// What rustls or the broker said.
        detail: String,
    },
    /// The other end does not speak TLS (a plain MQTT port, or something
    /// else altogether).
    NotTls {
        /// What was seen.
        detail: String,
    },
    /// Any other TLS failure, with rustls's own words.
    Other {
        /// What rustls or the broker said.
        detail: String,
    },
}

/// Explains a rustls error raised during the handshake with `host`.
pub(crate) fn explain(
    error: &rustls::Error,
    seen: &Observation,
    facts: &TlsFacts,
    host: &str,
) -> TlsFailure {
    let now = utc::now_unix();
    let leaf = seen.server_leaf();
    let used = facts
        .server_name
        .clone()
        .unwrap_or_else(|| host.to_string());
    if let Some(weakness) = weakness(error, seen, facts, leaf.as_ref()) {
        return TlsFailure::Weak {
            version: leaf.as_ref().map_or(3, |l| l.version),
            common_name: leaf.and_then(|l| l.common_name),
            weakness,
        };
    }
    match error {
        // webpki refuses v1 certificates before any other check.
        rustls::Error::InvalidCertificate(CertificateError::Other(_))
            if leaf.as_ref().is_some_and(|l| l.version == 1) =>
        {
            TlsFailure::VersionOne {
                common_name: leaf.and_then(|l| l.common_name),
            }
        }
        rustls::Error::InvalidCertificate(cert_error) => match cert_error {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                TlsFailure::UnknownCa {
                    leaf,
                    ca_file: facts.ca_file.clone(),
                    ca_subjects: facts.ca_subjects.clone(),
                }
            }
            CertificateError::NotValidForName => name_mismatch(used, leaf, Vec::new()),
            CertificateError::NotValidForNameContext { presented, .. } => {
                name_mismatch(used, leaf, presented.clone())
            }
            CertificateError::Expired => TlsFailure::Expired {
                not_after: leaf.map_or(now, |l| l.not_after),
                now,
            },
            CertificateError::ExpiredContext { time, not_after } => TlsFailure::Expired {
                not_after: not_after.as_secs() as i64,
                now: time.as_secs() as i64,
            },
            CertificateError::NotValidYet => TlsFailure::NotYetValid {
                not_before: leaf.map_or(now, |l| l.not_before),
                now,
            },
            CertificateError::NotValidYetContext { time, not_before } => TlsFailure::NotYetValid {
                not_before: not_before.as_secs() as i64,
                now: time.as_secs() as i64,
            },
            other => TlsFailure::Other {
                detail: format!("the broker's certificate was refused: {other:?}"),
            },
        },
        rustls::Error::AlertReceived(alert) => alert_received(*alert, seen, facts),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            TlsFailure::NotTls {
                detail: error.to_string(),
            }
        }
        rustls::Error::PeerIncompatible(_) => TlsFailure::NoCommonVersion {
            min: facts.min_version,
            detail: error.to_string(),
        },
        other => TlsFailure::Other {
            detail: other.to_string(),
        },
    }
}

/// The weakness behind a refused broker certificate: named by the v1 path
/// itself, or found here behind webpki's error kinds (an unsupported
/// algorithm, a signature that does not verify with a small key), which
/// would otherwise read as an unknown CA.
fn weakness(
    error: &rustls::Error,
    seen: &Observation,
    facts: &TlsFacts,
    leaf: Option<&CertSummary>,
) -> Option<Weakness> {
    if let Some(weakness) = Weakness::of(error) {
        return Some(weakness.clone());
    }
    let rustls::Error::InvalidCertificate(e) = error else {
        return None;
    };
    // An unknown issuer is about signatures only when the issuer's name is
    // one pinpost trusts: then its signature must have failed to verify.
    let issuer_trusted = leaf.is_some_and(|l| facts.ca_subjects.contains(&l.issuer));
    let about_signatures = match e {
        CertificateError::BadSignature
        | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => true,
        CertificateError::UnknownIssuer => issuer_trusted,
        _ => false,
    };
    if !about_signatures {
        return None;
    }
    seen.server_chain
        .first()
        .and_then(|der| strength::of_leaf_der(der))
        .or_else(|| {
            let issuer = &leaf?.issuer;
            facts
                .weak_cas
                .iter()
                .find(|(subject, _)| subject == issuer)
                .map(|(_, bits)| Weakness::CaKey { bits: *bits })
        })
}

/// Explains a connection closed by the broker after the handshake and before
/// CONNACK: with TLS 1.3 that is how a refused client certificate shows.
pub(crate) fn explain_closed(seen: &Observation, facts: &TlsFacts) -> Option<TlsFailure> {
    if seen.server_chain.is_empty() {
        // Closed before any certificate: the handshake never really began.
        return Some(TlsFailure::NotTls {
            detail: "it closed the connection without answering the TLS handshake".into(),
        });
    }
    if !seen.client_cert_requested {
        return None;
    }
    Some(client_cert_problem(None, seen, facts))
}

fn alert_received(alert: AlertDescription, seen: &Observation, facts: &TlsFacts) -> TlsFailure {
    use AlertDescription as A;
    if alert == A::CertificateRevoked && seen.client_cert_sent {
        return TlsFailure::Revoked {
            file: facts.client_cert_file.clone(),
        };
    }
    let about_certs = matches!(
        alert,
        A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::AccessDenied
            | A::DecryptError
            | A::HandshakeFailure
    );
    if about_certs && (seen.client_cert_requested || alert == A::CertificateRequired) {
        return client_cert_problem(Some(alert_words(alert)), seen, facts);
    }
    match alert {
        A::ProtocolVersion | A::HandshakeFailure | A::InsufficientSecurity => {
            TlsFailure::NoCommonVersion {
                min: facts.min_version,
                detail: format!("the broker answered \"{}\"", alert_words(alert)),
            }
        }
        other => TlsFailure::Other {
            detail: format!(
                "the broker ended the TLS handshake with \"{}\"",
                alert_words(other)
            ),
        },
    }
}

fn client_cert_problem(alert: Option<String>, seen: &Observation, facts: &TlsFacts) -> TlsFailure {
    if !seen.client_cert_sent {
        TlsFailure::ClientCertRequired {
            accepted: seen.accepted_issuers.clone(),
        }
    } else {
        TlsFailure::ClientCertRejected {
            alert,
            ours: facts.client_cert.clone(),
            file: facts.client_cert_file.clone(),
            accepted: seen.accepted_issuers.clone(),
        }
    }
}

fn name_mismatch(used: String, leaf: Option<CertSummary>, presented: Vec<String>) -> TlsFailure {
    match leaf {
        Some(leaf) => TlsFailure::NameMismatch {
            used,
            valid_for: leaf.alt_names,
            common_name: leaf.common_name,
            has_alt_names: leaf.has_alt_names,
        },
        None => TlsFailure::NameMismatch {
            used,
            has_alt_names: !presented.is_empty(),
            valid_for: presented,
            common_name: None,
        },
    }
}

fn alert_words(alert: AlertDescription) -> String {
    use AlertDescription as A;
    match alert {
        A::CertificateRequired => "certificate required".into(),
        A::BadCertificate => "bad certificate".into(),
        A::UnknownCA => "unknown CA".into(),
        A::CertificateExpired => "certificate expired".into(),
        A::CertificateRevoked => "certificate revoked".into(),
        A::CertificateUnknown => "certificate unknown".into(),
        A::HandshakeFailure => "handshake failure".into(),
        A::ProtocolVersion => "protocol version not supported".into(),
        A::AccessDenied => "access denied".into(),
        A::DecryptError => "decrypt error".into(),
        other => format!("{other:?}"),
    }
}

fn list(items: &[String]) -> String {
    items.join(", ")
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::UnknownCa {
                leaf,
                ca_file,
                ca_subjects,
            } => {
                let issuer = leaf.as_ref().map_or("an unknown issuer".to_string(), |l| {
                    format!("\"{}\"", l.issuer)
                });
                write!(f, "the broker's certificate is issued by {issuer}, ")?;
                match ca_file {
                    Some(file) if ca_subjects.is_empty() => {
                        write!(f, "which is not the CA in {file}")?
                    }
                    Some(file) => write!(
                        f,
                        "but pinpost trusts only \"{}\" from {file}",
                        ca_subjects.join("\", \"")
                    )?,
                    None => write!(f, "which this system's CA store does not trust")?,
                }
                if leaf.as_ref().is_some_and(CertSummary::self_signed) {
                    write!(
                        f,
                        ". The broker's certificate is self-signed: sign it with a CA and give \
                         that CA's certificate to pinpost"
                    )
                } else {
                    write!(
                        f,
                        ". Give pinpost the CA certificate that signed the broker's certificate \
                         (broker.tls.ca_file or --cafile)"
                    )
                }
            }
            TlsFailure::NameMismatch {
                used,
                valid_for,
                common_name,
                has_alt_names,
            } => {
                if !has_alt_names {
                    let cn = common_name.as_deref().unwrap_or("(none)");
                    if crate::tls::names_match(cn, used) {
                        return write!(
                            f,
                            "the broker's certificate names {cn} only in its Common Name and \
                             has no subjectAltName; pinpost (like every modern TLS client) checks \
                             subjectAltName only. Reissue the broker certificate with {cn} as a \
                             subjectAltName, or accept the Common Name with \
                             broker.tls.legacy_common_name = true (--legacy-common-name); the \
                             certificate chain is still fully verified"
                        );
                    }
                    return write!(
                        f,
                        "the broker's certificate has no subjectAltName and its Common Name is \
                         {cn}, but you connected to {used}: use -h {cn}, and since the name is \
                         only in the Common Name also set broker.tls.legacy_common_name = true \
                         (--legacy-common-name), or reissue the certificate with a subjectAltName"
                    );
                }
                let first = valid_for.first().map_or("(none)", String::as_str);
                write!(
                    f,
                    "the broker's certificate is valid for {}, you connected to {used}: use -h \
                     {first} (or, if {used} is the right address, set broker.tls.server_name = \
                     \"{first}\", or reissue the certificate with {used} in its subjectAltName)",
                    list(valid_for)
                )
            }
            TlsFailure::Expired { not_after, now } => write!(
                f,
                "the broker's certificate expired on {} (this machine's clock says {}): renew \
                 it on the broker; if the clock is wrong, fix it (a Pi has no battery clock and \
                 needs network time: see `timedatectl`)",
                utc::human(*not_after),
                utc::human(*now)
            ),
            TlsFailure::NotYetValid { not_before, now } => write!(
                f,
                "the broker's certificate is valid only from {}, but this machine's clock says \
                 {}: a Pi without network time often starts with an old date, so check \
                 `timedatectl`; otherwise the certificate was issued with a future start date",
                utc::human(*not_before),
                utc::human(*now)
            ),
            TlsFailure::ClientCertRequired { accepted } => {
                write!(
                    f,
                    "the broker requires a client certificate (Mosquitto: require_certificate \
                     true) and none was configured: set broker.tls.cert_file and key_file, or \
                     pass --cert and --key"
                )?;
                if !accepted.is_empty() {
                    write!(f, "; it accepts certificates issued by {}", list(accepted))?;
                }
                Ok(())
            }
            TlsFailure::ClientCertRejected {
                alert,
                ours,
                file,
                accepted,
            } => {
                write!(f, "the broker rejected this device's certificate")?;
                if let Some(file) = file {
                    write!(f, " {file}")?;
                }
                if let Some(alert) = alert {
                    write!(f, " (it answered \"{alert}\")")?;
                }
                match ours {
                    Some(c) if c.not_after < utc::now_unix() => {
                        write!(f, ": it expired on {}", utc::human(c.not_after))?
                    }
                    Some(c) if !accepted.is_empty() => write!(
                        f,
                        ": it is issued by \"{}\", but the broker accepts certificates issued \
                         by {}",
                        c.issuer,
                        list(accepted)
                    )?,
                    Some(c) => write!(f, ": it is issued by \"{}\"", c.issuer)?,
                    None => {}
                }
                write!(
                    f,
                    ". Use a device certificate signed by the CA in the broker's cafile (and \
                     check its dates)"
                )
            }
            TlsFailure::Revoked { file } => write!(
                f,
                "this certificate has been revoked: the broker refuses this device's \
                 certificate{} because the fleet's revocation list names it (pinpost certs \
                 revoke). It cannot connect with it again; if that is a mistake, ask the \
                 operator. A new certificate needs a new key: pinpost enroll --force here, \
                 then pinpost certs sign on the laptop",
                file.as_ref().map(|f| format!(" {f}")).unwrap_or_default()
            ),
            TlsFailure::VersionOne { common_name } => write!(
                f,
                "the broker's certificate (CN={}) is an old X.509 version 1 certificate, as \
                 `openssl x509 -req` makes without -extfile: it cannot carry a subjectAltName, \
                 so TLS clients like pinpost refuse it. Accept it by its Common Name with \
                 broker.tls.legacy_common_name = true (--legacy-common-name; pinpost then \
                 checks its CA signature and dates itself), or reissue it as version 3 with a \
                 subjectAltName (add -extfile with subjectAltName=IP:… or DNS:…)",
                common_name.as_deref().unwrap_or("none")
            ),
            TlsFailure::Weak {
                common_name,
                version,
                weakness,
            } => {
                write!(
                    f,
                    "the broker's certificate (CN={}) is refused: {weakness}. pinpost, like every \
                     current TLS client, accepts a certificate (an old X.509 version 1 one by its \
                     Common Name too) only when it is signed with SHA-256 or stronger by a CA \
                     whose RSA key, like its own, has at least {MIN_RSA_BITS} bits: a weaker one \
                     can be forged. Reissue it on the broker (e.g. `openssl req -newkey \
                     rsa:{MIN_RSA_BITS}` and `openssl x509 -req -sha256`)",
                    common_name.as_deref().unwrap_or("none")
                )?;
                if *version == 1 {
                    write!(
                        f,
                        ", better as version 3 with a subjectAltName (-extfile with \
                         subjectAltName=IP:… or DNS:…)"
                    )?;
                }
                Ok(())
            }
            TlsFailure::NoCommonVersion { min, detail } => {
                write!(
                    f,
                    "pinpost and the broker share no TLS version or cipher ({detail})"
                )?;
                if *min == Some(TlsVersion::V1_3) {
                    write!(
                        f,
                        ": pinpost is set to TLS 1.3 only; if the broker is pinned to 1.2 \
                         (tls_version tlsv1.2), set broker.tls.min_version = \"1.2\" \
                         (--tls-version tlsv1.2)"
                    )
                } else {
                    write!(
                        f,
                        ": pinpost speaks TLS 1.2 and 1.3; check the broker's tls_version and \
                         ciphers"
                    )
                }
            }
            TlsFailure::NotTls { detail } => write!(
                f,
                "the server did not answer in TLS ({detail}): this port probably speaks plain \
                 MQTT; use the broker's TLS port (usually 8883), or leave out the TLS options \
                 for a plain port"
            ),
            TlsFailure::Other { detail } => write!(f, "TLS failed: {detail}"),
        }
    }
}
