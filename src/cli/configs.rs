//! `pinpost release sign-config` and `release publish` of a signed config:
//! a device's whole config file, checked here with the checker the device
//! runs, signed with the release key, and left retained on the device's
//! `config` topic. The device checks it again, the install helper writes
//! it and puts the old one back if the agent cannot connect with it.

use std::path::Path;
use std::time::Duration;

use super::args::ConnectionArgs;
use super::args::release::FleetArgs;
use super::rollout::{Sender, Targets, as_operator_on};
use super::signed::{KEY_LIMIT, public_key, read_limited};
use super::{CliError, connect};
use crate::link::Retry;
use crate::release::config::{self, MAX_CONFIG, MAX_SIGNED_CONFIG, SignedConfig};
use crate::release::key::Signer;
use crate::topics::Topics;

/// Whether `file` holds a signed config rather than a manifest (read
/// without checking the signature: that comes after).
pub(super) fn is_signed_config(file: &Path) -> bool {
    let Ok(bytes) = read_limited(file, MAX_SIGNED_CONFIG, "a signed config") else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("body").and_then(|b| b.as_str()).map(str::to_string))
        .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
        .is_some_and(|body| body.get("kind").and_then(|k| k.as_str()) == Some("config"))
}

/// `release sign-config FILE.toml`: FILE.toml.signed beside it.
pub(super) fn sign(
    file: &Path,
    key_file: &Path,
    expires: Duration,
    out: Option<&Path>,
) -> Result<(), CliError> {
    let bytes = read_limited(file, MAX_CONFIG, "a config")?;
    let text = String::from_utf8(bytes)
        .map_err(|_| CliError::Input(format!("{} is not UTF-8 text", file.display())))?;
    // The device's checker, here first: a config it would refuse is not
    // signed. Relative paths are the device's (beside its config file),
    // and the files it names for the broker are the device's: its key
    // never leaves it, so they are not opened here (the device checks
    // them before it applies the config).
    let elsewhere = crate::config::Overrides {
        elsewhere: true,
        ..Default::default()
    };
    let checked = crate::config::from_text(&text, Some(file), &elsewhere)?;
    let signer = Signer::from_pem(&read_limited(key_file, KEY_LIMIT, "a key")?)
        .map_err(|e| CliError::Input(format!("{}: {e}", key_file.display())))?;
    let now = crate::utc::now_unix();
    let signed = SignedConfig {
        kind: "config".into(),
        format: 1,
        device: checked.device.id.clone(),
        config: text,
        issued: now,
        expires: now.saturating_add(i64::try_from(expires.as_secs()).unwrap_or(i64::MAX)),
    };
    let sealed = signed
        .sign(&signer)
        .map_err(|e| CliError::Input(format!("{}: {e}", file.display())))?;
    let path = out.map_or_else(
        || {
            let mut name = file.as_os_str().to_os_string();
            name.push(".signed");
            name.into()
        },
        Path::to_path_buf,
    );
    super::fleet::write_file(&path, &sealed, 0o644)?;
    println!(
        "Signed the config of {} (SHA-256 {}) with the release key {}: {}; the device applies \
         it until {}. Send it: pinpost release publish {} --devices {}",
        signed.device,
        signed.sha256(),
        signer.public().id(),
        path.display(),
        crate::utc::human(signed.expires),
        path.display(),
        signed.device
    );
    Ok(())
}

/// `release publish FILE.signed --devices ID`: retained on the device's
/// `config` topic.
pub(super) async fn publish(
    file: &Path,
    targets: &Targets<'_>,
    fleet: &FleetArgs,
    connection: &ConnectionArgs,
) -> Result<(), CliError> {
    let key_file = fleet
        .release_key
        .clone()
        .unwrap_or_else(|| fleet.dir.join("release.pub"));
    let sealed = read_limited(file, MAX_SIGNED_CONFIG, "a signed config")?;
    let signed = config::open(&sealed, &public_key(&key_file)?)
        .map_err(|e| CliError::Input(format!("{}: {e}", file.display())))?;
    if signed.expires <= crate::utc::now_unix() {
        return Err(CliError::Input(format!(
            "{}: it expired at {}; sign it again (every device would refuse it)",
            file.display(),
            crate::utc::human(signed.expires)
        )));
    }
    let one = [signed.device.clone()];
    match targets {
        Targets::Listed(list) if *list == &one[..] => {}
        _ => {
            return Err(CliError::Input(format!(
                "{} is the config of {} alone: publish it with --devices {}",
                file.display(),
                signed.device,
                signed.device
            )));
        }
    }
    let (config, prefix) = as_operator_on(fleet, connection)?;
    let mut link = connect(&config, "release", Retry::Never, Vec::new()).await?;
    let topic = Topics::new(&prefix, &signed.device).config();
    let mut sender = Sender::new(&mut link);
    sender.send(&topic, sealed).await?;
    sender.drain().await?;
    super::close(&mut link).await?;
    println!(
        "Published the config of {} (SHA-256 {}) on {topic}. The device checks it, and says on \
         {prefix}/{}/config/state which config runs and how this one went.",
        signed.device,
        signed.sha256(),
        signed.device
    );
    Ok(())
}
