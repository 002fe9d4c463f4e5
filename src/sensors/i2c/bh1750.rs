//! ROHM BH1750 (light), from its datasheet: one byte of command, a wait,
//! two bytes of count. Ours rather than the `bh1750` crate (0.1.0, its one
//! release): that crate waits 1.2 × the *typical* conversion time (144 ms,
//! 19 ms) where the datasheet gives a *maximum* of 180 ms and 24 ms, so a
//! slow chip's count could be read before it is made. The chip says
//! nothing while it converts, so the wait is the only guard there is.
//!
//! It knows the chip's bytes only; the bus, its owner and the words of bus
//! errors are `i2c`'s.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use crate::config::LightResolution;

use super::{At, Measurement, SensorError, chip_error};

const POWER_ON: u8 = 0x01;

/// The one-time command for a resolution (the chip powers down after it),
/// and the datasheet's longest conversion time for it at the default
/// measurement time (MTreg 69).
fn one_time(resolution: LightResolution) -> (u8, u32) {
    match resolution {
        LightResolution::High => (0x20, 180),
        LightResolution::High2 => (0x21, 180),
        LightResolution::Low => (0x23, 24),
    }
}

/// One reading in lux.
pub(super) fn read_bh1750<I: I2c>(
    i2c: &mut I,
    at: At,
    resolution: LightResolution,
    delay: &mut impl DelayNs,
) -> Result<Vec<Measurement>, SensorError> {
    let address = at.address;
    let (command, wait_ms) = one_time(resolution);
    i2c.write(address, &[POWER_ON])
        .map_err(|e| chip_error("BH1750", at, e))?;
    i2c.write(address, &[command])
        .map_err(|e| chip_error("BH1750", at, e))?;
    delay.delay_ms(wait_ms);
    let mut count = [0u8; 2];
    i2c.read(address, &mut count)
        .map_err(|e| chip_error("BH1750", at, e))?;
    // The datasheet's count is 1.2 per lux; high2 counts half-lux steps.
    let mut lux = f64::from(u16::from_be_bytes(count)) / 1.2;
    if resolution == LightResolution::High2 {
        lux /= 2.0;
    }
    Ok(vec![Measurement::single(lux, "lx")])
}

#[cfg(test)]
mod tests {
    use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
    use embedded_hal_mock::eh1::delay::{CheckedDelay, Transaction as D};
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

    use super::*;

    /// One read at `address`, every transaction and wait given used.
    fn read(
        address: u8,
        resolution: LightResolution,
        exchange: &[T],
        waits_ms: &[u32],
    ) -> Result<Vec<Measurement>, String> {
        let mut i2c = Mock::new(exchange);
        let waits: Vec<D> = waits_ms.iter().map(|ms| D::delay_ms(*ms)).collect();
        let mut delay = CheckedDelay::new(&waits);
        let at = At { bus: 1, address };
        let result = read_bh1750(&mut i2c.clone(), at, resolution, &mut delay);
        i2c.done();
        delay.done();
        result.map_err(|e| e.to_string())
    }

    /// Power on, the one-time `command`, and the count `0xHHLL`.
    fn one_time(address: u8, command: u8, count: [u8; 2]) -> [T; 3] {
        [
            T::write(address, vec![0x01]),
            T::write(address, vec![command]),
            T::read(address, count.to_vec()),
        ]
    }

    #[test]
    fn a_bh1750_waits_the_longest_conversion_and_gives_lux() {
        let m = read(
            0x23,
            LightResolution::High,
            &one_time(0x23, 0x20, [0x01, 0x2C]), // 300 counts
            &[180],
        )
        .unwrap();
        assert_eq!(m, [Measurement::single(250.0, "lx")]);
    }

    #[test]
    fn high2_counts_half_lux_and_low_is_quicker() {
        let high2 = read(
            0x5c,
            LightResolution::High2,
            &one_time(0x5c, 0x21, [0x01, 0x2C]),
            &[180],
        )
        .unwrap();
        assert_eq!(high2[0].value, 125.0);
        let low = read(
            0x5c,
            LightResolution::Low,
            &one_time(0x5c, 0x23, [0x00, 0x0C]),
            &[24],
        )
        .unwrap();
        assert_eq!(low[0].value, 10.0);
    }

    #[test]
    fn a_bh1750_that_does_not_answer_is_said_in_words() {
        let e = read(
            0x23,
            LightResolution::High,
            &[T::write(0x23, vec![0x01])
                .with_error(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address))],
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e,
            "BH1750 at 0x23 on /dev/i2c-1: nothing answers at that address (check the wiring, \
             the address and `i2cdetect -y 1`)"
        );
    }
}
