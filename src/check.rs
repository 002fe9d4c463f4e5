//! The offline half of `pinpost check`: what a config's certificate and key
//! files say before any connection. Each finding is a [`Step`] marked fine,
//! worth fixing, or certain to fail, worded with what to do.
//!
//! It reads files and certificates; it does not connect (the `check`
//! command does that with the same link and diagnosis as `publish`).

use std::fmt;
use std::os::unix::fs::MetadataExt;

use rustls_pki_types::CertificateDer;

use crate::config::{Config, SourcedPath};
use crate::tls::{self, CertSummary};
use crate::utc;

/// Warn this long before a certificate expires.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub mark: Mark,
    pub text: String,
}

impl Step {
    pub fn pass(text: impl Into<String>) -> Step {
        Step {
            mark: Mark::Pass,
            text: text.into(),
        }
    }
    pub fn warn(text: impl Into<String>) -> Step {
        Step {
            mark: Mark::Warn,
            text: text.into(),
        }
    }
    pub fn fail(text: impl Into<String>) -> Step {
        Step {
            mark: Mark::Fail,
            text: text.into(),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.mark {
            Mark::Pass => "\u{2713}",
            Mark::Warn => "!",
            Mark::Fail => "\u{2717}",
        };
        write!(f, "{mark} {}", self.text)
    }
}

/// Checks every certificate and key file the config names, at `now`.
pub fn files(config: &Config, now: i64) -> Vec<Step> {
    let mut steps = Vec::new();
    let Some(tls) = &config.broker.tls else {
        steps.push(Step::warn(
            "TLS is off: the broker connection and its password travel in clear text; add a \
             [broker.tls] section (pinpost certs makes the files)",
        ));
        return steps;
    };
    let cas = match &tls.ca_file {
        None => {
            steps.push(Step::pass(
                "the broker's certificate will be checked against this system's CAs (no ca_file)",
            ));
            Vec::new()
        }
        Some(file) => ca_steps(file, now, &mut steps),
    };
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            client_steps(config, cert, key, &cas, now, &mut steps);
            match tls::client_key_loads(tls) {
                Ok(_) => steps.push(Step::pass(format!(
                    "{} belongs to {}",
                    key.path().display(),
                    cert.path().display()
                ))),
                Err(e) => steps.push(Step::fail(e.to_string())),
            }
        }
        _ => steps.push(Step::warn(
            "no client certificate (broker.tls.cert_file and key_file): fine for a broker \
             that does not ask for one, but Mosquitto with require_certificate true will \
             refuse the connection; make one with `pinpost certs device <id>`",
        )),
    }
    steps
}

/// The CAs in `ca_file`, each with what it says, after checking them.
type Cas = Vec<(CertificateDer<'static>, CertSummary)>;

fn ca_steps(file: &SourcedPath, now: i64, steps: &mut Vec<Step>) -> Cas {
    let certs = match tls::certificates(file) {
        Ok(c) => c,
        Err(e) => {
            steps.push(Step::fail(e.to_string()));
            return Vec::new();
        }
    };
    let mut cas = Vec::new();
    for der in certs {
        let Some(ca) = CertSummary::from_der(&der) else {
            steps.push(Step::fail(format!(
                "{}: a certificate in it cannot be read; copy it again from where it was made",
                file.path().display()
            )));
            continue;
        };
        let name = format!("the CA in {}", file.path().display());
        if !ca.is_ca && !ca.self_signed() {
            steps.push(Step::warn(format!(
                "{name} is not a CA certificate (it was issued by {}): point ca_file at the \
                 CA that signed the broker's certificate",
                ca.issuer
            )));
        }
        steps.push(dates(
            &name,
            &ca,
            now,
            "make a new CA and certificates with pinpost certs",
        ));
        cas.push((der, ca));
    }
    cas
}

fn client_steps(
    config: &Config,
    cert_file: &SourcedPath,
    key_file: &SourcedPath,
    cas: &Cas,
    now: i64,
    steps: &mut Vec<Step>,
) {
    if let Some(step) = key_permissions(key_file) {
        steps.push(step);
    }
    let chain = match tls::certificates(cert_file) {
        Ok(c) => c,
        Err(e) => {
            steps.push(Step::fail(e.to_string()));
            return;
        }
    };
    let Some((leaf_der, leaf)) = chain
        .first()
        .and_then(|der| Some((der, CertSummary::from_der(der)?)))
    else {
        steps.push(Step::fail(format!(
            "{}: the certificate cannot be read; copy it again from where it was made",
            cert_file.path().display()
        )));
        return;
    };
    let id = &config.device.id;
    let name = format!("the device certificate {}", cert_file.path().display());
    let renew = format!("make a new one with `pinpost certs device {id}`");
    steps.push(dates(&name, &leaf, now, &renew));

    if cas
        .iter()
        .any(|(der, ca)| ca.subject == leaf.subject && der.as_ref() != leaf_der.as_ref())
    {
        steps.push(Step::fail(format!(
            "{name} has the same subject ({}) as its CA: OpenSSL-based brokers such as \
             Mosquitto then take it for the CA itself and the handshake fails with obscure \
             errors (\"certificate verify failed\", \"Protocol error\"); {renew} (its subject \
             is the device id, distinct from the CA's)",
            leaf.subject
        )));
    }
    if !cas.is_empty() {
        let chained = chain
            .iter()
            .skip(1)
            .map(|c| c.as_ref())
            .chain(cas.iter().map(|(der, _)| der.as_ref()))
            .any(|issuer| tls::issued_by(leaf_der, issuer));
        if chained {
            steps.push(Step::pass(format!("{name} is signed by {}", leaf.issuer)));
        } else {
            steps.push(Step::warn(format!(
                "{name} was issued by {}, not by the CA in ca_file ({}): a broker that \
                 trusts only that CA refuses it (\"certificate verify failed\"); {renew} with \
                 the broker's CA",
                leaf.issuer,
                cas.iter()
                    .map(|(_, ca)| ca.subject.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
    }
    match leaf.common_name.as_deref() {
        Some(cn) if cn == id => {}
        Some(cn) => steps.push(Step::warn(format!(
            "{name} is for {cn:?} but the device id is {id:?}: with use_identity_as_username \
             the broker knows this device as {cn:?}, so an ACL pattern like \
             {prefix}/%u/# will not let it use {prefix}/{id}/; {renew}",
            prefix = config.device.topic_prefix
        ))),
        None => {}
    }
}

/// Validity at `now`, with a warning ahead of expiry.
fn dates(name: &str, cert: &CertSummary, now: i64, renew: &str) -> Step {
    if now > cert.not_after {
        Step::fail(format!(
            "{name} expired on {}; {renew}",
            utc::human(cert.not_after)
        ))
    } else if now < cert.not_before {
        Step::fail(format!(
            "{name} is not valid until {}: this machine's clock says {} (check it with \
             `date`; a Pi without a network time source starts in the past), or the \
             certificate was made with a wrong date",
            utc::human(cert.not_before),
            utc::human(now)
        ))
    } else if cert.not_after - now < EXPIRY_WARNING_DAYS * 86_400 {
        Step::warn(format!(
            "{name} expires on {}, in {} days; {renew}",
            utc::human(cert.not_after),
            (cert.not_after - now) / 86_400
        ))
    } else {
        Step::pass(format!(
            "{name} ({}) is valid until {}",
            cert.subject,
            utc::human(cert.not_after)
        ))
    }
}

/// Like ssh: a key anyone on the machine can read is a failure; one its
/// group can read is fine only for the service's own group.
fn key_permissions(key: &SourcedPath) -> Option<Step> {
    let meta = std::fs::metadata(key.path()).ok()?;
    let mode = meta.mode() & 0o777;
    let path = key.path().display();
    if mode & 0o004 != 0 {
        return Some(Step::fail(format!(
            "the private key {path} is readable by every user on this machine (mode {mode:04o}): \
             `chmod 600 {path}` (or `chmod 640` with `chgrp pinpost` for the service)"
        )));
    }
    if mode & 0o040 != 0 {
        let group = group_name(meta.gid()).unwrap_or_else(|| meta.gid().to_string());
        if group != "pinpost" && group != "root" {
            return Some(Step::warn(format!(
                "the private key {path} is readable by group {group} (mode {mode:04o}): \
                 `chmod 600 {path}`, or `chgrp pinpost {path}` if the service needs it"
            )));
        }
    }
    Some(Step::pass(format!(
        "the private key {path} is not readable by others (mode {mode:04o})"
    )))
}

fn group_name(gid: u32) -> Option<String> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups
        .lines()
        .find(|l| l.split(':').nth(2) == Some(&gid.to_string()))
        .and_then(|l| l.split(':').next())
        .map(str::to_string)
}
