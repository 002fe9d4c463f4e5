//! `pinpost check`: the config, then every certificate and key file
//! (offline, [`crate::preflight`]), then a real connection that subscribes to
//! the device's own topic and publishes a probe there. Each step is printed
//! as it is known; a connection failure is worded by the same diagnosis as
//! `publish` and `run`.

use std::time::Duration;

use super::{CliError, config_for, connect};
use crate::board::survey::Finding;
use crate::cli::args::CheckArgs;
use crate::config::Config;
use crate::link::{LinkEvent, Qos, Retry};
use crate::preflight::{self, Mark, Step};
use crate::topics::Topics;

/// How long a probe may take to come back from the broker.
const PROBE_WAIT: Duration = Duration::from_secs(5);

pub(super) async fn run(args: CheckArgs) -> Result<(), CliError> {
    let mut report = Report::default();
    let config = match config_for(&args.connection) {
        Ok(c) => c,
        Err(e) => {
            report.say(Step::fail(e.to_string()));
            return report.finish();
        }
    };
    let broker = &config.broker;
    let scheme = if broker.tls.is_some() {
        "mqtts"
    } else {
        "mqtt"
    };
    let brokers = broker
        .endpoints
        .iter()
        .map(|e| format!("{scheme}://{e}"))
        .collect::<Vec<_>>()
        .join(", ");
    report.say(Step::pass(format!(
        "config {}: device {}, broker {brokers}",
        config
            .file
            .as_ref()
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "(flags only)".into()),
        config.device.id,
    )));
    for finding in crate::board::survey::survey(&config) {
        report.say(match finding {
            Finding::Fine(words) => Step::pass(words),
            Finding::Worth(words) => Step::warn(words),
        });
    }
    report.say(clock_step(&config.clock));
    for step in preflight::files(&config, crate::utc::now_unix()) {
        report.say(step);
    }
    if args.offline {
        return report.finish();
    }
    // Each broker of several in turn: the device must be able to use
    // whichever it fails over to.
    let several = config.broker.endpoints.len() > 1;
    for endpoint in &config.broker.endpoints {
        let mut one = config.clone();
        one.broker.host = endpoint.host.clone();
        one.broker.port = endpoint.port;
        one.broker.endpoints = vec![endpoint.clone()];
        probe(&one, several, &mut report).await;
    }
    report.finish()
}

/// The clock, as the agent judges it (and the kernel, which the tools may
/// ask). Only a clock that was never set is worth fixing here: an
/// unsynchronised one is usual on a laptop and harmless to the check.
fn clock_step(clock: &crate::config::Clock) -> Step {
    let signals = crate::clock::trust::signals(clock, true, None);
    let trust = crate::clock::trust::judge(&signals);
    let reads = crate::utc::rfc3339_millis(signals.wall_ms);
    if signals.wall_ms < crate::clock::trust::NOT_BEFORE_MS {
        Step::warn(format!(
            "clock: {}; set it, or let NTP set it, before trusting any ts",
            trust.why
        ))
    } else if trust.trusted {
        Step::pass(format!("clock: reads {reads}, trusted: {}", trust.why))
    } else {
        Step::pass(format!(
            "clock: reads {reads}, not confirmed by a time source: {}",
            trust.why
        ))
    }
}

/// Connects to the (one) broker of `config`, subscribes to the device's own
/// topic and publishes a probe there, saying each step.
/// `name_it`: there are several, so the failures say which.
async fn probe(config: &Config, name_it: bool, report: &mut Report) {
    let broker = &config.broker;
    let topics = Topics::new(&config.device.topic_prefix, &config.device.id);
    let topic = topics.check();
    // On the tools' port the ACL names each device's certificate subject.
    let tools_acl = match config.broker.cli_port {
        Some(port) => format!(
            ". On the tools' port ({port}, broker.cli_port) the ACL must also name this \
             certificate: `user CN={id}` with `topic read {prefix}/{id}/#` and `topic write \
             {prefix}/{id}/check`, which \
             `pinpost certs mosquitto --force` writes for every device in certs/devices/ \
             (copy its pinpost.acl to the broker and reload Mosquitto)",
            id = config.device.id,
            prefix = config.device.topic_prefix
        ),
        None => String::new(),
    };
    let link = connect(
        config,
        "check",
        Retry::Never,
        vec![(topic.clone(), Qos::AtLeastOnce)],
    )
    .await;
    let mut link = match link {
        Ok(link) => link,
        Err(e) => {
            let words = e.to_string();
            report.say(Step::fail(if report.already_said(&words) {
                "not connecting until the problem above is fixed".to_string()
            } else {
                let to = if name_it {
                    format!(" to {}:{}", broker.host, broker.port)
                } else {
                    String::new()
                };
                format!("connecting{to}: {words}")
            }));
            return;
        }
    };
    report.say(Step::pass(format!(
        "connected to {}:{} and logged in",
        broker.host, broker.port
    )));
    let probe = format!("pinpost check {}", crate::utc::now_unix_millis());
    let outcome = tokio::time::timeout(PROBE_WAIT, async {
        let mut subscribed = false;
        loop {
            match link.next_event().await {
                Some(LinkEvent::Subscribed { refused }) if !refused.is_empty() => {
                    return Step::fail(format!(
                        "the broker refused the subscription to {topic}: its ACL does not let \
                         this device read its own topics; Mosquitto needs `pattern read \
                         {}/%u/#` in its acl_file (pinpost certs mosquitto writes one){tools_acl}",
                        config.device.topic_prefix
                    ));
                }
                Some(LinkEvent::Subscribed { .. }) if !subscribed => {
                    subscribed = true;
                    if let Err(e) = link
                        .publisher()
                        .publish(&topic, probe.clone().into_bytes(), Qos::AtLeastOnce, false)
                        .await
                    {
                        return Step::fail(format!("publishing the probe: {e}"));
                    }
                }
                Some(LinkEvent::Message {
                    topic: got,
                    payload,
                    ..
                }) if payload == probe.as_bytes() => {
                    return match topics.rewritten_dots(&got) {
                        Some(words) => Step::fail(words),
                        None => {
                            Step::pass(format!("published a probe to {topic} and received it back"))
                        }
                    };
                }
                Some(LinkEvent::Down { failure, .. }) => {
                    return Step::fail(format!(
                        "the connection dropped during the probe: {failure}"
                    ));
                }
                None => return Step::fail("the connection ended during the probe"),
                Some(_) => {}
            }
        }
    })
    .await;
    report.say(outcome.unwrap_or_else(|_| {
        Step::fail(format!(
            "the probe published to {topic} did not come back within {}s: the broker accepted \
             it but did not deliver it, which is what Mosquitto does when its ACL forbids \
             the topic. The device must be allowed to read {p}/<its id>/# and write \
             {p}/<its id>/check (`pattern read {p}/%u/#` and `pattern write {p}/%u/check` with \
             use_identity_as_username, as pinpost certs mosquitto writes){tools_acl}",
            PROBE_WAIT.as_secs(),
            p = config.device.topic_prefix
        ))
    }));
    let _ = link.disconnect().await;
}

#[derive(Default)]
struct Report {
    failed: usize,
    warned: usize,
    said: Vec<String>,
}

impl Report {
    fn already_said(&self, words: &str) -> bool {
        self.said.iter().any(|s| s == words)
    }

    fn say(&mut self, step: Step) {
        self.said.push(step.text.clone());
        match step.mark {
            Mark::Fail => self.failed += 1,
            Mark::Warn => self.warned += 1,
            Mark::Pass => {}
        }
        println!("{step}");
    }

    fn finish(self) -> Result<(), CliError> {
        if self.failed > 0 {
            Err(CliError::CheckFailed {
                failed: self.failed,
                warned: self.warned,
            })
        } else {
            if self.warned > 0 {
                println!(
                    "no problem that stops pinpost; {} worth fixing (!)",
                    self.warned
                );
            } else {
                println!("all good");
            }
            Ok(())
        }
    }
}
