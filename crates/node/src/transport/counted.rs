//! [`Counted`]: a socket that adds every byte it reads and writes to the node's
//! [`WireBytes`], so `wire_bytes_total` sees the peer port's connections and our dials whole
//! (handshakes, TLS records, HTTP/2 frames), not only the messages inside them. It sits
//! directly on the TCP stream, below TLS; one relaxed atomic add per completed read or write,
//! nothing allocated.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::telemetry::wire::WireBytes;

/// `inner`, counted into `tally`.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    tally: Arc<WireBytes>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, tally: Arc<WireBytes>) -> Self {
        Self { inner, tally }
    }

    /// The stream itself, for what does not move bytes (peeking, addresses).
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.tally.add_received(buf.filled().len() - before);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.tally.add_sent(n);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            this.tally.add_sent(n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn counts_what_moves_both_ways() {
        let (a, mut b) = tokio::io::duplex(64);
        let tally = Arc::new(WireBytes::default());
        let mut a = Counted::new(a, tally.clone());
        a.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        b.read_exact(&mut got).await.unwrap();
        b.write_all(b"world!!").await.unwrap();
        let mut back = [0u8; 7];
        a.read_exact(&mut back).await.unwrap();
        assert_eq!((tally.sent(), tally.received()), (5, 7));
    }

    #[tokio::test]
    async fn counts_partial_writes_as_written_and_nothing_at_end_of_stream() {
        // A 4-byte pipe takes 4 of the 10 bytes offered: only those count.
        let (a, b) = tokio::io::duplex(4);
        let tally = Arc::new(WireBytes::default());
        let mut a = Counted::new(a, tally.clone());
        assert_eq!(a.write(&[7u8; 10]).await.unwrap(), 4);
        assert_eq!(tally.sent(), 4);
        drop(b);
        let mut buf = [0u8; 8];
        assert_eq!(a.read(&mut buf).await.unwrap(), 0);
        assert_eq!(tally.received(), 0);
    }

    #[tokio::test]
    async fn vectored_writes_count_what_went() {
        let (a, mut b) = tokio::io::duplex(64);
        let tally = Arc::new(WireBytes::default());
        let mut a = Counted::new(a, tally.clone());
        let bufs = [io::IoSlice::new(b"ab"), io::IoSlice::new(b"cde")];
        let n = a.write_vectored(&bufs).await.unwrap();
        let mut got = vec![0u8; n];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(tally.sent(), n as u64);
    }
}
