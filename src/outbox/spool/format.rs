//! The spool file's format: the header, how a frame is laid out, the kinds
//! of frame, and encoding and decoding their bodies.
//!
//! # What it owns
//! Turning a [`Record`], a list of forgotten ids or a set of stream seqs
//! into frame bodies and back, and framing a body (magic, kind, length,
//! checksum). Decoding trusts no length it reads: every failure is a
//! sentence saying what was being read, for the damage report.
//!
//! # What it must not know
//! Files, offsets, what is live, or what to do with damage: reading frames
//! out of the file is `reader`'s, what a frame does to the spool's state
//! is `recovery`'s, and when each kind is written is the `Spool`'s.
//!
//! # File format
//! Integers are little-endian; crc32 is IEEE (crc32fast).
//! ```text
//! header   "PPSPOOL" 0x01                        8 bytes, once
//! frame    magic u16 = 0x5050 | kind u8 | body_len u32 | crc32 u32 | body
//!          crc32 covers kind and body; body_len is at most 16 MiB
//! kind 1   record:     id u64 | created_ms u64 | retain u8 (0 or 1)
//!                      | topic_len u16 | topic (UTF-8)
//!                      | payload_len u32 | payload
//!                      | has_stream u8 (0 or 1) [| name_len u16 | name (UTF-8) | seq u64]
//! kind 2   forget:     count u32 | id u64 × count
//! kind 3   checkpoint: count u32 | (name_len u16 | name (UTF-8) | seq u64) × count
//! kind 4   reserve:    count u32 | (name_len u16 | name (UTF-8) | upto u64) × count
//! kind 5   closed:     no body (body_len 0)
//! ```
//! - A record's body ends with its last field: trailing bytes make it
//!   unreadable (skipped as damage), as do a flag other than 0 or 1 and a
//!   text that is not UTF-8. A forget frame's body is exactly
//!   `4 + 8 × count` bytes, and a checkpoint's or reservation's ends with
//!   its last entry. A writer puts at most 2^20 ids in one forget frame.
//! - A checkpoint raises each named stream's seq to at least `seq`.
//! - A reservation says that a run may hand out each named stream's seqs up
//!   to `upto` before it writes another: until a closed frame follows, the
//!   next run continues after `upto` (leaving a gap rather than reusing a
//!   seq a crash may have published). `Spool::reserve` writes one stream
//!   per frame, `Spool::reserve_upto` every stream it is given in one, and
//!   a compaction every open reservation in one.
//! - A closed frame marks a clean stop: every reservation before it is
//!   void, since the checkpoint written before it holds the exact seqs. It
//!   is written with an empty body; a body there would be ignored.
//!
//! Record ids are unique among live records but need not grow along the
//! file: the outbox spills messages that were in flight (older) after ones
//! it had already spooled (newer). A forget frame's ids also count as seen
//! ids, which is how a compacted file remembers the highest id once its
//! record is gone (see `compaction`).

pub(super) const HEADER: &[u8; 8] = b"PPSPOOL\x01";
pub(super) const HEADER_LEN: u64 = HEADER.len() as u64;
pub(super) const MAGIC: [u8; 2] = 0x5050u16.to_le_bytes();
/// magic + kind + body_len + crc32.
pub(super) const FRAME_HEAD: u64 = 11;
/// Larger lengths are damage: a record is far smaller, and trusting a bad
/// length would mean allocating it.
pub(super) const MAX_BODY: u32 = 16 << 20;
pub(super) const KIND_RECORD: u8 = 1;
pub(super) const KIND_FORGET: u8 = 2;
pub(super) const KIND_CHECKPOINT: u8 = 3;
/// Seqs a running outbox may hand out before it writes another: a run that
/// ends without [`KIND_CLOSED`] (kill -9, power cut) is continued after them.
pub(super) const KIND_RESERVE: u8 = 4;
/// A clean stop: the reservations before it are void (its checkpoint holds
/// the exact seqs), so a restart continues without a gap.
pub(super) const KIND_CLOSED: u8 = 5;
/// Keeps one forget frame's body under `MAX_BODY`.
pub(super) const IDS_PER_FORGET: usize = 1 << 20;

/// One spooled message, as the outbox hands it over and gets it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Outbox-assigned, unique among live records; an id no longer live
    /// may be written again (see the module docs).
    pub id: u64,
    /// Unix milliseconds when the message was made.
    pub created_ms: u64,
    /// The MQTT topic it is published to.
    pub topic: String,
    /// The message body, as published.
    pub payload: Vec<u8>,
    /// Published with the retain flag.
    pub retain: bool,
    /// (stream name, seq) when the message carries a per-stream sequence number.
    pub stream: Option<(String, u64)>,
}

pub(super) fn put_frame(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(body);
    out.extend_from_slice(&MAGIC);
    out.push(kind);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(body);
}

fn text_len(text: &str, what: impl Fn() -> String) -> Result<[u8; 2], String> {
    u16::try_from(text.len())
        .map(u16::to_le_bytes)
        .map_err(|_| format!("{} is {} bytes, more than 65535", what(), text.len()))
}

pub(super) fn record_body(r: &Record) -> Result<Vec<u8>, String> {
    let id = r.id;
    let topic_len = text_len(&r.topic, || format!("the topic of record {id}"))?;
    let too_big = || format!("record {id} is larger than the 16 MiB a spooled message may take");
    let payload_len = u32::try_from(r.payload.len())
        .ok()
        .filter(|&n| n <= MAX_BODY)
        .ok_or_else(too_big)?;
    let mut b = Vec::with_capacity(40 + r.topic.len() + r.payload.len());
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&r.created_ms.to_le_bytes());
    b.push(u8::from(r.retain));
    b.extend_from_slice(&topic_len);
    b.extend_from_slice(r.topic.as_bytes());
    b.extend_from_slice(&payload_len.to_le_bytes());
    b.extend_from_slice(&r.payload);
    match &r.stream {
        None => b.push(0),
        Some((name, seq)) => {
            b.push(1);
            b.extend_from_slice(&text_len(name, || {
                format!("the stream name of record {id}")
            })?);
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&seq.to_le_bytes());
        }
    }
    if b.len() > MAX_BODY as usize {
        return Err(too_big());
    }
    Ok(b)
}

pub(super) fn forget_body(ids: &[u64]) -> Vec<u8> {
    let mut b = (ids.len() as u32).to_le_bytes().to_vec();
    for id in ids {
        b.extend_from_slice(&id.to_le_bytes());
    }
    b
}

pub(super) fn checkpoint_body<'a>(
    seqs: impl ExactSizeIterator<Item = (&'a String, u64)>,
) -> Result<Vec<u8>, String> {
    let mut b = (seqs.len() as u32).to_le_bytes().to_vec();
    for (name, seq) in seqs {
        b.extend_from_slice(&text_len(name, || format!("stream name {name:.40}…"))?);
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&seq.to_le_bytes());
    }
    if b.len() > MAX_BODY as usize {
        return Err("the stream counters take more than 16 MiB".into());
    }
    Ok(b)
}

/// Reads a frame body; every failure says what was being read.
struct Body<'a>(&'a [u8]);

impl<'a> Body<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("the frame ends inside its {what}"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn flag(&mut self, what: &str) -> Result<bool, String> {
        match self.array::<1>(what)? {
            [0] => Ok(false),
            [1] => Ok(true),
            [b] => Err(format!("its {what} is {b}, neither 0 nor 1")),
        }
    }

    fn text(&mut self, what: &str) -> Result<String, String> {
        let len = u16::from_le_bytes(self.array(what)?);
        let bytes = self.take(usize::from(len), what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("its {what} is not UTF-8"))
    }

    fn end(self) -> Result<(), String> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(format!("{n} unexpected bytes follow its contents")),
        }
    }
}

pub(super) fn decode_record(body: &[u8]) -> Result<Record, String> {
    let mut b = Body(body);
    let id = b.u64("id")?;
    let created_ms = b.u64("creation time")?;
    let retain = b.flag("retain flag")?;
    let topic = b.text("topic")?;
    let payload_len = b.u32("payload length")?;
    let payload = b.take(payload_len as usize, "payload")?.to_vec();
    let stream = match b.flag("stream flag")? {
        false => None,
        true => Some((b.text("stream name")?, b.u64("stream seq")?)),
    };
    b.end()?;
    Ok(Record {
        id,
        created_ms,
        topic,
        payload,
        retain,
        stream,
    })
}

pub(super) fn decode_forget(body: &[u8]) -> Result<Vec<u64>, String> {
    let mut b = Body(body);
    let count = b.u32("count")?;
    // Checked before anything is allocated from `count`.
    if body.len() as u64 != 4 + 8 * u64::from(count) {
        return Err(format!(
            "it claims {count} ids but holds {} bytes",
            body.len()
        ));
    }
    (0..count).map(|_| b.u64("ids")).collect()
}

pub(super) fn decode_checkpoint(body: &[u8]) -> Result<Vec<(String, u64)>, String> {
    let mut b = Body(body);
    let count = b.u32("count")?;
    // No allocation from `count`: each entry takes at least 10 bytes, so a
    // false count runs out of body quickly.
    let mut seqs = Vec::new();
    for _ in 0..count {
        seqs.push((b.text("stream name")?, b.u64("seq")?));
    }
    b.end()?;
    Ok(seqs)
}
