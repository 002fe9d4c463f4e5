//! `pinpost publish`: like mosquitto_pub, but exits 0 only once the broker
//! has confirmed every message (QoS 1) or every message was written and the
//! connection closed cleanly (QoS 0).

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::task::JoinHandle;

use super::{CliError, config_for, connect};
use crate::cli::args::{MessageSource, PublishArgs};
use crate::link::{self, LinkError, LinkEvent, Publisher, Qos, Retry};

/// The messages to send: known up front, or read line by line while connected.
enum Messages {
    Ready(Vec<u8>),
    Lines,
}

pub(super) async fn run(args: PublishArgs) -> Result<(), CliError> {
    let config = config_for(&args.connection)?;
    link::check_topic(&args.topic)?;
    // Read files and stdin before connecting, so a wrong path costs no
    // connection and a broker never sees half a job.
    let messages = read_source(&args.source).await?;
    let qos = if args.qos == 0 {
        Qos::AtMostOnce
    } else {
        Qos::AtLeastOnce
    };
    let mut link = connect(&config, "pub", Retry::Never, Vec::new()).await?;
    let mut producer = produce(messages, link.publisher(), args.topic, qos, args.retain);
    let mut total: Option<u64> = None;
    let (mut written, mut confirmed) = (0u64, 0u64);
    // Armed while something waits for the broker; every answer re-arms it.
    let patience = tokio::time::sleep(args.timeout);
    tokio::pin!(patience);
    let mut waiting = false;
    loop {
        let done = match qos {
            Qos::AtMostOnce => written,
            Qos::AtLeastOnce => confirmed,
        };
        if total.is_some_and(|n| done >= n) {
            break;
        }
        let unanswered = match qos {
            Qos::AtMostOnce => total.is_some_and(|n| written < n),
            Qos::AtLeastOnce => written > confirmed || total.is_some_and(|n| confirmed < n),
        };
        if unanswered && !waiting {
            patience
                .as_mut()
                .reset(tokio::time::Instant::now() + args.timeout);
        }
        waiting = unanswered;
        tokio::select! {
            () = &mut patience, if waiting => {
                return Err(CliError::NoAnswer {
                    confirmed: if qos == Qos::AtMostOnce { 0 } else { confirmed },
                    sent: total.unwrap_or(written).max(written),
                    secs: args.timeout.as_secs(),
                });
            }
            result = &mut producer, if total.is_none() => {
                let count = result.map_err(|e| CliError::Input(format!("reading input failed: {e}")))??;
                total = Some(count);
            }
            event = link.next_event() => match event {
                Some(LinkEvent::Sent { .. }) => written += 1,
                Some(LinkEvent::Acked { .. }) => {
                    confirmed += 1;
                    waiting = false;
                }
                Some(LinkEvent::Down { failure, .. }) => {
                    return Err(CliError::Unconfirmed {
                        confirmed: if qos == Qos::AtMostOnce { 0 } else { confirmed },
                        sent: total.unwrap_or(written),
                        failure: Box::new(failure),
                    });
                }
                Some(_) => {}
                None => return Err(LinkError::Stopped.into()),
            },
        }
    }
    tracing::debug!(
        messages = total.unwrap_or(0),
        "all confirmed; disconnecting"
    );
    link.disconnect().await?;
    loop {
        match link.next_event().await {
            Some(LinkEvent::Closed) | None => return Ok(()),
            Some(LinkEvent::Down { failure, .. }) if qos == Qos::AtMostOnce => {
                return Err(CliError::Unconfirmed {
                    confirmed: 0,
                    sent: written,
                    failure: Box::new(failure),
                });
            }
            Some(_) => {}
        }
    }
}

async fn read_source(source: &MessageSource) -> Result<Messages, CliError> {
    if let Some(text) = &source.message {
        return Ok(Messages::Ready(text.clone().into_bytes()));
    }
    if let Some(path) = &source.file {
        return tokio::fs::read(path)
            .await
            .map(Messages::Ready)
            .map_err(|e| {
                CliError::Input(format!(
                    "cannot read message file {}: {}",
                    path.display(),
                    crate::words::io_words(&e)
                ))
            });
    }
    if source.stdin_file {
        let mut all = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut all)
            .await
            .map_err(|e| CliError::Input(format!("cannot read standard input: {e}")))?;
        return Ok(Messages::Ready(all));
    }
    if source.stdin_line {
        return Ok(Messages::Lines);
    }
    Ok(Messages::Ready(Vec::new()))
}

/// Queues every message and returns how many there were.
fn produce(
    messages: Messages,
    publisher: Publisher,
    topic: String,
    qos: Qos,
    retain: bool,
) -> JoinHandle<Result<u64, CliError>> {
    tokio::spawn(async move {
        match messages {
            Messages::Ready(payload) => {
                publisher.publish(&topic, payload, qos, retain).await?;
                Ok(1)
            }
            Messages::Lines => {
                let mut lines = BufReader::new(tokio::io::stdin()).lines();
                let mut count = 0;
                while let Some(line) = lines
                    .next_line()
                    .await
                    .map_err(|e| CliError::Input(format!("cannot read standard input: {e}")))?
                {
                    if line.is_empty() {
                        continue;
                    }
                    publisher
                        .publish(&topic, line.into_bytes(), qos, retain)
                        .await?;
                    count += 1;
                }
                Ok(count)
            }
        }
    })
}
