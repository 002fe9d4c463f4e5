//! How a button was pressed, from its debounced level: `single`, `double`,
//! `long` (held past `long_after`, said while still held) and
//! `long_release`. Pure state with times passed in, so the press patterns
//! are tested without sleeping. It knows the config's button times, not
//! pins or MQTT.

use tokio::time::Instant;

use crate::config::{ButtonTimes, Input};

/// What a press was, as published (`event_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Press {
    Single,
    Double,
    Long,
    LongRelease,
}

impl Press {
    /// Its word, one of [`topics::BUTTON_PRESSES`](crate::topics::BUTTON_PRESSES).
    pub(super) fn as_str(self) -> &'static str {
        let [single, double, long, long_release] = crate::topics::BUTTON_PRESSES;
        match self {
            Press::Single => single,
            Press::Double => double,
            Press::Long => long,
            Press::LongRelease => long_release,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Idle,
    /// Down since `since`; `second` when it is the double's second press.
    Down {
        since: Instant,
        second: bool,
    },
    /// Released after one short press: a second press before `until`
    /// makes a double, else it was a single.
    Released {
        until: Instant,
    },
    /// Held past `long_after` (said); its release is said too.
    Held,
}

#[derive(Debug)]
struct Button {
    times: ButtonTimes,
    step: Step,
}

/// Each input's button, `None` for an input that is not one.
#[derive(Debug)]
pub(super) struct Buttons {
    buttons: Vec<Option<Button>>,
}

impl Buttons {
    pub(super) fn new(inputs: &[Input]) -> Buttons {
        Buttons {
            buttons: inputs
                .iter()
                .map(|i| {
                    i.button.map(|times| Button {
                        times,
                        step: Step::Idle,
                    })
                })
                .collect(),
        }
    }

    /// Input `i`'s published value changed to `pressed` at `now`.
    pub(super) fn level(&mut self, i: usize, pressed: bool, now: Instant) -> Option<Press> {
        let Some(Some(b)) = self.buttons.get_mut(i) else {
            return None;
        };
        let (step, said) = match (b.step, pressed) {
            (Step::Idle, true) => (
                Step::Down {
                    since: now,
                    second: false,
                },
                None,
            ),
            (Step::Released { .. }, true) => (
                Step::Down {
                    since: now,
                    second: true,
                },
                None,
            ),
            // Released before the long press was due: short.
            (Step::Down { second: false, .. }, false) => (
                Step::Released {
                    until: now + b.times.double_within,
                },
                None,
            ),
            (Step::Down { second: true, .. }, false) => (Step::Idle, Some(Press::Double)),
            (Step::Held, false) => (Step::Idle, Some(Press::LongRelease)),
            // A level it already has (a repeat after a reconnect): nothing.
            (step, _) => (step, None),
        };
        b.step = step;
        said
    }

    /// The earliest moment a press may be decided by time alone.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.buttons
            .iter()
            .flatten()
            .filter_map(|b| match b.step {
                // A double's second press is the double, however long.
                Step::Down {
                    since,
                    second: false,
                } => Some(since + b.times.long_after),
                Step::Released { until } => Some(until),
                _ => None,
            })
            .min()
    }

    /// Presses decided by time: a long one still held, a single whose
    /// second press did not come.
    pub(super) fn due(&mut self, now: Instant) -> Vec<(usize, Press)> {
        let mut out = Vec::new();
        for (i, b) in self.buttons.iter_mut().enumerate() {
            let Some(b) = b else { continue };
            match b.step {
                Step::Down {
                    since,
                    second: false,
                } if now >= since + b.times.long_after => {
                    b.step = Step::Held;
                    out.push((i, Press::Long));
                }
                Step::Released { until } if now >= until => {
                    b.step = Step::Idle;
                    out.push((i, Press::Single));
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{Overrides, from_text};

    fn button() -> Buttons {
        let c = from_text(
            "[device]\nid = \"pi\"\n[[input]]\nname = \"hall\"\npin = 17\nbutton = true\n\
             double_within = \"300ms\"\nlong_after = \"1s\"\n",
            None,
            &Overrides::default(),
        )
        .unwrap();
        Buttons::new(&c.inputs)
    }

    /// Plays `(pressed, at ms)` and the timers in between; what it said.
    fn play(levels: &[(bool, u64)], until_ms: u64) -> Vec<Press> {
        let mut b = button();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut said = Vec::new();
        let mut next = levels.iter().peekable();
        for ms in 0..=until_ms {
            while let Some((pressed, when)) = next.peek() {
                if *when != ms {
                    break;
                }
                said.extend(b.level(0, *pressed, at(ms)));
                next.next();
            }
            if b.next_due().is_some_and(|due| due <= at(ms)) {
                said.extend(b.due(at(ms)).into_iter().map(|(_, p)| p));
            }
        }
        said
    }

    #[test]
    fn single_double_and_long_presses_are_told_apart_at_the_set_times() {
        use Press::*;
        // A 100 ms press: single, once the 300 ms for a second press passed.
        assert_eq!(play(&[(true, 0), (false, 100)], 2000), [Single]);
        // Two presses 200 ms apart: double, at the second release.
        assert_eq!(
            play(&[(true, 0), (false, 100), (true, 300), (false, 400)], 2000),
            [Double]
        );
        // A second press just after double_within: two singles.
        assert_eq!(
            play(&[(true, 0), (false, 100), (true, 401), (false, 500)], 2000),
            [Single, Single]
        );
        // Held 1.5 s: long at 1 s, while held, then its release.
        assert_eq!(play(&[(true, 0), (false, 1500)], 2000), [Long, LongRelease]);
        // Held 999 ms: not long.
        assert_eq!(play(&[(true, 0), (false, 999)], 2000), [Single]);
        // A double whose second press is held: the second press ends it.
        assert_eq!(
            play(&[(true, 0), (false, 100), (true, 200), (false, 1800)], 2500),
            [Double]
        );
    }

    #[test]
    fn an_input_that_is_no_button_says_nothing() {
        let c = from_text(
            "[device]\nid = \"pi\"\n[[input]]\nname = \"door\"\npin = 17\n",
            None,
            &Overrides::default(),
        )
        .unwrap();
        let mut b = Buttons::new(&c.inputs);
        assert_eq!(b.level(0, true, Instant::now()), None);
        assert_eq!(b.next_due(), None);
    }
}
