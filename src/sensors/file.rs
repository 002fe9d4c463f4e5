//! A number in a file: sysfs thermal zones, IIO devices (`in_temp_input`,
//! `in_humidityrelative_input`: the kernel's dht11, bme280, ads1015
//! drivers), hwmon. The value is `number * scale + offset`; a regex picks
//! the number out of richer text.

use std::path::{Path, PathBuf};

use regex_lite::Regex;

use super::{Measurement, Sensor, SensorError, read_text};

pub(crate) struct FileSensor {
    path: PathBuf,
    regex: Option<Regex>,
    scale: f64,
    offset: f64,
    unit: String,
}

impl FileSensor {
    /// `regex` was checked when the config was read; a pattern that still
    /// fails to compile is treated as absent.
    pub(crate) fn new(
        path: &Path,
        regex: Option<&str>,
        scale: f64,
        offset: f64,
        unit: &str,
    ) -> FileSensor {
        FileSensor {
            path: path.to_path_buf(),
            regex: regex.and_then(|r| Regex::new(r).ok()),
            scale,
            offset,
            unit: unit.to_string(),
        }
    }

    fn number<'t>(&self, text: &'t str) -> Option<&'t str> {
        match &self.regex {
            None => Some(text.trim()),
            Some(re) => {
                let caps = re.captures(text)?;
                caps.get(1)
                    .or_else(|| caps.get(0))
                    .map(|m| m.as_str().trim())
            }
        }
    }
}

impl Sensor for FileSensor {
    fn read(&mut self) -> Result<Vec<Measurement>, SensorError> {
        let text = read_text(
            &self.path,
            " (check the path; IIO and 1-Wire devices appear only when their kernel module is loaded)",
        )?;
        let malformed = || SensorError::Malformed {
            path: self.path.clone(),
            text: text.trim().chars().take(60).collect(),
            expected: if self.regex.is_some() {
                "a number where the regex expects one"
            } else {
                "a number"
            },
        };
        let value: f64 = self
            .number(&text)
            .and_then(|n| n.parse().ok())
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(malformed)?;
        Ok(vec![Measurement::single(
            value * self.scale + self.offset,
            &self.unit,
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in_temp_input");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn an_iio_millidegree_file_is_scaled() {
        let (_d, path) = file("23125\n");
        let mut s = FileSensor::new(&path, None, 0.001, 0.0, "°C");
        let m = s.read().unwrap();
        assert!((m[0].value - 23.125).abs() < 1e-9);
        assert_eq!(m[0].unit, "°C");
    }

    #[test]
    fn a_regex_picks_the_number_out_of_text() {
        let (_d, path) = file("temp=48.3'C\n");
        let mut s = FileSensor::new(&path, Some(r"temp=([0-9.]+)"), 1.0, -0.3, "°C");
        assert!((s.read().unwrap()[0].value - 48.0).abs() < 1e-9);
    }

    #[test]
    fn malformed_contents_are_quoted_in_the_error() {
        let (_d, path) = file("not ready\n");
        let e = FileSensor::new(&path, None, 1.0, 0.0, "")
            .read()
            .unwrap_err();
        assert!(e.to_string().contains("\"not ready\", not a number"), "{e}");
        let (_d, path) = file("nan\n");
        assert!(FileSensor::new(&path, None, 1.0, 0.0, "").read().is_err());
    }

    #[test]
    fn a_missing_file_says_so() {
        let e = FileSensor::new(Path::new("/nonexistent/in_temp_input"), None, 1.0, 0.0, "")
            .read()
            .unwrap_err();
        assert!(matches!(e, SensorError::Missing { .. }), "{e}");
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}
