//! Software PWM for the character-device backend: a thread that sets a
//! line high and low at the commanded duty and frequency, for pins without a
//! hardware channel (rppal has its own). Its timing is the scheduler's, good
//! for dimming an LED or running a fan, not for a servo.
//!
//! It knows nothing of lines: it is handed a function that sets the level,
//! so its tests count levels instead of driving pins.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Sets the level; the error is already in words.
pub(crate) type SetLevel = Arc<dyn Fn(bool) -> Result<(), String> + Send + Sync>;

/// A running software PWM; stopped (and joined) on [`SoftPwm::stop`] or drop.
pub(crate) struct SoftPwm {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SoftPwm {
    /// Starts toggling at `hz` (> 0) with `duty` strictly between 0 and 1
    /// (0 and 1 are levels, set without a thread).
    pub(crate) fn start(
        name: String,
        set: SetLevel,
        duty: f64,
        hz: f64,
    ) -> Result<SoftPwm, String> {
        let period = Duration::from_secs_f64(1.0 / hz);
        let high = period.mul_f64(duty);
        let low = period.saturating_sub(high);
        let stop = Arc::new(AtomicBool::new(false));
        let running = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let mut next = Instant::now();
                let mut said = false;
                while !running.load(Ordering::Acquire) {
                    for (level, hold) in [(true, high), (false, low)] {
                        if let Err(e) = set(level) {
                            if !said {
                                tracing::warn!(error = %e, "software PWM cannot set the line; it goes on trying");
                                said = true;
                            }
                        }
                        next += hold;
                        // Sleeping to a deadline, not for a span: the time
                        // spent setting the line does not stretch the period.
                        let now = Instant::now();
                        if next > now {
                            std::thread::park_timeout(next - now);
                        } else {
                            next = now;
                        }
                        if running.load(Ordering::Acquire) {
                            return;
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start a software PWM thread: {e}"))?;
        Ok(SoftPwm {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops toggling and waits for the thread, so the caller's next level
    /// is the last one set.
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Drop for SoftPwm {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn it_toggles_at_the_duty_and_stops_before_returning() {
        let levels = Arc::new(Mutex::new(Vec::new()));
        let seen = levels.clone();
        let set: SetLevel = Arc::new(move |high| {
            seen.lock().unwrap().push((high, Instant::now()));
            Ok(())
        });
        let mut pwm = SoftPwm::start("test-pwm".into(), set, 0.25, 200.0).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        pwm.stop();
        let after = levels.lock().unwrap().len();
        std::thread::sleep(Duration::from_millis(30));
        let levels = levels.lock().unwrap();
        assert_eq!(levels.len(), after, "nothing is set once stop returns");
        assert!(levels.len() >= 20, "it ran: {} levels", levels.len());
        // Alternating, high first.
        for (i, (high, _)) in levels.iter().enumerate() {
            assert_eq!(*high, i % 2 == 0);
        }
        // The high share of the time, over whole periods, is about a quarter.
        let periods = levels.len() / 2 - 1;
        let (mut high_time, mut total) = (Duration::ZERO, Duration::ZERO);
        for p in 0..periods {
            let (start, fall, next) = (levels[2 * p].1, levels[2 * p + 1].1, levels[2 * p + 2].1);
            high_time += fall - start;
            total += next - start;
        }
        let share = high_time.as_secs_f64() / total.as_secs_f64();
        assert!((0.1..0.45).contains(&share), "high {share:.2} of the time");
    }

    #[test]
    fn a_failing_line_does_not_stop_it_or_panic() {
        let calls = Arc::new(Mutex::new(0u32));
        let count = calls.clone();
        let set: SetLevel = Arc::new(move |_| {
            *count.lock().unwrap() += 1;
            Err("line gone".into())
        });
        let pwm = SoftPwm::start("test-pwm".into(), set, 0.5, 500.0).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        drop(pwm);
        assert!(*calls.lock().unwrap() > 2);
    }
}
