//! Makes the agent's small state files durable off its event loop: one
//! thread that `fsync`s a file (and its directory, for the rename that put
//! it there) after the loop has written it, so a slow SD card (an fsync can
//! take hundreds of milliseconds) never holds up a command, an edge or a
//! ping — the way [`crate::sensors`] keeps blocking reads apart.
//!
//! The loop writes the whole file to a temporary name and renames it over
//! the old one (which puts it on the kernel's side: it survives the process
//! being killed), then hands the open file here. Only the latest file
//! matters: requests that pile up while a sync is slow are coalesced into
//! one. A failure is logged here, in words, as it happens, and raised as
//! [`Syncer::failing`] until a later sync succeeds, so the owner can stop
//! trusting the background. It knows nothing of what the files hold.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// The step that makes one open file (or directory) durable: `sync_all`,
/// or in tests a step that blocks or fails on purpose.
pub(super) type SyncStep = Arc<dyn Fn(&fs::File) -> io::Result<()> + Send + Sync>;

/// fsync, as the real thing does it.
pub(super) fn fsync() -> SyncStep {
    Arc::new(|file: &fs::File| file.sync_all())
}

/// Little on the stack: open, fsync, format an error.
const STACK: usize = 64 * 1024;

enum Job {
    /// `file` was just renamed into `dir`.
    Sync { file: fs::File, dir: PathBuf },
    /// Answer once every earlier job is done.
    Flush(mpsc::Sender<()>),
}

pub(super) struct Syncer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    failing: Arc<AtomicBool>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("failing", &self.failing())
            .finish()
    }
}

impl Syncer {
    /// A thread syncing the file described by `what` (for the log, e.g.
    /// "the record of applied commands") with `step`. `consequence` says in
    /// the log what a failure means and what to do.
    pub(super) fn start(what: &'static str, consequence: &'static str, step: SyncStep) -> Syncer {
        let (jobs, rx) = mpsc::channel();
        let failing = Arc::new(AtomicBool::new(false));
        let flag = failing.clone();
        let spawned = std::thread::Builder::new()
            .name("pinpost-sync".into())
            .stack_size(STACK)
            .spawn(move || work(rx, what, consequence, step, flag));
        match spawned {
            Ok(thread) => Syncer {
                jobs: Some(jobs),
                thread: Some(thread),
                failing,
            },
            Err(e) => {
                tracing::error!("cannot start a thread to make {what} durable: {e}");
                failing.store(true, Ordering::SeqCst);
                Syncer {
                    jobs: None,
                    thread: None,
                    failing,
                }
            }
        }
    }

    /// Makes `file`, just renamed into `dir`, durable soon. Never waits.
    pub(super) fn request(&self, file: fs::File, dir: &Path) {
        let job = Job::Sync {
            file,
            dir: dir.to_path_buf(),
        };
        if self
            .jobs
            .as_ref()
            .is_none_or(|jobs| jobs.send(job).is_err())
        {
            self.failing.store(true, Ordering::SeqCst);
        }
    }

    /// The last sync failed (and was logged), or there is no thread to
    /// sync at all: what was written may not be on the disk.
    pub(super) fn failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    /// The owner made its file durable itself: the background may be
    /// trusted again.
    pub(super) fn recovered(&self) {
        self.failing.store(false, Ordering::SeqCst);
    }

    /// Waits until every request made so far has been carried out (or has
    /// failed): at shutdown, before the last, synchronous write.
    pub(super) fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if let Some(jobs) = &self.jobs {
            if jobs.send(Job::Flush(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }
}

impl Drop for Syncer {
    /// What was requested is still synced before the thread ends.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn work(
    jobs: mpsc::Receiver<Job>,
    what: &str,
    consequence: &str,
    step: SyncStep,
    failing: Arc<AtomicBool>,
) {
    while let Ok(first) = jobs.recv() {
        // Whatever piled up during the last (slow) sync: only the newest
        // file matters, the older ones have been renamed over.
        let mut latest = None;
        let mut waiting = Vec::new();
        for job in std::iter::once(first).chain(jobs.try_iter()) {
            match job {
                Job::Sync { file, dir } => latest = Some((file, dir)),
                Job::Flush(done) => waiting.push(done),
            }
        }
        if let Some((file, dir)) = latest {
            match sync(&step, &file, &dir) {
                Ok(()) => {
                    if failing.swap(false, Ordering::SeqCst) {
                        tracing::info!("{what} in {} is on the disk again", dir.display());
                    }
                }
                Err(e) => {
                    failing.store(true, Ordering::SeqCst);
                    tracing::error!(
                        "cannot make {what} in {} durable ({e}); {consequence}",
                        dir.display()
                    );
                }
            }
        }
        for done in waiting {
            let _ = done.send(());
        }
    }
}

/// The file's data, then the directory entry the rename made.
fn sync(step: &SyncStep, file: &fs::File, dir: &Path) -> Result<(), String> {
    step(file).map_err(|e| format!("fsync of the file: {}", crate::words::io_words(&e)))?;
    let dir = fs::File::open(dir)
        .map_err(|e| format!("cannot open the directory: {}", crate::words::io_words(&e)))?;
    step(&dir).map_err(|e| format!("fsync of the directory: {}", crate::words::io_words(&e)))
}

#[cfg(test)]
pub(super) mod testing {
    //! Sync steps that misbehave on purpose, and a log to read back.

    use super::*;
    use std::sync::{Condvar, Mutex, OnceLock};

    /// A sync step that blocks until [`Gate::open`]; counts the calls.
    #[derive(Clone, Default)]
    pub struct Gate {
        state: Arc<(Mutex<(bool, usize)>, Condvar)>,
    }

    impl Gate {
        pub fn step(&self) -> SyncStep {
            let state = self.state.clone();
            Arc::new(move |file: &fs::File| {
                let (lock, opened) = &*state;
                let mut s = lock.lock().unwrap();
                s.1 += 1;
                opened.notify_all();
                while !s.0 {
                    s = opened.wait(s).unwrap();
                }
                drop(s);
                file.sync_all()
            })
        }

        /// Waits until a sync has started (and is held).
        pub fn wait_until_held(&self) {
            let (lock, changed) = &*self.state;
            let mut s = lock.lock().unwrap();
            while s.1 == 0 {
                s = changed.wait(s).unwrap();
            }
        }

        /// Sync steps started so far.
        pub fn calls(&self) -> usize {
            self.state.0.lock().unwrap().1
        }

        pub fn open(&self) {
            let (lock, opened) = &*self.state;
            lock.lock().unwrap().0 = true;
            opened.notify_all();
        }
    }

    /// Opens the gate when dropped, so a failing test ends rather than
    /// waiting forever for the syncer it holds. Declare it after the
    /// syncer's owner (it is dropped first).
    pub struct OpenOnDrop(pub Gate);

    impl Drop for OpenOnDrop {
        fn drop(&mut self) {
            self.0.open();
        }
    }

    /// A step that fails like a dying SD card.
    pub fn failing_disk() -> SyncStep {
        Arc::new(|_: &fs::File| Err(io::Error::from_raw_os_error(5)))
    }

    /// Everything logged (by any thread) while the lib's tests run.
    pub fn log() -> &'static Mutex<Vec<u8>> {
        static LOG: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
        LOG.get_or_init(|| {
            let buffer: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || Writer(buffer))
                .finish();
            let _ = tracing::subscriber::set_global_default(subscriber);
            buffer
        })
    }

    pub fn logged() -> String {
        String::from_utf8_lossy(&log().lock().unwrap()).into_owned()
    }

    struct Writer(&'static Mutex<Vec<u8>>);

    impl io::Write for Writer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use std::io::Write;

    fn renamed_in(dir: &Path, text: &str) -> fs::File {
        let tmp = dir.join("f.tmp");
        let mut file = fs::File::create(&tmp).unwrap();
        file.write_all(text.as_bytes()).unwrap();
        fs::rename(&tmp, dir.join("f")).unwrap();
        file
    }

    #[test]
    fn requests_never_wait_for_a_stuck_disk_and_pile_up_into_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let gate = Gate::default();
        let syncer = Syncer::start("a test file", "nothing", gate.step());
        let _release = OpenOnDrop(gate.clone());
        syncer.request(renamed_in(dir.path(), "1"), dir.path());
        gate.wait_until_held();
        // The disk is stuck on the first sync; these return at once.
        for n in 2..=50 {
            syncer.request(renamed_in(dir.path(), &n.to_string()), dir.path());
        }
        assert_eq!(fs::read_to_string(dir.path().join("f")).unwrap(), "50");
        gate.open();
        syncer.flush();
        let calls = gate.calls();
        assert_eq!(
            calls, 4,
            "the first file and its directory, then only the newest file and its directory"
        );
        assert!(!syncer.failing());
    }

    #[test]
    fn a_failed_sync_is_logged_in_words_and_raised_until_one_succeeds() {
        log();
        let dir = tempfile::tempdir().unwrap();
        let syncer = Syncer::start(
            "the test record",
            "the next boot distrusts it",
            failing_disk(),
        );
        syncer.request(renamed_in(dir.path(), "1"), dir.path());
        syncer.flush();
        assert!(syncer.failing());
        let logged = logged();
        let line = logged
            .lines()
            .find(|l| l.contains(&dir.path().display().to_string()))
            .unwrap_or_else(|| panic!("not logged: {logged}"));
        assert!(
            line.contains("ERROR")
                && line.contains("cannot make the test record in")
                && line.contains("durable (fsync of the file: Input/output error")
                && line.ends_with("the next boot distrusts it"),
            "{line}"
        );
    }
}
