//! Home Assistant sensors for pinpost's `[[sensor]]`s: one entity per
//! measurement, with the unit and device class pinpost knows (overridable)
//! and an `expire_after` long enough that a quiet sensor never flaps.
//!
//! It reads the sensor config and what each kind publishes; it does not
//! read sensors, and where an entity goes is [`super`]'s business.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{Spec, common, spec};
use crate::config::{Component, Config, Entity, EntityCategory, Published, Sensor, SensorKind};
use crate::topics::Topics;

/// At least this long before a sensor that stopped reporting is shown
/// unavailable, whatever its interval.
const EXPIRE_AFTER_MIN: Duration = Duration::from_secs(10);

/// Each sensor's measurements; a sensor whose chips only the hardware can
/// name is left out, with a note saying why.
pub(super) fn sensors(
    config: &Config,
    topics: &Topics,
    specs: &mut Vec<Spec>,
    notes: &mut Vec<String>,
) {
    let ha = &config.homeassistant;
    let default = Entity::default();
    for sensor in &config.sensors {
        let overrides = ha.sensors.get(&sensor.name);
        let whole = overrides.map_or(&default, |s| &s.entity);
        if !whole.enabled {
            continue;
        }
        let Some(published) = sensor.kind.published() else {
            notes.push(format!(
                "sensor {:?} is not announced: a ds18b20 without `id` names its chips only when \
                 it finds them; set id = \"28-…\" (one [[sensor]] per chip) to have it in Home \
                 Assistant",
                sensor.name
            ));
            continue;
        };
        for p in published {
            let (e, key, name, topic) = match &p.name {
                None => (
                    whole,
                    sensor.name.clone(),
                    whole.name.clone().unwrap_or_else(|| sensor.name.clone()),
                    topics.sensor(&sensor.name, None),
                ),
                Some(m) => {
                    let e = overrides
                        .and_then(|s| s.measurements.get(m))
                        .unwrap_or(&default);
                    let base = whole.name.clone().unwrap_or_else(|| sensor.name.clone());
                    (
                        e,
                        format!("{}_{m}", sensor.name),
                        e.name.clone().unwrap_or_else(|| format!("{base} {m}")),
                        topics.sensor(&sensor.name, Some(m)),
                    )
                }
            };
            if !e.enabled {
                continue;
            }
            specs.push(spec(
                Component::Sensor,
                "sensor",
                &key,
                measurement(sensor, &p, e, whole, &name, &topic),
            ));
        }
    }
}

/// One sensor measurement: its unit and class from what pinpost knows,
/// overridable; `expire_after` from how often it reports.
fn measurement(
    sensor: &Sensor,
    p: &Published,
    e: &Entity,
    whole: &Entity,
    name: &str,
    topic: &str,
) -> Map<String, Value> {
    let mut c = common(e, name);
    c.insert("name".into(), json!(name));
    c.insert("state_topic".into(), json!(topic));
    // A failed read publishes `"value":null`, which renders as "None":
    // HA's sensor takes that as unknown, not as a number.
    c.insert("value_template".into(), json!("{{ value_json.value }}"));
    c.insert("state_class".into(), json!("measurement"));
    let unit = e
        .unit
        .as_deref()
        .or(whole.unit.as_deref())
        .unwrap_or(&p.unit);
    if !unit.is_empty() {
        c.insert("unit_of_measurement".into(), json!(unit));
    }
    let class = e
        .device_class
        .as_deref()
        .or(whole.device_class.as_deref())
        .or_else(|| device_class(&sensor.kind, unit));
    if let Some(class) = class {
        c.insert("device_class".into(), json!(class));
    }
    if let Some(icon) = e.icon.as_deref().or(whole.icon.as_deref()) {
        c.insert("icon".into(), json!(icon));
    }
    let category = e
        .entity_category
        .or(whole.entity_category)
        .or(match sensor.kind {
            // The Pi's own health is diagnostics, not the things it measures.
            SensorKind::CpuTemperature { .. } | SensorKind::System { .. } => {
                Some(EntityCategory::Diagnostic)
            }
            _ => None,
        });
    if let Some(category) = category {
        c.insert("entity_category".into(), json!(category.as_str()));
    }
    if let Some(expire) = expire_after(sensor) {
        c.insert("expire_after".into(), json!(expire.as_secs()));
    }
    c
}

/// HA's device class for a unit pinpost publishes (and whose unit HA
/// accepts for that class); `None` where a unit alone does not say.
fn device_class(kind: &SensorKind, unit: &str) -> Option<&'static str> {
    Some(match unit {
        "°C" | "°F" | "K" => "temperature",
        // The Pi's memory and disk use are percentages, not humidity.
        "%" if matches!(kind, SensorKind::System { .. }) => return None,
        "%" => "humidity",
        "hPa" | "Pa" | "kPa" | "mbar" | "bar" | "psi" | "inHg" | "mmHg" => "pressure",
        "V" | "mV" => "voltage",
        "A" | "mA" => "current",
        "W" | "kW" => "power",
        "lx" => "illuminance",
        // ppm is also VOCs' and other gases' unit; only an SCD4x's is CO2.
        "ppm" if matches!(kind, SensorKind::Scd4x { .. }) => "carbon_dioxide",
        "Hz" | "kHz" | "MHz" => "frequency",
        "s" | "min" | "h" | "ms" => "duration",
        "B" | "kB" | "KiB" | "MB" | "MiB" | "GB" | "GiB" => "data_size",
        "dBm" => "signal_strength",
        _ => return None,
    })
}

/// How long HA waits for a reading before showing the sensor unavailable:
/// twice the longest gap between two publications (the interval, or
/// `report_every` when only changes are published, plus the read's
/// timeouts and retries), at least `EXPIRE_AFTER_MIN` (10 s), in whole seconds.
/// `None` for a sensor that publishes only changes with no heartbeat: its
/// silence means "unchanged", never "gone" (availability covers that).
pub(super) fn expire_after(sensor: &Sensor) -> Option<Duration> {
    let period = match (sensor.change_threshold, sensor.report_every) {
        (None, _) => sensor.interval,
        (Some(_), None) => return None,
        // report_every is checked at each reading: up to one interval late.
        (Some(_), Some(every)) => every.max(sensor.interval).saturating_add(sensor.interval),
    };
    let reading = sensor
        .timeout
        .saturating_mul(sensor.retries.saturating_add(1))
        .saturating_add(Duration::from_millis(100).saturating_mul(sensor.retries));
    let gap = period.saturating_add(reading).saturating_mul(2);
    let secs = gap.as_secs() + u64::from(gap.subsec_nanos() > 0);
    Some(Duration::from_secs(secs).max(EXPIRE_AFTER_MIN))
}
