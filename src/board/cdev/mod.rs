//! The kernel's GPIO character device (`/dev/gpiochipN`, uAPI v2): the
//! backend for any kernel with a GPIO driver, where rppal cannot go
//! (Debian's, Fedora's and Arch's Pi kernels have no `/dev/gpiomem`), and
//! for boards rppal does not know.
//!
//! Every line is requested with the consumer "pinpost", so `gpioinfo` names
//! who holds it. Outputs are requested with their initial level in the same
//! call (no glitch at start). Inputs get their pull as the kernel's bias,
//! the config's debounce as the kernel's (in hardware where the chip has it,
//! in the kernel otherwise), and edge events on both edges, read on one
//! thread per input that only forwards "input i changed"; a chip that gives
//! no edge events on a line is read every [`POLL`] instead, and says so.
//!
//! The kernel owns what happens at release: Debian's pinctrl-bcm2835 returns
//! a freed line to input. So the agent holds its lines while it runs, and
//! its safe state is the last level it sets before they are freed. A
//! hardware PWM output whose channel the device tree routes to its pin is
//! driven through [`kernel_pwm`](super::kernel_pwm) for levels too (0 % and
//! 100 %), and keeps its level after pinpost exits.

pub(crate) mod chip;
mod lines;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::kernel_pwm::{self, KernelPwm, Route};
use super::soft_pwm::{SetLevel, SoftPwm};
use super::{Board, BoardError, EdgeSender, PinPlan, PwmSetup};
use crate::header::{Soc, hardware_pwm};

pub(crate) use chip::ChipFound;

/// How often an input without edge events is read.
const POLL: Duration = Duration::from_millis(20);

/// The consumer name the kernel shows for our lines.
pub(crate) const CONSUMER: &str = "pinpost";

pub(crate) struct CdevBoard {
    chip: ChipFound,
    inputs: Vec<lines::Line>,
    outputs: Vec<Driven>,
    stop: Arc<AtomicBool>,
    watchers: Vec<JoinHandle<()>>,
}

/// What drives one output.
enum Driven {
    /// A GPIO line, with a software PWM thread while one runs. `advice`
    /// says once why hardware PWM is not used, for a pin that has a channel.
    Line {
        line: lines::Line,
        soft: Option<SoftPwm>,
        advice: Option<String>,
    },
    /// The pin belongs to a PWM channel (the device tree's doing); levels
    /// are 0 % and 100 % duty.
    Pwm { pin: u8, pwm: KernelPwm },
}

impl CdevBoard {
    /// Requests every line of `plan` on `chip` (`None`: the Pi's own).
    pub(crate) fn open(
        plan: &PinPlan,
        chip: Option<&str>,
        edges: EdgeSender,
    ) -> Result<CdevBoard, BoardError> {
        let chip_named = chip.is_some();
        let chip = chip::find(chip)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut board = CdevBoard {
            chip,
            inputs: Vec::new(),
            outputs: Vec::new(),
            stop,
            watchers: Vec::new(),
        };
        for (index, setup) in plan.inputs.iter().enumerate() {
            let (on, offset) =
                chip::locate(&board.chip, chip_named, setup.pin, setup.line.as_deref())?;
            let (line, events) = lines::input(&on, offset, setup)?;
            if setup.interrupt {
                let watcher = lines::watch(
                    line.clone(),
                    index,
                    setup,
                    events,
                    edges.clone(),
                    board.stop.clone(),
                )?;
                board.watchers.push(watcher);
            }
            board.inputs.push(line);
        }
        for setup in &plan.outputs {
            let (on, offset) =
                chip::locate(&board.chip, chip_named, setup.pin, setup.line.as_deref())?;
            let driven = board.output_for(&on, offset, setup)?;
            board.outputs.push(driven);
        }
        Ok(board)
    }

    fn output_for(
        &self,
        chip: &ChipFound,
        offset: u32,
        setup: &super::OutputSetup,
    ) -> Result<Driven, BoardError> {
        let (pin, initial) = (setup.pin, setup.initial_high);
        // A line found by name may be on any chip: only a Pi pin by number
        // has the Pi's PWM channel.
        let hw = match setup.pwm {
            PwmSetup::Hardware { .. } if setup.line.is_none() => hardware_pwm(pin, Soc::Bcm283x),
            _ => None,
        };
        let mut advice = None;
        if let Some(hw) = hw {
            match kernel_pwm::route(std::path::Path::new("/"), pin, hw) {
                Route::Routed { chip, channel } => {
                    let opened = KernelPwm::open(&chip, channel).and_then(|mut pwm| {
                        pwm.level(initial)?;
                        Ok(pwm)
                    });
                    match opened {
                        Ok(pwm) => {
                            tracing::info!(pin, pwm = %pwm.describe(), "GPIO{pin} is the kernel's PWM (the device tree routes it): levels are 0 % and 100 % duty");
                            return Ok(Driven::Pwm { pin, pwm });
                        }
                        Err(e) => {
                            tracing::warn!(pin, error = %e, "GPIO{pin}: cannot use its hardware PWM; driving it as a GPIO line, with software PWM");
                        }
                    }
                }
                Route::Missing(words) => advice = Some(words),
            }
        }
        Ok(Driven::Line {
            line: lines::output(chip, offset, pin, initial)?,
            soft: None,
            advice,
        })
    }

    /// The chip and how the board was found, for `pinpost check` and logs.
    pub(crate) fn describe(&self) -> String {
        format!(
            "the kernel's GPIO character device {} {:?} ({} lines)",
            self.chip.path.display(),
            self.chip.label,
            self.chip.lines
        )
    }

    fn output(&mut self, output: usize) -> Result<&mut Driven, BoardError> {
        self.outputs
            .get_mut(output)
            .ok_or_else(|| BoardError::Other(format!("no output {output}")))
    }
}

impl Driven {
    fn level(&mut self, high: bool) -> Result<(), BoardError> {
        match self {
            Driven::Line { line, soft, .. } => {
                if let Some(mut running) = soft.take() {
                    running.stop();
                }
                line.set(high)
            }
            Driven::Pwm { pin, pwm } => pwm
                .level(high)
                .map_err(|what| BoardError::Pin { pin: *pin, what }),
        }
    }

    fn pwm(&mut self, duty: f64, hz: f64) -> Result<(), BoardError> {
        match self {
            Driven::Pwm { pin, pwm } => pwm
                .set(duty, hz)
                .map_err(|what| BoardError::Pin { pin: *pin, what }),
            Driven::Line { line, soft, advice } => {
                if let Some(words) = advice.take() {
                    tracing::warn!(pin = line.pin, "{words}; using software PWM meanwhile");
                }
                if let Some(mut running) = soft.take() {
                    running.stop();
                }
                if duty <= 0.0 || duty >= 1.0 {
                    return line.set(duty >= 1.0);
                }
                let pin = line.pin;
                let on = line.clone();
                let set: SetLevel = Arc::new(move |high| on.set(high).map_err(|e| e.to_string()));
                let started = SoftPwm::start(format!("pinpost-pwm{pin}"), set, duty, hz)
                    .map_err(|what| BoardError::Pin { pin, what })?;
                *soft = Some(started);
                Ok(())
            }
        }
    }
}

impl Board for CdevBoard {
    fn read_input(&self, input: usize) -> Result<bool, BoardError> {
        let line = self
            .inputs
            .get(input)
            .ok_or_else(|| BoardError::Other(format!("no input {input}")))?;
        line.get()
    }

    fn write_output(&mut self, output: usize, high: bool) -> Result<(), BoardError> {
        self.output(output)?.level(high)
    }

    fn pwm(&mut self, output: usize, duty: f64, hz: f64) -> Result<(), BoardError> {
        self.output(output)?.pwm(duty, hz)
    }

    fn name(&self) -> &'static str {
        "cdev"
    }

    fn describe(&self) -> String {
        CdevBoard::describe(self)
    }

    fn keeps_levels_after_exit(&self) -> bool {
        false
    }

    fn debounces(&self, input: usize) -> bool {
        self.inputs.get(input).is_some_and(|l| l.kernel_debounce)
    }
}

impl Drop for CdevBoard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for watcher in self.watchers.drain(..) {
            let _ = watcher.join();
        }
        // Software PWM threads stop as `outputs` drops, before its lines.
    }
}
