//! One requested line each: how inputs and outputs are asked of the kernel,
//! and the thread that turns an input's edge events into notices.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use gpiocdev::Request;
use gpiocdev::line::{Bias, EdgeDetection, EdgeKind, Value};

use super::chip::{self, ChipFound};
use super::{CONSUMER, POLL};
use crate::board::edges::{EdgesClosed, PulseFilter};
use crate::board::{BoardError, EdgeSender, InputSetup};
use crate::config::Pull;

/// A requested line.
#[derive(Clone)]
pub(crate) struct Line {
    /// The config's pin, for words.
    pub(crate) pin: u8,
    /// The line on its chip: `pin`, or the line named in the config.
    offset: u32,
    /// The kernel debounces it (an input whose request took a debounce):
    /// its events and its value are already settled.
    pub(crate) kernel_debounce: bool,
    request: Shared,
    chip: String,
}

impl Line {
    pub(crate) fn get(&self) -> Result<bool, BoardError> {
        self.request
            .value(self.offset)
            .map(|v| v == Value::Active)
            .map_err(|e| self.error("read", &e))
    }

    pub(crate) fn set(&self, high: bool) -> Result<(), BoardError> {
        self.request
            .set_value(self.offset, value(high))
            .map_err(|e| self.error("set", &e))
    }

    fn error(&self, what: &str, e: &gpiocdev::Error) -> BoardError {
        BoardError::Pin {
            pin: self.pin,
            what: format!("cannot {what} line {} of {}: {e}", self.offset, self.chip),
        }
    }
}

/// How an input's changes are noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Events {
    /// The kernel's edge events.
    Edges,
    /// No edge events on this line: read every [`POLL`].
    Polled,
}

/// Requests an input: with its bias, edges and kernel debounce; without the
/// debounce, then without edges, where the chip refuses them.
pub(crate) fn input(
    chip: &ChipFound,
    offset: u32,
    setup: &InputSetup,
) -> Result<(Line, Events), BoardError> {
    let bias = match setup.pull {
        Pull::Up => Bias::PullUp,
        Pull::Down => Bias::PullDown,
        Pull::None => Bias::Disabled,
    };
    let ask = |edges: bool, debounce: Option<Duration>| {
        let mut b = Request::builder();
        b.on_chip(&chip.path)
            .with_consumer(CONSUMER)
            .with_line(offset)
            .as_input()
            .with_bias(bias);
        if edges {
            b.with_edge_detection(EdgeDetection::BothEdges);
        }
        if let Some(period) = debounce {
            b.with_debounce_period(period);
        }
        if setup.count.is_some() {
            // A counter's every edge matters: the most the kernel keeps
            // while the watcher is busy (16 is the default).
            b.with_kernel_event_buffer_size(KERNEL_EVENTS);
        }
        b.request()
    };
    let mut tries = vec![(true, None), (false, None)];
    if !setup.interrupt {
        // Read when asked, never watched (`pinpost gpio read`).
        tries = vec![(false, None)];
    } else if !setup.debounce.is_zero() {
        tries.insert(0, (true, Some(setup.debounce)));
    }
    let mut refused = Vec::new();
    for (edges, debounce) in tries {
        match ask(edges, debounce) {
            Ok(request) => {
                if !refused.is_empty() {
                    tracing::warn!(
                        pin = setup.pin,
                        "GPIO{}: {} refused {}; {}",
                        setup.pin,
                        chip.name,
                        refused.join(" and "),
                        if edges {
                            "debounced by pinpost alone"
                        } else {
                            "reading it every 20 ms instead of waiting for edges"
                        }
                    );
                }
                let line = Line {
                    pin: setup.pin,
                    offset,
                    kernel_debounce: debounce.is_some(),
                    request: Arc::new(request),
                    chip: chip.name.clone(),
                };
                let events = if edges { Events::Edges } else { Events::Polled };
                return Ok((line, events));
            }
            // Held, or not ours to open: no other request would do better.
            Err(e) if matches!(chip::errno(&e), Some(16 | 13 | 1)) => {
                return Err(chip::request_error(&e, setup.pin, offset, chip));
            }
            Err(e) => refused.push(match debounce {
                Some(_) => format!("a kernel debounce ({e})"),
                None => format!("edge events ({e})"),
            }),
        }
    }
    Err(BoardError::Pin {
        pin: setup.pin,
        what: format!(
            "{} refused line {offset} as an input: {}",
            chip.name,
            refused.join("; ")
        ),
    })
}

/// Requests an output at `initial` in the same call: the line never shows
/// another level.
pub(crate) fn output(
    chip: &ChipFound,
    offset: u32,
    pin: u8,
    initial: bool,
) -> Result<Line, BoardError> {
    let request = Request::builder()
        .on_chip(&chip.path)
        .with_consumer(CONSUMER)
        .with_line(offset)
        .as_output(value(initial))
        .request()
        .map_err(|e| chip::request_error(&e, pin, offset, chip))?;
    Ok(Line {
        pin,
        offset,
        kernel_debounce: false,
        request: Arc::new(request),
        chip: chip.name.clone(),
    })
}

/// Where one input's changes go: a notice, or for a counting input each
/// edge its filter takes as a pulse.
struct Notices {
    index: usize,
    edges: EdgeSender,
    filter: Option<PulseFilter>,
}

impl Notices {
    /// An edge (`rising` or falling) at `at_ns`; `Err` once nobody listens.
    fn edge(&mut self, rising: bool, at_ns: u64) -> Result<(), EdgesClosed> {
        match &mut self.filter {
            None => self.edges.send(self.index),
            Some(filter) => {
                if filter.accept(rising, at_ns) {
                    self.edges.pulse(self.index)
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// The thread that sends input `index`'s notices until `stop`.
pub(crate) fn watch(
    line: Line,
    index: usize,
    setup: &InputSetup,
    events: Events,
    edges: EdgeSender,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, BoardError> {
    let pin = line.pin;
    let mut notices = Notices {
        index,
        edges,
        filter: setup.pulse_filter(line.kernel_debounce),
    };
    std::thread::Builder::new()
        .name(format!("pinpost-gpio{pin}"))
        .spawn(move || match events {
            Events::Edges => wait_for_edges(&line, &mut notices, &stop),
            Events::Polled => poll(&line, &mut notices, &stop),
        })
        .map_err(|e| BoardError::Pin {
            pin,
            what: format!("cannot start the thread that watches it: {e}"),
        })
}

/// The kernel's edge buffer for a counting line: its largest.
const KERNEL_EVENTS: u32 = 1024;
/// How often a counter's dropped edges are said, at most.
const LOST_SAID_EVERY: Duration = Duration::from_secs(10);

/// How long one wait for an edge lasts before the stop flag is looked at.
const WAKE: Duration = Duration::from_millis(200);

fn wait_for_edges(line: &Line, notices: &mut Notices, stop: &AtomicBool) {
    let mut last_seqno: Option<u32> = None;
    // A counter's dropped edges not said yet, and when they were last said.
    let mut unsaid: u64 = 0;
    let mut said_at: Option<std::time::Instant> = None;
    while !stop.load(Ordering::Acquire) {
        match line.request.wait_edge_event(WAKE) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                tracing::warn!(pin = line.pin, error = %e, "cannot wait for GPIO{} edges; reading it every 20 ms instead", line.pin);
                return poll(line, notices, stop);
            }
        }
        match line.request.read_edge_event() {
            Ok(event) => {
                // The kernel numbers each line's events: a gap is events its
                // buffer dropped. Nothing is lost for a level input, which
                // is read again; for a counter they are pulses not counted,
                // said (at most every 10 s) so a short total is explained.
                if let Some(before) = last_seqno {
                    let lost = event.line_seqno.wrapping_sub(before).saturating_sub(1);
                    if lost > 0 && notices.filter.is_none() {
                        tracing::debug!(
                            pin = line.pin,
                            lost,
                            "the kernel dropped GPIO{} edge events (its buffer was full)",
                            line.pin
                        );
                    }
                    unsaid += u64::from(lost) * u64::from(notices.filter.is_some());
                    if unsaid > 0 && said_at.is_none_or(|at| at.elapsed() >= LOST_SAID_EVERY) {
                        tracing::warn!(
                            pin = line.pin,
                            lost = unsaid,
                            "the kernel dropped {unsaid} edge events of counting input GPIO{} \
                             (its buffer of {KERNEL_EVENTS} was full): those pulses are not in \
                             the total; the pulses come faster than this machine reads them",
                            line.pin
                        );
                        unsaid = 0;
                        said_at = Some(std::time::Instant::now());
                    }
                }
                last_seqno = Some(event.line_seqno);
                tracing::trace!(pin = line.pin, kernel_ns = event.timestamp_ns, seq = event.line_seqno, kind = ?event.kind, "edge");
                // Lines are requested active-high: the kernel's rising is
                // the electrical one.
                let rising = event.kind == EdgeKind::Rising;
                if notices.edge(rising, event.timestamp_ns).is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(pin = line.pin, error = %e, "cannot read a GPIO{} edge event", line.pin);
                std::thread::sleep(WAKE);
            }
        }
    }
}

fn poll(line: &Line, notices: &mut Notices, stop: &AtomicBool) {
    let born = std::time::Instant::now();
    let mut last = line.get().ok();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(POLL);
        let now = line.get().ok();
        if now != last {
            last = now;
            let at = u64::try_from(born.elapsed().as_nanos()).unwrap_or(u64::MAX);
            if notices.edge(now == Some(true), at).is_err() {
                return;
            }
        }
    }
}

/// The kernel's word for a level (lines are requested active-high).
fn value(high: bool) -> Value {
    if high { Value::Active } else { Value::Inactive }
}

/// A request shared by the board, its watcher and a PWM thread.
type Shared = Arc<Request>;
