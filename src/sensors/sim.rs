//! A made-up sensor for tests, the demo and laptops: `start`, then `step`
//! more on every reading. Deterministic, so a test can predict values.

use super::{Measurement, Sensor, SensorError};

pub(crate) struct Sim {
    next: f64,
    step: f64,
    unit: String,
}

impl Sim {
    pub(crate) fn new(start: f64, step: f64, unit: &str) -> Sim {
        Sim {
            next: start,
            step,
            unit: unit.to_string(),
        }
    }
}

impl Sensor for Sim {
    fn read(&mut self) -> Result<Vec<Measurement>, SensorError> {
        let value = self.next;
        self.next += self.step;
        Ok(vec![Measurement::single(value, &self.unit)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_advance_by_step() {
        let mut s = Sim::new(20.0, 0.5, "°C");
        let values: Vec<f64> = (0..3).map(|_| s.read().unwrap()[0].value).collect();
        assert_eq!(values, [20.0, 20.5, 21.0]);
    }
}
