//! `pinpost sensors --scan`: what is wired, found without a config. The
//! 1-Wire devices the kernel lists (with a first reading for thermometers),
//! and the I2C addresses that answer on each bus, named where an address
//! (and, for the Bosch chips, their id register) says which chip it likely
//! is, with the config section to paste for the chips pinpost reads.
//!
//! The judgement is pure over a [`Bus`] that answers or not; the shell
//! opens `/dev/i2c-N` through rppal. It publishes nothing.

use std::fmt::Write as _;
use std::path::Path;

use super::Sensor as _;

/// The addresses probed: i2cdetect's default range, which leaves out the
/// reserved ones at both ends.
const FIRST: u8 = 0x08;
const LAST: u8 = 0x77;

/// One I2C bus, as the scan sees it.
pub(crate) trait Bus {
    /// Whether a chip acknowledges a one-byte read at `address` (i2cdetect
    /// -r: a read, which no chip takes for a command).
    fn answers(&mut self, address: u8) -> bool;
    /// Register `register` of the chip at `address`, if it answers.
    fn register(&mut self, address: u8, register: u8) -> Option<u8>;
}

/// A bus by its number, opened, or why it could not be.
pub(crate) type Opened = (u8, Result<Box<dyn Bus>, String>);

/// A chip found on a bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) address: u8,
    /// Which chip it likely is, in words.
    pub(crate) likely: String,
    /// The `[[sensor]]` to paste, for a chip pinpost reads.
    pub(crate) section: Option<String>,
}

/// Every address on `bus` that answers, judged.
pub(crate) fn scan_bus(bus_number: u8, bus: &mut dyn Bus) -> Vec<Found> {
    let answering: Vec<u8> = (FIRST..=LAST).filter(|a| bus.answers(*a)).collect();
    answering
        .into_iter()
        .map(|address| judge(bus_number, address, bus))
        .collect()
}

fn judge(bus_number: u8, address: u8, bus: &mut dyn Bus) -> Found {
    let section = |kind: &str| {
        Some(format!(
            "[[sensor]]\nname = \"{kind}_{address:02x}\"\nkind = \"{kind}\"\nbus = {bus_number}\n\
             address = 0x{address:02x}\n"
        ))
    };
    let expander = |chips: &str| {
        Some(format!(
            "[[expander]]\nname = \"x{address:02x}\"\n# chip = {chips}: the address alone \
             cannot tell; write the one on the board\nbus = {bus_number}\naddress = 0x{address:02x}\n"
        ))
    };
    let (likely, section) = match address {
        // The Bosch chips say who they are in register 0xD0.
        0x76 | 0x77 => match bus.register(address, 0xD0) {
            Some(0x60) => (
                "BME280 (id 0x60: temperature, pressure, humidity)".to_string(),
                section("bme280"),
            ),
            Some(0x58) => (
                "BMP280 (id 0x58: temperature, pressure)".to_string(),
                section("bmp280"),
            ),
            Some(other) => (
                format!(
                    "a chip at a BME280's address, but its id is 0x{other:02x} (BME680 is 0x61, BMP180 0x55): not one pinpost reads"
                ),
                None,
            ),
            None => (
                "a BME280/BMP280's address, but its id register did not answer".to_string(),
                None,
            ),
        },
        0x44 | 0x45 => (
            "SHT3x (temperature, humidity), or INA219 at the same address".to_string(),
            section("sht3x"),
        ),
        0x48..=0x4b => (
            "ADS1115/ADS1015 (ADC), or TMP102 / PCF8591 / INA219 at the same addresses".to_string(),
            section("ads1115"),
        ),
        0x40 => (
            "INA219 (current, voltage, power), or PCA9685 (PWM) at the same address".to_string(),
            section("ina219"),
        ),
        0x41..=0x4f => (
            "INA219 (current, voltage, power)".to_string(),
            section("ina219"),
        ),
        0x23 => (
            "BH1750 (light), or an MCP23017/PCF8574 (GPIO expander) at the same address"
                .to_string(),
            section("bh1750"),
        ),
        // Which chip answers here cannot be asked safely (any byte
        // written to a PCF8574 sets its pins), so the section leaves the
        // chip to the person who can read it on the board: pasted as it
        // is, the config says it is missing, and nothing is written to a
        // chip pinpost guessed.
        0x20..=0x27 => (
            "MCP23017 or PCF8574 (GPIO expander)".to_string(),
            expander("\"mcp23017\", \"pcf8574\" or \"pcf8575\""),
        ),
        0x38..=0x3f => (
            "PCF8574A (GPIO expander), or an AHT10/AHT20 at 0x38, an SSD1306 display at 0x3c/0x3d"
                .to_string(),
            expander("\"pcf8574a\", if that is what it is"),
        ),
        0x5c => ("BH1750 (light)".to_string(), section("bh1750")),
        0x62 => (
            "SCD40/SCD41 (CO2, temperature, humidity)".to_string(),
            section("scd4x"),
        ),
        0x68 => (
            "DS3231 / DS1307 (real-time clock) or MPU-6050".to_string(),
            None,
        ),
        0x50..=0x57 => (
            "an EEPROM (24Cxx; a Pi HAT's is on bus 0)".to_string(),
            None,
        ),
        _ => ("not a chip pinpost knows by its address".to_string(), None),
    };
    Found {
        address,
        likely,
        section,
    }
}

/// The 1-Wire devices under `dir` (the kernel's `/sys/bus/w1/devices`),
/// each with what it is and, for a thermometer, a first reading and the
/// section to paste. `Err` in words when the folder is not there.
pub(crate) fn one_wire(dir: &Path) -> Result<Vec<(String, String, Option<String>)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "{}: {} (1-Wire is off: add dtoverlay=w1-gpio to /boot/firmware/config.txt and \
             reboot)",
            dir.display(),
            crate::words::io_words(&e)
        )
    })?;
    let mut ids: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.len() > 3 && n.as_bytes()[2] == b'-')
        .collect();
    ids.sort();
    Ok(ids
        .into_iter()
        .map(|id| {
            let family = &id[..2];
            let kind = match family {
                "28" => "DS18B20 thermometer",
                "10" => "DS18S20 thermometer",
                "22" => "DS1822 thermometer",
                "3b" => "MAX31850 thermocouple amplifier",
                _ => "a 1-Wire device pinpost does not read",
            };
            if family != "28" {
                return (id, kind.to_string(), None);
            }
            let reading = match super::w1::Ds18b20::new(dir, Some(&id)).read() {
                Ok(m) => m.first().map_or("no reading".into(), |m| {
                    format!("{:.3} {}", m.value, m.unit)
                }),
                Err(e) => format!("no reading: {e}"),
            };
            let section = format!(
                "[[sensor]]\nname = \"t{}\"\nkind = \"ds18b20\"\nid = \"{id}\"\n",
                &id[id.len().saturating_sub(4)..]
            );
            (id, format!("{kind}, {reading}"), Some(section))
        })
        .collect())
}

/// The whole scan in words, as `pinpost sensors --scan` prints it: 1-Wire
/// under `w1_dir`, then each of `buses` (number and the bus, or why it
/// could not be opened).
pub(crate) fn report(w1_dir: &Path, buses: Vec<Opened>) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut sections = Vec::new();
    let _ = writeln!(out, "1-Wire ({})", w1_dir.display());
    match one_wire(w1_dir) {
        Ok(found) if found.is_empty() => {
            let _ = writeln!(out, "  no device (check the wiring and the 4.7 kΩ pull-up)");
        }
        Ok(found) => {
            for (id, what, section) in found {
                let _ = writeln!(out, "  {id}  {what}");
                sections.extend(section);
            }
        }
        Err(why) => {
            let _ = writeln!(out, "  \u{2717} {why}");
        }
    }
    if buses.is_empty() {
        let _ = writeln!(
            out,
            "I2C\n  \u{2717} no bus (/dev/i2c-*): enable I2C (raspi-config → Interface Options → \
             I2C, or dtparam=i2c_arm=on) and reboot"
        );
    }
    for (number, bus) in buses {
        let _ = writeln!(out, "I2C bus {number} (/dev/i2c-{number})");
        match bus {
            Err(why) => {
                let _ = writeln!(out, "  \u{2717} {why}");
            }
            Ok(mut bus) => {
                let found = scan_bus(number, bus.as_mut());
                if found.is_empty() {
                    let _ = writeln!(
                        out,
                        "  no chip answers (check the wiring: SDA, SCL, 3.3 V, GND)"
                    );
                }
                for f in found {
                    let _ = writeln!(out, "  0x{:02x}  {}", f.address, f.likely);
                    sections.extend(f.section);
                }
            }
        }
    }
    (out, sections)
}

/// A bus through rppal (`/dev/i2c-N`).
pub(crate) struct Rppal(pub(crate) rppal::i2c::I2c);

impl Bus for Rppal {
    fn answers(&mut self, address: u8) -> bool {
        self.0.set_slave_address(u16::from(address)).is_ok() && self.0.read(&mut [0u8]).is_ok()
    }

    fn register(&mut self, address: u8, register: u8) -> Option<u8> {
        let mut value = [0u8];
        self.0.set_slave_address(u16::from(address)).ok()?;
        self.0.write_read(&[register], &mut value).ok()?;
        Some(value[0])
    }
}

/// The I2C buses this machine has (`/dev/i2c-N`), opened.
pub(crate) fn buses(dev: &Path) -> Vec<Opened> {
    let mut numbers: Vec<u8> = std::fs::read_dir(dev)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter_map(|n| n.strip_prefix("i2c-").and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    numbers.sort_unstable();
    numbers
        .into_iter()
        .map(|n| {
            let bus = rppal::i2c::I2c::with_bus(n)
                .map(|i2c| Box::new(Rppal(i2c)) as Box<dyn Bus>)
                .map_err(|e| format!("cannot open it: {e} (run as a user in the i2c group)"));
            (n, bus)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Chips by address, each with its registers.
    struct Fake(HashMap<u8, HashMap<u8, u8>>);

    impl Bus for Fake {
        fn answers(&mut self, address: u8) -> bool {
            self.0.contains_key(&address)
        }
        fn register(&mut self, address: u8, register: u8) -> Option<u8> {
            self.0.get(&address)?.get(&register).copied()
        }
    }

    #[test]
    fn chips_are_named_by_address_and_the_bosch_ones_by_their_id() {
        let mut bus = Fake(HashMap::from([
            (0x76, HashMap::from([(0xD0, 0x60)])),
            (0x77, HashMap::from([(0xD0, 0x58)])),
            (0x44, HashMap::new()),
            (0x48, HashMap::new()),
            (0x20, HashMap::new()),
            (0x62, HashMap::new()),
            (0x03, HashMap::new()),
            (0x23, HashMap::new()),
            (0x5c, HashMap::new()),
            (0x40, HashMap::new()),
            (0x4c, HashMap::new()),
        ]));
        let found = scan_bus(1, &mut bus);
        let at: Vec<u8> = found.iter().map(|f| f.address).collect();
        assert_eq!(
            at,
            [0x20, 0x23, 0x40, 0x44, 0x48, 0x4c, 0x5c, 0x62, 0x76, 0x77],
            "0x03 is reserved: not probed"
        );
        let by = |a: u8| found.iter().find(|f| f.address == a).unwrap();
        assert!(by(0x76).likely.starts_with("BME280"));
        assert_eq!(
            by(0x76).section.as_deref(),
            Some("[[sensor]]\nname = \"bme280_76\"\nkind = \"bme280\"\nbus = 1\naddress = 0x76\n")
        );
        assert!(by(0x77).likely.starts_with("BMP280"));
        assert!(
            by(0x44)
                .section
                .as_deref()
                .unwrap()
                .contains("kind = \"sht3x\"")
        );
        assert!(by(0x20).likely.contains("MCP23017"));
        let expander = by(0x20).section.clone().unwrap_or_default();
        assert!(
            expander
                .starts_with("[[expander]]\nname = \"x20\"\n# chip = \"mcp23017\", \"pcf8574\""),
            "an expander's section, its chip left to the person: {expander}"
        );
        assert!(by(0x62).likely.contains("SCD40/SCD41"));
        for (address, kind) in [
            (0x62, "scd4x"),
            (0x23, "bh1750"),
            (0x5c, "bh1750"),
            (0x40, "ina219"),
            (0x4c, "ina219"),
        ] {
            let section = by(address).section.clone().unwrap_or_default();
            assert!(
                section.contains(&format!(
                    "kind = \"{kind}\"\nbus = 1\naddress = 0x{address:02x}"
                )),
                "0x{address:02x}: {section}"
            );
        }
        assert!(by(0x23).likely.contains("or an MCP23017"), "named as both");
        // Every section printed is a config pinpost takes as it is.
        let sections: Vec<String> = found.iter().filter_map(|f| f.section.clone()).collect();
        let text = format!("[device]\nid = \"pi\"\n{}", sections.join("\n"));
        // Pasted as it is, the expander's chip is asked for, not guessed.
        let e = crate::config::from_text(&text, None, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("expander[0].chip: missing"), "{e}");
        let text = text.replace("# chip = \"mcp23017\"", "chip = \"mcp23017\" #");
        let config = crate::config::from_text(&text, None, &Default::default()).unwrap();
        assert_eq!(config.sensors.len(), 9);
        assert_eq!(config.board.expanders.len(), 1);
    }

    #[test]
    fn one_wire_thermometers_come_with_a_reading_and_a_section() {
        let dir = tempfile::tempdir().unwrap();
        let chip = dir.path().join("28-0316a2795aff");
        std::fs::create_dir(&chip).unwrap();
        std::fs::write(
            chip.join("w1_slave"),
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("w1_bus_master1")).unwrap();
        std::fs::create_dir(dir.path().join("3b-000000123456")).unwrap();
        let (text, sections) = report(dir.path(), vec![]);
        assert!(
            text.contains("28-0316a2795aff  DS18B20 thermometer, 23.125 °C"),
            "{text}"
        );
        assert!(text.contains("3b-000000123456  MAX31850"), "{text}");
        assert!(!text.contains("w1_bus_master1"), "{text}");
        assert!(text.contains("no bus (/dev/i2c-*)"), "{text}");
        assert_eq!(
            sections,
            ["[[sensor]]\nname = \"t5aff\"\nkind = \"ds18b20\"\nid = \"28-0316a2795aff\"\n"]
        );
        let text = format!("[device]\nid = \"pi\"\n{}", sections[0]);
        assert!(crate::config::from_text(&text, None, &Default::default()).is_ok());
        let (text, _) = report(
            &dir.path().join("absent"),
            vec![(1, Err("cannot open it: no".into()))],
        );
        assert!(text.contains("1-Wire is off"), "{text}");
        assert!(
            text.contains("I2C bus 1 (/dev/i2c-1)\n  \u{2717} cannot open it: no"),
            "{text}"
        );
    }
}
