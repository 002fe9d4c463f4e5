//! What `pinpost check` says about the pins, without claiming any (the
//! service may hold them): which backend `[board]` means here and why,
//! which chip, whether another consumer holds a configured line, whether
//! a hardware PWM output's channel is routed to its pin, and whether each
//! I2C expander answers.

use std::path::Path;

use super::cdev::chip;
use super::choose::{self, Backend};
use super::kernel_pwm::{self, Route};
use crate::config::{BoardKind, Config};
use crate::header::{Soc, hardware_pwm};

/// One finding, for `check` to mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finding {
    Fine(String),
    /// Worth fixing: pinpost runs, but not as configured.
    Worth(String),
}

/// The findings on `config`'s `[board]` and pins, on this machine.
pub(crate) fn survey(config: &Config) -> Vec<Finding> {
    let mut findings = board(config);
    if config.board.kind != BoardKind::Sim {
        // A read only (an MCP23017's GPIO register, a PCF857x's pins):
        // nothing the running service set up is changed.
        for e in &config.board.expanders {
            findings.push(match super::expander::probe(e) {
                Ok(()) => Finding::Fine(format!("{}: answers", e.describe())),
                Err(why) => Finding::Worth(format!("{}: {why}", e.describe())),
            });
        }
    }
    findings
}

fn board(config: &Config) -> Vec<Finding> {
    let kind = config.board.kind;
    let choice = choose::choose(kind, choose::gpiomem());
    match choice.backend {
        Backend::Sim => vec![Finding::Fine(format!(
            "board: the simulated board ({})",
            choice.why
        ))],
        Backend::Rppal => vec![Finding::Fine(format!(
            "board: rppal, on the Raspberry Pi's GPIO registers ({})",
            choice.why
        ))],
        Backend::Cdev => cdev(config, &choice.why),
    }
}

fn cdev(config: &Config, why: &str) -> Vec<Finding> {
    let found = match chip::find(config.board.chip.as_deref()) {
        Ok(found) => found,
        // A laptop checking a Pi's config before copying it over.
        Err(super::BoardError::NoGpio) if config.board.kind == BoardKind::Auto => {
            return vec![Finding::Fine(
                "board: no GPIO on this machine; on a Raspberry Pi, auto chooses rppal where \
                 /dev/gpiomem exists and the kernel's GPIO character device otherwise"
                    .into(),
            )];
        }
        Err(e) => return vec![Finding::Worth(format!("board: {e}"))],
    };
    let mut findings = vec![Finding::Fine(format!(
        "board: the kernel's GPIO character device {} {:?} ({} lines) ({why})",
        found.path.display(),
        found.label,
        found.lines
    ))];
    // Opened once for every pin's line info; a chip we may not open is
    // already said above, by `find`.
    let opened = gpiocdev::Chip::from_path(&found.path).ok();
    let pins = config
        .inputs
        .iter()
        .filter_map(|i| i.pin.gpio())
        .chain(config.outputs.iter().filter_map(|o| o.pin.gpio()));
    for pin in pins {
        if let Err(e) = chip::has_line(&found, pin) {
            findings.push(Finding::Worth(e.to_string()));
            continue;
        }
        let info = opened.as_ref().map(|c| c.line_info(u32::from(pin)));
        if let Some(Ok(info)) = info {
            // Our own consumer is the service, running as it should.
            if info.used && info.consumer != super::cdev::CONSUMER {
                findings.push(Finding::Worth(format!(
                    "GPIO{pin} is already in use by {} (line {pin} of {}): stop it, or choose another pin",
                    chip::holder_words(&info.consumer),
                    found.name
                )));
            }
        }
    }
    for (output, pin) in config
        .outputs
        .iter()
        .filter(|o| o.pwm)
        .filter_map(|o| Some((o, o.pin.gpio()?)))
    {
        if let Some(hw) = hardware_pwm(pin, Soc::Bcm283x) {
            match kernel_pwm::route(Path::new("/"), pin, hw) {
                Route::Routed { chip, channel } => findings.push(Finding::Fine(format!(
                    "{}: hardware PWM through {} channel {channel}",
                    output.pin,
                    chip.display()
                ))),
                Route::Missing(words) => findings.push(Finding::Worth(format!(
                    "{words}; until then pinpost drives it with software PWM"
                ))),
            }
        }
    }
    findings
}
