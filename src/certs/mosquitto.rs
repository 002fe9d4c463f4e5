//! The Mosquitto side of a pinpost fleet: a mutual-TLS listener whose
//! clients are known by their certificate's Common Name, and an ACL that
//! confines each device to its own topics. Text only; nothing here touches
//! files or a broker.

/// What the snippet and the ACL are made for.
#[derive(Debug, Clone)]
pub struct Setup {
    pub port: u16,
    /// The topic prefix the devices use (`device.topic_prefix`).
    pub prefix: String,
    /// The account that reads everything and sends commands.
    pub operator: String,
    /// Where ca.crt, broker.crt and broker.key live on the broker.
    pub cert_dir: String,
    /// Where the ACL file lives on the broker.
    pub acl_path: String,
}

/// A `conf.d` snippet for a mutual-TLS listener.
pub fn listener(setup: &Setup) -> String {
    let Setup {
        port,
        cert_dir,
        acl_path,
        ..
    } = setup;
    format!(
        "# pinpost: a mutual-TLS listener (made by `pinpost certs mosquitto`).\n\
         # Install as /etc/mosquitto/conf.d/pinpost.conf and restart Mosquitto.\n\
         listener {port}\n\
         cafile {cert_dir}/ca.crt\n\
         certfile {cert_dir}/broker.crt\n\
         # Readable by the mosquitto user: Mosquitto reads it after dropping root.\n\
         keyfile {cert_dir}/broker.key\n\
         # Every client shows a certificate signed by ca.crt, and is known by\n\
         # its Common Name (the device id), which the ACL's %u stands for.\n\
         require_certificate true\n\
         use_identity_as_username true\n\
         # The oldest TLS version accepted (a minimum, not the only one).\n\
         tls_version tlsv1.2\n\
         allow_anonymous false\n\
         acl_file {acl_path}\n\
         # Send small packets at once (a broker-wide setting). Without it, a\n\
         # command can wait 40-90 ms for a delayed ACK before it is sent on.\n\
         set_tcp_nodelay true\n"
    )
}

/// The ACL: each device reads and writes only `<prefix>/<its id>/#`; the
/// operator reads everything and may send commands.
pub fn acl(setup: &Setup) -> String {
    let Setup {
        prefix, operator, ..
    } = setup;
    format!(
        "# pinpost: who may use which topics (made by `pinpost certs mosquitto`).\n\
         # Install as {acl_path}.\n\
         \n\
         # The operator account ({operator}.crt from `pinpost certs device {operator}`)\n\
         # reads everything and sends commands to any device.\n\
         user {operator}\n\
         topic read #\n\
         topic write {prefix}/+/cmd/#\n\
         \n\
         # Every device: its own subtree only (%u is its certificate's CN).\n\
         pattern readwrite {prefix}/%u/#\n",
        acl_path = setup.acl_path
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> Setup {
        Setup {
            port: 8883,
            prefix: "pinpost".into(),
            operator: "operator".into(),
            cert_dir: "/etc/mosquitto/certs".into(),
            acl_path: "/etc/mosquitto/pinpost.acl".into(),
        }
    }

    #[test]
    fn the_listener_requires_certificates_and_names_clients_by_them() {
        let text = listener(&setup());
        for line in [
            "listener 8883",
            "cafile /etc/mosquitto/certs/ca.crt",
            "require_certificate true",
            "use_identity_as_username true",
            "tls_version tlsv1.2",
            "acl_file /etc/mosquitto/pinpost.acl",
            "set_tcp_nodelay true",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
    }

    #[test]
    fn the_acl_confines_devices_to_their_subtree() {
        let text = acl(&setup());
        assert!(text.lines().any(|l| l == "pattern readwrite pinpost/%u/#"));
        assert!(text.lines().any(|l| l == "user operator"));
        assert!(text.lines().any(|l| l == "topic write pinpost/+/cmd/#"));
    }
}
