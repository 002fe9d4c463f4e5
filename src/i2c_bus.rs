//! rppal's `/dev/i2c-N` as pinpost's chips need it (the sensors' and the
//! expanders'), opened with its failure in words, mending two things
//! rppal 0.22's embedded-hal adapter does not do:
//!
//! - A chip that does not acknowledge is `ErrorKind::Other` there, so a
//!   missing expander was said as "the I2C transfer failed: I/O error:
//!   Remote I/O error (os error 121)" (seen on the emulated Pi's
//!   i2c-bcm2835, scripts/pi-emu.sh). The kernel's I2C drivers say no
//!   acknowledge with EREMOTEIO (i2c-bcm2835) or ENXIO (the address
//!   phase, on others; Documentation/i2c/fault-codes.rst); both are
//!   `NoAcknowledge` here, so a chip's words can say "nothing answers at
//!   0x27".
//! - Its `write_read` is a write, a STOP and a separate read: another
//!   program's transfer to the chip between them moves the register
//!   pointer, and the read gets other registers (a spurious "forgot its
//!   setup", a reading from the wrong register). Here it is one
//!   `I2C_RDWR`: the write, a repeated START and the read, as the chips'
//!   datasheets draw a register read.
//!
//! A leaf: it knows rppal and embedded-hal, nothing of pinpost.

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};

/// One `/dev/i2c-N`, opened by rppal.
pub(crate) struct PiBus(pub(crate) rppal::i2c::I2c);

impl PiBus {
    /// Opens `/dev/i2c-<bus>`; `Err` says how to enable it.
    pub(crate) fn open(bus: u8) -> Result<PiBus, String> {
        rppal::i2c::I2c::with_bus(bus).map(PiBus).map_err(|e| {
            format!(
                "cannot open /dev/i2c-{bus}: {e}; enable I2C (raspi-config → Interface Options → \
                 I2C, or dtparam=i2c_arm=on) and run pinpost in the i2c group"
            )
        })
    }
}

/// rppal's error, with the kernel's "no acknowledge" told apart.
#[derive(Debug)]
pub(crate) struct PiBusError(pub(crate) rppal::i2c::Error);

impl std::fmt::Display for PiBusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl embedded_hal::i2c::Error for PiBusError {
    fn kind(&self) -> ErrorKind {
        match &self.0 {
            rppal::i2c::Error::Io(e)
                if matches!(e.raw_os_error(), Some(libc::EREMOTEIO | libc::ENXIO)) =>
            {
                ErrorKind::NoAcknowledge(NoAcknowledgeSource::Unknown)
            }
            other => embedded_hal::i2c::Error::kind(other),
        }
    }
}

impl ErrorType for PiBus {
    type Error = PiBusError;
}

impl I2c for PiBus {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), PiBusError> {
        I2c::transaction(&mut self.0, address, operations).map_err(PiBusError)
    }

    fn write_read(&mut self, address: u8, write: &[u8], read: &mut [u8]) -> Result<(), PiBusError> {
        self.0
            .set_slave_address(u16::from(address))
            .map_err(PiBusError)?;
        self.0.write_read(write, read).map_err(PiBusError)
    }
}
