//! Sensors: things sampled on a schedule that yield numbers with units.
//! Each kind is one file behind the [`Sensor`] trait; the agent decides
//! when to read and where readings go. It knows no MQTT and no topics.

mod sim;

use crate::config::{self, SensorKind};

pub use sim::Sim;

/// One value read from a sensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub value: f64,
    pub unit: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error("{0}")]
    Read(String),
}

pub trait Sensor: Send {
    /// Takes one reading. May block on I/O for real devices.
    fn read(&mut self) -> Result<Measurement, SensorError>;
}

/// The driver for a configured sensor.
pub fn open(sensor: &config::Sensor) -> Box<dyn Sensor> {
    match &sensor.kind {
        SensorKind::Sim { start, step, unit } => Box::new(Sim::new(*start, *step, unit)),
    }
}
