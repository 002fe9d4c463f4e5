//! Syncs counting inputs' totals off the event loop and hands each back
//! once it is on disk, to be published then: an fdatasync on a slow SD
//! card can take hundreds of milliseconds, which an edge, a command or a
//! ping must not wait for. The loop has already written the total (the
//! write is on the kernel's side at once); this thread makes it durable.
//!
//! Memory stays bounded whatever the pulse rate: one waiting total per
//! counter (a newer one replaces it, as it would be published instead),
//! one wake in the channel, and a return channel with room for one total
//! per counter. It knows nothing of MQTT, only files and totals.

use std::fs::File;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use crate::counter::Total;

/// A total waiting to be synced, for each input (by index).
type Slots = Arc<Mutex<Vec<Option<Total>>>>;

#[derive(Debug)]
pub(super) struct CountSync {
    slots: Slots,
    wake: mpsc::SyncSender<()>,
    done: tokio::sync::mpsc::Receiver<(usize, Total)>,
}

impl CountSync {
    /// A thread syncing `files` (by input; `None`: kept in memory only,
    /// handed back at once). `names` are the inputs', for the log.
    pub(super) fn start(files: Vec<Option<File>>, names: Vec<String>) -> CountSync {
        let slots: Slots = Arc::new(Mutex::new(vec![None; files.len()]));
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let (done_tx, done) = tokio::sync::mpsc::channel(files.len().max(1));
        let shared = slots.clone();
        let spawned = std::thread::Builder::new()
            .name("pinpost-count-sync".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                while woken.recv().is_ok() {
                    while let Some((i, total)) = next(&shared) {
                        if let Some(Some(file)) = files.get(i) {
                            if let Err(e) = file.sync_data() {
                                tracing::warn!(
                                    counter = %names.get(i).map_or("", String::as_str),
                                    "cannot sync the total: {}; a power cut now could take back \
                                     the total about to be published",
                                    crate::words::io_words(&e)
                                );
                            }
                        }
                        if done_tx.blocking_send((i, total)).is_err() {
                            return;
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(
                "cannot start the thread that syncs counters' totals: {e}; totals are not published"
            );
        }
        CountSync { slots, wake, done }
    }

    /// Syncs input `i`'s file and hands `total` back when it is durable.
    pub(super) fn after_sync(&self, i: usize, total: Total) {
        {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(slot) = slots.get_mut(i) {
                *slot = Some(total);
            }
        }
        // Full: a wake is already waiting, and it will find this one.
        let _ = self.wake.try_send(());
    }

    /// The next total that is on disk. Cancel-safe (for `select!`).
    pub(super) async fn next(&mut self) -> Option<(usize, Total)> {
        self.done.recv().await
    }

    /// A total already durable, if any (tests).
    #[cfg(test)]
    pub(super) fn try_next(&mut self) -> Option<(usize, Total)> {
        self.done.try_recv().ok()
    }
}

fn next(slots: &Slots) -> Option<(usize, Total)> {
    let mut slots = slots.lock().unwrap_or_else(PoisonError::into_inner);
    slots
        .iter_mut()
        .enumerate()
        .find_map(|(i, slot)| slot.take().map(|t| (i, t)))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn total(count: u64) -> Total {
        Total {
            count,
            value: count as f64,
            rate: 0.0,
        }
    }

    fn wait(sync: &mut CountSync) -> (usize, Total) {
        let start = Instant::now();
        loop {
            if let Some(done) = sync.try_next() {
                return done;
            }
            assert!(start.elapsed() < Duration::from_secs(15), "never synced");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn a_total_comes_back_once_synced_and_a_newer_one_replaces_one_still_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("meter")).unwrap();
        let mut sync = CountSync::start(vec![None, Some(file)], vec!["a".into(), "meter".into()]);
        sync.after_sync(1, total(5));
        assert_eq!(wait(&mut sync), (1, total(5)));
        // Three due before the thread looks: at most one per counter waits,
        // and the newest is the one published.
        {
            let mut slots = sync.slots.lock().unwrap();
            slots[1] = Some(total(6));
            slots[1] = Some(total(7));
        }
        sync.after_sync(1, total(8));
        sync.after_sync(0, total(1));
        let mut got = vec![wait(&mut sync), wait(&mut sync)];
        got.sort_by_key(|(i, _)| *i);
        assert_eq!(got, vec![(0, total(1)), (1, total(8))]);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(sync.try_next(), None, "nothing more");
    }
}
