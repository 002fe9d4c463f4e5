//! Compaction: rewriting the spool file down to what is live, so it stays
//! within about twice the live set.
//!
//! # What it owns
//! When to compact on its own, writing the compacted copy, and the fallback
//! when there is no room for a copy. `Spool::write` (so `append`), `forget`,
//! `checkpoint` and `reserve` call `maybe_compact` after they have written:
//! it compacts once the file is over 64 KiB and its dead bytes outweigh the
//! live ones. A `forget` that leaves nothing live rewrites the file down to
//! its counters at once instead of appending, so a drained outbox leaves a
//! file of a few dozen bytes; when that copy cannot be written (a full
//! disk), the file is cut down in place instead, which needs no free space.
//!
//! A compacted file holds the header, the live records (their frames copied
//! from the old file by offset, in id order), then a forget frame naming the
//! highest id ever seen when that record is no longer live (so `next_id`
//! never goes back after the record is compacted away), one checkpoint of
//! every stream's seq, and one reservation frame of the open reservations
//! (each of these three only when there is something to put in it).
//! It is written to `outbox.wal.tmp`, synced, renamed over `outbox.wal`,
//! and the directory synced: a crash at any point leaves either the old file
//! or the new one, whole, and a compaction that succeeds leaves everything
//! written so far durable.
//!
//! An automatic compaction that fails does not fail the write that called
//! it (that write had succeeded): the error is kept for
//! [`Spool::take_compaction_error`], and none is tried again before the
//! file has grown another 64 KiB, so a full disk does not cost a rewrite
//! per write.
//!
//! # What it must not know
//! What a record holds (frames are copied as they are) or why records were
//! forgotten; nor does it log.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::files::install;
use super::format::{
    HEADER, HEADER_LEN, IDS_PER_FORGET, KIND_CHECKPOINT, KIND_FORGET, KIND_RESERVE,
    checkpoint_body, forget_body, put_frame,
};
use super::{Slot, Spool, SpoolError, io_err};

/// Below this the file is left alone however much of it is dead: rewriting a
/// small file saves nothing worth an SD card's wear.
const COMPACT_ABOVE: u64 = 64 << 10;

impl Spool {
    /// Rewrites the file down to the live records and the counters (see the
    /// module docs), crash-safely: the copy is written to `outbox.wal.tmp`
    /// and synced, renamed over `outbox.wal`, then the directory is synced.
    /// Durable on disk when it returns Ok, everything written before it
    /// included. A crash at any point leaves either the old file or the new
    /// one. Returns the bytes reclaimed. If only the directory sync fails,
    /// the error is returned but the spool already uses the new file.
    pub fn compact(&mut self) -> Result<u64, SpoolError> {
        let reclaimed = self.rewrite()?;
        self.sync_dir()?;
        Ok(reclaimed)
    }

    /// The error of the last automatic compaction that failed, once (an
    /// earlier one not taken yet is replaced). The write that triggered it
    /// had succeeded, so it was not returned there; the file is still whole,
    /// only larger than it should be. Nothing here logs it: whoever owns the
    /// spool should take it after each write and report it.
    pub(crate) fn take_compaction_error(&mut self) -> Option<SpoolError> {
        self.compaction_error.take()
    }

    /// Compacts when the file is large and mostly dead (see the module
    /// docs); a failure is kept, not returned.
    pub(super) fn maybe_compact(&mut self) {
        let dead = self.file_bytes.saturating_sub(self.live_bytes);
        if self.file_bytes > COMPACT_ABOVE
            && dead > self.live_bytes
            && self.file_bytes >= self.retry_compaction_at
        {
            if let Err(e) = self.compact() {
                self.compaction_failed(e);
            }
        }
    }

    pub(super) fn compaction_failed(&mut self, e: SpoolError) {
        self.compaction_error = Some(e);
        self.retry_compaction_at = self.file_bytes + COMPACT_ABOVE;
    }

    /// Cuts the file down to a forget frame naming `gone` and the highest id,
    /// then the counters, written over the start of the file, when nothing
    /// is live. Needs no free space, unlike [`Spool::rewrite`]. A crash
    /// between the overwrite and the cut leaves those frames, a damaged
    /// region, then the old frames' end: records forgotten earlier are
    /// forgotten again by their own later forget frames, but those of `gone`
    /// that survive come back and are sent once more (at least once, as
    /// MQTT's QoS 1 is): nothing unacknowledged is ever lost.
    pub(super) fn truncate_in_place(&mut self, gone: &BTreeSet<u64>) -> Result<(), SpoolError> {
        let mut ids: Vec<u64> = gone.iter().copied().collect();
        ids.extend(self.next_id.checked_sub(1).filter(|id| !gone.contains(id)));
        let mut tail = Vec::new();
        for chunk in ids.chunks(IDS_PER_FORGET) {
            put_frame(&mut tail, KIND_FORGET, &forget_body(chunk));
        }
        self.put_counters(&mut tail)?;
        let end = HEADER_LEN + tail.len() as u64;
        if end > self.file_bytes {
            return Err(self.too_large("the file is smaller than its counters".into()));
        }
        let cut = io_err("cut in place the outbox spool", &self.path);
        self.file
            .write_all_at(&tail, HEADER_LEN)
            .and_then(|()| self.file.sync_data())
            .and_then(|()| self.file.set_len(end))
            .and_then(|()| self.file.sync_data())
            .map_err(cut)?;
        self.file_bytes = end;
        self.live.clear();
        self.live_bytes = 0;
        self.retry_compaction_at = 0;
        Ok(())
    }

    /// The checkpoint of every stream's seq and the open reservations, as
    /// frames: what a compacted file ends with.
    fn put_counters(&self, out: &mut Vec<u8>) -> Result<(), SpoolError> {
        if !self.seqs.is_empty() {
            let body = checkpoint_body(self.seqs.iter().map(|(n, s)| (n, *s)))
                .map_err(|what| self.too_large(what))?;
            put_frame(out, KIND_CHECKPOINT, &body);
        }
        if !self.reserved.is_empty() {
            let body = checkpoint_body(self.reserved.iter().map(|(n, s)| (n, *s)))
                .map_err(|what| self.too_large(what))?;
            put_frame(out, KIND_RESERVE, &body);
        }
        Ok(())
    }

    /// Writes the compacted copy and renames it into place; once it returns
    /// Ok the spool uses the new file (even if the directory sync then fails,
    /// since the old file is no longer at the path).
    pub(super) fn rewrite(&mut self) -> Result<u64, SpoolError> {
        let (file, (live, len)) = install(&self.dir, &self.path, |tmp, tmp_path| {
            self.write_compacted(tmp, tmp_path)
        })?;
        let reclaimed = self.file_bytes.saturating_sub(len);
        self.file = file;
        self.file_bytes = len;
        self.live = live;
        self.retry_compaction_at = 0;
        Ok(reclaimed)
    }

    fn write_compacted(
        &self,
        tmp: &File,
        tmp_path: &Path,
    ) -> Result<(BTreeMap<u64, Slot>, u64), SpoolError> {
        let wrote = io_err("write the compacted outbox spool", tmp_path);
        let mut out = BufWriter::new(tmp);
        out.write_all(HEADER).map_err(&wrote)?;
        let mut at = HEADER_LEN;
        let mut live = BTreeMap::new();
        let mut frame = Vec::new();
        for (&id, slot) in &self.live {
            frame.resize(slot.len as usize, 0);
            self.file
                .read_exact_at(&mut frame, slot.offset)
                .map_err(io_err("read the outbox spool", &self.path))?;
            out.write_all(&frame).map_err(&wrote)?;
            live.insert(
                id,
                Slot {
                    offset: at,
                    ..*slot
                },
            );
            at += slot.len;
        }
        let mut tail = Vec::new();
        if let Some(highest) = self.next_id.checked_sub(1) {
            if !self.live.contains_key(&highest) {
                put_frame(&mut tail, KIND_FORGET, &forget_body(&[highest]));
            }
        }
        self.put_counters(&mut tail)?;
        out.write_all(&tail).map_err(&wrote)?;
        out.flush().map_err(&wrote)?;
        Ok((live, at + tail.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::Record;
    use super::super::files::{FILE_NAME, TMP_NAME};
    use super::super::format::{FRAME_HEAD, KIND_CHECKPOINT};
    use super::super::testing::*;
    use super::*;

    #[test]
    fn a_compaction_cut_short_by_a_crash_leaves_the_spool_intact() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path());
        spool.append(&[rec(1), rec(2), rec(3)]).unwrap();
        spool.forget(&[2]).unwrap();
        drop(spool);
        let wal = fs::read(dir.path().join(FILE_NAME)).unwrap();
        // A half-written copy, as if the crash came before the rename.
        let tmp = dir.path().join(TMP_NAME);
        fs::write(&tmp, &wal[..wal.len() / 2]).unwrap();

        let (mut spool, got) = open(dir.path());
        assert_eq!(got.records, vec![rec(1), rec(3)]);
        assert!(got.skipped.is_empty());
        assert!(!tmp.exists());
        assert_eq!(fs::read(dir.path().join(FILE_NAME)).unwrap(), wal);

        let before = spool.file_bytes();
        let reclaimed = spool.compact().unwrap();
        assert_eq!(reclaimed, before - spool.file_bytes());
        assert!(reclaimed > 0 && !tmp.exists());
        // Left: the live records and one checkpoint; id 3 is live, so no
        // forget frame is needed to remember it.
        let live = [1, 3].map(|id| record_frame(&rec(id)).len() as u64);
        assert_eq!(spool.live_bytes(), live.iter().sum::<u64>());
        let checkpoint = frame(
            KIND_CHECKPOINT,
            &checkpoint_body([(&"door".to_owned(), 30)].into_iter()).unwrap(),
        );
        assert_eq!(
            spool.file_bytes(),
            HEADER_LEN + spool.live_bytes() + checkpoint.len() as u64
        );
        // The spool goes on in the new file.
        spool.append(&[rec(7)]).unwrap();
        drop(spool);
        let (_, got) = open(dir.path());
        assert_eq!(got.records, vec![rec(1), rec(3), rec(7)]);
    }

    #[test]
    fn automatic_compaction_bounds_the_file_over_100k_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path());
        let small = |id: u64| Record {
            id,
            created_ms: id,
            topic: "t".into(),
            payload: id.to_le_bytes().to_vec(),
            retain: false,
            stream: Some(("s".into(), id)),
        };
        let mut largest = 0;
        let batch = 500;
        for start in (1..=100_000u64).step_by(batch) {
            let records: Vec<Record> = (start..start + batch as u64).map(small).collect();
            spool.append(&records).unwrap();
            largest = largest.max(spool.file_bytes());
            // The previous batch is acknowledged while this one is in flight.
            let acked: Vec<u64> = (start.saturating_sub(batch as u64)..start).collect();
            spool.forget(&acked).unwrap();
            largest = largest.max(spool.file_bytes());
            assert!(spool.take_compaction_error().is_none());
        }
        assert_eq!(spool.live_count(), batch);
        assert!(largest <= 160 << 10, "the file grew to {largest} bytes");
        let last: Vec<u64> = (100_001 - batch as u64..=100_000).collect();
        spool.forget(&last).unwrap();
        assert!(spool.file_bytes() < 64, "{} bytes left", spool.file_bytes());
        drop(spool);
        let (_, got) = open(dir.path());
        assert!(got.records.is_empty());
        assert_eq!((got.next_id, got.seqs["s"]), (100_001, 100_000));
    }

    #[test]
    fn a_full_disk_that_cannot_compact_cuts_the_spool_in_place_once_nothing_is_live() {
        let disk = crate::outbox::tests::TinyDisk::mount(256 << 10);
        let dir = disk.path().join("outbox");
        let (mut spool, _) = open(&dir);
        let big = |id: u64| Record {
            payload: vec![b'x'; 1000],
            ..rec(id)
        };
        let records: Vec<Record> = (1..=120).map(big).collect();
        spool.append(&records).unwrap();
        let full = spool.file_bytes();
        assert!(full > 120_000, "{full}");
        // Nothing left for a compacted copy, nor for a forget frame.
        disk.fill();
        let ids: Vec<u64> = (1..=120).collect();
        spool.forget(&ids).unwrap();
        assert_eq!(spool.live_count(), 0);
        // The header, one forget frame naming the 120 ids, the checkpoint.
        let checkpoint = frame(
            KIND_CHECKPOINT,
            &checkpoint_body([(&"door".to_owned(), 1190)].into_iter()).unwrap(),
        );
        assert_eq!(
            spool.file_bytes(),
            HEADER_LEN + FRAME_HEAD + 4 + 8 * 120 + checkpoint.len() as u64
        );
        assert_eq!(
            fs::metadata(spool.path()).unwrap().len(),
            spool.file_bytes()
        );
        assert!(!dir.join(TMP_NAME).exists());
        drop(spool);

        // The space is back, and the counters survived.
        let (mut spool, got) = open(&dir);
        assert!(got.records.is_empty() && got.skipped.is_empty(), "{got:?}");
        assert_eq!(got.next_id, 121);
        assert_eq!(got.seqs["door"], 1190);
        spool.append(&[big(121)]).unwrap();
    }
}
