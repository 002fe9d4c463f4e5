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

thread_local! {
    /// The wall clock and the boot's clock, as this test's `Applied` sees them.
    static CLOCK: std::cell::Cell<(i64, u64)> = const { std::cell::Cell::new((T, BOOTED)) };
}

/// The boot clock when the wall clock reads `T`.
const BOOTED: u64 = 1_000_000;

fn fake_now() -> (i64, u64) {
    CLOCK.with(std::cell::Cell::get)
}

/// Time passes until the wall clock reads `wall`: both clocks move.
fn set_clock(wall: i64) {
    let up = u64::try_from(wall - T).map_or(BOOTED, |d| BOOTED + d);
    CLOCK.with(|c| c.set((wall, up)));
}

/// The wall clock is set to `wall` after `passed` ms: only that much
/// passed on the boot's clock.
fn step_clock(wall: i64, passed: u64) {
    CLOCK.with(|c| {
        let (_, up) = c.get();
        c.set((wall, up + passed));
    });
}

fn names() -> Vec<String> {
    vec!["relay".into(), "fan".into()]
}

#[test]
fn a_command_is_applied_once_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut applied, problems) = load_in(dir.path(), &crate::boot::id(), T);
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

    let (again, problems) = load_in(dir.path(), &crate::boot::id(), T + 60_000);
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
    let (mut applied, _) = load_in(dir.path(), &crate::boot::id(), T);
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
    let (mut applied, _) = load_in(dir.path(), &crate::boot::id(), T);
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
    let (applied, problems) = load_in(dir.path(), &crate::boot::id(), T);
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
    let (_, problems) = load_in(dir.path(), &crate::boot::id(), T);
    assert!(
        problems[0].contains("larger than pinpost ever writes"),
        "{problems:?}"
    );
}

#[test]
fn a_record_that_cannot_be_written_refuses_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("missing");
    let (mut applied, _) = load_in(&gone, &crate::boot::id(), T);
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
    let (mut applied, _) = load_in(dir.path(), &crate::boot::id(), T);
    applied.record(1, &stamp(T, "id:f")).unwrap();
    let (mut renamed, _) = {
        set_clock(T);
        Applied::load_with(
            dir.path(),
            &["relay".to_string()],
            &crate::boot::id(),
            syncer::fsync(),
            fake_now,
        )
    };
    renamed.record(0, &stamp(T, "id:r")).unwrap();
    let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
    assert!(text.contains("relay") && !text.contains("fan"), "{text}");
}

const BOOT_A: &str = "3f1d6a2e-0000-4000-8000-00000000000a";
const BOOT_B: &str = "3f1d6a2e-0000-4000-8000-00000000000b";

fn load_in(dir: &Path, boot: &str, now: i64) -> (Applied, Vec<String>) {
    set_clock(now);
    Applied::load_with(dir, &names(), boot, syncer::fsync(), fake_now)
}

#[test]
fn the_record_reaches_the_kernel_before_the_pin_moves_even_while_the_disk_is_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Gate::default();
    let (mut applied, problems) = {
        set_clock(T);
        Applied::load_with(dir.path(), &names(), BOOT_A, disk.step(), fake_now)
    };
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

#[test]
fn a_floor_is_the_real_start_whatever_the_clock_read_then() {
    let hour = 3_600_000;
    // A Pi without a real-time clock after a power cut: it starts at 1970,
    // three weeks behind (fake-hwclock) or an hour ahead, and the clock is
    // set a minute later.
    for start_reads in [5_000, T - 21 * 24 * hour, T + hour] {
        let dir = tempfile::tempdir().unwrap();
        let (mut applied, _) = load_in(dir.path(), BOOT_A, T - 60_000);
        applied.record(0, &stamp(T - 60_000, "id:c1")).unwrap();
        drop(applied);
        let file = dir.path().join(FILE_NAME);
        let text = fs::read_to_string(&file).unwrap().replace(BOOT_A, BOOT_B);
        fs::write(&file, text).unwrap();
        // The start is really at T; the wall clock says `start_reads`.
        CLOCK.with(|c| c.set((start_reads, BOOTED)));
        let (mut after, problems) =
            Applied::load_with(dir.path(), &names(), BOOT_A, syncer::fsync(), fake_now);
        assert_eq!(problems.len(), 1, "{problems:?}");
        step_clock(T + 60_000, 60_000);
        let e = after.check(1, &stamp(T - 5_000, "id:replay")).unwrap_err();
        assert!(
            e.contains("without a complete record"),
            "{start_reads}: {e}"
        );
        assert_eq!(
            after.check(1, &stamp(T + 59_000, "id:fresh")),
            Ok(()),
            "{start_reads}: a command stamped after the real start goes"
        );
        // The floor on disk is in the boot's terms: a restart in the same
        // boot dates it the same way, whatever the file's ts says.
        after.record(0, &stamp(T + 59_000, "id:fresh")).unwrap();
        drop(after);
        let (restarted, problems) =
            Applied::load_with(dir.path(), &names(), BOOT_A, syncer::fsync(), fake_now);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(restarted.check(1, &stamp(T - 5_000, "id:replay")).is_err());
        assert_eq!(restarted.check(1, &stamp(T + 1_000, "id:x")), Ok(()));
    }
}

#[test]
fn a_floor_left_by_a_boot_whose_clock_was_ahead_locks_nothing_out_in_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let hour = 3_600_000;
    let file = dir.path().join(FILE_NAME);
    fs::write(
        &file,
        format!(r#"{{"boot":"{BOOT_B}","clean":false,"outputs":{{}}}}"#),
    )
    .unwrap();
    // Started an hour ahead, stopped cleanly before the clock was set.
    let (mut ahead, _) = load_in(dir.path(), BOOT_A, T + hour);
    assert_eq!(ahead.close(), None);
    drop(ahead);
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.contains(&format!("\"ts\":{}", T + hour)), "{text}");
    // The next boot, with a correct clock.
    let (next, _) = load_in(dir.path(), "boot-c", T + 120_000);
    assert_eq!(next.check(0, &stamp(T + 121_000, "id:fresh")), Ok(()));
    assert!(
        next.check(0, &stamp(T + 100_000, "id:before-this-start"))
            .is_err()
    );
}

#[test]
fn a_device_without_outputs_writes_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut applied, problems) =
        Applied::load_with(dir.path(), &[], BOOT_A, syncer::fsync(), fake_now);
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
    let (mut applied, _) = {
        set_clock(T);
        Applied::load_with(dir.path(), &names(), BOOT_A, dying, fake_now)
    };
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
