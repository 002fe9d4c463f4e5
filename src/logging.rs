//! Where log lines go: the systemd journal when systemd started us, stderr
//! otherwise. `-d` or `RUST_LOG` raise the level. Nothing here, or anywhere,
//! logs passwords or key material (the config's `Secret` prints as `***`).

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// Starts logging. `default` is the level when neither `-d` nor `RUST_LOG`
/// says otherwise ("warn" for one-shot commands, "info" for the agent).
pub fn init(debug: bool, default: &str) {
    let filter = match (debug, std::env::var("RUST_LOG")) {
        (_, Ok(spec)) if !spec.is_empty() => EnvFilter::new(spec),
        (true, _) => EnvFilter::new("pinpost=debug,rumqttc=info,rustls=info,rumqttd=warn,info"),
        (false, _) => EnvFilter::new(default),
    };
    let journald = if under_journald() {
        tracing_journald::layer().ok()
    } else {
        None
    };
    let registry = tracing_subscriber::registry().with(filter);
    // Only one of the two is ever present.
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
    });
    let _ = registry.with(journald).with(stderr).try_init();
}

/// systemd sets `JOURNAL_STREAM=dev:inode` for the stream it connects to
/// stderr; a journal socket existing on the machine is not enough, since a
/// person running pinpost in a shell wants lines on the terminal.
fn under_journald() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream == format!("{}:{}", meta.dev(), meta.ino())
}
