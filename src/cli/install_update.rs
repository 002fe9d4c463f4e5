//! `pinpost install-update`: the root helper's command line. Reads the
//! config (root's copy: the release key, the spool, the health timeout),
//! asks whether the clock is set, runs `updater::run` on this machine and
//! prints what it did, one line per install.

use super::CliError;
use crate::cli::args::InstallUpdateArgs;
use crate::config::{self, Overrides};
use crate::release::key::Public;
use crate::updater::{self, Plan, Real};

/// Runs `pinpost install-update`.
pub(super) fn run(args: &InstallUpdateArgs) -> Result<(), CliError> {
    let chosen = super::required_config(args.config.as_deref())?;
    let config = config::load(Some(&chosen), &Overrides::default())?;
    let Some(key_file) = &config.update.release_key else {
        // Not a failure: the unit runs at every boot, updates on or off.
        println!(
            "updates are off in {}: [update] release_key is not set, so no release is trusted \
             and nothing is installed",
            chosen.path().display()
        );
        return Ok(());
    };
    let pem = crate::whole_file::read_small(key_file, 16 * 1024, "a public key")
        .map_err(|e| {
            CliError::Input(format!(
                "cannot read the release key {}: {}",
                key_file.display(),
                crate::words::io_words(&e)
            ))
        })?
        .ok_or_else(|| {
            CliError::Input(format!(
                "the release key {} ([update] release_key) does not exist",
                key_file.display()
            ))
        })?;
    let key = Public::from_pem(&pem)
        .map_err(|e| CliError::Input(format!("{}: {e}", key_file.display())))?;
    let trust =
        crate::clock::trust::judge(&crate::clock::trust::signals(&config.clock, true, None));
    let plan = Plan {
        key,
        ready: config.outbox.path.join("update").join("ready"),
        dir: config.update.helper_dir.clone(),
        health_timeout: config.update.health_timeout,
        clock_trusted: trust.trusted,
        config_file: chosen.path().to_path_buf(),
        device: config.device.id.clone(),
    };
    if !trust.trusted {
        tracing::info!(
            "the clock is not trusted ({}): a manifest's expiry is left to the agent, which judged it \
             on a set clock",
            trust.why
        );
    }
    let did = updater::run(&plan, &mut Real::new()).map_err(CliError::Input)?;
    if did.is_empty() {
        println!("nothing to install");
    }
    for d in did {
        println!("{d}");
    }
    Ok(())
}
