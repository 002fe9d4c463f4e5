//! The checked `[[sensor]]`: what is read, how often, and what it
//! publishes. Split from `model` to keep each file readable; the same rules
//! hold: every value here is already in range, and nothing here knows TOML,
//! where a key was set, or how a section is checked (that is `sensors`).

use std::path::PathBuf;
use std::time::Duration;

/// A sensor sampled on a schedule; published on `sensor/<name>` (or
/// `sensor/<name>/<measurement>` for sensors that measure several things).
#[derive(Debug, Clone, PartialEq)]
pub struct Sensor {
    /// Its name in topics (`sensor/<name>`), unique among inputs, outputs and sensors.
    pub name: String,
    /// How often it is read.
    pub interval: Duration,
    /// A read that takes longer is reported as failed.
    pub timeout: Duration,
    /// Extra attempts after a failed read, before it is reported.
    pub retries: u32,
    /// Publish only when a value moved at least this much...
    pub change_threshold: Option<f64>,
    /// ...or this long has passed since it was last published.
    pub report_every: Option<Duration>,
    /// What is read, and where from.
    pub kind: SensorKind,
}

/// What a sensor reads, with what its driver needs to read it.
#[derive(Debug, Clone, PartialEq)]
pub enum SensorKind {
    /// A made-up value: `start`, then `step` more on each reading.
    Sim {
        /// The first value.
        start: f64,
        /// Added at each reading.
        step: f64,
        /// The unit published with it.
        unit: String,
    },
    /// A number in a file (sysfs, IIO, hwmon): `value * scale + offset`.
    File {
        /// The file read at each reading.
        path: PathBuf,
        /// Where in the text the number is: the first capture group, or
        /// the whole match.
        regex: Option<String>,
        /// The number read is multiplied by this...
        scale: f64,
        /// ...and then this is added.
        offset: f64,
        /// The unit published with it.
        unit: String,
    },
    /// 1-Wire DS18B20 thermometers under `dir` (one, or all found).
    Ds18b20 {
        /// The 1-Wire devices folder (`/sys/bus/w1/devices`).
        dir: PathBuf,
        /// One chip's id (`28-…`); `None` reads every chip found.
        id: Option<String>,
    },
    /// The SoC temperature from a thermal zone (millidegrees).
    CpuTemperature {
        /// The thermal zone's `temp` file.
        path: PathBuf,
    },
    /// Load, memory, disk and uptime, from `proc` and `statvfs(disk)`.
    System {
        /// Where `proc` is mounted (`/proc`).
        proc: PathBuf,
        /// A path on the disk whose use is reported (`/`).
        disk: PathBuf,
    },
    /// Bosch BME280: temperature, pressure and humidity over I2C.
    Bme280 {
        /// The I2C bus (`/dev/i2c-1` is bus 1).
        bus: u8,
        /// The chip's I2C address.
        address: u8,
    },
    /// Bosch BMP280: temperature and pressure over I2C.
    Bmp280 {
        /// The I2C bus (`/dev/i2c-1` is bus 1).
        bus: u8,
        /// The chip's I2C address.
        address: u8,
    },
    /// TI ADS1115: four analogue inputs, in volts, over I2C.
    Ads1115 {
        /// The I2C bus (`/dev/i2c-1` is bus 1).
        bus: u8,
        /// The chip's I2C address.
        address: u8,
        /// The inputs read (0 to 3), each published as `a<n>`.
        channels: Vec<u8>,
        /// Full-scale range in volts: 6.144, 4.096, 2.048, 1.024, 0.512, 0.256.
        gain: f64,
    },
    /// Sensirion SHT3x: temperature and humidity over I2C.
    Sht3x {
        /// The I2C bus (`/dev/i2c-1` is bus 1).
        bus: u8,
        /// The chip's I2C address.
        address: u8,
    },
    /// ROHM BH1750: illuminance in lux over I2C.
    Bh1750 {
        /// The I2C bus (`/dev/i2c-1` is bus 1).
        bus: u8,
        /// The chip's I2C address.
        address: u8,
        /// How finely it measures (and so how long it takes).
        resolution: LightResolution,
    },
    /// TI INA219: bus voltage, current and power through a shunt, over I2C.
    Ina219 {
        /// The I2C bus (`/dev/i2c-1` is bus 1).
        bus: u8,
        /// The chip's I2C address.
        address: u8,
        /// The shunt resistor, in ohms (0.1 on the common boards).
        shunt_ohms: f64,
        /// The largest current expected, in amperes: it sets the chip's range.
        max_current: f64,
    },
    /// Sensirion SCD40/SCD41: CO2, temperature and humidity over I2C.
    Scd4x {
        /// The I2C bus (`/dev/i2c-1` is bus 1).
        bus: u8,
        /// The chip's I2C address (always 0x62).
        address: u8,
    },
}

/// A BH1750's measuring mode: `high` (1 lx steps, up to 180 ms), `high2`
/// (0.5 lx, up to 180 ms) or `low` (4 lx, up to 24 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LightResolution {
    /// 1 lx steps.
    #[default]
    High,
    /// 0.5 lx steps, for dim places.
    High2,
    /// 4 lx steps, quicker.
    Low,
}

impl std::str::FromStr for LightResolution {
    type Err = String;

    /// `resolution`: `"high"`, `"high2"` or `"low"`.
    fn from_str(word: &str) -> Result<Self, String> {
        match word {
            "high" => Ok(LightResolution::High),
            "high2" => Ok(LightResolution::High2),
            "low" => Ok(LightResolution::Low),
            other => Err(format!(
                "{other:?} is not a BH1750 resolution; allowed: \"high\" (1 lx, the default), \
                 \"high2\" (0.5 lx, for dim places) or \"low\" (4 lx, quicker)"
            )),
        }
    }
}

impl SensorKind {
    /// The I2C bus this sensor uses, if any (one owner thread per bus).
    pub(crate) fn i2c_bus(&self) -> Option<u8> {
        match self {
            SensorKind::Bme280 { bus, .. }
            | SensorKind::Bmp280 { bus, .. }
            | SensorKind::Ads1115 { bus, .. }
            | SensorKind::Sht3x { bus, .. }
            | SensorKind::Bh1750 { bus, .. }
            | SensorKind::Ina219 { bus, .. }
            | SensorKind::Scd4x { bus, .. } => Some(*bus),
            _ => None,
        }
    }
}

/// What a sensor of some kind publishes: one value (`name` `None`, on
/// `sensor/<name>`) or named measurements (`sensor/<name>/<measurement>`).
/// Mirrors `crate::sensors` (each driver's `Measurement`s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Published {
    pub(crate) name: Option<String>,
    pub(crate) unit: String,
}

impl SensorKind {
    /// The measurements this kind publishes, or `None` when only the
    /// hardware knows (a `ds18b20` without `id` names each chip it finds).
    pub(crate) fn published(&self) -> Option<Vec<Published>> {
        let one = |unit: &str| {
            Some(vec![Published {
                name: None,
                unit: unit.to_string(),
            }])
        };
        let named = |list: &[(&str, &str)]| {
            Some(
                list.iter()
                    .map(|(name, unit)| Published {
                        name: Some(name.to_string()),
                        unit: unit.to_string(),
                    })
                    .collect(),
            )
        };
        match self {
            SensorKind::Sim { unit, .. } | SensorKind::File { unit, .. } => one(unit),
            SensorKind::Ds18b20 { id: Some(_), .. } | SensorKind::CpuTemperature { .. } => {
                one("°C")
            }
            SensorKind::Ds18b20 { id: None, .. } => None,
            SensorKind::System { .. } => named(&[
                ("load1", ""),
                ("memory_used", "%"),
                ("memory_available", "MiB"),
                ("disk_used", "%"),
                ("uptime", "s"),
            ]),
            SensorKind::Bme280 { .. } => named(&[
                ("temperature", "°C"),
                ("pressure", "hPa"),
                ("humidity", "%"),
            ]),
            SensorKind::Bmp280 { .. } => named(&[("temperature", "°C"), ("pressure", "hPa")]),
            SensorKind::Sht3x { .. } => named(&[("temperature", "°C"), ("humidity", "%")]),
            SensorKind::Bh1750 { .. } => one("lx"),
            SensorKind::Ina219 { .. } => named(&[
                ("voltage", "V"),
                ("current", "A"),
                ("power", "W"),
                ("shunt_voltage", "mV"),
            ]),
            SensorKind::Scd4x { .. } => {
                named(&[("co2", "ppm"), ("temperature", "°C"), ("humidity", "%")])
            }
            SensorKind::Ads1115 { channels, .. } => Some(
                channels
                    .iter()
                    .map(|ch| Published {
                        name: Some(format!("a{ch}")),
                        unit: "V".into(),
                    })
                    .collect(),
            ),
        }
    }
}
