//! Helpers the spool's unit tests share: records, frames and files made by
//! hand, and hostile files.

use std::fs;
use std::path::Path;

use super::files::FILE_NAME;
use super::format::{HEADER, KIND_RECORD, put_frame, record_body};
use super::{Record, Recovered, Spool};

pub(super) fn rec(id: u64) -> Record {
    Record {
        id,
        created_ms: 1_700_000_000_000 + id,
        topic: format!("pinpost/pi-01/input/{id}"),
        payload: format!("payload {id}").into_bytes(),
        retain: id % 2 == 0,
        stream: (id % 3 != 0).then(|| ("door".to_owned(), id * 10)),
    }
}

pub(super) fn ids(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.id).collect()
}

pub(super) fn open(dir: &Path) -> (Spool, Recovered) {
    Spool::open(dir).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

pub(super) fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_frame(&mut out, kind, body);
    out
}

pub(super) fn record_frame(r: &Record) -> Vec<u8> {
    frame(KIND_RECORD, &record_body(r).unwrap())
}

/// A spool file written by hand: the header, then `parts` as they are.
pub(super) fn write_file(dir: &Path, parts: &[&[u8]]) {
    let mut bytes = HEADER.to_vec();
    for part in parts {
        bytes.extend_from_slice(part);
    }
    fs::write(dir.join(FILE_NAME), bytes).unwrap();
}
