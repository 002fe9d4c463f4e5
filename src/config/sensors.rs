//! `[[sensor]]`: what is sampled, how often, and from where.

use std::collections::HashMap;
use std::time::Duration;

use super::build::{Origins, duration};
use super::pins::name;
use super::raw::RawConfig;
use super::{ConfigError, Sensor, SensorKind};

const INTERVAL_DEFAULT: Duration = Duration::from_secs(10);

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
        let kind = match r.kind.as_deref() {
            Some("sim") => SensorKind::Sim {
                start: r.start.unwrap_or(0.0),
                step: r.step.unwrap_or(1.0),
                unit: r.unit.clone().unwrap_or_default(),
            },
            Some(other) => {
                return Err(o.invalid(
                    &at("kind"),
                    format!("{other:?} is not a sensor kind; allowed: \"sim\""),
                ));
            }
            None => {
                return Err(o.invalid(
                    &at("kind"),
                    "missing; say what to read (e.g. kind = \"sim\")",
                ));
            }
        };
        sensors.push(Sensor {
            name,
            interval,
            kind,
        });
    }
    Ok(sensors)
}

#[cfg(test)]
mod tests {
    use crate::config::{Overrides, SensorKind, from_text};
    use std::time::Duration;

    #[test]
    fn a_sim_sensor_reads_its_schedule_and_values() {
        let c = from_text(
            "[device]\nid = \"a\"\n[[sensor]]\nname = \"t\"\nkind = \"sim\"\ninterval = \"10ms\"\nunit = \"°C\"\nstart = 20.0\nstep = 0.5\n",
            None,
            &Overrides::default(),
        )
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
        let e = from_text(
            "[device]\nid = \"a\"\n[[sensor]]\nname = \"t\"\n",
            None,
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sensor[0].kind") && e.contains("missing"), "{e}");
    }
}
