//! A failed connection attempt (a rumqttc `ConnectionError` plus what the
//! TLS handshake showed) → a [`Failure`] that says what happened and what to
//! do. Never a bare "Protocol error" or "connection lost".
//!
//! TLS failures are worded by `tls::explain`; this module adds the network
//! and MQTT cases around them. It knows nothing of pins or topics.

use std::error::Error as StdError;
use std::fmt;
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

/// Why the link is down, in words.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    Dns {
        host: String,
        reason: String,
    },
    Refused {
        addr: String,
        tls: bool,
    },
    Unreachable {
        addr: String,
        reason: String,
    },
    Timeout {
        addr: String,
        secs: u64,
        tcp_answers: bool,
        tls: bool,
    },
    Tls(TlsFailure),
    Rejected {
        reason: Rejection,
        client_id: String,
        username: Option<String>,
    },
    ClosedBeforeConnAck {
        addr: String,
        tls: bool,
    },
    Lost {
        addr: String,
        reason: LostReason,
        client_id: String,
    },
    Other {
        addr: String,
        detail: String,
    },
    /// AWS IoT Core closed the connection: it never says why.
    Aws {
        addr: String,
        client_id: String,
        /// After CONNACK (a publish or subscribe) rather than at connect.
        connected: bool,
    },
    /// A TLS handshake to an IP address failed or was cut: no server name
    /// (SNI) could be sent, which a name-based service needs.
    NoServerName {
        addr: String,
        host: String,
    },
    /// Port 443 closed the connection and no ALPN protocol was offered.
    NoAlpn {
        addr: String,
    },
}

/// The CONNACK refusal codes of MQTT 3.1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    ProtocolVersion,
    ClientId,
    Unavailable,
    BadCredentials,
    NotAuthorized,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    KeepAlive {
        secs: u64,
    },
    /// Nothing at all came from the broker for this long, though pings
    /// go out every keep-alive: the link is dead even if TCP does not know.
    Silent {
        millis: u64,
        keep_alive_secs: u64,
    },
    ClosedByBroker,
    Reset,
    /// The broker sent a packet larger than the link reads: it cannot be
    /// skipped unread, so the connection was closed.
    TooLarge {
        size: usize,
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
            &setup.facts,
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
            .and_then(|s| tls::explain_closed(&s.observer.snapshot(), &s.facts));
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

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Dns { host, reason } => write!(
                f,
                "cannot find the broker's host {host:?} ({reason}): check the spelling of -h / \
                 broker.host, this machine's DNS (try `getent hosts {host}`), or use the \
                 broker's IP address"
            ),
            Failure::Refused { addr, tls } => {
                let usual = if *tls { 8883 } else { 1883 };
                write!(
                    f,
                    "connection refused by {addr}: nothing is listening there. Check that the \
                     broker is running and listens on that port (usually {usual}; Mosquitto 2 \
                     listens only on localhost until a `listener` line is added)"
                )
            }
            Failure::Unreachable { addr, reason } => write!(
                f,
                "cannot reach {addr} ({reason}): this machine has no route there; check its \
                 network connection and the broker's address"
            ),
            Failure::Timeout {
                addr,
                secs,
                tcp_answers,
                tls,
            } => {
                if *tcp_answers {
                    write!(
                        f,
                        "{addr} accepted the connection but did not answer {} within {secs}s: \
                         check that this port is the broker's {} port",
                        if *tls {
                            "the TLS handshake and MQTT CONNECT"
                        } else {
                            "MQTT CONNECT"
                        },
                        if *tls {
                            "TLS (usually 8883)"
                        } else {
                            "plain MQTT (usually 1883)"
                        }
                    )
                } else {
                    write!(
                        f,
                        "no answer from {addr} within {secs}s: the host may be off or \
                         unreachable, or a firewall drops the traffic (check the broker host's \
                         firewall for port {})",
                        addr.rsplit(':').next().unwrap_or_default()
                    )
                }
            }
            Failure::Tls(failure) => failure.fmt(f),
            Failure::Rejected {
                reason,
                client_id,
                username,
            } => match reason {
                Rejection::BadCredentials => write!(
                    f,
                    "the broker refused the username or password{}: check broker.username and \
                     broker.password (-u/-P) against the broker's password file",
                    username
                        .as_deref()
                        .map(|u| format!(" (user {u:?})"))
                        .unwrap_or_default()
                ),
                Rejection::NotAuthorized => match username {
                    None => write!(
                        f,
                        "the broker refused the connection as not authorised: it requires a \
                         login (Mosquitto: allow_anonymous false) and none was given: set \
                         broker.username and password (-u/-P), or use a client certificate the \
                         broker maps to a user (use_identity_as_username)"
                    ),
                    Some(u) => write!(
                        f,
                        "the broker refused the connection as not authorised for user {u:?}: \
                         check the username and password (-u/-P) and that this user may \
                         connect"
                    ),
                },
                Rejection::ClientId => write!(
                    f,
                    "the broker refused the client id {client_id:?}: choose another with -i or \
                     broker.client_id (some brokers limit it to 23 letters and digits)"
                ),
                Rejection::Unavailable => write!(
                    f,
                    "the broker says it is unavailable right now: try again later, and check \
                     the broker's log"
                ),
                Rejection::ProtocolVersion => write!(
                    f,
                    "the broker does not accept MQTT 3.1.1, the protocol pinpost speaks: check \
                     the broker's protocol settings"
                ),
            },
            Failure::ClosedBeforeConnAck { addr, tls } => {
                write!(
                    f,
                    "{addr} closed the connection before accepting it (no CONNACK)"
                )?;
                if *tls {
                    write!(
                        f,
                        ": the broker's log says why (often a client certificate or login it \
                         refused)"
                    )
                } else {
                    write!(
                        f,
                        ": if this is a TLS port (usually 8883), add --cafile (broker.tls); \
                         otherwise the broker's log says why"
                    )
                }
            }
            Failure::Lost {
                addr,
                reason,
                client_id,
            } => match reason {
                LostReason::Silent {
                    millis,
                    keep_alive_secs,
                } => write!(
                    f,
                    "lost the connection to {addr}: nothing heard from the broker for {:.1}s \
                     though it is pinged every {keep_alive_secs}s (network down or broker stalled)",
                    *millis as f64 / 1000.0
                ),
                LostReason::KeepAlive { secs } => write!(
                    f,
                    "lost the connection to {addr}: no answer to keep-alive within {secs}s \
                     (network down or broker stalled)"
                ),
                LostReason::TooLarge { size, limit } => write!(
                    f,
                    "dropped the connection to {addr}: the broker sent a {size}-byte message, \
                     over the {limit} bytes pinpost reads (commands.max_payload plus the command \
                     topic), and MQTT 3.1.1 cannot skip it unread; reconnecting with a clean \
                     session. If this repeats at every connect, it is a retained message on a \
                     command topic: find it with `mosquitto_sub -v --retained-only -t \
                     '<prefix>/<id>/cmd/+'` and clear it with `mosquitto_pub -r -n -t <its topic>`"
                ),
                LostReason::Reset => write!(
                    f,
                    "lost the connection to {addr}: it was reset (broker restarted, or the \
                     network dropped it)"
                ),
                LostReason::ClosedByBroker => write!(
                    f,
                    "lost the connection to {addr}: the broker closed it (broker restarted, or \
                     another client connected with the same client id {client_id:?}, or with \
                     the same certificate where the broker names clients by their \
                     certificate, as `pinpost certs mosquitto` sets up; the broker's log says \
                     which)"
                ),
            },
            Failure::Other { addr, detail } => {
                write!(f, "cannot connect to {addr}: {detail}")
            }
            Failure::Aws {
                addr,
                client_id,
                connected: false,
            } => write!(
                f,
                "AWS IoT Core ({addr}) closed the connection before accepting it (no CONNACK). \
                 It says no more than that when: the certificate is not registered in this \
                 account and region, or is not ACTIVE; no policy is attached to it; or the \
                 policy does not allow iot:Connect for client id {client_id:?} (resource \
                 arn:aws:iot:<region>:<account>:client/{client_id}). Check with `aws iot \
                 describe-certificate`, `aws iot list-attached-policies --target <certificate \
                 ARN>` and the policy's iot:Connect resource"
            ),
            Failure::Aws {
                addr,
                client_id,
                connected: true,
            } => write!(
                f,
                "AWS IoT Core ({addr}) closed the connection. It says no more than that when \
                 the device publishes where its policy does not allow iot:Publish (a retained \
                 message also needs iot:RetainPublish), subscribes where it does not allow \
                 iot:Subscribe, or when another connection takes client id {client_id:?}; \
                 AWS IoT's logs (CloudWatch, AWSIotLogsV2) say which"
            ),
            Failure::NoServerName { addr, host } => write!(
                f,
                "{addr} refused the TLS connection: {host} is an IP address, so no server \
                 name (SNI) could be sent, and a broker that serves several names by one \
                 address (AWS IoT Core, HiveMQ Cloud, a TLS proxy) needs it. Connect by the \
                 broker's name, or keep the address and set broker.tls.server_name to the \
                 name"
            ),
            Failure::NoAlpn { addr } => write!(
                f,
                "{addr} closed the connection during or right after the TLS handshake, and \
                 pinpost offered no ALPN protocol: on port 443 a broker shares the port with \
                 HTTPS and picks MQTT by ALPN. For AWS IoT Core set broker.profile = \
                 \"aws-iot\" (it offers \"x-amzn-mqtt-ca\"); for another service set \
                 broker.tls.alpn to the protocol its documentation names"
            ),
        }
    }
}
