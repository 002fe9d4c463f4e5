//! The offline half of `pinpost check`: what a config's certificate and key
//! files say before any connection. Each finding is a [`Step`] marked fine,
//! worth fixing, or certain to fail, worded with what to do.
//!
//! It reads files and certificates; it does not connect (the `check`
//! command does that with the same link and diagnosis as `publish`).
//!
//! This module checks the certificates a config names (dates, chain,
//! names) and gathers the rest: [`permissions`] (who may read or change
//! the files), [`folder`] (no stray private key beside the device's),
//! [`bundle`] (`pinpost certs verify`'s allow-list), both reading files
//! through [`contents`].

mod bundle;
mod contents;
mod folder;
mod permissions;

use std::fmt;
use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;

use crate::config::{Config, SourcedPath};
use crate::tls::{self, CertSummary};
use crate::utc;
pub(crate) use bundle::{RELEASE_PUB, device_bundle};
use folder::device_folder;
use permissions::{key_permissions, ownership};

/// Warn this long before a certificate expires.
const EXPIRY_WARNING_DAYS: i64 = 30;

/// How a finding reads: fine, worth fixing, or certain to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    Pass,
    Warn,
    Fail,
}

/// One finding, printed as its mark and its words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) mark: Mark,
    pub(crate) text: String,
}

impl Step {
    pub(crate) fn pass(text: impl Into<String>) -> Step {
        Step {
            mark: Mark::Pass,
            text: text.into(),
        }
    }
    pub(crate) fn warn(text: impl Into<String>) -> Step {
        Step {
            mark: Mark::Warn,
            text: text.into(),
        }
    }
    pub(crate) fn fail(text: impl Into<String>) -> Step {
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
pub(crate) fn files(config: &Config, now: i64) -> Vec<Step> {
    let mut steps = ownership(config);
    if let Some(key) = &config.update.release_key {
        if let Some(id) = bundle::release_pub(&mut steps, key) {
            steps.push(Step::pass(format!(
                "{} is the release key {id}: only releases it signed are fetched",
                key.display()
            )));
        }
    }
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
            if let Some(words) = agents_port_clash(config) {
                steps.push(Step::warn(words));
            }
            match tls::client_key_loads(tls) {
                Ok(_) => steps.push(Step::pass(format!(
                    "{} belongs to {}",
                    key.path().display(),
                    cert.path().display()
                ))),
                Err(e) => steps.push(Step::fail(e.to_string())),
            }
            let mut folders: Vec<PathBuf> = [cert.path(), key.path()]
                .iter()
                .filter_map(|p| p.parent().map(Path::to_path_buf))
                .collect();
            folders.dedup();
            let mut known = tls::certificates(cert).unwrap_or_default();
            if let Some(ca) = &tls.ca_file {
                known.extend(tls::certificates(ca).unwrap_or_default());
            }
            for folder in folders {
                steps.extend(device_folder(&folder, &config.device.id, &known));
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

/// Why a one-shot command (publish, subscribe, check) with this config
/// would knock the agent off the broker, if it would: no `broker.cli_port`,
/// so it connects on the agents' port, with a client certificate whose
/// Common Name is the config's device id, i.e. the agent's own identity.
/// A broker that binds client ids to certificates (as `pinpost certs
/// mosquitto` sets Mosquitto up) then takes it for the agent reconnecting
/// and drops the agent's session. A certificate for another name (the
/// operator's on a laptop) takes no one's place.
pub(crate) fn agents_port_clash(config: &Config) -> Option<String> {
    if config.broker.cli_port.is_some() {
        return None;
    }
    let tls = config.broker.tls.as_ref()?;
    let cert = tls.cert_file.as_ref()?;
    tls.key_file.as_ref()?;
    let leaf = tls::certificates(cert).ok()?.into_iter().next()?;
    let cn = CertSummary::from_der(&leaf)?.common_name?;
    let id = &config.device.id;
    (cn == *id).then(|| {
        format!(
            "broker.cli_port is not set: pinpost publish, subscribe and check then use the \
             agents' port {port} with {cert}, the certificate of {id}, the agent's own; a \
             broker that ties client ids to certificates (as pinpost certs mosquitto sets it \
             up) takes that for the agent coming back and drops the agent's session on this \
             device while the command runs. Set broker.cli_port = 8884 in the config (the \
             tools' listener `pinpost certs mosquitto` writes), or use another certificate",
            port = config.broker.port,
            cert = cert.path().display()
        )
    })
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
