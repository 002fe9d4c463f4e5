//! Talking to systemd (`Type=notify`): READY, STATUS lines and watchdog
//! pings. Each call does nothing when systemd did not start us.

use std::time::Duration;

use sd_notify::NotifyState;

pub(super) fn ready() {
    send(&[NotifyState::Ready]);
}

pub(super) fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

pub(super) fn stopping() {
    send(&[NotifyState::Stopping]);
}

pub(super) fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to ping: half of `WatchdogSec`, as systemd recommends.
pub(super) fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "systemd notification not sent");
    }
}
