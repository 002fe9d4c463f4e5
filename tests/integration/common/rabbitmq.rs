//! A real RabbitMQ cluster for a test: three nodes of Debian's
//! rabbitmq-server (3.10, its MQTT plugin) on loopback, joined with
//! `rabbitmqctl join_cluster`, MQTT over mutual TLS with certificates from
//! the test's [`Pki`] (RabbitMQ users named after the certificates' CNs,
//! `mqtt.ssl_cert_login`), `mqtt.durable_queue_type = quorum`. Knows how
//! RabbitMQ is set up, not what pinpost does with it.
//!
//! Everything is the test's own, so parallel runs and the system's
//! RabbitMQ never meet: node names `pinpost-<pid>-<n>-<a|b|c>@localhost`,
//! an epmd on a free port (`ERL_EPMD_PORT`, started here and bound to
//! 127.0.0.1), free distribution and MQTT ports, no AMQP listener, a HOME
//! with the cluster's `.erlang.cookie`, and config, data, logs and pid files
//! under one temp dir; the system's `/etc/rabbitmq/rabbitmq-env.conf` is not
//! read. Every node runs in a process group of its own; dropping the
//! [`Cluster`] kills every group and the epmd, whether the test passed or
//! panicked. A node is killed as a power cut would: SIGKILL to the beam
//! process named in its pid file.
//!
//! The scripts under `/usr/lib/rabbitmq/bin` are run directly: the
//! `/usr/sbin` wrappers would `su` to the rabbitmq user, which cannot read
//! the keys in root's temp dir, and would drop this environment.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process, kill_process_group};

use super::broker::free_port;
use super::pki::{Files, Pki};
use super::process::run_limited;

const BIN: &str = "/usr/lib/rabbitmq/bin";
/// How long three nodes may take to start and join: 7–11 s a node alone,
/// longer side by side on a busy machine.
const START_LIMIT: Duration = Duration::from_secs(120);
/// One `rabbitmqctl` command (each starts an Erlang VM of its own).
const CTL_LIMIT: Duration = Duration::from_secs(60);
/// Only loopback: Erlang distribution otherwise listens on every address.
const LOOPBACK_ONLY: &str = "-kernel inet_dist_use_interface {127,0,0,1}";

/// Clusters started by this test process, for unique node names.
static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

/// One RabbitMQ node of a [`Cluster`].
pub struct Node {
    /// `pinpost-<pid>-<n>-a@localhost`.
    pub name: String,
    /// MQTT over TLS on 127.0.0.1.
    pub mqtt_port: u16,
    /// How long it took from spawn to "started" (`rabbitmqctl wait`).
    pub started_in: Duration,
    dir: PathBuf,
    /// The `rabbitmq-server` script, leader of the node's process group.
    child: Option<Child>,
}

impl Node {
    /// `127.0.0.1:<mqtt port>`, as pinpost's `broker.hosts` lists it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.mqtt_port)
    }

    /// What the node logged (RabbitMQ's own log, then its console).
    pub fn log(&self) -> String {
        let own = std::fs::read_to_string(self.dir.join("log").join("rabbit.log"));
        let console = std::fs::read_to_string(self.dir.join("console.log"));
        format!(
            "{}\n--- console ---\n{}",
            own.unwrap_or_default(),
            console.unwrap_or_default()
        )
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("beam.pid")
    }

    /// The beam process's pid, from the pid file RabbitMQ writes.
    fn beam_pid(&self) -> Option<Pid> {
        let text = std::fs::read_to_string(self.pid_file()).ok()?;
        Pid::from_raw(text.trim().parse().ok()?)
    }

    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the node's whole process group and reaps the script.
    fn kill_group(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(group) = Pid::from_raw(child.id() as i32) {
                let _ = kill_process_group(group, Signal::KILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Three RabbitMQ nodes clustered on loopback; everything killed on drop.
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// From spawning the nodes to the last one started.
    pub started_in: Duration,
    /// Joining the second and third node to the first.
    pub joined_in: Duration,
    /// The cluster's own epmd.
    epmd: Child,
    /// Environment every node and every `rabbitmqctl` runs with.
    env: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts three nodes serving MQTT over TLS with `server` as their
    /// certificate, requiring a client certificate from `pki`'s CA, and
    /// makes a RabbitMQ user with full permissions on `/` for each CN in
    /// `users`. Tries twice (a free port may be taken meanwhile) before
    /// failing with the nodes' logs.
    pub fn start(pki: &Pki, server: &Files, users: &[&str]) -> Cluster {
        require_rabbitmq();
        let mut last = String::new();
        for _ in 0..2 {
            match Self::try_start(pki, server, users) {
                Ok(c) => return c,
                Err(e) => last = e,
            }
        }
        panic!("the RabbitMQ cluster did not start: {last}");
    }

    fn try_start(pki: &Pki, server: &Files, users: &[&str]) -> Result<Cluster, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let serial = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("pinpost-{}-{serial}", std::process::id());
        let home = dir.path().join("home");
        std::fs::create_dir(&home).expect("home dir");
        // Any atom will do; it only has to be the same for every node and
        // for rabbitmqctl, and readable by the owner only.
        let cookie = home.join(".erlang.cookie");
        std::fs::write(
            &cookie,
            format!("PINPOSTTEST{}X{serial}", std::process::id()),
        )
        .expect("write cookie");
        std::fs::set_permissions(&cookie, std::os::unix::fs::PermissionsExt::from_mode(0o400))
            .expect("chmod cookie");
        let env_conf = dir.path().join("rabbitmq-env.conf");
        std::fs::write(&env_conf, "").expect("write rabbitmq-env.conf");
        let plugins = dir.path().join("enabled_plugins");
        std::fs::write(&plugins, "[rabbitmq_mqtt].\n").expect("write enabled_plugins");

        let epmd_port = free_port("127.0.0.1");
        let mut epmd = Command::new("epmd")
            .args(["-port", &epmd_port.to_string(), "-address", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run epmd: {e}"))?;
        let env = vec![
            ("HOME".to_string(), home.display().to_string()),
            ("ERL_EPMD_PORT".into(), epmd_port.to_string()),
            ("ERL_EPMD_ADDRESS".into(), "127.0.0.1".into()),
            (
                "RABBITMQ_CONF_ENV_FILE".into(),
                env_conf.display().to_string(),
            ),
            (
                "RABBITMQ_ENABLED_PLUGINS_FILE".into(),
                plugins.display().to_string(),
            ),
            ("RABBITMQ_CTL_ERL_ARGS".into(), LOOPBACK_ONLY.into()),
        ];
        let listening = wait_for_port(epmd_port, Duration::from_secs(5));
        let mut cluster = Cluster {
            nodes: Vec::new(),
            started_in: Duration::ZERO,
            joined_in: Duration::ZERO,
            epmd: {
                if !listening {
                    let _ = epmd.kill();
                    let _ = epmd.wait();
                    return Err(format!("epmd did not listen on 127.0.0.1:{epmd_port}"));
                }
                epmd
            },
            env,
            dir,
        };
        let spawned = Instant::now();
        for letter in ['a', 'b', 'c'] {
            let node = cluster.spawn_node(&format!("{prefix}-{letter}"), letter, pki, server)?;
            cluster.nodes.push(node);
        }
        cluster.wait_started(spawned)?;
        cluster.started_in = spawned.elapsed();
        let joining = Instant::now();
        let first = cluster.nodes[0].name.clone();
        for i in 1..cluster.nodes.len() {
            cluster.ctl(i, &["stop_app"])?;
            cluster.ctl(i, &["join_cluster", &first])?;
            cluster.ctl(i, &["start_app"])?;
        }
        cluster.joined_in = joining.elapsed();
        // Users are cluster-wide: made once the cluster is one, or a join
        // (which resets the joining node) would throw them away.
        for user in users {
            // Never used: certificate login needs no password.
            let password = format!("unused-{}-{serial}", std::process::id());
            cluster.ctl(0, &["add_user", user, &password])?;
            cluster.ctl(0, &["set_permissions", "-p", "/", user, ".*", ".*", ".*"])?;
        }
        for i in 0..cluster.nodes.len() {
            if !wait_for_port(cluster.nodes[i].mqtt_port, Duration::from_secs(30)) {
                return Err(format!(
                    "{} does not listen for MQTT on {}:\n{}",
                    cluster.nodes[i].name,
                    cluster.nodes[i].address(),
                    cluster.nodes[i].log()
                ));
            }
        }
        Ok(cluster)
    }

    /// Writes a node's config and starts it (not waiting for it).
    fn spawn_node(
        &self,
        short: &str,
        letter: char,
        pki: &Pki,
        server: &Files,
    ) -> Result<Node, String> {
        let dir = self.dir.path().join(letter.to_string());
        std::fs::create_dir_all(dir.join("log")).expect("node dir");
        let mqtt_port = free_port("127.0.0.1");
        let dist_port = free_port("127.0.0.1");
        let conf = dir.join("rabbitmq.conf");
        std::fs::write(&conf, node_conf(mqtt_port, pki, server)).expect("write rabbitmq.conf");
        let node = Node {
            name: format!("{short}@localhost"),
            mqtt_port,
            started_in: Duration::ZERO,
            dir: dir.clone(),
            child: None,
        };
        let console = std::fs::File::create(dir.join("console.log")).expect("console log");
        let console_err = console.try_clone().expect("console log");
        let server_args = format!("{LOOPBACK_ONLY} -start_epmd false");
        let child = Command::new(format!("{BIN}/rabbitmq-server"))
            .current_dir(&dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RABBITMQ_NODENAME", &node.name)
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", &conf)
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_LOGS", dir.join("log").join("rabbit.log"))
            .env("RABBITMQ_PID_FILE", node.pid_file())
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", server_args)
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run {BIN}/rabbitmq-server: {e}"))?;
        Ok(Node {
            child: Some(child),
            ..node
        })
    }

    /// Waits until every node says it has started (`rabbitmqctl wait` on
    /// its pid file), failing at once if one exits.
    fn wait_started(&mut self, spawned: Instant) -> Result<(), String> {
        let limit = START_LIMIT.as_secs().to_string();
        let mut waits = Vec::new();
        for node in &self.nodes {
            let pid_file = node.pid_file().display().to_string();
            let wait = self
                .ctl_command(&node.name, &["wait", &pid_file, "--timeout", &limit])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run rabbitmqctl: {e}"))?;
            waits.push(Some(wait));
        }
        let deadline = spawned + START_LIMIT;
        while waits.iter().any(Option::is_some) {
            for (i, slot) in waits.iter_mut().enumerate() {
                let node = &mut self.nodes[i];
                if !node.alive() {
                    return Err(format!(
                        "{} exited while starting:\n{}",
                        node.name,
                        node.log()
                    ));
                }
                let Some(wait) = slot else { continue };
                if let Ok(Some(status)) = wait.try_wait() {
                    if !status.success() {
                        let mut err = String::new();
                        if let Some(mut pipe) = wait.stderr.take() {
                            let _ = std::io::Read::read_to_string(&mut pipe, &mut err);
                        }
                        return Err(format!(
                            "{} did not start: {err}\n{}",
                            node.name,
                            node.log()
                        ));
                    }
                    node.started_in = spawned.elapsed();
                    *slot = None;
                }
            }
            if Instant::now() > deadline {
                for wait in waits.iter_mut().flatten() {
                    let _ = wait.kill();
                    let _ = wait.wait();
                }
                return Err(format!(
                    "not started within {START_LIMIT:?}:\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn ctl_command(&self, node: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(format!("{BIN}/rabbitmqctl"));
        cmd.current_dir(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["-q", "-n", node])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `rabbitmqctl -n <node> <args>` and returns what it printed, or
    /// an error with what it said and the node's log.
    pub fn ctl(&self, node: usize, args: &[&str]) -> Result<String, String> {
        let mut cmd = self.ctl_command(&self.nodes[node].name, args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let out: Output = run_limited(cmd, None, CTL_LIMIT);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "rabbitmqctl -n {} {}: {}{}\n{}",
                self.nodes[node].name,
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.nodes[node].log()
            ))
        }
    }

    /// Every MQTT connection in the cluster (asked of `node`; the list is
    /// cluster-wide): its client id and the node whose listener it came in
    /// on (by port), `None` for a port that is no node's.
    pub fn mqtt_clients(&self, node: usize) -> Result<Vec<(String, Option<usize>)>, String> {
        let out = self.ctl(node, &["list_mqtt_connections", "client_id", "port"])?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (id, port) = l.trim().rsplit_once(char::is_whitespace)?;
                let port: u16 = port.trim().parse().ok()?;
                let at = self.nodes.iter().position(|n| n.mqtt_port == port);
                Some((id.trim().to_string(), at))
            })
            .collect())
    }

    /// The node serving MQTT at `address` (`127.0.0.1:<port>`).
    pub fn node_at(&self, address: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.address() == address)
    }

    /// Kills a node as a power cut would: SIGKILL to its beam process (from
    /// its pid file), then the rest of its process group. Returns once the
    /// node is gone.
    pub fn kill(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        let beam = n
            .beam_pid()
            .unwrap_or_else(|| panic!("{} wrote no pid file", n.name));
        kill_process(beam, Signal::KILL).expect("SIGKILL the node's beam process");
        if let Some(child) = n.child.as_mut() {
            let _ = child.wait();
        }
        n.kill_group();
    }

    /// Every node's log, for a failure message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("=== {} ===\n{}", n.name, tail(&n.log(), 60)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill_group();
        }
        let _ = self.epmd.kill();
        let _ = self.epmd.wait();
    }
}

/// A node's `rabbitmq.conf`: MQTT over mutual TLS only (no AMQP or plain
/// MQTT listener), the certificate's CN as the user, quorum queues for
/// persistent sessions, and a log file of its own.
fn node_conf(mqtt_port: u16, pki: &Pki, server: &Files) -> String {
    format!(
        "listeners.tcp = none
mqtt.listeners.tcp = none
mqtt.listeners.ssl.default = 127.0.0.1:{mqtt_port}
ssl_options.cacertfile = {ca}
ssl_options.certfile = {cert}
ssl_options.keyfile = {key}
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
mqtt.ssl_cert_login = true
ssl_cert_login_from = common_name
mqtt.allow_anonymous = false
mqtt.durable_queue_type = quorum
log.console = false
log.file.level = info
",
        ca = pki.ca.cert.display(),
        cert = server.cert.display(),
        key = server.key.display(),
    )
}

fn wait_for_port(port: u16, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Fails, saying how to get it, unless RabbitMQ and its MQTT plugin are
/// installed: nothing here skips a test for a missing tool.
pub fn require_rabbitmq() {
    let server = Path::new(BIN).join("rabbitmq-server");
    let plugin = std::fs::read_dir("/usr/lib/rabbitmq/lib")
        .into_iter()
        .flatten()
        .flatten()
        .any(|server_dir| {
            std::fs::read_dir(server_dir.path().join("plugins"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|p| {
                    p.file_name()
                        .to_string_lossy()
                        .starts_with("rabbitmq_mqtt-")
                })
        });
    let epmd = Command::new("sh")
        .args(["-c", "command -v epmd"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        server.exists() && plugin && epmd,
        "RabbitMQ with its MQTT plugin is not installed ({} or epmd missing): run \
         scripts/rabbitmq.sh (scripts/test.sh runs it), or `apt-get install rabbitmq-server`",
        server.display()
    );
}
