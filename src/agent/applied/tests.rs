//! The record of applied commands across restarts, reboots, power cuts,
//! clock steps and failing disks.

use super::*;
use crate::agent::syncer::testing::{Gate, OpenOnDrop};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const T: i64 = 1_795_430_292_000;

fn stamp(at_millis: i64, key: &str) -> Stamp {
    Stamp {
        at_millis,
        key: key.into(),
    }
}

fn names() -> Vec<String> {
    vec!["relay".into(), "fan".into()]
}

#[test]
fn a_command_is_applied_once_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut applied, problems) = Applied::load(dir.path(), &names(), T);
    assert!(
        problems.is_empty(),
        "no file yet is a first start: {problems:?}"
    );
    let on = stamp(T, "id:c1");
    assert_eq!(applied.check(0, &on), Ok(()));
    applied.record(0, &on).unwrap();
    let e = applied.check(0, &on).unwrap_err();
    assert!(e.starts_with("already applied"), "{e}");
    assert_eq!(applied.check(1, &on), Ok(()), "outputs are apart");

    let (again, problems) = Applied::load(dir.path(), &names(), T + 60_000);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(
        again
            .check(0, &on)
            .unwrap_err()
            .starts_with("already applied")
    );
    let mode = fs::metadata(dir.path().join(FILE_NAME))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!dir.path().join("applied-commands.json.tmp").exists());
}

#[test]
fn an_older_command_cannot_undo_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut applied, _) = Applied::load(dir.path(), &names(), T);
    applied.record(0, &stamp(T, "crc:1")).unwrap();
    let e = applied.check(0, &stamp(T - 1, "crc:2")).unwrap_err();
    assert!(
        e.contains("a command stamped 2026-11-23T10:38:12.000Z has already been applied"),
        "{e}"
    );
    assert_eq!(
        applied.check(0, &stamp(T, "crc:2")),
        Ok(()),
        "same instant, other command"
    );
    applied.record(0, &stamp(T + 1, "crc:3")).unwrap();
    assert!(applied.check(0, &stamp(T, "crc:2")).is_err());
}

#[test]
fn commands_at_one_instant_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (mut applied, _) = Applied::load(dir.path(), &names(), T);
    for i in 0..MAX_KEYS {
        applied.record(0, &stamp(T, &format!("id:{i}"))).unwrap();
    }
    let e = applied.record(0, &stamp(T, "id:one-more")).unwrap_err();
    assert!(e.contains("give each command its own \"ts\""), "{e}");
    let size = fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
    assert!(size < 4096, "{size} bytes");
}

#[test]
fn a_damaged_record_refuses_everything_stamped_before_the_start() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(FILE_NAME), b"{\"outputs\":{\"relay\":").unwrap();
    let (applied, problems) = Applied::load(dir.path(), &names(), T);
    assert!(problems[0].contains("is damaged"), "{problems:?}");
    let e = applied.check(0, &stamp(T - 1000, "id:old")).unwrap_err();
    assert!(
        e.contains(
            "before 2026-11-23T10:38:12.000Z, when pinpost started without a complete \
             record of applied commands"
        ),
        "{e}"
    );
    assert_eq!(applied.check(1, &stamp(T + 1, "id:new")), Ok(()));

    fs::write(dir.path().join(FILE_NAME), vec![b' '; 300 * 1024]).unwrap();
    let (_, problems) = Applied::load(dir.path(), &names(), T);
    assert!(
        problems[0].contains("larger than pinpost ever writes"),
        "{problems:?}"
    );
}

#[test]
fn a_record_that_cannot_be_written_refuses_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("missing");
    let (mut applied, _) = Applied::load(&gone, &names(), T);
    let e = applied.record(0, &stamp(T, "id:c1")).unwrap_err();
    assert!(
        e.starts_with("not applied: cannot record it as applied"),
        "{e}"
    );
    assert_eq!(applied.check(0, &stamp(T, "id:c1")), Ok(()), "nothing kept");
}

#[test]
fn outputs_no_longer_configured_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let (mut applied, _) = Applied::load(dir.path(), &names(), T);
    applied.record(1, &stamp(T, "id:f")).unwrap();
    let (mut renamed, _) = Applied::load(dir.path(), &["relay".to_string()], T);
    renamed.record(0, &stamp(T, "id:r")).unwrap();
    let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
    assert!(text.contains("relay") && !text.contains("fan"), "{text}");
}

const BOOT_A: &str = "3f1d6a2e-0000-4000-8000-00000000000a";
const BOOT_B: &str = "3f1d6a2e-0000-4000-8000-00000000000b";

fn load_in(dir: &Path, boot: &str, now: i64) -> (Applied, Vec<String>) {
    Applied::load_with(dir, &names(), now, boot, syncer::fsync())
}

#[test]
fn the_record_reaches_the_kernel_before_the_pin_moves_even_while_the_disk_is_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Gate::default();
    let (mut applied, problems) = Applied::load_with(dir.path(), &names(), T, BOOT_A, disk.step());
    let _release = OpenOnDrop(disk.clone());
    assert!(problems.is_empty(), "{problems:?}");
    applied.record(0, &stamp(T, "id:c1")).unwrap();
    // The syncer is now stuck in fsync, and stays stuck...
    disk.wait_until_held();
    // ...while more commands are recorded, each without waiting for it.
    applied.record(0, &stamp(T + 1, "id:c2")).unwrap();
    applied.record(1, &stamp(T + 2, "id:c3")).unwrap();
    // A restart in the same boot (kill -9, a panic) reads what the
    // kernel holds: every one of them is a replay.
    let (again, problems) = load_in(dir.path(), BOOT_A, T + 10);
    assert!(problems.is_empty(), "{problems:?}");
    for (output, c) in [(0, stamp(T + 1, "id:c2")), (1, stamp(T + 2, "id:c3"))] {
        let e = again.check(output, &c).unwrap_err();
        assert!(e.starts_with("already applied"), "{e}");
    }
    assert!(again.check(0, &stamp(T, "id:c1")).is_err(), "older than c2");
}

#[test]
fn after_a_power_cut_an_unsynced_record_from_the_last_boot_floors_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(FILE_NAME);
    let (mut applied, _) = load_in(dir.path(), BOOT_A, T);
    applied.record(0, &stamp(T, "id:c1")).unwrap();
    // What the start made durable, before c2 was recorded.
    let durable = fs::read(&file).unwrap();
    applied.record(0, &stamp(T + 1000, "id:c2")).unwrap();
    drop(applied);
    // The power cut: c2's record never reached the disk.
    fs::write(&file, &durable).unwrap();

    let start = T + 60_000;
    let (after, problems) = load_in(dir.path(), BOOT_B, start);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("was left by an earlier boot without a clean stop")
            && problems[0].contains("commands stamped before now are refused"),
        "{problems:?}"
    );
    let e = after.check(0, &stamp(T + 1000, "id:c2")).unwrap_err();
    assert!(
        e.contains("without a complete record"),
        "c2 is not applied again: {e}"
    );
    let e = after.check(1, &stamp(start - 1, "id:c3")).unwrap_err();
    assert!(e.contains("without a complete record"), "every output: {e}");
    assert_eq!(
        after.check(0, &stamp(start, "id:c4")),
        Ok(()),
        "fresh ones go"
    );
    assert_eq!(after.check(1, &stamp(start + 1, "id:c5")), Ok(()));

    // The floor is kept: a restart in the same boot refuses no more.
    drop(after);
    let (restarted, problems) = load_in(dir.path(), BOOT_B, start + 5000);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(restarted.check(0, &stamp(start + 1, "id:c6")), Ok(()));
    assert!(restarted.check(0, &stamp(start - 1, "id:c7")).is_err());
}

#[test]
fn a_first_start_is_made_durable_before_any_command_so_a_power_cut_cannot_hide_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(FILE_NAME);
    let (mut applied, problems) = load_in(dir.path(), BOOT_A, T);
    assert!(problems.is_empty(), "{problems:?}");
    let durable = fs::read(&file).expect("written at start");
    applied.record(0, &stamp(T, "id:c1")).unwrap();
    drop(applied);
    fs::write(&file, &durable).unwrap();
    let (after, problems) = load_in(dir.path(), BOOT_B, T + 60_000);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(after.check(0, &stamp(T, "id:c1")).is_err());
}

#[test]
fn a_record_closed_by_a_clean_stop_is_trusted_after_a_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let (mut applied, _) = load_in(dir.path(), BOOT_A, T);
    applied.record(0, &stamp(T, "id:c1")).unwrap();
    assert_eq!(applied.close(), None);
    drop(applied);

    let start = T + 60_000;
    let (mut after, problems) = load_in(dir.path(), BOOT_B, start);
    assert!(problems.is_empty(), "a clean reboot: {problems:?}");
    assert!(
        after
            .check(0, &stamp(T, "id:c1"))
            .unwrap_err()
            .starts_with("already applied")
    );
    assert_eq!(
        after.check(0, &stamp(T + 1, "id:c2")),
        Ok(()),
        "stamped before this start, and still not refused"
    );
    assert_eq!(after.check(1, &stamp(start - 1, "id:c3")), Ok(()));
    // Started, it is this boot's and not clean on the disk again: a
    // power cut now must not leave a "clean" record behind.
    let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
    assert!(
        text.contains(BOOT_B) && text.contains("\"clean\":false"),
        "{text}"
    );
    after.record(0, &stamp(T + 1, "id:c2")).unwrap();
}

#[test]
fn a_restart_in_the_same_boot_without_a_clean_stop_floors_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut applied, _) = load_in(dir.path(), BOOT_A, T);
    applied.record(0, &stamp(T, "id:c1")).unwrap();
    drop(applied); // as kill -9 leaves it
    let (after, problems) = load_in(dir.path(), BOOT_A, T + 60_000);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(after.check(0, &stamp(T + 1, "id:c2")), Ok(()));
    assert_eq!(after.check(1, &stamp(T - 1, "id:c3")), Ok(()));
}

static FAKE_WALL: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

#[test]
fn a_floor_moves_with_the_clock_when_it_is_set_after_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (mut applied, _) = load_in(dir.path(), BOOT_A, T);
    applied.record(0, &stamp(T, "id:c1")).unwrap();
    drop(applied);
    // A Pi without a real-time clock after a power cut: it starts an
    // hour behind (fake-hwclock), and the clock is set a while later.
    let hour = 3_600_000;
    let behind = T - hour;
    std::fs::write(
        dir.path().join(FILE_NAME),
        fs::read_to_string(dir.path().join(FILE_NAME))
            .unwrap()
            .replace(BOOT_A, BOOT_B),
    )
    .unwrap();
    let (mut after, problems) = load_in(dir.path(), BOOT_A, behind);
    assert_eq!(problems.len(), 1, "{problems:?}");
    FAKE_WALL.store(behind, Ordering::SeqCst);
    after.loaded.1 = behind;
    after.wall = || FAKE_WALL.load(Ordering::SeqCst);
    assert_eq!(after.check(1, &stamp(behind, "id:x")), Ok(()));
    // Set: now an hour and a minute on, which the start really was.
    FAKE_WALL.store(behind + hour + 60_000, Ordering::SeqCst);
    let e = after.check(1, &stamp(T + 1000, "id:c2")).unwrap_err();
    assert!(e.contains("without a complete record"), "{e}");
    assert_eq!(after.check(1, &stamp(T + 60_000, "id:c3")), Ok(()));
    // And the floor that is written is the one the clock knows now.
    after.record(0, &stamp(T + 60_000, "id:c3")).unwrap();
    drop(after);
    let (restarted, _) = load_in(dir.path(), BOOT_A, T + 61_000);
    assert!(restarted.check(1, &stamp(T + 1000, "id:c2")).is_err());
}

#[test]
fn a_device_without_outputs_writes_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut applied, problems) = Applied::load_with(dir.path(), &[], T, BOOT_A, syncer::fsync());
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(applied.close(), None);
    assert!(!dir.path().join(FILE_NAME).exists());
}

#[test]
fn a_record_written_before_boot_ids_is_trusted_as_it_was_synced() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join(FILE_NAME),
        r#"{"outputs":{"relay":{"ts":1795430292000,"keys":["id:c1"]}}}"#,
    )
    .unwrap();
    let (after, problems) = load_in(dir.path(), BOOT_B, T + 60_000);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(after.check(0, &stamp(T, "id:c1")).is_err());
    assert_eq!(after.check(0, &stamp(T + 1, "id:c2")), Ok(()));
}

#[test]
fn without_a_boot_id_only_a_clean_stop_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut applied, _) = load_in(dir.path(), "", T);
    applied.record(0, &stamp(T, "id:c1")).unwrap();
    drop(applied);
    let (after, problems) = load_in(dir.path(), "", T + 60_000);
    assert!(
        problems[0].contains("boot id cannot be read"),
        "{problems:?}"
    );
    assert!(after.check(0, &stamp(T + 1, "id:c2")).is_err());
}

#[test]
fn after_a_failed_sync_records_wait_for_the_disk_until_it_works_again() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let dying: SyncStep = Arc::new(move |_: &fs::File| {
        counted.fetch_add(1, Ordering::SeqCst);
        Err(std::io::Error::from_raw_os_error(5))
    });
    let (mut applied, _) = Applied::load_with(dir.path(), &names(), T, BOOT_A, dying);
    applied.record(0, &stamp(T, "id:c1")).unwrap();
    applied.syncer.flush();
    assert!(applied.syncer.failing());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Now written and synced before the pin moves, not by the syncer.
    applied.record(0, &stamp(T + 1, "id:c2")).unwrap();
    applied.syncer.flush();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the syncer was not asked");
    assert!(!applied.syncer.failing(), "the disk took it");
    applied.record(0, &stamp(T + 2, "id:c3")).unwrap();
    applied.syncer.flush();
    assert_eq!(calls.load(Ordering::SeqCst), 2, "back in the background");
}
