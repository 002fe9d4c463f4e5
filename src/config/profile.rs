//! Brokers with rules of their own. `profile = "aws-iot"` sets what AWS IoT
//! Core needs (port 443 with ALPN `x-amzn-mqtt-ca`, mutual TLS, a name to
//! send as SNI) and refuses, in words, a config that breaks its limits
//! (client id ≤ 128 bytes, keep-alive 30–1200 s, payloads ≤ 128 KB; QoS 2 is
//! never acknowledged there, which the tools refuse).
//!
//! It knows the services' published limits; it must not know how the link
//! connects or how failures are worded (`link::diagnose` says those).

use std::time::Duration;

use super::endpoints::is_ip;
use super::error::ConfigError;
use super::model::{Broker, Profile};
use super::origins::Origins;
use super::raw::{RawBroker, RawTls};

/// AWS IoT Core's ALPN protocol for MQTT with a client certificate on 443.
const AWS_ALPN: &str = "x-amzn-mqtt-ca";
/// AWS IoT Core's limit on a publish's payload.
const AWS_MAX_PAYLOAD: i64 = 128 * 1024;
const AWS_CLIENT_ID_BYTES: usize = 128;
const AWS_KEEP_ALIVE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(1200));

/// Fills in what the profile sets and the config left out, before the
/// broker section is built.
pub(super) fn defaults(profile: Profile, raw: &mut RawBroker) {
    if profile != Profile::AwsIot {
        return;
    }
    let port = *raw.port.get_or_insert(443);
    raw.max_packet_size.get_or_insert(AWS_MAX_PAYLOAD + 1024);
    let tls = raw.tls.get_or_insert_with(RawTls::default);
    if port == 443 && tls.alpn.is_none() {
        tls.alpn = Some(vec![AWS_ALPN.to_string()]);
    }
}

/// Refuses a built broker section that breaks the profile's rules.
pub(super) fn check(
    profile: Profile,
    broker: &Broker,
    device_id: &str,
    o: &Origins<'_>,
) -> Result<(), ConfigError> {
    if profile != Profile::AwsIot {
        return Ok(());
    }
    let aws = |key: &str, words: String| o.invalid(key, format!("AWS IoT Core: {words}"));
    let Some(tls) = broker
        .tls
        .as_ref()
        .filter(|t| t.cert_file.is_some() && t.key_file.is_some())
    else {
        return Err(aws(
            "broker.tls",
            "a device logs in with its certificate: set [broker.tls] ca_file (Amazon's root CA, \
             AmazonRootCA1.pem), cert_file and key_file (the certificate registered in AWS IoT \
             and its key)"
                .into(),
        ));
    };
    for endpoint in &broker.endpoints {
        if endpoint.port == 443 && !tls.alpn.iter().any(|p| p == AWS_ALPN) {
            return Err(aws(
                "broker.tls.alpn",
                format!(
                    "on port 443 it takes MQTT with a client certificate only when the TLS \
                     handshake asks for ALPN {AWS_ALPN:?}; leave broker.tls.alpn out (the \
                     profile sets it) or include it"
                ),
            ));
        }
        if is_ip(&endpoint.host) && tls.server_name.is_none() {
            return Err(aws(
                "broker.host",
                format!(
                    "{} is an IP address, and TLS cannot send an IP address as the server name \
                     (SNI) it routes by: connect to your account's endpoint name (`aws iot \
                     describe-endpoint --endpoint-type iot:Data-ATS`), or set \
                     broker.tls.server_name to it",
                    endpoint.host
                ),
            ));
        }
    }
    let client_id = broker.client_id.as_deref().unwrap_or(device_id);
    if client_id.len() > AWS_CLIENT_ID_BYTES {
        return Err(aws(
            if broker.client_id.is_some() {
                "broker.client_id"
            } else {
                "device.id"
            },
            format!(
                "the client id is {} bytes; it allows at most {AWS_CLIENT_ID_BYTES}",
                client_id.len()
            ),
        ));
    }
    let (low, high) = AWS_KEEP_ALIVE;
    if broker.keep_alive < low || broker.keep_alive > high {
        return Err(aws(
            "broker.keep_alive",
            format!(
                "{} is out of range; it allows \"30s\" to \"1200s\"",
                humantime::format_duration(broker.keep_alive)
            ),
        ));
    }
    if broker.max_packet_size as i64 > AWS_MAX_PAYLOAD + 1024 {
        return Err(aws(
            "broker.max_packet_size",
            format!(
                "{} bytes is more than it takes: payloads of at most 128 KB (131072 bytes), so \
                 at most {} with the topic",
                broker.max_packet_size,
                AWS_MAX_PAYLOAD + 1024
            ),
        ));
    }
    Ok(())
}
