//! The outbox's spool on disk: a write-ahead log of the messages the broker
//! has not acknowledged yet, so that they survive `kill -9` and power loss at
//! any instant.
//!
//! # What it owns
//! One directory (created 0700) holding `outbox.wal` (0600, whatever the
//! umask, as every file here), plus `outbox.wal.tmp` while a compaction is
//! being written and `outbox.wal.damaged` (then `.1`, `.2`, …) for a file
//! whose header was unreadable. It stores records, forgets them, recovers
//! what is live after a crash and compacts. In memory it keeps only an index
//! (live id → where its frame is) and the per-stream sequence numbers:
//! payloads stay on disk, and compaction copies frames from the old file by
//! offset.
//!
//! This module is the file's lifecycle: [`Spool::open`], then writes
//! ([`Spool::write`], [`Spool::append`], [`Spool::forget`],
//! `Spool::checkpoint`, `Spool::reserve`, `Spool::close`),
//! `Spool::sync` and `Spool::read`. The rest is in its own modules:
//! - `format`: the header, the frame layout, the kinds of frame and their
//!   bodies (the file format table is there);
//! - `reader`: reading frames out of the file through a window;
//! - `recovery`: what [`Spool::open`] finds: scanning the file, skipping
//!   and reporting damage, a header that is not ours;
//! - `resync`: finding the next whole frame after damage, in one pass;
//! - `compaction`: rewriting the file down to what is live, by hand
//!   ([`Spool::compact`]) or on its own;
//! - `files`: the directory and its files: modes, crash-safe replacement,
//!   keeping a damaged file aside.
//!
//! # What it must not know
//! MQTT, what topics, payloads or stream names mean, the configuration, or
//! when anything should be written: the outbox decides what to write,
//! forget, checkpoint and reserve, and when to sync, and keeps its own copies
//! of messages if it wants them. Nothing here logs; damage is returned in
//! [`Recovered::skipped`] (the first few regions) and [`Recovered::damage`]
//! (all of them, counted), and a failed automatic compaction through
//! `Spool::take_compaction_error`, which the caller must poll to log it.
//!
//! # What a write promises
//! "Reaches the kernel" means the bytes are in the kernel's page cache when
//! the method returns Ok: they survive the process being killed (`kill -9`,
//! a panic) but not a power cut. "Durable" means they were synced to the
//! disk (`fdatasync`) before the method returned Ok, so a power cut keeps
//! them. Every sync covers the whole file, so a durable write also makes
//! every earlier one durable.
//! - [`Spool::write`] reaches the kernel only; `Spool::sync` makes it
//!   durable.
//! - [`Spool::append`] (a write and a sync), [`Spool::forget`],
//!   `Spool::checkpoint`, `Spool::reserve`, `Spool::reserve_upto`,
//!   `Spool::close` and [`Spool::compact`] are durable.
//! - `write`, `append`, `forget`, `checkpoint` and the reserves may then compact
//!   the file on their own (see `compaction`); `close`, `sync` and `read`
//!   never do. A compaction that succeeds leaves the whole file durable.
//!   One that fails does not fail the write that triggered it: it is kept
//!   for `Spool::take_compaction_error`.
//!
//! One process owns the directory: nothing here locks it.

#![forbid(unsafe_code)]

mod compaction;
mod files;
mod format;
mod reader;
mod recovery;
mod resync;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub(super) use files::make_private;
pub use format::Record;
pub use recovery::{Corruption, Damage, Recovered};

use files::{FILE_NAME, TMP_NAME, create_empty, file_len, sync_dir};
use format::{
    FRAME_HEAD, IDS_PER_FORGET, KIND_CHECKPOINT, KIND_CLOSED, KIND_FORGET, KIND_RECORD,
    KIND_RESERVE, checkpoint_body, decode_record, forget_body, put_frame, record_body,
};
use reader::{Reader, frame_at};
use recovery::{Skipped, check_header, scan};

/// Why a spool operation failed, naming the file and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// `doing` names the operation and what the file is, e.g. "write the
    /// outbox spool"; the io::Error is in the message (not `source`) so it is
    /// not printed twice by reporters that walk the chain.
    #[error("cannot {doing} {}: {err}", path.display())]
    Io {
        /// What was being done, e.g. "write the outbox spool".
        doing: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// What the system said.
        err: io::Error,
    },
    /// [`Spool::write`] (or [`Spool::append`]) was given an id that is
    /// already live, or twice in one batch.
    #[error(
        "cannot append record {id} to the outbox spool {}: a record with that id is already \
         in it",
        path.display()
    )]
    IdInUse {
        /// The spool file.
        path: PathBuf,
        /// The id already in it.
        id: u64,
    },
    /// A record or checkpoint too large for one frame.
    #[error("cannot write to the outbox spool {}: {what}", path.display())]
    TooLarge {
        /// The spool file.
        path: PathBuf,
        /// What was too large, in words.
        what: String,
    },
}

fn io_err<'a>(doing: &'static str, path: &'a Path) -> impl Fn(io::Error) -> SpoolError + 'a {
    move |err| SpoolError::Io {
        doing,
        path: path.to_path_buf(),
        err,
    }
}

/// Where a live record's frame is in the current file.
#[derive(Debug, Clone, Copy)]
struct Slot {
    offset: u64,
    len: u64,
}

/// The open spool. What each method that writes promises on Ok (reaches
/// the kernel, or durable on disk) is in its own doc and in the module's
/// "What a write promises".
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    file_bytes: u64,
    live: BTreeMap<u64, Slot>,
    live_bytes: u64,
    seqs: BTreeMap<String, u64>,
    /// Seqs reserved since the last clean stop (see [`Spool::reserve`]).
    reserved: BTreeMap<String, u64>,
    next_id: u64,
    compaction_error: Option<SpoolError>,
    /// Frames that would be durable on return only reach the kernel; the
    /// owner syncs (see [`Spool::defer_syncs`]).
    deferred: bool,
    /// After a failed automatic compaction, none is tried again before the
    /// file reaches this size, so a full disk does not cost a rewrite per call.
    retry_compaction_at: u64,
}

impl Spool {
    /// Opens (creating dir with mode 0700 and file with mode 0600 if missing)
    /// the spool file `dir/outbox.wal`, reads everything, and returns what is
    /// live. Damage in the file is reported in [`Recovered::skipped`] and
    /// [`Recovered::damage`], not as an error. Durable: a new directory and
    /// file are synced, a torn end is cut off and synced, and a file whose
    /// header is not ours is kept aside and replaced by a synced new one.
    /// Never compacts.
    pub fn open(dir: &Path) -> Result<(Spool, Recovered), SpoolError> {
        let existed = dir.is_dir();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("create the outbox spool directory", dir))?;
        if !existed {
            // The mode given at creation is cut by the umask; this is not.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(io_err("make private the outbox spool directory", dir))?;
            // So the new directory itself survives a power cut. Best effort:
            // the parent may not be readable, and that must not stop the spool.
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            let _ = sync_dir(parent.unwrap_or(Path::new(".")));
        }
        let path = dir.join(FILE_NAME);
        // A compaction that died before its rename left the old file whole:
        // the copy is of no use.
        let tmp = dir.join(TMP_NAME);
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("remove the unfinished compaction", &tmp)(e));
            }
            _ => {}
        }
        let mut skipped = Skipped::default();
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => {
                // A file left by an older pinpost under a loose umask.
                make_private(&file, &path)?;
                check_header(file, dir, &path, &mut skipped)?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_empty(dir, &path)?,
            Err(e) => return Err(io_err("open the outbox spool", &path)(e)),
        };
        let len = file_len(&file, &path)?;
        let scan = scan(&file, &path, len)?;
        skipped.merge(scan.skipped);
        if scan.end < len {
            file.set_len(scan.end)
                .and_then(|()| file.sync_data())
                .map_err(io_err("cut the torn end off the outbox spool", &path))?;
        }
        let mut live = BTreeMap::new();
        let mut records = Vec::with_capacity(scan.live.len());
        for (id, (slot, record)) in scan.live {
            live.insert(id, slot);
            records.push(record);
        }
        let spool = Spool {
            dir: dir.to_path_buf(),
            path,
            file,
            file_bytes: scan.end,
            live_bytes: live.values().map(|s| s.len).sum(),
            live,
            seqs: scan.seqs.clone(),
            reserved: scan.reserved.clone(),
            next_id: scan.next_id,
            compaction_error: None,
            deferred: false,
            retry_compaction_at: 0,
        };
        // A run that did not stop cleanly may have used every seq it had
        // reserved; continuing after them leaves a gap rather than reusing a
        // seq for a different reading.
        let unclean = !scan.reserved.is_empty();
        let mut seqs = scan.seqs;
        for (name, upto) in &scan.reserved {
            raise(&mut seqs, name, *upto);
        }
        let recovered = Recovered {
            records,
            seqs,
            next_id: scan.next_id,
            skipped: skipped.first,
            damage: skipped.damage,
            unclean,
        };
        Ok((spool, recovered))
    }

    /// [`Spool::write`] then `Spool::sync`: durable on disk when it returns
    /// Ok (one `fdatasync` per call). Ids must not be live already (nor
    /// repeat within the batch); otherwise, or if a record is too large,
    /// nothing is written and an error returned. If the write succeeds but
    /// the sync fails, the error is returned and the records stay written
    /// and live (in the kernel's cache, not yet durable). May compact, as
    /// `write` does.
    pub fn append(&mut self, records: &[Record]) -> Result<(), SpoolError> {
        self.write(records)?;
        self.sync()
    }

    /// Appends records without syncing: on Ok they have reached the kernel,
    /// so they survive the process being killed, but not a power cut until
    /// the next `Spool::sync` (or any durable write: every sync covers the
    /// whole file). Lets the outbox group one sync over many messages. Ids
    /// must not be live already (nor repeat within the batch); otherwise, or
    /// if a record is too large, nothing is written and an error returned.
    /// A write that fails part-way is cut off again, so a batch reported as
    /// failed is never read back. Afterwards it may compact the file (then
    /// durable, these records included); a failed compaction is kept for
    /// `Spool::take_compaction_error`, not returned.
    pub fn write(&mut self, records: &[Record]) -> Result<(), SpoolError> {
        let mut bytes = Vec::new();
        let mut slots = Vec::with_capacity(records.len());
        let mut next_id = self.next_id;
        let mut batch = BTreeSet::new();
        for r in records {
            if self.live.contains_key(&r.id) || !batch.insert(r.id) {
                return Err(SpoolError::IdInUse {
                    path: self.path.clone(),
                    id: r.id,
                });
            }
            let body = record_body(r).map_err(|what| self.too_large(what))?;
            let offset = self.file_bytes + bytes.len() as u64;
            put_frame(&mut bytes, KIND_RECORD, &body);
            slots.push((
                r.id,
                Slot {
                    offset,
                    len: FRAME_HEAD + body.len() as u64,
                },
            ));
            next_id = next_id.max(r.id.saturating_add(1));
        }
        if bytes.is_empty() {
            return Ok(());
        }
        self.write_at_end(&bytes, false)?;
        for (name, seq) in records.iter().filter_map(|r| r.stream.as_ref()) {
            raise(&mut self.seqs, name, *seq);
        }
        for (id, slot) in slots {
            self.live_bytes += slot.len;
            self.live.insert(id, slot);
        }
        self.next_id = next_id;
        self.maybe_compact();
        Ok(())
    }

    /// Marks ids as gone (acknowledged or dropped): durable on disk when it
    /// returns Ok. Ids that are not live are ignored (and nothing is written
    /// if none is). Usually one forget frame, appended and synced, after
    /// which the file may be compacted. When nothing is left live the file
    /// is instead compacted at once, down to the seqs and the highest id
    /// (the new file synced, renamed into place, the directory synced); if
    /// that copy cannot be written (a full disk) the file is cut down in
    /// place, and only if that fails too is a forget frame appended, the
    /// compaction's error kept for `Spool::take_compaction_error`.
    pub fn forget(&mut self, ids: &[u64]) -> Result<(), SpoolError> {
        let gone: BTreeSet<u64> = ids
            .iter()
            .copied()
            .filter(|id| self.live.contains_key(id))
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        if gone.len() == self.live.len() {
            // The compacted file is itself the durable record of the forget,
            // so a drained outbox costs no more writes than a forget frame.
            let kept = std::mem::take(&mut self.live);
            let kept_bytes = std::mem::replace(&mut self.live_bytes, 0);
            match self.rewrite() {
                Ok(_) => return self.sync_dir(),
                Err(e) => {
                    self.live = kept;
                    self.live_bytes = kept_bytes;
                    // A full disk has no room for the copy, and a forget
                    // frame would not fit either: the file would stay full
                    // for good. Nothing is live, so it can be cut in place.
                    if self.truncate_in_place(&gone).is_ok() {
                        return Ok(());
                    }
                    self.compaction_failed(e);
                }
            }
        }
        let gone: Vec<u64> = gone.into_iter().collect();
        let mut bytes = Vec::new();
        for chunk in gone.chunks(IDS_PER_FORGET) {
            put_frame(&mut bytes, KIND_FORGET, &forget_body(chunk));
        }
        self.write_durably(&bytes)?;
        for id in &gone {
            if let Some(slot) = self.live.remove(id) {
                self.live_bytes -= slot.len;
            }
        }
        self.maybe_compact();
        Ok(())
    }

    /// Persists the per-stream seq counters so they survive even when every
    /// record is forgotten and compacted away: one checkpoint frame, durable
    /// on disk when it returns Ok. Counters the spool already holds at that
    /// value or higher are not written again; if none is new nothing is
    /// written. May compact afterwards, as `write` does.
    pub(crate) fn checkpoint(&mut self, seqs: &BTreeMap<String, u64>) -> Result<(), SpoolError> {
        let new: Vec<(&String, u64)> = seqs
            .iter()
            .filter(|(name, seq)| self.seqs.get(*name).is_none_or(|known| *seq > known))
            .map(|(name, seq)| (name, *seq))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let body = checkpoint_body(new.iter().copied()).map_err(|what| self.too_large(what))?;
        let mut bytes = Vec::new();
        put_frame(&mut bytes, KIND_CHECKPOINT, &body);
        self.write_durably(&bytes)?;
        for (name, seq) in new {
            raise(&mut self.seqs, name, seq);
        }
        self.maybe_compact();
        Ok(())
    }

    /// Makes sure `seq` of `name` is reserved; when it is not, reserves it
    /// and the `block - 1` after it in one reserve frame, durable on disk
    /// before it returns Ok, so a seq is never used that a crash could
    /// forget. Writes nothing when `seq` is already reserved. May compact
    /// afterwards, as `write` does.
    #[cfg(test)]
    pub(crate) fn reserve(&mut self, name: &str, seq: u64, block: u64) -> Result<(), SpoolError> {
        if self.reserved.get(name).is_some_and(|upto| seq <= *upto) {
            return Ok(());
        }
        let upto = seq.saturating_add(block.saturating_sub(1));
        let body = checkpoint_body(std::iter::once((&name.to_owned(), upto)))
            .map_err(|what| self.too_large(what))?;
        let mut bytes = Vec::new();
        put_frame(&mut bytes, KIND_RESERVE, &body);
        self.write_durably(&bytes)?;
        raise(&mut self.reserved, name, upto);
        self.maybe_compact();
        Ok(())
    }

    /// Reserves each stream's seqs up to its value in one reserve frame,
    /// durable on disk before it returns Ok: one sync however many streams
    /// (a reconnect asks for every stream at once, and on an SD card each
    /// sync can take hundreds of milliseconds). Streams already reserved
    /// that far are left out; if none is left nothing is written. May
    /// compact afterwards, as `write` does.
    pub(crate) fn reserve_upto(&mut self, upto: &BTreeMap<String, u64>) -> Result<(), SpoolError> {
        let new: Vec<(&String, u64)> = upto
            .iter()
            .filter(|(name, upto)| self.reserved.get(*name).is_none_or(|known| **upto > *known))
            .map(|(name, upto)| (name, *upto))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let body = checkpoint_body(new.iter().copied()).map_err(|what| self.too_large(what))?;
        let mut bytes = Vec::new();
        put_frame(&mut bytes, KIND_RESERVE, &body);
        self.write_durably(&bytes)?;
        for (name, upto) in new {
            raise(&mut self.reserved, name, upto);
        }
        self.maybe_compact();
        Ok(())
    }

    /// Marks a clean stop, after the final [`Spool::checkpoint`]: the next
    /// run continues from the exact seqs instead of after the reservations.
    /// One closed frame, durable on disk when it returns Ok; nothing is
    /// written when no reservation is open. Never compacts.
    pub(crate) fn close(&mut self) -> Result<(), SpoolError> {
        if self.reserved.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        put_frame(&mut bytes, KIND_CLOSED, &[]);
        self.write_durably(&bytes)?;
        self.reserved.clear();
        Ok(())
    }

    /// Current size of the file.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// Bytes taken by live records' frames.
    #[cfg(test)]
    pub(crate) fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    #[cfg(test)]
    pub(crate) fn live_count(&self) -> usize {
        self.live.len()
    }

    #[cfg(test)]
    pub(crate) fn is_live(&self, id: u64) -> bool {
        self.live.contains_key(&id)
    }

    /// The spool file, `outbox.wal` in the spool's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Highest seq known per stream: from the records written and the
    /// checkpoints, each as durable as the write that carried it (so a seq
    /// from a record not yet synced is in the kernel's cache only).
    #[cfg(test)]
    pub(crate) fn seqs(&self) -> &BTreeMap<String, u64> {
        &self.seqs
    }

    fn too_large(&self, what: String) -> SpoolError {
        SpoolError::TooLarge {
            path: self.path.clone(),
            what,
        }
    }

    /// Makes everything written so far durable on disk (`fdatasync` of the
    /// file). Writes nothing itself and never compacts.
    pub(crate) fn sync(&mut self) -> Result<(), SpoolError> {
        self.file
            .sync_data()
            .map_err(io_err("sync to disk the outbox spool", &self.path))
    }

    /// Reads back live record `id` (`None` if it is not live). A frame that
    /// no longer checks out is an error naming the damage. Writes nothing.
    pub(crate) fn read(&self, id: u64) -> Result<Option<Record>, SpoolError> {
        let Some(slot) = self.live.get(&id) else {
            return Ok(None);
        };
        let mut r = Reader::new(&self.file, &self.path, self.file_bytes);
        let damaged = |why: String| {
            io_err("read back from the outbox spool", &self.path)(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("record {id} at offset {}: {why}", slot.offset),
            ))
        };
        let (kind, len) = frame_at(&mut r, slot.offset)?.map_err(damaged)?;
        if kind != KIND_RECORD {
            return Err(damaged(format!("a frame of kind {kind} is there")));
        }
        let body = r.get(slot.offset + FRAME_HEAD, len as usize)?;
        let record = decode_record(body).map_err(damaged)?;
        if record.id != id {
            return Err(damaged(format!("record {} is there", record.id)));
        }
        Ok(Some(record))
    }

    /// Writes at the end of the file and syncs: durable on Ok, unless syncs
    /// are deferred to the owner.
    fn write_durably(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        self.write_at_end(bytes, !self.deferred)
    }

    /// From here on, the frames `forget`, `checkpoint`, `reserve_upto` and
    /// `close` append only reach the kernel when they return; the owner
    /// makes them durable with [`Spool::sync`], or from another thread
    /// through [`Spool::sync_handle`], so that a slow disk's sync does not
    /// hold up the next read or write. Compaction still syncs its copy and
    /// the directory itself.
    pub(crate) fn defer_syncs(&mut self) {
        self.deferred = true;
    }

    /// A second handle on the current file, to sync it from elsewhere (it
    /// stays on this file when a compaction replaces it: take a new one
    /// for each sync).
    pub(crate) fn sync_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Writes at the end of the file (reaching the kernel), and syncs when
    /// `sync` is set. On failure whatever part landed is cut off again, so
    /// that a batch reported as failed can never be read back later and the
    /// next write starts on a frame boundary.
    fn write_at_end(&mut self, bytes: &[u8], sync: bool) -> Result<(), SpoolError> {
        let at = self.file_bytes;
        let done = self
            .file
            .write_all_at(bytes, at)
            .map_err(io_err("write the outbox spool", &self.path))
            .and_then(|()| {
                if !sync {
                    return Ok(());
                }
                self.file
                    .sync_data()
                    .map_err(io_err("sync to disk the outbox spool", &self.path))
            });
        match done {
            Ok(()) => {
                self.file_bytes += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Best effort: if even this fails, the next write still goes
                // at `at`, over the partial frames.
                let _ = self.file.set_len(at);
                Err(e)
            }
        }
    }

    fn sync_dir(&self) -> Result<(), SpoolError> {
        sync_dir(&self.dir)
    }
}

/// Raises `name`'s seq in `seqs` to at least `seq` (seqs never go back).
fn raise(seqs: &mut BTreeMap<String, u64>, name: &str, seq: u64) {
    match seqs.get_mut(name) {
        Some(known) => *known = (*known).max(seq),
        None => {
            seqs.insert(name.to_owned(), seq);
        }
    }
}

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
