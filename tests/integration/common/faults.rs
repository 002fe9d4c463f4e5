//! The broker's side of a faulty front ([`super::front`]): what Mosquitto
//! says back to the client is passed on, doubled, held back or followed by
//! a close, as a [`Fault`] says. Mosquitto behind it is real, so what it
//! received is what a subscriber there sees.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use super::front::{Fault, read_packet};

/// A PUBACK for packet id 0xBEEF, which no client here ever has in flight.
const UNKNOWN_PUBACK: [u8; 4] = [0x40, 2, 0xBE, 0xEF];

/// Passes the broker's packets to the client, playing `fault`; when it
/// closes the connection (or the broker does), `close` tells the other
/// direction to stop too.
pub(super) async fn answer<R, W>(
    mut from_broker: R,
    mut to_client: W,
    fault: Option<Fault>,
    close: oneshot::Sender<()>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut acks = 0usize;
    while let Some(packet) = read_packet(&mut from_broker).await {
        let puback = packet[0] >> 4 == 4;
        let first = acks == 0;
        if puback {
            acks += 1;
        }
        let (out, then_close): (Vec<&[u8]>, bool) = match (fault, puback) {
            (Some(Fault::AckThenClose), true) if first => (vec![&packet], true),
            (Some(Fault::CloseInsteadOfAck), true) => (vec![], true),
            (Some(Fault::DuplicateAcks), true) => (vec![&packet, &packet], false),
            (Some(Fault::UnknownAck), true) if first => (vec![&packet, &UNKNOWN_PUBACK], false),
            (Some(Fault::WithholdAcks), true) => (vec![], false),
            _ => (vec![&packet], false),
        };
        let mut written = true;
        for bytes in out {
            written &= to_client.write_all(bytes).await.is_ok();
        }
        if !written || to_client.flush().await.is_err() || then_close {
            break;
        }
    }
    let _ = to_client.shutdown().await;
    let _ = close.send(());
}
