//! `pinpost subscribe`: prints messages like mosquitto_sub. A wrong address
//! fails at once; a link that drops later reconnects by itself.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::{CliError, config_for, connect};
use crate::cli::args::SubscribeArgs;
use crate::link::{LinkError, LinkEvent, Qos, Retry};

pub(super) async fn run(args: SubscribeArgs) -> Result<(), CliError> {
    let config = config_for(&args.connection)?;
    for filter in &args.topics {
        check_filter(filter).map_err(CliError::Input)?;
    }
    let qos = if args.qos == 0 {
        Qos::AtMostOnce
    } else {
        Qos::AtLeastOnce
    };
    let deadline = args
        .timeout
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let subscriptions = args.topics.iter().map(|t| (t.clone(), qos)).collect();
    let connecting = connect(&config, "sub", Retry::OnceConnected, subscriptions);
    let mut link = match deadline {
        Some(at) => tokio::time::timeout_at(at, connecting)
            .await
            .map_err(|_| timed_out(&args, 0))??,
        None => connecting.await?,
    };
    let mut stdout = tokio::io::stdout();
    let mut received = 0u64;
    let mut clash_said = false;
    loop {
        let event = match deadline {
            Some(at) => tokio::time::timeout_at(at, link.next_event())
                .await
                .map_err(|_| timed_out(&args, received))?,
            None => link.next_event().await,
        };
        match event {
            Some(LinkEvent::Message { topic, payload, .. }) => {
                let mut line = Vec::with_capacity(topic.len() + payload.len() + 2);
                if args.verbose {
                    line.extend_from_slice(topic.as_bytes());
                    line.push(b' ');
                }
                line.extend_from_slice(&payload);
                line.push(b'\n');
                write_out(&mut stdout, &line).await?;
                received += 1;
                if args.count.is_some_and(|c| received >= c) {
                    link.disconnect().await?;
                    return Ok(());
                }
            }
            Some(LinkEvent::Subscribed { refused }) => {
                if refused.len() == args.topics.len() {
                    return Err(CliError::SubscriptionRefused(refused));
                }
                if !refused.is_empty() {
                    tracing::warn!(
                        "the broker refused {}; the others are active",
                        refused.join(", ")
                    );
                }
                tracing::info!(topics = %args.topics.join(" "), "subscribed");
            }
            Some(LinkEvent::Down {
                failure,
                retry_in: Some(delay),
                ..
            }) => {
                // A broker that ties client ids to certificates closes
                // this connection whenever the agent with the same
                // certificate comes back: the case the tools' port is for.
                if failure.closed_by_broker() && !std::mem::replace(&mut clash_said, true) {
                    if let Some(words) = crate::preflight::agents_port_clash(&config) {
                        eprintln!("pinpost: warning: {words}");
                    }
                }
                tracing::warn!(
                    "{failure}; retrying in {}",
                    humantime::format_duration(round(delay))
                );
            }
            Some(LinkEvent::Down {
                failure,
                retry_in: None,
                ..
            }) => {
                return Err(CliError::Connect(Box::new(failure)));
            }
            Some(LinkEvent::Connected { .. }) => tracing::warn!("reconnected"),
            Some(_) => {}
            None => return Err(LinkError::Stopped.into()),
        }
    }
}

fn timed_out(args: &SubscribeArgs, received: u64) -> CliError {
    CliError::TimedOut {
        secs: args.timeout.unwrap_or(0),
        received,
    }
}

async fn write_out(stdout: &mut tokio::io::Stdout, bytes: &[u8]) -> Result<(), CliError> {
    let result = async {
        stdout.write_all(bytes).await?;
        stdout.flush().await
    };
    result
        .await
        .map_err(|e| CliError::Input(format!("cannot write to standard output: {e}")))
}

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64 / 100 * 100)
}

/// MQTT's rules for a subscription filter: `#` only as the whole last level,
/// `+` only as a whole level.
fn check_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("a topic filter cannot be empty".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(format!(
                "invalid topic filter {filter:?}: # must be a whole level and the last one (e.g. \"pinpost/#\")"
            ));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!(
                "invalid topic filter {filter:?}: + must be a whole level (e.g. \"pinpost/+/status\")"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_filter;

    #[test]
    fn wildcards_must_fill_whole_levels() {
        assert!(check_filter("pinpost/#").is_ok());
        assert!(check_filter("pinpost/+/status").is_ok());
        assert!(check_filter("#").is_ok());
        assert!(check_filter("pinpost/#/x").is_err());
        assert!(check_filter("pinpost/a+").is_err());
        assert!(check_filter("").is_err());
    }
}
