//! Tests of the write batching carried in `patches/rumqttc` (see its
//! PINPOST.md): publishes already queued when rumqttc's event loop picks
//! one up leave in one write, not one write each.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use rumqttc::{AsyncClient, AsyncReadWrite, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Writes that carried data, over every stream [`counting`] wrapped.
static WRITES: AtomicUsize = AtomicUsize::new(0);

struct Counting(TcpStream);

fn counting(tcp: TcpStream) -> Box<dyn AsyncReadWrite> {
    Box::new(Counting(tcp))
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.0).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                WRITES.fetch_add(1, Ordering::SeqCst);
            }
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn publishes_queued_together_leave_in_one_write() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    // A broker that accepts the CONNECT and then only reads.
    let broker = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 4096];
        let _connect = socket.read(&mut buf).await.expect("CONNECT");
        // CONNACK: accepted, no session.
        socket
            .write_all(&[0x20, 0x02, 0x00, 0x00])
            .await
            .expect("CONNACK");
        let mut received = 0;
        while let Ok(n) = socket.read(&mut buf).await {
            if n == 0 {
                break;
            }
            received += n;
        }
        received
    });
    let mut options = MqttOptions::new("batching", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(60));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let mut network = eventloop.network_options();
    network.set_tcp_stream_wrapper(counting);
    eventloop.set_network_options(network);
    match eventloop.poll().await {
        Ok(Event::Incoming(Packet::ConnAck(_))) => {}
        other => panic!("expected the CONNACK, got {other:?}"),
    }
    let connected = WRITES.load(Ordering::SeqCst);
    // Twenty publishes queued before the event loop runs again, as the
    // outbox refills its window after a batch of PUBACKs.
    for i in 0..20u8 {
        client
            .try_publish("t", QoS::AtLeastOnce, false, vec![i])
            .expect("queued");
    }
    let mut sent = 0;
    while sent < 20 {
        let event = tokio::time::timeout(Duration::from_secs(5), eventloop.poll())
            .await
            .expect("the publishes go out")
            .expect("the link stays up");
        if let Event::Outgoing(Outgoing::Publish(_)) = event {
            sent += 1;
        }
    }
    let writes = WRITES.load(Ordering::SeqCst) - connected;
    assert_eq!(writes, 1, "20 queued publishes took {writes} writes");
    drop(eventloop);
    let received = broker.await.expect("broker");
    // Each publish: fixed header 2, topic 3, packet id 2, payload 1.
    assert_eq!(received, 20 * 8);
}
