//! Where log lines go: the systemd journal when systemd started us, stderr
//! otherwise. `-d` raises the level to debug; `RUST_LOG`, when set, replaces
//! the filter. Nothing here, or anywhere, logs passwords or key material
//! (the config's `Secret` prints as `***`).

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Starts logging. `default` is the level when neither `-d` nor `RUST_LOG`
/// says otherwise ("warn" for one-shot commands, "info" for the agent).
pub fn init(debug: bool, default: &str) {
    let spec = match (debug, std::env::var("RUST_LOG")) {
        (_, Ok(spec)) if !spec.is_empty() => spec,
        (true, _) => "pinpost=debug,rumqttc=info,rustls=info,rumqttd=warn,info".to_string(),
        (false, _) => default.to_string(),
    };
    let filter = filter(&spec, default);
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

/// `target=level` directives separated by commas, and a bare level for the
/// rest (RUST_LOG as tracing reads it, without span filters, whose regex
/// engine would cost the Pi binary a tenth of its size). A spec that does
/// not parse is said once, on stderr, and `default` used instead.
fn filter(spec: &str, default: &str) -> Targets {
    spec.parse().unwrap_or_else(|e| {
        eprintln!(
            "pinpost: RUST_LOG={spec:?} is not understood ({e}); pinpost reads levels per \
             target, separated by commas (e.g. \"pinpost=debug,info\"); using {default:?}"
        );
        default.parse().unwrap_or_default()
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn rust_log_sets_levels_per_target_and_a_bad_one_falls_back() {
        let f = filter("pinpost=debug,rumqttc=warn,info", "info");
        assert!(f.would_enable("pinpost::agent", &Level::DEBUG));
        assert!(!f.would_enable("rumqttc::state", &Level::INFO));
        assert!(f.would_enable("rustls", &Level::INFO));
        assert!(!f.would_enable("rustls", &Level::DEBUG));
        let f = filter("pinpost=loud", "warn");
        assert!(f.would_enable("pinpost", &Level::WARN));
        assert!(!f.would_enable("pinpost", &Level::INFO));
    }
}
