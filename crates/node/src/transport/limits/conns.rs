//! Connection limits of one port: a total cap, a per-address cap and a per-address rate of new
//! connections, checked at accept ([`ConnLimits::admit`]); and [`Watched`], a connection's
//! bytes with an idle timeout (no bytes either way for `limits.idle_timeout`: the next read
//! fails, and the server closes the connection).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use governor::clock::DefaultClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use opentelemetry::KeyValue;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::MAX_TRACKED_PEERS;
use crate::config::LimitsConfig;
use crate::telemetry::Metrics;

type Gcra = RateLimiter<NotKeyed, InMemoryState, DefaultClock, NoOpMiddleware<std::time::Instant>>;

/// One address's connections.
struct Address {
    open: u32,
    /// New connections per minute.
    rate: Gcra,
    /// Logical time of its last connection, for least-recently-used eviction.
    used: u64,
}

struct State {
    total: u32,
    addresses: HashMap<IpAddr, Address>,
    uses: u64,
}

/// The connection limits of one port (`port` labels its metrics: `peer` or `http`).
pub struct ConnLimits {
    port: &'static str,
    max: u32,
    per_address: u32,
    rate: Quota,
    loopback_exempt: bool,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

impl ConnLimits {
    pub fn new(port: &'static str, config: &LimitsConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        let per_minute =
            NonZeroU32::new(config.connections_per_address_per_minute).unwrap_or(NonZeroU32::MIN);
        Arc::new(Self {
            port,
            max: config.max_connections,
            per_address: config.max_connections_per_address,
            rate: Quota::per_minute(per_minute),
            loopback_exempt: config.loopback_exempt,
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            state: Mutex::new(State {
                total: 0,
                addresses: HashMap::new(),
                uses: 0,
            }),
            metrics,
        })
    }

    /// Admits a new connection from `ip`, or refuses it (counted by reason); the connection
    /// counts as open until its guard is dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnGuard> {
        let ip = ip.to_canonical();
        let refused = {
            let mut state = self.lock();
            state.uses += 1;
            let used = state.uses;
            if !state.addresses.contains_key(&ip) && state.addresses.len() >= MAX_TRACKED_PEERS {
                evict_idle(&mut state.addresses);
            }
            let rate = self.rate;
            let total = state.total;
            let address = state.addresses.entry(ip).or_insert_with(|| Address {
                open: 0,
                rate: RateLimiter::direct(rate),
                used,
            });
            address.used = used;
            let exempt = self.loopback_exempt && ip.is_loopback();
            let refused = if total >= self.max {
                Some("max_connections")
            } else if exempt {
                address.open += 1;
                None
            } else if address.open >= self.per_address {
                Some("max_per_address")
            } else if address.rate.check().is_err() {
                Some("connection_rate")
            } else {
                address.open += 1;
                None
            };
            if refused.is_none() {
                state.total += 1;
            }
            (refused, state.total)
        };
        match refused {
            (Some(reason), _) => {
                let labels = [
                    KeyValue::new("port", self.port),
                    KeyValue::new("reason", reason),
                ];
                self.metrics.connections_refused_total.add(1, &labels);
                tracing::debug!(port = self.port, %ip, reason, "connection refused");
                None
            }
            (None, total) => {
                self.gauge(total);
                Some(ConnGuard {
                    limits: self.clone(),
                    ip,
                })
            }
        }
    }

    /// Counts a connection the node closed (`header_timeout`, `idle`).
    pub fn closed(&self, reason: &'static str) {
        let labels = [
            KeyValue::new("port", self.port),
            KeyValue::new("reason", reason),
        ];
        self.metrics.connections_closed_total.add(1, &labels);
    }

    fn release(&self, ip: IpAddr) {
        let total = {
            let mut state = self.lock();
            state.total = state.total.saturating_sub(1);
            if let Some(address) = state.addresses.get_mut(&ip) {
                address.open = address.open.saturating_sub(1);
            }
            state.total
        };
        self.gauge(total);
    }

    fn gauge(&self, total: u32) {
        let port = [KeyValue::new("port", self.port)];
        self.metrics
            .connections_open
            .record(i64::from(total), &port);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Drops the least recently seen address with no connection open (if every tracked address
/// has one, the map is allowed past its bound: the connection cap bounds it anyway).
fn evict_idle(addresses: &mut HashMap<IpAddr, Address>) {
    let oldest = addresses
        .iter()
        .filter(|(_, a)| a.open == 0)
        .min_by_key(|(_, a)| a.used)
        .map(|(ip, _)| *ip);
    if let Some(ip) = oldest {
        addresses.remove(&ip);
    }
}

/// An admitted connection; it stops counting when dropped.
pub struct ConnGuard {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl ConnGuard {
    pub fn limits(&self) -> &Arc<ConnLimits> {
        &self.limits
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.limits.release(self.ip);
    }
}

/// A connection's bytes with an idle timeout: when no byte went either way for the timeout, a
/// pending read fails with `TimedOut` (counted as `connections_closed_total{reason="idle"}`)
/// and the server drops the connection.
pub struct Watched<T> {
    inner: T,
    guard: ConnGuard,
    /// Milliseconds since `base` of the last byte either way.
    last: AtomicU64,
    base: Instant,
    timer: Pin<Box<Sleep>>,
    timed_out: bool,
}

impl<T> Watched<T> {
    pub fn new(inner: T, guard: ConnGuard) -> Self {
        let base = Instant::now();
        let idle = guard.limits.idle_timeout;
        Self {
            inner,
            guard,
            last: AtomicU64::new(0),
            base,
            timer: Box::pin(tokio::time::sleep_until(base + idle)),
            timed_out: false,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Whether the connection has been idle for the timeout (re-arming the timer if bytes
    /// moved since it was set).
    fn idle(&mut self, cx: &mut Context<'_>) -> bool {
        let idle = self.guard.limits.idle_timeout;
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let last = self.base + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + idle;
            if deadline <= Instant::now() {
                return true;
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                if !this.timed_out && this.idle(cx) {
                    this.timed_out = true;
                    this.guard.limits.closed("idle");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle past limits.idle_timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf));
        if matches!(written, Ok(n) if n > 0) {
            this.touch();
        }
        Poll::Ready(written)
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
        let written = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs));
        if matches!(written, Ok(n) if n > 0) {
            this.touch();
        }
        Poll::Ready(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
