//! Simulated expanders for the sim board: an MCP23017's registers and a
//! PCF857x's latch behind embedded-hal's `I2c`, so the worker and the
//! chips' code run unchanged. Wires join an output pin to an input pin
//! (on one chip or two); a pin nothing drives reads its pull-up (1) or,
//! on an MCP23017 without one, 0. A chip named in the `[board] unplugged`
//! file does not acknowledge, as an unplugged one would not.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};

use crate::config::{Expander, ExpanderChip, ExpanderPin};

/// Every simulated chip's state, shared by their buses.
#[derive(Debug)]
pub(crate) struct World {
    chips: Vec<Chip>,
    /// (output expander, bit) → (input expander, bit).
    wires: Vec<((usize, u8), (usize, u8))>,
    unplugged: Option<PathBuf>,
}

#[derive(Debug)]
struct Chip {
    name: String,
    kind: ExpanderChip,
    address: u8,
    /// MCP23017: its 0x16 registers (BANK = 0); PCF857x: bytes 0–1 are
    /// the latch.
    regs: [u8; 0x16],
    pointer: u8,
}

const IODIR: usize = 0x00;
const GPPU: usize = 0x0C;
const GPIO: usize = 0x12;
const OLAT: usize = 0x14;

impl Chip {
    fn new(e: &Expander) -> Chip {
        let mut regs = [0u8; 0x16];
        // Power-on: an MCP23017's pins are inputs, a PCF857x's latch is 1s.
        match e.chip {
            ExpanderChip::Mcp23017 => (regs[IODIR], regs[IODIR + 1]) = (0xFF, 0xFF),
            _ => (regs[0], regs[1]) = (0xFF, 0xFF),
        }
        Chip {
            name: e.name.clone(),
            kind: e.chip,
            address: e.address,
            regs,
            pointer: 0,
        }
    }

    fn word(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.regs[at], self.regs[at + 1]])
    }

    /// Bits this chip drives, and their levels.
    fn driving(&self) -> (u16, u16) {
        match self.kind {
            ExpanderChip::Mcp23017 => (!self.word(IODIR), self.word(OLAT)),
            // A 0 in the latch pulls the pin low; a 1 is only a weak pull-up.
            _ => (!self.word(0), 0),
        }
    }

    fn pulled_up(&self) -> u16 {
        match self.kind {
            ExpanderChip::Mcp23017 => self.word(GPPU),
            _ => u16::MAX,
        }
    }
}

impl World {
    pub(crate) fn new(
        expanders: &[Expander],
        wires: &[(ExpanderPin, ExpanderPin)],
        unplugged: Option<PathBuf>,
    ) -> Arc<Mutex<World>> {
        Arc::new(Mutex::new(World {
            chips: expanders.iter().map(Chip::new).collect(),
            wires: wires
                .iter()
                .map(|(a, b)| ((a.expander, a.bit), (b.expander, b.bit)))
                .collect(),
            unplugged,
        }))
    }

    /// Every pin's level on chip `c`.
    fn levels(&self, c: usize) -> u16 {
        let chip = &self.chips[c];
        let (driven, levels) = chip.driving();
        let mut out = (levels & driven) | (chip.pulled_up() & !driven);
        for &((from, from_bit), (to, to_bit)) in &self.wires {
            if to != c || driven & (1 << to_bit) != 0 {
                continue;
            }
            let (d, l) = self.chips[from].driving();
            let source_high = if d & (1 << from_bit) != 0 {
                l & (1 << from_bit) != 0
            } else {
                // An undriven source: its pull-up, if any.
                self.chips[from].pulled_up() & (1 << from_bit) != 0
            };
            if source_high {
                out |= 1 << to_bit;
            } else {
                out &= !(1 << to_bit);
            }
        }
        out
    }

    fn present(&self, c: usize) -> bool {
        let Some(path) = &self.unplugged else {
            return true;
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return true;
        };
        !text.lines().any(|l| l.trim() == self.chips[c].name)
    }
}

/// Chip `index`'s end of the simulated bus.
pub(crate) struct SimBus {
    world: Arc<Mutex<World>>,
    index: usize,
}

impl SimBus {
    pub(crate) fn new(world: Arc<Mutex<World>>, index: usize) -> SimBus {
        SimBus { world, index }
    }
}

impl ErrorType for SimBus {
    type Error = ErrorKind;
}

impl I2c for SimBus {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), ErrorKind> {
        let mut world = self.world.lock().unwrap_or_else(PoisonError::into_inner);
        let c = self.index;
        if world
            .chips
            .get(c)
            .is_none_or(|chip| chip.address != address)
            || !world.present(c)
        {
            return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        }
        let levels = world.levels(c);
        let chip = &mut world.chips[c];
        for op in operations {
            match (chip.kind, op) {
                (ExpanderChip::Mcp23017, Operation::Write(bytes)) => {
                    let Some((&reg, data)) = bytes.split_first() else {
                        continue;
                    };
                    chip.pointer = reg % 0x16;
                    for &b in data {
                        let at = usize::from(chip.pointer);
                        // GPIO writes go to the latch, as on the chip.
                        let at = if at == GPIO || at == GPIO + 1 {
                            at + 2
                        } else {
                            at
                        };
                        chip.regs[at] = b;
                        chip.pointer = (chip.pointer + 1) % 0x16;
                    }
                }
                (ExpanderChip::Mcp23017, Operation::Read(buf)) => {
                    for b in buf.iter_mut() {
                        let at = usize::from(chip.pointer);
                        *b = match at {
                            GPIO => levels.to_le_bytes()[0],
                            x if x == GPIO + 1 => levels.to_le_bytes()[1],
                            _ => chip.regs[at],
                        };
                        chip.pointer = (chip.pointer + 1) % 0x16;
                    }
                }
                (_, Operation::Write(bytes)) => {
                    for (i, &b) in bytes.iter().take(2).enumerate() {
                        chip.regs[i] = b;
                    }
                }
                (_, Operation::Read(buf)) => {
                    let bytes = levels.to_le_bytes();
                    for (i, b) in buf.iter_mut().take(2).enumerate() {
                        *b = bytes[i];
                    }
                }
            }
        }
        Ok(())
    }
}
