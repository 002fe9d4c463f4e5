use std::time::{Duration, Instant};

use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

use super::chips::{Mcp23017, Pcf857x, Port, Setup};
use crate::board::edges;
use crate::config::{ExpanderChip, Overrides, from_text};

#[test]
fn an_mcp23017_has_its_latches_written_before_its_pins_become_outputs() {
    // B0 an output that starts high (a relay board's "off"), A0 an input
    // with its pull-up.
    let setup = Setup {
        outputs: 0x0100,
        levels: 0x0100,
        pull_ups: 0x0001,
        interrupt: true,
    };
    let mut bus = Mock::new(&[
        T::write(0x20, vec![0x0A, 0x44]),
        T::write(0x20, vec![0x14, 0x00, 0x01]),
        T::write(0x20, vec![0x0C, 0x01, 0x00]),
        T::write(0x20, vec![0x02, 0x00, 0x00]),
        T::write(0x20, vec![0x08, 0x00, 0x00]),
        T::write(0x20, vec![0x04, 0xFF, 0xFE]),
        T::write(0x20, vec![0x00, 0xFF, 0xFE]),
        T::write_read(0x20, vec![0x12], vec![0x01, 0x01]),
        T::write_read(0x20, vec![0x00], vec![0xFF, 0xFE]),
        T::write_read(0x20, vec![0x00], vec![0xFF, 0xFF]),
    ]);
    let mut chip = Mcp23017::new(bus.clone(), 0x20);
    chip.setup(&setup).unwrap();
    assert_eq!(chip.read().unwrap(), 0x0101);
    assert!(!chip.forgot(&setup, 0x0101).unwrap());
    // After a power dip every pin is an input again.
    assert!(chip.forgot(&setup, 0x0101).unwrap());
    bus.done();
}

#[test]
fn a_pcf8575_is_written_whole_with_its_inputs_high() {
    // P10 an output held low, everything else an input (written 1).
    let setup = Setup {
        outputs: 0x0100,
        levels: 0,
        ..Setup::default()
    };
    let mut bus = Mock::new(&[
        T::write(0x21, vec![0xFF, 0xFE]),
        T::read(0x21, vec![0xF7, 0xFE]),
        T::write(0x21, vec![0xFF, 0xFF]),
    ]);
    let mut chip = Pcf857x::new(ExpanderChip::Pcf8575, bus.clone(), 0x21);
    chip.setup(&setup).unwrap();
    let levels = chip.read().unwrap();
    assert_eq!(levels, 0xFEF7);
    assert!(!chip.forgot(&setup, levels).unwrap());
    // A pin held low that reads high was let go: the chip was reset.
    assert!(chip.forgot(&setup, 0xFFFF).unwrap());
    let high = Setup {
        levels: 0x0100,
        ..setup
    };
    chip.write(&high).unwrap();
    bus.done();
}

#[test]
fn a_pcf8574_that_does_not_acknowledge_is_said_in_words() {
    let nack = embedded_hal::i2c::ErrorKind::NoAcknowledge(
        embedded_hal::i2c::NoAcknowledgeSource::Address,
    );
    let mut bus = Mock::new(&[T::read(0x38, vec![0]).with_error(nack)]);
    let mut chip = Pcf857x::new(ExpanderChip::Pcf8574a, bus.clone(), 0x38);
    let e = chip.read().unwrap_err();
    assert!(e.contains("nothing answers at 0x38"), "{e}");
    assert!(e.contains("unplugged"), "{e}");
    bus.done();
}

fn sim_config(dir: &std::path::Path, extra: &str) -> crate::config::Config {
    let text = format!(
        "[device]\nid = \"pi\"\n[board]\nkind = \"sim\"\nunplugged = \"{}\"\n\
         wires = [[\"mcp0:B0\", \"mcp0:A0\"], [\"pcf:P7\", \"mcp0:A1\"], [27, 17]]\n\
         [[expander]]\nname = \"mcp0\"\nchip = \"mcp23017\"\npoll_interval = \"10ms\"\n\
         [[expander]]\nname = \"pcf\"\nchip = \"pcf8574\"\naddress = 0x21\npoll_interval = \"10ms\"\n\
         [[input]]\nname = \"door\"\npin = \"mcp0:A0\"\n\
         [[input]]\nname = \"gate\"\npin = \"mcp0:a1\"\npull = \"up\"\n\
         [[input]]\nname = \"button\"\npin = 17\n\
         [[output]]\nname = \"relay\"\npin = \"mcp0:B0\"\n\
         [[output]]\nname = \"lamp\"\npin = \"pcf:P7\"\ninitial = \"on\"\n\
         [[output]]\nname = \"led\"\npin = 27\n{extra}",
        dir.join("unplugged").display()
    );
    from_text(&text, None, &Overrides::default()).unwrap()
}

/// Waits (at most 15 s: the machine may be loaded) until `f` holds.
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(15), "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn an_expander_output_drives_an_expander_input_and_its_change_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let config = sim_config(dir.path(), "");
    let (tx, mut rx) = edges::channel(config.inputs.len());
    let mut board = crate::board::open(&config, tx).unwrap().board;
    assert!(
        board
            .describe()
            .contains("expander mcp0 (MCP23017 at 0x20 on /dev/i2c-1)")
    );
    // Set up, read, and every expander input announced once.
    until("the first reads", || board.read_input(0).is_ok());
    until("door's first notice", || {
        rx.try_recv() == Some(0) || rx.try_recv() == Some(0)
    });
    assert!(
        !board.read_input(0).unwrap(),
        "relay starts off, so door reads low"
    );
    // The lamp starts on (its initial level), so gate, wired to it, is high.
    until("gate high", || board.read_input(1).unwrap());
    while rx.try_recv().is_some() {}

    board.write_output(0, true).unwrap();
    until("door high after relay on", || board.read_input(0).unwrap());
    until("door's notice", || rx.try_recv() == Some(0));
    board.write_output(1, false).unwrap();
    until("gate low after lamp off", || !board.read_input(1).unwrap());
    // The Pi's own pins still go to the sim board, and their notices
    // reach the agent by the agent's index.
    while rx.try_recv().is_some() {}
    board.write_output(2, true).unwrap();
    assert!(board.read_input(2).unwrap());
    until("button's notice", || rx.try_recv() == Some(2));
}

#[test]
fn a_vanished_expander_refuses_writes_in_words_and_is_set_up_again_when_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let config = sim_config(dir.path(), "");
    let (tx, mut rx) = edges::channel(config.inputs.len());
    let mut board = crate::board::open(&config, tx).unwrap().board;
    until("the first reads", || board.read_input(0).is_ok());
    board.write_output(0, true).unwrap();
    until("door high", || board.read_input(0).unwrap());

    std::fs::write(dir.path().join("unplugged"), "mcp0\n").unwrap();
    until("mcp0 noticed gone", || board.read_input(0).is_err());
    let e = board.read_input(0).unwrap_err().to_string();
    assert!(
        e.contains("expander mcp0 (MCP23017 at 0x20 on /dev/i2c-1) does not answer"),
        "{e}"
    );
    assert!(e.contains("nothing answers at 0x20"), "{e}");
    assert!(e.contains("keeps its last published value"), "{e}");
    let e = board.write_output(0, false).unwrap_err().to_string();
    assert!(
        e.contains("does not answer") && e.contains("the output was not set"),
        "{e}"
    );
    // The other expander is untouched.
    board.write_output(1, false).unwrap();

    while rx.try_recv().is_some() {}
    std::fs::remove_file(dir.path().join("unplugged")).unwrap();
    until("mcp0 back", || board.read_input(0).is_ok());
    // Set up again with the level last taken (on), not the refused off,
    // and its inputs announced again so the agent reads them.
    until("door high again", || board.read_input(0).unwrap());
    until("door announced again", || rx.try_recv() == Some(0));
    board.write_output(0, false).unwrap();
    until("door low", || !board.read_input(0).unwrap());
}

#[test]
fn an_expander_absent_at_start_does_not_stop_the_board() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("unplugged"), "pcf\n").unwrap();
    let config = sim_config(dir.path(), "");
    let (tx, _rx) = edges::channel(config.inputs.len());
    let mut board = crate::board::open(&config, tx).unwrap().board;
    until("mcp0 read", || board.read_input(0).is_ok());
    let e = board.write_output(1, true).unwrap_err().to_string();
    assert!(e.contains("expander pcf (PCF8574 at 0x21"), "{e}");
    std::fs::remove_file(dir.path().join("unplugged")).unwrap();
    until("pcf answers", || board.write_output(1, true).is_ok());
}

/// A chip whose second read hangs for `hang`, recording every write.
struct Slow {
    reads: u32,
    hang: Duration,
    writes: std::sync::Arc<std::sync::Mutex<Vec<u16>>>,
}

impl Port for Slow {
    fn setup(&mut self, _: &Setup) -> Result<(), String> {
        Ok(())
    }
    fn read(&mut self) -> Result<u16, String> {
        self.reads += 1;
        if self.reads == 2 {
            std::thread::sleep(self.hang);
        }
        Ok(0)
    }
    fn write(&mut self, s: &Setup) -> Result<(), String> {
        self.writes.lock().unwrap().push(s.levels);
        Ok(())
    }
    fn forgot(&mut self, _: &Setup, _: u16) -> Result<bool, String> {
        Ok(false)
    }
}

#[test]
fn a_hung_bus_costs_the_loop_one_wait_and_a_write_given_up_on_is_never_carried_out() {
    use super::worker::{Handle, Plan, WRITE_WAIT};
    let writes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut port = Some(Slow {
        reads: 0,
        hang: WRITE_WAIT * 3,
        writes: writes.clone(),
    });
    let plan = Plan {
        what: "expander slow".into(),
        setup: Setup {
            outputs: 1,
            ..Setup::default()
        },
        inputs: Vec::new(),
        outputs: vec![(0, "relay".into())],
        poll: Duration::from_millis(10),
    };
    let (tx, _rx) = edges::channel(1);
    let open: super::worker::Opener = Box::new(move || {
        port.take()
            .map(|p| Box::new(p) as Box<dyn Port>)
            .ok_or_else(|| "opened twice".to_string())
    });
    let handle = Handle::start(plan, open, tx).unwrap();
    // The first read is the setup's; the poll 10 ms later hangs.
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let e = handle.write(0, true).unwrap_err();
    assert!(e.contains("did not take the write within 250 ms"), "{e}");
    let e = handle.write(0, true).unwrap_err();
    assert!(e.contains("has not finished the previous write"), "{e}");
    assert!(
        started.elapsed() < WRITE_WAIT * 2,
        "the second did not wait"
    );
    until("the hang over", || handle.write(0, false).is_ok());
    // The write given up on was dropped, not carried out late.
    assert_eq!(*writes.lock().unwrap(), vec![0]);
}

#[test]
fn the_chips_interrupt_line_falling_has_it_read_at_once_not_at_the_next_poll() {
    let text = "[device]\nid = \"pi\"\n[board]\nkind = \"sim\"\n\
         wires = [[\"mcp0:B0\", \"mcp0:A0\"], [27, 22]]\n\
         [[expander]]\nname = \"mcp0\"\nchip = \"mcp23017\"\ninterrupt = 22\npoll_interval = \"10s\"\n\
         [[input]]\nname = \"door\"\npin = \"mcp0:A0\"\n\
         [[output]]\nname = \"relay\"\npin = \"mcp0:B0\"\n\
         [[output]]\nname = \"int\"\npin = 27\ninitial = \"on\"\n";
    let config = from_text(text, None, &Overrides::default()).unwrap();
    let (tx, mut rx) = edges::channel(config.inputs.len());
    let mut board = crate::board::open(&config, tx).unwrap().board;
    until("the first read", || board.read_input(0).is_ok());
    while rx.try_recv().is_some() {}
    // The chip's pin changes, but the next poll is 10 s away.
    board.write_output(0, true).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!board.read_input(0).unwrap(), "not read yet");
    // INT falls: the chip is read now.
    let fell = Instant::now();
    board.write_output(1, false).unwrap();
    until("door high after INT", || board.read_input(0).unwrap());
    assert!(fell.elapsed() < Duration::from_secs(5), "woken, not polled");
    until("door's notice", || rx.try_recv() == Some(0));
}

fn from_errno(errno: i32) -> crate::i2c_bus::PiBusError {
    crate::i2c_bus::PiBusError(rppal::i2c::Error::Io(std::io::Error::from_raw_os_error(
        errno,
    )))
}

#[test]
fn the_kernels_no_acknowledge_is_said_as_nothing_answering() {
    // i2c-bcm2835's NACK (what the emulated Pi's kernel gave for a
    // PCF8574 configured at 0x27 where nothing is), and ENXIO.
    for errno in [libc::EREMOTEIO, libc::ENXIO] {
        let said = super::chips::words(&from_errno(errno), 0x27);
        assert!(
            said.starts_with("nothing answers at 0x27"),
            "errno {errno}: {said}"
        );
    }
}

#[test]
fn other_bus_errors_keep_the_kernels_words() {
    let said = super::chips::words(&from_errno(libc::EIO), 0x20);
    assert!(said.starts_with("the I2C transfer failed: "), "{said}");
    assert!(said.contains("os error 5"), "{said}");
}
