//! Prompt TCP: the link's socket sends small packets at once and
//! acknowledges what it receives at once. It owns the two socket options
//! and when they are set; it knows nothing of MQTT or TLS.
//!
//! Why both (issue 17, measured against Mosquitto as installed, TLS 1.3
//! with client certificates): after the handshake the broker sends its
//! session tickets, then the CONNACK. Its Nagle algorithm holds the small
//! CONNACK until the tickets are acknowledged, and Linux delays that ACK by
//! up to 40 ms. The same happens to every later exchange whenever one side
//! has unacknowledged data out. Connect-to-CONNACK with a minimal client:
//! 88 ms by default, 44 ms with TCP_NODELAY alone, 44 ms with TCP_QUICKACK
//! alone, 2 ms with both. TCP_NODELAY is a lasting option; TCP_QUICKACK is
//! not (the kernel drops back to delayed ACKs when it sees an interactive
//! exchange), so it is set again after every read that brought data.
//!
//! rumqttc 0.25 has no hook for the socket after it connects;
//! `patches/rumqttc` adds one (`NetworkOptions::set_tcp_stream_wrapper`),
//! through which [`wrap`] is installed.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use rumqttc::AsyncReadWrite;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream with no-delay on that re-arms quick ACKs after each read
/// that returned data.
#[derive(Debug)]
pub(super) struct PromptAcks<S> {
    inner: S,
}

impl<S: AsFd> PromptAcks<S> {
    /// Turns no-delay on and quick ACKs on for the first read. Should the
    /// socket refuse no-delay the link still works, only slower, so that
    /// is logged, not fatal.
    pub fn new(inner: S) -> PromptAcks<S> {
        if let Err(e) = rustix::net::sockopt::set_tcp_nodelay(&inner, true) {
            tracing::debug!("could not set TCP_NODELAY on the broker connection: {e}");
        }
        rearm(&inner);
        PromptAcks { inner }
    }
}

/// The link's stream wrapper (a plain function: rumqttc keeps a pointer).
pub(super) fn wrap(tcp: TcpStream) -> Box<dyn AsyncReadWrite> {
    Box::new(PromptAcks::new(tcp))
}

/// Best effort: a failure costs at most a delayed ACK, never the link.
fn rearm(fd: impl AsFd) {
    let _ = rustix::net::sockopt::set_tcp_quickack(fd, true);
}

impl<S: AsFd> AsFd for PromptAcks<S> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl<S: AsyncRead + AsFd + Unpin> AsyncRead for PromptAcks<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if buf.filled().len() > before {
                rearm(&self.inner);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PromptAcks<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::sockopt::{tcp_nodelay, tcp_quickack};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.expect("connect"), accepted.expect("accept").0)
    }

    /// Replies at once to what `peer` sends, a few times over: the kernel
    /// sees an interactive exchange and turns to delayed ACKs ("pingpong").
    async fn ping_pong(ours: &mut (impl AsyncRead + AsyncWrite + Unpin), peer: &mut TcpStream) {
        let mut byte = [0u8; 1];
        // Many rounds: the kernel needs a few quick replies, and a loaded
        // machine may make one of them slow.
        for _ in 0..16 {
            peer.write_all(b"p").await.expect("peer writes");
            ours.read_exact(&mut byte).await.expect("we read");
            ours.write_all(b"q").await.expect("we reply");
            peer.read_exact(&mut byte).await.expect("peer reads");
        }
        peer.write_all(b"last").await.expect("peer writes");
        let mut last = [0u8; 4];
        ours.read_exact(&mut last).await.expect("we read");
    }

    #[tokio::test]
    async fn a_plain_socket_falls_back_to_delayed_acks_in_an_exchange() {
        // The premise the wrapper exists for, checked on this kernel.
        let (mut ours, mut peer) = pair().await;
        ping_pong(&mut ours, &mut peer).await;
        assert!(!tcp_quickack(&ours).expect("getsockopt"));
        assert!(!tcp_nodelay(&ours).expect("getsockopt"));
    }

    #[tokio::test]
    async fn the_wrapper_sets_no_delay_and_re_arms_quick_acks_after_each_read() {
        let (ours, mut peer) = pair().await;
        let mut ours = PromptAcks::new(ours);
        assert!(tcp_nodelay(&ours).expect("getsockopt"));
        ping_pong(&mut ours, &mut peer).await;
        assert!(tcp_quickack(&ours).expect("getsockopt"));
        assert!(tcp_nodelay(&ours).expect("getsockopt"));
    }
}
