//! One thread per expander: sets the chip up, reads its pins every
//! `poll_interval` (at once when its INT line falls), says which inputs
//! changed on the edge channel, writes outputs the board is asked for, and
//! keeps what it read where `read_input` finds it without touching the bus.
//!
//! A chip that stops answering is said once, in words (which chip, on
//! which bus, what the agent does meanwhile); its inputs keep their last
//! values and its outputs refuse commands, so nothing published claims a
//! level the chip may not have. It is tried again every second, and when
//! it answers it is set up again from scratch (a chip that lost power
//! forgot everything) with its outputs at the levels last set. A chip that
//! answers but has forgotten its setup (a power dip) is set up again the
//! same way. It knows nothing of MQTT or the config's names beyond words.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::chips::{Port, Setup};
use crate::board::EdgeSender;

/// How often a chip that does not answer is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How often a chip that answers is asked whether it forgot its setup.
const CHECK: Duration = Duration::from_secs(1);
/// The longest the agent's loop waits for a write: a few transfers of a
/// 100 kHz bus take a millisecond; a bus that hangs is a failed write.
pub(crate) const WRITE_WAIT: Duration = Duration::from_millis(250);

/// Opens the chip's bus (again, after a failure).
pub(crate) type Opener = Box<dyn FnMut() -> Result<Box<dyn Port>, String> + Send>;

/// What one worker needs.
pub(crate) struct Plan {
    /// "expander mcp0 (MCP23017 at 0x20 on /dev/i2c-1)".
    pub(crate) what: String,
    pub(crate) setup: Setup,
    /// Bit → the agent's input index, for the pins that are inputs.
    pub(crate) inputs: Vec<(u8, usize)>,
    /// Bit → the output's name, for words.
    pub(crate) outputs: Vec<(u8, String)>,
    pub(crate) poll: Duration,
}

/// What the board's `read_input` sees.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen {
    /// The last levels read; `None` while the chip does not answer.
    pub(crate) levels: Option<u16>,
    /// Why it does not answer, in words.
    pub(crate) why: String,
}

#[derive(Default)]
struct Flags {
    /// A write was sent and the worker has not taken it yet.
    writing: AtomicBool,
    /// A wake was sent and the worker has not taken it yet.
    woken: AtomicBool,
}

enum Request {
    Write {
        bit: u8,
        high: bool,
        sent: Instant,
        reply: mpsc::SyncSender<Result<(), String>>,
    },
    Wake,
    Stop,
}

/// The board's end of a worker.
pub(crate) struct Handle {
    what: String,
    tx: mpsc::Sender<Request>,
    /// What keeps the request channel bounded: at most one write and one
    /// wake wait in it, whatever rate commands or an INT line come at.
    flags: Arc<Flags>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    /// Starts the worker for `plan`.
    pub(crate) fn start(plan: Plan, open: Opener, edges: EdgeSender) -> Result<Handle, String> {
        let (tx, rx) = mpsc::channel();
        let seen = Arc::new(Mutex::new(Seen {
            levels: None,
            why: "it has not been reached yet".into(),
        }));
        let what = plan.what.clone();
        let shared = seen.clone();
        let flags = Arc::new(Flags::default());
        let worker_flags = flags.clone();
        let thread = std::thread::Builder::new()
            .name("pinpost-expander".into())
            .spawn(move || Worker::new(plan, open, edges, shared).run(&rx, &worker_flags))
            .map_err(|e| format!("cannot start the thread for {what}: {e}"))?;
        Ok(Handle {
            what,
            tx,
            flags,
            seen,
            thread: Some(thread),
        })
    }

    /// Pin `bit`'s level as last read.
    pub(crate) fn level(&self, bit: u8) -> Result<bool, String> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        match seen.levels {
            Some(levels) => Ok(levels & (1 << bit) != 0),
            None => Err(format!(
                "{} does not answer ({}); the input keeps its last published value",
                self.what, seen.why
            )),
        }
    }

    /// Sets output `bit`, waiting at most [`WRITE_WAIT`] for the chip.
    pub(crate) fn write(&self, bit: u8, high: bool) -> Result<(), String> {
        if self.flags.writing.swap(true, Ordering::AcqRel) {
            // The last write is still with the worker: its bus hangs. One
            // wait per hang, not one per command.
            return Err(format!(
                "{} has not finished the previous write (its bus may hang); the output was not set",
                self.what
            ));
        }
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx
            .send(Request::Write {
                bit,
                high,
                sent: Instant::now(),
                reply,
            })
            .map_err(|_| format!("{} is no longer driven (its thread ended)", self.what))?;
        match answer.recv_timeout(WRITE_WAIT) {
            Ok(result) => result,
            Err(_) => Err(format!(
                "{} did not take the write within {} ms; the output's level is not known",
                self.what,
                WRITE_WAIT.as_millis()
            )),
        }
    }

    /// What the INT line's edges wake.
    pub(crate) fn waker(&self) -> Waker {
        Waker(self.tx.clone(), self.flags.clone())
    }
}

/// Wakes a worker when its chip's INT line falls.
pub(crate) struct Waker(mpsc::Sender<Request>, Arc<Flags>);

impl Waker {
    /// Its INT line fell: read the chip now (once, however many edges
    /// come before the worker gets to it).
    pub(crate) fn wake(&self) {
        if !self.1.woken.swap(true, Ordering::AcqRel) {
            let _ = self.0.send(Request::Wake);
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.tx.send(Request::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Worker {
    plan: Plan,
    open: Opener,
    port: Option<Box<dyn Port>>,
    edges: EdgeSender,
    seen: Arc<Mutex<Seen>>,
    /// The last levels read while it answered.
    last: Option<u16>,
    checked: Instant,
    /// Whether the outage now was said already.
    said: bool,
}

impl Worker {
    fn new(plan: Plan, open: Opener, edges: EdgeSender, seen: Arc<Mutex<Seen>>) -> Worker {
        Worker {
            plan,
            open,
            port: None,
            edges,
            seen,
            last: None,
            checked: Instant::now(),
            said: false,
        }
    }

    fn run(mut self, rx: &mpsc::Receiver<Request>, flags: &Flags) {
        self.reach();
        // Kept as a time, not waited afresh after each request: writes
        // every few milliseconds must not put off the poll or the retry.
        let mut due = Instant::now() + self.wait();
        loop {
            let now = Instant::now();
            if now >= due {
                if self.answering() {
                    self.poll();
                } else {
                    self.reach();
                }
                due = Instant::now() + self.wait();
                continue;
            }
            match rx.recv_timeout(due - now) {
                Ok(Request::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Request::Write {
                    bit,
                    high,
                    sent,
                    reply,
                }) => {
                    // Given up on by the loop, which said it was not set:
                    // carried out now it would switch a relay nobody asked
                    // to switch any more.
                    let result = if sent.elapsed() > WRITE_WAIT {
                        Err("too late".to_string())
                    } else {
                        self.write(bit, high)
                    };
                    flags.writing.store(false, Ordering::Release);
                    let _ = reply.send(result);
                }
                Ok(Request::Wake) => {
                    flags.woken.store(false, Ordering::Release);
                    if self.answering() {
                        self.poll();
                        due = Instant::now() + self.wait();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn wait(&self) -> Duration {
        if self.answering() {
            self.plan.poll
        } else {
            RETRY
        }
    }

    fn answering(&self) -> bool {
        self.last.is_some()
    }

    /// Opens the bus if need be and sets the chip up; reads it if that worked.
    fn reach(&mut self) {
        let result = match &mut self.port {
            Some(port) => port.setup(&self.plan.setup),
            None => (self.open)().and_then(|mut port| {
                let r = port.setup(&self.plan.setup);
                self.port = Some(port);
                r
            }),
        };
        match result.and_then(|()| self.read()) {
            Ok(levels) => {
                if self.said {
                    tracing::warn!(
                        "{} answers again; set up again, with its outputs at the levels last set{}",
                        self.plan.what,
                        self.outputs_words()
                    );
                } else {
                    tracing::info!(
                        "{} set up; its pins are read every {:?}",
                        self.plan.what,
                        self.plan.poll
                    );
                }
                self.said = false;
                self.checked = Instant::now();
                self.take(levels, true);
            }
            Err(why) => self.lost(why),
        }
    }

    fn read(&mut self) -> Result<u16, String> {
        match &mut self.port {
            Some(port) => port.read(),
            None => Err("its bus is not open".into()),
        }
    }

    fn poll(&mut self) {
        let levels = match self.read() {
            Ok(levels) => levels,
            Err(why) => return self.lost(why),
        };
        let check = self.checked.elapsed() >= CHECK;
        if check {
            self.checked = Instant::now();
            let forgot = match &mut self.port {
                Some(port) => port.forgot(&self.plan.setup, levels),
                None => Ok(false),
            };
            match forgot {
                Ok(true) => {
                    tracing::warn!(
                        "{} forgot its setup (its power dipped, or something else wrote to it); \
                         setting it up again",
                        self.plan.what
                    );
                    self.said = true;
                    return self.reach();
                }
                Ok(false) => {}
                Err(why) => return self.lost(why),
            }
        }
        self.take(levels, false);
    }

    /// Keeps `levels` and says which inputs changed (all of them, `fresh`
    /// after an outage or at start).
    fn take(&mut self, levels: u16, fresh: bool) {
        let before = self.last;
        self.last = Some(levels);
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            seen.levels = Some(levels);
            seen.why.clear();
        }
        for &(bit, input) in &self.plan.inputs {
            let mask = 1u16 << bit;
            let changed = before.is_none_or(|b| (b ^ levels) & mask != 0);
            if fresh || changed {
                let _ = self.edges.send(input);
            }
        }
    }

    fn lost(&mut self, why: String) {
        self.last = None;
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            seen.levels = None;
            seen.why.clone_from(&why);
        }
        if !self.said {
            self.said = true;
            tracing::warn!(
                "{} does not answer: {why}; its inputs keep their last published values and its \
                 outputs refuse commands until it answers again (tried every {} s){}",
                self.plan.what,
                RETRY.as_secs(),
                if self.plan.outputs.is_empty() {
                    String::new()
                } else {
                    "; its outputs' levels are not known meanwhile".to_string()
                }
            );
        }
    }

    fn write(&mut self, bit: u8, high: bool) -> Result<(), String> {
        if !self.answering() {
            let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            return Err(format!(
                "{} does not answer ({}); the output was not set",
                self.plan.what, seen.why
            ));
        }
        let mut setup = self.plan.setup;
        if high {
            setup.levels |= 1 << bit;
        } else {
            setup.levels &= !(1 << bit);
        }
        let result = match &mut self.port {
            Some(port) => port.write(&setup),
            None => Err("its bus is not open".into()),
        };
        match result {
            Ok(()) => {
                // Only a level the chip took is put back after an outage.
                self.plan.setup = setup;
                Ok(())
            }
            Err(why) => {
                let words = format!(
                    "{} did not take the write: {why}; the output was not set",
                    self.plan.what
                );
                self.lost(why);
                Err(words)
            }
        }
    }

    fn outputs_words(&self) -> String {
        if self.plan.outputs.is_empty() {
            return String::new();
        }
        let list: Vec<String> = self
            .plan
            .outputs
            .iter()
            .map(|(bit, name)| {
                let on = self.plan.setup.levels & (1 << bit) != 0;
                format!("{name} {}", if on { "high" } else { "low" })
            })
            .collect();
        format!(" ({})", list.join(", "))
    }
}
