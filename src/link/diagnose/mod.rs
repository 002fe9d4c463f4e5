//! A failed connection attempt (a rumqttc `ConnectionError` plus what the
//! TLS handshake showed) → a [`Failure`] that says what happened and what to
//! do. Never a bare "Protocol error" or "connection lost".
//!
//! TLS failures are worded by `tls::explain`; this module adds the network
//! and MQTT cases around them: here what happened is found out, and
//! `words.rs` says it. It knows nothing of pins or topics.

mod words;

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use rumqttc::{ConnectReturnCode, ConnectionError, StateError};

use crate::config::Profile;
use crate::tls::{self, TlsFailure, TlsSetup};

/// What a connection attempt was aimed at, to word failures with.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) client_id: String,
    pub(super) username: Option<String>,
    pub(super) connect_timeout: Duration,
    pub(super) keep_alive: Duration,
    pub(super) tls: Option<TlsSetup>,
    /// The largest packet read from the broker (its remaining length).
    pub(super) max_incoming: usize,
    /// A service whose silent refusals have known causes (AWS IoT Core).
    pub(super) profile: Profile,
}

impl Target {
    fn addr(&self) -> String {
        crate::config::Endpoint {
            host: self.host.clone(),
            port: self.port,
        }
        .to_string()
    }
}

/// Why the link is down: what the diagnosis found, put in words (what
/// happened and what to do) by its `Display`.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The broker's host name could not be resolved.
    Dns {
        /// The host name.
        host: String,
        /// The resolver's words.
        reason: String,
    },
    /// Nothing listens on the broker's port.
    Refused {
        /// The broker's address.
        addr: String,
        /// TLS was in use (so the usual port is 8883).
        tls: bool,
    },
    /// No route to the broker.
    Unreachable {
        /// The broker's address.
        addr: String,
        /// The system's words.
        reason: String,
    },
    /// The attempt took longer than `broker.connect_timeout`.
    Timeout {
        /// The broker's address.
        addr: String,
        /// The timeout, in seconds.
        secs: u64,
        /// A plain TCP connection to the address succeeds (so something
        /// answers, but not MQTT or TLS).
        tcp_answers: bool,
        /// TLS was in use.
        tls: bool,
    },
    /// The TLS handshake failed, as `tls::explain` words it.
    Tls(TlsFailure),
    /// The broker refused the CONNECT.
    Rejected {
        /// Its refusal code.
        reason: Rejection,
        /// The client id sent.
        client_id: String,
        /// The user name sent, if any.
        username: Option<String>,
    },
    /// The connection was closed before the broker's CONNACK.
    ClosedBeforeConnAck {
        /// The broker's address.
        addr: String,
        /// TLS was in use.
        tls: bool,
    },
    /// A working connection dropped.
    Lost {
        /// The broker's address.
        addr: String,
        /// How it was lost.
        reason: LostReason,
        /// The client id (a second client with the same id makes the
        /// broker close this one).
        client_id: String,
    },
    /// Anything else, with the error's own words.
    Other {
        /// The broker's address.
        addr: String,
        /// The innermost error's words.
        detail: String,
    },
    /// AWS IoT Core closed the connection: it never says why.
    Aws {
        /// The broker's address.
        addr: String,
        /// The client id (the policy must allow it).
        client_id: String,
        /// After CONNACK (a publish or subscribe) rather than at connect.
        connected: bool,
    },
    /// A TLS handshake to an IP address failed or was cut: no server name
    /// (SNI) could be sent, which a name-based service needs.
    NoServerName {
        /// The broker's address.
        addr: String,
        /// The host as configured (an IP address).
        host: String,
    },
    /// Port 443 closed the connection and no ALPN protocol was offered.
    NoAlpn {
        /// The broker's address.
        addr: String,
    },
}

/// The CONNACK refusal codes of MQTT 3.1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// 1: the broker does not speak this MQTT version.
    ProtocolVersion,
    /// 2: the client id is not allowed.
    ClientId,
    /// 3: the broker cannot serve now.
    Unavailable,
    /// 4: bad user name or password.
    BadCredentials,
    /// 5: this client may not connect.
    NotAuthorized,
}

/// How a working connection was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// The broker did not answer a ping in time.
    KeepAlive {
        /// The keep-alive, in seconds.
        secs: u64,
    },
    /// Nothing at all came from the broker for this long, though pings
    /// go out every keep-alive: the link is dead even if TCP does not know.
    Silent {
        /// How long nothing came, in milliseconds.
        millis: u64,
        /// The keep-alive, in seconds.
        keep_alive_secs: u64,
    },
    /// The broker closed the connection.
    ClosedByBroker,
    /// The broker closed the connection after pinpost subscribed and
    /// before it answered the subscription: it would not take it.
    AfterSubscribe,
    /// The connection was reset (or the pipe broke).
    Reset,
    /// The broker sent a packet larger than the link reads: it cannot be
    /// skipped unread, so the connection was closed.
    TooLarge {
        /// The packet's remaining length.
        size: usize,
        /// The most the link reads (`LinkOptions::max_incoming`).
        limit: usize,
    },
}

impl Failure {
    /// The broker sent a packet over the link's incoming limit.
    pub fn too_large(&self) -> bool {
        matches!(
            self,
            Failure::Lost {
                reason: LostReason::TooLarge { .. },
                ..
            }
        )
    }

    /// The same failure, known to have come while the broker had not yet
    /// answered the link's SUBSCRIBE: a close then is the broker's answer.
    pub(super) fn after_subscribe(self) -> Failure {
        match self {
            Failure::Lost {
                addr,
                reason: LostReason::ClosedByBroker | LostReason::Reset,
                client_id,
            } => Failure::Lost {
                addr,
                reason: LostReason::AfterSubscribe,
                client_id,
            },
            other => other,
        }
    }

    /// A working connection the broker closed (no reason given).
    pub fn closed_by_broker(&self) -> bool {
        matches!(
            self,
            Failure::Lost {
                reason: LostReason::ClosedByBroker,
                ..
            }
        )
    }

    /// Stable short name for logs, status lines and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Dns { .. } => "dns",
            Failure::Refused { .. } => "refused",
            Failure::Unreachable { .. } => "unreachable",
            Failure::Timeout { .. } => "timeout",
            Failure::Tls(_) => "tls",
            Failure::Rejected { .. } => "rejected",
            Failure::ClosedBeforeConnAck { .. } => "closed",
            Failure::Lost { .. } => "lost",
            Failure::Other { .. } => "other",
            Failure::Aws { .. } => "aws",
            Failure::NoServerName { .. } => "sni",
            Failure::NoAlpn { .. } => "alpn",
        }
    }
}

/// A link that went silent: declared dead by the link, not by rumqttc.
pub(super) fn silent(target: &Target, silence: std::time::Duration) -> Failure {
    Failure::Lost {
        addr: target.addr(),
        reason: LostReason::Silent {
            millis: silence.as_millis() as u64,
            keep_alive_secs: target.keep_alive.as_secs(),
        },
        client_id: target.client_id.clone(),
    }
}

/// Explains `error`; `was_connected` tells a drop of a working link from a
/// failed attempt. May probe DNS or TCP once, only after a failure, only
/// towards the broker's own address.
pub(super) async fn diagnose(
    error: &ConnectionError,
    was_connected: bool,
    target: &Target,
) -> Failure {
    let addr = target.addr();
    let tls_on = target.tls.is_some();
    if let Some(failure) = service_failure(error, was_connected, target) {
        return failure;
    }
    if let (Some(rustls_error), Some(setup)) = (find::<rustls::Error>(error), &target.tls) {
        let seen = setup.observer.snapshot();
        return Failure::Tls(tls::explain(
            rustls_error,
            &seen,
            &setup.facts_now(),
            &target.host,
        ));
    }
    if let ConnectionError::ConnectionRefused(code) = error {
        return Failure::Rejected {
            reason: rejection(*code),
            client_id: target.client_id.clone(),
            username: target.username.clone(),
        };
    }
    if was_connected {
        return Failure::Lost {
            addr,
            reason: lost_reason(error, target),
            client_id: target.client_id.clone(),
        };
    }
    if matches!(error, ConnectionError::NetworkTimeout) {
        return Failure::Timeout {
            secs: target.connect_timeout.as_secs(),
            tcp_answers: tcp_answers(target).await,
            tls: tls_on,
            addr,
        };
    }
    let kind = find::<io::Error>(error).map(io::Error::kind);
    match kind {
        Some(io::ErrorKind::ConnectionRefused) => return Failure::Refused { addr, tls: tls_on },
        Some(io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable) => {
            return Failure::Unreachable {
                addr,
                reason: error_text(error),
            };
        }
        _ => {}
    }
    if closed(error) {
        let explained = target
            .tls
            .as_ref()
            .and_then(|s| tls::explain_closed(&s.observer.snapshot(), &s.facts_now()));
        return match explained {
            Some(failure) => Failure::Tls(failure),
            None => Failure::ClosedBeforeConnAck { addr, tls: tls_on },
        };
    }
    if let Err(e) = tokio::net::lookup_host((target.host.as_str(), target.port)).await {
        return Failure::Dns {
            host: target.host.clone(),
            reason: dns_words(&e),
        };
    }
    Failure::Other {
        addr,
        detail: error_text(error),
    }
}

/// Every error in the chain, including the one an `io::Error` wraps (its
/// `source()` skips that one, which is where tokio-rustls puts rustls's).
fn chain<'a>(error: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        out.push(e);
        next = match e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    out
}

fn find<T: StdError + 'static>(error: &ConnectionError) -> Option<&T> {
    chain(error).into_iter().find_map(|e| e.downcast_ref::<T>())
}

/// What a name-based or managed service's silent refusal most likely
/// means, before the general diagnosis.
fn service_failure(
    error: &ConnectionError,
    was_connected: bool,
    target: &Target,
) -> Option<Failure> {
    let setup = target.tls.as_ref()?;
    let addr = target.addr();
    let refused_handshake = matches!(
        find::<rustls::Error>(error),
        Some(rustls::Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure
                | rustls::AlertDescription::UnrecognisedName
                | rustls::AlertDescription::AccessDenied
        ))
    );
    let cut = closed(error) || refused_handshake;
    // Only an alert: a close without one is as likely a plain-MQTT port
    // (which the TLS diagnosis says better).
    if !was_connected
        && refused_handshake
        && setup.facts.server_name.is_none()
        && crate::config::is_ip(&target.host)
        && setup.observer.snapshot().server_chain.is_empty()
    {
        return Some(Failure::NoServerName {
            addr,
            host: target.host.clone(),
        });
    }
    if !was_connected && cut && target.port == 443 && setup.facts.alpn.is_empty() {
        return Some(Failure::NoAlpn { addr });
    }
    if target.profile == Profile::AwsIot && closed(error) {
        return Some(Failure::Aws {
            addr,
            client_id: target.client_id.clone(),
            connected: was_connected,
        });
    }
    None
}

fn closed(error: &ConnectionError) -> bool {
    if matches!(
        error,
        ConnectionError::MqttState(StateError::ConnectionAborted)
    ) {
        return true;
    }
    matches!(
        find::<io::Error>(error).map(io::Error::kind),
        Some(
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        )
    )
}

fn lost_reason(error: &ConnectionError, target: &Target) -> LostReason {
    match error {
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size),
        )) => LostReason::TooLarge {
            size: *size,
            limit: target.max_incoming,
        },
        ConnectionError::MqttState(StateError::AwaitPingResp) => LostReason::KeepAlive {
            secs: target.keep_alive.as_secs(),
        },
        ConnectionError::FlushTimeout | ConnectionError::NetworkTimeout => LostReason::KeepAlive {
            secs: target.keep_alive.as_secs(),
        },
        e if matches!(
            find::<io::Error>(e).map(io::Error::kind),
            Some(io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe)
        ) =>
        {
            LostReason::Reset
        }
        _ => LostReason::ClosedByBroker,
    }
}

fn rejection(code: ConnectReturnCode) -> Rejection {
    match code {
        ConnectReturnCode::RefusedProtocolVersion => Rejection::ProtocolVersion,
        ConnectReturnCode::BadClientId => Rejection::ClientId,
        ConnectReturnCode::ServiceUnavailable => Rejection::Unavailable,
        ConnectReturnCode::BadUserNamePassword => Rejection::BadCredentials,
        ConnectReturnCode::NotAuthorized | ConnectReturnCode::Success => Rejection::NotAuthorized,
    }
}

/// Whether a plain TCP connection to the broker's address succeeds, to tell
/// "nothing answers" from "something answers but not MQTT/TLS".
async fn tcp_answers(target: &Target) -> bool {
    let connect = tokio::net::TcpStream::connect((target.host.as_str(), target.port));
    matches!(
        tokio::time::timeout(Duration::from_secs(2), connect).await,
        Ok(Ok(_))
    )
}

fn dns_words(e: &io::Error) -> String {
    let text = e.to_string();
    text.strip_prefix("failed to lookup address information: ")
        .unwrap_or(&text)
        .to_string()
}

fn error_text(error: &ConnectionError) -> String {
    chain(error)
        .last()
        .map_or_else(|| error.to_string(), |e| e.to_string())
}
