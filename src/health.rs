//! What "healthy" means for a running agent, in the one place both sides
//! read it: the agent says it in its systemd STATUS line once the broker
//! has acknowledged a message on the current connection, and the update
//! helper reads that line (`systemctl show -p StatusText`) to decide
//! whether a newly installed release stays.
//!
//! It knows the words, not systemd or MQTT.

/// Ends the STATUS line once the connection has carried a message.
const DELIVERING: &str = " and delivering";

/// The STATUS line of a connection that has carried a message.
pub(crate) fn delivering(broker: &str) -> String {
    format!("connected to {broker}{DELIVERING}")
}

/// The STATUS line of a connection made, before anything went through.
pub(crate) fn connected(broker: &str) -> String {
    format!("connected to {broker}")
}

/// Whether a STATUS line says the agent is connected and delivering.
pub(crate) fn is_delivering(status: &str) -> bool {
    status.starts_with("connected to ") && status.ends_with(DELIVERING)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_connection_that_carried_a_message_counts_as_delivering() {
        assert!(is_delivering(&delivering("mqtts://broker:8883")));
        assert!(!is_delivering(&connected("mqtts://broker:8883")));
        assert!(!is_delivering(
            "retrying in 5.0s: the broker refused the connection"
        ));
        assert!(!is_delivering(""));
    }
}
