//! The command line: what each subcommand and flag is, with the help text
//! people read. Flags follow mosquitto_pub/mosquitto_sub where those exist,
//! so field habits carry over. This module says what the commands take, not
//! how they work.

use std::path::PathBuf;
use std::time::Duration;

mod certs;
pub(crate) mod release;
pub(crate) use certs::CertsCommand;
use certs::ENROLL_HELP;
pub use certs::{CertsArgs, EnrollArgs};
use release::RELEASE_HELP;
pub use release::ReleaseArgs;
pub(crate) use release::ReleaseCommand;

use clap::{ArgAction, Args, Parser};

use super::values::{BoardArg, PullArg, TlsVersionArg, seconds};
use crate::config::Overrides;
pub use crate::demo::DemoArgs;

/// The whole command line: `pinpost <subcommand> [flags]`.
#[derive(Debug, Parser)]
#[command(
    name = "pinpost",
    version,
    about = "Raspberry Pi GPIO and sensors over MQTT with mutual TLS",
    long_about = "Raspberry Pi GPIO and sensors over MQTT with mutual TLS.\n\n\
        Reads the device's config from --config, $PINPOST_CONFIG, /etc/pinpost/config.toml \
        or ~/.config/pinpost/config.toml (the first that exists), so on a deployed Pi \
        `pinpost publish -t test -m hi` uses the Pi's own broker and certificates.",
    after_help = "Exit codes: 0 done; 1 other failure (check: a problem marked \u{2717}; sensors: a sensor \
        could not be read); 2 bad usage; 3 bad config or \
        certificate file; 4 could not connect; 5 connected but not confirmed by the broker; \
        6 GPIO problem (not a Pi, permissions, pin in use); 27 subscribe -W ran out."
)]
pub struct Cli {
    #[command(subcommand)]
    /// The subcommand and its flags.
    pub command: Subcommand,
}

/// What to do; each variant's flags are its `*Args`.
#[derive(Debug, clap::Subcommand)]
pub enum Subcommand {
    /// Run the agent: publish inputs, carry out commands (what the systemd unit runs).
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Publish one message (or one per line) and wait for the broker to confirm it.
    #[command(disable_help_flag = true, after_help = PUBLISH_EXAMPLES)]
    Publish(PublishArgs),
    /// Print messages from the broker, like mosquitto_sub.
    #[command(disable_help_flag = true, after_help = SUBSCRIBE_EXAMPLES)]
    Subscribe(SubscribeArgs),
    /// Read, drive or watch one pin locally, without a broker (field checks).
    Gpio(GpioArgs),
    /// Make a CA, broker and device certificates, and Mosquitto settings for them.
    #[command(after_help = CERTS_HELP)]
    Certs(CertsArgs),
    /// Sign a package for the fleet with the release key, or check what was signed.
    #[command(after_help = RELEASE_HELP)]
    Release(ReleaseArgs),
    /// On the device: make its key (it never leaves) and a certificate request to sign.
    #[command(after_help = ENROLL_HELP)]
    Enroll(EnrollArgs),
    /// Check the config, certificates and keys, then connect and send a probe.
    #[command(disable_help_flag = true, after_help = CHECK_HELP)]
    Check(CheckArgs),
    /// Read every configured sensor once and print what it says (field checks).
    #[command(after_help = SENSORS_HELP)]
    Sensors(SensorsArgs),
    /// Print the Home Assistant discovery messages the config produces (sends nothing).
    #[command(after_help = HA_HELP)]
    Ha(HaArgs),
    /// As root, from pinpost-update.service: install a release the agent fetched; roll it back if unhealthy.
    #[command(name = "install-update", after_help = INSTALL_UPDATE_HELP)]
    InstallUpdate(InstallUpdateArgs),
    /// See pinpost's whole job on this machine: a broker, the agent on a simulated board, a live view.
    #[command(after_help = DEMO_HELP)]
    Demo(DemoArgs),
}

const DEMO_HELP: &str = "Everything runs in this process on 127.0.0.1: a throwaway CA and \
    certificates, a broker with mutual TLS, the agent on a simulated board with a sensor, and \
    this view of every message, with a command to the relay every few seconds.\n\n\
    Examples:\n  \
    cargo run --release -- demo                   # until Ctrl-C\n  \
    pinpost demo --duration 10s                   # exit 0 if every stage was seen\n  \
    pinpost demo --config                         # print the agent's config first\n  \
    pinpost demo --broker 192.168.1.5:8883 --cafile ca.crt --cert pi-01.crt --key pi-01.key --id pi-01";

const INSTALL_UPDATE_HELP: &str = "Run by pinpost-update.service (root) when the agent has \
    fetched and checked a release (<spool>/update/ready/), and once at every boot. It copies the \
    package out of the agent's folder, checks the manifest's signature with [update] release_key \
    and the package's size and SHA-256 itself, keeps the running package (repacked), installs \
    the new one with dpkg and restarts the agent. If the agent does not connect and deliver \
    within [update] health_timeout, the previous package goes back and that version is never \
    tried again here. How it went: [update] helper_dir/outcome.json, which the agent reports on \
    its update topic. A power cut at any step is finished or undone at the next boot.\n\n\
    Examples:\n  \
    sudo systemctl start pinpost-update.service     # what the path unit does\n  \
    journalctl -u pinpost-update.service             # what it did";

/// `pinpost install-update`.
#[derive(Debug, Args)]
pub struct InstallUpdateArgs {
    /// Config file to read instead of the usual places.
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
}

const HA_HELP: &str = "Prints each retained discovery message the agent publishes with \
    [homeassistant] enabled = true: the topic, then the JSON. With the agent's state directory \
    readable, also the empty messages that remove entities taken out of the config since they \
    were announced. Notes (sensors left out, messages too large) go to stderr.\n\n\
    Examples:\n  \
    pinpost ha\n  \
    pinpost ha --config pi-01.toml | less";

/// `pinpost ha`.
#[derive(Debug, Args)]
pub struct HaArgs {
    /// Config file to read instead of the usual places.
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
}

const SENSORS_HELP: &str = "Reads each [[sensor]] of the config once, with its timeout and retries, \
    and prints a table. Exit 0 when every sensor answered, else 1. With --scan, needs no \
    config: lists the 1-Wire devices and the I2C addresses that answer, names the likely chips \
    and prints the [[sensor]] sections to paste.\n\n\
    Examples:\n  \
    pinpost sensors\n  \
    pinpost sensors --config pi-01.toml\n  \
    pinpost sensors --scan";

/// `pinpost sensors`.
#[derive(Debug, Args)]
pub struct SensorsArgs {
    /// Config file to read instead of the usual places.
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Find what is wired instead (1-Wire devices, I2C addresses), without a config.
    #[arg(long, conflicts_with = "config")]
    pub(crate) scan: bool,
    /// Where the kernel lists 1-Wire devices (for --scan).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/sys/bus/w1/devices",
        hide = true
    )]
    pub(crate) w1_dir: PathBuf,
    /// Where the I2C buses' device files are (for --scan).
    #[arg(long, value_name = "DIR", default_value = "/dev", hide = true)]
    pub(crate) dev_dir: PathBuf,
    /// Log every step.
    #[arg(short = 'd', long)]
    pub(crate) debug: bool,
}

const CERTS_HELP: &str = "A fleet in a few commands (files land in ./certs):\n  \
    pinpost certs ca\n  \
    pinpost certs broker --host 192.168.1.5 --host broker.local\n  \
    pinpost certs device operator       # yourself: reads everything, sends commands\n  \
    pinpost certs mosquitto\n  \
    pinpost certs sign pi-01.csr        # each Pi's request, from `pinpost enroll` on the Pi\n\n\
    Later: certs revoke pi-01 (a stolen Pi), certs rotate-ca (a new CA, both trusted until \
    --finish). `certs device pi-01` makes a device's key here instead (labs, the demo). \
    Keys are written mode 0600 and never replaced without --force.";

const CHECK_HELP: &str = "Each step prints \u{2713} (fine), ! (works, but fix it) or \u{2717} (will fail) with \
    what to do. Exit 0 when nothing is \u{2717}, else 1.\n\n\
    Examples:\n  \
    pinpost check                                   # the Pi's own config\n  \
    pinpost check --config pi-01.toml --offline     # files only, no broker";

/// `pinpost check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
    /// Check the files only; do not connect.
    #[arg(long)]
    pub(crate) offline: bool,
}

const RUN_HELP: &str = "Topics (prefix/id from the config):\n  \
    <prefix>/<id>/status               online / offline (retained, offline is the Last Will)\n  \
    <prefix>/<id>/input/<name>         {\"value\":true,\"ts\":\"...\",\"seq\":N} (retained)\n  \
    <prefix>/<id>/output/<name>        the output's state (retained)\n  \
    <prefix>/<id>/cmd/<name>           on | off | toggle | {\"action\":\"pulse\",\"ms\":500,\"id\":\"a1\"}\n  \
    <prefix>/<id>/cmd/<name>/result    {\"id\":\"a1\",\"ok\":true} or {\"ok\":false,\"error\":\"...\"}\n  \
    <prefix>/<id>/sensor/<name>        {\"value\":21.4,\"unit\":\"...\",\"ts\":\"...\",\"seq\":N}\n  \
    <prefix>/<id>/stats                outbox and link counters (retained)\n\n\
    SIGTERM or Ctrl-C: outputs go to their safe_state, status goes offline, exit 0.";

const PUBLISH_EXAMPLES: &str = "Examples:\n  \
    pinpost publish -t test -m hello                # with the Pi's own config\n  \
    pinpost publish -h 192.168.1.5 -t test -m hi --cafile ca.crt --cert pi.crt --key pi.key\n  \
    sensors | pinpost publish -t pi/log -l          # one message per line";

const SUBSCRIBE_EXAMPLES: &str = "Examples:\n  \
    pinpost subscribe -t 'pinpost/#' -v\n  \
    pinpost subscribe -t pinpost/pi-01/status -C 1 -W 10";

impl Subcommand {
    /// Whether `-d` was given: log every step.
    pub fn debug(&self) -> bool {
        match self {
            Subcommand::Run(a) => a.debug,
            Subcommand::Publish(a) => a.connection.debug,
            Subcommand::Subscribe(a) => a.connection.debug,
            Subcommand::Gpio(a) => a.debug,
            Subcommand::Certs(a) => {
                matches!(&a.what, CertsCommand::Renew { connection, .. } if connection.debug)
            }
            Subcommand::Enroll(_) | Subcommand::Release(_) => false,
            Subcommand::Check(a) => a.connection.debug,
            Subcommand::Sensors(a) => a.debug,
            Subcommand::Ha(_) | Subcommand::InstallUpdate(_) => false,
            Subcommand::Demo(a) => a.debug,
        }
    }
}

/// `pinpost run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file to read instead of the usual places.
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Override [board] kind: auto, rppal, cdev or sim.
    #[arg(long, value_name = "KIND")]
    pub(crate) board: Option<BoardArg>,
    /// Log every step (also: RUST_LOG=debug).
    #[arg(short = 'd', long)]
    pub(crate) debug: bool,
}

/// `pinpost gpio`.
#[derive(Debug, Args)]
pub struct GpioArgs {
    #[command(subcommand)]
    pub(crate) action: GpioAction,
    /// Which board: auto (rppal where /dev/gpiomem exists, else cdev),
    /// rppal, cdev (the kernel's GPIO character device) or sim.
    #[arg(long, global = true, default_value = "auto")]
    pub(crate) board: BoardArg,
    /// With cdev: the GPIO chip (gpiochip0, /dev/gpiochip0 or its label)
    /// [default: the Raspberry Pi's own].
    #[arg(long, global = true, value_name = "CHIP")]
    pub(crate) chip: Option<String>,
    /// Pull resistor for read and watch: up, down or none.
    #[arg(long, global = true, default_value = "none")]
    pub(crate) pull: PullArg,
    /// Log every step.
    #[arg(short = 'd', long, global = true)]
    pub(crate) debug: bool,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum GpioAction {
    /// Print a pin's level: high or low.
    Read {
        /// BCM GPIO number (GPIO17 is 17).
        pin: u8,
    },
    /// Drive a pin high or low. Through rppal the level stays after
    /// pinpost exits. Through the kernel's character device (cdev) pinpost
    /// holds the line until Ctrl-C or --for ends, as gpioset does: the
    /// kernel may return a released line to input (Debian's Pi kernel does).
    Write {
        pin: u8,
        /// on, off, high, low, 1 or 0.
        level: String,
        /// Hold the line this long, then release it (cdev): "5s", "1m".
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        hold: Option<std::time::Duration>,
    },
    /// Print each change of a pin until Ctrl-C (or -C changes).
    Watch {
        pin: u8,
        /// Exit after this many changes.
        #[arg(short = 'C', long, value_name = "COUNT")]
        count: Option<u64>,
    },
}

/// How to reach the broker: each flag overrides the config file.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnectionArgs {
    /// Print help (-h is the host, as in mosquitto_pub).
    #[arg(long, action = ArgAction::Help)]
    pub(crate) help: Option<bool>,
    /// Config file to read instead of the usual places.
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Broker host name or IP address, optionally with ":port". Give it
    /// more than once for several brokers (a cluster or a pair), tried in
    /// turn until one answers.
    #[arg(short = 'h', long, value_name = "HOST")]
    pub(crate) host: Vec<String>,
    /// Broker port [default: 8883 with TLS, 1883 without].
    #[arg(short = 'p', long)]
    pub(crate) port: Option<u16>,
    /// MQTT client id [default: <device id>-pub-<pid> or -sub-<pid>].
    #[arg(short = 'i', long = "id", value_name = "ID")]
    pub(crate) client_id: Option<String>,
    /// Username for the broker.
    #[arg(short = 'u', long)]
    pub(crate) username: Option<String>,
    /// Password for the broker.
    #[arg(short = 'P', long = "pw", value_name = "PASSWORD")]
    pub(crate) password: Option<String>,
    /// CA certificate (PEM) that signed the broker's certificate. Turns on TLS.
    #[arg(long, value_name = "FILE")]
    pub(crate) cafile: Option<PathBuf>,
    /// This device's certificate (PEM) for mutual TLS. Turns on TLS.
    #[arg(long, value_name = "FILE")]
    pub(crate) cert: Option<PathBuf>,
    /// This device's private key (PEM: PKCS#1, PKCS#8 or SEC1).
    #[arg(long, value_name = "FILE")]
    pub(crate) key: Option<PathBuf>,
    /// Lowest TLS version to use.
    #[arg(long, value_name = "VERSION")]
    pub(crate) tls_version: Option<TlsVersionArg>,
    /// Use TLS with the system's CA certificates (no --cafile).
    #[arg(long)]
    pub(crate) tls: bool,
    /// Do not check the broker certificate's name (the chain is still checked). For debugging only.
    #[arg(long)]
    pub(crate) insecure: bool,
    /// Accept a broker certificate that names its host only in the Common Name.
    #[arg(long)]
    pub(crate) legacy_common_name: bool,
    /// Allow plain MQTT (no TLS) to a host other than this machine.
    #[arg(long)]
    pub(crate) allow_insecure: bool,
    /// Keep-alive interval in seconds (0 turns it off).
    #[arg(short = 'k', long = "keepalive", value_name = "SECONDS", value_parser = seconds)]
    pub(crate) keep_alive: Option<Duration>,
    /// How long to wait for the connection, e.g. "5s".
    #[arg(long, value_name = "DURATION")]
    pub(crate) connect_timeout: Option<String>,
    /// Say what happens, step by step (also: RUST_LOG=debug).
    #[arg(short = 'd', long)]
    pub(crate) debug: bool,
}

impl ConnectionArgs {
    pub(crate) fn overrides(&self) -> Overrides {
        Overrides {
            hosts: self.host.clone(),
            port: self.port,
            client_id: self.client_id.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            ca_file: self.cafile.clone(),
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
            tls_version: self.tls_version.map(|v| v.config_word().to_string()),
            tls: self.tls,
            skip_name_check: self.insecure,
            legacy_common_name: self.legacy_common_name,
            allow_insecure: self.allow_insecure,
            keep_alive: self.keep_alive,
            connect_timeout: self.connect_timeout.clone(),
            board: None,
            elsewhere: false,
        }
    }
}

/// `pinpost publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
    /// Topic to publish to.
    #[arg(short = 't', long)]
    pub(crate) topic: String,
    #[command(flatten)]
    pub(crate) source: MessageSource,
    /// Quality of service: 0 (fire and forget) or 1 (wait for the broker's acknowledgement).
    #[arg(short = 'q', long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub(crate) qos: u8,
    /// Ask the broker to keep the message for later subscribers.
    #[arg(short = 'r', long)]
    pub(crate) retain: bool,
    /// Give up (exit 5) when the broker has confirmed nothing for this long
    /// while messages wait for it, e.g. "10s". A broker that accepts the
    /// connection and never answers is otherwise noticed only by the
    /// keep-alive.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: std::time::Duration,
}

/// Exactly one place the message comes from.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct MessageSource {
    /// The message text.
    #[arg(short = 'm', long, value_name = "TEXT")]
    pub(crate) message: Option<String>,
    /// Send a file's contents as the message.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
    /// Send all of standard input as one message.
    #[arg(short = 's', long = "stdin-file")]
    pub(crate) stdin_file: bool,
    /// Send each line of standard input as a message (blank lines are skipped).
    #[arg(short = 'l', long = "stdin-line")]
    pub(crate) stdin_line: bool,
    /// Send an empty message (clears a retained one with -r).
    #[arg(short = 'n', long = "null-message")]
    pub(crate) null_message: bool,
}

/// `pinpost subscribe`.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
    /// Topic filter to subscribe to (repeatable; + and # wildcards allowed).
    #[arg(short = 't', long = "topic", required = true)]
    pub(crate) topics: Vec<String>,
    /// Print the topic before each message.
    #[arg(short = 'v', long)]
    pub(crate) verbose: bool,
    /// Exit after this many messages.
    #[arg(short = 'C', long, value_name = "COUNT")]
    pub(crate) count: Option<u64>,
    /// Exit (code 27) after this many seconds if -C was not reached.
    #[arg(short = 'W', long, value_name = "SECONDS")]
    pub(crate) timeout: Option<u64>,
    /// Quality of service for the subscription: 0 or 1.
    #[arg(short = 'q', long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub(crate) qos: u8,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::config::{BoardKind, Pull};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pinpost").chain(args.iter().copied()))
    }

    #[test]
    fn board_and_pull_are_parsed_into_their_kinds() {
        let Subcommand::Gpio(gpio) =
            parse(&["gpio", "--board", "sim", "--pull", "up", "read", "17"])
                .unwrap()
                .command
        else {
            panic!("not gpio");
        };
        assert_eq!(BoardKind::from(gpio.board), BoardKind::Sim);
        assert_eq!(Pull::from(gpio.pull), Pull::Up);
        let Subcommand::Gpio(gpio) = parse(&["gpio", "read", "17"]).unwrap().command else {
            panic!("not gpio");
        };
        assert_eq!((gpio.board, gpio.pull), (BoardArg::Auto, PullArg::None));
        let Subcommand::Run(run) = parse(&["run", "--board", "rppal"]).unwrap().command else {
            panic!("not run");
        };
        assert_eq!(run.board.map(BoardArg::config_word), Some("rppal"));
    }

    #[test]
    fn a_word_not_in_the_list_is_a_usage_error() {
        for args in [
            &["gpio", "--board", "pi", "read", "17"][..],
            &["gpio", "--pull", "sideways", "read", "17"],
            &["run", "--board", "Sim"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue, "{args:?}");
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn keepalive_is_whole_seconds_as_a_duration() {
        let Subcommand::Publish(publish) = parse(&["publish", "-t", "a", "-m", "b", "-k", "30"])
            .unwrap()
            .command
        else {
            panic!("not publish");
        };
        assert_eq!(
            publish.connection.overrides().keep_alive,
            Some(Duration::from_secs(30))
        );
        let Subcommand::Check(check) = parse(&["check", "--tls-version", "tlsv1.3"])
            .unwrap()
            .command
        else {
            panic!("not check");
        };
        assert_eq!(
            check.connection.overrides().tls_version.as_deref(),
            Some("1.3")
        );
        let e = parse(&["publish", "-t", "a", "-m", "b", "-k", "5s"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("invalid digit found in string"),
            "{e}"
        );
    }
}
