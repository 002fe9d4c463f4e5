//! The Pi's own health, as people expect from a Pi monitor: the SoC
//! temperature from a thermal zone, and load, memory, disk and uptime from
//! `/proc` and `statvfs`. Paths are configurable so tests use a fake tree.

use std::path::{Path, PathBuf};

use super::{Measurement, Sensor, SensorError, read_text};

pub(crate) struct CpuTemperature {
    path: PathBuf,
}

impl CpuTemperature {
    pub(crate) fn new(path: &Path) -> CpuTemperature {
        CpuTemperature {
            path: path.to_path_buf(),
        }
    }
}

impl Sensor for CpuTemperature {
    fn read(&mut self) -> Result<Vec<Measurement>, SensorError> {
        let text = read_text(&self.path, " (no thermal zone: not a Pi, or set path)")?;
        let millis: f64 = text.trim().parse().map_err(|_| SensorError::Malformed {
            path: self.path.clone(),
            text: text.trim().chars().take(40).collect(),
            expected: "millidegrees",
        })?;
        Ok(vec![Measurement::single(millis / 1000.0, "°C")])
    }
}

pub(crate) struct SystemHealth {
    proc: PathBuf,
    disk: PathBuf,
}

impl SystemHealth {
    pub(crate) fn new(proc: &Path, disk: &Path) -> SystemHealth {
        SystemHealth {
            proc: proc.to_path_buf(),
            disk: disk.to_path_buf(),
        }
    }

    fn first_number(&self, file: &str, field: usize) -> Result<f64, SensorError> {
        let path = self.proc.join(file);
        let text = read_text(&path, "")?;
        text.split_whitespace()
            .nth(field)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| SensorError::Malformed {
                path,
                text: text.trim().chars().take(60).collect(),
                expected: "numbers",
            })
    }

    /// `MemTotal` and `MemAvailable`, in kB as /proc/meminfo says.
    fn memory(&self) -> Result<(f64, f64), SensorError> {
        let path = self.proc.join("meminfo");
        let text = read_text(&path, "")?;
        let field = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        };
        match (field("MemTotal:"), field("MemAvailable:")) {
            (Some(total), Some(available)) => Ok((total, available)),
            _ => Err(SensorError::Malformed {
                path,
                text: text.lines().next().unwrap_or("").to_string(),
                expected: "MemTotal and MemAvailable lines",
            }),
        }
    }

    fn disk_used_percent(&self) -> Result<f64, SensorError> {
        let st = rustix::fs::statvfs(&self.disk).map_err(|e| SensorError::Io {
            path: self.disk.clone(),
            why: e.to_string(),
        })?;
        let total = st.f_blocks as f64 * st.f_frsize as f64;
        let available = st.f_bavail as f64 * st.f_frsize as f64;
        if total <= 0.0 {
            return Ok(0.0);
        }
        Ok(100.0 * (total - available) / total)
    }
}

impl Sensor for SystemHealth {
    fn read(&mut self) -> Result<Vec<Measurement>, SensorError> {
        let load = self.first_number("loadavg", 0)?;
        let uptime = self.first_number("uptime", 0)?;
        let (total, available) = self.memory()?;
        let used = if total > 0.0 {
            100.0 * (total - available) / total
        } else {
            0.0
        };
        Ok(vec![
            Measurement::named("load1", load, ""),
            Measurement::named("memory_used", used, "%"),
            Measurement::named("memory_available", available / 1024.0, "MiB"),
            Measurement::named("disk_used", self.disk_used_percent()?, "%"),
            Measurement::named("uptime", uptime, "s"),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_temperature_is_millidegrees() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("temp");
        std::fs::write(&p, "48312\n").unwrap();
        let m = CpuTemperature::new(&p).read().unwrap();
        assert_eq!(m, [Measurement::single(48.312, "°C")]);
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(
            CpuTemperature::new(&p).read(),
            Err(SensorError::Malformed { .. })
        ));
        let e = CpuTemperature::new(&d.path().join("none"))
            .read()
            .unwrap_err();
        assert!(e.to_string().contains("no thermal zone"), "{e}");
    }

    #[test]
    fn system_health_reads_a_fake_proc() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("loadavg"), "0.42 0.30 0.20 1/123 4567\n").unwrap();
        std::fs::write(d.path().join("uptime"), "3600.50 7000.00\n").unwrap();
        std::fs::write(
            d.path().join("meminfo"),
            "MemTotal:        1000000 kB\nMemFree:          100000 kB\nMemAvailable:     250000 kB\n",
        )
        .unwrap();
        let m = SystemHealth::new(d.path(), d.path()).read().unwrap();
        let get = |n: &str| {
            m.iter()
                .find(|x| x.name.as_deref() == Some(n))
                .unwrap()
                .value
        };
        assert_eq!(get("load1"), 0.42);
        assert_eq!(get("uptime"), 3600.5);
        assert_eq!(get("memory_used"), 75.0);
        assert!((0.0..=100.0).contains(&get("disk_used")));
        std::fs::write(d.path().join("meminfo"), "garbage\n").unwrap();
        assert!(SystemHealth::new(d.path(), d.path()).read().is_err());
    }
}
