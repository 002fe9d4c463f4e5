//! What each expander chip is told over I2C, behind one [`Port`] trait the
//! worker drives: set up (latches before directions, so an output never
//! shows a level it was not given), read every pin, write the latches, and
//! whether the chip has forgotten its setup (a power dip resets it).
//!
//! The MCP23017 is ours, from its datasheet (DS20001952C, BANK = 0
//! register map): `port-expander` 0.6 makes an output low before it can be
//! set high (a relay board's "off" clicks at every start) and its pins
//! borrow the chip, so it cannot be set up again after a reset. The
//! PCF8574/PCF8574A/PCF8575 too, from theirs: `pcf857x` 0.5 writes before
//! every read, from what it last set itself, so a driver made again after
//! a reset would let go of outputs held low, and a chip with no inputs
//! could not be asked whether it is there. Each is a dozen lines of I2C.
//! This module knows no config, no threads and no edges.

use embedded_hal::i2c::{ErrorKind, I2c, NoAcknowledgeSource};

use crate::config::ExpanderChip;

/// How the chip's pins are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Setup {
    /// Bits that are outputs.
    pub(crate) outputs: u16,
    /// Their levels (bits outside `outputs` are ignored).
    pub(crate) levels: u16,
    /// Inputs with the chip's pull-up on (MCP23017; a PCF857x's pins
    /// always have one).
    pub(crate) pull_ups: u16,
    /// Whether the chip's INT line is wired to the Pi.
    pub(crate) interrupt: bool,
}

/// One expander on its bus.
pub(crate) trait Port: Send {
    /// Puts the chip in `setup`: latches first, then directions.
    fn setup(&mut self, setup: &Setup) -> Result<(), String>;
    /// Every pin's level, bit n for pin n.
    fn read(&mut self) -> Result<u16, String>;
    /// Writes the output latches (`setup.levels` on `setup.outputs`).
    fn write(&mut self, setup: &Setup) -> Result<(), String>;
    /// Whether the chip has lost `setup` (read `levels` is what [`read`]
    /// just returned), so it must be set up again.
    fn forgot(&mut self, setup: &Setup, levels: u16) -> Result<bool, String>;
}

/// An I2C failure in words: who did not answer, or what the bus said.
pub(crate) fn words<E: embedded_hal::i2c::Error + std::fmt::Display>(e: &E, address: u8) -> String {
    match e.kind() {
        ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address | NoAcknowledgeSource::Unknown) => {
            format!(
                "nothing answers at {address:#04x} (unplugged, unpowered, or its A0–A2 pins give another address)"
            )
        }
        ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data) => {
            format!("the chip at {address:#04x} refused a byte")
        }
        ErrorKind::ArbitrationLoss => "another I2C controller took the bus".into(),
        ErrorKind::Bus => format!("a bus error (a loose wire, or SDA/SCL held low): {e}"),
        _ => format!("the I2C transfer failed: {e}"),
    }
}

/// MCP23017 registers, BANK = 0 (A and B side by side, so one write of
/// two bytes sets both ports).
mod reg {
    pub(super) const IODIR: u8 = 0x00;
    pub(super) const IPOL: u8 = 0x02;
    pub(super) const GPINTEN: u8 = 0x04;
    pub(super) const INTCON: u8 = 0x08;
    pub(super) const IOCON: u8 = 0x0A;
    pub(super) const GPPU: u8 = 0x0C;
    pub(super) const GPIO: u8 = 0x12;
    pub(super) const OLAT: u8 = 0x14;
}
/// IOCON: MIRROR (INTA and INTB both say any change, so one Pi pin
/// serves both ports) and ODR (open drain: the Pi's pull-up makes the
/// level, and several chips may share one line).
const IOCON_INTERRUPT: u8 = 0x44;

pub(crate) struct Mcp23017<B> {
    bus: B,
    address: u8,
}

impl<B: I2c + Send> Mcp23017<B>
where
    B::Error: std::fmt::Display,
{
    pub(crate) fn new(bus: B, address: u8) -> Self {
        Mcp23017 { bus, address }
    }

    fn put(&mut self, register: u8, value: u16) -> Result<(), String> {
        let [a, b] = value.to_le_bytes();
        self.bus
            .write(self.address, &[register, a, b])
            .map_err(|e| words(&e, self.address))
    }

    fn get(&mut self, register: u8) -> Result<u16, String> {
        let mut two = [0u8; 2];
        self.bus
            .write_read(self.address, &[register], &mut two)
            .map_err(|e| words(&e, self.address))?;
        Ok(u16::from_le_bytes(two))
    }
}

impl<B: I2c + Send> Port for Mcp23017<B>
where
    B::Error: std::fmt::Display,
{
    fn setup(&mut self, s: &Setup) -> Result<(), String> {
        let iocon = if s.interrupt { IOCON_INTERRUPT } else { 0 };
        self.bus
            .write(self.address, &[reg::IOCON, iocon])
            .map_err(|e| words(&e, self.address))?;
        self.put(reg::OLAT, s.levels & s.outputs)?;
        self.put(reg::GPPU, s.pull_ups & !s.outputs)?;
        self.put(reg::IPOL, 0)?;
        self.put(reg::INTCON, 0)?;
        self.put(reg::GPINTEN, if s.interrupt { !s.outputs } else { 0 })?;
        self.put(reg::IODIR, !s.outputs)
    }

    fn read(&mut self) -> Result<u16, String> {
        // Reading GPIO also lets go of the INT line.
        self.get(reg::GPIO)
    }

    fn write(&mut self, s: &Setup) -> Result<(), String> {
        self.put(reg::OLAT, s.levels & s.outputs)
    }

    fn forgot(&mut self, s: &Setup, _levels: u16) -> Result<bool, String> {
        // At power-on every pin is an input again (IODIR = 0xFFFF).
        Ok(self.get(reg::IODIR)? != !s.outputs)
    }
}

/// A PCF8574, PCF8574A or PCF8575: no registers, one write sets every
/// pin (a 1 is a weak pull-up, so inputs are written 1), one read reads
/// them, low byte (P0x) first.
pub(crate) struct Pcf857x<B> {
    bus: B,
    address: u8,
    /// 1 or 2.
    bytes: usize,
}

impl<B: I2c + Send> Pcf857x<B>
where
    B::Error: std::fmt::Display,
{
    pub(crate) fn new(chip: ExpanderChip, bus: B, address: u8) -> Self {
        Pcf857x {
            bus,
            address,
            bytes: usize::from(chip.pins() / 8),
        }
    }
}

impl<B: I2c + Send> Port for Pcf857x<B>
where
    B::Error: std::fmt::Display,
{
    fn setup(&mut self, s: &Setup) -> Result<(), String> {
        // One write is the whole setup: outputs at their levels, every
        // other pin 1 (an input).
        self.write(s)
    }

    fn read(&mut self) -> Result<u16, String> {
        let mut two = [0xFFu8; 2];
        self.bus
            .read(self.address, &mut two[..self.bytes])
            .map_err(|e| words(&e, self.address))?;
        Ok(u16::from_le_bytes(two))
    }

    fn write(&mut self, s: &Setup) -> Result<(), String> {
        let bits = ((s.levels & s.outputs) | !s.outputs).to_le_bytes();
        self.bus
            .write(self.address, &bits[..self.bytes])
            .map_err(|e| words(&e, self.address))
    }

    fn forgot(&mut self, s: &Setup, levels: u16) -> Result<bool, String> {
        // A pin driven low reads low; one that reads high has been let
        // go (at power-on every pin is a weak 1).
        Ok(s.outputs & !s.levels & levels != 0)
    }
}
