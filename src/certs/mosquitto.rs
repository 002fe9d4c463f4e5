//! The Mosquitto side of a pinpost fleet: mutual-TLS listeners whose
//! clients are known, and named on the broker, by their certificate, and an
//! ACL that confines each device to its own topics. Text only; nothing here
//! touches files or a broker.
//!
//! Client ids are bound to certificates (`use_username_as_clientid`), so a
//! device cannot connect under another's id and knock it off (MQTT makes
//! the broker drop the older of two sessions with one id). Mosquitto 2.0
//! cannot check an id against a prefix of the user name, so one certificate
//! gets one session per listener. Hence two listeners:
//! - `port`, for agents: the id is the certificate's Common Name (`pi-01`);
//! - `cli_port`, for `pinpost publish`, `subscribe` and `check`: the id is
//!   the certificate's subject (`CN=pi-01`), so these run beside the agent on
//!   the same Pi with the same certificate. There the user name is the
//!   subject too, which an ACL `pattern` cannot turn into a topic level, so
//!   the ACL names each known certificate's subject.
//!
//! Every name written into the broker's files is checked first
//! ([`Setup::check`]): one with a newline, a wildcard or a path trick could
//! otherwise add lines to the listener or the ACL.

/// What the listeners and the ACL are made for.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    /// The agents' listener.
    pub(crate) port: u16,
    /// The tools' listener (`broker.cli_port`).
    pub(crate) cli_port: u16,
    /// The topic prefix the devices use (`device.topic_prefix`).
    pub(crate) prefix: String,
    /// Home Assistant's discovery prefix, under which each device may
    /// publish its own discovery configs.
    pub(crate) ha_prefix: String,
    /// The account that reads everything and sends commands.
    pub(crate) operator: String,
    /// Devices whose tools may use the tools' listener.
    pub(crate) devices: Vec<String>,
    /// Where ca.crt, broker.crt and broker.key live on the broker.
    pub(crate) cert_dir: String,
    /// Where the ACL file lives on the broker.
    pub(crate) acl_path: String,
    /// Rules for Home Assistant discovery (default prefix `homeassistant`).
    pub(crate) homeassistant: bool,
    /// Certificates are checked against the fleet's revocation list,
    /// `crl.pem` beside ca.crt (once any has been revoked).
    pub(crate) crl: bool,
}

/// Why a name cannot go into the broker's files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadName {
    #[error(
        "{what} {value:?} cannot go into the broker's files: {why}; use letters, digits, \
         '-', '_' and '.', like {example}"
    )]
    Name {
        what: &'static str,
        value: String,
        why: &'static str,
        example: &'static str,
    },
    #[error(
        "{what} {value:?} cannot go into the broker's files: {why}; give an absolute path \
         like /etc/mosquitto/certs"
    )]
    Path {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("the tools' port {0} is the agents' port too: give --cli-port another one")]
    SamePort(u16),
}

/// Why `name` is not a device id (or account name) the broker can use, if
/// it is not: one MQTT topic level, one ACL user name, one file name.
pub(crate) fn id_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 64 {
        Some("it is longer than 64 characters")
    } else if name.chars().any(char::is_control) {
        Some("it holds a control character (a newline would start a new line of settings)")
    } else if name.contains(['+', '#']) {
        Some("it holds an MQTT wildcard ('+' or '#')")
    } else if name.contains('/') || name.starts_with('.') {
        Some("it holds a path or topic separator ('/') or starts with '.'")
    } else if name == crate::config::RELEASE_LEVEL {
        Some("\"release\" is the topic level the fleet's release packages are published under")
    } else if name.contains('%') {
        Some("it holds '%', which the ACL reads as a pattern (%u, %c)")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Some("it holds a space or a character other than letters, digits, '-', '_' and '.'")
    } else {
        None
    }
}

impl Setup {
    /// Refuses any name that could change what the files say.
    pub(crate) fn check(&self) -> Result<(), BadName> {
        let name = |what, value: &str, example| match id_problem(value) {
            Some(why) => Err(BadName::Name {
                what,
                value: value.to_string(),
                why,
                example,
            }),
            None => Ok(()),
        };
        name("the operator's name", &self.operator, "operator")?;
        for device in &self.devices {
            name("the device id", device, "pi-01")?;
        }
        // One topic level, as the config's [device] topic_prefix.
        name("the topic prefix", &self.prefix, "pinpost")?;
        name(
            "the Home Assistant discovery prefix",
            &self.ha_prefix,
            "homeassistant",
        )?;
        for (what, value) in [
            ("the broker's certificate folder", &self.cert_dir),
            ("the ACL file", &self.acl_path),
        ] {
            let path = |why| BadName::Path {
                what,
                value: value.clone(),
                why,
            };
            if !value.starts_with('/') {
                return Err(path("it is not an absolute path"));
            }
            if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(path(
                    "it holds a space or a control character (a newline would start a new \
                     line of settings)",
                ));
            }
            if value.split('/').any(|part| part == "..") {
                return Err(path("it climbs out with '..'"));
            }
        }
        if self.port == self.cli_port {
            return Err(BadName::SamePort(self.port));
        }
        Ok(())
    }
}

/// The user name Mosquitto gives a pinpost certificate (subject CN only)
/// with `use_subject_as_username` (OpenSSL's RFC 2253 form).
pub(crate) fn subject_name(id: &str) -> String {
    format!("CN={id}")
}

/// A `conf.d` snippet with the agents' and the tools' listeners. The caller
/// has [`Setup::check`]ed it.
pub(crate) fn listener(setup: &Setup) -> String {
    let Setup {
        port,
        cli_port,
        cert_dir,
        acl_path,
        crl,
        ..
    } = setup;
    let revoked = if *crl {
        format!(
            "# Certificates the fleet revoked (pinpost certs revoke) are refused.\n\
             crlfile {cert_dir}/crl.pem\n"
        )
    } else {
        String::new()
    };
    let tls = format!(
        "cafile {cert_dir}/ca.crt\n\
         certfile {cert_dir}/broker.crt\n\
         # Readable by the mosquitto user: Mosquitto reads it after dropping root.\n\
         keyfile {cert_dir}/broker.key\n\
         # Every client shows a certificate signed by ca.crt.\n\
         require_certificate true\n\
         {revoked}\
         # The oldest TLS version accepted (a minimum, not the only one).\n\
         tls_version tlsv1.2\n"
    );
    format!(
        "# pinpost: mutual-TLS listeners (made by `pinpost certs mosquitto`).\n\
         # Install as /etc/mosquitto/conf.d/pinpost.conf and restart Mosquitto.\n\
         \n\
         # Agents. A client is known by its certificate's Common Name (the\n\
         # device id), which the ACL's %u stands for, and that name is also its\n\
         # client id whatever it asks for: no device can take another's session.\n\
         listener {port}\n\
         {tls}\
         use_identity_as_username true\n\
         use_username_as_clientid true\n\
         \n\
         # pinpost publish, subscribe and check (broker.cli_port). Here the\n\
         # certificate's subject (CN=pi-01) is the user name and the client id,\n\
         # so these run beside the agent without taking its place (one at a\n\
         # time per certificate), and still no device can take another's id.\n\
         listener {cli_port}\n\
         {tls}\
         use_subject_as_username true\n\
         use_username_as_clientid true\n\
         \n\
         allow_anonymous false\n\
         acl_file {acl_path}\n\
         # Send small packets at once (a broker-wide setting). Without it, a\n\
         # command can wait 40-90 ms for a delayed ACK before it is sent on.\n\
         set_tcp_nodelay true\n"
    )
}

/// What a device itself publishes under `<prefix>/<id>/` (see
/// [`crate::topics`]): its state, readings, counters, command results and
/// `pinpost check`'s probe. Never `cmd/<name>`: a key lifted from one Pi
/// must not switch that Pi's outputs, nor park a retained message on its
/// command topics.
pub(crate) const DEVICE_WRITES: [&str; 10] = [
    "status",
    "input/#",
    "output/#",
    "sensor/#",
    "stats",
    "check",
    "cmd/+/result",
    // A renewal request (`agent::renewal`); the answer comes from the
    // operator on cert/issued, which the device may only read.
    "cert/request",
    // How its update goes (`agent::update`).
    "update",
    // Which config it runs, and how a signed one went.
    "config/state",
];

/// The ACL: each device reads its own `<prefix>/<its id>/#` and writes only
/// what it publishes there ([`DEVICE_WRITES`]) and its Home Assistant
/// discovery configs; the operator reads everything and may send commands.
/// The caller has [`Setup::check`]ed it.
pub(crate) fn acl(setup: &Setup) -> String {
    let Setup {
        prefix,
        ha_prefix,
        operator,
        port,
        cli_port,
        ..
    } = setup;
    let mut operator_rules = format!(
        "topic read #\ntopic write {prefix}/+/cmd/#\ntopic write {prefix}/+/cert/issued\n\
         topic write {prefix}/+/release\ntopic write {prefix}/release/#\n\
         topic write {prefix}/+/config\n"
    );
    if setup.homeassistant {
        // HA, connected with the operator's certificate, publishes its
        // birth message (and Last Will) there.
        operator_rules.push_str(&format!("topic write {ha_prefix}/status\n"));
    }
    let mut text = format!(
        "# pinpost: who may use which topics (made by `pinpost certs mosquitto`).\n\
         # Install as {acl_path}.\n\
         \n\
         # The operator account (`pinpost certs device {operator}`) reads\n\
         # everything and sends commands to any device: on port {port} by its\n\
         # certificate's name, on port {cli_port} by its subject.\n\
         user {operator}\n\
         {operator_rules}\
         user {operator_subject}\n\
         {operator_rules}",
        acl_path = setup.acl_path,
        operator_subject = subject_name(operator),
    );
    if !setup.devices.is_empty() {
        text.push_str(&format!(
            "\n# Each device's tools on port {cli_port}: read its own subtree, write\n\
             # only what the device itself publishes (never its commands).\n\
             # (Run `pinpost certs mosquitto --force` after adding a device.)\n"
        ));
    }
    for device in setup.devices.iter().filter(|d| *d != operator) {
        text.push_str(&format!(
            "user {}\ntopic read {prefix}/{device}/#\ntopic read {prefix}/release/#\n",
            subject_name(device)
        ));
        for sub in DEVICE_WRITES {
            text.push_str(&format!("topic write {prefix}/{device}/{sub}\n"));
        }
    }
    text.push_str(&format!(
        "\n# Every agent on port {port} (%u is its certificate's CN): reads its own\n\
         # subtree (its commands), writes only what it publishes; commands come\n\
         # from the operator alone.\n\
         pattern read {prefix}/%u/#\n\
         # Package chunks of signed releases, shared by the whole fleet.\n\
         pattern read {prefix}/release/#\n"
    ));
    for sub in DEVICE_WRITES {
        text.push_str(&format!("pattern write {prefix}/%u/{sub}\n"));
    }
    if setup.homeassistant {
        text.push_str(&format!(
            "\n# Home Assistant discovery: each agent writes only its own configs\n\
             # (the node id is its CN), and hears Home Assistant's birth message.\n\
             pattern write {ha_prefix}/+/%u/+/config\n\
             pattern write {ha_prefix}/device/%u/config\n\
             pattern read {ha_prefix}/status\n"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> Setup {
        Setup {
            port: 8883,
            cli_port: 8884,
            prefix: "pinpost".into(),
            ha_prefix: "homeassistant".into(),
            operator: "operator".into(),
            devices: vec!["operator".into(), "pi-01".into()],
            cert_dir: "/etc/mosquitto/certs".into(),
            acl_path: "/etc/mosquitto/pinpost.acl".into(),
            homeassistant: false,
            crl: false,
        }
    }

    #[test]
    fn both_listeners_check_the_revocation_list_once_there_is_one() {
        assert!(!listener(&setup()).contains("crlfile"));
        let text = listener(&Setup {
            crl: true,
            ..setup()
        });
        assert_eq!(
            text.matches("crlfile /etc/mosquitto/certs/crl.pem\n")
                .count(),
            2,
            "{text}"
        );
    }

    #[test]
    fn home_assistant_rules_are_added_only_when_asked_and_stay_per_device() {
        assert!(!acl(&setup()).contains("homeassistant"));
        let text = acl(&Setup {
            homeassistant: true,
            ..setup()
        });
        for line in [
            "pattern write homeassistant/+/%u/+/config",
            "pattern write homeassistant/device/%u/config",
            "pattern read homeassistant/status",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        assert_eq!(
            text.lines()
                .filter(|l| *l == "topic write homeassistant/status")
                .count(),
            2,
            "the operator, on both ports, for HA's birth message:\n{text}"
        );
    }

    #[test]
    fn the_listeners_require_certificates_and_bind_client_ids_to_them() {
        let text = listener(&setup());
        for line in [
            "listener 8883",
            "listener 8884",
            "cafile /etc/mosquitto/certs/ca.crt",
            "require_certificate true",
            "use_identity_as_username true",
            "use_subject_as_username true",
            "tls_version tlsv1.2",
            "acl_file /etc/mosquitto/pinpost.acl",
            "set_tcp_nodelay true",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        let bound = text
            .lines()
            .filter(|l| *l == "use_username_as_clientid true")
            .count();
        assert_eq!(bound, 2, "both listeners bind the client id:\n{text}");
    }

    #[test]
    fn the_acl_confines_devices_to_their_subtree() {
        let text = acl(&setup());
        for line in [
            "pattern read pinpost/%u/#",
            "pattern write pinpost/%u/status",
            "pattern write pinpost/%u/cmd/+/result",
            "user operator",
            "user CN=operator",
            "topic write pinpost/+/cmd/#",
            "user CN=pi-01",
            "topic read pinpost/pi-01/#",
            "topic write pinpost/pi-01/output/#",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        // No device may write its own commands, on either port: the
        // operator's rules are the only ones reaching cmd/<name>.
        let mut user = "";
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("user ") {
                user = name;
            }
            let device_rule = line.starts_with("pattern ") || user == "CN=pi-01";
            let topic = line.rsplit(' ').next().unwrap_or_default();
            let reaches_cmd = topic.ends_with("%u/#")
                || topic.ends_with("pi-01/#")
                || (topic.contains("/cmd/") && !topic.ends_with("/cmd/+/result"));
            assert!(
                !(device_rule && line.contains(" write ") && reaches_cmd),
                "{line:?} lets a device write its commands:\n{text}"
            );
            assert!(!line.contains("readwrite"), "{line:?}:\n{text}");
        }
        assert_eq!(
            text.lines().filter(|l| *l == "user CN=operator").count(),
            1,
            "the operator is not also a device:\n{text}"
        );
    }

    #[test]
    fn hostile_names_are_refused_before_they_reach_a_file() {
        let hostile = [
            "pi-01\ntopic readwrite #",
            "pi-01\r",
            "#",
            "pi+",
            "../ca",
            "a/b",
            "%u",
            "two words",
            "",
        ];
        for bad in hostile {
            let mut s = setup();
            s.devices.push(bad.into());
            assert!(
                matches!(s.check(), Err(BadName::Name { .. })),
                "device {bad:?}"
            );
            let mut s = setup();
            s.operator = bad.into();
            assert!(s.check().is_err(), "operator {bad:?}");
            let mut s = setup();
            s.prefix = bad.into();
            assert!(s.check().is_err(), "prefix {bad:?}");
            let mut s = setup();
            s.ha_prefix = bad.into();
            assert!(s.check().is_err(), "HA prefix {bad:?}");
        }
        for bad in [
            "/etc/certs\nlistener 1883",
            "/etc/my certs",
            "relative/certs",
            "/etc/../tmp",
        ] {
            let mut s = setup();
            s.cert_dir = bad.into();
            let err = s.check().unwrap_err();
            assert!(matches!(err, BadName::Path { .. }), "{bad:?}: {err}");
        }
        let mut s = setup();
        s.cli_port = 8883;
        assert_eq!(s.check(), Err(BadName::SamePort(8883)));
        let err = {
            let mut s = setup();
            s.devices.push("pi-01\ntopic readwrite #".into());
            s.check().unwrap_err().to_string()
        };
        assert!(err.contains("a newline would start a new line"), "{err}");
    }
}
