//! Resynchronising after damage: from an offset, finding the whole frame
//! with a matching checksum that ends first, in one pass over the bytes
//! however many candidate frame heads overlap (see [`resync`]). This is
//! what keeps opening a spool linear in the size of the file, hostile or
//! not, and it holds at most `PENDING_MAX` candidates (4 MiB) at a time.
//!
//! # What it must not know
//! What frames mean or what is done with the damage it passes over: it
//! returns an offset, and `recovery` decides the rest.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::SpoolError;
use super::format::{FRAME_HEAD, MAGIC, MAX_BODY};
use super::reader::{READ_AHEAD, Reader};
use crate::outbox::crc;

/// Candidate frames whose checksums are computed at once while
/// resynchronising: bounds the memory it takes (16 bytes each) however
/// densely a hostile file packs frame heads.
const PENDING_MAX: usize = 1 << 18;

/// Where a frame head with a plausible length starts: `frame_at` would
/// go on to check its checksum.
struct Candidate {
    start: u64,
    kind: u8,
    len: u32,
    crc: u32,
}

/// The first candidate at or after `off`.
fn next_candidate(r: &mut Reader, mut off: u64) -> Result<Option<Candidate>, SpoolError> {
    while off + FRAME_HEAD <= r.end {
        let window = r.ahead(off, FRAME_HEAD as usize)?;
        let Some(i) = window.windows(2).position(|w| w == MAGIC) else {
            // The last byte may be the first half of a magic.
            off += window.len() as u64 - 1;
            continue;
        };
        let at = off + i as u64;
        if at + FRAME_HEAD > r.end {
            return Ok(None);
        }
        let room = r.end - at - FRAME_HEAD;
        let h = r.get(at, FRAME_HEAD as usize)?;
        let len = u32::from_le_bytes([h[3], h[4], h[5], h[6]]);
        if len <= MAX_BODY && u64::from(len) <= room {
            return Ok(Some(Candidate {
                start: at,
                kind: h[2],
                len,
                crc: u32::from_le_bytes([h[7], h[8], h[9], h[10]]),
            }));
        }
        off = at + 1;
    }
    Ok(None)
}

/// A CRC register fed with the file from some offset up to `at`.
struct Running {
    reg: u32,
    at: u64,
}

impl Running {
    fn feed_to(&mut self, r: &mut Reader, to: u64) -> Result<(), SpoolError> {
        while self.at < to {
            let n = (to - self.at).min(READ_AHEAD as u64) as usize;
            let data = r.get(self.at, n)?;
            // From one candidate to the next is often a few bytes: not
            // worth setting up crc32fast's vector code for.
            self.reg = match data.len() {
                ..=16 => data.iter().fold(self.reg, |reg, b| crc::byte(reg, *b)),
                _ => crc::feed(self.reg, data),
            };
            self.at += n as u64;
        }
        Ok(())
    }
}

/// The offset of a whole frame with a matching checksum at or after `off`:
/// of all of them, the one that ends first (the first to start among those
/// ending there), if any. In an undamaged file that is the frame at `off`.
///
/// Linear in the bytes it passes, however many candidates overlap: checking
/// each candidate by reading its body would cost its length each time, so
/// a file packed with heads claiming megabytes took minutes to open. Instead
/// one register runs over the file once; at a candidate's body start the
/// register value it must show at the body's end is worked out (CRC-32 is
/// linear, see [`crc`]), and each candidate is settled when the register
/// gets there, in order of their ends. Choosing the frame that ends first
/// (rather than the first to start) lets the search stop there, where the
/// next search starts, so a whole scan passes over each byte about once.
/// The two choices differ only when a frame's body holds another frame whose
/// checksum also holds, which the outbox's JSON payloads cannot (a frame
/// head needs bytes JSON escapes).
///
/// Past [`PENDING_MAX`] candidates in flight, discovery pauses: a frame found
/// among those is taken even if one not yet discovered would end first (a
/// file crafted that densely has no order worth keeping), and if none is
/// whole the search goes on after them with a fresh register.
pub(super) fn resync(r: &mut Reader, mut off: u64) -> Result<Option<u64>, SpoolError> {
    loop {
        match resync_round(r, off)? {
            Round::Found(at) => return Ok(Some(at)),
            Round::Nothing => return Ok(None),
            Round::From(next) => off = next,
        }
    }
}

/// A candidate being checked: its end, length, and the register value at
/// its end that proves its checksum.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pending(u128);

impl Pending {
    fn new(end: u64, len: u32, target: u32) -> Pending {
        Pending(u128::from(end) << 64 | u128::from(!len) << 32 | u128::from(target))
    }

    fn end(self) -> u64 {
        (self.0 >> 64) as u64
    }

    fn len(self) -> u32 {
        !((self.0 >> 32) as u32)
    }

    fn target(self) -> u32 {
        self.0 as u32
    }
}

/// Candidates in order of [`Pending`]: earliest end first, then the
/// longest (earliest start). Those arriving in order (in a damaged region,
/// mostly) go to a plain queue; only the others pay for the heap.
#[derive(Default)]
struct Queue {
    in_order: VecDeque<Pending>,
    heap: BinaryHeap<Reverse<Pending>>,
}

impl Queue {
    fn push(&mut self, p: Pending) {
        if self.in_order.back().is_none_or(|last| *last <= p) {
            self.in_order.push_back(p);
        } else {
            self.heap.push(Reverse(p));
        }
    }

    fn first(&self) -> Option<Pending> {
        let heap = self.heap.peek().map(|r| r.0);
        match (self.in_order.front().copied(), heap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn pop(&mut self) -> Option<Pending> {
        let first = self.first()?;
        if self.in_order.front() == Some(&first) {
            self.in_order.pop_front()
        } else {
            self.heap.pop().map(|r| r.0)
        }
    }

    fn len(&self) -> usize {
        self.in_order.len() + self.heap.len()
    }
}

enum Round {
    Found(u64),
    Nothing,
    /// [`PENDING_MAX`] candidates before this offset were all damaged: go on
    /// from it with a fresh register.
    From(u64),
}

fn resync_round(r: &mut Reader, from: u64) -> Result<Round, SpoolError> {
    let mut running = Running { reg: 0, at: from };
    let mut pending = Queue::default();
    let mut next = next_candidate(r, from)?;
    let mut paused = None;
    loop {
        let due = pending.first().map(Pending::end);
        // A candidate's target needs the register at its body's start, so
        // it is taken before the register moves past that start.
        if let Some(c) = next.take_if(|c| due.is_none_or(|end| end > c.start + FRAME_HEAD)) {
            let body = c.start + FRAME_HEAD;
            running.feed_to(r, body)?;
            let target = !c.crc ^ crc::zeros(crc::byte(crc::START, c.kind) ^ running.reg, c.len);
            pending.push(Pending::new(body + u64::from(c.len), c.len, target));
            if pending.len() >= PENDING_MAX {
                paused = Some(c.start + 1);
            } else {
                next = next_candidate(r, c.start + 1)?;
            }
            continue;
        }
        let Some(p) = pending.pop() else {
            return Ok(paused.map_or(Round::Nothing, Round::From));
        };
        running.feed_to(r, p.end())?;
        if running.reg == p.target() {
            return Ok(Round::Found(p.end() - FRAME_HEAD - u64::from(p.len())));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File};
    use std::path::Path;

    use super::super::files::FILE_NAME;
    use super::super::format::{HEADER, HEADER_LEN, KIND_CLOSED, KIND_RECORD};
    use super::super::reader::frame_at;
    use super::super::recovery::{Damage, Recovered, SKIPPED_DETAILS};
    use super::super::testing::*;
    use super::*;

    /// A spool as an attacker (or a very unlucky card) would leave it: a
    /// whole record, then `size` bytes of frame heads every `period` bytes
    /// claiming `len` bytes each with a wrong checksum, then a whole record.
    fn hostile(dir: &Path, size: usize, head: &[u8]) -> Vec<u8> {
        let mut middle = Vec::with_capacity(size + head.len());
        while middle.len() < size {
            middle.extend_from_slice(head);
        }
        middle.truncate(size);
        write_file(
            dir,
            &[&record_frame(&rec(1)), &middle, &record_frame(&rec(2))],
        );
        middle
    }

    /// `len` as a fake frame head of kind 1 with a checksum that fails.
    fn fake_head(len: u32) -> Vec<u8> {
        let mut h = MAGIC.to_vec();
        h.push(KIND_RECORD);
        h.extend_from_slice(&len.to_le_bytes());
        h.extend_from_slice(&0xdead_beefu32.to_le_bytes());
        h
    }

    /// The bound for a 16 MiB hostile spool is 2 s, for the real
    /// (optimised) binary; an unoptimised test build on a machine shared
    /// with other builds gets five times that. Opening such a file used to
    /// take far longer than either (minutes at 4 MiB).
    const HOSTILE_16_MIB_SECS: f64 = if cfg!(debug_assertions) { 10.0 } else { 2.0 };

    /// The best of three opens: a shared machine's load only ever adds
    /// time, so the fastest is the one that says what the code costs.
    fn time_open(dir: &Path) -> (f64, Recovered) {
        let mut best = f64::MAX;
        let mut last = None;
        for _ in 0..3 {
            let started = std::time::Instant::now();
            let (_, got) = open(dir);
            best = best.min(started.elapsed().as_secs_f64());
            last = Some(got);
        }
        (best, last.expect("opened three times"))
    }

    #[test]
    fn a_hostile_spool_opens_in_time_linear_in_its_size_and_keeps_its_records() {
        // Heads every 11 bytes whose lengths reach half-way through the
        // file: checked one by one, each costs its length, so opening took
        // time quadratic in the size (a 4 MiB file, tens of seconds).
        let mut times = Vec::new();
        for mib in [4usize, 16] {
            let dir = tempfile::tempdir().unwrap();
            let size = mib << 20;
            let middle = hostile(dir.path(), size, &fake_head((size / 2) as u32));
            let (secs, got) = time_open(dir.path());
            eprintln!("hostile spool of {mib} MiB (a head every 11 bytes): opened in {secs:.3} s");
            assert_eq!(ids(&got.records), [1, 2]);
            // One damaged region, reported once, however many heads it holds.
            assert_eq!(got.skipped.len(), 1, "{:?}", got.skipped);
            let first_end = HEADER_LEN + record_frame(&rec(1)).len() as u64;
            assert_eq!(
                (got.skipped[0].offset, got.skipped[0].bytes),
                (first_end, middle.len() as u64)
            );
            assert_eq!(
                got.damage,
                Damage {
                    regions: 1,
                    bytes: middle.len() as u64
                }
            );
            times.push(secs);
        }
        // Linear: four times the size, about four times the time (quadratic
        // would be sixteen); the floor keeps a fast machine's noise out.
        let ratio = times[1] / times[0].max(0.05);
        eprintln!("16 MiB / 4 MiB open time: {ratio:.1}");
        assert!(ratio < 8.0, "{times:?}");
        assert!(
            times[1] < HOSTILE_16_MIB_SECS,
            "16 MiB took {:.2} s",
            times[1]
        );
    }

    #[test]
    fn the_densest_hostile_spool_still_opens_in_time() {
        // "PP" kind 0 and a length byte every 4 bytes: a head claiming about
        // 5 MiB starts at every fourth byte, the most a file can hold, which
        // is also the most candidates recovery must hold at once.
        let dir = tempfile::tempdir().unwrap();
        hostile(dir.path(), 16 << 20, &[0x50, 0x50, 0, 7]);
        let (secs, got) = time_open(dir.path());
        eprintln!("densest hostile spool of 16 MiB (a head every 4 bytes): opened in {secs:.3} s");
        assert_eq!(ids(&got.records), [1, 2]);
        assert_eq!(got.damage.regions, 1);
        assert!(secs < HOSTILE_16_MIB_SECS, "16 MiB took {secs:.2} s");
    }

    #[test]
    fn a_spool_of_long_claiming_heads_each_followed_by_a_whole_frame_opens_in_linear_time() {
        // Each head claims half of what follows it and fails its checksum;
        // a whole frame follows each. Checking each head on its own costs
        // its claimed length: quadratic in the size (2 MiB took 6 s).
        let closed = frame(KIND_CLOSED, &[]);
        let mut times = Vec::new();
        for mib in [4usize, 16] {
            let dir = tempfile::tempdir().unwrap();
            let size = mib << 20;
            let mut bytes = HEADER.to_vec();
            let mut regions = 0u64;
            while bytes.len() + 22 <= size {
                let rest = (size - bytes.len() - 22) as u32;
                bytes.extend_from_slice(&fake_head(rest / 2));
                bytes.extend_from_slice(&closed);
                regions += 1;
            }
            fs::write(dir.path().join(FILE_NAME), &bytes).unwrap();
            let (secs, got) = time_open(dir.path());
            eprintln!(
                "spool of {mib} MiB, {regions} damaged regions each claiming half the rest: \
                 opened in {secs:.3} s"
            );
            assert_eq!(got.damage.regions, regions);
            assert_eq!(got.damage.bytes, regions * 11);
            assert_eq!(got.skipped.len(), SKIPPED_DETAILS);
            times.push(secs);
        }
        let ratio = times[1] / times[0].max(0.05);
        eprintln!("16 MiB / 4 MiB open time: {ratio:.1}");
        assert!(ratio < 8.0, "{times:?}");
        assert!(
            times[1] < HOSTILE_16_MIB_SECS,
            "16 MiB took {:.2} s",
            times[1]
        );
    }

    /// What resynchronising must find, by brute force: of the offsets at or
    /// after `off` where a whole frame checks out, the one ending first.
    fn resync_by_brute_force(r: &mut Reader, off: u64) -> Option<u64> {
        (off..r.end)
            .filter_map(|at| match frame_at(r, at).unwrap() {
                Ok((_, len)) => Some((at + FRAME_HEAD + u64::from(len), at)),
                Err(_) => None,
            })
            .min()
            .map(|(_, at)| at)
    }

    #[test]
    fn resynchronising_finds_the_frame_brute_force_finds() {
        let mut state = 0x853c_49e6_748f_ea9bu64;
        let mut next = move |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below.max(1)
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        for round in 0..400 {
            let mut bytes = HEADER.to_vec();
            for _ in 0..next(30) {
                match next(5) {
                    0 => bytes.extend_from_slice(&record_frame(&rec(next(9)))),
                    1 => bytes
                        .extend_from_slice(&frame(next(7) as u8, &vec![0x50; next(40) as usize])),
                    2 => {
                        let len = next(600) as u32;
                        bytes.extend_from_slice(&fake_head(len));
                    }
                    3 => bytes.extend((0..next(30)).map(|_| [0x50, 0, 1, 7][next(4) as usize])),
                    _ => {
                        // A frame nested in another frame's body.
                        let inner = record_frame(&rec(next(9)));
                        bytes.extend_from_slice(&frame(KIND_RECORD, &inner));
                    }
                }
            }
            fs::write(&path, &bytes).unwrap();
            let file = File::open(&path).unwrap();
            let reader = || Reader::new(&file, &path, bytes.len() as u64);
            for off in HEADER_LEN..bytes.len() as u64 {
                let want = resync_by_brute_force(&mut reader(), off);
                let got = resync(&mut reader(), off).unwrap();
                assert_eq!(got, want, "round {round}, from {off}");
            }
        }
    }
}
