//! A witness that counts every `seq`: a `mosquitto_sub` with a persistent
//! session, QoS 1, started again when a cut ends it, and the tally that
//! says what its arrivals show (order, gaps, duplicates, reuse).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;

/// A `mosquitto_sub` with a persistent session (`-c`), QoS 1: the broker
/// keeps what it misses while it reconnects. mosquitto_sub exits when a TLS
/// connection is cut abruptly, so it is started again with the same client
/// id, which resumes the session.
pub struct Subscriber {
    command: Vec<String>,
    netns: Option<String>,
    child: Child,
    lines: mpsc::Receiver<String>,
    tx: mpsc::Sender<String>,
    subacks: usize,
    /// The client's own lines (connects, subscribes), for a failure message.
    chatter: Vec<String>,
    /// Per stream: every (seq, payload) received, in arrival order.
    pub seen: BTreeMap<String, Vec<(u64, String)>>,
    last_message: Instant,
}

impl Subscriber {
    /// Subscribes to `topic` on `host:port` (inside `netns` if given) with
    /// the `operator` certificate from `pki`.
    pub fn start(
        netns: Option<&str>,
        host: &str,
        port: u16,
        pki: &Pki,
        operator: &Files,
        topic: &str,
    ) -> Subscriber {
        require_tool("mosquitto_sub", "mosquitto-clients");
        let mut command = strings(&["-oL", "mosquitto_sub", "-d", "-v", "-q", "1", "-c"]);
        command.extend(["-i".to_string(), format!("witness-{}", std::process::id())]);
        command.extend(strings(&["-h", host, "-p", &port.to_string(), "-t", topic]));
        command.extend(tls_args(&pki.ca.cert, Some(operator)));
        let (tx, lines) = mpsc::channel();
        let netns = netns.map(str::to_string);
        let child = spawn_sub(netns.as_deref(), &command, &tx);
        let mut s = Subscriber {
            command,
            netns,
            child,
            lines,
            tx,
            subacks: 0,
            chatter: Vec::new(),
            seen: BTreeMap::new(),
            last_message: Instant::now(),
        };
        s.wait_subscribed(1);
        s
    }

    fn respawn_if_gone(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.chatter
                .push(format!("(mosquitto_sub exited: {status}; started again)"));
            std::thread::sleep(Duration::from_millis(200));
            self.child = spawn_sub(self.netns.as_deref(), &self.command, &self.tx);
        }
    }

    /// Reads what has arrived, for up to `wait`.
    pub fn read(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) => self.take(&line),
                Err(_) => self.respawn_if_gone(),
            }
        }
    }

    fn take(&mut self, line: &str) {
        if line.starts_with("Client ") || line.starts_with("Subscribed") {
            if line.contains("received SUBACK") {
                self.subacks += 1;
            }
            if !line.contains("PUBLISH") && !line.contains("PUBACK") {
                self.chatter.push(line.to_string());
            }
            return;
        }
        let Some((topic, payload)) = line.split_once(' ') else {
            return;
        };
        // The streams that carry a seq (readings and pin states); status,
        // stats and command results carry none.
        if !["/sensor/", "/input/", "/output/"]
            .iter()
            .any(|kind| topic.contains(kind))
        {
            return;
        }
        let v: serde_json::Value = serde_json::from_str(payload)
            .unwrap_or_else(|e| panic!("not JSON on {topic}: {payload:?}: {e}"));
        let seq = v["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seq: {payload}"));
        self.seen
            .entry(topic.to_string())
            .or_default()
            .push((seq, payload.to_string()));
        self.last_message = Instant::now();
    }

    /// Waits until the broker has acknowledged `count` subscriptions in
    /// all (one per start), failing after 20 s with the client's own lines.
    pub fn wait_subscribed(&mut self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.subacks < count {
            assert!(
                Instant::now() < deadline,
                "the subscriber did not subscribe a {count}th time ({:?}):\n{}",
                self.child.try_wait(),
                self.chatter.join("\n")
            );
            self.read(Duration::from_millis(50));
        }
    }

    /// Reads until nothing new has come for `quiet`.
    pub fn drain(&mut self, quiet: Duration, limit: Duration) {
        let deadline = Instant::now() + limit;
        self.last_message = Instant::now();
        while self.last_message.elapsed() < quiet && Instant::now() < deadline {
            self.read(Duration::from_millis(100));
        }
    }
}

fn spawn_sub(netns: Option<&str>, command: &[String], tx: &mpsc::Sender<String>) -> Child {
    let mut cmd = match netns {
        Some(ns) => Netns::exec(ns, "stdbuf"),
        None => Command::new("stdbuf"),
    };
    let mut child = cmd
        .args(command)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mosquitto_sub");
    let out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    for (pipe, tag) in [
        (Box::new(out) as Box<dyn std::io::Read + Send>, ""),
        (Box::new(err), "Client stderr: "),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(format!("{tag}{line}")).is_err() {
                    return;
                }
            }
        });
    }
    child
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one stream's arrivals show.
#[derive(Debug)]
pub struct Tally {
    pub unique: u64,
    pub duplicates: u64,
    pub first: u64,
    pub last: u64,
    /// (last seq before, first seq after) for every jump forward.
    pub gaps: Vec<(u64, u64)>,
}

/// Every seq new to the stream must be higher than all before it (order);
/// a jump of more than one is a gap, recorded. A seq seen before is a
/// duplicate, and must be the very same reading (a seq reused for another
/// reading is a bug).
pub fn tally(topic: &str, seqs: &[(u64, String)]) -> Tally {
    let mut t = Tally {
        unique: 0,
        duplicates: 0,
        first: seqs.first().map_or(0, |(seq, _)| *seq),
        last: 0,
        gaps: Vec::new(),
    };
    let mut seen = std::collections::HashMap::new();
    for (i, (seq, payload)) in seqs.iter().enumerate() {
        let seq = *seq;
        if let Some(first) = seen.insert(seq, payload) {
            assert_eq!(
                first, payload,
                "{topic}: seq {seq} was used for two different readings"
            );
            t.duplicates += 1;
            continue;
        }
        if t.unique > 0 {
            assert!(
                seq > t.last,
                "{topic}: after seq {} came seq {seq} (arrival {i}): a reordering",
                t.last
            );
            if seq > t.last + 1 {
                t.gaps.push((t.last, seq));
            }
        }
        t.unique += 1;
        t.last = seq;
    }
    t
}
