//! Whether the wall clock can be trusted: a time source has set it (the
//! kernel's NTP state, or systemd-timesyncd's mark), and it is not before
//! this source was written (a Pi without a real-time clock starts at 1970,
//! or at the time fake-hwclock saved at its last shutdown).
//!
//! `judge` is pure; `signals` looks for `clock.mark` (systemd-timesyncd's
//! mark unless the config names another) and, for the tools, asks the
//! kernel. The agent never asks the kernel: `adjtimex` is in systemd's
//! `@clock` group, which the service's `ProtectClock=yes` refuses even for a
//! read, and the agent keeps to `@system-service` (tests/integration/
//! deploy.rs). So for the agent the mark is what says it; a Pi that runs
//! chrony names a mark its own hook makes, or (with a real-time clock)
//! sets `clock.trust = "system"`. timedated's `NTPSynchronized` over D-Bus
//! would say it for any time service, and is the way to go further.

/// 2026-12-01T00:00:00Z: a clock before this has never been set.
pub(crate) const NOT_BEFORE_MS: i64 = 1_796_083_200_000;

/// What the kernel says of its clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    Synchronised,
    Unsynchronised,
    /// It could not be asked (a seccomp filter, another kernel).
    Unknown,
}

/// Everything the judgement rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Signals {
    pub(crate) kernel: Kernel,
    /// `clock.mark` exists, and what it is in words.
    pub(crate) marked: bool,
    pub(crate) mark: String,
    /// `clock.trust = "system"`: the device keeps its own time.
    pub(crate) system: bool,
    /// The newest time pinpost wrote in an earlier run, if known.
    pub(crate) newest_ms: Option<i64>,
    pub(crate) wall_ms: i64,
}

/// Trusted or not, and why, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trust {
    pub(crate) trusted: bool,
    pub(crate) why: String,
}

/// The judgement on `s`. A time source's word beats pinpost's own record
/// of the newest time it wrote: that may have been written by a clock that
/// was ahead.
pub(crate) fn judge(s: &Signals) -> Trust {
    let yes = |why: String| Trust { trusted: true, why };
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
    if s.kernel == Kernel::Synchronised {
        return yes("the kernel says a time source keeps it synchronised".into());
    }
    if s.marked {
        return yes(if s.mark == crate::config::TIMESYNCD_MARK {
            "systemd-timesyncd has synchronised it".into()
        } else {
            format!("{} exists (clock.mark): a time source has set it", s.mark)
        });
    }
    if s.system {
        return match s.newest_ms {
            Some(newest) if newest > s.wall_ms => no(format!(
                "it reads {}, before {}, a time pinpost wrote in an earlier run: it went back \
                 (a real-time clock that lost its battery or drifted)",
                crate::utc::rfc3339_millis(s.wall_ms),
                crate::utc::rfc3339_millis(newest)
            )),
            _ => yes("clock.trust = \"system\": this device keeps its own time".into()),
        };
    }
    let waiting = if s.mark == crate::config::TIMESYNCD_MARK {
        "systemd-timesyncd has not synchronised it".to_string()
    } else {
        format!("{} (clock.mark) does not exist", s.mark)
    };
    match s.kernel {
        Kernel::Unsynchronised => no(format!(
            "no time source has synchronised it yet: {waiting}, and the kernel says it is \
             unsynchronised (NTP has not answered yet, or none runs)"
        )),
        _ => no(format!(
            "no time source says it is set: {waiting} (if this device keeps its own time, \
             set clock.trust = \"system\")"
        )),
    }
}

/// The signals now, for `clock`; the kernel is asked only when
/// `ask_kernel`.
pub(crate) fn signals(
    clock: &crate::config::Clock,
    ask_kernel: bool,
    newest_ms: Option<i64>,
) -> Signals {
    Signals {
        kernel: if ask_kernel {
            kernel()
        } else {
            Kernel::Unknown
        },
        marked: clock.mark.exists(),
        mark: clock.mark.display().to_string(),
        system: clock.trust == crate::config::ClockTrust::System,
        newest_ms,
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
    const TIMESYNCD: &str = crate::config::TIMESYNCD_MARK;

    fn signals(kernel: Kernel, marked: bool, wall_ms: i64) -> Signals {
        Signals {
            kernel,
            marked,
            mark: TIMESYNCD.into(),
            system: false,
            newest_ms: None,
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
        let system = Signals {
            system: true,
            ..signals(Kernel::Unknown, false, 3_000)
        };
        assert!(!judge(&system).trusted);
    }

    #[test]
    fn the_kernel_or_the_mark_make_it_trusted() {
        assert!(judge(&signals(Kernel::Synchronised, false, NOW)).trusted);
        let t = judge(&signals(Kernel::Unknown, true, NOW));
        assert!(t.trusted && t.why == "systemd-timesyncd has synchronised it");
        assert!(judge(&signals(Kernel::Unsynchronised, true, NOW)).trusted);
        let t = judge(&signals(Kernel::Unsynchronised, false, NOW));
        assert!(
            !t.trusted && t.why.contains("the kernel says it is unsynchronised"),
            "{}",
            t.why
        );
        let t = judge(&signals(Kernel::Unknown, false, NOW));
        assert!(
            !t.trusted && t.why.contains("set clock.trust = \"system\""),
            "{}",
            t.why
        );
        let other = Signals {
            mark: "/run/chrony-synced".into(),
            ..signals(Kernel::Unknown, true, NOW)
        };
        assert!(
            judge(&other)
                .why
                .contains("/run/chrony-synced exists (clock.mark)")
        );
    }

    #[test]
    fn a_system_clock_is_trusted_unless_it_went_back_past_the_newest_time_written() {
        let system = |newest_ms| Signals {
            system: true,
            newest_ms,
            ..signals(Kernel::Unknown, false, NOW)
        };
        assert!(judge(&system(None)).trusted);
        assert!(judge(&system(Some(NOW - 1))).trusted);
        let t = judge(&system(Some(NOW + 3_600_000)));
        assert!(
            !t.trusted
                && t.why
                    .contains("a time pinpost wrote in an earlier run: it went back"),
            "{}",
            t.why
        );
        let synced = Signals {
            marked: true,
            ..system(Some(NOW + 3_600_000))
        };
        assert!(
            judge(&synced).trusted,
            "a time source beats pinpost's own record"
        );
    }
}
