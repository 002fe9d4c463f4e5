//! Whole-config tests: a text in, a checked config or an error's exact
//! words out. Each section's own tests sit beside its checks.

use std::path::Path;
use std::time::Duration;

use super::build::build;
use super::{Config, ConfigError, Overrides};

fn parse(text: &str) -> Result<Config, ConfigError> {
    build(
        text,
        Some(Path::new("/etc/pinpost/config.toml")),
        &Overrides::default(),
    )
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_empty_file_gives_working_defaults() {
    let c = parse("[device]\nid = \"pi-01\"\n").unwrap();
    assert_eq!(c.device.topic_prefix, "pinpost");
    assert_eq!(c.broker.host, "localhost");
    assert_eq!(c.broker.port, 1883);
    assert_eq!(c.broker.keep_alive, Duration::from_secs(60));
    assert_eq!(c.reconnect.initial, Duration::from_secs(1));
}

#[test]
fn tls_changes_the_default_port() {
    let c = parse("[device]\nid = \"a\"\n[broker.tls]\n").unwrap();
    assert_eq!(c.broker.port, 8883);
}

#[test]
fn an_unknown_key_names_file_line_and_allowed_keys() {
    let e = error("[device]\nid = \"a\"\n\n[broker]\nhots = \"x\"\n");
    assert!(e.contains("/etc/pinpost/config.toml line 5"), "{e}");
    assert!(e.contains("unknown field `hots`"), "{e}");
    assert!(e.contains("`host`"), "{e}");
}

#[test]
fn a_wrong_type_names_the_key() {
    let e = error("[broker]\nport = \"8883\"\n");
    assert!(e.contains("line 2"), "{e}");
    assert!(e.contains("broker.port"), "{e}");
}

#[test]
fn an_out_of_range_port_says_what_is_allowed() {
    let e = error("[device]\nid = \"a\"\n[broker]\nport = 70000\n");
    assert_eq!(
        e,
        "/etc/pinpost/config.toml line 4: broker.port: 70000 is not a port; allowed: 1 to 65535"
    );
}

#[test]
fn wildcards_and_slashes_in_ids_are_refused() {
    for bad in ["pi+1", "pi#", "site/pi", "pi 1", ""] {
        let e = error(&format!("[device]\nid = {bad:?}\n"));
        assert!(e.contains("line 2: device.id"), "{bad}: {e}");
    }
    let e = error("[device]\nid = \"a\"\ntopic_prefix = \"home/pi\"\n");
    assert!(e.contains("line 3: device.topic_prefix"), "{e}");
    assert!(e.contains("contains '/'"), "{e}");
    // The level the fleet's release packages are published under.
    let e = error("[device]\nid = \"release\"\n");
    assert!(
        e.contains("line 2: device.id") && e.contains("release packages"),
        "{e}"
    );
    let e = error("[device]\nid = \"a\"\n[update]\nrelease_key = \"\"\n");
    assert!(
        e.contains("line 4: update.release_key") && e.contains("is empty"),
        "{e}"
    );
}

#[test]
fn a_bad_duration_shows_how_to_write_one() {
    let e = error("[device]\nid = \"a\"\n[reconnect]\ninitial = \"soon\"\n");
    assert!(e.contains("line 4: reconnect.initial"), "{e}");
    assert!(e.contains("\"500ms\""), "{e}");
}

#[test]
fn a_missing_certificate_file_names_key_line_and_path() {
    let e = error("[device]\nid = \"a\"\n[broker.tls]\nca_file = \"certs/ca.crt\"\n");
    assert!(e.contains("line 4: broker.tls.ca_file"), "{e}");
    assert!(e.contains("/etc/pinpost/certs/ca.crt: no such file"), "{e}");
}

#[test]
fn plain_mqtt_leaves_loopback_only_when_allowed() {
    let e = error("[device]\nid = \"a\"\n[broker]\nhost = \"192.168.1.5\"\n");
    assert!(e.contains("line 4: broker.host"), "{e}");
    assert!(e.contains("allow_insecure"), "{e}");
    let ok =
        parse("[device]\nid = \"a\"\n[broker]\nhost = \"192.168.1.5\"\nallow_insecure = true\n");
    assert!(ok.is_ok());
    assert!(parse("[device]\nid = \"a\"\n[broker]\nhost = \"127.0.0.2\"\n").is_ok());
}

#[test]
fn insecure_needs_a_ca_named_explicitly() {
    let insecure = Overrides {
        skip_name_check: true,
        ..Overrides::default()
    };
    let build_with = |text: &str| build(text, None, &insecure);
    let e = build_with("[device]\nid = \"a\"\n[broker.tls]\n").unwrap_err();
    let e = e.to_string();
    assert!(
        e.starts_with("flag --insecure: broker.tls.ca_file: is not set"),
        "{e}"
    );
    assert!(e.contains("public CAs"), "{e}");
    let e = build_with("[device]\nid = \"a\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not use TLS at all"), "{e}");
    let ca = tempfile::NamedTempFile::new().unwrap();
    let named = format!(
        "[device]\nid = \"a\"\n[broker.tls]\nca_file = {:?}\n",
        ca.path()
    );
    let tls = build_with(&named).unwrap().broker.tls.unwrap();
    assert!(tls.skip_name_check);
}

#[test]
fn a_flag_error_names_the_flag() {
    let overrides = Overrides {
        tls_version: Some("tlsv1.1".into()),
        ..Overrides::default()
    };
    let e = build("[device]\nid = \"a\"\n", None, &overrides)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("flag --tls-version: broker.tls.min_version"),
        "{e}"
    );
}

#[test]
fn flags_win_over_the_file() {
    let overrides = Overrides {
        hosts: vec!["127.0.0.9".into()],
        port: Some(1999),
        ..Overrides::default()
    };
    let c = build(
        "[device]\nid = \"a\"\n[broker]\nhost = \"x\"\n",
        None,
        &overrides,
    )
    .unwrap();
    assert_eq!((c.broker.host.as_str(), c.broker.port), ("127.0.0.9", 1999));
}

#[test]
fn checked_elsewhere_the_devices_broker_files_are_not_opened() {
    // A Pi's config as the operator's laptop signs it (release
    // sign-config): its TLS files and password file are on the Pi, and its
    // key never leaves it.
    let text = "[device]\nid = \"pi-01\"\n[broker]\nusername = \"pi-01\"\n\
                password_file = \"/nonexistent/pinpost/password\"\n[broker.tls]\n\
                ca_file = \"/nonexistent/pinpost/ca.crt\"\n\
                cert_file = \"/nonexistent/pinpost/pi-01.crt\"\n\
                key_file = \"/nonexistent/pinpost/pi-01.key\"\n";
    let e = error(text);
    assert!(
        e.contains("broker.tls.cert_file: cannot open /nonexistent/pinpost/pi-01.crt"),
        "on the device the files are opened: {e}"
    );
    let elsewhere = Overrides {
        elsewhere: true,
        ..Overrides::default()
    };
    let c = build(text, Some(Path::new("/tmp/pi-01.toml")), &elsewhere).unwrap();
    let tls = c.broker.tls.unwrap();
    assert_eq!(
        tls.key_file.unwrap().path,
        Path::new("/nonexistent/pinpost/pi-01.key")
    );
    let credentials = c.broker.credentials.unwrap();
    assert_eq!(
        credentials.password_file.as_deref(),
        Some(Path::new("/nonexistent/pinpost/password"))
    );
    // Everything else is still the device's checker's.
    let e = build(
        &text.replace("id = \"pi-01\"", "id = \"pi 01\""),
        None,
        &elsewhere,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("device.id"), "{e}");
}

#[test]
fn a_password_needs_a_username() {
    let e = error("[device]\nid = \"a\"\n[broker]\npassword = \"x\"\n");
    assert!(e.contains("broker.username"), "{e}");
}

#[test]
fn passwords_never_show_in_debug_output() {
    let c = parse("[device]\nid = \"a\"\n[broker]\nusername = \"u\"\npassword = \"hunter2\"\n")
        .unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
}

/// deploy/config.example.toml is what people copy: it must stay valid.
#[test]
fn the_example_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    for f in ["ca.crt", "pi-01.crt", "pi-01.key"] {
        std::fs::write(dir.path().join("certs").join(f), "").unwrap();
    }
    let text = include_str!("../../deploy/config.example.toml")
        .replace("/etc/pinpost/", &format!("{}/", dir.path().display()));
    let c = build(
        &text,
        Some(&dir.path().join("config.toml")),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.device.id, "pi-01");
    assert_eq!(c.broker.port, 8883);
    assert!(c.broker.tls.is_some());
}

/// Enum-like keys are read into enums once; a word none of them takes is
/// still refused with every allowed word and what it means.
#[test]
fn a_bad_word_in_an_enum_like_key_lists_the_words_allowed() {
    let at = "/etc/pinpost/config.toml line";
    for (section, expected) in [
        (
            "[board]\nkind = \"pi\"\n",
            "4: board.kind: \"pi\" is not a board; allowed: \"auto\" (a Raspberry Pi when on \
             one), \"rppal\" (its GPIO registers), \"cdev\" (the kernel's GPIO character \
             device) or \"sim\"",
        ),
        (
            "[[input]]\nname = \"b\"\npin = 17\npull = \"sideways\"\n",
            "6: input[0].pull: \"sideways\" is not a pull; allowed: \"up\", \"down\" or \"none\"",
        ),
        (
            "[outbox]\npolicy = \"drop_all\"\n",
            "4: outbox.policy: \"drop_all\" is not a policy; allowed: \"drop_oldest\" (keep the \
             newest readings) or \"drop_newest\" (keep what is already queued)",
        ),
        (
            "[broker]\nprofile = \"azure\"\n",
            "4: broker.profile: \"azure\" is not a profile; allowed: \"mqtt\" (any MQTT broker, \
             the default) or \"aws-iot\" (AWS IoT Core)",
        ),
        (
            "[broker.tls]\nmin_version = \"1.1\"\n",
            "4: broker.tls.min_version: \"1.1\" is not a TLS version pinpost speaks; allowed: \
             \"1.2\" or \"1.3\"",
        ),
        (
            "[[sensor]]\nname = \"t\"\nkind = \"dht22\"\n",
            "5: sensor[0].kind: \"dht22\" is not a sensor kind; allowed: \"file\", \"ds18b20\", \
             \"cpu_temperature\", \"system\", \"bme280\", \"bmp280\", \"ads1115\", \"sht3x\", \
             \"bh1750\", \"ina219\", \"scd4x\" or \"sim\"",
        ),
        (
            "[homeassistant]\nform = \"yaml\"\n",
            "4: homeassistant.form: \"yaml\" is not a discovery form; allowed: \"entities\" (one \
             config per entity, any Home Assistant since 2021) or \"device\" (one config for the \
             whole device, Home Assistant 2024.12 and newer)",
        ),
    ] {
        let e = error(&format!("[device]\nid = \"a\"\n{section}"));
        assert_eq!(e, format!("{at} {expected}"));
    }
}

#[test]
fn a_name_of_only_dots_is_refused_as_it_would_name_a_folder() {
    for name in [".", "..", "..."] {
        let e = error(&format!("[[input]]\nname = \"{name}\"\npin = 17\n"));
        assert!(
            e.contains("input[0].name") && e.contains("is only dots"),
            "{e}"
        );
    }
    parse("[[input]]\nname = \"a.b\"\npin = 17\n").unwrap();
}
