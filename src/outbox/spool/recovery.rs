//! What [`Spool::open`] finds in an existing file: the live records, the
//! streams' seqs, the highest id, and the damage it skipped.
//!
//! # What it owns
//! Checking the header, scanning the frames in order and applying each to
//! the recovered state, and describing every damaged region (the first
//! [`SKIPPED_DETAILS`] in words, all of them counted).
//!
//! Damage is reported, never fatal. A torn end (what power loss leaves) is
//! reported so the caller cuts it off, and later appends follow the last
//! whole frame. Damage with whole frames after it is skipped up to the
//! whole frame with the magic and a matching checksum that ends first
//! (found by `resync`); it stays in the file, counted as dead, until the
//! next compaction. A frame of unknown kind, or whose body does not parse
//! although its checksum holds, is skipped. A second record with an id
//! already live is skipped (the first copy is kept). A file whose header
//! is not ours is renamed aside and a new spool started; one that ends
//! inside our header is replaced without keeping it.
//!
//! Recovery holds the live records (returned anyway) plus at most one frame
//! or 64 KiB of file at a time, and what `resync` holds while it looks.
//!
//! # What it must not know
//! How frames are encoded (that is `format`'s), how the next whole frame is
//! found (`resync`'s), or what the outbox does with what was recovered.
//! It does not cut the file or write to it beyond replacing a file whose
//! header is not ours: the `Spool` does that with what the scan returns.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

#[cfg(doc)]
use super::Spool;
use super::files::{create_empty, file_len, keep_aside};
use super::format::{
    FRAME_HEAD, HEADER, HEADER_LEN, KIND_CHECKPOINT, KIND_CLOSED, KIND_FORGET, KIND_RECORD,
    KIND_RESERVE, Record, decode_checkpoint, decode_forget, decode_record,
};
use super::reader::{Reader, frame_head};
use super::resync::resync;
use super::{Slot, SpoolError, io_err, raise};

/// A damaged region of the file that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// Where it starts, in bytes from the start of the file.
    pub offset: u64,
    /// How many bytes were skipped.
    pub bytes: u64,
    /// Why they could not be read as frames, in words.
    pub why: String,
}

/// How much of the file was damaged and skipped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// Damaged regions skipped.
    pub regions: u64,
    /// Bytes skipped, in all regions together.
    pub bytes: u64,
}

/// Damaged regions described in [`Recovered::skipped`]; the rest are only
/// counted in [`Recovered::damage`].
pub(super) const SKIPPED_DETAILS: usize = 8;

/// Damage as a scan finds it.
#[derive(Debug, Default)]
pub(super) struct Skipped {
    pub(super) first: Vec<Corruption>,
    pub(super) damage: Damage,
}

impl Skipped {
    fn push(&mut self, c: Corruption) {
        self.damage.regions += 1;
        self.damage.bytes = self.damage.bytes.saturating_add(c.bytes);
        if self.first.len() < SKIPPED_DETAILS {
            self.first.push(c);
        }
    }

    pub(super) fn merge(&mut self, later: Skipped) {
        let room = SKIPPED_DETAILS.saturating_sub(self.first.len());
        self.first.extend(later.first.into_iter().take(room));
        self.damage.regions += later.damage.regions;
        self.damage.bytes = self.damage.bytes.saturating_add(later.damage.bytes);
    }
}

/// What [`Spool::open`] found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Live (not forgotten) records, in id order.
    pub records: Vec<Record>,
    /// Highest seq ever seen per stream, from records (forgotten ones too)
    /// and checkpoints, or reserved by a run that did not stop cleanly.
    pub seqs: BTreeMap<String, u64>,
    /// 1 + the highest id ever seen, 0 if none.
    pub next_id: u64,
    /// The first `SKIPPED_DETAILS` damaged regions found and skipped.
    pub skipped: Vec<Corruption>,
    /// Every damaged region, counted: a hostile file can hold millions,
    /// which must cost neither memory nor a log line each.
    pub damage: Damage,
    /// The last run did not stop cleanly while it held reservations, so
    /// `seqs` continue after them (subscribers see a gap).
    pub unclean: bool,
}

/// Returns the file if its header is ours; otherwise reports it and returns
/// a new empty spool, after keeping the old file aside if it held anything.
pub(super) fn check_header(
    file: File,
    dir: &Path,
    path: &Path,
    skipped: &mut Skipped,
) -> Result<File, SpoolError> {
    let len = file_len(&file, path)?;
    let mut head = [0u8; HEADER.len()];
    let n = len.min(HEADER_LEN) as usize;
    file.read_exact_at(&mut head[..n], 0)
        .map_err(io_err("read the outbox spool", path))?;
    if head[..n] == HEADER[..n] {
        if n == HEADER.len() {
            return Ok(file);
        }
        // Nothing but (part of) our header: there is no data to keep.
        if n > 0 {
            let why = "the file ends inside its header; a new spool was started";
            skipped.push(hole(0, len, why.into()));
        }
    } else {
        let why = if n == HEADER.len() && head[..7] == HEADER[..7] {
            format!(
                "the file is spool format version {}, which this pinpost does not know",
                head[7]
            )
        } else {
            "the file does not start with the spool header \"PPSPOOL\"".to_owned()
        };
        let aside = keep_aside(dir, path)?;
        let why = format!(
            "{why}; it was kept as {} and a new spool was started",
            aside.display()
        );
        skipped.push(hole(0, len, why));
    }
    drop(file);
    create_empty(dir, path)
}

fn hole(offset: u64, bytes: u64, why: String) -> Corruption {
    Corruption { offset, bytes, why }
}

/// What a scan of the frames found; `end` is where the good part of the
/// file ends (before a torn tail).
#[derive(Default)]
pub(super) struct Scan {
    pub(super) live: BTreeMap<u64, (Slot, Record)>,
    pub(super) seqs: BTreeMap<String, u64>,
    /// Reservations since the last clean stop.
    pub(super) reserved: BTreeMap<String, u64>,
    pub(super) next_id: u64,
    pub(super) skipped: Skipped,
    pub(super) end: u64,
}

pub(super) fn scan(file: &File, path: &Path, len: u64) -> Result<Scan, SpoolError> {
    let mut r = Reader::new(file, path, len);
    let mut s = Scan {
        end: len,
        ..Scan::default()
    };
    let mut pos = HEADER_LEN;
    while pos < len {
        // Each frame is found by the same one pass that skips damage, which
        // ends where the frame found ends: every byte of the file is checked
        // about once, however the damage is laid out. (Checking the frame at
        // `pos` first, on its own, cost its claimed length each time: a file
        // of long-claiming heads each followed by a short whole frame took
        // time quadratic in its size.)
        let Some(at) = resync(&mut r, pos)? else {
            let why = match frame_head(&mut r, pos)? {
                Ok((_, body_len, _)) => format!("a frame of {body_len} bytes fails its checksum"),
                Err(why) => why,
            };
            let why = format!(
                "{why}; nothing whole follows, so it was cut off as a write torn by a crash \
                 or power loss"
            );
            s.skipped.push(hole(pos, len - pos, why));
            s.end = pos;
            break;
        };
        if at > pos {
            // A head that fits but was passed over fails its checksum (or,
            // in a crafted file, holds a whole frame that ends first).
            let why = match frame_head(&mut r, pos)? {
                Ok((_, body_len, _)) => format!("a frame of {body_len} bytes fails its checksum"),
                Err(why) => why,
            };
            s.skipped.push(hole(pos, at - pos, why));
            pos = at;
        }
        let (kind, body_len) = match frame_head(&mut r, pos)? {
            Ok((kind, body_len, _)) => (kind, body_len),
            // resync only finds frames whose head fits.
            Err(why) => {
                return Err(io_err("read the outbox spool", path)(io::Error::new(
                    io::ErrorKind::InvalidData,
                    why,
                )));
            }
        };
        let framed = FRAME_HEAD + u64::from(body_len);
        let body = r.get(pos + FRAME_HEAD, body_len as usize)?;
        let slot = Slot {
            offset: pos,
            len: framed,
        };
        if let Err(why) = s.apply(kind, body, slot) {
            s.skipped.push(hole(pos, framed, why));
        }
        pos += framed;
    }
    Ok(s)
}

impl Scan {
    /// Applies one checksummed frame; an error means it was skipped whole.
    fn apply(&mut self, kind: u8, body: &[u8], slot: Slot) -> Result<(), String> {
        let bad = |why: String| format!("a frame whose checksum holds is unreadable: {why}");
        match kind {
            KIND_RECORD => {
                let record = decode_record(body).map_err(bad)?;
                if self.live.contains_key(&record.id) {
                    return Err(format!(
                        "record {} appears twice; the first copy is kept",
                        record.id
                    ));
                }
                if let Some((name, seq)) = &record.stream {
                    raise(&mut self.seqs, name, *seq);
                }
                self.next_id = self.next_id.max(record.id.saturating_add(1));
                self.live.insert(record.id, (slot, record));
            }
            KIND_FORGET => {
                for id in decode_forget(body).map_err(bad)? {
                    self.live.remove(&id);
                    self.next_id = self.next_id.max(id.saturating_add(1));
                }
            }
            KIND_CHECKPOINT => {
                for (name, seq) in decode_checkpoint(body).map_err(bad)? {
                    raise(&mut self.seqs, &name, seq);
                }
            }
            KIND_RESERVE => {
                for (name, seq) in decode_checkpoint(body).map_err(bad)? {
                    raise(&mut self.reserved, &name, seq);
                }
            }
            KIND_CLOSED => self.reserved.clear(),
            other => {
                return Err(format!(
                    "a frame of unknown kind {other} (written by a newer pinpost?)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::Spool;
    use super::super::files::{DAMAGED_NAME, FILE_NAME};
    use super::super::format::{HEADER, HEADER_LEN, KIND_RECORD, record_body};
    use super::super::testing::*;
    use super::*;

    #[test]
    fn power_loss_at_any_byte_loses_only_what_was_being_written() {
        let src = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(src.path());
        // (end of the frame, what is live once it is whole)
        let mut steps = vec![(0, vec![]), (HEADER_LEN, vec![])];
        for id in 1..=4 {
            spool.append(&[rec(id)]).unwrap();
            steps.push((spool.file_bytes(), (1..=id).collect::<Vec<_>>()));
        }
        spool.forget(&[2]).unwrap();
        steps.push((spool.file_bytes(), vec![1, 3, 4]));
        let whole = fs::read(spool.path()).unwrap();

        for cut in 0..=whole.len() as u64 {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(FILE_NAME), &whole[..cut as usize]).unwrap();
            let (mut spool, got) = Spool::open(dir.path())
                .unwrap_or_else(|e| panic!("cut at {cut}: open failed: {e}"));
            let (good_end, live) = steps.iter().rev().find(|(end, _)| *end <= cut).unwrap();
            assert_eq!(&ids(&got.records), live, "cut at {cut}");
            if cut == *good_end {
                assert!(got.skipped.is_empty(), "cut at {cut}: {:?}", got.skipped);
            } else {
                assert_eq!(got.skipped.len(), 1, "cut at {cut}");
                let torn = &got.skipped[0];
                assert_eq!((torn.offset, torn.bytes), (*good_end, cut - good_end));
            }
            assert_eq!(
                spool.file_bytes(),
                (*good_end).max(HEADER_LEN),
                "cut at {cut}"
            );
            assert!(!dir.path().join(DAMAGED_NAME).exists(), "cut at {cut}");

            spool.append(&[rec(10)]).unwrap();
            drop(spool);
            let (_, again) = open(dir.path());
            let mut live = live.clone();
            live.push(10);
            assert_eq!(ids(&again.records), live, "cut at {cut}, after an append");
            assert!(
                again.skipped.is_empty(),
                "cut at {cut}: {:?}",
                again.skipped
            );
        }
    }

    #[test]
    fn a_flipped_byte_in_a_middle_record_loses_only_that_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path());
        spool.append(&[rec(1)]).unwrap();
        let start = spool.file_bytes();
        spool.append(&[rec(2)]).unwrap();
        let end = spool.file_bytes();
        spool.append(&[rec(3)]).unwrap();
        drop(spool);
        let mut bytes = fs::read(dir.path().join(FILE_NAME)).unwrap();
        bytes[start as usize + 30] ^= 0x04;
        fs::write(dir.path().join(FILE_NAME), &bytes).unwrap();

        let (mut spool, got) = open(dir.path());
        assert_eq!(ids(&got.records), [1, 3]);
        assert_eq!(got.skipped.len(), 1);
        let hole = &got.skipped[0];
        assert_eq!((hole.offset, hole.bytes), (start, end - start));
        assert!(hole.why.contains("checksum"), "{}", hole.why);
        assert_eq!(got.next_id, 4);

        // The damage stays, reported, until a compaction drops it.
        spool.append(&[rec(4)]).unwrap();
        drop(spool);
        let (mut spool, got) = open(dir.path());
        assert_eq!((ids(&got.records), got.skipped.len()), (vec![1, 3, 4], 1));
        spool.compact().unwrap();
        drop(spool);
        let (_, got) = open(dir.path());
        assert_eq!(got.records, vec![rec(1), rec(3), rec(4)]);
        assert!(got.skipped.is_empty());
    }

    #[test]
    fn garbage_and_absurd_lengths_in_the_middle_are_skipped_to_the_next_whole_frame() {
        let dir = tempfile::tempdir().unwrap();
        // A header claiming 4 GiB, then a run of bytes that look like magics.
        let mut garbage = vec![0x50, 0x50, KIND_RECORD, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        garbage.extend(std::iter::repeat_n(0x50, 5000));
        // A frame whose length is plausible but runs into the next frame.
        let mut liar = record_frame(&rec(3));
        liar[3] += 7;
        write_file(
            dir.path(),
            &[
                &record_frame(&rec(1)),
                &garbage,
                &record_frame(&rec(2)),
                &liar,
                &record_frame(&rec(4)),
            ],
        );
        let (_, got) = open(dir.path());
        assert_eq!(ids(&got.records), [1, 2, 4]);
        let holes: Vec<u64> = got.skipped.iter().map(|c| c.bytes).collect();
        assert_eq!(holes, [garbage.len() as u64, liar.len() as u64]);
        assert!(
            got.skipped[0].why.contains("4294967295"),
            "{}",
            got.skipped[0].why
        );
    }

    #[test]
    fn a_frame_of_unknown_kind_is_skipped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let future = frame(9, b"something newer");
        write_file(
            dir.path(),
            &[&record_frame(&rec(1)), &future, &record_frame(&rec(2))],
        );
        let (spool, got) = open(dir.path());
        assert_eq!(ids(&got.records), [1, 2]);
        let first_end = HEADER_LEN + record_frame(&rec(1)).len() as u64;
        assert_eq!(
            got.skipped,
            vec![Corruption {
                offset: first_end,
                bytes: future.len() as u64,
                why: "a frame of unknown kind 9 (written by a newer pinpost?)".into(),
            }]
        );
        // Nothing was cut: the unknown frame is whole.
        assert_eq!(
            spool.file_bytes(),
            fs::metadata(spool.path()).unwrap().len()
        );
    }

    #[test]
    fn a_checksummed_but_unreadable_record_is_skipped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = record_body(&rec(2)).unwrap();
        body[16] = 7; // the retain flag
        write_file(
            dir.path(),
            &[
                &record_frame(&rec(1)),
                &frame(KIND_RECORD, &body),
                &record_frame(&rec(3)),
            ],
        );
        let (_, got) = open(dir.path());
        assert_eq!(ids(&got.records), [1, 3]);
        assert_eq!(got.skipped.len(), 1);
        assert!(
            got.skipped[0].why.contains("retain flag is 7"),
            "{}",
            got.skipped[0].why
        );
    }

    #[test]
    fn a_file_with_a_foreign_header_is_kept_aside_and_a_new_spool_started() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join(FILE_NAME);
        fs::write(&wal, b"this is not a spool at all").unwrap();
        let (mut spool, got) = open(dir.path());
        assert!(got.records.is_empty());
        assert_eq!(got.skipped.len(), 1);
        assert_eq!((got.skipped[0].offset, got.skipped[0].bytes), (0, 26));
        assert!(
            got.skipped[0].why.contains("outbox.wal.damaged"),
            "{}",
            got.skipped[0].why
        );
        let aside = dir.path().join(DAMAGED_NAME);
        assert_eq!(fs::read(&aside).unwrap(), b"this is not a spool at all");
        assert_eq!(fs::read(&wal).unwrap(), HEADER);
        spool.append(&[rec(1)]).unwrap();
        drop(spool);

        // A newer format version is not ours either, and the first damaged
        // file is not overwritten.
        fs::write(&wal, b"PPSPOOL\x02 and then things").unwrap();
        let (_, got) = open(dir.path());
        assert!(
            got.skipped[0].why.contains("version 2"),
            "{}",
            got.skipped[0].why
        );
        assert_eq!(fs::read(&aside).unwrap(), b"this is not a spool at all");
        let second = dir.path().join(format!("{DAMAGED_NAME}.1"));
        assert_eq!(fs::read(second).unwrap(), b"PPSPOOL\x02 and then things");
    }

    #[test]
    fn random_damage_never_stops_recovery_nor_invents_records() {
        let src = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(src.path());
        for id in 1..=12 {
            spool.append(&[rec(id)]).unwrap();
        }
        let whole = fs::read(spool.path()).unwrap();
        drop(spool);
        // xorshift: repeatable without a dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below as u64) as usize
        };
        for round in 0..300 {
            let mut bytes = whole.clone();
            for _ in 0..1 + next(4) {
                if bytes.len() <= HEADER.len() {
                    break;
                }
                let at = HEADER.len() + next(bytes.len() - HEADER.len());
                match next(3) {
                    0 => bytes[at] ^= 1 << next(8),
                    1 => bytes
                        .splice(at..at, (0..next(40)).map(|_| next(256) as u8))
                        .for_each(drop),
                    _ => bytes.truncate(at),
                }
            }
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(FILE_NAME), &bytes).unwrap();
            let (mut spool, got) = Spool::open(dir.path())
                .unwrap_or_else(|e| panic!("round {round}: open failed: {e}"));
            for r in &got.records {
                assert_eq!(r, &rec(r.id), "round {round}: a record came back changed");
            }
            spool.append(&[rec(100)]).unwrap();
        }
    }

    #[test]
    fn many_damaged_regions_are_counted_not_each_described() {
        let dir = tempfile::tempdir().unwrap();
        let closed = frame(KIND_CLOSED, &[]);
        let mut parts: Vec<Vec<u8>> = vec![record_frame(&rec(1))];
        for _ in 0..10_000 {
            parts.push(vec![0xee]);
            parts.push(closed.clone());
        }
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        write_file(dir.path(), &parts);
        let (_, got) = open(dir.path());
        assert_eq!(ids(&got.records), [1]);
        assert_eq!(got.skipped.len(), SKIPPED_DETAILS);
        assert_eq!(
            got.damage,
            Damage {
                regions: 10_000,
                bytes: 10_000
            }
        );
    }
}
