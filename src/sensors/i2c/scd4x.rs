//! Sensirion SCD40/SCD41 (CO2, temperature, humidity) through the `scd4x`
//! crate, in periodic measurement: started once, then each read takes the
//! measurement the chip made in the last 5 s. Not single shot: an SCD41's
//! `measure_single_shot` holds the bus for 5 s, and every chip on the bus
//! shares one worker thread, so a BME280 beside it would wait that long at
//! each reading. pinpost never stops it, so a chip already measuring (left
//! so by an earlier run, or read by the agent while `pinpost sensors`
//! looks) is read as it is; only one with nothing ready is started, with
//! the stop before it that Sensirion's own examples send (500 ms, once),
//! and that first read says so: its first measurement comes 5 s later.
//!
//! It knows the chip's commands only; the bus, its owner and the words of
//! bus errors are `i2c`'s.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;
use scd4x::Scd4x;

use super::{At, Measurement, SensorError, chip_error};

/// Whether pinpost has started the chip measuring. Kept across reads,
/// though the driver is made per read (its own flag lives in the driver).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Measuring(bool);

/// Polls for a ready measurement, 50 ms apart, before saying there is
/// none: enough for a read that comes a moment before the chip's 5 s tick,
/// short enough that the bus's other chips barely wait.
const READY_POLLS: u32 = 5;
const READY_POLL_MS: u32 = 50;

fn not_ready(at: At, why: &str) -> SensorError {
    SensorError::Device(format!("SCD4x at {at}: no measurement ready yet ({why})"))
}

/// Why a read found no measurement: the chip's own error, or none ready.
enum Missed<E> {
    Chip(scd4x::Error<E>),
    NotReady,
}

impl<E> From<scd4x::Error<E>> for Missed<E> {
    fn from(e: scd4x::Error<E>) -> Self {
        Missed::Chip(e)
    }
}

/// One measurement: CO2 in ppm, temperature and humidity.
pub(super) fn read_scd4x<I: I2c>(
    i2c: &mut I,
    at: At,
    measuring: &mut Measuring,
    delay: &mut impl DelayNs,
) -> Result<Vec<Measurement>, SensorError> {
    if at.address != 0x62 {
        // The crate speaks to 0x62 only, as every SCD4x answers there;
        // config refuses any other, so this is a guard, not a path.
        return Err(SensorError::Device(format!(
            "SCD4x at {at}: an SCD4x answers only at 0x62"
        )));
    }
    if !measuring.0 {
        if let Ok(m) = take(i2c, delay) {
            measuring.0 = true;
            return Ok(m);
        }
        // Idle, or not answering: the start below says which.
        let mut chip = Scd4x::new(&mut *i2c, &mut *delay);
        chip.stop_periodic_measurement()
            .and_then(|()| chip.start_periodic_measurement())
            .map_err(|e| chip_error("SCD4x", at, e))?;
        measuring.0 = true;
        return Err(not_ready(
            at,
            "pinpost has just started it measuring: its first comes 5 s later",
        ));
    }
    match take(i2c, delay) {
        Ok(m) => Ok(m),
        Err(Missed::NotReady) => Err(not_ready(
            at,
            "it makes one every 5 s, but none came since the last read and 250 ms more",
        )),
        Err(Missed::Chip(e)) => {
            // Unplugged and back, it wakes up idle: start it again next time.
            if matches!(e, scd4x::Error::I2c(_)) {
                measuring.0 = false;
            }
            Err(chip_error("SCD4x", at, e))
        }
    }
}

/// The measurement, once the chip says one is ready. A driver is made per
/// command: it borrows the delay, which the polls between need too.
fn take<I: I2c, D: DelayNs>(
    i2c: &mut I,
    delay: &mut D,
) -> Result<Vec<Measurement>, Missed<I::Error>> {
    let mut polls = 0;
    while !Scd4x::new(&mut *i2c, &mut *delay).data_ready_status()? {
        if polls == READY_POLLS {
            return Err(Missed::NotReady);
        }
        polls += 1;
        delay.delay_ms(READY_POLL_MS);
    }
    let m = Scd4x::new(&mut *i2c, &mut *delay).measurement()?;
    Ok(vec![
        Measurement::named("co2", f64::from(m.co2), "ppm"),
        Measurement::named("temperature", f64::from(m.temperature), "°C"),
        Measurement::named("humidity", f64::from(m.humidity), "%"),
    ])
}

#[cfg(test)]
mod tests {
    use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

    use super::super::tests::crc8;
    use super::*;

    const A: u8 = 0x62;
    const READY: [u8; 2] = [0xE4, 0xB8];
    const READ: [u8; 2] = [0xEC, 0x05];

    /// Words as the chip sends them, each followed by its CRC.
    fn words(list: &[u16]) -> Vec<u8> {
        list.iter()
            .flat_map(|w| {
                let [a, b] = w.to_be_bytes();
                [a, b, crc8(&[a, b])]
            })
            .collect()
    }

    /// One read, every transaction of `exchange` used.
    fn read(exchange: &[T], measuring: &mut Measuring) -> Result<Vec<Measurement>, String> {
        let mut i2c = Mock::new(exchange);
        let at = At { bus: 1, address: A };
        let result = read_scd4x(&mut i2c.clone(), at, measuring, &mut NoopDelay::new());
        i2c.done();
        result.map_err(|e| e.to_string())
    }

    /// Ready, then the measurement's three words as `frame`.
    fn ready_then(frame: Vec<u8>) -> [T; 4] {
        [
            T::write(A, READY.to_vec()),
            T::read(A, words(&[0x8006])),
            T::write(A, READ.to_vec()),
            T::read(A, frame),
        ]
    }

    fn nothing_ready() -> Vec<T> {
        let mut exchange = vec![];
        for _ in 0..=READY_POLLS {
            exchange.push(T::write(A, READY.to_vec()));
            exchange.push(T::read(A, words(&[0x8000])));
        }
        exchange
    }

    fn running() -> Measuring {
        Measuring(true)
    }

    #[test]
    fn a_first_read_with_nothing_ready_starts_it_measuring_and_says_so() {
        let mut exchange = nothing_ready();
        exchange.push(T::write(A, vec![0x3F, 0x86])); // stop: back to idle
        exchange.push(T::write(A, vec![0x21, 0xB1])); // start periodic measurement
        let mut measuring = Measuring::default();
        let e = read(&exchange, &mut measuring).unwrap_err();
        assert!(e.contains("pinpost has just started it measuring"), "{e}");
        assert_eq!(measuring, running());
    }

    #[test]
    fn a_chip_left_measuring_is_read_without_starting_it_again() {
        let mut measuring = Measuring::default();
        let m = read(&ready_then(words(&[812, 0x6667, 0x8000])), &mut measuring).unwrap();
        assert_eq!(m[0].value, 812.0);
        assert_eq!(measuring, running());
    }

    #[test]
    fn a_ready_measurement_gives_co2_temperature_and_humidity() {
        let m = read(&ready_then(words(&[500, 0x6667, 0x8000])), &mut running()).unwrap();
        assert_eq!(m[0], Measurement::named("co2", 500.0, "ppm"));
        assert!((m[1].value - 25.0).abs() < 0.01, "{m:?}");
        assert!((m[2].value - 50.0).abs() < 0.01, "{m:?}");
        assert_eq!((m[1].unit.as_str(), m[2].unit.as_str()), ("°C", "%"));
    }

    #[test]
    fn a_measurement_not_ready_is_waited_for_a_moment_then_said() {
        let mut measuring = running();
        let e = read(&nothing_ready(), &mut measuring).unwrap_err();
        assert!(e.contains("no measurement ready yet"), "{e}");
        assert_eq!(measuring, running(), "still measuring: not started again");
    }

    #[test]
    fn a_bad_crc_is_an_error_in_words_not_a_value() {
        let mut frame = words(&[500, 0x6667, 0x8000]);
        frame[5] ^= 0xFF;
        let e = read(&ready_then(frame), &mut running()).unwrap_err();
        assert!(
            e.starts_with("SCD4x at 0x62 on /dev/i2c-1: its data failed the CRC check"),
            "{e}"
        );
    }

    #[test]
    fn a_chip_that_stops_answering_is_started_again_next_time() {
        let mut measuring = running();
        let e = read(
            &[T::write(A, READY.to_vec())
                .with_error(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address))],
            &mut measuring,
        )
        .unwrap_err();
        assert!(
            e.starts_with("SCD4x at 0x62 on /dev/i2c-1: nothing answers at that address"),
            "{e}"
        );
        assert_eq!(measuring, Measuring::default());
    }
}
