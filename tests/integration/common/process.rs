//! Running programs as a user would: the `pinpost` binary in the
//! foreground (killed after a limit) or in the background (stderr read line
//! by line, killed on drop), and the small helpers that read what they
//! said. Knows nothing of brokers except how to show one's log on failure.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::broker::Broker;

/// The pinpost binary Cargo built for these tests.
pub const PINPOST: &str = env!("CARGO_BIN_EXE_pinpost");

/// Fails, saying how to install it, unless `tool` is on the PATH: nothing
/// here skips a test for a missing tool.
pub fn require_tool(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{tool}` is not installed: run the test script (scripts/test.sh), which installs it, \
         or `apt-get install {package}`"
    );
}

/// Lines from a child's pipe, read on a thread as they arrive.
pub(super) fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Runs pinpost with `args`, killed after `limit`.
pub fn pinpost(args: &[String], limit: Duration) -> Output {
    pinpost_with_stdin(args, None, limit)
}

/// Runs pinpost with `args` and `stdin` written to it, killed after `limit`.
/// pinpost run in `dir` with `args` and no config from the environment,
/// for at most 90 s: (success, stdout then stderr).
pub fn pinpost_in(dir: &std::path::Path, args: &[impl AsRef<str>]) -> (bool, String) {
    let mut cmd = Command::new(PINPOST);
    cmd.current_dir(dir)
        .args(args.iter().map(AsRef::as_ref))
        .env_remove("PINPOST_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run_limited(cmd, None, Duration::from_secs(90));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    (out.status.success(), said)
}

pub fn pinpost_with_stdin(args: &[String], stdin: Option<&str>, limit: Duration) -> Output {
    let mut cmd = Command::new(PINPOST);
    cmd.args(args)
        .env_remove("PINPOST_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    run_limited(cmd, stdin, limit)
}

/// Runs `cmd` (stdin piped if `stdin` is given), killed and failed after
/// `limit`.
pub fn run_limited(mut cmd: Command, stdin: Option<&str>, limit: Duration) -> Output {
    let mut child = cmd.spawn().expect("start process");
    if let Some(text) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{cmd:?} did not finish within {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// pinpost running in the background, its stderr read line by line.
pub struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    _state: tempfile::TempDir,
}

impl Background {
    /// Starts pinpost with `args`.
    pub fn start(args: &[String]) -> Background {
        Self::start_with_env(args, &[])
    }

    /// Starts pinpost with `args` and these environment variables.
    pub fn start_with_env(args: &[String], env: &[(&str, String)]) -> Background {
        let mut cmd = Command::new(PINPOST);
        cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
        Self::spawn(cmd)
    }

    /// Starts `cmd` (a pinpost, however it is launched) in the background.
    pub fn spawn(mut cmd: Command) -> Background {
        // Each agent gets its own outbox spool, never the machine's
        // /var/lib/pinpost (tests run as root), unless the test chose one.
        let state = tempfile::tempdir().expect("state dir");
        if !cmd.get_envs().any(|(k, _)| k == "STATE_DIRECTORY") {
            cmd.env("STATE_DIRECTORY", state.path());
        }
        let mut child = cmd
            .env_remove("PINPOST_CONFIG")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pinpost");
        let lines = lines_of(child.stderr.take().expect("stderr"));
        Background {
            child,
            lines,
            seen: Vec::new(),
            _state: state,
        }
    }

    /// Waits for a stderr line containing `needle`; panics with all seen.
    pub fn wait_for(&mut self, needle: &str, wait: Duration) {
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("never saw {needle:?} on stderr:\n{}", self.seen.join("\n"));
    }

    /// The process id, to signal it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stderr line so far, reading on until the process closes
    /// stderr or `wait` passes.
    pub fn log(&mut self, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => break,
            }
        }
        self.seen.join("\n")
    }

    /// Waits for the process to end by itself and returns its stdout.
    pub fn finish(mut self, wait: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + wait;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                panic!(
                    "pinpost did not finish within {wait:?}:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut out = Vec::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            std::io::Read::read_to_end(&mut stdout, &mut out).expect("read stdout");
        }
        (status, String::from_utf8_lossy(&out).into_owned())
    }
}

impl Drop for Background {
    /// A test that ends, passes or panics, takes its pinpost with it: none
    /// is left running to hold ports, spools or CPU for the tests after.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Owned arguments from string literals.
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// What a finished process wrote on stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and explains the failure with pinpost's words and the broker's log.
pub fn assert_ok(out: &Output, broker: &Broker) {
    assert!(
        out.status.success(),
        "pinpost failed ({:?}): {}\nbroker log:\n{}",
        out.status,
        stderr(out),
        broker.log()
    );
}
