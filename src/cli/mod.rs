//! The subcommands, one file each (parse → act → report), and what they
//! share: turning connection flags plus the config file into a link, and the
//! error type whose words reach the user and whose kind sets the exit code.

pub mod args;
mod certs;
mod check;
mod configs;
mod enroll;
mod fleet;
mod gpio;
mod ha;
mod install_update;
mod publish;
mod release;
mod renew;
mod revoke;
mod rollout;
mod rotate;
mod run;
mod sensors;
mod signed;
mod subscribe;
mod values;

use std::path::Path;
use std::process::ExitCode;

use crate::agent::AgentError;
use crate::board::BoardError;
use crate::cli::args::{ConnectionArgs, Subcommand};
use crate::config::{self, Chosen, Config, ConfigError};
use crate::link::{Client, Failure, Link, LinkError, LinkEvent, LinkOptions, Qos, Retry};
use crate::tls::{self, TlsError};

/// Why a command failed, worded for the person who ran it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The config file or a flag is wrong (exit 3).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A certificate or key cannot be used (exit 3).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// No broker could be reached, in words (exit 4).
    #[error("{0}")]
    Connect(Box<Failure>),
    /// Connected, but the broker confirmed nothing within `--timeout` while
    /// messages waited for it (exit 5).
    #[error(
        "the broker accepted the connection but confirmed {confirmed} of {sent} message(s) and then \
         nothing for {secs} s (--timeout): it may be overloaded, stuck, or a proxy that never \
         passes messages on; nothing more was sent, and what it did not confirm may or may not \
         have arrived"
    )]
    NoAnswer {
        /// Messages the broker acknowledged.
        confirmed: u64,
        /// Messages handed to the link.
        sent: u64,
        /// The `--timeout`, in seconds.
        secs: u64,
    },
    /// The link refused a request or stopped (exit 2 for a bad topic, else 1).
    #[error(transparent)]
    Link(#[from] LinkError),
    /// Something the person gave cannot be used, in words (exit 1).
    #[error("{0}")]
    Input(String),
    /// Connected, but the broker did not confirm every message (exit 5).
    #[error(
        "the broker confirmed {confirmed} of {sent} message(s) before the connection ended: \
         {failure}"
    )]
    Unconfirmed {
        /// Messages the broker acknowledged.
        confirmed: u64,
        /// Messages handed to the link.
        sent: u64,
        /// Why the connection ended.
        failure: Box<Failure>,
    },
    /// The broker's ACL refused these topic filters (exit 4).
    #[error("the broker refused the subscription to {}: this client may not read there (the broker's ACL)", .0.join(", "))]
    SubscriptionRefused(Vec<String>),
    /// `subscribe -W` ran out before `-C` messages came (exit 27).
    #[error("timed out after {secs}s with {received} message(s) received")]
    TimedOut {
        /// The `-W` limit.
        secs: u64,
        /// Messages received by then.
        received: u64,
    },
    /// GPIO could not be opened or driven (exit 6).
    #[error(transparent)]
    Board(#[from] BoardError),
    /// The agent stopped with an error (exit 3 for TLS, else 1).
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// Certificates could not be made or verified (exit 3).
    #[error(transparent)]
    Certs(#[from] crate::certs::CertsError),
    /// `pinpost check` found problems (exit 1).
    #[error("check found {failed} problem(s) marked \u{2717} above{}", if *warned > 0 { format!(" and {warned} worth fixing (!)") } else { String::new() })]
    CheckFailed {
        /// Steps marked \u{2717}.
        failed: usize,
        /// Steps marked !.
        warned: usize,
    },
    /// The demo could not run (exit 2 for bad usage, else 1).
    #[error(transparent)]
    Demo(#[from] crate::demo::DemoError),
    /// `pinpost sensors`: some sensors could not be read (exit 1).
    #[error("{failed} of {total} sensor(s) could not be read (see above)")]
    SensorsFailed {
        /// Sensors that gave no reading.
        failed: usize,
        /// Sensors configured.
        total: usize,
    },
}

impl CliError {
    /// The process exit code: stable, documented in `--help`.
    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Config(_) | CliError::Tls(_) => 3,
            CliError::Connect(_) | CliError::SubscriptionRefused(_) => 4,
            CliError::Unconfirmed { .. } | CliError::NoAnswer { .. } => 5,
            CliError::Link(LinkError::BadTopic { .. }) => 2,
            CliError::TimedOut { .. } => 27,
            CliError::Board(_) => 6,
            CliError::Agent(AgentError::Tls(_)) => 3,
            CliError::Certs(_) => 3,
            CliError::Demo(crate::demo::DemoError::Usage(_)) => 2,
            CliError::Link(_)
            | CliError::Input(_)
            | CliError::Agent(_)
            | CliError::CheckFailed { .. }
            | CliError::SensorsFailed { .. }
            | CliError::Demo(_) => 1,
        })
    }
}

/// Runs one subcommand to the end.
pub async fn run(command: Subcommand) -> Result<(), CliError> {
    match command {
        Subcommand::Run(args) => run::run(args).await,
        Subcommand::Publish(args) => publish::run(args).await,
        Subcommand::Subscribe(args) => subscribe::run(args).await,
        Subcommand::Gpio(args) => gpio::run(args).await,
        Subcommand::Certs(args) => certs::run(args).await,
        Subcommand::Enroll(args) => enroll::run(&args),
        Subcommand::Release(args) => release::run(&args.what).await,
        Subcommand::Check(args) => check::run(args).await,
        Subcommand::Sensors(args) => sensors::run(args).await,
        Subcommand::Ha(args) => ha::run(&args),
        Subcommand::InstallUpdate(args) => install_update::run(&args),
        Subcommand::Demo(args) => Ok(crate::demo::run(&args).await?),
    }
}

/// Reads the config the flags point to (or the usual places; none at all
/// is fine for a one-shot command given -h) with the flags applied.
pub(super) fn config_for(args: &ConnectionArgs) -> Result<Config, CliError> {
    let chosen = choose_config(args.config.as_deref());
    match &chosen {
        Some(c) => tracing::debug!(file = %c.path().display(), "reading config"),
        None => tracing::debug!("no config file; using flags and defaults"),
    }
    let mut config = config::load(chosen.as_ref(), &args.overrides())?;
    // After a renewal the config's certificate is the old one (the agent
    // cannot write /etc/pinpost): the tools use the renewed pair, unless
    // told which files to use.
    if args.cert.is_none() && args.key.is_none() {
        if let Some(path) = crate::agent::renewed_pair(&config) {
            if let Some(tls) = config.broker.tls.as_mut() {
                let renewed = config::SourcedPath {
                    path,
                    origin: "renewed by the agent over MQTT".into(),
                };
                tls.cert_file = Some(renewed.clone());
                tls.key_file = Some(renewed);
            }
        }
    }
    // These one-shot commands use the broker's listener for tools, so the
    // agent on the same Pi keeps its session (see `broker.cli_port`).
    if let Some(port) = config.broker.cli_port {
        let agents = config.broker.port;
        for endpoint in &mut config.broker.endpoints {
            if endpoint.port == agents {
                endpoint.port = port;
            }
        }
        config.broker.port = port;
    }
    // Without cli_port a tool with the agent's certificate may take the
    // agent's place, but only on a broker that ties client ids to
    // certificates; on the others nothing happens, so nothing is said
    // before connecting (`subscribe` says it when the broker shows it).
    if let Some(tls) = config.broker.tls.as_ref().filter(|t| t.skip_name_check) {
        warn_insecure(&config.broker.host, tls);
    }
    Ok(config)
}

/// The config file named by `--config`, else `$PINPOST_CONFIG`, else the
/// first of the usual places that exists; `None` when there is none. Every
/// subcommand chooses its file here.
fn choose_config(flag: Option<&Path>) -> Option<Chosen> {
    let env = std::env::var_os(config::CONFIG_ENV);
    config::source::choose(flag, env.as_deref())
}

/// [`choose_config`] for the subcommands that cannot do without a file:
/// none is an error that lists where it was looked for.
fn required_config(flag: Option<&Path>) -> Result<Chosen, CliError> {
    choose_config(flag).ok_or_else(|| {
        CliError::Config(ConfigError::NotFound {
            searched: config::source::search_path(),
        })
    })
}

/// Said on every use of `--insecure`, whatever the log level: it is easy to
/// leave in a script and forget.
fn warn_insecure(host: &str, tls: &config::Tls) {
    let ca = tls.ca_file.as_ref().map_or_else(
        || "the trusted CAs".to_string(),
        |f| f.path.display().to_string(),
    );
    eprintln!(
        "pinpost: warning: --insecure: the broker's certificate is not checked against \
         {host}; any certificate issued by {ca} is accepted as the broker's, so whoever holds \
         one (another device, for instance) can pose as the broker. Use it to debug, never in \
         the field; fix the name instead (broker.tls.server_name, or reissue the certificate)"
    );
}

/// Starts a link for a one-shot command and waits until it is connected.
/// Ends `link` with a DISCONNECT and waits until it has closed (what it
/// sent is then gone from this process).
pub(super) async fn close(link: &mut Link) -> Result<(), CliError> {
    link.disconnect().await?;
    while let Some(event) = link.next_event().await {
        if matches!(event, LinkEvent::Closed) {
            break;
        }
    }
    Ok(())
}

pub(super) async fn connect(
    config: &Config,
    role: &str,
    retry: Retry,
    subscriptions: Vec<(String, Qos)>,
) -> Result<Link, CliError> {
    let tls = config.broker.tls.as_ref().map(tls::setup).transpose()?;
    let options = LinkOptions {
        subscriptions,
        ..LinkOptions::new(
            &config.broker,
            &config.reconnect,
            &config.device.id,
            Client::Tool(role),
            retry,
        )
    };
    tracing::debug!(
        host = %config.broker.host,
        port = config.broker.port,
        tls = tls.is_some(),
        client_id = %options.client_id,
        "connecting"
    );
    let mut link = Link::start(options, tls);
    loop {
        match link.next_event().await {
            Some(LinkEvent::Connected { .. }) => return Ok(link),
            // Several brokers: each is tried once, at once, before
            // giving up; the last one's failure is the error.
            Some(LinkEvent::Down {
                failure,
                retry_in: Some(_),
                ..
            }) => eprintln!("pinpost: {failure}; trying the next broker"),
            Some(LinkEvent::Down { failure, .. }) => {
                return Err(CliError::Connect(Box::new(failure)));
            }
            Some(_) => continue,
            None => return Err(CliError::Link(LinkError::Stopped)),
        }
    }
}

/// `main`'s edge: run, print the error once in words, pick the exit code.
pub fn report(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pinpost: {e}");
            e.exit_code()
        }
    }
}
