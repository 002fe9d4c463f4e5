//! Renewing this device's certificate over MQTT before it ends, with no
//! restart: from `broker.tls.renew_before` before the end (and never before
//! the middle of its life) the agent makes a new key, asks on its own
//! `cert/request` topic, checks the certificate the operator's
//! `pinpost certs renew` answers on `cert/issued`, and switches to it at a
//! reconnect it chooses. The old pair stays in use until the new one has
//! connected once; a refused switch goes back to it and says why.
//!
//! It owns the renewal's files (`store`) and its state; it decides when.
//! It does not know rustls or X.509 (`tls::Pair` checks certificates), nor
//! how the link reconnects (it asks a `Reconnector`).

mod due;
mod state;
mod store;

use std::time::Duration;

use tokio::time::Instant;

use crate::certs::{KeyKind, request};
use crate::config::Config;
use crate::link::{Failure, Publisher, Qos, Reconnector};
use crate::tls::{Identity, Pair};
use crate::topics::{CertIssued, CertRequest, Topics};
use crate::utc;

pub(super) use due::due_at;
use due::{nag_every, span};
use state::State;
pub(crate) use store::renewed_pair;
use store::{CURRENT, NEXT_KEY, REJECTED, Store, TRIAL};

/// After a refused switch or a failed step, how long before asking again.
const REST: Duration = Duration::from_secs(3600);
pub(super) struct Renewal {
    id: String,
    topics: Topics,
    renew_before: Duration,
    /// The CA certificates (DER) an issued certificate must chain to.
    cas: Vec<Vec<u8>>,
    identity: Identity,
    reconnector: Reconnector,
    publisher: Publisher,
    store: Store,
    /// The pair in use, and the file it came from.
    current: Pair,
    current_file: String,
    /// Leaf certificates (DER) already dealt with: taken, refused or in
    /// use; seen again (retained), they are not news.
    handled: Vec<Vec<u8>>,
    state: State,
    /// Last said of the answers and nags, so each is said once.
    said: Option<String>,
    /// The clock was trusted at the last tick: only then is a certificate's
    /// date judged, so one is not refused (and forgotten) at 1970.
    trusted: bool,
    /// An answer that came while the clock was not trusted, for later.
    deferred: Option<Vec<u8>>,
    nagged: i64,
}

/// What [`Renewal::start`] found, for the agent's log and stats.
pub(super) struct Started {
    pub(super) renewal: Option<Renewal>,
    /// Words for the log: which pair is in use, or why renewal is off.
    pub(super) words: Option<String>,
}

impl Renewal {
    /// Chooses the pair to start with (a renewed one that has connected,
    /// if it ends later than the config's) and offers it on `identity`.
    /// `None` when this device has no client certificate or no CA file to
    /// check a new one against.
    pub(super) fn start(
        config: &Config,
        state_dir: &std::path::Path,
        identity: Identity,
        reconnector: Reconnector,
        publisher: Publisher,
    ) -> Started {
        let off = |words: Option<String>| Started {
            renewal: None,
            words,
        };
        let Some(tls) = &config.broker.tls else {
            return off(None);
        };
        let (Some(cert_file), Some(key_file), Some(ca_file)) =
            (&tls.cert_file, &tls.key_file, &tls.ca_file)
        else {
            return off(tls.cert_file.as_ref().map(|_| {
                "certificate renewal is off: broker.tls.ca_file is not set, so a renewed \
                 certificate could not be checked"
                    .to_string()
            }));
        };
        let read = |p: &std::path::Path| std::fs::read(p).unwrap_or_default();
        let Ok(configured) = Pair::from_pem(&read(cert_file.path()), &read(key_file.path())) else {
            // The link has said what is wrong with these files already.
            return off(None);
        };
        let cas = crate::tls::ca_certificates(&read(ca_file.path()));
        let store = Store::new(state_dir);
        let id = config.device.id.clone();
        let mut words = None;
        let mut current = configured;
        let mut current_file = cert_file.to_string();
        match store.read(CURRENT) {
            Ok(Some(pem)) => match Pair::from_pem(&pem, &pem)
                .and_then(|p| p.check_for(&id, &cas, p.starts()).map(|()| p))
            {
                Ok(renewed) if renewed.ends() > current.ends() => {
                    identity.offer(&renewed, &store.path(CURRENT).display().to_string());
                    words = Some(format!(
                        "using the renewed certificate in {} (ends {})",
                        store.path(CURRENT).display(),
                        utc::human(renewed.ends())
                    ));
                    current = renewed;
                    current_file = store.path(CURRENT).display().to_string();
                }
                Ok(_) => {}
                Err(e) => {
                    words = Some(format!(
                        "{} is not usable (the certificate {e}); using {cert_file}",
                        store.path(CURRENT).display()
                    ));
                }
            },
            Ok(None) => {}
            Err(e) => words = Some(format!("cannot read the renewed certificate: {e}")),
        }
        let mut renewal = Renewal {
            topics: Topics::new(&config.device.topic_prefix, &id),
            id,
            renew_before: tls.renew_before,
            cas,
            identity,
            reconnector,
            publisher,
            store,
            current,
            current_file,
            handled: Vec::new(),
            state: State::Idle,
            said: None,
            trusted: false,
            deferred: None,
            nagged: 0,
        };
        renewal.resume();
        Started {
            renewal: Some(renewal),
            words,
        }
    }

    /// Picks up where a stop (or a power cut) left the files.
    fn resume(&mut self) {
        let trial = self.store.read(TRIAL).ok().flatten();
        if let Some(pem) = trial {
            match Pair::from_pem(&pem, &pem) {
                Ok(pair) if pair.ends() > self.current.ends() => {
                    // Its key is in it: the request's key is spent.
                    self.step(self.store.remove(NEXT_KEY));
                    self.state = State::Ready(pair);
                    return;
                }
                _ => self.step(self.store.remove(TRIAL)),
            }
        }
        let key = self.store.read(NEXT_KEY).ok().flatten();
        if let Some(key_pem) = key.and_then(|k| String::from_utf8(k).ok()) {
            match self.request_for(&key_pem) {
                Ok(request) => {
                    self.state = State::Asked {
                        key_pem,
                        request,
                        since: utc::now_unix(),
                        published: false,
                    }
                }
                Err(e) => tracing::warn!("certificate renewal: {e}; starting again"),
            }
        }
    }

    /// When the pair in use ends (Unix seconds).
    pub(super) fn ends(&self) -> i64 {
        self.current.ends()
    }

    /// Looks whether anything is due: a renewal to start (only on a
    /// trusted clock), a request to publish, a nag.
    pub(super) fn tick(&mut self, trusted: bool, connected: bool) {
        self.trusted = trusted;
        if trusted {
            if let Some(answer) = self.deferred.take() {
                self.on_issued(&answer);
            }
        }
        let now = utc::now_unix();
        match &mut self.state {
            State::Resting(until) if Instant::now() >= *until => self.state = State::Idle,
            State::Idle if trusted && now >= due_at(&self.current, self.renew_before) => {
                self.begin()
            }
            State::Making(made) => match made.try_recv() {
                Ok(made) => self.ask(made, now),
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    self.rest("the thread making the new key stopped")
                }
            },
            State::Asked {
                since, published, ..
            } => {
                let since = *since;
                if connected && !*published {
                    self.publish_request();
                }
                let nag = nag_every(self.renew_before);
                if trusted && now - since >= nag && now - self.nagged >= nag {
                    self.nagged = now;
                    tracing::warn!(
                        "certificate renewal: asked {} ago on {} and no certificate has come \
                         (is `pinpost certs renew` running where the CA is?); this device \
                         keeps using its certificate, which ends {} ({} from now)",
                        span(now - since),
                        self.topics.cert_request(),
                        utc::human(self.current.ends()),
                        span(self.current.ends() - now)
                    );
                }
            }
            _ => {}
        }
    }

    /// A new key, made off the loop ([`State::Making`]).
    fn begin(&mut self) {
        let kind = if self.current.rsa() {
            KeyKind::Rsa2048
        } else {
            KeyKind::EcdsaP256
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("pinpost-newkey".into())
            .spawn(move || {
                let made = request::new_key(kind)
                    .map(|key| key.serialize_pem())
                    .map_err(|e| e.to_string());
                let _ = tx.send(made);
            });
        match spawned {
            Ok(_) => self.state = State::Making(rx),
            Err(e) => self.rest(&format!("cannot start a thread to make the new key: {e}")),
        }
    }

    /// The new key is made: its request, kept on disk before it is sent.
    fn ask(&mut self, made: Result<String, String>, now: i64) {
        let made = made.and_then(|pem| self.request_for(&pem).map(|r| (pem, r)));
        let (key_pem, request) = match made {
            Ok(m) => m,
            Err(e) => return self.rest(&format!("cannot make a new key and request: {e}")),
        };
        if let Err(e) = self.store.write(NEXT_KEY, key_pem.as_bytes()) {
            let file = self.store.path(NEXT_KEY);
            return self.rest(&format!(
                "cannot keep the new key in {}: {}",
                file.display(),
                crate::words::io_words(&e)
            ));
        }
        tracing::info!(
            "certificate renewal: the certificate ends {} ({} from now); made a new key and \
             asked for its certificate on {}",
            utc::human(self.current.ends()),
            span(self.current.ends() - now),
            self.topics.cert_request()
        );
        self.state = State::Asked {
            key_pem,
            request,
            since: now,
            published: false,
        };
    }

    /// The request's payload for `key_pem`, proven with the current key.
    fn request_for(&self, key_pem: &str) -> Result<Vec<u8>, String> {
        let key = request::read_key(key_pem).map_err(|e| e.to_string())?;
        let csr = request::make(&self.id, &key).map_err(|e| e.to_string())?;
        let (scheme, proof) = self
            .current
            .prove(csr.as_bytes())
            .ok_or("the current key cannot sign the request's proof")?;
        let leaf = self.current.leaf_pem();
        let payload = CertRequest {
            csr,
            cert: leaf,
            scheme,
            proof: crate::hex::hex(&proof),
            ts: crate::clock::dating::now().ts,
        };
        serde_json::to_vec(&payload).map_err(|e| e.to_string())
    }

    fn publish_request(&mut self) {
        let State::Asked {
            request, published, ..
        } = &mut self.state
        else {
            return;
        };
        let sent = self.publisher.try_publish(
            &self.topics.cert_request(),
            request.clone(),
            Qos::AtLeastOnce,
            true,
        );
        match sent {
            Ok(()) => *published = true,
            Err(e) => tracing::debug!("certificate request not queued: {e}"),
        }
    }

    /// A connection is up: a request goes out again, a checked pair is
    /// tried, a tried pair has worked.
    pub(super) fn on_connected(&mut self) -> bool {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Asked {
                key_pem,
                request,
                since,
                ..
            } => {
                self.state = State::Asked {
                    key_pem,
                    request,
                    since,
                    published: false,
                };
                self.publish_request();
                false
            }
            State::Ready(pair) => {
                self.try_pair(pair);
                false
            }
            State::Trying { trial, previous } => {
                self.promote(trial, &previous);
                true
            }
            other => {
                self.state = other;
                false
            }
        }
    }

    /// Offers `pair` and reconnects with it.
    fn try_pair(&mut self, trial: Pair) {
        tracing::info!(
            "certificate renewal: reconnecting with the renewed certificate (ends {})",
            utc::human(trial.ends())
        );
        let file = self.store.path(TRIAL).display().to_string();
        self.identity.offer(&trial, &file);
        self.reconnector.reconnect();
        self.state = State::Trying {
            trial,
            previous: self.current.clone(),
        };
    }

    /// The trial pair has connected: it becomes the pair in use.
    fn promote(&mut self, trial: Pair, previous: &Pair) {
        if let Err(e) = self.store.rename(TRIAL, CURRENT) {
            // It works now; at the next start the config's pair (or the
            // last renewed one) is used and this renewal comes round again.
            tracing::warn!(
                "certificate renewal: connected with the renewed certificate but cannot keep \
                 it in {}: {}; it is used until pinpost stops",
                self.store.path(CURRENT).display(),
                crate::words::io_words(&e)
            );
        }
        tracing::info!(
            "certificate renewal: switched to the renewed certificate, which ends {} (the one \
             before ends {})",
            utc::human(trial.ends()),
            utc::human(previous.ends())
        );
        self.current = trial;
        self.current_file = self.store.path(CURRENT).display().to_string();
        self.said = None;
        // Answered: the retained request goes.
        let _ = self.publisher.try_publish(
            &self.topics.cert_request(),
            Vec::new(),
            Qos::AtLeastOnce,
            true,
        );
    }

    /// The link went down. While a pair is being tried, that is its
    /// verdict: back to the pair before.
    pub(super) fn on_down(&mut self, failure: &Failure) {
        match &mut self.state {
            State::Trying { .. } => {}
            State::Asked { published, .. } => {
                // Still asked: the request goes out again on the next link.
                *published = false;
                return;
            }
            // Any other step (a key being made, a checked pair waiting, a
            // rest) is not the link's business.
            _ => return,
        }
        let State::Trying { trial, previous } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return;
        };
        self.identity.offer(&previous, &self.current_file.clone());
        let network = matches!(
            failure,
            Failure::Dns { .. }
                | Failure::Refused { .. }
                | Failure::Unreachable { .. }
                | Failure::Timeout { .. }
        );
        if network {
            tracing::warn!(
                "certificate renewal: could not try the renewed certificate ({failure}); back \
                 on the current one, and trying again at the next connection"
            );
            self.state = State::Ready(trial);
            return;
        }
        self.step(self.store.rename(TRIAL, REJECTED));
        let left = span(previous.ends() - utc::now_unix());
        self.rest(&format!(
            "the broker refused the renewed certificate ({failure}); back on the current one, \
             which ends {} ({left} from now); it is kept in {} to look at",
            utc::human(previous.ends()),
            self.store.path(REJECTED).display()
        ));
    }

    /// A message on `cert/issued`.
    pub(super) fn on_issued(&mut self, payload: &[u8]) {
        if payload.is_empty() {
            return;
        }
        if !self.trusted {
            // The link reads at most a few KiB: one kept answer is bounded.
            self.deferred = Some(payload.to_vec());
            return self.say(format!(
                "certificate renewal: an answer came on {} while the clock is not trusted; \
                 it is checked once the clock is set",
                self.topics.cert_issued()
            ));
        }
        let answer: CertIssued = match serde_json::from_slice(payload) {
            Ok(a) => a,
            Err(e) => {
                return self.say(format!(
                    "certificate renewal: the message on {} is not an answer ({e}); ignored",
                    self.topics.cert_issued()
                ));
            }
        };
        let leaf = answer.cert.as_deref().and_then(|pem| {
            crate::tls::ca_certificates(pem.as_bytes())
                .into_iter()
                .next()
        });
        if let Some(leaf) = &leaf {
            if self.handled.contains(leaf) || Some(leaf.as_slice()) == self.current.leaf() {
                return;
            }
            if self.handled.len() >= 8 {
                self.handled.remove(0);
            }
            self.handled.push(leaf.clone());
        }
        let asked = match &self.state {
            State::Asked { key_pem, .. } => Some(key_pem.clone()),
            _ => None,
        };
        match (answer.cert, answer.error, asked) {
            (_, Some(error), Some(_)) => self.say(format!(
                "certificate renewal: the operator refused this device's request: {error}; \
                 the current certificate ends {}",
                utc::human(self.current.ends())
            )),
            (Some(cert), None, Some(key_pem)) => self.take(cert.as_bytes(), &key_pem),
            (Some(_), None, None) => self.say(format!(
                "certificate renewal: a certificate was published for this device on {}, \
                 which asked for none; ignored",
                self.topics.cert_issued()
            )),
            _ => {}
        }
    }

    /// A certificate for the key asked with: checked, kept, tried.
    fn take(&mut self, cert: &[u8], key_pem: &str) {
        let checked = Pair::from_pem(cert, key_pem.as_bytes()).and_then(|p| {
            p.check_for(&self.id, &self.cas, utc::now_unix())
                .map(|()| p)
        });
        let pair = match checked {
            Ok(p) => p,
            Err(e) => {
                return self.say(format!(
                    "certificate renewal: refused the certificate published on {}: it {e}; \
                     still waiting for the right one (the current one ends {})",
                    self.topics.cert_issued(),
                    utc::human(self.current.ends())
                ));
            }
        };
        let mut both = cert.to_vec();
        if !both.ends_with(b"\n") {
            both.push(b'\n');
        }
        both.extend_from_slice(key_pem.as_bytes());
        if let Err(e) = self.store.write(TRIAL, &both) {
            return self.rest(&format!(
                "cannot keep the renewed certificate in {}: {}",
                self.store.path(TRIAL).display(),
                crate::words::io_words(&e)
            ));
        }
        self.step(self.store.remove(NEXT_KEY));
        tracing::info!(
            "certificate renewal: received and checked the renewed certificate (ends {})",
            utc::human(pair.ends())
        );
        self.state = State::Ready(pair);
    }

    /// Whether a checked pair waits for a connection that is up now.
    pub(super) fn ready(&self) -> bool {
        matches!(self.state, State::Ready(_))
    }

    /// Tries the waiting pair now (the link is up).
    pub(super) fn switch_now(&mut self) {
        if let State::Ready(pair) = std::mem::replace(&mut self.state, State::Idle) {
            self.try_pair(pair);
        }
    }

    fn rest(&mut self, why: &str) {
        tracing::warn!("certificate renewal: {why}; asking again in 1 hour");
        for name in [NEXT_KEY, TRIAL] {
            self.step(self.store.remove(name));
        }
        self.state = State::Resting(Instant::now() + REST);
    }

    /// Says `words` unless it was the last thing said.
    fn say(&mut self, words: String) {
        if self.said.as_deref() != Some(&words) {
            tracing::warn!("{words}");
            self.said = Some(words);
        }
    }

    fn step(&self, done: std::io::Result<()>) {
        if let Err(e) = done {
            tracing::warn!(
                "certificate renewal: {} in {}",
                crate::words::io_words(&e),
                self.store.path("").display()
            );
        }
    }
}
