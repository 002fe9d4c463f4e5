//! The flags of `pinpost release`: signing a package for the fleet and
//! checking what was signed.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::ConnectionArgs;

pub(super) const RELEASE_HELP: &str = "A release is a .deb and its manifest (package, \
    version, architecture, size, SHA-256, the versions it may replace, when it expires), \
    signed with the release key that `pinpost certs release-key` made. A device applies only \
    what that key signed; its release.pub goes to every Pi with the config.\n\n\
    Examples:\n  \
    pinpost certs release-key                                # certs/private/release.key, certs/release.pub\n  \
    pinpost release sign target/debian/pinpost_0.2.0-1_arm64.deb\n  \
    pinpost release verify target/debian/pinpost_0.2.0-1_arm64.deb.manifest\n  \
    pinpost release publish target/debian/pinpost_0.2.0-1_arm64.deb.manifest --devices pi-01,pi-02\n  \
    pinpost release publish target/debian/pinpost_0.2.0-1_arm64.deb.manifest --percent 10\n  \
    pinpost release status\n  \
    pinpost release withdraw target/debian/pinpost_0.2.0-1_arm64.deb.manifest\n  \
    pinpost release sign-config pi-01.toml                   # pi-01.toml.signed\n  \
    pinpost release publish pi-01.toml.signed --devices pi-01";

/// `pinpost release`.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    #[command(subcommand)]
    pub(crate) what: ReleaseCommand,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ReleaseCommand {
    /// Sign a package: writes FILE.deb.manifest beside it.
    Sign {
        /// The package (a .deb from scripts/package.sh).
        package: PathBuf,
        /// The release key (private).
        #[arg(long, value_name = "FILE", default_value = "certs/private/release.key")]
        key: PathBuf,
        /// A version this release may replace (repeat for each); without
        /// it, any older version.
        #[arg(long = "replaces", value_name = "VERSION")]
        replaces: Vec<String>,
        /// Let it replace a newer version (a way back, signed on purpose).
        #[arg(long)]
        downgrade: bool,
        /// How long devices may apply it, e.g. "30d" (at most a year): a
        /// manifest withheld and replayed later is refused after this.
        #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = humantime::parse_duration)]
        expires: Duration,
        /// Where to write the manifest [default: PACKAGE.manifest].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Sign one device's config file: writes FILE.toml.signed beside it
    /// (publish it like a release, --devices ID).
    #[command(name = "sign-config")]
    SignConfig {
        /// The device's whole config (its [device] id names the device).
        config: PathBuf,
        /// The release key (private).
        #[arg(long, value_name = "FILE", default_value = "certs/private/release.key")]
        key: PathBuf,
        /// How long the device may apply it, e.g. "7d" (at most a year).
        #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = humantime::parse_duration)]
        expires: Duration,
        /// Where to write it [default: CONFIG.signed].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check a manifest (and the package, if given) as a device would.
    Verify {
        /// The manifest.
        manifest: PathBuf,
        /// The package it describes [default: the manifest's name without .manifest].
        #[arg(long, value_name = "FILE")]
        package: Option<PathBuf>,
        /// The release key's public half.
        #[arg(long, value_name = "FILE", default_value = "certs/release.pub")]
        key: PathBuf,
        /// Also judge it as a device running this version would (now, with
        /// this machine's clock).
        #[arg(long, value_name = "VERSION")]
        installed: Option<String>,
        /// The device's architecture, with --installed [default: the
        /// manifest's].
        #[arg(long, value_name = "ARCH", requires = "installed")]
        architecture: Option<String>,
    },
    /// Send a signed release through the broker: the package in chunks
    /// any device may fetch, and the manifest to each device chosen (only
    /// those fetch it). A signed config goes to its device's config topic.
    #[command(disable_help_flag = true)]
    Publish {
        /// The manifest `release sign` wrote.
        manifest: PathBuf,
        /// The package [default: the manifest's name without .manifest].
        #[arg(long, value_name = "FILE")]
        package: Option<PathBuf>,
        /// The devices to update, by id.
        #[arg(
            long,
            value_name = "ID,ID",
            value_delimiter = ',',
            required_unless_present_any = ["all", "percent"],
            conflicts_with_all = ["all", "percent"]
        )]
        devices: Vec<String>,
        /// Every device with a folder under the certificate folder's devices/.
        #[arg(long, conflicts_with = "percent")]
        all: bool,
        /// This share of those devices (at least one), the same ones for the
        /// same release each time: a staged rollout.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=100))]
        percent: Option<u8>,
        #[command(flatten)]
        fleet: FleetArgs,
        #[command(flatten)]
        connection: Box<ConnectionArgs>,
    },
    /// Take a release back: its manifest cleared from every device that
    /// holds it (each drops what it fetched), its chunks from the broker.
    #[command(disable_help_flag = true)]
    Withdraw {
        /// The manifest `release sign` wrote.
        manifest: PathBuf,
        #[command(flatten)]
        fleet: FleetArgs,
        #[command(flatten)]
        connection: Box<ConnectionArgs>,
    },
    /// Show where each device's update is: who has what, who failed and why.
    #[command(disable_help_flag = true)]
    Status {
        #[command(flatten)]
        fleet: FleetArgs,
        #[command(flatten)]
        connection: Box<ConnectionArgs>,
    },
}

/// Where the laptop's fleet files are, for `release publish` and `status`.
#[derive(Debug, Args)]
pub(crate) struct FleetArgs {
    /// The certificate folder: the operator's pair, the CA and the devices.
    #[arg(long, value_name = "DIR", default_value = "certs")]
    pub(crate) dir: PathBuf,
    /// The release key's public half [default: DIR/release.pub].
    #[arg(long = "release-key", value_name = "FILE")]
    pub(crate) release_key: Option<PathBuf>,
    /// The operator's account name (its folder under devices/).
    #[arg(long, default_value = "operator")]
    pub(crate) operator: String,
    /// The devices' topic prefix [default: the config's, else pinpost].
    #[arg(long)]
    pub(crate) prefix: Option<String>,
}
