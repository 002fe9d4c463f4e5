//! The spool's lifecycle as its users see it: open, write, append, forget,
//! checkpoint, reserve, close, read and sync, what survives a reopen, and
//! the modes of its files.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::files::FILE_NAME;
use super::format::{FRAME_HEAD, HEADER_LEN, MAX_BODY, checkpoint_body};
use super::testing::*;
use super::*;

#[test]
fn round_trip_returns_exactly_the_live_records_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, got) = open(dir.path());
    assert!(got.records.is_empty() && got.skipped.is_empty());
    assert_eq!(got.next_id, 0);
    spool.append(&[rec(1), rec(2), rec(3)]).unwrap();
    spool.append(&[rec(4), rec(5)]).unwrap();
    spool.forget(&[2, 4, 99]).unwrap();
    assert_eq!(spool.live_count(), 3);
    assert!(spool.is_live(1) && !spool.is_live(2));
    drop(spool);

    let (spool, got) = open(dir.path());
    assert_eq!(got.records, vec![rec(1), rec(3), rec(5)]);
    assert_eq!(got.seqs, BTreeMap::from([("door".to_owned(), 50)]));
    assert_eq!(got.next_id, 6);
    assert!(got.skipped.is_empty());
    assert_eq!(spool.live_count(), 3);
    assert_eq!(
        spool.file_bytes(),
        fs::metadata(spool.path()).unwrap().len()
    );
    let framed: u64 = [1, 3, 5]
        .map(|id| record_frame(&rec(id)).len() as u64)
        .iter()
        .sum();
    assert_eq!(spool.live_bytes(), framed);
}

#[test]
fn reservations_hold_until_a_clean_close_and_survive_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(dir.path());
    spool
        .checkpoint(&BTreeMap::from([("s".to_owned(), 7)]))
        .unwrap();
    spool.reserve("s", 1030, 1).unwrap();
    drop(spool);
    let (mut spool, got) = open(dir.path());
    assert!(got.unclean, "no close: the reservation counts");
    assert_eq!(got.seqs["s"], 1030);

    spool
        .checkpoint(&BTreeMap::from([("s".to_owned(), 1040)]))
        .unwrap();
    spool.reserve("s", 2063, 1).unwrap();
    spool.compact().unwrap();
    drop(spool);
    let (mut spool, got) = open(dir.path());
    assert!(got.unclean, "compaction keeps the open reservation");
    assert_eq!(got.seqs["s"], 2063);

    spool
        .checkpoint(&BTreeMap::from([("s".to_owned(), 2070)]))
        .unwrap();
    spool.reserve("s", 3093, 1).unwrap();
    spool.close().unwrap();
    drop(spool);
    let (_, got) = open(dir.path());
    assert!(!got.unclean);
    assert_eq!(got.seqs["s"], 2070, "a clean stop continues exactly");
}

#[test]
fn seqs_and_next_id_survive_forgetting_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(dir.path());
    spool.append(&[rec(1), rec(2), rec(4)]).unwrap();
    spool
        .checkpoint(&BTreeMap::from([("boiler".to_owned(), 42)]))
        .unwrap();
    let before = spool.file_bytes();
    // Nothing new: nothing written.
    spool
        .checkpoint(&BTreeMap::from([("door".to_owned(), 3)]))
        .unwrap();
    assert_eq!(spool.file_bytes(), before);

    spool.forget(&[1, 2, 4]).unwrap();
    assert_eq!(spool.live_count(), 0);
    assert_eq!(spool.live_bytes(), 0);
    // Header, a forget frame naming id 4, one checkpoint: no records.
    let checkpoint = checkpoint_body(spool.seqs().iter().map(|(n, s)| (n, *s))).unwrap();
    assert_eq!(
        spool.file_bytes(),
        HEADER_LEN + (FRAME_HEAD + 12) + FRAME_HEAD + checkpoint.len() as u64
    );
    drop(spool);

    let (mut spool, got) = open(dir.path());
    assert!(got.records.is_empty() && got.skipped.is_empty());
    let want = BTreeMap::from([("boiler".to_owned(), 42), ("door".to_owned(), 40)]);
    assert_eq!(got.seqs, want);
    assert_eq!(got.next_id, 5);
    spool.compact().unwrap();
    drop(spool);
    let (_, got) = open(dir.path());
    assert_eq!((got.seqs, got.next_id), (want, 5));
}

#[test]
fn the_spool_is_private_to_its_user() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("var/lib/pinpost/outbox");
    let (mut spool, _) = open(&spool_dir);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&spool_dir), 0o700);
    assert_eq!(mode(spool.path()), 0o600);
    spool.append(&[rec(1), rec(2)]).unwrap();
    spool.forget(&[1]).unwrap();
    spool.compact().unwrap();
    assert_eq!(mode(spool.path()), 0o600);
}

#[test]
fn append_refuses_ids_already_live_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(dir.path());
    spool.append(&[rec(5)]).unwrap();
    let before = spool.file_bytes();
    for bad in [vec![rec(5)], vec![rec(6), rec(6)], vec![rec(8), rec(5)]] {
        let e = spool.append(&bad).unwrap_err();
        assert!(matches!(e, SpoolError::IdInUse { .. }), "{e}");
    }
    let e = spool.append(&[rec(6), rec(6)]).unwrap_err().to_string();
    assert!(
        e.starts_with("cannot append record 6 to the outbox spool "),
        "{e}"
    );
    assert_eq!(spool.file_bytes(), before);
    // An older id that is not live is fine: the outbox spills messages
    // that were in flight after newer ones it had already spooled.
    spool.append(&[rec(3)]).unwrap();
    let (_, got) = open(dir.path());
    assert_eq!(ids(&got.records), [3, 5]);
    assert_eq!(got.next_id, 6);
}

#[test]
fn written_records_read_back_and_a_sync_makes_them_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(dir.path());
    spool.write(&[rec(1), rec(2)]).unwrap();
    assert_eq!(spool.read(2).unwrap(), Some(rec(2)));
    assert_eq!(spool.read(9).unwrap(), None);
    spool.sync().unwrap();
    spool.forget(&[1]).unwrap();
    assert_eq!(spool.read(1).unwrap(), None);
    drop(spool);
    let (_, got) = open(dir.path());
    assert_eq!(ids(&got.records), [2]);
}

#[test]
fn oversized_records_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(dir.path());
    let mut long_topic = rec(2);
    long_topic.topic = "t".repeat(70_000);
    let mut huge = rec(3);
    huge.payload = vec![0; MAX_BODY as usize];
    for bad in [long_topic, huge] {
        let e = spool.append(&[rec(1), bad]).unwrap_err();
        assert!(matches!(e, SpoolError::TooLarge { .. }), "{e}");
    }
    assert_eq!((spool.file_bytes(), spool.live_count()), (HEADER_LEN, 0));
}

#[test]
fn io_errors_name_the_path_and_what_was_being_done() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    fs::write(&not_a_dir, b"").unwrap();
    let e = Spool::open(&not_a_dir).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "cannot create the outbox spool directory {}: File exists (os error 17)",
            not_a_dir.display()
        )
    );
}

#[test]
fn every_file_of_the_spool_is_0600_and_its_directory_0700_whatever_the_umask() {
    // Files an older pinpost left under umask 022.
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("outbox");
    let (spool, _) = open(&spool_dir);
    drop(spool);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    fs::set_permissions(spool_dir.join(FILE_NAME), fs::Permissions::from_mode(0o644)).unwrap();
    let (_, _) = open(&spool_dir);
    assert_eq!(mode(&spool_dir.join(FILE_NAME)), 0o600);
}

/// A frame as the format table lays it out, written by hand rather than
/// through the codec, so a change to either shows here.
fn frame_by_hand(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(body);
    let mut out = vec![0x50, 0x50, kind];
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(body);
    out
}

#[test]
fn reserve_and_close_write_kinds_4_and_5_as_the_format_table_says() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(dir.path());
    spool.reserve("door", 7, 1024).unwrap();
    // Already reserved: nothing is written.
    spool.reserve("door", 500, 1024).unwrap();
    spool.close().unwrap();
    // No reservation is open any more: nothing is written.
    spool.close().unwrap();
    drop(spool);

    // kind 4: count u32 | name_len u16 | name | upto u64; kind 5: no body.
    let mut reserve = 1u32.to_le_bytes().to_vec();
    reserve.extend_from_slice(&4u16.to_le_bytes());
    reserve.extend_from_slice(b"door");
    reserve.extend_from_slice(&1030u64.to_le_bytes());
    let mut want = b"PPSPOOL\x01".to_vec();
    want.extend(frame_by_hand(4, &reserve));
    want.extend(frame_by_hand(5, &[]));
    assert_eq!(fs::read(dir.path().join(FILE_NAME)).unwrap(), want);

    // A closed frame voids the reservation before it.
    let (_, got) = open(dir.path());
    assert!(!got.unclean && got.seqs.is_empty(), "{got:?}");
}
