//! `pinpost release publish` and `pinpost release status`: a signed
//! release sent through the broker the fleet already uses, and what each
//! device says of its update.
//!
//! The package goes once, in retained chunks under
//! `<prefix>/release/<sha256>/<n>` that any device of the fleet may read;
//! the manifest goes, retained, to each chosen device's `release` topic.
//! Only a device that holds a manifest fetches, and it trusts nothing of
//! the package until the whole matches what the release key signed: the
//! broker and the operator's account carry releases, they cannot make one.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::args::ConnectionArgs;
use super::args::release::FleetArgs;
use super::fleet::{as_operator, check_id, io, known_devices};
use super::signed;
use super::{CliError, config_for, connect};
use crate::link::{Link, LinkEvent, Qos, Retry, WINDOW};
use crate::release::manifest::Manifest;
use crate::topics::{RELEASE_CHUNK, Topics, release_chunk};

/// How long a publish may wait for the broker's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the retained reports get to arrive, counted from the last.
const QUIET: Duration = Duration::from_secs(2);

/// Which devices a release goes to.
pub(super) enum Targets<'a> {
    Listed(&'a [String]),
    All,
    Percent(u8),
}

pub(super) async fn publish(
    manifest_file: &Path,
    package: Option<&Path>,
    targets: Targets<'_>,
    fleet: &FleetArgs,
    connection: &ConnectionArgs,
) -> Result<(), CliError> {
    let (manifest, envelope) = open(manifest_file, fleet)?;
    // The package is checked before anything goes: a device would refuse
    // a mismatch only after fetching all of it.
    let package = signed::check_package(&manifest, manifest_file, package)?;
    let size = manifest.size;
    let devices = choose(&targets, fleet, &manifest)?;
    let (config, prefix) = as_operator_on(fleet, connection)?;
    let mut link = connect(&config, "release", Retry::Never, Vec::new()).await?;
    let mut sender = Sender::new(&mut link);
    let mut file = std::fs::File::open(&package).map_err(|e| io(&package, e))?;
    let chunks = size.div_ceil(RELEASE_CHUNK as u64);
    let mut buffer = vec![0u8; RELEASE_CHUNK];
    let started = Instant::now();
    for n in 0..chunks {
        let want = (size - n * RELEASE_CHUNK as u64).min(RELEASE_CHUNK as u64) as usize;
        file.read_exact(&mut buffer[..want])
            .map_err(|e| io(&package, e))?;
        let topic = release_chunk(&prefix, &manifest.sha256, n);
        sender.send(&topic, buffer[..want].to_vec()).await?;
    }
    for device in &devices {
        let topic = Topics::new(&prefix, device).release();
        sender.send(&topic, envelope.clone()).await?;
    }
    sender.drain().await?;
    let secs = started.elapsed().as_secs_f64();
    super::close(&mut link).await?;
    println!(
        "Published {} {} for {}: {size} bytes in {chunks} chunks under {prefix}/release/{}/ \
         ({secs:.1} s), and its manifest to {}.",
        manifest.package,
        manifest.version,
        manifest.architecture,
        manifest.sha256,
        devices.join(", ")
    );
    println!("Each device fetches it, checks it and says how it goes: pinpost release status");
    Ok(())
}

/// The config to connect with as the operator, and the devices' topic
/// prefix.
pub(super) fn as_operator_on(
    fleet: &FleetArgs,
    connection: &ConnectionArgs,
) -> Result<(crate::config::Config, String), CliError> {
    let config = config_for(&as_operator(&fleet.dir, &fleet.operator, connection))?;
    let prefix = fleet
        .prefix
        .clone()
        .unwrap_or_else(|| config.device.topic_prefix.clone());
    Ok((config, prefix))
}

/// The manifest opened with the release key, as the devices will.
fn open_signed(file: &Path, fleet: &FleetArgs) -> Result<(Manifest, Vec<u8>), CliError> {
    let key_file = fleet
        .release_key
        .clone()
        .unwrap_or_else(|| fleet.dir.join("release.pub"));
    signed::open(file, &signed::public_key(&key_file)?)
}

/// As [`open_signed`], and refused once expired: every device would
/// refuse it.
fn open(file: &Path, fleet: &FleetArgs) -> Result<(Manifest, Vec<u8>), CliError> {
    let (manifest, envelope) = open_signed(file, fleet)?;
    if manifest.expires <= crate::utc::now_unix() {
        return Err(CliError::Input(format!(
            "{}: the manifest expired at {}; every device would refuse it: sign the package \
             again",
            file.display(),
            crate::utc::human(manifest.expires)
        )));
    }
    Ok((manifest, envelope))
}

/// The devices named, or all of the fleet's, or a share of them.
fn choose(
    targets: &Targets<'_>,
    fleet: &FleetArgs,
    manifest: &Manifest,
) -> Result<Vec<String>, CliError> {
    let fleet_devices = || -> Result<Vec<String>, CliError> {
        let all: Vec<String> = known_devices(&fleet.dir)?
            .into_iter()
            .filter(|d| *d != fleet.operator)
            .collect();
        if all.is_empty() {
            return Err(CliError::Input(format!(
                "{} has no device folders: name the devices with --devices",
                fleet.dir.join("devices").display()
            )));
        }
        Ok(all)
    };
    match targets {
        Targets::Listed(ids) => {
            for id in *ids {
                check_id(id, "a device id")?;
            }
            let mut ids = ids.to_vec();
            ids.sort();
            ids.dedup();
            Ok(ids)
        }
        Targets::All => fleet_devices(),
        Targets::Percent(percent) => {
            let mut all = fleet_devices()?;
            // The same share for the same release, whichever order the
            // folders are read in; another release picks others first.
            all.sort_by_cached_key(|id| {
                ring::digest::digest(
                    &ring::digest::SHA256,
                    format!("{}/{id}", manifest.sha256).as_bytes(),
                )
                .as_ref()
                .to_vec()
            });
            let take = (all.len() * usize::from(*percent)).div_ceil(100).max(1);
            all.truncate(take);
            all.sort();
            Ok(all)
        }
    }
}

/// Publishes retained at QoS 1 with a window of acknowledgements.
pub(super) struct Sender<'a> {
    link: &'a mut Link,
    token: u64,
    waiting: VecDeque<u64>,
}

impl<'a> Sender<'a> {
    pub(super) fn new(link: &'a mut Link) -> Sender<'a> {
        Sender {
            link,
            token: 0,
            waiting: VecDeque::new(),
        }
    }

    pub(super) async fn send(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), CliError> {
        while self.waiting.len() >= WINDOW / 2 {
            self.wait_one().await?;
        }
        self.token += 1;
        self.link
            .publisher()
            .try_send(self.token, topic, payload, true)?;
        self.waiting.push_back(self.token);
        Ok(())
    }

    pub(super) async fn drain(&mut self) -> Result<(), CliError> {
        while !self.waiting.is_empty() {
            self.wait_one().await?;
        }
        Ok(())
    }

    async fn wait_one(&mut self) -> Result<(), CliError> {
        let sent = self.waiting.len() as u64;
        let waited = tokio::time::timeout(ACK_TIMEOUT, async {
            loop {
                match self.link.next_event().await {
                    Some(LinkEvent::Acked { token: Some(t), .. }) => {
                        self.waiting.retain(|w| *w != t);
                        return Ok(());
                    }
                    Some(LinkEvent::Down { failure, .. }) => {
                        return Err(CliError::Connect(Box::new(failure)));
                    }
                    Some(_) => {}
                    None => return Err(CliError::Link(crate::link::LinkError::Stopped)),
                }
            }
        })
        .await;
        waited.unwrap_or(Err(CliError::NoAnswer {
            confirmed: 0,
            sent,
            secs: ACK_TIMEOUT.as_secs(),
        }))
    }
}

pub(super) async fn status(fleet: &FleetArgs, connection: &ConnectionArgs) -> Result<(), CliError> {
    let (config, prefix) = as_operator_on(fleet, connection)?;
    let mut seen: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut configs: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for (suffix, into) in [("/update", &mut seen), ("/config/state", &mut configs)] {
        let filter = format!("{prefix}/+{suffix}");
        let mut link = subscribed(&config, &filter).await?;
        for (topic, payload) in retained(&mut link, &filter).await? {
            let id = topic
                .strip_prefix(&format!("{prefix}/"))
                .and_then(|t| t.strip_suffix(suffix))
                .unwrap_or(&topic)
                .to_string();
            let report = serde_json::from_slice(&payload).unwrap_or_else(|_| {
                serde_json::json!({"state": "unreadable", "reason": String::from_utf8_lossy(&payload)})
            });
            into.insert(id, report);
        }
        link.disconnect().await?;
    }
    let known: Vec<String> = known_devices(&fleet.dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|d| *d != fleet.operator)
        .collect();
    print!("{}", table(&seen, &known));
    if !configs.is_empty() {
        print!("{}", config_table(&configs));
    }
    Ok(())
}

/// Which config each device runs, and how its last signed one went.
fn config_table(seen: &BTreeMap<String, serde_json::Value>) -> String {
    let text = |v: &serde_json::Value, key: &str| {
        v.get(key)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let short = |sha: String| sha.chars().take(12).collect::<String>();
    let width = seen.keys().map(String::len).max().unwrap_or(6).max(6);
    let mut out = format!(
        "\n{:width$}  {:12}  {:12}  {:12}  {}\n",
        "device", "config", "runs", "signed", "since / why"
    );
    for (id, report) in seen {
        let why = Some(text(report, "reason"))
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| text(report, "ts"));
        out.push_str(&format!(
            "{id:width$}  {:12}  {:12}  {:12}  {why}\n",
            text(report, "state"),
            short(text(report, "running")),
            short(text(report, "config")),
        ));
    }
    out
}

async fn subscribed(config: &crate::config::Config, filter: &str) -> Result<Link, CliError> {
    connect(
        config,
        "release",
        Retry::Never,
        vec![(filter.to_string(), Qos::AtLeastOnce)],
    )
    .await
}

/// The retained messages under `filter` (subscribed on `link`): those
/// that arrive until [`QUIET`] passes without one after the SUBACK.
async fn retained(link: &mut Link, filter: &str) -> Result<BTreeMap<String, Vec<u8>>, CliError> {
    let mut seen = BTreeMap::new();
    let mut quiet_until: Option<Instant> = None;
    loop {
        let wait = async {
            match quiet_until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wait => return Ok(seen),
            event = link.next_event() => match event {
                Some(LinkEvent::Subscribed { refused }) if !refused.is_empty() => {
                    return Err(CliError::Input(format!(
                        "the broker refused the subscription to {filter}: the operator's \
                         account may not read it (check the ACL from `pinpost certs mosquitto`)"
                    )));
                }
                Some(LinkEvent::Subscribed { .. }) => quiet_until = Some(Instant::now() + QUIET),
                Some(LinkEvent::Message { topic, payload, .. }) => {
                    if quiet_until.is_some() {
                        quiet_until = Some(Instant::now() + QUIET);
                    }
                    seen.insert(topic, payload);
                }
                Some(LinkEvent::Down { failure, .. }) => {
                    return Err(CliError::Connect(Box::new(failure)));
                }
                Some(_) => {}
                None => return Err(CliError::Link(crate::link::LinkError::Stopped)),
            },
        }
    }
}

/// `release withdraw`: the manifest cleared from every device that holds
/// it (each drops what it fetched), then the package's chunks cleared
/// from the broker.
pub(super) async fn withdraw(
    manifest_file: &Path,
    fleet: &FleetArgs,
    connection: &ConnectionArgs,
) -> Result<(), CliError> {
    // An expired release is withdrawn all the same.
    let (manifest, envelope) = open_signed(manifest_file, fleet)?;
    let (config, prefix) = as_operator_on(fleet, connection)?;
    let filter = format!("{prefix}/+/release");
    let mut link = subscribed(&config, &filter).await?;
    let holders: Vec<String> = retained(&mut link, &filter)
        .await?
        .into_iter()
        .filter(|(_, payload)| *payload == envelope)
        .map(|(topic, _)| topic)
        .collect();
    let chunks = manifest.size.div_ceil(RELEASE_CHUNK as u64);
    let mut sender = Sender::new(&mut link);
    for topic in &holders {
        sender.send(topic, Vec::new()).await?;
    }
    for n in 0..chunks {
        sender
            .send(&release_chunk(&prefix, &manifest.sha256, n), Vec::new())
            .await?;
    }
    sender.drain().await?;
    link.disconnect().await?;
    let devices: Vec<&str> = holders
        .iter()
        .filter_map(|t| {
            t.strip_prefix(&format!("{prefix}/"))?
                .strip_suffix("/release")
        })
        .collect();
    println!(
        "Withdrew {} {}: {}; cleared its {chunks} chunks under {prefix}/release/{}/.",
        manifest.package,
        manifest.version,
        if devices.is_empty() {
            "no device held its manifest".to_string()
        } else {
            format!(
                "cleared the manifest of {} (each drops what it fetched)",
                devices.join(", ")
            )
        },
        manifest.sha256
    );
    Ok(())
}

/// One line per device: each that reported, then each known one that
/// did not.
fn table(seen: &BTreeMap<String, serde_json::Value>, known: &[String]) -> String {
    let text =
        |v: &serde_json::Value, key: &str| v.get(key).and_then(|x| x.as_str()).map(str::to_string);
    let mut out = String::new();
    let width = seen
        .keys()
        .chain(known)
        .map(String::len)
        .max()
        .unwrap_or(6)
        .max(6);
    out.push_str(&format!(
        "{:width$}  {:10}  {:14}  {:14}  {:>4}  {}\n",
        "device", "state", "runs", "release", "%", "since / why"
    ));
    for (id, report) in seen {
        let percent = report
            .get("percent")
            .and_then(serde_json::Value::as_u64)
            .map_or(String::new(), |p| p.to_string());
        let why = text(report, "reason")
            .or_else(|| text(report, "ts"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{id:width$}  {:10}  {:14}  {:14}  {percent:>4}  {why}\n",
            text(report, "state").unwrap_or_else(|| "?".into()),
            text(report, "installed").unwrap_or_default(),
            text(report, "version").unwrap_or_default(),
        ));
    }
    for id in known.iter().filter(|id| !seen.contains_key(*id)) {
        out.push_str(&format!(
            "{id:width$}  {:10}  {:14}  {:14}  {:>4}  no update reported (not sent one, or updates \
             are off: [update] release_key)\n",
            "-", "", "", ""
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_each_device_and_each_known_one_that_said_nothing() {
        let mut seen = BTreeMap::new();
        seen.insert(
            "pi-01".to_string(),
            serde_json::json!({"state": "verified", "installed": "0.2.0", "version": "0.3.0-1", "percent": 100, "ts": "2026-12-07T10:00:00.000Z"}),
        );
        seen.insert(
            "pi-02".to_string(),
            serde_json::json!({"state": "refused", "installed": "0.2.0", "version": "0.1.0-1", "reason": "0.1.0-1 is older"}),
        );
        let out = table(&seen, &["pi-01".into(), "pi-02".into(), "pi-03".into()]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(
            lines[1].starts_with("pi-01")
                && lines[1].contains("verified")
                && lines[1].contains(" 100")
        );
        assert!(lines[2].contains("refused") && lines[2].contains("0.1.0-1 is older"));
        assert!(lines[3].starts_with("pi-03") && lines[3].contains("no update reported"));
    }

    #[test]
    fn the_config_table_names_what_runs_and_why_a_signed_one_was_refused() {
        let mut seen = BTreeMap::new();
        seen.insert(
            "pi-01".to_string(),
            serde_json::json!({"state": "refused", "running": "a".repeat(64), "config": "b".repeat(64), "reason": "outbox.max_age: \"soon\" is not a duration"}),
        );
        let out = config_table(&seen);
        let line = out.lines().last().unwrap();
        assert!(
            line.starts_with("pi-01") && line.contains("refused"),
            "{out}"
        );
        assert!(
            line.contains(&"a".repeat(12)) && !line.contains(&"a".repeat(13)),
            "{out}"
        );
        assert!(line.contains("outbox.max_age"), "{out}");
    }
}
