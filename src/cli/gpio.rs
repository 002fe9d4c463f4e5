//! `pinpost gpio read|write|watch PIN`: one pin, locally, no broker. For
//! checking wiring in the field with the same GPIO code the agent uses.

use tokio::io::AsyncWriteExt;

use super::CliError;
use crate::board::{Board, EdgeSender, InputSetup, OutputSetup, PinPlan, PwmSetup};
use crate::cli::args::{GpioAction, GpioArgs};
use crate::config::{BoardKind, Pull};
use crate::header::MAX_BCM_PIN;

/// Runs `pinpost gpio`: one read, one write, or a watch until Ctrl-C.
pub(super) async fn run(args: GpioArgs) -> Result<(), CliError> {
    let pull = Pull::from(args.pull);
    let kind = BoardKind::from(args.board);
    let chip = args.chip.as_deref();
    // One input at most (read and watch).
    let (edges, mut changes) = crate::board::edges::channel(1);
    match args.action {
        GpioAction::Read { pin } => {
            let board = open(kind, chip, &input_plan(check(pin)?, pull, false), edges)?;
            let high = board.read_input(0)?;
            say(&format!("GPIO{pin} {}\n", words(high))).await
        }
        GpioAction::Write { pin, level, hold } => {
            let high = parse_level(&level)?;
            let plan = PinPlan {
                inputs: vec![],
                outputs: vec![OutputSetup {
                    pin: check(pin)?,
                    line: None,
                    initial_high: high,
                    pwm: PwmSetup::None,
                }],
            };
            let mut board = open(kind, chip, &plan, edges)?;
            board.write_output(0, high)?;
            if board.keeps_levels_after_exit() && hold.is_none() {
                return say(&format!("GPIO{pin} set {}\n", words(high))).await;
            }
            let until = match hold {
                Some(d) => format!("for {}", humantime::format_duration(d)),
                None => "until Ctrl-C".into(),
            };
            say(&format!(
                "GPIO{pin} set {}; holding it {until} (the kernel may return a released line to input)\n",
                words(high)
            ))
            .await?;
            match hold {
                Some(d) => tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = super::run::shutdown_signal() => {}
                },
                None => super::run::shutdown_signal().await,
            }
            drop(board);
            say(&format!("GPIO{pin} released\n")).await
        }
        GpioAction::Watch { pin, count } => {
            let board = open(kind, chip, &input_plan(check(pin)?, pull, true), edges)?;
            let mut last = board.read_input(0)?;
            say(&format!(
                "GPIO{pin} {} (watching; Ctrl-C to stop)\n",
                words(last)
            ))
            .await?;
            let mut seen = 0;
            while count.is_none_or(|c| seen < c) {
                tokio::select! {
                    change = changes.recv() => if change.is_none() { break },
                    _ = tokio::signal::ctrl_c() => break,
                }
                let now = board.read_input(0)?;
                if now != last {
                    last = now;
                    seen += 1;
                    let ts = crate::utc::rfc3339_millis(crate::utc::now_unix_millis());
                    say(&format!("{ts} GPIO{pin} {}\n", words(now))).await?;
                }
            }
            Ok(())
        }
    }
}

/// One input; `edges` only for `watch`: a read needs none, and rppal sets
/// interrupts up on a thread whose errors it loses (seen on the emulated
/// Pi right after a write: "Failed to request resources for RPPAL").
fn input_plan(pin: u8, pull: Pull, edges: bool) -> PinPlan {
    PinPlan {
        inputs: vec![InputSetup {
            pin,
            line: None,
            pull,
            // The kernel's debounce would hide the edges `watch` is for.
            debounce: std::time::Duration::ZERO,
            interrupt: edges,
            count: None,
        }],
        outputs: vec![],
    }
}

/// Opens the board and says on stderr which backend it is and why, so the
/// level on stdout stays one line a script can read.
fn open(
    kind: BoardKind,
    chip: Option<&str>,
    plan: &PinPlan,
    edges: EdgeSender,
) -> Result<Box<dyn Board>, CliError> {
    let opened = crate::board::open_plan(kind, chip, plan, (&[], &[]), edges)?;
    if kind != BoardKind::Sim {
        eprintln!("board: {} ({})", opened.board.describe(), opened.why);
    }
    Ok(opened.board)
}

fn check(pin: u8) -> Result<u8, CliError> {
    if i64::from(pin) > MAX_BCM_PIN {
        return Err(CliError::Input(format!(
            "{pin} is not a GPIO pin; allowed: BCM numbers 0 to {MAX_BCM_PIN} (GPIO17 is 17, physical pin 11)"
        )));
    }
    Ok(pin)
}

/// The words of `crate::level`; no toggle: `gpio write` claims the pin
/// afresh, so there is no level of pinpost's to flip.
fn parse_level(text: &str) -> Result<bool, CliError> {
    crate::level::parse(text).ok_or_else(|| {
        CliError::Input(format!(
            "{:?} is not a level; use on or off",
            text.to_ascii_lowercase()
        ))
    })
}

fn words(high: bool) -> &'static str {
    if high { "high" } else { "low" }
}

async fn say(text: &str) -> Result<(), CliError> {
    let mut out = tokio::io::stdout();
    let written = async {
        out.write_all(text.as_bytes()).await?;
        out.flush().await
    };
    written
        .await
        .map_err(|e| CliError::Input(format!("cannot write to standard output: {e}")))
}

#[cfg(test)]
mod tests {
    use super::parse_level;

    #[test]
    fn write_takes_the_level_words_but_not_toggle() {
        assert!(parse_level("HIGH").unwrap());
        assert!(!parse_level("0").unwrap());
        let e = parse_level("Toggle").unwrap_err().to_string();
        assert_eq!(e, "\"toggle\" is not a level; use on or off");
    }
}
