//! Pulse counters: a running total that only grows, a rate over a window, and when a total is worth
//! publishing. Pure, with times passed in; [`store`] keeps the total on
//! disk. It knows nothing of pins, MQTT or the agent's loop.

pub(crate) mod store;

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Counting;

/// How many rate samples a window keeps at most: one every 1/60 of it.
const SAMPLES: u32 = 60;

/// One counting input's total and rate.
#[derive(Debug)]
pub(crate) struct Counter {
    config: Counting,
    count: u64,
    /// (when, count): the oldest is the rate's base.
    samples: VecDeque<(Instant, u64)>,
    /// What was last published: (count, rate).
    published: Option<(u64, f64)>,
    next_publish: Instant,
}

/// A total as published.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Total {
    /// Pulses since the counter began (or was last set).
    pub(crate) count: u64,
    /// `count` in the meter's unit.
    pub(crate) value: f64,
    /// The unit per hour, over the window.
    pub(crate) rate: f64,
}

impl Counter {
    /// A counter resuming at `count`; its first total is due at once.
    pub(crate) fn new(config: Counting, count: u64, now: Instant) -> Counter {
        Counter {
            config,
            count,
            samples: VecDeque::from([(now, count)]),
            published: None,
            next_publish: now,
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// `n` more pulses.
    pub(crate) fn add(&mut self, n: u64, now: Instant) {
        self.count = self.count.saturating_add(n);
        self.sample(now);
    }

    /// An authorised `set` (or `reset`, to 0): the rate starts again, and
    /// the total is due at once.
    pub(crate) fn set(&mut self, count: u64, now: Instant) {
        self.count = count;
        self.samples.clear();
        self.samples.push_back((now, count));
        self.next_publish = now;
    }

    /// The pulses a value in the meter's unit is, rounded (`None` for a
    /// value no counter can hold).
    pub(crate) fn pulses_for(&self, value: f64) -> Option<u64> {
        let pulses = (value / self.config.per_pulse).round();
        (pulses.is_finite() && pulses >= 0.0 && pulses < 2f64.powi(53)).then_some(pulses as u64)
    }

    fn sample(&mut self, now: Instant) {
        let every = self.config.rate_window / SAMPLES;
        if self
            .samples
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= every)
        {
            self.samples.push_back((now, self.count));
        }
        // The base stays the newest sample at or before the window's start.
        while self.samples.len() > 1
            && self
                .samples
                .get(1)
                .is_some_and(|(at, _)| now.duration_since(*at) >= self.config.rate_window)
        {
            self.samples.pop_front();
        }
    }

    /// The total now, with the rate over the window.
    pub(crate) fn total(&mut self, now: Instant) -> Total {
        self.sample(now);
        let rate = match self.samples.front() {
            Some((at, base)) if now.duration_since(*at) >= Duration::from_secs(1) => {
                let hours = now.duration_since(*at).as_secs_f64() / 3600.0;
                self.count.saturating_sub(*base) as f64 * self.config.per_pulse / hours
            }
            _ => 0.0,
        };
        Total {
            count: self.count,
            value: self.count as f64 * self.config.per_pulse,
            rate: round(rate),
        }
    }

    /// When the next total may go (`None`: nothing new to say until a
    /// pulse comes).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        Some(self.next_publish)
    }

    /// The total to publish now, if it is due and says something new.
    pub(crate) fn due(&mut self, now: Instant) -> Option<Total> {
        if now < self.next_publish {
            return None;
        }
        let total = self.total(now);
        self.next_publish = now + self.config.interval;
        if self.published == Some((total.count, total.rate)) {
            return None;
        }
        self.published = Some((total.count, total.rate));
        Some(total)
    }
}

/// Six significant figures: a rate is an estimate, and a changing last
/// digit would publish a total every interval for nothing.
fn round(rate: f64) -> f64 {
    if rate == 0.0 || !rate.is_finite() {
        return 0.0;
    }
    let scale = 10f64.powi(5 - rate.abs().log10().floor() as i32);
    (rate * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CountEdge, Meter};

    fn meter() -> Counting {
        Counting {
            edge: CountEdge::Rising,
            per_pulse: 0.001,
            unit: "kWh".into(),
            rate_window: Duration::from_secs(60),
            interval: Duration::from_secs(10),
            meter: Meter::Energy,
        }
    }

    #[test]
    fn the_total_is_in_the_meters_unit_and_the_rate_is_per_hour_over_the_window() {
        let t0 = Instant::now();
        let mut c = Counter::new(meter(), 5000, t0);
        let first = c.due(t0).unwrap();
        assert_eq!((first.count, first.value, first.rate), (5000, 5.0, 0.0));
        // 1000 imp/kWh at 2 pulses a second is 7.2 kW.
        for s in 1..=120 {
            c.add(2, t0 + Duration::from_secs(s));
        }
        let t = c.total(t0 + Duration::from_secs(120));
        assert_eq!(t.count, 5240);
        assert!((t.value - 5.24).abs() < 1e-9);
        assert!((t.rate - 7.2).abs() < 0.2, "{}", t.rate);
        // The pulses stop: a window later the rate is 0.
        let t = c.total(t0 + Duration::from_secs(200));
        assert_eq!(t.rate, 0.0);
        assert!(
            c.samples.len() <= SAMPLES as usize + 2,
            "bounded: {}",
            c.samples.len()
        );
    }

    #[test]
    fn a_total_goes_once_per_interval_and_only_when_it_says_something_new() {
        let t0 = Instant::now();
        let mut c = Counter::new(meter(), 0, t0);
        assert!(c.due(t0).is_some(), "the first goes at once");
        c.add(1, t0 + Duration::from_secs(1));
        assert!(
            c.due(t0 + Duration::from_secs(5)).is_none(),
            "not before the interval"
        );
        assert_eq!(c.due(t0 + Duration::from_secs(10)).unwrap().count, 1);
        // Nothing new for a long while: once the rate has gone to 0, quiet.
        let mut later = 0;
        for s in (20..1000).step_by(10) {
            later += usize::from(c.due(t0 + Duration::from_secs(s)).is_some());
        }
        assert!(later <= 8, "{later} totals with nothing counted");
    }

    #[test]
    fn a_total_saturates_and_never_wraps_to_a_small_one() {
        let t0 = Instant::now();
        let mut c = Counter::new(meter(), 10, t0);
        c.add(u64::MAX, t0);
        assert_eq!(c.count(), u64::MAX);
    }

    #[test]
    fn set_is_the_only_way_down_and_a_value_maps_to_whole_pulses() {
        let t0 = Instant::now();
        let mut c = Counter::new(meter(), 10, t0);
        assert_eq!(c.pulses_for(1234.5), Some(1_234_500));
        assert_eq!(c.pulses_for(-1.0), None);
        assert_eq!(c.pulses_for(f64::NAN), None);
        assert_eq!(c.pulses_for(1e300), None);
        assert!(c.due(t0).is_some());
        c.set(0, t0 + Duration::from_secs(1));
        let t = c.due(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(
            (t.count, t.rate),
            (0, 0.0),
            "due at once, the rate started again"
        );
    }
}
