//! The agent's counting inputs (`count = true`): the pulses the board
//! counted, added to a total that is written to disk at once and synced
//! (off the loop, by `counting_sync`) before it is published on
//! `counter/<name>`. A subscriber never sees a total that a power cut
//! takes back; a power cut may take the pulses counted since the last
//! published total, never more.
//!
//! It knows the config's inputs and the state directory; the counting
//! itself is `crate::counter`'s, the publishing the agent's.

use std::path::Path;

use tokio::time::Instant;

use super::counting_sync::CountSync;
use crate::config::Input;
use crate::counter::store::Store;
use crate::counter::{Counter, Total};

/// Where totals live, under the state directory's outbox folder.
const DIR: &str = "counters";

/// Each input's counter, `None` for an input that does not count.
#[derive(Debug)]
pub(super) struct Counting {
    kept: Vec<Option<Kept>>,
    /// Totals due are synced here and come back to be published.
    sync: CountSync,
}

#[derive(Debug)]
struct Kept {
    counter: Counter,
    /// `None` when the total cannot be kept on disk (said at start): it
    /// counts in memory, and says again at each failure to write.
    store: Option<Store>,
    name: String,
}

impl Counting {
    /// Opens each counting input's total in `state`.
    pub(super) fn open(inputs: &[Input], state: &Path, now: Instant) -> Counting {
        let dir = state.join(DIR);
        let kept = inputs
            .iter()
            .map(|input| {
                let counting = input.count.clone()?;
                let (store, count) = match Store::open(&dir, &input.name) {
                    Ok((store, found)) => {
                        if let Some(problem) = &found.problem {
                            tracing::warn!(counter = %input.name, "{problem}");
                        }
                        tracing::info!(
                            counter = %input.name,
                            "counting from {} pulses ({} in {}); after a power cut, the pulses \
                             counted since the last published total may be missing, never one \
                             that was published",
                            found.count,
                            found.count as f64 * counting.per_pulse,
                            store.path().display()
                        );
                        (Some(store), found.count)
                    }
                    Err(e) => {
                        tracing::error!(
                            counter = %input.name,
                            "cannot keep the total in {}: {}; counting from 0 in memory only, \
                             so a restart starts again from 0",
                            dir.join(&input.name).display(),
                            crate::words::io_words(&e)
                        );
                        (None, 0)
                    }
                };
                Some(Kept {
                    counter: Counter::new(counting, count, now),
                    store,
                    name: input.name.clone(),
                })
            })
            .collect::<Vec<Option<Kept>>>();
        let files = kept
            .iter()
            .map(|k| {
                let store = k.as_ref()?.store.as_ref()?;
                store
                    .handle()
                    .map_err(|e| {
                        tracing::warn!(
                            "cannot sync {} off the loop: {}; its totals are published unsynced",
                            store.path().display(),
                            crate::words::io_words(&e)
                        );
                    })
                    .ok()
            })
            .collect();
        let names = inputs.iter().map(|i| i.name.clone()).collect();
        Counting {
            kept,
            sync: CountSync::start(files, names),
        }
    }

    /// Whether input `i` counts (its level is never published).
    pub(super) fn counts(&self, i: usize) -> bool {
        matches!(self.kept.get(i), Some(Some(_)))
    }

    /// `n` pulses of input `i`, written to disk at once (not synced).
    pub(super) fn add(&mut self, i: usize, n: u64, now: Instant) {
        let Some(Some(kept)) = self.kept.get_mut(i) else {
            return;
        };
        kept.counter.add(n, now);
        kept.write();
    }

    /// Sets input `i`'s total to `value` in its unit (0 for a reset),
    /// synced before the answer; `Err` in words when it cannot be held.
    pub(super) fn set(&mut self, i: usize, value: f64, now: Instant) -> Result<u64, String> {
        let Some(Some(kept)) = self.kept.get_mut(i) else {
            return Err("not a counting input".into());
        };
        let count = kept
            .counter
            .pulses_for(value)
            .ok_or_else(|| format!("{value} is more than a counter holds"))?;
        kept.counter.set(count, now);
        kept.write();
        kept.sync();
        Ok(count)
    }

    /// At the agent's stop: the pulses `take(i)` still holds for input `i`
    /// (counted after the loop's last take) added and written, and every
    /// total synced, so the next start goes on from each pulse the board
    /// counted.
    pub(super) fn stop(&mut self, mut take: impl FnMut(usize) -> u64, now: Instant) {
        for (i, kept) in self.kept.iter_mut().enumerate() {
            let Some(kept) = kept else { continue };
            let pulses = take(i);
            if pulses > 0 {
                kept.counter.add(pulses, now);
                kept.write();
            }
            kept.sync();
        }
    }

    /// The earliest moment a total may be due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.kept
            .iter()
            .flatten()
            .filter_map(|k| k.counter.next_due())
            .min()
    }

    /// The totals due now go to be synced; each comes back from
    /// [`Counting::durable`] once it is on disk.
    pub(super) fn due(&mut self, now: Instant) {
        for (i, kept) in self.kept.iter_mut().enumerate() {
            let Some(kept) = kept else { continue };
            if let Some(total) = kept.counter.due(now) {
                self.sync.after_sync(i, total);
            }
        }
    }

    /// The next total that is on disk, to publish. Cancel-safe.
    pub(super) async fn durable(&mut self) -> Option<(usize, Total)> {
        self.sync.next().await
    }
}

impl Kept {
    fn write(&mut self) {
        let count = self.counter.count();
        if let Some(store) = &mut self.store {
            if let Err(e) = store.write(count) {
                tracing::warn!(
                    counter = %self.name,
                    "cannot write the total ({count} pulses) to {}: {}; it is kept in memory \
                     and written again at the next pulse",
                    store.path().display(),
                    crate::words::io_words(&e)
                );
            }
        }
    }

    fn sync(&self) {
        if let Some(store) = &self.store {
            if let Err(e) = store.sync() {
                tracing::warn!(
                    counter = %self.name,
                    "cannot sync the total to {}: {}; a power cut now could take back the \
                     total about to be published",
                    store.path().display(),
                    crate::words::io_words(&e)
                );
            }
        }
    }
}
