//! `pinpost demo`: the whole system on one machine, in one process, on
//! loopback only. A throwaway CA with broker and device certificates (the
//! `certs` code), a broker with mutual TLS (built in, or a real one given
//! with `--broker`), the agent on a simulated board (a relay wired to a
//! door contact, a button that presses itself) with a simulated sensor,
//! and a console view of what crosses the broker, commands included.
//!
//! It only wires existing parts together: the agent, link, certs and
//! sensors are the same code `pinpost run` uses.

#[cfg(feature = "demo")]
mod broker;
#[cfg(feature = "demo")]
mod front;
mod view;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use tokio::time::Instant;

use crate::agent;
use crate::board::{PinPlan, SimBoard};
#[cfg(feature = "demo")]
use crate::certs::{self, Authority, KeyKind};
use crate::config::{self, Config, Overrides};
use crate::link::{Client, Link, LinkEvent, LinkOptions, Qos, Retry};
use crate::tls;
#[cfg(feature = "demo")]
use crate::utc;

pub use view::Stage;
pub(crate) use view::View;

/// The button's pin; the relay (27) is wired to the door contact (17).
const BUTTON_PIN: u8 = 22;
const COMMAND_EVERY: Duration = Duration::from_secs(3);
const BUTTON_EVERY: Duration = Duration::from_secs(4);

/// Why the demo did not run to the end, in words for the person watching.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The flags do not make sense together (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// Something the demo needs could not be set up, or the agent stopped.
    #[error("{0}")]
    Setup(String),
    /// The run ended before every stage had been seen.
    #[error(
        "the demo ended without showing {}: {}",
        if .0.len() == 1 { "one stage" } else { "some stages" },
        .0.iter().map(|s| s.words()).collect::<Vec<_>>().join(", ")
    )]
    Missing(Vec<Stage>),
}

/// Where the demo's broker is and the files to reach it.
struct Target {
    host: String,
    port: u16,
    ca: PathBuf,
    device: (PathBuf, PathBuf),
    console: (PathBuf, PathBuf),
    built_in: bool,
}

/// `pinpost demo`'s flags. They live with the demo, not in `cli::args`, so
/// the demo never reaches up into the command line (`cli` runs the demo).
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// End by itself after this long (\"10s\", \"2m\"); exit 0 only if every stage was seen. Default: until Ctrl-C.
    #[arg(long, value_name = "DURATION")]
    pub(crate) duration: Option<String>,
    /// A real broker instead of the built-in one (with --cafile, --cert and --key).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) broker: Option<String>,
    /// The CA that signed the broker's certificate (with --broker).
    #[arg(long, value_name = "FILE")]
    pub(crate) cafile: Option<PathBuf>,
    /// The device certificate (with --broker).
    #[arg(long, value_name = "FILE")]
    pub(crate) cert: Option<PathBuf>,
    /// The device key (with --broker).
    #[arg(long, value_name = "FILE")]
    pub(crate) key: Option<PathBuf>,
    /// The demo device's id (with --broker: usually its certificate's name).
    #[arg(long, default_value = "demo-pi")]
    pub(crate) id: String,
    /// Print the agent's config first: a starting point for a real Pi.
    #[arg(long)]
    pub(crate) config: bool,
    /// Log every step.
    #[arg(short = 'd', long)]
    pub(crate) debug: bool,
}

pub(crate) async fn run(args: &DemoArgs) -> Result<(), DemoError> {
    let duration = match &args.duration {
        Some(text) => Some(humantime::parse_duration(text).map_err(|_| {
            DemoError::Usage(format!(
                "--duration {text:?} is not a duration; write it like \"10s\" or \"2m\""
            ))
        })?),
        None => None,
    };
    let dir = tempfile::Builder::new()
        .prefix("pinpost-demo-")
        .tempdir()
        .map_err(|e| DemoError::Setup(format!("cannot make a temporary directory: {e}")))?;
    let target = match &args.broker {
        Some(address) => external(args, address)?,
        None => built_in(dir.path(), &args.id)?,
    };
    let text = agent_config(&args.id, &target, &dir.path().join("outbox"));
    let config = config::from_text(&text, None, &Overrides::default())
        .map_err(|e| DemoError::Setup(format!("the demo's own config is wrong: {e}")))?;
    if args.config {
        println!("# The config the demo's agent runs with; certificates come from");
        println!("# `pinpost certs` (the demo's own are deleted when it ends).");
        println!("{text}");
    }
    say_what_runs(&target, &args.id, dir.path());

    let (edges_tx, edges) = crate::board::edges::channel(config.inputs.len());
    let (board, pins) = SimBoard::new(
        &PinPlan::from_config(&config),
        &config.board.wires,
        edges_tx,
    );
    let console = console_link(&config, &target)?;
    let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = agent::run(config.clone(), Box::new(board), edges, async {
        let _ = agent_stopped.await;
    });
    let prefix = format!("{}/{}", config.device.topic_prefix, config.device.id);
    let watch = async {
        let view = watch(console, &prefix, duration, |high| {
            pins.set_input(BUTTON_PIN, high)
        })
        .await;
        let _ = stop_agent.send(());
        view
    };
    let (agent_result, view) = tokio::join!(agent, watch);
    if let Err(e) = agent_result {
        return Err(DemoError::Setup(format!("the agent stopped: {e}")));
    }
    let missing = view.missing();
    if !missing.is_empty() && duration.is_some() {
        return Err(DemoError::Missing(missing));
    }
    println!(
        "\nEvery stage was seen: pinpost read a sensor and a button, published them over \
         mutual TLS, and drove a relay on command.\nNext: `pinpost certs` for real \
         certificates, `pinpost demo --config` for a config to start from."
    );
    Ok(())
}

/// A CA, a broker certificate for 127.0.0.1, and client certificates for
/// the device and the console, then the built-in broker: rumqttd on a plain
/// loopback port behind a TLS front that requires a client certificate
/// from the CA.
#[cfg(feature = "demo")]
fn built_in(dir: &Path, id: &str) -> Result<Target, DemoError> {
    let failed = |e: &dyn std::fmt::Display| {
        DemoError::Setup(format!("cannot make the demo's certificates: {e}"))
    };
    let now = utc::now_unix_millis() / 1000;
    let ca = certs::new_ca("pinpost demo CA", KeyKind::EcdsaP256, now).map_err(|e| failed(&e))?;
    let authority =
        Authority::load("demo CA", &ca.cert_pem, &ca.key_pem).map_err(|e| failed(&e))?;
    let write = |name: &str, issued: &certs::Issued| -> Result<(PathBuf, PathBuf), DemoError> {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &issued.cert_pem).map_err(|e| failed(&e))?;
        std::fs::write(&key, &issued.key_pem).map_err(|e| failed(&e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| failed(&e))?;
        Ok((cert, key))
    };
    let ca_path = write("ca", &ca)?.0;
    let server = authority
        .broker(
            &["127.0.0.1".into(), "localhost".into()],
            KeyKind::EcdsaP256,
            now,
        )
        .map_err(|e| failed(&e))?;
    let device = authority
        .client(id, KeyKind::EcdsaP256, now)
        .map_err(|e| failed(&e))?;
    let console = authority
        .client("demo-console", KeyKind::EcdsaP256, now)
        .map_err(|e| failed(&e))?;
    let login = front::Login::new().map_err(|e| DemoError::Setup(e.to_string()))?;
    let plain = broker::start(&login).map_err(DemoError::Setup)?;
    let port = front::start(
        &ca.cert_pem,
        &server.cert_pem,
        &server.key_pem,
        plain,
        login,
    )
    .map_err(|e| DemoError::Setup(e.to_string()))?;
    Ok(Target {
        host: "127.0.0.1".into(),
        port,
        ca: ca_path,
        device: write(id, &device)?,
        console: write("demo-console", &console)?,
        built_in: true,
    })
}

#[cfg(not(feature = "demo"))]
fn built_in(_dir: &Path, _id: &str) -> Result<Target, DemoError> {
    Err(DemoError::Usage(
        "this pinpost was built without the demo's broker (cargo feature \"demo\", left out of \
         Pi builds to keep them small). Run the demo on a laptop (`cargo run --release -- demo`), \
         or point this one at a broker: pinpost demo --broker HOST:PORT --cafile ca.crt \
         --cert pi.crt --key pi.key"
            .into(),
    ))
}

fn external(args: &DemoArgs, address: &str) -> Result<Target, DemoError> {
    let (host, port) = address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| {
            DemoError::Usage(format!(
                "--broker {address:?}: write it as HOST:PORT, e.g. broker.local:8883"
            ))
        })?;
    let (Some(ca), Some(cert), Some(key)) = (&args.cafile, &args.cert, &args.key) else {
        return Err(DemoError::Usage(
            "--broker needs --cafile, --cert and --key: the demo speaks mutual TLS only".into(),
        ));
    };
    Ok(Target {
        host,
        port,
        ca: ca.clone(),
        device: (cert.clone(), key.clone()),
        // With `use_identity_as_username` the console is the same user, so
        // the broker's ACL lets it read and command this device.
        console: (cert.clone(), key.clone()),
        built_in: false,
    })
}

/// The agent's config: also what `--config` prints for a user to start from.
fn agent_config(id: &str, t: &Target, outbox: &Path) -> String {
    let show = |p: &Path| p.display().to_string().replace('\\', "/");
    format!(
        r#"[device]
id = "{id}"

[broker]
host = "{host}"
port = {port}
keep_alive = "5s"

[broker.tls]
ca_file = "{ca}"
cert_file = "{cert}"
key_file = "{key}"

[reconnect]
initial = "200ms"
max = "2s"

# This machine keeps time: readings are dated by its clock from the start.
# On a Pi without a real-time clock, leave this out: the clock is then
# trusted once systemd-timesyncd has set it (README, "Time on a Pi").
[clock]
trust = "system"

# A simulated board: setting GPIO27 (the relay) drives GPIO17 (the door
# contact). On a Pi, remove [board] and `wires`.
[board]
kind = "sim"
wires = [[27, 17]]

[[input]]
name = "door"
pin = 17
debounce = "10ms"

[[input]]
name = "button"
pin = {BUTTON_PIN}
pull = "up"
# Wired to ground: pressed reads low, published as true.
invert = true
debounce = "20ms"

[[output]]
name = "relay"
pin = 27
safe_state = "off"

[[sensor]]
name = "temperature"
kind = "sim"
interval = "1s"
unit = "°C"
start = 21.0
step = 0.1

[outbox]
path = "{outbox}"
stats_interval = "5s"
"#,
        host = t.host,
        port = t.port,
        ca = show(&t.ca),
        cert = show(&t.device.0),
        key = show(&t.device.1),
        outbox = show(outbox),
    )
}

fn say_what_runs(t: &Target, id: &str, dir: &Path) {
    let broker = if t.built_in {
        format!(
            "a broker built into this process on mqtts://{}:{} (mutual TLS; CA and certificates \
             in {})",
            t.host,
            t.port,
            dir.display()
        )
    } else {
        format!("the broker at mqtts://{}:{}", t.host, t.port)
    };
    println!("pinpost demo: {broker}");
    println!(
        "  agent {id}: a simulated board (relay GPIO27 wired to door GPIO17, a button on \
         GPIO{BUTTON_PIN} pressed or released every {}s) and a temperature sensor read every \
         second",
        BUTTON_EVERY.as_secs()
    );
    println!(
        "  this console: subscribed to everything {id} publishes, toggling the relay every {}s",
        COMMAND_EVERY.as_secs()
    );
    println!();
}

fn console_link(agent: &Config, t: &Target) -> Result<Link, DemoError> {
    let mut broker = agent.broker.clone();
    if let Some(tls) = &mut broker.tls {
        tls.cert_file = Some(config::SourcedPath {
            path: t.console.0.clone(),
            origin: "the demo console".into(),
        });
        tls.key_file = Some(config::SourcedPath {
            path: t.console.1.clone(),
            origin: "the demo console".into(),
        });
    }
    let setup = broker
        .tls
        .as_ref()
        .map(tls::setup)
        .transpose()
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    let prefix = format!("{}/{}", agent.device.topic_prefix, agent.device.id);
    // The demo's config names no broker.client_id: the console is always
    // `<device>-console-<pid>`, beside the agent.
    let options = LinkOptions {
        subscriptions: vec![(format!("{prefix}/#"), Qos::AtLeastOnce)],
        ..LinkOptions::new(
            &broker,
            &agent.reconnect,
            &agent.device.id,
            Client::Tool("console"),
            Retry::Forever,
        )
    };
    Ok(Link::start(options, setup))
}

/// Prints what crosses the broker, sends a command every few seconds and
/// presses the button, until `duration` passes or Ctrl-C.
async fn watch(
    mut link: Link,
    prefix: &str,
    duration: Option<Duration>,
    press: impl Fn(bool),
) -> View {
    let mut view = View::new(prefix);
    let start = Instant::now();
    let publisher = link.publisher();
    let end = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::pin!(end);
    let mut commands = tokio::time::interval_at(start + Duration::from_secs(2), COMMAND_EVERY);
    let mut button = tokio::time::interval_at(start + Duration::from_millis(1500), BUTTON_EVERY);
    let mut sent = 0u32;
    let mut pressed = false;
    let mut connected = false;
    loop {
        tokio::select! {
            () = &mut end => break,
            // Ctrl-C also ends a timed run early.
            _ = tokio::signal::ctrl_c(), if duration.is_some() => break,
            event = link.next_event() => match event {
                Some(LinkEvent::Message { topic, payload, .. }) => {
                    if let Some(line) = view.message(start.elapsed(), &topic, &payload) {
                        println!("{line}");
                    }
                }
                Some(LinkEvent::Connected { .. }) => connected = true,
                Some(LinkEvent::Down { failure, .. }) => {
                    connected = false;
                    println!("{:>6.1}s  console  {failure}", start.elapsed().as_secs_f64());
                }
                Some(_) => {}
                None => break,
            },
            _ = commands.tick(), if connected => {
                sent += 1;
                let payload = format!(r#"{{"action":"toggle","id":"demo-{sent}"}}"#);
                let topic = format!("{prefix}/cmd/relay");
                if publisher.publish(&topic, payload.clone().into_bytes(), Qos::AtLeastOnce, false).await.is_ok() {
                    println!("{}", view.command(start.elapsed(), "relay", &payload));
                }
            }
            _ = button.tick() => {
                // Pull-up wiring: pressed is low; the agent publishes both edges.
                pressed = !pressed;
                press(!pressed);
            }
        }
    }
    let missing = view.missing();
    if missing.is_empty() {
        println!(
            "{:>6.1}s  demo     every stage seen",
            start.elapsed().as_secs_f64()
        );
    } else {
        for stage in &missing {
            println!(
                "{:>6.1}s  demo     not seen: {}",
                start.elapsed().as_secs_f64(),
                stage.words()
            );
        }
    }
    let _ = link.disconnect().await;
    view
}
