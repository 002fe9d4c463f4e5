//! The spool thread: the outbox's handle on it ([`SpoolThread`]), the
//! messages both ways, and the loop that gathers ops into batches, applies
//! them to the [`Disk`] and commits when a commit falls due.
//!
//! It must not know how an op is applied or a sync run (the [`Disk`]
//! does), nor anything of the queue's state.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Instant;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::{Disk, SpoolDone, SpoolOp};
use crate::outbox::spool::Spool;

/// What the outbox sends the spool thread.
pub(super) enum Message {
    Ops(Vec<SpoolOp>),
    /// Commit now and answer [`Answer::Settled`] (tests).
    #[cfg(test)]
    Settle,
    /// Commit, answer [`Answer::Settled`] and end the thread.
    Finish,
    /// The sync thread ended sync `ticket`.
    Synced {
        ticket: u64,
        error: Option<std::io::Error>,
    },
    /// The outbox is going away without a stop (a test, a panic): commit
    /// what is due and end.
    Quit,
}

/// What the spool thread sends back.
#[derive(Debug)]
pub enum Answer {
    /// What the disk did with an op, in the order of the ops; for
    /// [`Outbox::on_answer`](crate::outbox::Outbox::on_answer).
    Done(SpoolDone),
    /// Everything sent before was applied and committed; `durable` when
    /// nothing written is left unsynced.
    Settled {
        /// Nothing written is left unsynced.
        durable: bool,
    },
    /// The thread is gone (it panicked, or was finished).
    Gone,
}

/// The outbox's handle on the spool thread.
pub(crate) struct SpoolThread {
    /// `None` once dropped, which ends the thread.
    to: Option<mpsc::Sender<Message>>,
    thread: Option<std::thread::JoinHandle<()>>,
    from: UnboundedReceiver<Answer>,
    file_bytes: Arc<AtomicU64>,
    alive: bool,
}

impl SpoolThread {
    /// Moves `spool` to a thread of its own. Fails only if the system
    /// cannot start a thread.
    pub fn start(spool: Spool) -> std::io::Result<SpoolThread> {
        let (to, inbox) = mpsc::channel();
        let (outbox, from) = unbounded_channel();
        let mut disk = Disk::with_sync_thread(spool, to.clone());
        let file_bytes = Arc::new(AtomicU64::new(disk.file_bytes()));
        let bytes = Arc::clone(&file_bytes);
        let thread = std::thread::Builder::new()
            .name("pinpost-spool".into())
            // Nothing deep happens here: the default 2 MiB would only be
            // address space, but say so.
            .stack_size(256 << 10)
            .spawn(move || serve(&mut disk, &inbox, &outbox, &bytes))?;
        Ok(SpoolThread {
            to: Some(to),
            thread: Some(thread),
            from,
            file_bytes,
            alive: true,
        })
    }

    /// Hands ops over; false if the thread is gone.
    pub fn send(&mut self, ops: Vec<SpoolOp>) -> bool {
        self.alive = self.alive && self.post(Message::Ops(ops));
        self.alive
    }

    /// The next answer; `None` once the thread is gone. Cancel-safe.
    pub async fn next(&mut self) -> Option<Answer> {
        self.from.recv().await
    }

    /// Asks for a commit now, answered by [`Answer::Settled`] after every
    /// answer to the ops sent before.
    #[cfg(test)]
    pub fn settle(&mut self) -> bool {
        self.alive = self.alive && self.post(Message::Settle);
        self.alive
    }

    /// Like [`SpoolThread::settle`], and the thread ends after answering.
    pub fn finish(&mut self) -> bool {
        let sent = self.alive && self.post(Message::Finish);
        self.alive = false;
        sent
    }

    /// Waits for the next answer without a runtime (tests only): `None`
    /// once the thread is gone.
    #[cfg(test)]
    pub(crate) fn wait_next(&mut self) -> Option<Answer> {
        use tokio::sync::mpsc::error::TryRecvError;
        for tries in 0u32.. {
            match self.from.try_recv() {
                Ok(answer) => return Some(answer),
                Err(TryRecvError::Disconnected) => return None,
                // The thread usually answers within microseconds.
                Err(TryRecvError::Empty) if tries < 10_000 => std::thread::yield_now(),
                Err(TryRecvError::Empty) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        None
    }

    pub fn file_bytes(&self) -> u64 {
        self.file_bytes.load(Ordering::Relaxed)
    }

    fn post(&self, message: Message) -> bool {
        self.to.as_ref().is_some_and(|to| to.send(message).is_ok())
    }
}

impl Drop for SpoolThread {
    /// Waits for the thread to apply what it was sent and commit: the
    /// spool's lock is released only after, so the next owner of the
    /// directory never meets a file still being written.
    fn drop(&mut self) {
        // The sync thread holds a sender too, so the channel alone would
        // never tell the spool's thread to end.
        self.post(Message::Quit);
        self.to = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    disk: &mut Disk,
    inbox: &mpsc::Receiver<Message>,
    answers: &UnboundedSender<Answer>,
    file_bytes: &AtomicU64,
) {
    let mut done = Vec::new();
    // A message taken while gathering a batch, to handle next.
    let mut taken = None;
    loop {
        let message = match disk.due() {
            // Due already: commit before taking more, or ops (and the sync
            // thread's reports) that keep coming would put the sync and
            // the forgets off for as long as they come.
            Some(due) if due <= Instant::now() => None,
            _ if taken.is_some() => taken.take(),
            Some(due) => {
                match inbox.recv_timeout(due.saturating_duration_since(Instant::now())) {
                    Ok(message) => Some(message),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        // The outbox is gone (the agent ended without a
                        // clean stop): keep what was written.
                        disk.commit(&mut done);
                        return;
                    }
                }
            }
            None => match inbox.recv() {
                Ok(message) => Some(message),
                Err(_) => return,
            },
        };
        let mut settled = None;
        let mut last = false;
        match message {
            None => {
                disk.commit(&mut done);
            }
            Some(Message::Ops(mut ops)) => {
                // Ops that came while the disk was busy are applied as one
                // batch, so reservations asked one push at a time (the
                // first states of several outputs) cost one sync. Bounded,
                // so a commit that falls due is not put off.
                for _ in 0..BATCH_MESSAGES {
                    match inbox.try_recv() {
                        Ok(Message::Ops(more)) => ops.extend(more),
                        Ok(other) => {
                            taken = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                for op in merge_reservations(ops) {
                    disk.apply(op, &mut done);
                }
            }
            #[cfg(test)]
            Some(Message::Settle) => settled = Some(disk.commit_here(&mut done)),
            Some(Message::Finish) => {
                settled = Some(disk.commit_here(&mut done));
                last = true;
            }
            Some(Message::Synced { ticket, error }) => disk.synced(ticket, error, &mut done),
            Some(Message::Quit) => {
                disk.commit_here(&mut done);
                last = true;
            }
        }
        file_bytes.store(disk.file_bytes(), Ordering::Relaxed);
        for d in done.drain(..) {
            // Nobody listening means the agent is ending: nothing to tell.
            let _ = answers.send(Answer::Done(d));
        }
        if let Some(durable) = settled {
            let _ = answers.send(Answer::Settled { durable });
        }
        if last {
            return;
        }
    }
}

/// Messages of ops gathered into one batch at most.
pub(super) const BATCH_MESSAGES: usize = 256;

/// Merges reservations that follow one another (of one epoch) into one:
/// the answer then covers every stream, in the same place among the ops.
fn merge_reservations(ops: Vec<SpoolOp>) -> Vec<SpoolOp> {
    let mut merged: Vec<SpoolOp> = Vec::with_capacity(ops.len());
    for op in ops {
        match (merged.last_mut(), op) {
            (
                Some(SpoolOp::Reserve { seqs, epoch }),
                SpoolOp::Reserve {
                    seqs: more,
                    epoch: same,
                },
            ) if *epoch == same => {
                for (name, upto) in more {
                    let seq = seqs.entry(name).or_insert(upto);
                    *seq = (*seq).max(upto);
                }
            }
            (_, op) => merged.push(op),
        }
    }
    merged
}
