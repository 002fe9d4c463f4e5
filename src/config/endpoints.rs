//! Where the broker is: one `host`/`port`, or several `hosts` of a cluster
//! or a pair, in the order a device tries them.
//!
//! It parses and checks addresses only; it must not know how or when the
//! link connects or fails over (that is the link's).

use std::fmt;
use std::str::FromStr;

/// One broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// A host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') && !self.host.starts_with('[') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Which of several brokers a device tries first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// The first listed, then the next: a primary and its standby.
    #[default]
    InOrder,
    /// A start that depends on the client id, the same at every start of
    /// one device and different across a fleet, so a fleet spreads over a
    /// cluster's nodes instead of all landing on the first.
    Spread,
}

impl Order {
    /// The endpoints in the order `client_id` tries them.
    pub(crate) fn arrange(self, endpoints: &[Endpoint], client_id: &str) -> Vec<Endpoint> {
        let mut arranged = endpoints.to_vec();
        if self == Order::Spread && !arranged.is_empty() {
            let start = fnv1a(client_id.as_bytes()) % arranged.len() as u64;
            arranged.rotate_left(start as usize);
        }
        arranged
    }
}

impl FromStr for Order {
    type Err = String;

    /// `broker.order`: `"in_order"` or `"spread"`.
    fn from_str(word: &str) -> Result<Self, String> {
        match word {
            "in_order" => Ok(Order::InOrder),
            "spread" => Ok(Order::Spread),
            other => Err(format!(
                "{other:?} is not an order; allowed: \"in_order\" (the first listed \
                 first, then the next: a primary and its standby) or \"spread\" (each \
                 device starts at its own node, so a fleet spreads over a cluster)"
            )),
        }
    }
}

/// A small stable hash (FNV-1a, 64 bits): the same on every machine and
/// release, unlike std's randomly seeded one.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Parses `"host"`, `"host:port"`, `"[v6]"` or `"[v6]:port"`; a missing
/// port is `default_port`. The error says what is wrong, in words.
pub(crate) fn parse(text: &str, default_port: u16) -> Result<Endpoint, String> {
    let bad = || {
        format!(
            "{text:?} is not a broker address; write \"host\" or \"host:port\" (an IPv6 \
             address in brackets: \"[fd00::1]:8883\")"
        )
    };
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match text.split_once(':') {
            // More than one colon without brackets: a bare IPv6 address.
            Some((_, rest)) if rest.contains(':') => (text, None),
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains(['[', ']', '/']) {
        return Err(bad());
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{text:?}: {p:?} is not a port; allowed: 1 to 65535"))?,
    };
    Ok(Endpoint {
        host: host.to_string(),
        port,
    })
}

/// Whether `host` is an IP address (to which TLS cannot send a server name).
pub(crate) fn is_ip(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok()
}

/// Whether traffic to `host` stays on this machine.
pub(crate) fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// At most this many brokers: a config listing more is a mistake, and each
/// costs an attempt per round.
pub(crate) const MAX_ENDPOINTS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn an_address_may_name_its_port_or_take_the_default() {
        assert_eq!(parse("node1", 8883), Ok(ep("node1", 8883)));
        assert_eq!(parse("node1:1884", 8883), Ok(ep("node1", 1884)));
        assert_eq!(parse("10.0.0.1:443", 8883), Ok(ep("10.0.0.1", 443)));
        assert_eq!(parse("[fd00::1]:8884", 8883), Ok(ep("fd00::1", 8884)));
        assert_eq!(parse("[fd00::1]", 8883), Ok(ep("fd00::1", 8883)));
        assert_eq!(parse("fd00::1", 8883), Ok(ep("fd00::1", 8883)));
        assert_eq!(ep("fd00::1", 8883).to_string(), "[fd00::1]:8883");
        assert_eq!(ep("node1", 8883).to_string(), "node1:8883");
    }

    #[test]
    fn a_bad_address_is_refused_in_words() {
        for bad in ["", ":8883", "node 1", "[fd00::1", "[fd00::1]x", "a/b:1"] {
            let e = parse(bad, 8883).unwrap_err();
            assert!(e.contains("is not a broker address"), "{bad}: {e}");
        }
        let e = parse("node1:0", 8883).unwrap_err();
        assert!(
            e.contains("\"0\" is not a port; allowed: 1 to 65535"),
            "{e}"
        );
        let e = parse("node1:http", 8883).unwrap_err();
        assert!(e.contains("is not a port"), "{e}");
    }

    #[test]
    fn spread_starts_each_device_somewhere_stable_and_covers_every_node() {
        let nodes = [ep("a", 1), ep("b", 1), ep("c", 1)];
        assert_eq!(Order::InOrder.arrange(&nodes, "pi-7"), nodes);
        let once = Order::Spread.arrange(&nodes, "pi-7");
        assert_eq!(once, Order::Spread.arrange(&nodes, "pi-7"), "stable");
        let mut sorted = once.clone();
        sorted.sort_by(|x, y| x.host.cmp(&y.host));
        assert_eq!(sorted, nodes, "every node, each once");
        let mut firsts = [0usize; 3];
        for n in 0..300 {
            let first = &Order::Spread.arrange(&nodes, &format!("pi-{n}"))[0];
            firsts[nodes.iter().position(|e| e == first).unwrap()] += 1;
        }
        assert!(
            firsts.iter().all(|n| *n > 60),
            "a fleet spreads: {firsts:?}"
        );
    }
}

#[cfg(test)]
mod config_tests {

    use crate::config::{Overrides, from_text};

    fn config(broker: &str, overrides: &Overrides) -> Result<crate::config::Config, String> {
        from_text(
            &format!("[device]\nid = \"pi\"\n[broker]\n{broker}\n[broker.tls]\n"),
            None,
            overrides,
        )
        .map_err(|e| e.to_string())
    }

    fn endpoints(c: &crate::config::Config) -> Vec<String> {
        c.broker.endpoints.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn hosts_take_the_port_unless_they_name_one_and_the_first_is_host() {
        let c = config(
            "hosts = [\"node1\", \"node2:1884\"]\nport = 9883",
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(endpoints(&c), ["node1:9883", "node2:1884"]);
        assert_eq!((c.broker.host.as_str(), c.broker.port), ("node1", 9883));
        let c = config("host = \"node1\"", &Overrides::default()).unwrap();
        assert_eq!(endpoints(&c), ["node1:8883"], "TLS's default port");
    }

    #[test]
    fn host_and_hosts_together_an_empty_list_and_repeats_are_refused() {
        let e = config("host = \"a\"\nhosts = [\"b\"]", &Overrides::default()).unwrap_err();
        assert!(
            e.contains("set broker.host (one broker) or broker.hosts (several), not both"),
            "{e}"
        );
        let e = config("hosts = []", &Overrides::default()).unwrap_err();
        assert!(e.contains("lists 0 brokers; allowed: 1 to 16"), "{e}");
        let e = config("hosts = [\"a\", \"a:8883\"]", &Overrides::default()).unwrap_err();
        assert!(e.contains("names a:8883 twice"), "{e}");
        let e = config("hosts = [\"a b\"]", &Overrides::default()).unwrap_err();
        assert!(
            e.contains("broker.hosts") && e.contains("is not a broker address"),
            "{e}"
        );
        let e = config("hosts = [\"a\"]\norder = \"random\"", &Overrides::default()).unwrap_err();
        assert!(
            e.contains("\"random\" is not an order; allowed: \"in_order\""),
            "{e}"
        );
    }

    #[test]
    fn plain_mqtt_to_any_listed_host_off_this_machine_is_refused() {
        let e = from_text(
            "[device]\nid = \"pi\"\n[broker]\nhosts = [\"127.0.0.1\", \"10.0.0.9\"]\n",
            None,
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("broker.hosts") && e.contains("plain MQTT without TLS to 10.0.0.9"),
            "{e}"
        );
    }

    #[test]
    fn h_given_twice_replaces_the_configs_brokers() {
        let flags = Overrides {
            hosts: vec!["x:1".into(), "y".into()],
            ..Overrides::default()
        };
        let c = config("host = \"node1\"", &flags).unwrap();
        assert_eq!(endpoints(&c), ["x:1", "y:8883"]);
        let c = config(
            "hosts = [\"a\", \"b\"]",
            &Overrides {
                hosts: vec!["z".into()],
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(endpoints(&c), ["z:8883"]);
    }
}
