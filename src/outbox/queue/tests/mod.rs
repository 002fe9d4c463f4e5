//! The queue on its own: every op it asks of the disk, and every answer
//! the disk could give, played by hand. No file is touched.

use std::collections::BTreeMap;
use std::time::Duration;

use super::transit::TRANSIT_FLOOR;
use super::*;

mod late_answers;

fn limits(max_bytes: u64) -> Limits {
    Limits {
        memory_limit: max_bytes / 2,
        max_bytes,
        max_age: Duration::from_secs(3600),
        policy: DropPolicy::DropOldest,
        window: 4,
    }
}

fn queue() -> Queue {
    Queue::new(limits(1 << 20), true, 0, BTreeMap::new())
}

fn push(q: &mut Queue, topic: &str, n: u64) {
    let seq = q.next_seq(topic);
    q.push(topic, format!("{n}").into_bytes(), false, Some(seq), 1_000);
}

/// A disk that does everything asked at once: what a well spool thread
/// answers, in order. Returns the ops it saw.
fn disk_answers(q: &mut Queue, disk: &mut BTreeMap<u64, Record>) -> Vec<SpoolOp> {
    let ops = q.take_ops();
    let mut seen = Vec::new();
    for op in ops {
        let done = match &op {
            SpoolOp::Write(records) => {
                for r in records {
                    assert!(disk.insert(r.id, r.clone()).is_none(), "written twice");
                }
                Some(SpoolDone::Written)
            }
            SpoolOp::Forget(ids) => {
                for id in ids {
                    disk.remove(id);
                }
                None
            }
            SpoolOp::Read(ids) => Some(SpoolDone::Read {
                records: ids.iter().filter_map(|id| disk.get(id).cloned()).collect(),
                missing: ids
                    .iter()
                    .filter(|id| !disk.contains_key(id))
                    .copied()
                    .collect(),
                error: None,
            }),
            SpoolOp::Reserve { seqs, epoch } => Some(SpoolDone::Reserved {
                seqs: seqs.clone(),
                epoch: *epoch,
                error: None,
            }),
            SpoolOp::Release(_) => None,
        };
        seen.push(op);
        if let Some(done) = done {
            assert!(q.on_done(done).is_none());
        }
    }
    seen
}

/// Sends what it can, acknowledging each, with the disk answering between.
fn deliver_all(q: &mut Queue, disk: &mut BTreeMap<u64, Record>) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        disk_answers(q, disk);
        let mut sent = false;
        while let Some(r) = q.next_to_send(2_000) {
            out.push(format!(
                "{}={}",
                r.topic,
                String::from_utf8_lossy(&r.payload)
            ));
            q.acked(r.id);
            sent = true;
        }
        // Nothing went out and the disk had nothing left to answer.
        if !sent && disk_answers(q, disk).is_empty() {
            return out;
        }
    }
}

fn error() -> SpoolError {
    SpoolError::TooLarge {
        path: "/spool".into(),
        what: "no space left on device".into(),
    }
}

#[test]
fn a_stream_is_forgotten_once_its_last_message_leaves() {
    let mut q = queue();
    let mut disk = BTreeMap::new();
    q.online();
    // Results for 10,000 made-up command names: one stream each.
    for n in 0..10_000 {
        let topic = format!("p/d/cmd/x{n}/result");
        q.push(&topic, b"{}".to_vec(), false, None, 1_000);
        deliver_all(&mut q, &mut disk);
    }
    assert_eq!(q.stream_count(), 0, "no bookkeeping left");
    q.offline();
    push(&mut q, "s/a", 1);
    push(&mut q, "s/b", 2);
    push(&mut q, "s/a", 3);
    assert_eq!(q.stream_count(), 2);
    q.online();
    assert_eq!(deliver_all(&mut q, &mut disk), ["s/a=1", "s/b=2", "s/a=3"]);
    assert_eq!(q.stream_count(), 0);
    assert!(disk.is_empty(), "everything sent was forgotten on disk");
}

#[test]
fn a_message_with_a_seq_leaves_only_once_its_seq_is_reserved() {
    let mut q = queue();
    q.online();
    push(&mut q, "s/a", 1);
    assert_eq!(q.next_to_send(1_000), None, "seq 1 is not reserved yet");
    let ops = q.take_ops();
    let [SpoolOp::Reserve { seqs, epoch }] = &ops[..] else {
        panic!("{ops:?}");
    };
    assert_eq!(seqs, &BTreeMap::from([("s/a".to_string(), SEQ_RESERVE)]));
    // A message without a seq behind it waits too: order is kept.
    q.push("s/x", b"no seq".to_vec(), false, None, 1_000);
    assert_eq!(q.next_to_send(1_000), None);
    q.on_done(SpoolDone::Reserved {
        seqs: seqs.clone(),
        epoch: *epoch,
        error: None,
    });
    assert_eq!(
        q.next_to_send(1_000).map(|r| r.payload),
        Some(b"1".to_vec())
    );
    assert_eq!(
        q.next_to_send(1_000).map(|r| r.payload),
        Some(b"no seq".to_vec())
    );
}

#[test]
fn an_answer_to_a_reservation_a_release_voided_releases_nothing() {
    let mut q = queue();
    q.online();
    push(&mut q, "s/a", 1);
    let ops = q.take_ops();
    let [SpoolOp::Reserve { seqs, epoch }] = &ops[..] else {
        panic!("{ops:?}");
    };
    let (old_seqs, old_epoch) = (seqs.clone(), *epoch);
    // The link drops and comes back before the disk answers: the release
    // went after the reservation, so the disk no longer holds it.
    q.offline();
    let mut disk = BTreeMap::new();
    for op in q.take_ops() {
        if let SpoolOp::Write(records) = op {
            for r in records {
                disk.insert(r.id, r);
            }
        }
    }
    q.online();
    q.push("s/a", b"2".to_vec(), false, Some(2), 1_000);
    let ops = q.take_ops();
    assert!(
        matches!(&ops[0], SpoolOp::Reserve { epoch, .. } if *epoch != old_epoch),
        "{ops:?}"
    );
    q.on_done(SpoolDone::Reserved {
        seqs: old_seqs,
        epoch: old_epoch,
        error: None,
    });
    // Seq 1 is on disk (it carries itself); seq 2 is only in memory.
    q.on_done(SpoolDone::Read {
        records: disk.values().cloned().collect(),
        missing: vec![],
        error: None,
    });
    let mut sent = Vec::new();
    while let Some(r) = q.next_to_send(1_000) {
        sent.push(r.payload);
    }
    assert!(sent.is_empty(), "nothing read was asked for yet: {sent:?}");
    // Now the queue asks to read seq 1 back; seq 2 waits for the new epoch.
    let ops = q.take_ops();
    assert!(
        matches!(&ops[..], [SpoolOp::Read(ids)] if ids == &[0]),
        "{ops:?}"
    );
    q.on_done(SpoolDone::Read {
        records: disk.values().cloned().collect(),
        missing: vec![],
        error: None,
    });
    assert_eq!(
        q.next_to_send(1_000).map(|r| r.payload),
        Some(b"1".to_vec())
    );
    assert_eq!(q.next_to_send(1_000), None, "seq 2's reservation is stale");
}

#[test]
fn a_reservation_the_disk_refused_holds_nothing_back() {
    let mut q = queue();
    q.online();
    push(&mut q, "s/a", 1);
    let ops = q.take_ops();
    let [SpoolOp::Reserve { seqs, epoch }] = &ops[..] else {
        panic!("{ops:?}");
    };
    let said = q.on_done(SpoolDone::Reserved {
        seqs: seqs.clone(),
        epoch: *epoch,
        error: Some(error()),
    });
    assert!(said.is_some(), "the failure is the caller's to log");
    assert!(q.next_to_send(1_000).is_some(), "held, it would be lost");
}

#[test]
fn an_outage_is_written_in_order_and_read_back_in_slices() {
    let mut q = queue();
    let mut disk = BTreeMap::new();
    q.offline();
    for n in 0..200 {
        push(&mut q, "s/a", n);
    }
    assert_eq!(q.memory_bytes(), 0, "offline, nothing stays in memory");
    let ops = disk_answers(&mut q, &mut disk);
    let written: Vec<u64> = ops
        .iter()
        .filter_map(|op| match op {
            SpoolOp::Write(records) => Some(records.iter().map(|r| r.id)),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        written,
        (0..200).collect::<Vec<_>>(),
        "one merged write, in order"
    );
    q.online();
    assert_eq!(q.next_to_send(1_000), None, "on disk: read back first");
    let ops = q.take_ops();
    let reads: Vec<usize> = ops
        .iter()
        .filter_map(|op| match op {
            SpoolOp::Read(ids) => Some(ids.len()),
            _ => None,
        })
        .collect();
    assert_eq!(reads, [64], "one slice at a time");
    // The disk answers; in memory now: at most the slice and the window.
    q.on_done(SpoolDone::Read {
        records: (0..64).filter_map(|id| disk.get(&id).cloned()).collect(),
        missing: vec![],
        error: None,
    });
    for op in ops {
        if let SpoolOp::Reserve { seqs, epoch } = op {
            q.on_done(SpoolDone::Reserved {
                seqs,
                epoch,
                error: None,
            });
        }
    }
    assert!(q.memory_bytes() <= 64 * size_of("s/a", b"199"));
    let sent = deliver_all(&mut q, &mut disk);
    let want: Vec<String> = (0..200).map(|n| format!("s/a={n}")).collect();
    assert_eq!(sent, want);
    assert!(disk.is_empty());
    assert_eq!(q.stats().queued_bytes, 0);
}

#[test]
fn what_the_disk_refuses_stays_in_memory_and_still_leaves_in_order() {
    let mut q = queue();
    q.offline();
    for n in 0..5 {
        push(&mut q, "s/a", n);
    }
    let mut ops = q.take_ops();
    let Some(SpoolOp::Write(records)) = ops.pop() else {
        panic!("{ops:?}");
    };
    // A full disk took the first two.
    let mut disk: BTreeMap<u64, Record> = records[..2].iter().map(|r| (r.id, r.clone())).collect();
    let said = q.on_done(SpoolDone::Unwritten {
        records: records[2..].to_vec(),
        error: error(),
    });
    assert!(said.is_some());
    assert_eq!(q.memory_bytes(), 3 * size_of("s/a", b"0"));
    assert_eq!(q.stats().spooled, 2);
    q.online();
    assert_eq!(
        deliver_all(&mut q, &mut disk),
        ["s/a=0", "s/a=1", "s/a=2", "s/a=3", "s/a=4"]
    );
    assert_eq!((q.memory_bytes(), q.stats().queued_bytes), (0, 0));
}

#[test]
fn a_record_the_disk_cannot_read_back_is_dropped_not_retried_forever() {
    let mut q = queue();
    let mut disk = BTreeMap::new();
    q.offline();
    for n in 0..3 {
        push(&mut q, "s/a", n);
    }
    disk_answers(&mut q, &mut disk);
    disk.remove(&1);
    q.online();
    assert_eq!(deliver_all(&mut q, &mut disk), ["s/a=0", "s/a=2"]);
    assert_eq!(q.stats().dropped, 1);
    assert!(q.is_empty());
}

#[test]
fn every_way_out_returns_the_bytes_it_took() {
    let mut l = limits(8 << 10);
    l.max_age = Duration::from_secs(1);
    l.memory_limit = 1 << 10;
    let mut q = Queue::new(l, true, 0, BTreeMap::new());
    let mut disk = BTreeMap::new();
    q.online();
    disk_answers(&mut q, &mut disk);
    for n in 0..400u64 {
        // Old messages expire, a full outbox drops, memory spills to disk.
        let made = if n % 7 == 0 { 0 } else { 1_500 };
        let seq = q.next_seq("s/a");
        q.push("s/a", vec![b'x'; (n % 50) as usize], false, Some(seq), made);
        disk_answers(&mut q, &mut disk);
        match n % 5 {
            0 => {
                if let Some(r) = q.next_to_send(2_000) {
                    q.requeue(r.id);
                }
            }
            1 => {
                if let Some(r) = q.next_to_send(2_000) {
                    q.discard(r.id);
                }
            }
            2 => q.offline(),
            3 => q.online(),
            _ => {
                if let Some(r) = q.next_to_send(2_000) {
                    q.acked(r.id);
                }
            }
        }
        disk_answers(&mut q, &mut disk);
        let s = q.stats();
        assert!(s.queued_bytes <= 8 << 10, "{s:?}");
    }
    q.online();
    deliver_all(&mut q, &mut disk);
    let s = q.stats();
    assert!(q.is_empty(), "{s:?}");
    assert_eq!((q.memory_bytes(), s.queued_bytes), (0, 0), "{s:?}");
    assert!(disk.is_empty(), "nothing left on disk: {:?}", disk.keys());
    assert!(s.dropped + s.expired + s.acked >= 300, "{s:?}");
}

#[test]
fn without_its_disk_the_queue_keeps_what_is_in_memory() {
    let mut q = queue();
    q.online();
    q.push("s/a", b"in memory".to_vec(), false, None, 1_000);
    q.offline();
    q.push("s/a", b"to disk".to_vec(), false, None, 1_000);
    q.take_ops();
    // The spool thread died before writing anything.
    let lost = q.spool_lost();
    assert_eq!(lost, 2, "both were only the disk's to keep");
    assert!(q.take_ops().is_empty());
    q.online();
    q.push("s/a", b"after".to_vec(), false, Some(1), 1_000);
    assert!(q.take_ops().is_empty(), "no disk, no ops");
    assert_eq!(
        q.next_to_send(1_000).map(|r| r.payload),
        Some(b"after".to_vec())
    );
}

#[test]
fn a_disk_that_stops_answering_costs_bounded_memory_and_drops_are_counted() {
    let mut l = limits(64 << 20);
    l.memory_limit = 64 << 10;
    let mut q = Queue::new(l, true, 0, BTreeMap::new());
    q.offline();
    let payload = vec![b'x'; 1000];
    let mut taken = Vec::new();
    let mut behind = 0;
    for _ in 0..5_000 {
        // The disk side takes the ops and never answers (a hung card).
        match q.push("s/a", payload.clone(), false, None, 1_000) {
            Pushed::DiskBehind => behind += 1,
            pushed => assert_eq!(pushed, Pushed::Queued),
        }
        taken.extend(q.take_ops());
    }
    assert!(
        q.transit_bytes() <= TRANSIT_FLOOR,
        "{} bytes wait for the disk",
        q.transit_bytes()
    );
    assert!(behind > 3_000, "{behind} dropped");
    assert_eq!(q.stats().dropped, behind);
    // The card comes back: every write is answered, and messages flow
    // to it again.
    for op in &taken {
        if let SpoolOp::Write(_) = op {
            q.on_done(SpoolDone::Written);
        }
    }
    assert_eq!(q.transit_bytes(), 0);
    assert_eq!(q.push("s/a", payload, false, None, 1_000), Pushed::Queued);
}

#[test]
fn a_reconnect_asks_at_once_for_the_streams_this_run_uses_and_no_others() {
    // A spool (old, or crafted) naming many streams.
    let seqs: BTreeMap<String, u64> = (0..10_000).map(|n| (format!("old/{n}"), 7)).collect();
    let mut q = Queue::new(limits(1 << 20), true, 0, seqs);
    q.online();
    assert!(q.take_ops().is_empty(), "nothing used yet, nothing asked");
    push(&mut q, "s/a", 1);
    q.take_ops();
    q.offline();
    q.take_ops();
    q.online();
    let ops = q.take_ops();
    let [SpoolOp::Reserve { seqs, .. }] = &ops[..] else {
        panic!("{ops:?}");
    };
    assert_eq!(
        seqs,
        &BTreeMap::from([("s/a".to_string(), 1 + SEQ_RESERVE)])
    );
}

#[test]
fn a_message_the_hung_disk_cannot_take_does_not_evict_one_already_kept() {
    // Room for about 2 MiB; the disk may fall 1 MiB behind.
    let mut l = limits(2 << 20);
    l.memory_limit = 64 << 10;
    let mut q = Queue::new(l, true, 0, BTreeMap::new());
    q.offline();
    let payload = vec![b'x'; 1000];
    // A long outage fills the outbox, the card keeping up.
    while q.stats().queued_bytes + size_of("s/a", &payload) <= 2 << 20 {
        assert_eq!(
            q.push("s/a", payload.clone(), false, None, 1_000),
            Pushed::Queued
        );
        for op in q.take_ops() {
            if let SpoolOp::Write(_) = op {
                q.on_done(SpoolDone::Written);
            }
        }
    }
    // Then the card slows down and answers only some writes: the outbox
    // stays full and the disk falls 1 MiB behind, where new messages are
    // refused.
    let mut refused = 0;
    for n in 0..4_000 {
        let (queued, dropped) = (q.stats().queued, q.stats().dropped);
        let pushed = q.push("s/a", payload.clone(), false, None, 1_000);
        for (i, op) in q.take_ops().into_iter().enumerate() {
            if let SpoolOp::Write(_) = op {
                if (n + i) % 2 == 0 {
                    q.on_done(SpoolDone::Written);
                }
            }
        }
        if pushed == Pushed::DiskBehind {
            refused += 1;
            assert_eq!(
                (q.stats().queued, q.stats().dropped),
                (queued, dropped + 1),
                "a message refused for a hung disk evicts none already kept"
            );
        }
    }
    assert!(refused > 100, "{refused}");
}
