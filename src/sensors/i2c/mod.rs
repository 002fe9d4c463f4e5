//! I2C chips on embedded-hal 1.0: through driver crates for BME280/BMP280
//! (`bme280`), ADS1115 (`ads1x1x`), SHT3x (`embedded-sht3x`) and SCD4x
//! (`scd4x`, in `scd4x`), and from the datasheet where the crate would not
//! do for BH1750 and INA219 (`bh1750`, `ina219` say why). On a Pi the bus
//! is rppal's `I2c` as `crate::i2c_bus` mends it (a register read in one
//! transfer, a chip that does not answer told apart); tests use
//! `embedded-hal-mock`.
//!
//! rppal's `I2c` is `Send` but not `Sync`, so each bus has one owner: the
//! chips on a bus share it through a mutex and are read from one worker
//! thread. Drivers are made per read from `&mut bus` (a reset, calibration
//! or configuration costs a few milliseconds, nothing at these intervals),
//! so a chip that was unplugged and plugged back simply works again. The
//! bus is opened at the first read: off a Pi the sensor reports why in its
//! error state rather than stopping pinpost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ads1x1x::{Ads1x1x, FullScaleRange, TargetAddr, channel};
use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use crate::config::{self, LightResolution, SensorKind};
use crate::i2c_bus::PiBus;

use super::{Measurement, Sensor, SensorError};

mod bh1750;
mod ina219;
mod scd4x;

/// A sensor configured on a bus that was never opened: placeholder until
/// [`open_bus`] replaces it (kept for `open`'s exhaustive match).
pub(crate) struct Unopened;

impl Sensor for Unopened {
    fn read(&mut self) -> Result<Vec<Measurement>, SensorError> {
        Err(SensorError::Device(
            "this I2C sensor's bus was not opened".into(),
        ))
    }
}

/// An I2C bus opened on first use.
pub(crate) enum Bus<B> {
    Closed(u8),
    Open(B),
    Failed(u8, String),
}

/// The chips of every configured sensor on `bus`, sharing it.
pub(crate) fn open_bus(bus: u8, sensors: &[&config::Sensor]) -> Vec<Box<dyn Sensor>> {
    let shared = Arc::new(Mutex::new(Bus::<PiBus>::Closed(bus)));
    sensors
        .iter()
        .map(|s| Box::new(Chip::new(&s.kind, shared.clone(), PiBus::open)) as Box<dyn Sensor>)
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Model {
    Bme280,
    Bmp280,
    Ads1115 { channels: Vec<u8>, gain: f64 },
    Sht3x,
    Bh1750(LightResolution),
    Ina219 { shunt_ohms: f64, max_current: f64 },
    Scd4x(scd4x::Measuring),
}

pub(crate) struct Chip<B> {
    model: Model,
    /// Its bus's number, for words (`/dev/i2c-1`).
    bus_number: u8,
    address: u8,
    bus: Arc<Mutex<Bus<B>>>,
    opener: fn(u8) -> Result<B, String>,
}

impl<B: I2c + Send> Chip<B> {
    pub(crate) fn new(
        kind: &SensorKind,
        bus: Arc<Mutex<Bus<B>>>,
        opener: fn(u8) -> Result<B, String>,
    ) -> Chip<B> {
        let (model, address) = match kind {
            SensorKind::Bme280 { address, .. } => (Model::Bme280, *address),
            SensorKind::Bmp280 { address, .. } => (Model::Bmp280, *address),
            SensorKind::Sht3x { address, .. } => (Model::Sht3x, *address),
            SensorKind::Ads1115 {
                address,
                channels,
                gain,
                ..
            } => (
                Model::Ads1115 {
                    channels: channels.clone(),
                    gain: *gain,
                },
                *address,
            ),
            SensorKind::Bh1750 {
                address,
                resolution,
                ..
            } => (Model::Bh1750(*resolution), *address),
            SensorKind::Ina219 {
                address,
                shunt_ohms,
                max_current,
                ..
            } => (
                Model::Ina219 {
                    shunt_ohms: *shunt_ohms,
                    max_current: *max_current,
                },
                *address,
            ),
            SensorKind::Scd4x { address, .. } => {
                (Model::Scd4x(scd4x::Measuring::default()), *address)
            }
            // Not an I2C kind: `open` never sends one here.
            _ => (Model::Sht3x, 0),
        };
        Chip {
            model,
            bus_number: kind.i2c_bus().unwrap_or(0),
            address,
            bus,
            opener,
        }
    }
}

impl<B: I2c + Send> Sensor for Chip<B> {
    fn read(&mut self) -> Result<Vec<Measurement>, SensorError> {
        let mut guard = self.bus.lock().unwrap_or_else(PoisonError::into_inner);
        if let Bus::Closed(n) | Bus::Failed(n, _) = &*guard {
            let n = *n;
            *guard = match (self.opener)(n) {
                Ok(b) => Bus::Open(b),
                Err(why) => Bus::Failed(n, why),
            };
        }
        let i2c = match &mut *guard {
            Bus::Open(b) => b,
            Bus::Failed(_, why) => return Err(SensorError::Device(why.clone())),
            Bus::Closed(_) => return Err(SensorError::Device("the I2C bus is closed".into())),
        };
        let mut delay = Sleep;
        let at = At {
            bus: self.bus_number,
            address: self.address,
        };
        match &mut self.model {
            Model::Bme280 => read_bme280(i2c, at, false, &mut delay),
            Model::Bmp280 => read_bme280(i2c, at, true, &mut delay),
            Model::Ads1115 { channels, gain } => read_ads1115(i2c, at, channels, *gain, &mut delay),
            Model::Sht3x => read_sht3x(i2c, at, &mut delay),
            Model::Bh1750(resolution) => bh1750::read_bh1750(i2c, at, *resolution, &mut delay),
            Model::Ina219 {
                shunt_ohms,
                max_current,
            } => ina219::read_ina219(i2c, at, *shunt_ohms, *max_current, &mut delay),
            Model::Scd4x(measuring) => scd4x::read_scd4x(i2c, at, measuring, &mut delay),
        }
    }
}

/// Where a chip is: its bus and address, said together ("0x76 on
/// /dev/i2c-1"), since a Pi with two buses (or an overlay's third) can have
/// the same address on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct At {
    pub(crate) bus: u8,
    pub(crate) address: u8,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:02x} on /dev/i2c-{}", self.address, self.bus)
    }
}

/// `DelayNs` by sleeping the thread: reads run on a worker thread.
pub(crate) struct Sleep;

impl DelayNs for Sleep {
    fn delay_ns(&mut self, ns: u32) {
        std::thread::sleep(Duration::from_nanos(u64::from(ns)));
    }
}

/// A driver's error in words. The drivers' error types are only `Debug`
/// (and wrap the bus's error), so the usual causes are recognised in that
/// text and said plainly; anything else is quoted after "the driver said".
fn chip_error(chip: &str, at: At, e: impl std::fmt::Debug) -> SensorError {
    let detail = format!("{e:?}");
    let words = if detail.contains("NoAcknowledge")
        || detail.contains("Remote I/O")
        || detail.contains("code: 121")
    {
        format!(
            "nothing answers at that address (check the wiring, the address and \
             `i2cdetect -y {}`)",
            at.bus
        )
    } else if detail.contains("code: 110") || detail.contains("TimedOut") {
        "the bus timed out (a chip holding SDA low, or a missing pull-up)".to_string()
    } else if detail == "Crc" || detail == "BadCrc" {
        "its data failed the CRC check (noise on the bus: long wires, or a weak pull-up)"
            .to_string()
    } else if detail.contains("UnsupportedChip") {
        format!("the chip there does not say it is a {chip} (check the address and the kind)")
    } else if detail.contains("InvalidData") || detail.contains("NoCalibrationData") {
        "its calibration data reads as invalid (a loose connection, or another chip at that \
         address)"
            .to_string()
    } else {
        format!("the driver said {detail}")
    };
    SensorError::Device(format!("{chip} at {at}: {words}"))
}

const BME280_ID: u8 = 0x60;
const BMP280_ID: u8 = 0x58;

fn read_bme280<I: I2c>(
    i2c: &mut I,
    at: At,
    bmp: bool,
    delay: &mut impl DelayNs,
) -> Result<Vec<Measurement>, SensorError> {
    let address = at.address;
    let chip = if bmp { "BMP280" } else { "BME280" };
    // The driver accepts both chips without saying which it found, and
    // reads humidity registers a BMP280 does not have.
    let mut id = [0u8];
    i2c.write_read(address, &[0xD0], &mut id)
        .map_err(|e| chip_error(chip, at, e))?;
    match (id[0], bmp) {
        (BME280_ID, false) | (BMP280_ID, true) => {}
        (BMP280_ID, false) => {
            return Err(SensorError::Device(format!(
                "the chip at {at} is a BMP280 (no humidity); set kind = \"bmp280\""
            )));
        }
        (BME280_ID, true) => {
            return Err(SensorError::Device(format!(
                "the chip at {at} is a BME280; set kind = \"bme280\" to get humidity too"
            )));
        }
        (other, _) => {
            return Err(SensorError::Device(format!(
                "the chip at {at} has id 0x{other:02x}, not a BME280 (0x60) or BMP280 (0x58)"
            )));
        }
    }
    use bme280::{Configuration, IIRFilter, Oversampling};
    // ×1 oversampling: a conversion takes ~10 ms, well inside the driver's
    // fixed 40 ms wait (its default ×16 pressure can exceed it).
    let config = Configuration::default()
        .with_temperature_oversampling(Oversampling::Oversampling1X)
        .with_pressure_oversampling(Oversampling::Oversampling1X)
        .with_humidity_oversampling(Oversampling::Oversampling1X)
        .with_iir_filter(IIRFilter::Off);
    let mut driver = bme280::i2c::BME280::new(&mut *i2c, address);
    driver
        .init_with_config(delay, config)
        .map_err(|e| chip_error(chip, at, e))?;
    let m = driver.measure(delay).map_err(|e| chip_error(chip, at, e))?;
    let mut out = vec![
        Measurement::named("temperature", f64::from(m.temperature), "°C"),
        Measurement::named("pressure", f64::from(m.pressure) / 100.0, "hPa"),
    ];
    if !bmp {
        out.push(Measurement::named("humidity", f64::from(m.humidity), "%"));
    }
    Ok(out)
}

fn range(gain: f64) -> FullScaleRange {
    match gain {
        g if g >= 6.0 => FullScaleRange::Within6_144V,
        g if g >= 4.0 => FullScaleRange::Within4_096V,
        g if g >= 2.0 => FullScaleRange::Within2_048V,
        g if g >= 1.0 => FullScaleRange::Within1_024V,
        g if g >= 0.5 => FullScaleRange::Within0_512V,
        _ => FullScaleRange::Within0_256V,
    }
}

/// Polls while the conversion runs (~8 ms at 128 samples/s).
const ADS_POLLS: u32 = 100;

fn read_ads1115<I: I2c>(
    i2c: &mut I,
    at: At,
    channels: &[u8],
    gain: f64,
    delay: &mut impl DelayNs,
) -> Result<Vec<Measurement>, SensorError> {
    let address = at.address;
    let target = match address {
        0x49 => TargetAddr::Vdd,
        0x4a => TargetAddr::Sda,
        0x4b => TargetAddr::Scl,
        _ => TargetAddr::Gnd,
    };
    let mut adc = Ads1x1x::new_ads1115(&mut *i2c, target);
    adc.set_full_scale_range(range(gain))
        .map_err(|e| chip_error("ADS1115", at, e))?;
    let mut out = Vec::with_capacity(channels.len());
    for &ch in channels {
        let mut polls = 0;
        let raw = loop {
            let result = match ch {
                0 => adc.read(channel::SingleA0),
                1 => adc.read(channel::SingleA1),
                2 => adc.read(channel::SingleA2),
                _ => adc.read(channel::SingleA3),
            };
            match result {
                Ok(raw) => break raw,
                Err(nb::Error::WouldBlock) if polls < ADS_POLLS => {
                    polls += 1;
                    delay.delay_us(500);
                }
                Err(nb::Error::WouldBlock) => {
                    return Err(SensorError::Device(format!(
                        "ADS1115 at {at}: channel {ch} never finished converting"
                    )));
                }
                Err(nb::Error::Other(e)) => return Err(chip_error("ADS1115", at, e)),
            }
        };
        let volts = f64::from(raw) * gain / 32768.0;
        out.push(Measurement::named(&format!("a{ch}"), volts, "V"));
    }
    Ok(out)
}

fn read_sht3x<I: I2c>(
    i2c: &mut I,
    at: At,
    delay: &mut impl DelayNs,
) -> Result<Vec<Measurement>, SensorError> {
    let address = at.address;
    let mut sht = embedded_sht3x::Sht3x::new(&mut *i2c, address, &mut *delay)
        .map_err(|e| chip_error("SHT3x", at, e))?;
    sht.repeatability = embedded_sht3x::Repeatability::High;
    let m = sht
        .single_measurement()
        .map_err(|e| chip_error("SHT3x", at, e))?;
    Ok(vec![
        Measurement::named("temperature", f64::from(m.temperature.0), "°C"),
        Measurement::named("humidity", f64::from(m.relative_humidity.value()), "%"),
    ])
}

/// Groups I2C sensors by bus, keeping their indexes.
pub(crate) fn by_bus(sensors: &[config::Sensor]) -> HashMap<u8, Vec<usize>> {
    let mut map: HashMap<u8, Vec<usize>> = HashMap::new();
    for (i, s) in sensors.iter().enumerate() {
        if let Some(bus) = s.kind.i2c_bus() {
            map.entry(bus).or_default().push(i);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    //! The bytes a real chip exchanges, as the drivers send them (rppal
    //! turns each write_read into write + read on the wire; the chips
    //! accept both).
    use super::*;
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

    fn bus1(address: u8) -> At {
        At { bus: 1, address }
    }

    /// Bosch's worked example (BMP280 datasheet) for T and P, humidity
    /// calibration from a real BME280.
    const CALIB_TP: [u8; 26] = [
        0x70, 0x6B, 0x43, 0x67, 0x18, 0xFC, 0x7D, 0x8E, 0x43, 0xD6, 0xD0, 0x0B, 0x27, 0x0B, 0x8C,
        0x00, 0xF9, 0xFF, 0x8C, 0x3C, 0xF8, 0xC6, 0x70, 0x17, 0x00, 0x4B,
    ];
    const CALIB_H: [u8; 7] = [0x77, 0x01, 0x00, 0x12, 0x20, 0x03, 0x1E];
    /// adc_P = 415148, adc_T = 519888, adc_H = 27000.
    const DATA: [u8; 8] = [0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x69, 0x78];

    fn bme_exchange(addr: u8, id: u8) -> Vec<T> {
        vec![
            // pinpost's own chip-id check, then the driver's init...
            T::write_read(addr, vec![0xD0], vec![id]),
            T::write_read(addr, vec![0xD0], vec![id]),
            T::write(addr, vec![0xE0, 0xB6]),
            T::write_read(addr, vec![0x88], CALIB_TP.to_vec()),
            T::write_read(addr, vec![0xE1], CALIB_H.to_vec()),
            T::write_read(addr, vec![0xF4], vec![0x00]),
            T::write(addr, vec![0xF2, 0x01]),
            T::write_read(addr, vec![0xF4], vec![0x00]),
            T::write(addr, vec![0xF4, 0x24]),
            T::write_read(addr, vec![0xF5], vec![0x00]),
            T::write(addr, vec![0xF5, 0x00]),
            // ...and one forced measurement.
            T::write_read(addr, vec![0xF4], vec![0x24]),
            T::write_read(addr, vec![0xF4], vec![0x24]),
            T::write(addr, vec![0xF4, 0x25]),
            T::write_read(addr, vec![0xF7], DATA.to_vec()),
        ]
    }

    /// The value of the measurement called `name`.
    pub(super) fn value(m: &[Measurement], name: &str) -> f64 {
        m.iter()
            .find(|x| x.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in {m:?}"))
            .value
    }

    #[test]
    fn a_bme280_gives_temperature_pressure_and_humidity() {
        let mut i2c = Mock::new(&bme_exchange(0x76, 0x60));
        let m = read_bme280(&mut i2c.clone(), bus1(0x76), false, &mut NoopDelay::new()).unwrap();
        assert!((value(&m, "temperature") - 25.08).abs() < 0.01);
        assert!((value(&m, "pressure") - 1006.53).abs() < 0.01, "hPa");
        assert!((value(&m, "humidity") - 48.889).abs() < 0.05);
        i2c.done();
    }

    #[test]
    fn a_bmp280_has_no_humidity() {
        let mut i2c = Mock::new(&bme_exchange(0x77, 0x58));
        let m = read_bme280(&mut i2c.clone(), bus1(0x77), true, &mut NoopDelay::new()).unwrap();
        assert_eq!(m.len(), 2);
        assert!((value(&m, "temperature") - 25.08).abs() < 0.01);
        i2c.done();
    }

    #[test]
    fn the_wrong_chip_kind_says_which_to_configure() {
        let mut i2c = Mock::new(&[T::write_read(0x76, vec![0xD0], vec![0x58])]);
        let e =
            read_bme280(&mut i2c.clone(), bus1(0x76), false, &mut NoopDelay::new()).unwrap_err();
        assert!(e.to_string().contains("set kind = \"bmp280\""), "{e}");
        i2c.done();
    }

    #[test]
    fn an_ads1115_reads_volts_on_each_channel() {
        let a = 0x48;
        let mut i2c = Mock::new(&[
            T::write(a, vec![0x01, 0x83, 0x83]),            // ±4.096 V
            T::write_read(a, vec![0x01], vec![0x83, 0x83]), // idle
            T::write(a, vec![0x01, 0xC3, 0x83]),            // convert AIN0
            T::write_read(a, vec![0x01], vec![0x43, 0x83]), // busy
            T::write_read(a, vec![0x01], vec![0xC3, 0x83]), // done
            T::write_read(a, vec![0x00], vec![0x40, 0x00]), // 16384
            T::write_read(a, vec![0x01], vec![0xC3, 0x83]), // idle
            T::write(a, vec![0x01, 0xF3, 0x83]),            // convert AIN3
            T::write_read(a, vec![0x01], vec![0xF3, 0x83]), // done
            T::write_read(a, vec![0x00], vec![0xE0, 0x00]), // -8192
        ]);
        let m = read_ads1115(
            &mut i2c.clone(),
            bus1(a),
            &[0, 3],
            4.096,
            &mut NoopDelay::new(),
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        assert!((value(&m, "a0") - 2.048).abs() < 1e-9);
        assert!((value(&m, "a3") + 1.024).abs() < 1e-9);
        assert_eq!(m[0].unit, "V");
        i2c.done();
    }

    /// Sensirion's CRC-8 (polynomial 0x31, start 0xFF), as the chips send it.
    pub(super) fn crc8(data: &[u8]) -> u8 {
        let mut crc = 0xFFu8;
        for &b in data {
            crc ^= b;
            for _ in 0..8 {
                crc = if crc & 0x80 != 0 {
                    (crc << 1) ^ 0x31
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    fn sht_frame(t: u16, rh: u16) -> Vec<u8> {
        let [t0, t1] = t.to_be_bytes();
        let [h0, h1] = rh.to_be_bytes();
        vec![t0, t1, crc8(&[t0, t1]), h0, h1, crc8(&[h0, h1])]
    }

    fn sht_exchange(frame: Vec<u8>) -> Vec<T> {
        vec![
            T::write(0x44, vec![0x30, 0xA2]), // soft reset
            T::transaction_start(0x44),
            T::write(0x44, vec![0x2C, 0x06]), // single shot, high repeatability
            T::read(0x44, frame),
            T::transaction_end(0x44),
        ]
    }

    #[test]
    fn an_sht3x_gives_temperature_and_humidity() {
        assert_eq!(crc8(&[0xBE, 0xEF]), 0x92, "the datasheet's CRC example");
        let mut i2c = Mock::new(&sht_exchange(sht_frame(0x6666, 0x8000)));
        let m = read_sht3x(&mut i2c.clone(), bus1(0x44), &mut NoopDelay::new()).unwrap();
        assert!((value(&m, "temperature") - 25.0).abs() < 0.01);
        assert!((value(&m, "humidity") - 50.0).abs() < 0.01);
        i2c.done();
    }

    #[test]
    fn an_sht3x_with_a_bad_crc_is_an_error_not_a_value() {
        let mut frame = sht_frame(0x6666, 0x8000);
        frame[2] ^= 0xFF;
        let mut i2c = Mock::new(&sht_exchange(frame));
        let e = read_sht3x(&mut i2c.clone(), bus1(0x44), &mut NoopDelay::new()).unwrap_err();
        assert!(e.to_string().contains("SHT3x at 0x44"), "{e}");
        i2c.done();
    }

    #[test]
    fn a_chip_that_does_not_answer_is_said_with_its_bus_and_address_in_words() {
        let nack = std::io::Error::from_raw_os_error(121);
        let e = chip_error("BME280", bus1(0x77), rppal::i2c::Error::Io(nack)).to_string();
        assert!(
            e.starts_with("BME280 at 0x77 on /dev/i2c-1: nothing answers at that address"),
            "{e}"
        );
        assert!(
            !e.contains("Os {") && !e.contains("Io("),
            "no debug text: {e}"
        );
        let e = chip_error("BME280", bus1(0x76), "UnsupportedChip");
        assert!(e.to_string().contains("does not say it is a BME280"), "{e}");
    }

    #[test]
    fn a_bus_that_cannot_open_is_the_sensors_error_state() {
        let bus = Arc::new(Mutex::new(Bus::<Mock>::Closed(1)));
        let mut chip = Chip::new(
            &SensorKind::Sht3x {
                bus: 1,
                address: 0x44,
            },
            bus,
            |n| Err(format!("cannot open /dev/i2c-{n}: no such file")),
        );
        let e = chip.read().unwrap_err();
        assert!(e.to_string().contains("/dev/i2c-1"), "{e}");
    }
}
