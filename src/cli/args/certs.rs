//! The flags of `pinpost certs` and `pinpost enroll`: making, signing,
//! revoking and checking a fleet's certificates.

use std::path::PathBuf;

use std::time::Duration;

use clap::Args;

use super::ConnectionArgs;

/// A certificate's life: a humantime duration of a minute to ten years.
pub(crate) fn life(text: &str) -> Result<Duration, String> {
    let life = humantime::parse_duration(text).map_err(|e| format!("{e} (say e.g. \"90d\")"))?;
    if life < Duration::from_secs(60) || life > Duration::from_secs(3650 * 86_400) {
        return Err("a certificate must last between 1m and 3650d".into());
    }
    Ok(life)
}

pub(super) const ENROLL_HELP: &str = "Makes the key the config's [broker.tls] key_file names (mode 0600; \
    owned by the service user `pinpost` when run as root), unless one is there, and beside it \
    <id>.csr, a request for a certificate for [device] id. The key never leaves this device: \
    copy only the request to the laptop that holds the CA, sign it there, and bring back \
    ca.crt and <id>.crt.\n\n\
    Examples:\n  \
    sudo pinpost enroll                          # /etc/pinpost/config.toml\n  \
    pinpost certs sign pi-01.csr                 # on the laptop: certs/devices/pi-01/\n  \
    deploy/push.sh pi@pi-01.local aarch64-unknown-linux-gnu --certs certs/devices/pi-01";

/// `pinpost enroll`.
#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// Config file to read instead of the usual places.
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// RSA 2048 instead of ECDSA P-256, for old brokers.
    #[arg(long)]
    pub(crate) rsa: bool,
    /// Make a new key even though one is there (its certificate stops working).
    #[arg(long)]
    pub(crate) force: bool,
}

/// `pinpost certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub(crate) what: CertsCommand,
    /// Folder the files are written to (and the CA read from).
    #[arg(long, global = true, value_name = "DIR", default_value = "certs")]
    pub(crate) dir: PathBuf,
    /// Replace files that exist (certificates signed by a replaced CA stop working).
    #[arg(long, global = true)]
    pub(crate) force: bool,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum CertsCommand {
    /// A new certificate authority: ca.crt (share it) and private/ca.key (keep it secret).
    Ca {
        /// The CA's Common Name.
        #[arg(long, default_value = "pinpost CA")]
        name: String,
        /// RSA 2048 instead of ECDSA P-256, for old brokers.
        #[arg(long)]
        rsa: bool,
    },
    /// The broker's certificate, valid for every --host it is reached by.
    Broker {
        /// An IP address or DNS name clients use for the broker (repeat for each).
        #[arg(long = "host", value_name = "HOST", required = true)]
        hosts: Vec<String>,
        /// RSA 2048 instead of ECDSA P-256.
        #[arg(long)]
        rsa: bool,
    },
    /// A client certificate for one device (its id becomes the Common Name),
    /// in devices/<id>/ with ca.crt: exactly what that device gets.
    Device {
        /// The device id, as in the config's [device] id.
        id: String,
        /// RSA 2048 instead of ECDSA P-256.
        #[arg(long)]
        rsa: bool,
    },
    /// Mosquitto settings: mutual-TLS listeners and an ACL confining each device.
    Mosquitto {
        /// The agents' port.
        #[arg(long, default_value_t = 8883)]
        port: u16,
        /// The port of pinpost publish, subscribe and check (broker.cli_port).
        #[arg(long, default_value_t = 8884)]
        cli_port: u16,
        /// The devices' topic prefix ([device] topic_prefix).
        #[arg(long, default_value = "pinpost")]
        prefix: String,
        /// Home Assistant's discovery prefix: each device may publish its own
        /// discovery configs under it.
        #[arg(long, default_value = "homeassistant")]
        ha_prefix: String,
        /// The account that reads everything and sends commands.
        #[arg(long, default_value = "operator")]
        operator: String,
        /// Where the broker keeps ca.crt, broker.crt and broker.key.
        #[arg(long, value_name = "DIR", default_value = "/etc/mosquitto/certs")]
        cert_dir: String,
        /// Also let each agent announce itself to Home Assistant (discovery under
        /// homeassistant/, prefix `homeassistant`) and hear HA's birth message, and
        /// let the operator (whose certificate HA uses) publish that message.
        #[arg(long)]
        homeassistant: bool,
    },
    /// Sign a device's certificate request (made by `pinpost enroll` on
    /// the device) into devices/<id>/: ca.crt, <id>.crt and the request.
    Sign {
        /// The request, <id>.csr.
        request: PathBuf,
        /// The operator's account name, which no device may have.
        #[arg(long, default_value = "operator")]
        operator: String,
        /// How long the certificate lasts, e.g. "90d" (a device renews it
        /// over MQTT before it ends: `certs renew`).
        #[arg(long, value_name = "DURATION", default_value = "825d", value_parser = life)]
        valid_for: Duration,
    },
    /// Sign the renewal requests devices publish over MQTT (each device asks
    /// `broker.tls.renew_before` ahead of its certificate's end) and publish
    /// the certificates back, retained. One pass over what waits, or
    /// --watch to keep serving. Connects as the operator, from this
    /// folder's ca.crt and devices/<operator>/ unless flags say otherwise;
    /// use the tools' port (-p 8884), where it does not take the place of
    /// another operator connection (Home Assistant's).
    #[command(disable_help_flag = true)]
    Renew {
        #[command(flatten)]
        connection: Box<ConnectionArgs>,
        /// Keep running and answer requests as they come.
        #[arg(long)]
        watch: bool,
        /// How long each new certificate lasts.
        #[arg(long, value_name = "DURATION", default_value = "825d", value_parser = life)]
        valid_for: Duration,
        /// The operator's account name (its folder under devices/).
        #[arg(long, default_value = "operator")]
        operator: String,
        /// The devices' topic prefix [default: the config's, else pinpost].
        #[arg(long)]
        prefix: Option<String>,
    },
    /// The release key: private/release.key (keep it secret) signs the
    /// packages and configs devices apply; release.pub goes to every Pi.
    ReleaseKey,
    /// Revoke a device's certificate: the CA signs the fleet's revocation
    /// list (broker/crl.pem), and the broker's listener and ACL are written
    /// again to refuse it.
    Revoke {
        /// The device id.
        id: String,
    },
    /// Replace the CA without a day on which broker and devices disagree:
    /// a new CA, both trusted during the change-over, then --finish.
    RotateCa {
        /// The new CA's Common Name (default: "pinpost CA <today>").
        #[arg(long)]
        name: Option<String>,
        /// RSA 2048 instead of ECDSA P-256.
        #[arg(long)]
        rsa: bool,
        /// End the change-over: the new CA alone, the old one's key deleted.
        #[arg(long)]
        finish: bool,
    },
    /// Check that a folder holds exactly what one device gets: ca.crt,
    /// <id>.crt and <id>.key, nothing else, the key <id>.crt's (install.sh
    /// runs this before installing).
    Verify {
        /// The folder to check, like certs/devices/pi-01.
        folder: PathBuf,
        /// The device id the key must belong to.
        #[arg(long, required_unless_present = "config")]
        device: Option<String>,
        /// Or the config whose [device] id that is (only that is read: the
        /// files it names need not exist yet).
        #[arg(long, value_name = "FILE", conflicts_with = "device")]
        config: Option<PathBuf>,
        /// The key this device already holds (made by `pinpost enroll`),
        /// when the folder brings only ca.crt and <id>.crt.
        #[arg(long, value_name = "FILE")]
        held_key: Option<PathBuf>,
    },
}
