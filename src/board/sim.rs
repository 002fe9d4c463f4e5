//! A simulated board with the same behaviour as a real one: pulls set the
//! idle level of inputs, outputs start at their initial level, and a wire
//! from an output to an input makes the whole loop (command → output →
//! input edge → publish) run without hardware. Tests drive inputs through
//! [`SimHandle`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::edges::PulseFilter;
use super::mux::{self, Drive, HardwarePwm, Request, Soc, Step};
use super::{Board, BoardError, EdgeSender, PinPlan, PwmSetup};
use crate::config::{Pull, SimPulses};

#[derive(Debug)]
struct SimState {
    /// Electrical level of every pin that exists here.
    levels: HashMap<u8, bool>,
    input_pins: Vec<u8>,
    output_pins: Vec<u8>,
    wires: Vec<(u8, u8)>,
    /// Per output: what drives it and its channel, as on a Pi 1-4.
    mux: Vec<(Drive, Option<HardwarePwm>)>,
    /// Every mux step carried out, per pin, for tests to read.
    steps: HashMap<u8, Vec<Step>>,
    edges: EdgeSender,
    /// Per input: the filter of a counting one.
    filters: Vec<Option<PulseFilter>>,
    /// Edge times are nanoseconds since this, as the kernel's are since boot.
    born: Instant,
}

impl SimState {
    /// Plans `request` as the rppal backend does and records the steps.
    fn request(&mut self, output: usize, pin: u8, request: Request) {
        if let Some((drive, hardware)) = self.mux.get(output).copied() {
            let (steps, after) = mux::plan(drive, hardware, request);
            self.steps.entry(pin).or_default().extend(steps);
            self.mux[output].0 = after;
        }
    }

    fn set(&mut self, pin: u8, high: bool) {
        let before = self.levels.insert(pin, high);
        if before != Some(high) {
            if let Some(index) = self.input_pins.iter().position(|p| *p == pin) {
                let at = u64::try_from(self.born.elapsed().as_nanos()).unwrap_or(u64::MAX);
                match self.filters.get_mut(index) {
                    Some(Some(filter)) => {
                        if filter.accept(high, at) {
                            let _ = self.edges.pulse(index);
                        }
                    }
                    _ => {
                        let _ = self.edges.send(index);
                    }
                }
            }
        }
        let driven: Vec<u8> = self
            .wires
            .iter()
            .filter(|(from, _)| *from == pin)
            .map(|(_, to)| *to)
            .collect();
        for to in driven {
            self.set(to, high);
        }
    }
}

/// The simulated [`Board`]; its pins are driven and inspected through the
/// [`SimHandle`] made with it.
pub struct SimBoard {
    state: Arc<Mutex<SimState>>,
    /// The simulated meters' threads, stopped when the board goes.
    meters: Vec<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Drop for SimBoard {
    fn drop(&mut self) {
        for (stop, _) in &self.meters {
            stop.store(true, Ordering::Release);
        }
        for (_, thread) in self.meters.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Drives and inspects a [`SimBoard`] from outside (tests, the demo).
#[derive(Clone)]
pub struct SimHandle {
    state: Arc<Mutex<SimState>>,
}

fn lock(state: &Mutex<SimState>) -> MutexGuard<'_, SimState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SimBoard {
    /// A board set up as `plan` says, with `wires` (output pin, input pin)
    /// joining outputs to inputs, and its handle. Input changes are
    /// announced on `edges`.
    pub fn new(plan: &PinPlan, wires: &[(u8, u8)], edges: EdgeSender) -> (SimBoard, SimHandle) {
        let mut levels = HashMap::new();
        for i in &plan.inputs {
            levels.insert(i.pin, i.pull == Pull::Up);
        }
        for o in &plan.outputs {
            levels.insert(o.pin, o.initial_high);
        }
        for (from, to) in wires {
            let level = levels.get(from).copied().unwrap_or(false);
            levels.insert(*to, level);
        }
        let state = Arc::new(Mutex::new(SimState {
            levels,
            input_pins: plan.inputs.iter().map(|i| i.pin).collect(),
            output_pins: plan.outputs.iter().map(|o| o.pin).collect(),
            wires: wires.to_vec(),
            mux: plan
                .outputs
                .iter()
                .map(|o| {
                    let hardware = match o.pwm {
                        PwmSetup::Hardware { .. } => mux::hardware_pwm(o.pin, Soc::Bcm283x),
                        _ => None,
                    };
                    (Drive::Level(o.initial_high), hardware)
                })
                .collect(),
            steps: plan
                .outputs
                .iter()
                .map(|o| (o.pin, mux::take(o.initial_high)))
                .collect(),
            edges,
            filters: plan.inputs.iter().map(|i| i.pulse_filter(false)).collect(),
            born: Instant::now(),
        }));
        (
            SimBoard {
                state: state.clone(),
                meters: Vec::new(),
            },
            SimHandle { state },
        )
    }

    /// Starts a simulated meter: `p.count` pulses (0: endless) into input
    /// pin `p.pin` at `p.hz`, each half a period away from the pin's idle
    /// level and half back, timed to deadlines so the rate holds.
    pub(crate) fn start_pulses(&mut self, p: SimPulses) -> Result<(), BoardError> {
        let state = self.state.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let idle = lock(&state).levels.get(&p.pin).copied().unwrap_or(false);
        let half = Duration::from_secs_f64(0.5 / p.hz);
        let thread = std::thread::Builder::new()
            .name(format!("pinpost-sim-pulses{}", p.pin))
            .spawn(move || {
                let began = Instant::now();
                let mut next = began;
                let mut sent = 0u64;
                while (p.count == 0 || sent < p.count) && !stopped.load(Ordering::Acquire) {
                    for level in [!idle, idle] {
                        lock(&state).set(p.pin, level);
                        next += half;
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                    }
                    sent += 1;
                }
                let elapsed_ms = began.elapsed().as_millis();
                tracing::info!(pin = p.pin, sent, elapsed_ms, "simulated pulses sent");
            })
            .map_err(|e| BoardError::Other(format!("cannot start the simulated pulses: {e}")))?;
        self.meters.push((stop, thread));
        Ok(())
    }
}

impl Board for SimBoard {
    fn read_input(&self, input: usize) -> Result<bool, BoardError> {
        let s = lock(&self.state);
        let pin = *s
            .input_pins
            .get(input)
            .ok_or_else(|| BoardError::Other(format!("no input {input}")))?;
        Ok(s.levels.get(&pin).copied().unwrap_or(false))
    }

    fn write_output(&mut self, output: usize, high: bool) -> Result<(), BoardError> {
        let mut s = lock(&self.state);
        let pin = *s
            .output_pins
            .get(output)
            .ok_or_else(|| BoardError::Other(format!("no output {output}")))?;
        s.request(output, pin, Request::Level(high));
        s.set(pin, high);
        Ok(())
    }

    fn pwm(&mut self, output: usize, duty: f64, hz: f64) -> Result<(), BoardError> {
        let mut s = lock(&self.state);
        let pin = *s
            .output_pins
            .get(output)
            .ok_or_else(|| BoardError::Other(format!("no output {output}")))?;
        s.request(output, pin, Request::Pwm { duty, hz });
        // A wired input sees the mean: high while the duty is over half.
        s.set(pin, duty > 0.5);
        Ok(())
    }

    fn name(&self) -> &'static str {
        "sim"
    }
}

impl SimHandle {
    /// Sets an input pin's electrical level, as a button or sensor would.
    pub fn set_input(&self, pin: u8, high: bool) {
        lock(&self.state).set(pin, high);
    }

    /// A pin's electrical level, `None` for a pin this board does not have.
    pub fn level(&self, pin: u8) -> Option<bool> {
        lock(&self.state).levels.get(&pin).copied()
    }

    /// The pin-mux steps carried out on an output pin so far, from taking it.
    #[cfg(test)]
    pub(crate) fn steps(&self, pin: u8) -> Vec<Step> {
        lock(&self.state)
            .steps
            .get(&pin)
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::{InputSetup, OutputSetup, PwmSetup};

    fn board() -> (SimBoard, SimHandle, crate::board::EdgeReceiver) {
        let plan = PinPlan {
            inputs: vec![
                InputSetup {
                    pin: 17,
                    line: None,
                    pull: Pull::Up,
                    debounce: std::time::Duration::ZERO,
                    interrupt: true,
                    count: None,
                },
                InputSetup {
                    pin: 22,
                    line: None,
                    pull: Pull::None,
                    debounce: std::time::Duration::ZERO,
                    interrupt: true,
                    count: None,
                },
            ],
            outputs: vec![OutputSetup {
                pin: 27,
                line: None,
                initial_high: false,
                pwm: PwmSetup::Software,
            }],
        };
        let (tx, rx) = crate::board::edges::channel(plan.inputs.len());
        let (b, h) = SimBoard::new(&plan, &[(27, 22)], tx);
        (b, h, rx)
    }

    #[test]
    fn pulls_set_the_idle_level() {
        let (b, _, _) = board();
        assert!(b.read_input(0).unwrap());
        assert!(!b.read_input(1).unwrap());
    }

    #[test]
    fn a_wired_output_drives_its_input_and_reports_an_edge() {
        let (mut b, h, mut edges) = board();
        b.write_output(0, true).unwrap();
        assert_eq!(h.level(27), Some(true));
        assert!(b.read_input(1).unwrap());
        assert_eq!(edges.try_recv(), Some(1));
        b.write_output(0, true).unwrap();
        assert_eq!(edges.try_recv(), None, "no edge without a change");
    }

    #[test]
    fn tests_can_press_a_button() {
        let (b, h, mut edges) = board();
        h.set_input(17, false);
        assert!(!b.read_input(0).unwrap());
        assert_eq!(edges.try_recv(), Some(0));
    }

    #[test]
    fn a_flapping_input_leaves_one_notice_however_fast_it_flaps() {
        let (_b, h, mut edges) = board();
        // A contact chattering 100,000 times before the agent looks.
        for n in 0..100_000 {
            h.set_input(17, n % 2 == 0);
        }
        assert_eq!(edges.try_recv(), Some(0));
        assert_eq!(edges.try_recv(), None, "one notice, not one per edge");
    }

    #[test]
    fn a_hardware_pwm_pin_keeps_its_channel_across_commands_and_leaves_alt_for_a_level() {
        use crate::board::mux::Function;
        let plan = PinPlan {
            inputs: vec![],
            outputs: vec![OutputSetup {
                pin: 18,
                line: None,
                initial_high: false,
                pwm: PwmSetup::Hardware { channel: 0 },
            }],
        };
        let (tx, _rx) = crate::board::edges::channel(plan.inputs.len());
        let (mut b, h) = SimBoard::new(&plan, &[], tx);
        b.pwm(0, 0.25, 1000.0).unwrap();
        b.pwm(0, 0.5, 2000.0).unwrap();
        b.write_output(0, false).unwrap();
        assert_eq!(
            h.steps(18),
            vec![
                Step::Latch(false),
                Step::SetFunction(Function::Output),
                Step::ConfigureChannel {
                    hz: 1000.0,
                    duty: 0.25
                },
                Step::EnableChannel,
                Step::SetFunction(Function::Alt5),
                Step::ConfigureChannel {
                    hz: 2000.0,
                    duty: 0.5
                },
                Step::Latch(false),
                Step::SetFunction(Function::Output),
                Step::DisableChannel,
            ]
        );
    }
}
