//! The health gate: whether the agent a new release started is healthy,
//! judged from what systemd says of its unit, sample by sample. Healthy
//! is active, in an invocation started after the install, connected and
//! delivering (its STATUS line, `crate::health`). Failed is systemd
//! restarting it, or giving up on it; the words say how it ended (exit
//! status, signal, watchdog). Neither, until the timeout: still waiting.
//!
//! Pure: the samples come from `System::unit`.

/// What `systemctl show` says of the agent's unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Unit {
    /// `ActiveState`: active, activating, failed, …
    pub(crate) active: String,
    /// `SubState`: running, auto-restart, …
    pub(crate) sub: String,
    /// `InvocationID`: new at each start.
    pub(crate) invocation: String,
    /// `NRestarts`: restarts systemd made on its own (`Restart=`).
    pub(crate) restarts: u64,
    /// `StatusText`: the agent's last STATUS line.
    pub(crate) status: String,
    /// `Result`: success, exit-code, signal, watchdog, timeout, …
    pub(crate) result: String,
    /// `ExecMainStatus`: the exit status or signal number.
    pub(crate) exit_status: i64,
}

/// The judgement on one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Health {
    Healthy,
    /// It stopped; the words say how.
    Failed(String),
    Waiting,
}

/// `now` judged against `before`, the unit as it was just before the new
/// release was started.
pub(crate) fn judge(before: &Unit, now: &Unit) -> Health {
    let restarted = now.restarts > before.restarts && now.invocation != before.invocation;
    if now.active == "failed" || now.sub == "auto-restart" || restarted {
        return Health::Failed(ended(now));
    }
    if now.active == "active"
        && now.invocation != before.invocation
        && crate::health::is_delivering(&now.status)
    {
        return Health::Healthy;
    }
    Health::Waiting
}

/// Why the agent is not healthy at the timeout, in words.
pub(crate) fn not_in_time(now: &Unit, timeout: std::time::Duration) -> String {
    let within = humantime::format_duration(timeout);
    if now.active != "active" {
        return format!(
            "it was not running within {within} (systemd says {}/{})",
            now.active, now.sub
        );
    }
    if now.status.is_empty() {
        return format!("it ran, but said nothing of a connection within {within}");
    }
    format!(
        "it ran, but did not connect and deliver within {within} (it said: {})",
        now.status
    )
}

fn ended(u: &Unit) -> String {
    let how = match u.result.as_str() {
        "exit-code" => format!("it exited with status {}", u.exit_status),
        "signal" | "core-dump" => format!("it was killed by signal {}", u.exit_status),
        "watchdog" => "it stopped answering systemd's watchdog".to_string(),
        "timeout" => "it did not finish starting in time".to_string(),
        "start-limit-hit" => "it failed to start too often".to_string(),
        "" | "success" => "it stopped".to_string(),
        other => format!("it failed ({other})"),
    };
    if u.restarts > 0 {
        format!(
            "{how}; systemd restarted it {} time{}",
            u.restarts,
            if u.restarts == 1 { "" } else { "s" }
        )
    } else {
        how
    }
}

/// Reads `systemctl show -p …` output (`Key=value` lines).
pub(crate) fn parse_show(text: &str) -> Unit {
    let mut u = Unit::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "ActiveState" => u.active = value.to_string(),
            "SubState" => u.sub = value.to_string(),
            "InvocationID" => u.invocation = value.to_string(),
            "NRestarts" => u.restarts = value.parse().unwrap_or(0),
            "StatusText" => u.status = value.to_string(),
            "Result" => u.result = value.to_string(),
            "ExecMainStatus" => u.exit_status = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    u
}

/// The properties `parse_show` reads.
pub(crate) const PROPERTIES: &str =
    "ActiveState,SubState,InvocationID,NRestarts,StatusText,Result,ExecMainStatus";

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(active: &str, sub: &str, invocation: &str, restarts: u64, status: &str) -> Unit {
        Unit {
            active: active.into(),
            sub: sub.into(),
            invocation: invocation.into(),
            restarts,
            status: status.into(),
            result: "success".into(),
            exit_status: 0,
        }
    }

    #[test]
    fn healthy_only_when_a_new_invocation_connects_and_delivers() {
        let before = unit("active", "running", "a", 0, "connected to b and delivering");
        // The old process still running is not the new release.
        assert_eq!(judge(&before, &before), Health::Waiting);
        let starting = unit("activating", "start", "b", 0, "");
        assert_eq!(judge(&before, &starting), Health::Waiting);
        let connected = unit("active", "running", "b", 0, "connected to b");
        assert_eq!(judge(&before, &connected), Health::Waiting);
        let delivering = unit("active", "running", "b", 0, "connected to b and delivering");
        assert_eq!(judge(&before, &delivering), Health::Healthy);
    }

    #[test]
    fn a_release_that_exits_at_start_fails_with_its_status() {
        let before = unit("active", "running", "a", 0, "");
        let mut dead = unit("activating", "auto-restart", "b", 1, "");
        dead.result = "exit-code".into();
        dead.exit_status = 3;
        assert_eq!(
            judge(&before, &dead),
            Health::Failed("it exited with status 3; systemd restarted it 1 time".into())
        );
        let mut watchdog = unit("failed", "failed", "b", 0, "");
        watchdog.result = "watchdog".into();
        assert_eq!(
            judge(&before, &watchdog),
            Health::Failed("it stopped answering systemd's watchdog".into())
        );
    }

    #[test]
    fn systemctl_show_is_read_whatever_its_order_and_extra_lines() {
        let u = parse_show(
            "NRestarts=2\nStatusText=connected to mqtts://h:8883 and delivering\nActiveState=\
             active\nSubState=running\nInvocationID=abc\nResult=success\nExecMainStatus=0\n\
             Other=x=y\n",
        );
        assert_eq!(u.restarts, 2);
        assert_eq!(u.status, "connected to mqtts://h:8883 and delivering");
        assert_eq!(u.invocation, "abc");
        assert_eq!(u.active, "active");
    }

    #[test]
    fn a_timeout_says_how_far_it_got() {
        let t = std::time::Duration::from_secs(120);
        let u = unit("active", "running", "b", 0, "retrying in 5.0s: refused");
        assert!(not_in_time(&u, t).contains("did not connect and deliver within 2m"));
        let u = unit("activating", "start", "b", 0, "");
        assert!(not_in_time(&u, t).contains("not running within 2m"));
    }
}
