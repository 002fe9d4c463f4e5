//! A Pi without a clock: the agent runs under libfaketime (the wall clock
//! moved, the monotonic and boot-time clocks left alone, as a real NTP
//! step leaves them), keeps readings while offline with its clock at 1970
//! or three weeks behind, then the clock is set to now and the link comes
//! back. Every reading made before the jump must arrive: an outbox age is
//! time that passed, not a wall-clock subtraction. The jump is logged, how
//! far and which way. A subscriber with a persistent session is the witness.

use std::path::Path;
use std::time::Duration;

use crate::common::subscriber::{Subscriber, tally};
use crate::common::*;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Runs the agent offline with its clock `behind` (a libfaketime offset),
/// sets the clock to now, opens the link, and checks what arrives.
fn readings_kept_across_a_clock_set_forward(behind: &str, max_age: &str, made_before: &str) {
    require_tool("faketime", "faketime");
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's libfaketime (scripts/test.sh does)"
    );
    let pki = Pki::new("clock");
    let server = pki.server(&["127.0.0.1"]);
    pki.client("pi-01");
    let operator = pki.client("operator");
    let broker = Broker::mutual(&pki, server);
    let gate = Gate::start("127.0.0.1", broker.port);
    gate.close();
    let mut sub = Subscriber::start(
        None,
        "127.0.0.1",
        broker.port,
        &pki,
        &operator,
        "pinpost/pi-01/sensor/#",
    );
    let dir = pki.path();
    let config = dir.join("pinpost.toml");
    std::fs::write(
        &config,
        format!(
            "{head}[reconnect]\ninitial = \"100ms\"\nmax = \"500ms\"\n[board]\nkind = \"sim\"\n\
             [outbox]\npath = \"{spool}\"\nmax_age = \"{max_age}\"\n\
             [[sensor]]\nname = \"temp\"\nkind = \"sim\"\ninterval = \"100ms\"\nunit = \"°C\"\n",
            head = ConfigHead::new(gate.port).host("127.0.0.1"),
            spool = dir.join("spool").display(),
        ),
    )
    .unwrap();
    let clock = dir.join("faketime");
    std::fs::write(&clock, format!("{behind}\n")).unwrap();
    let mut agent = Background::start_with_env(
        &strings(&["run", "--config", &config.display().to_string()]),
        &[
            ("RUST_LOG", "pinpost=info".to_string()),
            ("LD_PRELOAD", LIBFAKETIME.to_string()),
            ("FAKETIME_TIMESTAMP_FILE", clock.display().to_string()),
            ("FAKETIME_NO_CACHE", "1".to_string()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ],
    );
    agent.wait_for("starting", Duration::from_secs(10));
    // About 30 readings made, and kept, with the clock behind.
    std::thread::sleep(Duration::from_secs(3));
    std::fs::write(&clock, "+0\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    gate.open();
    sub.read(Duration::from_secs(6));
    let log = agent.log(Duration::from_millis(200));
    let readings = sub
        .seen
        .get("pinpost/pi-01/sensor/temp")
        .cloned()
        .unwrap_or_default();
    let t = tally("pinpost/pi-01/sensor/temp", &readings);
    assert_eq!(t.first, 1, "the first reading was lost; agent: {log}");
    assert!(
        t.gaps.is_empty(),
        "readings lost: {:?}; agent: {log}",
        t.gaps
    );
    let before = readings
        .iter()
        .filter(|(_, payload)| payload.contains(&format!("\"ts\":\"{made_before}")))
        .count();
    assert!(
        before >= 20,
        "only {before} readings stamped {made_before}… arrived of {}; agent: {log}",
        readings.len()
    );
    assert!(
        !log.contains("expired"),
        "nothing may expire by a clock jump: {log}"
    );
    assert!(
        log.contains("the clock jumped forward by"),
        "the jump is said: {log}"
    );
    assert!(
        log.contains(&format!("the clock is not trusted: it reads {made_before}")),
        "a clock before this pinpost was written is said untrusted: {log}"
    );
    println!(
        "{} readings in order without a gap, {before} of them made before the clock was set ({made_before}…)",
        t.unique
    );
}

#[test]
fn readings_made_at_1970_arrive_after_the_clock_is_set() {
    // Back by today's day number: the same time of day on 1970-01-01.
    let days = unix_now() / 86_400;
    readings_kept_across_a_clock_set_forward(&format!("-{days}d"), "1h", "1970-01-01");
}

#[test]
fn readings_made_three_weeks_behind_arrive_after_the_clock_is_set() {
    let three_weeks_ago = unix_now() - 21 * 86_400;
    let day = days_to_date(three_weeks_ago / 86_400);
    readings_kept_across_a_clock_set_forward("-21d", "7d", &day);
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DD` of a day number since 1970 (Howard Hinnant's civil_from_days).
fn days_to_date(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
