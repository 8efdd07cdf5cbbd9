//! Connection limits of one port: a total cap, a per-address cap and a per-address rate of new
//! connections, checked at accept ([`ConnLimits::admit`]); and [`Watched`], a connection's
//! bytes with an idle timeout (no bytes either way for `limits.idle_timeout`: the next read
//! fails, and the server closes the connection).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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
use super::h2::HeaderScan;
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
    /// Whether an address is banned (the peer port's: a banned peer's connections are refused
    /// before any byte is read).
    banned: OnceLock<BanCheck>,
}

/// Tells whether connections from an address are refused outright.
pub type BanCheck = Box<dyn Fn(IpAddr) -> bool + Send + Sync>;

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
            banned: OnceLock::new(),
        })
    }

    /// Refuses connections from addresses `check` says are banned (set once).
    pub fn refuse_banned(&self, check: BanCheck) {
        let _ = self.banned.set(check);
    }

    /// Admits a new connection from `ip`, or refuses it (counted by reason); the connection
    /// counts as open until its guard is dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnGuard> {
        let ip = ip.to_canonical();
        if self.banned.get().is_some_and(|banned| banned(ip)) {
            self.refuse(ip, "banned");
            return None;
        }
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
                self.refuse(ip, reason);
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

    fn refuse(&self, ip: IpAddr, reason: &'static str) {
        let labels = [
            KeyValue::new("port", self.port),
            KeyValue::new("reason", reason),
        ];
        self.metrics.connections_refused_total.add(1, &labels);
        tracing::debug!(port = self.port, %ip, reason, "connection refused");
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

/// A connection's bytes with an idle and an HTTP/2 header timeout: past either, a pending read
/// fails with `TimedOut` (counted as `connections_closed_total{reason="idle"}` or
/// `{reason="header_timeout"}`) and the server drops the connection.
pub struct Watched<T> {
    inner: T,
    guard: ConnGuard,
    /// Milliseconds since `base` of the last byte either way.
    last: AtomicU64,
    base: Instant,
    /// Wakes the reader at the next deadline (idle or header).
    timer: Pin<Box<Sleep>>,
    timed_out: bool,
    scan: HeaderScan,
    /// Set once a request's headers were wholly read (shared: the server's connection task
    /// tells a slow first request from a keep-alive connection left idle by it).
    served: Arc<AtomicBool>,
    /// Since when the client owes us a header block: from accept until its first request, and
    /// from the start of each header block to its end. `None`: nothing owed (or HTTP/1.1).
    headers_since: Option<Instant>,
    /// Milliseconds since `base` when the address was last checked against the bans.
    ban_checked: u64,
}

/// How often an open connection looks whether its address was banned since it was admitted
/// (a banned flooder's open connection is closed within this, not kept until it ends).
const BAN_CHECK_EVERY_MS: u64 = 1_000;

impl<T> Watched<T> {
    pub fn new(inner: T, guard: ConnGuard) -> Self {
        let base = Instant::now();
        let limits = &guard.limits;
        let first = base + limits.idle_timeout.min(limits.header_timeout);
        Self {
            inner,
            guard,
            last: AtomicU64::new(0),
            base,
            timer: Box::pin(tokio::time::sleep_until(first)),
            timed_out: false,
            scan: HeaderScan::default(),
            served: Arc::new(AtomicBool::new(false)),
            headers_since: Some(base),
            ban_checked: 0,
        }
    }

    /// Whether the address was banned since the connection was admitted (looked at most once
    /// per [`BAN_CHECK_EVERY_MS`], when bytes arrive).
    fn banned_since(&mut self) -> bool {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        if ms < self.ban_checked + BAN_CHECK_EVERY_MS {
            return false;
        }
        self.ban_checked = ms;
        let limits = &self.guard.limits;
        limits
            .banned
            .get()
            .is_some_and(|banned| banned(self.guard.ip))
    }

    /// Becomes true once a request's headers were wholly read on this connection.
    pub fn served(&self) -> Arc<AtomicBool> {
        self.served.clone()
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Follows the client's header blocks through `fresh`, the bytes just read.
    fn scan(&mut self, fresh: &[u8]) {
        if !self.scan.watching() {
            return;
        }
        let ended = self.scan.feed(fresh);
        if ended > 0 {
            self.served.store(true, Ordering::Relaxed);
        }
        let now = Instant::now();
        if !self.scan.watching() {
            self.headers_since = None; // HTTP/1.1 past its first request: hyper times the rest
        } else if self.scan.in_headers() {
            if self.headers_since.is_none() || ended > 0 {
                self.headers_since = Some(now);
                let deadline = now + self.guard.limits.header_timeout;
                if deadline < self.timer.deadline() {
                    self.timer.as_mut().reset(deadline);
                }
            }
        } else if ended > 0 {
            self.headers_since = None;
        }
    }

    /// Why the connection is to be closed now, if it is: idle for the timeout, or a header
    /// block (or the first) overdue. Re-arms the timer for the next deadline otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        let (idle, header) = (
            self.guard.limits.idle_timeout,
            self.guard.limits.header_timeout,
        );
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return None;
            }
            let now = Instant::now();
            let header_deadline = self.headers_since.map(|since| since + header);
            if header_deadline.is_some_and(|deadline| deadline <= now) {
                return Some("header_timeout");
            }
            let last = self.base + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let idle_deadline = last + idle;
            if idle_deadline <= now {
                return Some("idle");
            }
            let next = header_deadline.map_or(idle_deadline, |h| h.min(idle_deadline));
            self.timer.as_mut().reset(next);
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
                    if this.banned_since() {
                        this.guard.limits.closed("banned");
                        let closed = io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "connection closed: its address is banned",
                        );
                        return Poll::Ready(Err(closed));
                    }
                    this.touch();
                    this.scan(&buf.filled()[before..]);
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                if this.timed_out {
                    return Poll::Pending;
                }
                let Some(reason) = this.expired(cx) else {
                    return Poll::Pending;
                };
                this.timed_out = true;
                this.guard.limits.closed(reason);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connection closed: {reason} (limits)"),
                )))
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
