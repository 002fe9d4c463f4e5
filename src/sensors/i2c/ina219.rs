//! TI INA219 (current, voltage, power), from its datasheet: one triggered
//! conversion per read, and the current worked out here from the shunt
//! voltage. Ours rather than the `ina219` crate (0.2.1): that driver resets
//! and re-checks the chip each time one is made (we make one per read, so
//! a replugged chip works again), and its current comes through the chip's
//! integer calibration, quantised to an LSB we would have to choose, where
//! the shunt register divided by `shunt_ohms` is the same current without
//! that step. Six registers, no delays beyond a bounded poll.
//!
//! It knows the chip's registers only; the bus, its owner and the words of
//! bus errors are `i2c`'s.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use super::{At, Measurement, SensorError, chip_error};

const CONFIG: u8 = 0x00;
const SHUNT: u8 = 0x01;
const BUS: u8 = 0x02;

/// The shunt ranges (PGA ÷1 to ÷8), in volts, by their bits.
const RANGES: [f64; 4] = [0.04, 0.08, 0.16, 0.32];
/// 32 V bus range; 12-bit conversions averaged over 8 samples (4.26 ms
/// each, so a load's ripple is smoothed) for both voltages; one triggered
/// conversion of shunt and bus.
const BUS_32V: u16 = 1 << 13;
const ADC_12BIT_8_SAMPLES: u16 = 0b1011;
const TRIGGERED_SHUNT_AND_BUS: u16 = 0b011;
/// Conversion ready, in the bus voltage register.
const CNVR: u16 = 1 << 1;
/// Polls, 1 ms apart, for the conversion (about 8.5 ms): twice that.
const POLLS: u32 = 20;
/// The shunt register counts 10 µV; the bus register 4 mV above 3 bits.
const SHUNT_VOLTS_PER_COUNT: f64 = 10e-6;
const BUS_VOLTS_PER_COUNT: f64 = 4e-3;

/// The smallest shunt range that holds `max_current` through `shunt_ohms`
/// (the finest steps), as its PGA bits and its full scale in volts.
fn range(shunt_ohms: f64, max_current: f64) -> (u16, f64) {
    let needed = shunt_ohms * max_current;
    let bits = RANGES
        .iter()
        .position(|full| needed <= *full + 1e-12)
        .unwrap_or(RANGES.len() - 1);
    (bits as u16, RANGES[bits])
}

fn config_word(pga: u16) -> u16 {
    BUS_32V
        | pga << 11
        | ADC_12BIT_8_SAMPLES << 7
        | ADC_12BIT_8_SAMPLES << 3
        | TRIGGERED_SHUNT_AND_BUS
}

fn register<I: I2c>(i2c: &mut I, at: At, register: u8) -> Result<u16, SensorError> {
    let mut word = [0u8; 2];
    i2c.write_read(at.address, &[register], &mut word)
        .map_err(|e| chip_error("INA219", at, e))?;
    Ok(u16::from_be_bytes(word))
}

/// One triggered conversion: the bus voltage, the current, the power and
/// the shunt voltage.
pub(super) fn read_ina219<I: I2c>(
    i2c: &mut I,
    at: At,
    shunt_ohms: f64,
    max_current: f64,
    delay: &mut impl DelayNs,
) -> Result<Vec<Measurement>, SensorError> {
    let (pga, full_scale) = range(shunt_ohms, max_current);
    let config = config_word(pga);
    let [high, low] = config.to_be_bytes();
    // Writing the configuration starts the conversion (triggered mode).
    i2c.write(at.address, &[CONFIG, high, low])
        .map_err(|e| chip_error("INA219", at, e))?;
    // The chip has no id; one that does not keep the word is not an INA219.
    let kept = register(i2c, at, CONFIG)?;
    if kept != config {
        return Err(SensorError::Device(format!(
            "INA219 at {at}: the chip there did not keep an INA219's configuration (wrote \
             0x{config:04x}, read 0x{kept:04x}); check the address and the kind"
        )));
    }
    let mut polls = 0;
    let bus = loop {
        let bus = register(i2c, at, BUS)?;
        if bus & CNVR != 0 {
            break bus;
        }
        if polls == POLLS {
            return Err(SensorError::Device(format!(
                "INA219 at {at}: its conversion did not finish within {POLLS} ms"
            )));
        }
        polls += 1;
        delay.delay_ms(1);
    };
    let shunt_count = register(i2c, at, SHUNT)? as i16;
    let shunt_volts = f64::from(shunt_count) * SHUNT_VOLTS_PER_COUNT;
    // At the end of its range the chip holds the largest count: the real
    // current is more than that, so the number would lie.
    if shunt_volts.abs() >= full_scale - SHUNT_VOLTS_PER_COUNT / 2.0 {
        return Err(SensorError::Device(format!(
            "INA219 at {at}: the shunt voltage is at the end of its ±{:.0} mV range, so the \
             current is more than it can say; raise max_current (at most {:.3} A with \
             shunt_ohms = {shunt_ohms})",
            full_scale * 1000.0,
            RANGES[3] / shunt_ohms,
        )));
    }
    let volts = f64::from(bus >> 3) * BUS_VOLTS_PER_COUNT;
    let amps = shunt_volts / shunt_ohms;
    Ok(vec![
        Measurement::named("voltage", volts, "V"),
        Measurement::named("current", amps, "A"),
        Measurement::named("power", volts * amps, "W"),
        Measurement::named("shunt_voltage", shunt_volts * 1000.0, "mV"),
    ])
}

#[cfg(test)]
mod tests {
    use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

    use super::super::tests::value;
    use super::*;

    const A: u8 = 0x40;
    /// The configuration at ±320 mV (PGA ÷8), as written and read back.
    const WRITE_320: [u8; 3] = [0x00, 0x3D, 0xDB];

    /// One read through a 0.1 Ω shunt, every transaction of `exchange` used.
    fn read(exchange: &[T], max_current: f64) -> Result<Vec<Measurement>, String> {
        let mut i2c = Mock::new(exchange);
        let at = At { bus: 1, address: A };
        let result = read_ina219(
            &mut i2c.clone(),
            at,
            0.1,
            max_current,
            &mut NoopDelay::new(),
        );
        i2c.done();
        result.map_err(|e| e.to_string())
    }

    /// The configuration written and kept, at ±320 mV.
    fn configured() -> Vec<T> {
        vec![
            T::write(A, WRITE_320.to_vec()),
            T::write_read(A, vec![0x00], WRITE_320[1..].to_vec()),
        ]
    }

    /// ±320 mV (PGA ÷8): 0x3DDB; ±40 mV (÷1): 0x25DB.
    #[test]
    fn the_range_is_the_finest_that_holds_max_current() {
        assert_eq!(config_word(range(0.1, 3.2).0), 0x3DDB);
        assert_eq!(config_word(range(0.1, 0.4).0), 0x25DB);
        assert_eq!(range(0.1, 0.5), (1, 0.08));
        assert_eq!(range(0.01, 10.0), (2, 0.16));
    }

    #[test]
    fn an_ina219_gives_bus_voltage_current_and_power() {
        let mut exchange = configured();
        exchange.extend([
            T::write_read(A, vec![0x02], vec![0x5D, 0xC0]), // converting
            T::write_read(A, vec![0x02], vec![0x5D, 0xC2]), // 12 V, ready
            T::write_read(A, vec![0x01], vec![0x13, 0x88]), // 50 mV
        ]);
        let m = read(&exchange, 3.2).unwrap();
        assert!((value(&m, "voltage") - 12.0).abs() < 1e-9);
        assert!((value(&m, "current") - 0.5).abs() < 1e-9);
        assert!((value(&m, "power") - 6.0).abs() < 1e-9);
        assert!((value(&m, "shunt_voltage") - 50.0).abs() < 1e-9);
        assert_eq!(m[2].unit, "W");
    }

    #[test]
    fn a_current_flowing_back_reads_negative() {
        let mut exchange = configured();
        exchange.extend([
            T::write_read(A, vec![0x02], vec![0x2E, 0xE2]), // 6 V
            T::write_read(A, vec![0x01], vec![0xFC, 0x18]), // -10 mV
        ]);
        let m = read(&exchange, 3.2).unwrap();
        assert!((value(&m, "current") + 0.1).abs() < 1e-9);
        assert!((value(&m, "power") + 0.6).abs() < 1e-9);
    }

    #[test]
    fn a_shunt_at_the_end_of_its_range_is_an_error_not_a_value() {
        let e = read(
            &[
                T::write(A, vec![0x00, 0x25, 0xDB]),
                T::write_read(A, vec![0x00], vec![0x25, 0xDB]),
                T::write_read(A, vec![0x02], vec![0x5D, 0xC2]),
                T::write_read(A, vec![0x01], vec![0x0F, 0xA0]), // 4000: 40 mV
            ],
            0.4,
        )
        .unwrap_err();
        assert!(
            e.contains("end of its ±40 mV range") && e.contains("raise max_current"),
            "{e}"
        );
    }

    #[test]
    fn a_conversion_that_never_finishes_is_bounded() {
        let mut exchange = configured();
        for _ in 0..=POLLS {
            exchange.push(T::write_read(A, vec![0x02], vec![0x5D, 0xC0]));
        }
        let e = read(&exchange, 3.2).unwrap_err();
        assert!(e.contains("did not finish within 20 ms"), "{e}");
    }

    #[test]
    fn another_chip_at_its_address_is_told_apart() {
        let e = read(
            &[
                T::write(A, WRITE_320.to_vec()),
                T::write_read(A, vec![0x00], vec![0x11, 0x00]),
            ],
            3.2,
        )
        .unwrap_err();
        assert!(e.contains("did not keep an INA219's configuration"), "{e}");
    }

    #[test]
    fn an_ina219_that_does_not_answer_is_said_in_words() {
        let e = read(
            &[T::write(A, WRITE_320.to_vec())
                .with_error(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address))],
            3.2,
        )
        .unwrap_err();
        assert!(
            e.starts_with("INA219 at 0x40 on /dev/i2c-1: nothing answers at that address"),
            "{e}"
        );
    }
}
