//! The independent witness of delivery: a `mosquitto_sub` subscribed to a
//! topic, whose printed messages a test reads. It knows the broker only by
//! address, never pinpost's code.

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::broker::Broker;
use super::process::{lines_of, require_tool};

/// A `mosquitto_sub` that witnesses what the broker delivers.
pub struct Witness {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Witness {
    /// Subscribes to `topic` with `args` (connection flags) and returns once
    /// the broker has acknowledged the subscription.
    pub fn start(broker: &Broker, topic: &str, args: &[String]) -> Witness {
        Witness::at(&broker.host, broker.port, topic, args)
            .unwrap_or_else(|e| panic!("{e}\nbroker log:\n{}", broker.log()))
    }

    /// As [`Witness::start`], for any broker at `host:port` (one this
    /// harness did not start as a [`Broker`]); an error says what
    /// mosquitto_sub said.
    pub fn at(host: &str, port: u16, topic: &str, args: &[String]) -> Result<Witness, String> {
        require_tool("mosquitto_sub", "mosquitto-clients");
        // mosquitto_sub buffers stdout when it is a pipe; stdbuf makes it
        // line-buffered so each message is seen when it arrives.
        let mut child = Command::new("stdbuf")
            .args([
                "-oL",
                "mosquitto_sub",
                "-d",
                "-v",
                "-q",
                "1",
                "-h",
                host,
                "-p",
                &port.to_string(),
            ])
            .args(["-t", topic])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mosquitto_sub");
        let lines = lines_of(child.stdout.take().expect("stdout"));
        let mut witness = Witness { child, lines };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match witness.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains("received SUBACK") => return Ok(witness),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = witness.child.kill();
        let mut err = String::new();
        if let Some(mut pipe) = witness.child.stderr.take() {
            use std::io::Read;
            let _ = pipe.read_to_string(&mut err);
        }
        Err(format!("mosquitto_sub never subscribed: {err}"))
    }

    /// Messages (`topic payload`) received within `wait`, debug lines left out.
    pub fn messages(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if is_debug(&line) => {}
                Ok(line) => out.push(line),
                Err(_) => break,
            }
        }
        out
    }

    /// Waits until a line satisfies `done` and returns every message line
    /// seen up to it; panics naming `what` if none does within `wait`.
    pub fn wait_until(
        &self,
        what: &str,
        wait: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if is_debug(&line) => {}
                Ok(line) => {
                    let found = done(&line);
                    out.push(line);
                    if found {
                        return out;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "the subscriber never saw {what}; it saw:\n{}",
            out.join("\n")
        );
    }

    /// Waits until `expected` arrives (or `wait` passes) and returns all seen.
    pub fn wait_for(&self, expected: &str, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if is_debug(&line) => {}
                Ok(line) => {
                    let done = line == expected;
                    out.push(line);
                    if done {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        out
    }
}

fn is_debug(line: &str) -> bool {
    line.starts_with("Client ") || line.starts_with("Subscribed (mid")
}

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
