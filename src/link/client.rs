//! Who a link is on the broker, decided once for the agent, the one-shot
//! commands and the demo's console: its client id, and the options every
//! link for a device starts from. It knows the device's id and broker
//! settings, not its pins.

use super::{LinkOptions, Retry};
use crate::config::{Broker, Reconnect};

/// Who opens a connection for a device, which decides its client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Client<'a> {
    /// The agent: `broker.client_id`, else the bare device id.
    Agent,
    /// A tool beside the agent (`publish`, `subscribe`, `check`, the
    /// demo's console), named by its role: `broker.client_id` (`-i`), else
    /// `<device id>-<role>-<pid>`, so that it never takes the agent's place
    /// on the broker (which would disconnect the agent).
    Tool(&'a str),
}

impl Client<'_> {
    /// The MQTT client id to connect with.
    pub(crate) fn id(self, broker: &Broker, device_id: &str) -> String {
        if let Some(id) = &broker.client_id {
            return id.clone();
        }
        match self {
            Client::Agent => device_id.to_string(),
            Client::Tool(role) => format!("{device_id}-{role}-{}", std::process::id()),
        }
    }
}

impl LinkOptions {
    /// The options of a link to `broker` for `client` of device `device_id`:
    /// no Will, no subscriptions, incoming packets up to
    /// `broker.max_packet_size`. Callers add what their link needs.
    pub(crate) fn new(
        broker: &Broker,
        reconnect: &Reconnect,
        device_id: &str,
        client: Client<'_>,
        retry: Retry,
    ) -> LinkOptions {
        LinkOptions {
            broker: broker.clone(),
            client_id: client.id(broker, device_id),
            reconnect: reconnect.clone(),
            retry,
            will: None,
            subscriptions: Vec::new(),
            max_incoming: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides, from_text};

    fn config(broker: &str) -> Config {
        from_text(
            &format!("[device]\nid = \"pi-01\"\n[broker]\nhost = \"127.0.0.1\"\n{broker}"),
            None,
            &Overrides::default(),
        )
        .unwrap()
    }

    #[test]
    fn the_agent_is_the_device_and_a_tool_stands_beside_it() {
        let c = config("");
        let agent = LinkOptions::new(
            &c.broker,
            &c.reconnect,
            &c.device.id,
            Client::Agent,
            Retry::Forever,
        );
        assert_eq!(agent.client_id, "pi-01");
        let tool = Client::Tool("pub").id(&c.broker, &c.device.id);
        assert_eq!(tool, format!("pi-01-pub-{}", std::process::id()));
        assert!(agent.will.is_none() && agent.subscriptions.is_empty());
    }

    #[test]
    fn a_configured_client_id_wins_for_both() {
        let c = config("client_id = \"named\"\n");
        for client in [Client::Agent, Client::Tool("sub")] {
            assert_eq!(client.id(&c.broker, &c.device.id), "named");
        }
    }
}
