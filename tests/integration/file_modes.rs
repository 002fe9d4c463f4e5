//! Every file pinpost makes holds what only its service user may read (an
//! outage's readings, the lock of its spool), so each is created 0600 and
//! each directory it creates 0700, whatever umask it was started under.
//! The umask belongs to the whole process, and other tests share this one:
//! the test runs itself again in a child process of its own.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use pinpost::config::DropPolicy;
use pinpost::outbox::spool::{Record, Spool};
use pinpost::outbox::{Limits, Outbox};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn record(id: u64) -> Record {
    Record {
        id,
        created_ms: 1_764_460_800_000,
        topic: "pinpost/pi-01/input/door".into(),
        payload: vec![b'x'; 100],
        retain: false,
        stream: Some(("pinpost/pi-01/input/door".into(), id)),
    }
}

/// Every file and directory under `dir` (which the test made), with its mode.
fn walk(dir: &Path, out: &mut Vec<(String, u32)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push((path.display().to_string(), mode(&path)));
        if path.is_dir() {
            walk(&path, out);
        }
    }
}

/// Set in the child that runs the test under umask 000.
const ALONE: &str = "PINPOST_TEST_FILE_MODES_ALONE";

#[test]
fn every_file_pinpost_creates_is_0600_and_every_directory_0700_under_umask_000() {
    if std::env::var_os(ALONE).is_none() {
        // This test binary again, running only this test, in a process whose
        // umask no other test shares.
        let name = "file_modes::every_file_pinpost_creates_is_0600_and_every_directory_0700_under_umask_000";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads", "1"])
            .env(ALONE, "1")
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{said}");
        assert!(said.contains("test result: ok. 1 passed"), "{said}");
        return;
    }
    rustix::process::umask(rustix::fs::Mode::empty());
    let root = tempfile::tempdir().unwrap();

    // The agent's outbox: the lock, the spool, a directory it creates.
    let outbox_dir = root.path().join("state/outbox");
    let limits = Limits {
        memory_limit: 1 << 20,
        max_bytes: 64 << 20,
        max_age: Duration::from_secs(3600),
        policy: DropPolicy::DropOldest,
        window: 4,
    };
    let (mut outbox, opened) = Outbox::open(&outbox_dir, limits);
    assert!(opened.unavailable.is_none(), "{opened:?}");
    outbox.offline();
    for n in 0..10 {
        let seq = outbox.next_seq("s/a");
        outbox.push("s/a", vec![n], false, Some(seq), 1_000);
    }
    let persisted = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(outbox.persist(|e| panic!("{e}")));
    assert_eq!((persisted.kept, persisted.lost), (10, 0));

    // A spool that has been compacted (its file is the compaction's copy),
    // and one whose damaged file was kept aside.
    let compacted = root.path().join("state/compacted");
    let (mut spool, _) = Spool::open(&compacted).unwrap();
    spool
        .append(&(1..=50).map(record).collect::<Vec<_>>())
        .unwrap();
    spool.forget(&(1..=40).collect::<Vec<_>>()).unwrap();
    spool.compact().unwrap();
    drop(spool);
    let damaged = root.path().join("state/damaged");
    std::fs::create_dir(&damaged).unwrap();
    std::fs::set_permissions(&damaged, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(damaged.join("outbox.wal"), b"not a spool").unwrap();
    let (_, got) = Spool::open(&damaged).unwrap();
    assert_eq!(got.skipped.len(), 1);

    let mut found = Vec::new();
    walk(root.path(), &mut found);
    let names: Vec<&str> = found
        .iter()
        .map(|(p, _)| p.rsplit('/').next().unwrap())
        .collect();
    for name in [
        "outbox.lock",
        "outbox.wal",
        "outbox.wal.damaged",
        "outbox",
        "compacted",
    ] {
        assert!(names.contains(&name), "{name} in {found:?}");
    }
    for (path, mode) in &found {
        let want = if Path::new(path).is_dir() {
            0o700
        } else {
            0o600
        };
        // "state" is made by DirBuilder's recursion for outbox: ours too.
        assert_eq!(*mode, want, "{path} is {mode:o} under umask 000");
    }
}
