//! Sensors: things sampled on a schedule that yield numbers with units.
//! Each kind is one file behind the `Sensor` trait (sysfs files, 1-Wire,
//! the Pi's own health, I2C chips through embedded-hal driver crates, and
//! a simulated source). Reads may block, so `Sensing` runs them on
//! worker threads; `Reporting` decides which readings are worth sending
//! (a change threshold, a heartbeat). It knows no MQTT and no topics.

mod file;
mod i2c;
pub(crate) mod scan;
mod sim;
mod system;
pub(crate) mod w1;
mod workers;

use std::path::{Path, PathBuf};

use crate::config::{self, SensorKind};

pub(crate) use file::FileSensor;
pub(crate) use sim::Sim;
pub(crate) use system::{CpuTemperature, SystemHealth};
pub(crate) use w1::Ds18b20;
pub(crate) use workers::{Outcome, Reporting, Sensing};

/// One value read from a sensor. `name` is `None` for a sensor that
/// measures one thing; multi-value sensors name each (`temperature`, …).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Measurement {
    pub(crate) name: Option<String>,
    pub(crate) value: f64,
    pub(crate) unit: String,
}

impl Measurement {
    pub(crate) fn single(value: f64, unit: &str) -> Measurement {
        Measurement {
            name: None,
            value,
            unit: unit.to_string(),
        }
    }

    pub(crate) fn named(name: &str, value: f64, unit: &str) -> Measurement {
        Measurement {
            name: Some(name.to_string()),
            value,
            unit: unit.to_string(),
        }
    }
}

/// Why a read failed, in words for the log and the sensor's topic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum SensorError {
    #[error("{} does not exist{hint}", path.display())]
    Missing { path: PathBuf, hint: &'static str },
    #[error("cannot read {}: {why}", path.display())]
    Io { path: PathBuf, why: String },
    #[error("{} holds {text:?}, not {expected}", path.display())]
    Malformed {
        path: PathBuf,
        text: String,
        expected: &'static str,
    },
    #[error("{0}")]
    Device(String),
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
}

impl SensorError {
    fn io(path: &Path, e: &std::io::Error, hint: &'static str) -> SensorError {
        if e.kind() == std::io::ErrorKind::NotFound {
            SensorError::Missing {
                path: path.to_path_buf(),
                hint,
            }
        } else {
            SensorError::Io {
                path: path.to_path_buf(),
                why: crate::words::io_words(e),
            }
        }
    }
}

pub(crate) trait Sensor: Send {
    /// Takes one reading of everything the sensor measures. May block.
    fn read(&mut self) -> Result<Vec<Measurement>, SensorError>;
}

/// The driver for a configured sensor that needs no bus of its own. I2C
/// sensors are opened per bus by [`open_bus`].
pub(crate) fn open(sensor: &config::Sensor) -> Box<dyn Sensor> {
    match &sensor.kind {
        SensorKind::Sim { start, step, unit } => Box::new(Sim::new(*start, *step, unit)),
        SensorKind::File {
            path,
            regex,
            scale,
            offset,
            unit,
        } => Box::new(FileSensor::new(
            path,
            regex.as_deref(),
            *scale,
            *offset,
            unit,
        )),
        SensorKind::Ds18b20 { dir, id } => Box::new(Ds18b20::new(dir, id.as_deref())),
        SensorKind::CpuTemperature { path } => Box::new(CpuTemperature::new(path)),
        SensorKind::System { proc, disk } => Box::new(SystemHealth::new(proc, disk)),
        SensorKind::Bme280 { .. }
        | SensorKind::Bmp280 { .. }
        | SensorKind::Ads1115 { .. }
        | SensorKind::Sht3x { .. }
        | SensorKind::Bh1750 { .. }
        | SensorKind::Ina219 { .. }
        | SensorKind::Scd4x { .. } => Box::new(i2c::Unopened),
    }
}

pub(crate) use i2c::{by_bus, open_bus};

/// Reads a whole small file as text, with the errors people meet.
fn read_text(path: &Path, hint: &'static str) -> Result<String, SensorError> {
    std::fs::read_to_string(path).map_err(|e| SensorError::io(path, &e, hint))
}
