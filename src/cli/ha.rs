//! `pinpost ha`: the Home Assistant discovery messages a config produces,
//! printed for a person to read before enabling it. Nothing is sent.

use super::CliError;
use crate::cli::args::HaArgs;
use crate::config::{self, Overrides};
use crate::homeassistant;

pub(super) fn run(args: &HaArgs) -> Result<(), CliError> {
    let chosen = super::required_config(args.config.as_deref())?;
    let mut config = config::load(Some(&chosen), &Overrides::default())?;
    if !config.homeassistant.enabled {
        eprintln!(
            "note: {} does not set [homeassistant] enabled = true; this is what enabling it \
             would announce",
            chosen.path().display()
        );
        config.homeassistant.enabled = true;
    }
    let previous = match crate::agent::homeassistant_record(&config.outbox.path) {
        Ok(previous) => previous,
        Err(why) => {
            eprintln!(
                "note: the agent's record of what it announced ({}) {why}; removals are not shown",
                config.outbox.path.display()
            );
            homeassistant::Announced::default()
        }
    };
    let plan = homeassistant::plan(&config, &previous);
    for m in &plan.messages {
        if m.payload.is_empty() {
            println!(
                "{}\n(empty: removes what was announced there before)\n",
                m.topic
            );
            continue;
        }
        let shown = serde_json::from_slice::<serde_json::Value>(&m.payload)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| String::from_utf8_lossy(&m.payload).into_owned());
        println!("{}\n{shown}\n", m.topic);
    }
    for note in &plan.notes {
        eprintln!("note: {note}");
    }
    let entities: usize = plan.announced.topics.values().map(|c| c.len()).sum();
    eprintln!(
        "{} message(s), retained, QoS 1, announcing {entities} entities of device {:?}",
        plan.messages.len(),
        config.device.id
    );
    Ok(())
}
