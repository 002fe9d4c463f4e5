//! The agent on a disk that fills up while the broker is out of reach: its
//! shutdown says exactly how many unacknowledged messages it kept on disk
//! and how many it lost, and the next start finds exactly those kept.
//! No broker is involved: the agent is offline from its start.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use pinpost::outbox::spool::Spool;

/// A tmpfs of `size` (e.g. "64k") on `dir`, unmounted when dropped.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(dir: &'a Path, size: &str) -> Tmpfs<'a> {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount a tmpfs on {} (needs root)",
            dir.display()
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

/// "N messages the broker has not acknowledged are kept in DIR …; M could
/// not be written there and are lost (…)" → (N, M).
fn kept_and_lost(line: &str) -> (usize, usize) {
    let number = |text: &str| -> usize {
        text.trim_start()
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number at {text:?} in {line:?}"))
    };
    let at = line
        .find(" messages the broker has not acknowledged")
        .unwrap_or_else(|| panic!("{line}"));
    let start = line[..at].rfind(' ').map_or(0, |i| i + 1);
    let kept = number(&line[start..]);
    let lost_at = line
        .find("; ")
        .unwrap_or_else(|| panic!("nothing lost in {line:?}"));
    let lost = number(&line[lost_at + 2..]);
    assert!(
        line.contains("could not be written there and are lost"),
        "{line}"
    );
    (kept, lost)
}

#[test]
fn on_a_full_disk_the_shutdown_says_exactly_how_many_messages_were_kept_and_lost() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let _tmpfs = Tmpfs::mount(&disk, "64k");
    let spool = disk.join("outbox");
    let config = dir.path().join("pinpost.toml");
    // Nothing listens on the port: every reading goes to the spool.
    std::fs::write(
        &config,
        format!(
            "{head}[reconnect]\ninitial = \"100ms\"\nmax = \"500ms\"\n\
             [board]\nkind = \"sim\"\n\
             [outbox]\npath = \"{spool}\"\n\
             [[sensor]]\nname = \"fast\"\nkind = \"sim\"\ninterval = \"5ms\"\nunit = \"V\"\n",
            head = ConfigHead::new(free_port("127.0.0.1")).no_tls(),
            spool = spool.display()
        ),
    )
    .unwrap();
    let mut agent = Background::start(&strings(&[
        "run",
        "--config",
        &config.display().to_string(),
    ]));
    agent.wait_for("No space left on device", Duration::from_secs(30));
    // Readings go on arriving, and now have nowhere to go but memory.
    std::thread::sleep(Duration::from_millis(500));
    let term = Command::new("kill")
        .args(["-TERM", &agent.pid().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let log = agent.log(Duration::from_secs(20));
    let line = log
        .lines()
        .find(|l| l.contains("are kept in"))
        .unwrap_or_else(|| panic!("no shutdown message:\n{log}"));
    assert!(
        line.contains("ERROR"),
        "losing messages is an error: {line}"
    );
    assert!(line.contains("No space left on device"), "says why: {line}");
    eprintln!("shutdown said: {line}");
    let (kept, lost) = kept_and_lost(line);
    assert!(kept > 50 && lost > 10, "{line}");

    // Exactly the kept ones are on disk for the next start.
    let (_, recovered) = Spool::open(&spool).unwrap();
    assert_eq!(recovered.records.len(), kept, "{line}");
    assert!(recovered.skipped.is_empty(), "{:?}", recovered.skipped);
}
