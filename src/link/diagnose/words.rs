//! The words for each [`Failure`]: what happened, and what to do about it,
//! in the terms of the flags and config keys the reader can change.
//!
//! It must not find out anything: every fact it words is in the
//! [`Failure`] already, put there by the diagnosis.

use std::fmt;

use super::{Failure, LostReason, Rejection};

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
                     over the {limit} bytes pinpost reads (the largest command it accepts, or a \
                     certificate renewal's answer), and MQTT 3.1.1 cannot skip it unread; reconnecting with a clean \
                     session. If this repeats at every connect, it is a retained message on a \
                     command topic: find it with `mosquitto_sub -v --retained-only -t \
                     '<prefix>/<id>/cmd/+'` and clear it with `mosquitto_pub -r -n -t <its topic>`"
                ),
                LostReason::Reset => write!(
                    f,
                    "lost the connection to {addr}: it was reset (broker restarted, or the \
                     network dropped it)"
                ),
                LostReason::AfterSubscribe => write!(
                    f,
                    "lost the connection to {addr}: the broker closed it right after pinpost \
                     subscribed to its topics, without answering the subscription, so it would \
                     not take it: an ACL that forbids the filters on a broker that closes \
                     rather than refusing them, or (RabbitMQ) the cluster node that holds this \
                     client's subscription queue is down (README, \"RabbitMQ\"); the broker's \
                     log names the cause"
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
