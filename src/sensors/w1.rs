//! DS18B20 1-Wire thermometers through the kernel's w1 driver
//! (`dtoverlay=w1-gpio`): `<dir>/28-*/w1_slave` holds two lines, the first
//! ending in the CRC verdict (`YES`/`NO`), the second in `t=<millidegrees>`.
//! A failed CRC is a read error (retried); 85 °C exactly is the value the
//! chip reports before its first conversion (a power glitch), never a
//! reading.

use std::path::{Path, PathBuf};

use super::{Measurement, Sensor, SensorError, read_text};

/// What the chip holds at power-on, in millidegrees.
const POWER_ON_MILLIDEGREES: i64 = 85_000;
const HINT: &str = " (is 1-Wire enabled? add dtoverlay=w1-gpio to /boot/firmware/config.txt and \
                    check `ls /sys/bus/w1/devices`)";

pub(crate) struct Ds18b20 {
    dir: PathBuf,
    id: Option<String>,
}

impl Ds18b20 {
    /// One chip by `id`, or every `28-*` found under `dir` at each read.
    pub(crate) fn new(dir: &Path, id: Option<&str>) -> Ds18b20 {
        Ds18b20 {
            dir: dir.to_path_buf(),
            id: id.map(str::to_string),
        }
    }

    fn found(&self) -> Result<Vec<String>, SensorError> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| SensorError::io(&self.dir, &e, HINT))?;
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("28-"))
            .collect();
        ids.sort();
        if ids.is_empty() {
            return Err(SensorError::Device(format!(
                "no DS18B20 (28-*) under {}{HINT}",
                self.dir.display()
            )));
        }
        Ok(ids)
    }
}

/// Millidegrees from a `w1_slave` file's text.
fn parse(path: &Path, text: &str) -> Result<i64, SensorError> {
    let malformed = |expected| SensorError::Malformed {
        path: path.to_path_buf(),
        text: text.trim().chars().take(80).collect(),
        expected,
    };
    let mut lines = text.lines();
    let crc = lines
        .next()
        .ok_or_else(|| malformed("two lines from the w1 driver"))?;
    if crc.trim_end().ends_with("NO") {
        return Err(SensorError::Device(format!(
            "{}: the 1-Wire CRC check failed (noise on the line: check the 4.7 kΩ pull-up and the cable)",
            path.display()
        )));
    }
    if !crc.trim_end().ends_with("YES") {
        return Err(malformed("a CRC line ending in YES or NO"));
    }
    let millis: i64 = lines
        .next()
        .and_then(|l| l.rsplit_once("t="))
        .and_then(|(_, t)| t.trim().parse().ok())
        .ok_or_else(|| malformed("a line ending in t=<millidegrees>"))?;
    if millis == POWER_ON_MILLIDEGREES {
        return Err(SensorError::Device(format!(
            "{}: 85.000 °C is the value a DS18B20 reports before its first conversion \
             (a power glitch or a weak supply), not a temperature",
            path.display()
        )));
    }
    Ok(millis)
}

impl Sensor for Ds18b20 {
    fn read(&mut self) -> Result<Vec<Measurement>, SensorError> {
        let ids = match &self.id {
            Some(id) => vec![id.clone()],
            None => self.found()?,
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            let path = self.dir.join(id).join("w1_slave");
            let text = read_text(&path, HINT)?;
            let celsius = parse(&path, &text)? as f64 / 1000.0;
            out.push(match &self.id {
                // One chip named in the config: the sensor's own value.
                Some(_) => Measurement::single(celsius, "°C"),
                None => Measurement::named(id, celsius, "°C"),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n";

    fn tree(chips: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("w1_bus_master1")).unwrap();
        for (id, text) in chips {
            std::fs::create_dir(dir.path().join(id)).unwrap();
            std::fs::write(dir.path().join(id).join("w1_slave"), text).unwrap();
        }
        dir
    }

    #[test]
    fn one_chip_by_id_reads_degrees() {
        let d = tree(&[("28-0316a2795aff", GOOD)]);
        let m = Ds18b20::new(d.path(), Some("28-0316a2795aff"))
            .read()
            .unwrap();
        assert_eq!(m, [Measurement::single(23.125, "°C")]);
    }

    #[test]
    fn all_chips_found_are_named_by_id() {
        let cold = GOOD.replace("t=23125", "t=-1250");
        let d = tree(&[("28-bbb", &cold), ("28-aaa", GOOD)]);
        let m = Ds18b20::new(d.path(), None).read().unwrap();
        assert_eq!(
            m,
            [
                Measurement::named("28-aaa", 23.125, "°C"),
                Measurement::named("28-bbb", -1.25, "°C")
            ]
        );
    }

    #[test]
    fn a_failed_crc_is_an_error_that_names_the_usual_cause() {
        let d = tree(&[("28-a", &GOOD.replace("YES", "NO"))]);
        let e = Ds18b20::new(d.path(), Some("28-a")).read().unwrap_err();
        assert!(
            e.to_string().contains("CRC check failed") && e.to_string().contains("pull-up"),
            "{e}"
        );
    }

    #[test]
    fn the_power_on_85_degrees_is_rejected() {
        let d = tree(&[("28-a", &GOOD.replace("t=23125", "t=85000"))]);
        let e = Ds18b20::new(d.path(), Some("28-a")).read().unwrap_err();
        assert!(e.to_string().contains("before its first conversion"), "{e}");
    }

    #[test]
    fn malformed_and_missing_devices_are_explained() {
        let d = tree(&[("28-a", "garbage")]);
        let e = Ds18b20::new(d.path(), Some("28-a")).read().unwrap_err();
        assert!(matches!(e, SensorError::Malformed { .. }), "{e}");
        let e = Ds18b20::new(d.path(), Some("28-gone")).read().unwrap_err();
        assert!(
            e.to_string().contains("does not exist") && e.to_string().contains("w1-gpio"),
            "{e}"
        );
        let empty = tree(&[]);
        let e = Ds18b20::new(empty.path(), None).read().unwrap_err();
        assert!(e.to_string().contains("no DS18B20"), "{e}");
    }
}
