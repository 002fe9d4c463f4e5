//! Whether the wall clock can be trusted: a time source has set it (the
//! kernel's NTP state, or systemd-timesyncd's mark), and it is not before
//! this source was written (a Pi without a real-time clock starts at 1970,
//! or at the time fake-hwclock saved at its last shutdown).
//!
//! `judge` is pure; `signals` asks the filesystem and, for the tools, the
//! kernel. The agent never asks the kernel: `adjtimex` is in systemd's
//! `@clock` group, which the service's `ProtectClock=yes` refuses even for a
//! read, and the agent keeps to `@system-service` (tests/integration/
//! deploy.rs). So for the agent timesyncd's mark is what says it; a Pi that
//! runs chrony instead is not known to be set (timedated's `NTPSynchronized`
//! over D-Bus would say, and is the way to go further).

/// 2026-12-01T00:00:00Z: a clock before this has never been set.
pub(crate) const NOT_BEFORE_MS: i64 = 1_796_083_200_000;

/// systemd-timesyncd makes this once it has synchronised the clock.
const TIMESYNCD_MARK: &str = "/run/systemd/timesync/synchronized";

/// What the kernel says of its clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    Synchronised,
    Unsynchronised,
    /// It could not be asked (a seccomp filter, another kernel).
    Unknown,
}

/// Everything the judgement rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Signals {
    pub(crate) kernel: Kernel,
    pub(crate) timesyncd: bool,
    pub(crate) wall_ms: i64,
}

/// Trusted or not, and why, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trust {
    pub(crate) trusted: bool,
    pub(crate) why: String,
}

/// The judgement on `s`.
pub(crate) fn judge(s: &Signals) -> Trust {
    let yes = |why: &str| Trust {
        trusted: true,
        why: why.to_string(),
    };
    let no = |why: String| Trust {
        trusted: false,
        why,
    };
    if s.wall_ms < NOT_BEFORE_MS {
        return no(format!(
            "it reads {}, before this pinpost was written (2026-12-01): it has not been set",
            crate::utc::rfc3339_millis(s.wall_ms)
        ));
    }
    match (s.kernel, s.timesyncd) {
        (Kernel::Synchronised, _) => yes("the kernel says a time source keeps it synchronised"),
        (_, true) => yes("systemd-timesyncd has synchronised it"),
        (Kernel::Unsynchronised, false) => no(
            "the kernel says no time source has synchronised it (NTP has not answered yet, or none runs)"
                .into(),
        ),
        (Kernel::Unknown, false) => no(
            "no time source says it is set (systemd-timesyncd has not synchronised it, and the kernel cannot be asked here)"
                .into(),
        ),
    }
}

/// The signals now; the kernel is asked only when `ask_kernel`.
pub(crate) fn signals(ask_kernel: bool) -> Signals {
    Signals {
        kernel: if ask_kernel {
            kernel()
        } else {
            Kernel::Unknown
        },
        timesyncd: std::path::Path::new(TIMESYNCD_MARK).exists(),
        wall_ms: crate::utc::now_unix_millis(),
    }
}

/// The kernel's NTP state: `adjtimex` with no change asked is a read.
fn kernel() -> Kernel {
    // SAFETY: a zeroed timex with `modes = 0` asks for nothing to change;
    // the kernel only writes into the struct it is handed.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    match state {
        -1 => Kernel::Unknown,
        libc::TIME_ERROR => Kernel::Unsynchronised,
        _ if tx.status & libc::STA_UNSYNC != 0 => Kernel::Unsynchronised,
        _ => Kernel::Synchronised,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_560_000_000;

    fn signals(kernel: Kernel, timesyncd: bool, wall_ms: i64) -> Signals {
        Signals {
            kernel,
            timesyncd,
            wall_ms,
        }
    }

    #[test]
    fn a_clock_at_1970_is_not_trusted_whatever_else_says_so() {
        let t = judge(&signals(Kernel::Synchronised, true, 3_000));
        assert!(!t.trusted);
        assert!(
            t.why
                .starts_with("it reads 1970-01-01T00:00:03.000Z, before this pinpost was written"),
            "{}",
            t.why
        );
    }

    #[test]
    fn the_kernel_or_timesyncd_make_it_trusted() {
        assert!(judge(&signals(Kernel::Synchronised, false, NOW)).trusted);
        assert!(judge(&signals(Kernel::Unknown, true, NOW)).trusted);
        assert!(judge(&signals(Kernel::Unsynchronised, true, NOW)).trusted);
        let t = judge(&signals(Kernel::Unsynchronised, false, NOW));
        assert!(
            !t.trusted && t.why.contains("no time source has synchronised it"),
            "{}",
            t.why
        );
        let t = judge(&signals(Kernel::Unknown, false, NOW));
        assert!(
            !t.trusted && t.why.contains("the kernel cannot be asked here"),
            "{}",
            t.why
        );
    }
}
