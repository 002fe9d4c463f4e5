//! `pinpost certs renew`: the operator's side of renewal over MQTT. It
//! reads the requests devices keep retained on `<prefix>/<id>/cert/request`,
//! signs each one that passes, and answers retained on `…/cert/issued`
//! (a certificate, or why not, in words the device logs).
//!
//! A request is signed only for the id whose topic it came on (the broker's
//! ACL lets a device write only its own), only if it names that id, and only
//! if it carries that device's current certificate, from this CA, not
//! revoked, with a signature over the request by that certificate's key: so
//! neither a device that asks for another id nor anyone who can publish on
//! the broker without the device's key gets a certificate.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::fleet::{as_operator, check_id, device_dir, io, load_ca};
use super::{CliError, config_for, connect};
use crate::certs::{Authority, request};
use crate::cli::args::ConnectionArgs;
use crate::link::{Link, LinkEvent, Qos, Retry};
use crate::tls::{CertSummary, ca_certificates, proof_holds};
use crate::topics::{self, CertIssued, CertRequest};

/// What `certs renew` was asked.
pub(super) struct Job<'a> {
    pub(super) dir: &'a Path,
    pub(super) connection: &'a ConnectionArgs,
    pub(super) watch: bool,
    pub(super) life: Duration,
    pub(super) operator: &'a str,
    pub(super) prefix: Option<&'a str>,
}

/// How long the retained requests get to arrive after the subscription is
/// answered, counted from the last one.
const QUIET: Duration = Duration::from_secs(2);
/// How long an answer may wait for the broker's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) async fn run(job: Job<'_>) -> Result<(), CliError> {
    let connection = as_operator(job.dir, job.operator, job.connection);
    let config = config_for(&connection)?;
    let prefix = job
        .prefix
        .map_or(config.device.topic_prefix.clone(), str::to_string);
    let judge = Judge::load(job.dir, job.operator, job.life)?;
    let subscriptions = vec![
        (format!("{prefix}/+/cert/request"), Qos::AtLeastOnce),
        (format!("{prefix}/+/cert/issued"), Qos::AtLeastOnce),
    ];
    let retry = if job.watch {
        Retry::Forever
    } else {
        Retry::Never
    };
    let mut link = connect(&config, "renew", retry, subscriptions).await?;
    let mut pass = Pass::default();
    let mut quiet_until: Option<Instant> = None;
    let mut token = 0u64;
    loop {
        let wait = async {
            match quiet_until {
                Some(at) if !job.watch => tokio::time::sleep_until(at).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wait => break,
            event = link.next_event() => match event {
                Some(LinkEvent::Subscribed { refused }) => {
                    if !refused.is_empty() {
                        return Err(CliError::Input(format!(
                            "the broker refused the subscription to {}: the operator's \
                             account may not read them (check the ACL from `pinpost certs \
                             mosquitto`)",
                            refused.join(", ")
                        )));
                    }
                    quiet_until = Some(Instant::now() + QUIET);
                }
                Some(LinkEvent::Message { topic, payload, .. }) => {
                    if quiet_until.is_some() {
                        quiet_until = Some(Instant::now() + QUIET);
                    }
                    pass.note(&prefix, &topic, payload);
                    if job.watch {
                        token = pass.answer(&judge, &prefix, &mut link, token).await?;
                    }
                }
                Some(LinkEvent::Down { failure, retry_in: None, .. }) => {
                    return Err(CliError::Connect(Box::new(failure)));
                }
                Some(LinkEvent::Down { failure, .. }) => eprintln!("pinpost: {failure}; retrying"),
                Some(_) => {}
                None => return Err(CliError::Link(crate::link::LinkError::Stopped)),
            },
        }
    }
    pass.answer(&judge, &prefix, &mut link, token).await?;
    if pass.answered == 0 {
        println!("No renewal request is waiting under {prefix}/+/cert/request.");
    }
    super::close(&mut link).await?;
    Ok(())
}

/// What this run has seen, per device id.
#[derive(Default)]
struct Pass {
    requests: BTreeMap<String, Vec<u8>>,
    /// The key (SPKI) of the certificate already answered for each id.
    issued: BTreeMap<String, Vec<u8>>,
    answered: usize,
}

impl Pass {
    fn note(&mut self, prefix: &str, topic: &str, payload: Vec<u8>) {
        let Some(rest) = topic.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
            return;
        };
        if let Some(id) = rest.strip_suffix("/cert/request") {
            if payload.is_empty() {
                self.requests.remove(id);
            } else {
                self.requests.insert(id.to_string(), payload);
            }
        } else if let Some(id) = rest.strip_suffix("/cert/issued") {
            let key = serde_json::from_slice::<CertIssued>(&payload)
                .ok()
                .and_then(|a| a.cert)
                .and_then(|pem| ca_certificates(pem.as_bytes()).into_iter().next())
                .and_then(|der| crate::tls::public_key_info(&der));
            match key {
                Some(key) => self.issued.insert(id.to_string(), key),
                None => self.issued.remove(id),
            };
        }
    }

    /// Answers every request not answered yet; returns the next token.
    async fn answer(
        &mut self,
        judge: &Judge,
        prefix: &str,
        link: &mut Link,
        mut token: u64,
    ) -> Result<u64, CliError> {
        let waiting = std::mem::take(&mut self.requests);
        for (id, payload) in waiting {
            if self
                .issued
                .get(&id)
                .is_some_and(|key| judge.answered(&payload, key))
            {
                continue;
            }
            let answer = match judge.judge(&id, &payload, crate::utc::now_unix()) {
                Verdict::Signed { cert, ends } => {
                    judge.keep(&id, &cert)?;
                    println!(
                        "{id}: signed its renewal request; the new certificate ends {}",
                        crate::utc::human(ends)
                    );
                    if let Some(key) = ca_certificates(cert.as_bytes())
                        .first()
                        .and_then(|d| crate::tls::public_key_info(d))
                    {
                        self.issued.insert(id.clone(), key);
                    }
                    CertIssued {
                        cert: Some(cert),
                        error: None,
                        ts: crate::clock::dating::now().ts,
                    }
                }
                Verdict::Refused(why) => {
                    eprintln!("pinpost: {id}: refused its renewal request: {why}");
                    CertIssued {
                        cert: None,
                        error: Some(why),
                        ts: crate::clock::dating::now().ts,
                    }
                }
            };
            token += 1;
            let topic = format!("{prefix}/{id}/cert/issued");
            let body = serde_json::to_vec(&answer).unwrap_or_default();
            link.publisher().try_send(token, &topic, body, true)?;
            wait_for_ack(link, token).await?;
            self.answered += 1;
        }
        Ok(token)
    }
}

async fn wait_for_ack(link: &mut Link, token: u64) -> Result<(), CliError> {
    let waited = tokio::time::timeout(ACK_TIMEOUT, async {
        loop {
            match link.next_event().await {
                Some(LinkEvent::Acked { token: Some(t), .. }) if t == token => return Ok(()),
                Some(LinkEvent::Down {
                    failure,
                    retry_in: None,
                    ..
                }) => return Err(CliError::Connect(Box::new(failure))),
                Some(_) => {}
                None => return Err(CliError::Link(crate::link::LinkError::Stopped)),
            }
        }
    })
    .await;
    waited.unwrap_or(Err(CliError::NoAnswer {
        confirmed: 0,
        sent: 1,
        secs: ACK_TIMEOUT.as_secs(),
    }))
}

/// What to do with one request.
enum Verdict {
    Signed { cert: String, ends: i64 },
    Refused(String),
}

/// The CA, what it trusts and what it has revoked: everything a request is
/// judged by.
struct Judge {
    dir: std::path::PathBuf,
    authority: Authority,
    /// The CA certificates (both during a rotation), DER.
    cas: Vec<Vec<u8>>,
    revoked: Vec<Vec<u8>>,
    operator: String,
    life: Duration,
}

impl Judge {
    fn load(dir: &Path, operator: &str, life: Duration) -> Result<Judge, CliError> {
        let authority = load_ca(dir)?;
        let ca_file = super::rotate::ca_for_folders(dir);
        let cas = ca_certificates(&std::fs::read(&ca_file).map_err(|e| io(&ca_file, e))?);
        let revoked = super::revoke::revoked_serials(dir)?;
        Ok(Judge {
            dir: dir.to_path_buf(),
            authority,
            cas,
            revoked,
            operator: operator.to_string(),
            life,
        })
    }

    /// Whether the request in `payload` is for `issued_key`.
    fn answered(&self, payload: &[u8], issued_key: &[u8]) -> bool {
        serde_json::from_slice::<CertRequest>(payload)
            .ok()
            .and_then(|r| request::read(r.csr.as_bytes()).ok())
            .is_some_and(|r| r.spki() == issued_key)
    }

    fn judge(&self, id: &str, payload: &[u8], now: i64) -> Verdict {
        match self.check(id, payload, now) {
            Ok(request) => match self.authority.sign(&request, now, self.life) {
                Ok(cert) => {
                    let ends = ca_certificates(cert.as_bytes())
                        .first()
                        .and_then(|d| CertSummary::from_der(d))
                        .map_or(0, |c| c.not_after);
                    Verdict::Signed { cert, ends }
                }
                Err(e) => Verdict::Refused(format!("the CA could not sign it ({e})")),
            },
            Err(why) => Verdict::Refused(why),
        }
    }

    /// The request, checked.
    fn check(&self, id: &str, payload: &[u8], now: i64) -> Result<request::Request, String> {
        if payload.len() > topics::CERT_MESSAGE_MAX {
            return Err(format!(
                "it is {} bytes, far larger than a request",
                payload.len()
            ));
        }
        let asked: CertRequest = serde_json::from_slice(payload)
            .map_err(|e| format!("it is not a renewal request ({e})"))?;
        let request = request::read(asked.csr.as_bytes()).map_err(|e| e.to_string())?;
        if request.id != id {
            return Err(format!(
                "it asks for a certificate for {:?} on {id}'s topic; a device is given \
                 certificates for its own id only",
                request.id
            ));
        }
        check_id(id, "a device id").map_err(|e| e.to_string())?;
        if id.eq_ignore_ascii_case(&self.operator) || id == "ca" || id == "broker" {
            return Err(format!("{id:?} is not a device's name"));
        }
        let current = ca_certificates(asked.cert.as_bytes())
            .into_iter()
            .next()
            .ok_or("it carries no current certificate")?;
        let summary =
            CertSummary::from_der(&current).ok_or("its current certificate is not X.509")?;
        if summary.common_name.as_deref() != Some(id) {
            return Err(format!(
                "the certificate it carries is {:?}'s, not {id}'s",
                summary.common_name.unwrap_or_default()
            ));
        }
        if !self
            .cas
            .iter()
            .any(|ca| crate::tls::issued_by(&current, ca))
        {
            return Err("the certificate it carries was not signed by this CA".into());
        }
        if now >= summary.not_after {
            return Err(format!(
                "the certificate it carries ended {}; a device whose certificate has ended \
                 is enrolled again (`pinpost enroll`, `pinpost certs sign`)",
                crate::utc::human(summary.not_after)
            ));
        }
        let serial = crate::certs::revocation::serial(asked.cert.as_bytes()).unwrap_or_default();
        if self.revoked.contains(&serial) {
            return Err("the certificate it carries has been revoked".into());
        }
        let proven = crate::hex::unhex(&asked.proof)
            .is_some_and(|sig| proof_holds(&current, &asked.scheme, asked.csr.as_bytes(), &sig));
        if !proven {
            return Err(
                "its proof does not verify: it was not signed with the key of the certificate \
                 it carries (a tampered request, or not from the device)"
                    .into(),
            );
        }
        if crate::tls::public_key_info(&current).as_deref() == Some(request.spki()) {
            return Err("it asks again for the key in use; a renewal makes a new key".into());
        }
        Ok(request)
    }

    /// The new certificate replaces the laptop's copy in the device's
    /// folder (what `certs revoke` revokes) and joins `issued.txt`.
    /// A key `certs device` made here for it goes: the device made its
    /// own, and a copy of a key nobody needs is only a secret to lose.
    fn keep(&self, id: &str, cert: &str) -> Result<(), CliError> {
        let folder = device_dir(&self.dir, id);
        std::fs::create_dir_all(&folder).map_err(|e| io(&folder, e))?;
        super::revoke::remember_issued(&self.dir, id, cert)?;
        super::fleet::write_file(&folder.join(format!("{id}.crt")), cert.as_bytes(), 0o644)?;
        let old_key = folder.join(format!("{id}.key"));
        if old_key.exists() {
            std::fs::remove_file(&old_key).map_err(|e| io(&old_key, e))?;
            println!(
                "{id}: removed {}: the device made a new key of its own, which never leaves it",
                old_key.display()
            );
        }
        Ok(())
    }
}
