//! Output state and carrying out commands on the board: the current level
//! (or PWM), its sequence number, and pulses that end by themselves.

use tokio::time::Instant;

use crate::board::Board;
use crate::commands::Action;
use crate::config::Output;
use crate::topics::PinState;

#[derive(Debug, Clone)]
struct Driven {
    level: bool,
    pwm: Option<(f64, f64)>,
    seq: u64,
    /// Bumped by every command, so a later command cancels a pulse's return.
    generation: u64,
}

/// A pulse's end: put `output` back to `level` at `at`, unless another
/// command came first (`generation` differs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PulseEnd {
    pub at: Instant,
    pub output: usize,
    pub level: bool,
    generation: u64,
}

#[derive(Debug)]
pub struct Outputs {
    driven: Vec<Driven>,
    pulses: Vec<PulseEnd>,
}

impl Outputs {
    /// Outputs as the board set them up: at their initial levels.
    pub fn new(outputs: &[Output]) -> Outputs {
        Outputs {
            driven: outputs
                .iter()
                .map(|o| Driven {
                    level: o.initial,
                    pwm: None,
                    seq: 1,
                    generation: 0,
                })
                .collect(),
            pulses: Vec::new(),
        }
    }

    /// Continues output `i`'s sequence after `last` (from an earlier run).
    pub fn resume(&mut self, i: usize, last: u64) {
        if let Some(d) = self.driven.get_mut(i) {
            d.seq = d.seq.max(last + 1);
        }
    }

    /// Carries out `action` on `output`; returns the new state to publish.
    pub fn apply(
        &mut self,
        board: &mut dyn Board,
        output: usize,
        action: &Action,
        now: Instant,
    ) -> Result<PinState, String> {
        let current = self.driven.get(output).ok_or("no such output")?.level;
        match action {
            Action::Set(level) => board.write_output(output, *level),
            Action::Toggle => board.write_output(output, !current),
            Action::Pulse(_) => board.write_output(output, !current),
            Action::Pwm { duty, hz } => board.pwm(output, *duty, *hz),
        }
        .map_err(|e| e.to_string())?;
        let d = &mut self.driven[output];
        d.generation += 1;
        d.seq += 1;
        match action {
            Action::Set(level) => (d.level, d.pwm) = (*level, None),
            Action::Toggle => (d.level, d.pwm) = (!current, None),
            Action::Pulse(length) => {
                (d.level, d.pwm) = (!current, None);
                self.pulses.push(PulseEnd {
                    at: now + *length,
                    output,
                    level: current,
                    generation: d.generation,
                });
            }
            Action::Pwm { duty, hz } => (d.level, d.pwm) = (*duty > 0.0, Some((*duty, *hz))),
        }
        Ok(self
            .state(output)
            .unwrap_or_else(|| PinState::level(false, 0)))
    }

    /// The earliest pulse end, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.pulses.iter().map(|p| p.at).min()
    }

    /// Pulses whose time has come and that no later command cancelled.
    pub fn due(&mut self, now: Instant) -> Vec<PulseEnd> {
        let (due, later): (Vec<PulseEnd>, Vec<PulseEnd>) =
            self.pulses.iter().partition(|p| p.at <= now);
        self.pulses = later;
        due.into_iter()
            .filter(|p| {
                self.driven
                    .get(p.output)
                    .is_some_and(|d| d.generation == p.generation)
            })
            .collect()
    }

    pub fn state(&self, output: usize) -> Option<PinState> {
        let d = self.driven.get(output)?;
        let mut state = PinState::level(d.level, d.seq);
        if let Some((duty, hz)) = d.pwm {
            state.duty = Some(duty);
            state.hz = Some(hz);
        }
        Some(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::{OutputSetup, PinPlan, PwmSetup, SimBoard};
    use std::time::Duration;

    fn setup() -> (Outputs, SimBoard, crate::board::SimHandle) {
        let config = vec![Output {
            name: "relay".into(),
            pin: 27,
            initial: false,
            safe_state: None,
            pwm: false,
        }];
        let plan = PinPlan {
            inputs: vec![],
            outputs: vec![OutputSetup {
                pin: 27,
                initial_high: false,
                pwm: PwmSetup::None,
            }],
        };
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (board, handle) = SimBoard::new(&plan, &[], tx);
        (Outputs::new(&config), board, handle)
    }

    #[test]
    fn toggle_flips_and_counts() {
        let (mut outputs, mut board, pins) = setup();
        let s = outputs
            .apply(&mut board, 0, &Action::Toggle, Instant::now())
            .unwrap();
        assert!(s.value && s.seq == 2);
        assert_eq!(pins.level(27), Some(true));
    }

    #[test]
    fn a_pulse_goes_back_by_itself_unless_overridden() {
        let (mut outputs, mut board, pins) = setup();
        let t0 = Instant::now();
        outputs
            .apply(
                &mut board,
                0,
                &Action::Pulse(Duration::from_millis(500)),
                t0,
            )
            .unwrap();
        assert_eq!(pins.level(27), Some(true));
        assert_eq!(outputs.next_due(), Some(t0 + Duration::from_millis(500)));
        let ends = outputs.due(t0 + Duration::from_millis(500));
        assert_eq!(ends.len(), 1);
        assert!(!ends[0].level);

        outputs
            .apply(
                &mut board,
                0,
                &Action::Pulse(Duration::from_millis(500)),
                t0,
            )
            .unwrap();
        outputs
            .apply(&mut board, 0, &Action::Set(true), t0)
            .unwrap();
        assert!(
            outputs.due(t0 + Duration::from_secs(1)).is_empty(),
            "a later command wins"
        );
    }
}
