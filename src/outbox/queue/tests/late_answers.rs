//! The queue against a disk that answers late and refuses some writes,
//! in every order: each message leaves once, counted, and none before its
//! seq is safe.

use super::*;

/// A disk that answers late: it holds the ops it is given and answers the
/// oldest when told, refusing the end of some writes as a full card does.
#[derive(Default)]
struct LateDisk {
    records: BTreeMap<u64, Record>,
    pending: std::collections::VecDeque<SpoolOp>,
    /// Highest seq a restart would continue after: in a record written, or
    /// checkpointed by a release.
    kept_seq: u64,
    /// Reserved and not released since.
    reserved: u64,
}

impl LateDisk {
    fn take(&mut self, q: &mut Queue) {
        self.pending.extend(q.take_ops());
    }

    /// Answers the oldest op; `refuse` is how many of a write's records,
    /// from its end, the disk refuses.
    fn answer_one(&mut self, q: &mut Queue, refuse: usize) {
        let Some(op) = self.pending.pop_front() else {
            return;
        };
        let done = match op {
            SpoolOp::Write(records) => {
                let take = records.len().saturating_sub(refuse);
                for r in &records[..take] {
                    self.kept_seq = self.kept_seq.max(r.stream.as_ref().map_or(0, |s| s.1));
                    assert!(
                        self.records.insert(r.id, r.clone()).is_none(),
                        "written twice"
                    );
                }
                Some(if take == records.len() {
                    SpoolDone::Written
                } else {
                    SpoolDone::Unwritten {
                        records: records[take..].to_vec(),
                        error: error(),
                    }
                })
            }
            SpoolOp::Forget(ids) => {
                for id in ids {
                    self.records.remove(&id);
                }
                None
            }
            SpoolOp::Read(ids) => Some(SpoolDone::Read {
                records: ids
                    .iter()
                    .filter_map(|id| self.records.get(id).cloned())
                    .collect(),
                missing: ids
                    .iter()
                    .filter(|id| !self.records.contains_key(id))
                    .copied()
                    .collect(),
                error: None,
            }),
            SpoolOp::Reserve { seqs, epoch } => {
                self.reserved = self.reserved.max(seqs.values().copied().max().unwrap_or(0));
                Some(SpoolDone::Reserved {
                    seqs,
                    epoch,
                    error: None,
                })
            }
            SpoolOp::Release(seqs) => {
                self.kept_seq = self.kept_seq.max(seqs.values().copied().max().unwrap_or(0));
                self.reserved = 0;
                None
            }
        };
        if let Some(done) = done {
            q.on_done(done);
        }
        self.take(q);
    }
}

#[test]
fn with_late_answers_every_message_leaves_once_counted_and_no_seq_before_it_is_safe() {
    for seed in 1..60u64 {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut dice = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n.max(1)
        };
        let mut l = limits(16 << 10);
        l.memory_limit = 2 << 10;
        let mut q = Queue::new(l, true, 0, BTreeMap::new());
        let mut disk = LateDisk::default();
        let mut flying = Vec::new();
        let mut queued = 0u64;
        for step in 0..2_000 {
            match dice(12) {
                0..=3 => {
                    let seq = q.next_seq("s/a");
                    let payload = vec![b'x'; dice(300) as usize];
                    if let Pushed::Queued | Pushed::QueuedDropping(_) =
                        q.push("s/a", payload, false, Some(seq), 1_000)
                    {
                        queued += 1;
                    }
                }
                4 | 5 => {
                    while let Some(r) = q.next_to_send(2_000) {
                        let seq = r.stream.as_ref().map_or(0, |s| s.1);
                        assert!(
                            seq <= disk.kept_seq.max(disk.reserved),
                            "seed {seed} step {step}: seq {seq} left before a restart would skip it"
                        );
                        match dice(10) {
                            0 => q.requeue(r.id),
                            1 => q.discard(r.id),
                            _ => flying.push(r.id),
                        }
                    }
                }
                6 if !flying.is_empty() => {
                    let i = dice(flying.len() as u64) as usize;
                    q.acked(flying.swap_remove(i));
                }
                7 => q.offline(),
                8 => q.online(),
                _ => {
                    for _ in 0..dice(disk.pending.len() as u64 + 1) {
                        let refuse = if dice(4) == 0 { dice(5) as usize } else { 0 };
                        disk.answer_one(&mut q, refuse);
                    }
                }
            }
            disk.take(&mut q);
            let mut recount = Tally::default();
            for w in q.waiting.values() {
                match w {
                    Waiting::Memory { record, .. } => {
                        recount.add(size_of(&record.topic, &record.payload), true);
                    }
                    Waiting::Disk { size, .. } => recount.add(u64::from(*size), false),
                }
            }
            for f in q.in_flight.values() {
                recount.add(size_of(&f.record.topic, &f.record.payload), true);
            }
            assert_eq!(q.bytes, recount, "seed {seed} step {step}");
        }
        // The link comes back for good and the disk answers everything.
        q.online();
        for id in flying.drain(..) {
            q.acked(id);
        }
        loop {
            disk.take(&mut q);
            while !disk.pending.is_empty() {
                disk.answer_one(&mut q, 0);
            }
            match q.next_to_send(2_000) {
                Some(r) => q.acked(r.id),
                None => {
                    // It may have asked the disk for something first.
                    disk.take(&mut q);
                    if disk.pending.is_empty() {
                        break;
                    }
                }
            }
        }
        let s = q.stats();
        assert!(q.is_empty(), "seed {seed}: nothing may wait forever: {s:?}");
        assert!(
            disk.records.is_empty(),
            "seed {seed}: all forgotten on disk"
        );
        // Every message queued left once: acknowledged, discarded, expired
        // or evicted (evictions and discards are counted in `dropped`,
        // with refusals; refusals were never queued).
        assert!(s.acked + s.expired <= queued, "seed {seed}: {s:?}");
    }
}
