//! The words between the queue and the disk side: the [`SpoolOp`]s the
//! queue asks for, in order, and the [`SpoolDone`]s that answer them. Plain
//! data, so either side can be played by hand in a test.
//!
//! It must not know how either side does its part.

use std::collections::BTreeMap;

use super::super::spool::{Record, SpoolError};

/// What the queue needs done on disk, in order.
#[derive(Debug)]
pub enum SpoolOp {
    /// Write these records (they reach the kernel at once and are made
    /// durable by the disk side's next group sync). The queue no longer
    /// holds them: a record the disk refuses comes back in
    /// [`SpoolDone::Unwritten`].
    Write(Vec<Record>),
    /// These ids were acknowledged or dropped.
    Forget(Vec<u64>),
    /// Send these records back ([`SpoolDone::Read`]).
    Read(Vec<u64>),
    /// Reserve each stream's seqs up to the value, durably, and answer
    /// [`SpoolDone::Reserved`] with `epoch`.
    Reserve {
        seqs: BTreeMap<String, u64>,
        epoch: u64,
    },
    /// Write the exact seqs durably, then void every reservation: from
    /// here on each seq handed out is in a record on disk (an outage) or
    /// nothing more is handed out (a stop).
    Release(BTreeMap<String, u64>),
}

/// What the disk did with an op, in the order of the ops.
#[derive(Debug)]
pub enum SpoolDone {
    /// A `SpoolOp::Write` reached the kernel whole.
    Written,
    /// Records a `SpoolOp::Write` could not take (a full or failing
    /// disk): they are kept in memory instead. Answers the write, like
    /// [`SpoolDone::Written`]; its other records reached the kernel.
    Unwritten {
        /// The records not written, in id order.
        records: Vec<Record>,
        /// Why the first of them was refused.
        error: SpoolError,
    },
    /// Records read back; `missing` ones could not be read (the spool was
    /// damaged under us, or the disk fails) and are counted as dropped.
    Read {
        /// The records read back.
        records: Vec<Record>,
        /// Ids asked for that could not be read.
        missing: Vec<u64>,
        /// The first error met reading, if any.
        error: Option<SpoolError>,
    },
    /// A `SpoolOp::Reserve` is durable, or failed (`error`): messages go
    /// out anyway, since holding them would lose them, and a crash may
    /// then reuse a seq.
    Reserved {
        /// Each stream's seqs reserved up to this one.
        seqs: BTreeMap<String, u64>,
        /// The epoch the reservation was asked in: an answer from before
        /// the last release is not taken for a live one.
        epoch: u64,
        /// Why the reservation is not durable, if it failed.
        error: Option<SpoolError>,
    },
    /// Anything else that failed: a group sync, a forget, a release, an
    /// automatic compaction. The state is unchanged; the words go to the log.
    Failed(SpoolError),
}
