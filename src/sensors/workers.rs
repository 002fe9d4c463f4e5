//! Reading sensors off the async runtime: every sensor (or every I2C bus,
//! whose chips share one owner) gets a worker thread that reads on request,
//! retries a failed read, and sends the outcome back. The agent asks on
//! schedule and never waits: a sensor still busy past its `timeout` is
//! reported as failed and asked again only once it answers, so a hung
//! device costs its own readings and nobody else's.

use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Measurement, Sensor, SensorError};
use crate::config;
use crate::sensors;

/// What one request produced.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) sensor: usize,
    pub(crate) result: Result<Vec<Measurement>, SensorError>,
}

/// Pause between a failed read and its retry (1-Wire CRC errors and I2C
/// glitches are usually gone a moment later).
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Drivers keep little on the stack; a small stack keeps threads cheap.
const WORKER_STACK: usize = 256 * 1024;

pub(crate) struct Sensing {
    requests: Vec<std_mpsc::Sender<usize>>,
    worker_of: Vec<usize>,
    busy_since: Vec<Option<Instant>>,
    results: mpsc::UnboundedReceiver<Outcome>,
}

impl Sensing {
    pub(crate) fn start(sensors: &[config::Sensor]) -> Sensing {
        let (tx, results) = mpsc::unbounded_channel();
        let mut opened: Vec<Option<Box<dyn Sensor>>> =
            sensors.iter().map(|s| Some(sensors::open(s))).collect();
        // Chips on one bus: one owner.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut buses: Vec<(u8, Vec<usize>)> = sensors::by_bus(sensors).into_iter().collect();
        buses.sort_by_key(|(bus, _)| *bus);
        for (bus, members) in buses {
            let configs: Vec<&config::Sensor> = members.iter().map(|i| &sensors[*i]).collect();
            for (i, chip) in members.iter().zip(sensors::open_bus(bus, &configs)) {
                opened[*i] = Some(chip);
            }
            groups.push(members);
        }
        let grouped: Vec<usize> = groups.iter().flatten().copied().collect();
        for i in 0..sensors.len() {
            if !grouped.contains(&i) {
                groups.push(vec![i]);
            }
        }
        let mut worker_of = vec![0; sensors.len()];
        let mut requests = Vec::new();
        for (w, members) in groups.into_iter().enumerate() {
            let mut owned: HashMap<usize, (Box<dyn Sensor>, u32)> = HashMap::new();
            for i in members {
                worker_of[i] = w;
                if let Some(sensor) = opened[i].take() {
                    owned.insert(i, (sensor, sensors[i].retries));
                }
            }
            let (req_tx, req_rx) = std_mpsc::channel::<usize>();
            let out = tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("pinpost-sensor-{w}"))
                .stack_size(WORKER_STACK)
                .spawn(move || work(owned, req_rx, out));
            if let Err(e) = spawned {
                tracing::error!("cannot start a sensor thread: {e}; its sensors are not read");
            }
            requests.push(req_tx);
        }
        Sensing {
            requests,
            worker_of,
            busy_since: vec![None; sensors.len()],
            results,
        }
    }

    /// Asks for a reading of `sensor` unless one is still being taken.
    pub(crate) fn request(&mut self, sensor: usize, now: Instant) {
        if self.busy_since.get(sensor).copied().flatten().is_some() {
            return;
        }
        let Some(worker) = self
            .worker_of
            .get(sensor)
            .and_then(|w| self.requests.get(*w))
        else {
            return;
        };
        if worker.send(sensor).is_ok() {
            self.busy_since[sensor] = Some(now);
        }
    }

    /// Sensors busy for longer than their timeout, reported once each.
    pub(crate) fn overdue(&mut self, sensors: &[config::Sensor], now: Instant) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, since) in self.busy_since.iter_mut().enumerate() {
            if let Some(at) = since {
                if now.duration_since(*at) > sensors[i].timeout {
                    out.push(i);
                    // Still busy, but reported: move the mark far ahead so
                    // it is not reported again before it answers.
                    *at = now + Duration::from_secs(365 * 24 * 3600);
                }
            }
        }
        out
    }

    /// The next finished reading.
    pub(crate) async fn next(&mut self) -> Option<Outcome> {
        let outcome = self.results.recv().await?;
        if let Some(b) = self.busy_since.get_mut(outcome.sensor) {
            *b = None;
        }
        Some(outcome)
    }

    /// The earliest moment a busy sensor becomes overdue.
    pub(crate) fn next_deadline(&self, sensors: &[config::Sensor]) -> Option<Instant> {
        self.busy_since
            .iter()
            .enumerate()
            .filter_map(|(i, at)| at.map(|at| at + sensors[i].timeout))
            .min()
    }
}

fn work(
    mut owned: HashMap<usize, (Box<dyn Sensor>, u32)>,
    requests: std_mpsc::Receiver<usize>,
    out: mpsc::UnboundedSender<Outcome>,
) {
    while let Ok(i) = requests.recv() {
        let Some((sensor, retries)) = owned.get_mut(&i) else {
            continue;
        };
        let mut result = sensor.read();
        for _ in 0..*retries {
            if result.is_ok() {
                break;
            }
            std::thread::sleep(RETRY_PAUSE);
            result = sensor.read();
        }
        if out.send(Outcome { sensor: i, result }).is_err() {
            return;
        }
    }
}

/// Which readings are worth publishing: all of them, or with
/// `change_threshold` only those that moved enough, plus one every
/// `report_every` as a heartbeat. Pure, with times passed in.
#[derive(Debug, Default)]
pub(crate) struct Reporting {
    last: HashMap<(usize, Option<String>), (f64, Instant)>,
}

impl Reporting {
    pub(crate) fn worth_it(
        &mut self,
        sensor: usize,
        config: &config::Sensor,
        m: &Measurement,
        now: Instant,
    ) -> bool {
        let key = (sensor, m.name.clone());
        let publish = match (self.last.get(&key), config.change_threshold) {
            (None, _) | (_, None) => true,
            (Some((value, at)), Some(threshold)) => {
                (m.value - value).abs() >= threshold
                    || config
                        .report_every
                        .is_some_and(|every| now.duration_since(*at) >= every)
            }
        };
        if publish {
            self.last.insert(key, (m.value, now));
        }
        publish
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SensorKind;

    fn sensor(threshold: Option<f64>, every: Option<u64>) -> config::Sensor {
        config::Sensor {
            name: "t".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retries: 0,
            change_threshold: threshold,
            report_every: every.map(Duration::from_secs),
            kind: SensorKind::Sim {
                start: 0.0,
                step: 1.0,
                unit: String::new(),
            },
        }
    }

    #[test]
    fn only_meaningful_changes_and_a_heartbeat_are_published() {
        let c = sensor(Some(0.5), Some(60));
        let mut r = Reporting::default();
        let t0 = Instant::now();
        let m = |v| Measurement::single(v, "°C");
        assert!(r.worth_it(0, &c, &m(20.0), t0), "the first reading");
        assert!(!r.worth_it(0, &c, &m(20.3), t0 + Duration::from_secs(1)));
        assert!(r.worth_it(0, &c, &m(20.6), t0 + Duration::from_secs(2)));
        assert!(!r.worth_it(0, &c, &m(20.6), t0 + Duration::from_secs(30)));
        assert!(
            r.worth_it(0, &c, &m(20.6), t0 + Duration::from_secs(63)),
            "heartbeat"
        );
    }

    #[test]
    fn without_a_threshold_every_reading_is_published() {
        let c = sensor(None, None);
        let mut r = Reporting::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(r.worth_it(0, &c, &Measurement::single(1.0, ""), t0));
        }
    }

    #[tokio::test]
    async fn a_hung_read_is_reported_overdue_once_and_the_others_go_on() {
        let dir = tempfile::tempdir().unwrap();
        // Reading a FIFO nobody writes blocks forever, like a stuck device.
        let fifo = dir.path().join("stuck");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let mut configs = vec![sensor(None, None), sensor(None, None)];
        configs[1].kind = SensorKind::File {
            path: fifo.clone(),
            regex: None,
            scale: 1.0,
            offset: 0.0,
            unit: String::new(),
        };
        configs[1].timeout = Duration::from_millis(50);
        let mut s = Sensing::start(&configs);
        let t0 = Instant::now();
        s.request(1, t0);
        s.request(0, t0);
        let o = s.next().await.unwrap();
        assert_eq!(o.sensor, 0);
        assert!(
            s.overdue(&configs, t0 + Duration::from_millis(10))
                .is_empty()
        );
        assert_eq!(s.overdue(&configs, t0 + Duration::from_millis(60)), [1]);
        assert!(
            s.overdue(&configs, t0 + Duration::from_secs(5)).is_empty(),
            "reported once"
        );
        // Still busy: not asked again, while the other sensor keeps reading.
        s.request(1, t0 + Duration::from_secs(5));
        s.request(0, t0 + Duration::from_secs(5));
        assert_eq!(s.next().await.unwrap().sensor, 0);
        // Unblock the worker so the test ends cleanly.
        std::fs::write(&fifo, "1\n").unwrap();
        assert_eq!(s.next().await.unwrap().sensor, 1);
    }

    #[tokio::test]
    async fn a_failing_sensor_does_not_hold_up_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut configs = vec![sensor(None, None), sensor(None, None)];
        configs[1].kind = SensorKind::File {
            path: dir.path().join("missing"),
            regex: None,
            scale: 1.0,
            offset: 0.0,
            unit: String::new(),
        };
        configs[1].retries = 2;
        let mut s = Sensing::start(&configs);
        let now = Instant::now();
        s.request(0, now);
        s.request(1, now);
        let mut seen = HashMap::new();
        for _ in 0..2 {
            let o = s.next().await.unwrap();
            seen.insert(o.sensor, o.result);
        }
        assert!(seen[&0].is_ok());
        assert!(matches!(seen[&1], Err(SensorError::Missing { .. })));
    }
}
