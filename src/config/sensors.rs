//! `[[sensor]]`: what is sampled, how often, and from where. Each kind
//! takes only the keys that mean something to it; any other is refused by
//! name, so a typo never silently does nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::error::ConfigError;
use super::origins::Origins;
use super::raw::{RawAddress, RawConfig, RawSensor};
use super::sensor_model::{LightResolution, Sensor, SensorKind};
use super::values::{duration, name, word};

const INTERVAL_DEFAULT: Duration = Duration::from_secs(10);
const TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
const RETRIES_DEFAULT: i64 = 2;
const KINDS: &str = "\"file\", \"ds18b20\", \"cpu_temperature\", \"system\", \"bme280\", \
                     \"bmp280\", \"ads1115\", \"sht3x\", \"bh1750\", \"ina219\", \"scd4x\" or \
                     \"sim\"";
/// An SCD4x makes one measurement every 5 s on its own: reading it more
/// often would only find none ready.
const SCD4X_PERIOD: Duration = Duration::from_secs(5);
/// `shunt_ohms` unless set: the R100 on the common INA219 boards.
const SHUNT_OHMS_DEFAULT: f64 = 0.1;
/// `max_current` unless set: what those boards measure at the chip's
/// widest range (320 mV across 0.1 Ω).
const MAX_CURRENT_DEFAULT: f64 = 3.2;
/// The widest shunt voltage the INA219 measures (its ÷8 range).
const INA219_MOST_SHUNT_VOLTS: f64 = 0.32;

/// The word of `kind`: which driver reads the sensor, and so which keys
/// mean something to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sim,
    File,
    Ds18b20,
    CpuTemperature,
    System,
    Bme280,
    Bmp280,
    Sht3x,
    Ads1115,
    Bh1750,
    Ina219,
    Scd4x,
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(word: &str) -> Result<Self, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == word)
            .ok_or_else(|| format!("{word:?} is not a sensor kind; allowed: {KINDS}"))
    }
}

impl Kind {
    const ALL: [Kind; 12] = [
        Kind::Sim,
        Kind::File,
        Kind::Ds18b20,
        Kind::CpuTemperature,
        Kind::System,
        Kind::Bme280,
        Kind::Bmp280,
        Kind::Sht3x,
        Kind::Ads1115,
        Kind::Bh1750,
        Kind::Ina219,
        Kind::Scd4x,
    ];

    /// The word the file says.
    fn as_str(self) -> &'static str {
        match self {
            Kind::Sim => "sim",
            Kind::File => "file",
            Kind::Ds18b20 => "ds18b20",
            Kind::CpuTemperature => "cpu_temperature",
            Kind::System => "system",
            Kind::Bme280 => "bme280",
            Kind::Bmp280 => "bmp280",
            Kind::Sht3x => "sht3x",
            Kind::Ads1115 => "ads1115",
            Kind::Bh1750 => "bh1750",
            Kind::Ina219 => "ina219",
            Kind::Scd4x => "scd4x",
        }
    }

    /// Which keys this kind understands, beyond the common ones.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Sim => &["unit", "start", "step"],
            Kind::File => &["path", "regex", "scale", "offset", "unit"],
            Kind::Ds18b20 => &["path", "id"],
            Kind::CpuTemperature => &["path"],
            Kind::System => &["path", "disk"],
            Kind::Bme280 | Kind::Bmp280 | Kind::Sht3x | Kind::Scd4x => &["bus", "address"],
            Kind::Ads1115 => &["bus", "address", "channels", "gain"],
            Kind::Bh1750 => &["bus", "address", "resolution"],
            Kind::Ina219 => &["bus", "address", "shunt_ohms", "max_current"],
        }
    }
}

/// Every `[[sensor]]`, checked, in the file's order.
pub(super) fn build(raw: &RawConfig, o: &Origins<'_>) -> Result<Vec<Sensor>, ConfigError> {
    let mut names = HashMap::new();
    let mut sensors = Vec::new();
    for (i, r) in raw.sensor.iter().enumerate() {
        let at = |field: &str| format!("sensor[{i}].{field}");
        let name = name(r.name.as_deref(), &at("name"), &mut names, o)?;
        let interval = duration(&r.interval, &at("interval"), o)?.unwrap_or(INTERVAL_DEFAULT);
        if interval < Duration::from_millis(1) || interval > Duration::from_secs(86400) {
            return Err(o.invalid(&at("interval"), "out of range; allowed: \"1ms\" to \"24h\""));
        }
        let timeout = duration(&r.timeout, &at("timeout"), o)?.unwrap_or(TIMEOUT_DEFAULT);
        if timeout < Duration::from_millis(1) || timeout > Duration::from_secs(600) {
            return Err(o.invalid(&at("timeout"), "out of range; allowed: \"1ms\" to \"10m\""));
        }
        let retries = r.retries.unwrap_or(RETRIES_DEFAULT);
        if !(0..=10).contains(&retries) {
            return Err(o.invalid(
                &at("retries"),
                format!("{retries} is out of range; allowed: 0 to 10"),
            ));
        }
        if r.change_threshold
            .is_some_and(|t| !(t >= 0.0 && t.is_finite()))
        {
            return Err(o.invalid(&at("change_threshold"), "must be a number 0 or more"));
        }
        let report_every = duration(&r.report_every, &at("report_every"), o)?;
        let kind = kind(r, &at, o)?;
        if matches!(kind, SensorKind::Scd4x { .. }) && interval < SCD4X_PERIOD {
            return Err(o.invalid(
                &at("interval"),
                "shorter than the SCD4x's own 5 s between measurements; allowed: \"5s\" or more",
            ));
        }
        sensors.push(Sensor {
            name,
            interval,
            timeout,
            retries: retries as u32,
            change_threshold: r.change_threshold,
            report_every,
            kind,
        });
    }
    Ok(sensors)
}

fn kind(
    r: &RawSensor,
    at: &dyn Fn(&str) -> String,
    o: &Origins<'_>,
) -> Result<SensorKind, ConfigError> {
    let Some(kind) = word::<Kind>(r.kind.as_deref(), &at("kind"), o)? else {
        return Err(o.invalid(
            &at("kind"),
            format!("missing; say what to read (kind = one of {KINDS})"),
        ));
    };
    let allowed = kind.keys();
    let given = [
        ("unit", r.unit.is_some()),
        ("start", r.start.is_some()),
        ("step", r.step.is_some()),
        ("path", r.path.is_some()),
        ("regex", r.regex.is_some()),
        ("scale", r.scale.is_some()),
        ("offset", r.offset.is_some()),
        ("id", r.id.is_some()),
        ("disk", r.disk.is_some()),
        ("bus", r.bus.is_some()),
        ("address", r.address.is_some()),
        ("channels", r.channels.is_some()),
        ("gain", r.gain.is_some()),
        ("resolution", r.resolution.is_some()),
        ("shunt_ohms", r.shunt_ohms.is_some()),
        ("max_current", r.max_current.is_some()),
    ];
    if let Some((key, _)) = given.iter().find(|(k, set)| *set && !allowed.contains(k)) {
        return Err(o.invalid(
            &at(key),
            format!(
                "does not apply to kind = {:?}; it takes {}",
                kind.as_str(),
                allowed.join(", ")
            ),
        ));
    }
    let path = |default: &str| {
        r.path
            .as_ref()
            .map_or_else(|| PathBuf::from(default), |p| o.resolve(&at("path"), p))
    };
    let bus = || -> Result<u8, ConfigError> {
        let bus = r.bus.unwrap_or(1);
        u8::try_from(bus).map_err(|_| {
            o.invalid(
                &at("bus"),
                format!("{bus} is not an I2C bus number (/dev/i2c-1 is bus = 1)"),
            )
        })
    };
    Ok(match kind {
        Kind::Sim => SensorKind::Sim {
            start: r.start.unwrap_or(0.0),
            step: r.step.unwrap_or(1.0),
            unit: r.unit.clone().unwrap_or_default(),
        },
        Kind::File => {
            let Some(p) = &r.path else {
                return Err(o.invalid(
                    &at("path"),
                    "missing; name the file holding the number (e.g. \
                     path = \"/sys/bus/iio/devices/iio:device0/in_temp_input\")",
                ));
            };
            if let Some(re) = &r.regex {
                if let Err(e) = regex_lite::Regex::new(re) {
                    return Err(o.invalid(&at("regex"), format!("{re:?} is not a regex: {e}")));
                }
            }
            SensorKind::File {
                path: o.resolve(&at("path"), p),
                regex: r.regex.clone(),
                scale: finite(r.scale, 1.0, &at("scale"), o)?,
                offset: finite(r.offset, 0.0, &at("offset"), o)?,
                unit: r.unit.clone().unwrap_or_default(),
            }
        }
        Kind::Ds18b20 => {
            if let Some(id) = &r.id {
                if !id.starts_with("28-") || id.contains('/') {
                    return Err(o.invalid(
                        &at("id"),
                        format!("{id:?} is not a DS18B20 id; they look like \"28-0316a2795aff\" (ls /sys/bus/w1/devices)"),
                    ));
                }
            }
            SensorKind::Ds18b20 {
                dir: path("/sys/bus/w1/devices"),
                id: r.id.clone(),
            }
        }
        Kind::CpuTemperature => SensorKind::CpuTemperature {
            path: path("/sys/class/thermal/thermal_zone0/temp"),
        },
        Kind::System => SensorKind::System {
            proc: path("/proc"),
            disk: r
                .disk
                .as_ref()
                .map_or_else(|| PathBuf::from("/"), |d| o.resolve(&at("disk"), d)),
        },
        Kind::Bme280 => SensorKind::Bme280 {
            bus: bus()?,
            address: address(&r.address, &[0x76, 0x77], &at("address"), o)?,
        },
        Kind::Bmp280 => SensorKind::Bmp280 {
            bus: bus()?,
            address: address(&r.address, &[0x76, 0x77], &at("address"), o)?,
        },
        Kind::Sht3x => SensorKind::Sht3x {
            bus: bus()?,
            address: address(&r.address, &[0x44, 0x45], &at("address"), o)?,
        },
        Kind::Ads1115 => {
            let channels = r.channels.clone().unwrap_or_else(|| vec![0, 1, 2, 3]);
            if channels.is_empty() || channels.iter().any(|c| !(0..=3).contains(c)) {
                return Err(o.invalid(
                    &at("channels"),
                    "allowed: a list of 0 to 3, e.g. channels = [0, 1]",
                ));
            }
            let gain = r.gain.unwrap_or(4.096);
            if ![6.144, 4.096, 2.048, 1.024, 0.512, 0.256].contains(&gain) {
                return Err(o.invalid(
                    &at("gain"),
                    format!("{gain} is not a full-scale range the ADS1115 has; allowed: 6.144, 4.096, 2.048, 1.024, 0.512, 0.256 (volts)"),
                ));
            }
            SensorKind::Ads1115 {
                bus: bus()?,
                address: address(&r.address, &[0x48, 0x49, 0x4a, 0x4b], &at("address"), o)?,
                channels: channels.into_iter().map(|c| c as u8).collect(),
                gain,
            }
        }
        Kind::Bh1750 => SensorKind::Bh1750 {
            bus: bus()?,
            address: address(&r.address, &[0x23, 0x5c], &at("address"), o)?,
            resolution: word::<LightResolution>(r.resolution.as_deref(), &at("resolution"), o)?
                .unwrap_or_default(),
        },
        Kind::Ina219 => {
            let shunt_ohms = r.shunt_ohms.unwrap_or(SHUNT_OHMS_DEFAULT);
            // Below a milliohm the chip's 10 µV steps are 10 mA and more;
            // above 100 Ω it is no shunt.
            if !(0.001..=100.0).contains(&shunt_ohms) {
                return Err(o.invalid(
                    &at("shunt_ohms"),
                    format!(
                        "{shunt_ohms} is out of range; allowed: 0.001 to 100 (ohms; the common \
                         boards' R100 is 0.1)"
                    ),
                ));
            }
            let max_current = r.max_current.unwrap_or(MAX_CURRENT_DEFAULT);
            let most = INA219_MOST_SHUNT_VOLTS / shunt_ohms;
            if !(max_current > 0.0 && max_current <= most + 1e-9) {
                return Err(o.invalid(
                    &at("max_current"),
                    format!(
                        "{max_current} is out of range; allowed: more than 0 and at most {most:.3} \
                         (amperes: the INA219 measures up to 320 mV across the {shunt_ohms} Ω \
                         shunt)"
                    ),
                ));
            }
            SensorKind::Ina219 {
                bus: bus()?,
                address: address(&r.address, &INA219_ADDRESSES, &at("address"), o)?,
                shunt_ohms,
                max_current,
            }
        }
        Kind::Scd4x => SensorKind::Scd4x {
            bus: bus()?,
            address: address(&r.address, &[0x62], &at("address"), o)?,
        },
    })
}

fn finite(
    value: Option<f64>,
    default: f64,
    key: &str,
    o: &Origins<'_>,
) -> Result<f64, ConfigError> {
    match value {
        Some(v) if !v.is_finite() => Err(o.invalid(key, "must be a finite number")),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

/// The 16 addresses an INA219's A0 and A1 pins select.
const INA219_ADDRESSES: [u8; 16] = [
    0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x4b, 0x4c, 0x4d, 0x4e, 0x4f,
];

/// The chip's address: its default (first of `allowed`) or one it can be
/// strapped to.
fn address(
    value: &Option<RawAddress>,
    allowed: &[u8],
    key: &str,
    o: &Origins<'_>,
) -> Result<u8, ConfigError> {
    let list = || {
        allowed
            .iter()
            .map(|a| format!("0x{a:02x}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let n = match value {
        None => return Ok(allowed[0]),
        Some(RawAddress::Number(n)) => *n,
        Some(RawAddress::Text(t)) => {
            let t = t.trim();
            let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => i64::from_str_radix(hex, 16).ok(),
                None => t.parse().ok(),
            };
            parsed.ok_or_else(|| {
                o.invalid(
                    key,
                    format!("{t:?} is not an address; write 0x76 or \"0x76\""),
                )
            })?
        }
    };
    u8::try_from(n)
        .ok()
        .filter(|a| allowed.contains(a))
        .ok_or_else(|| {
            o.invalid(
                key,
                format!(
                    "0x{n:02x} is not an address this chip answers on; allowed: {}",
                    list()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use crate::config::{LightResolution, Overrides, SensorKind, from_text};
    use std::time::Duration;

    fn parse(sensor: &str) -> Result<crate::config::Config, String> {
        from_text(
            &format!("[device]\nid = \"a\"\n[[sensor]]\nname = \"t\"\n{sensor}"),
            None,
            &Overrides::default(),
        )
        .map_err(|e| e.to_string())
    }

    /// The kind of the one sensor in `sensor`, which must be valid.
    fn kind(sensor: &str) -> SensorKind {
        parse(sensor).unwrap().sensors[0].kind.clone()
    }

    #[test]
    fn a_sim_sensor_reads_its_schedule_and_values() {
        let c =
            parse("kind = \"sim\"\ninterval = \"10ms\"\nunit = \"°C\"\nstart = 20.0\nstep = 0.5\n")
                .unwrap();
        assert_eq!(c.sensors[0].interval, Duration::from_millis(10));
        assert_eq!(
            c.sensors[0].kind,
            SensorKind::Sim {
                start: 20.0,
                step: 0.5,
                unit: "°C".into()
            }
        );
    }

    #[test]
    fn a_sensor_without_a_kind_says_what_to_add() {
        let e = parse("").unwrap_err();
        assert!(
            e.contains("sensor[0].kind") && e.contains("missing") && e.contains("ds18b20"),
            "{e}"
        );
    }

    #[test]
    fn a_key_of_another_kind_is_refused_by_name() {
        let e = parse("kind = \"ds18b20\"\nregex = \"x\"\n").unwrap_err();
        assert!(
            e.contains("sensor[0].regex") && e.contains("does not apply"),
            "{e}"
        );
    }

    #[test]
    fn i2c_addresses_are_checked_against_the_chip() {
        let c = parse("kind = \"bme280\"\naddress = 0x77\n").unwrap();
        assert_eq!(
            c.sensors[0].kind,
            SensorKind::Bme280 {
                bus: 1,
                address: 0x77
            }
        );
        let c = parse("kind = \"sht3x\"\naddress = \"0x45\"\n").unwrap();
        assert_eq!(
            c.sensors[0].kind,
            SensorKind::Sht3x {
                bus: 1,
                address: 0x45
            }
        );
        let e = parse("kind = \"ads1115\"\naddress = 0x76\n").unwrap_err();
        assert!(e.contains("0x48, 0x49, 0x4a, 0x4b"), "{e}");
    }

    #[test]
    fn a_bad_regex_or_gain_says_why() {
        let e = parse("kind = \"file\"\npath = \"/x\"\nregex = \"(\"\n").unwrap_err();
        assert!(e.contains("sensor[0].regex"), "{e}");
        let e = parse("kind = \"ads1115\"\ngain = 3.0\n").unwrap_err();
        assert!(e.contains("6.144"), "{e}");
    }

    #[test]
    fn a_bh1750_reads_its_address_and_resolution() {
        assert_eq!(
            kind("kind = \"bh1750\"\naddress = 0x5c\nresolution = \"high2\"\n"),
            SensorKind::Bh1750 {
                bus: 1,
                address: 0x5c,
                resolution: LightResolution::High2
            }
        );
        assert_eq!(
            kind("kind = \"bh1750\"\n"),
            SensorKind::Bh1750 {
                bus: 1,
                address: 0x23,
                resolution: LightResolution::High
            }
        );
        let e = parse("kind = \"bh1750\"\nresolution = \"fine\"\n").unwrap_err();
        assert!(
            e.contains("sensor[0].resolution") && e.contains("\"high2\""),
            "{e}"
        );
        let e = parse("kind = \"bh1750\"\ngain = 1.0\n").unwrap_err();
        assert!(
            e.contains("sensor[0].gain: does not apply to kind = \"bh1750\"")
                && e.contains("resolution"),
            "{e}"
        );
    }

    #[test]
    fn an_ina219_takes_its_shunt_and_largest_current_within_the_chips_range() {
        assert_eq!(
            kind("kind = \"ina219\"\n"),
            SensorKind::Ina219 {
                bus: 1,
                address: 0x40,
                shunt_ohms: 0.1,
                max_current: 3.2
            }
        );
        assert_eq!(
            kind("kind = \"ina219\"\naddress = 0x4f\nshunt_ohms = 0.01\nmax_current = 10.0\n"),
            SensorKind::Ina219 {
                bus: 1,
                address: 0x4f,
                shunt_ohms: 0.01,
                max_current: 10.0
            },
            "10 A through 10 mΩ is 100 mV: within the chip's range"
        );
        let e = parse("kind = \"ina219\"\nshunt_ohms = 0.0\n").unwrap_err();
        assert!(
            e.contains("sensor[0].shunt_ohms") && e.contains("0.001 to 100"),
            "{e}"
        );
        let e = parse("kind = \"ina219\"\nmax_current = 4.0\n").unwrap_err();
        assert!(
            e.contains("sensor[0].max_current") && e.contains("at most 3.200"),
            "{e}"
        );
        let e = parse("kind = \"ina219\"\nmax_current = -1.0\n").unwrap_err();
        assert!(e.contains("sensor[0].max_current"), "{e}");
        let e = parse("kind = \"ina219\"\naddress = 0x50\n").unwrap_err();
        assert!(e.contains("0x40, 0x41") && e.contains("0x4f"), "{e}");
    }

    #[test]
    fn an_scd4x_is_read_no_faster_than_it_measures() {
        assert_eq!(
            kind("kind = \"scd4x\"\n"),
            SensorKind::Scd4x {
                bus: 1,
                address: 0x62
            }
        );
        let e = parse("kind = \"scd4x\"\ninterval = \"2s\"\n").unwrap_err();
        assert!(
            e.contains("sensor[0].interval") && e.contains("\"5s\" or more"),
            "{e}"
        );
        let e = parse("kind = \"scd4x\"\naddress = 0x61\n").unwrap_err();
        assert!(e.contains("allowed: 0x62"), "{e}");
        let e = parse("kind = \"scd4x\"\nshunt_ohms = 0.1\n").unwrap_err();
        assert!(e.contains("sensor[0].shunt_ohms: does not apply"), "{e}");
    }
}
