//! `pinpost sensors`: every configured sensor read once, through the same
//! worker threads, timeouts and retries as the agent, printed as a table.
//! For the field: is the chip wired, is the overlay loaded, what does it say.

use std::time::Duration;

use tokio::time::Instant;

use super::CliError;
use crate::cli::args::SensorsArgs;
use crate::config::{self, Overrides};
use crate::sensors::Sensing;

pub(super) async fn run(args: SensorsArgs) -> Result<(), CliError> {
    if args.scan {
        return scan(&args);
    }
    let chosen = super::required_config(args.config.as_deref())?;
    let config = config::load(Some(&chosen), &Overrides::default())?;
    let sensors = &config.sensors;
    if sensors.is_empty() {
        println!(
            "no [[sensor]] in {}: add one (deploy/config.example.toml shows every kind)",
            chosen.path().display()
        );
        return Ok(());
    }
    let mut sensing = Sensing::start(sensors);
    let now = Instant::now();
    for i in 0..sensors.len() {
        sensing.request(i, now);
    }
    let mut results = vec![None; sensors.len()];
    // A sensor may take its timeout on every attempt, and the pauses between.
    let longest = sensors
        .iter()
        .map(|s| s.timeout * (s.retries + 1) + Duration::from_millis(100) * s.retries)
        .max()
        .unwrap_or_default();
    let deadline = now + longest + Duration::from_millis(200);
    while results.iter().any(Option::is_none) {
        match tokio::time::timeout_at(deadline, sensing.next()).await {
            Ok(Some(outcome)) => {
                if let Some(slot) = results.get_mut(outcome.sensor) {
                    *slot = Some(outcome.result.map_err(|e| e.to_string()));
                }
            }
            _ => break,
        }
    }
    let width = sensors
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "{:<width$}  {:<16} {:>12}  UNIT",
        "SENSOR", "MEASUREMENT", "VALUE"
    );
    let mut failed = 0;
    for (sensor, result) in sensors.iter().zip(results) {
        match result {
            Some(Ok(measurements)) => {
                for m in measurements {
                    println!(
                        "{:<width$}  {:<16} {:>12}  {}",
                        sensor.name,
                        m.name.as_deref().unwrap_or("-"),
                        format_value(m.value),
                        m.unit
                    );
                }
            }
            Some(Err(why)) => {
                failed += 1;
                println!("{:<width$}  \u{2717} {why}", sensor.name);
            }
            None => {
                failed += 1;
                println!(
                    "{:<width$}  \u{2717} no answer within {:?} (timeout {:?}, {} retries)",
                    sensor.name, longest, sensor.timeout, sensor.retries
                );
            }
        }
    }
    if failed > 0 {
        return Err(CliError::SensorsFailed {
            failed,
            total: sensors.len(),
        });
    }
    Ok(())
}

/// Enough digits to read, none that mean nothing.
fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e12 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// `--scan`: what is wired, and the sections to paste. Exit 0 when
/// anything was found, 1 when nothing answered anywhere.
fn scan(args: &SensorsArgs) -> Result<(), CliError> {
    let buses = crate::sensors::scan::buses(&args.dev_dir);
    let (text, sections) = crate::sensors::scan::report(&args.w1_dir, buses);
    print!("{text}");
    if sections.is_empty() {
        return Err(CliError::Input(
            "nothing pinpost reads was found (see above for what answered and why)".into(),
        ));
    }
    println!("\n# Paste into the config ({} found):", sections.len());
    for section in sections {
        println!("\n{section}");
    }
    Ok(())
}
