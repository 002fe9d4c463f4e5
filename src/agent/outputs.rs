//! Output state and carrying out commands on the board: the current level
//! (or PWM), its sequence number, and pulses that end by themselves.
//!
//! Bounded whatever the commands: each output has at most one pending
//! pulse end (a later command replaces it), and remembers when it last
//! changed so the agent can hold a command until `commands.min_interval`
//! has passed: a command storm cannot chatter a relay.

use std::time::Duration;

use tokio::time::Instant;

use crate::board::Board;
use crate::config::Output;
use crate::control::Action;
use crate::topics::PinState;

#[derive(Debug, Clone)]
struct Driven {
    level: bool,
    pwm: Option<(f64, f64)>,
    seq: u64,
    /// Bumped by every command, so a later command cancels a pulse's return.
    generation: u64,
    /// The pending end of the last pulse; a later command replaces it.
    pulse: Option<PulseEnd>,
    /// When the pin was last driven, for `min_interval`.
    changed_at: Option<Instant>,
}

/// A pulse's end: put `output` back to `level` at `at`, unless another
/// command came first (`generation` differs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct PulseEnd {
    pub(super) at: Instant,
    pub(super) output: usize,
    pub(super) level: bool,
    generation: u64,
}

#[derive(Debug)]
pub(super) struct Outputs {
    driven: Vec<Driven>,
    min_interval: Duration,
}

impl Outputs {
    /// Outputs as the board set them up: at their initial levels.
    pub(super) fn new(outputs: &[Output]) -> Outputs {
        Outputs {
            driven: outputs
                .iter()
                .map(|o| Driven {
                    level: o.initial,
                    pwm: None,
                    seq: 1,
                    generation: 0,
                    pulse: None,
                    changed_at: None,
                })
                .collect(),
            min_interval: Duration::ZERO,
        }
    }

    /// The least time between two changes of one output
    /// (`commands.min_interval`).
    pub(super) fn with_min_interval(mut self, min_interval: Duration) -> Outputs {
        self.min_interval = min_interval;
        self
    }

    /// When output `i` may change again, if that is later than `now`.
    pub(super) fn ready_at(&self, i: usize, now: Instant) -> Option<Instant> {
        let at = self.driven.get(i)?.changed_at? + self.min_interval;
        (at > now).then_some(at)
    }

    /// Continues output `i`'s sequence after `last` (from an earlier run).
    pub(super) fn resume(&mut self, i: usize, last: u64) {
        if let Some(d) = self.driven.get_mut(i) {
            d.seq = d.seq.max(last + 1);
        }
    }

    /// Carries out `action` on `output`; returns the new state to publish.
    pub(super) fn apply(
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
        d.changed_at = Some(now);
        // Whatever it was, a pending pulse end is now cancelled.
        d.pulse = None;
        match action {
            Action::Set(level) => (d.level, d.pwm) = (*level, None),
            Action::Toggle => (d.level, d.pwm) = (!current, None),
            Action::Pulse(length) => {
                (d.level, d.pwm) = (!current, None);
                d.pulse = Some(PulseEnd {
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
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.driven
            .iter()
            .filter_map(|d| d.pulse)
            .map(|p| p.at)
            .min()
    }

    /// Pulses whose time has come and that no later command cancelled.
    pub(super) fn due(&mut self, now: Instant) -> Vec<PulseEnd> {
        self.driven
            .iter_mut()
            .filter_map(|d| match d.pulse {
                Some(p) if p.at <= now => d.pulse.take().filter(|p| p.generation == d.generation),
                _ => None,
            })
            .collect()
    }

    pub(super) fn state(&self, output: usize) -> Option<PinState> {
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

    fn setup() -> (Outputs, SimBoard, crate::board::SimHandle) {
        let config = vec![Output {
            name: "relay".into(),
            pin: crate::config::PinAt::Gpio(27),
            line: None,
            initial: false,
            safe_state: None,
            pwm: false,
        }];
        let plan = PinPlan {
            inputs: vec![],
            outputs: vec![OutputSetup {
                pin: 27,
                line: None,
                initial_high: false,
                pwm: PwmSetup::None,
            }],
        };
        let (tx, _rx) = crate::board::edges::channel(0);
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

    #[test]
    fn a_pulse_storm_leaves_one_pending_end() {
        let (mut outputs, mut board, pins) = setup();
        let t0 = Instant::now();
        for n in 0..10_000u64 {
            outputs
                .apply(
                    &mut board,
                    0,
                    &Action::Pulse(Duration::from_secs(60)),
                    t0 + Duration::from_micros(n),
                )
                .unwrap();
        }
        let pending: Vec<_> = outputs.driven.iter().filter_map(|d| d.pulse).collect();
        assert_eq!(pending.len(), 1, "one pending end per output");
        let last = t0 + Duration::from_micros(9_999) + Duration::from_secs(60);
        assert_eq!(outputs.next_due(), Some(last));
        let ends = outputs.due(last);
        assert_eq!(ends.len(), 1);
        // 10,000 flips from off: the last one left it off, so it ends on.
        assert_eq!(pins.level(27), Some(false));
        assert!(ends[0].level);
        assert_eq!(outputs.next_due(), None);
    }

    #[test]
    fn an_output_is_ready_again_only_after_min_interval() {
        let (outputs, mut board, _pins) = setup();
        let mut outputs = outputs.with_min_interval(Duration::from_millis(100));
        let t0 = Instant::now();
        assert_eq!(outputs.ready_at(0, t0), None, "never changed: ready");
        outputs.apply(&mut board, 0, &Action::Toggle, t0).unwrap();
        let later = t0 + Duration::from_millis(100);
        assert_eq!(
            outputs.ready_at(0, t0 + Duration::from_millis(30)),
            Some(later)
        );
        assert_eq!(outputs.ready_at(0, later), None);
    }
}
