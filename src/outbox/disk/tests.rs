//! The disk side against a real spool: what it answers, when it syncs,
//! and what a slow or full disk does to it.

use std::fs::File;
use std::sync::mpsc;

use super::thread::{BATCH_MESSAGES, Message};
use super::*;

#[test]
fn a_reconnect_reserves_every_stream_in_one_durable_write() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    let mut disk = Disk::new(spool);
    let seqs: BTreeMap<String, u64> = [("s/a", 1025), ("s/b", 1030), ("sensor/cpu", 2000)]
        .into_iter()
        .map(|(name, upto)| (name.to_string(), upto))
        .collect();
    let before = disk.file_bytes();
    let mut done = Vec::new();
    disk.apply(SpoolOp::Reserve { seqs, epoch: 3 }, &mut done);
    assert!(
        matches!(
            &done[..],
            [SpoolDone::Reserved {
                epoch: 3,
                error: None,
                ..
            }]
        ),
        "{done:?}"
    );
    // Each durable write is one frame and one sync: one frame (head,
    // count, then each name and seq) means one sync for all three.
    let one_frame = 11 + 4 + [3u64, 3, 10].iter().map(|n| 2 + n + 8).sum::<u64>();
    assert_eq!(disk.file_bytes() - before, one_frame);
    drop(disk);
    let (_, got) = Spool::open(dir.path()).unwrap();
    assert!(got.unclean, "the reservation is on disk");
    assert_eq!(got.seqs["s/b"], 1030);
    assert_eq!(got.seqs["sensor/cpu"], 2000);
}

#[test]
fn ops_that_keep_coming_do_not_put_off_the_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    let wal = dir.path().join("outbox.wal");
    let mut thread = SpoolThread::start(spool).unwrap();
    let record = Record {
        id: 1,
        created_ms: 0,
        topic: "s/a".into(),
        payload: b"1".to_vec(),
        retain: false,
        stream: None,
    };
    assert!(thread.send(vec![SpoolOp::Write(vec![record])]));
    // Forgetting the only record is written at the commit due
    // SYNC_INTERVAL from now.
    assert!(thread.send(vec![SpoolOp::Forget(vec![1])]));
    // Meanwhile ops keep coming, each a durable write (as on a card
    // whose writes crawl; each of its own epoch, so none are merged):
    // the thread never finds its inbox empty.
    let start = Instant::now();
    let (mut outstanding, mut upto) = (0i64, 0);
    while start.elapsed() < SYNC_INTERVAL * 5 {
        // More than a batch waits at any time.
        while outstanding < 2 * BATCH_MESSAGES as i64 {
            upto += 1;
            let seqs = BTreeMap::from([("s/a".to_string(), upto)]);
            assert!(thread.send(vec![SpoolOp::Reserve { seqs, epoch: upto }]));
            outstanding += 1;
        }
        match thread.wait_next() {
            Some(Answer::Done(_)) => outstanding -= 1,
            other => panic!("{other:?}"),
        }
    }
    // The forget reached the file: a copy of it, recovered, no longer
    // holds the record. (Not the inode: the frequent compactions of
    // the reservations' frames may hand the old number out again.)
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(&wal, copy.path().join("outbox.wal")).unwrap();
    let (_, got) = Spool::open(copy.path()).unwrap();
    assert!(
        got.records.iter().all(|r| r.id != 1),
        "the forget was committed within {:?} while {upto} ops came",
        SYNC_INTERVAL * 5
    );
}

#[test]
fn reservations_asked_one_by_one_while_the_disk_is_busy_cost_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    let wal = dir.path().join("outbox.wal");
    let len = || std::fs::metadata(&wal).unwrap().len();
    let mut thread = SpoolThread::start(spool).unwrap();
    // The disk is busy: 400 durable writes that cannot be merged (each
    // of its own epoch). 40 were once too few: on a loaded machine the
    // thread sending the four below was put off long enough for the disk
    // to finish them between two sends.
    let busy: Vec<SpoolOp> = (1..=400)
        .map(|n| SpoolOp::Reserve {
            seqs: BTreeMap::from([("busy".to_string(), n)]),
            epoch: n,
        })
        .collect();
    let start = len();
    assert!(thread.send(busy));
    while len() == start {
        std::thread::yield_now();
    }
    // Meanwhile four messages each ask for a stream of their own, as
    // the first states of four outputs do.
    let streams = ["output/a", "output/b", "output/c", "output/d"];
    for name in streams {
        let seqs = BTreeMap::from([(name.to_string(), 1024)]);
        assert!(thread.send(vec![SpoolOp::Reserve { seqs, epoch: 999 }]));
    }
    assert!(thread.settle());
    let mut answered = Vec::new();
    loop {
        match thread.wait_next() {
            Some(Answer::Done(SpoolDone::Reserved {
                seqs, epoch: 999, ..
            })) => {
                answered.push(seqs.into_keys().collect::<Vec<_>>());
            }
            Some(Answer::Done(_)) => {}
            Some(Answer::Settled { .. }) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        answered,
        [streams.map(String::from).to_vec()],
        "one reservation, so one sync, for the four"
    );
}

fn big(id: u64) -> Record {
    Record {
        id,
        created_ms: 1,
        topic: "s/a".into(),
        payload: vec![b'x'; 1000],
        retain: false,
        stream: None,
    }
}

#[test]
fn a_failed_automatic_compaction_is_answered_so_the_agent_logs_it() {
    let tiny = crate::outbox::tests::TinyDisk::mount(256 << 10);
    let (spool, _) = Spool::open(&tiny.path().join("outbox")).unwrap();
    let mut disk = Disk::new(spool);
    let mut done = Vec::new();
    disk.apply(SpoolOp::Write((1..=120).map(big).collect()), &mut done);
    assert!(disk.commit(&mut done));
    assert!(matches!(done[..], [SpoolDone::Written]), "{done:?}");
    done.clear();
    // Room for a forget frame, none for a compacted copy of 40 records.
    tiny.fill();
    let filler = tiny.path().join("filler");
    let size = std::fs::metadata(&filler).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(size - 8192)
        .unwrap();
    disk.apply(SpoolOp::Forget((1..=80).collect()), &mut done);
    disk.commit(&mut done);
    let said: Vec<String> = done
        .iter()
        .map(|d| match d {
            SpoolDone::Failed(e) => e.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert!(
        said.iter().any(|s| s.contains("No space left on device")),
        "the compaction's failure is answered: {said:?}"
    );
    assert_eq!(
        disk.spool.live_count(),
        40,
        "the forget itself went through"
    );
}

/// The sync step of the next test: held until the test opens it.
static OPEN: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
static OPENED: std::sync::Condvar = std::sync::Condvar::new();

fn held_sync(file: &File) -> std::io::Result<()> {
    let mut open = OPEN.lock().unwrap();
    while !*open {
        open = OPENED.wait(open).unwrap();
    }
    file.sync_data()
}

#[test]
fn while_a_sync_crawls_writes_and_reads_go_on_and_a_reservation_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    let (back, synced) = mpsc::channel();
    let mut disk = Disk::with_syncing(spool, back, held_sync);
    let mut done = Vec::new();
    disk.apply(SpoolOp::Write(vec![big(1)]), &mut done);
    disk.commit(&mut done);
    // The sync is running, and stuck; the spool's thread is not.
    disk.apply(SpoolOp::Write(vec![big(2)]), &mut done);
    disk.apply(SpoolOp::Read(vec![1, 2]), &mut done);
    let seqs = BTreeMap::from([("s/a".to_string(), 1024)]);
    disk.apply(SpoolOp::Reserve { seqs, epoch: 0 }, &mut done);
    let read = done.iter().find_map(|d| match d {
        SpoolDone::Read { records, .. } => Some(records.len()),
        _ => None,
    });
    assert_eq!(read, Some(2), "read back at once: {done:?}");
    assert!(
        !done.iter().any(|d| matches!(d, SpoolDone::Reserved { .. })),
        "a reservation is not answered before its sync: {done:?}"
    );
    done.clear();
    *OPEN.lock().unwrap() = true;
    OPENED.notify_all();
    // The first sync began before the reservation: it does not cover it.
    let Ok(Message::Synced { ticket, error }) = synced.recv() else {
        panic!("no sync reported");
    };
    disk.synced(ticket, error, &mut done);
    assert!(done.is_empty(), "{done:?}");
    let Ok(Message::Synced { ticket, error }) = synced.recv() else {
        panic!("no second sync");
    };
    disk.synced(ticket, error, &mut done);
    assert!(
        matches!(done[..], [SpoolDone::Reserved { error: None, .. }]),
        "{done:?}"
    );
}
