//! The sinkhole: one listener on 0.0.0.0:P. Linux delivers a connection to any 127.x.y.z:P to
//! it, so every dial an honest node makes to a fake advert (127.66.X.Y:P) lands here, and the
//! address it dialled is the accepted socket's own address (getsockname). It counts attempts
//! and distinct fake addresses per second since the attacker started, then hangs up: the lab's
//! own measure of how fast nodes dial what they were told, independent of the nodes' metrics.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Seconds of per-second counts kept (an hour; later seconds add to the last).
const MAX_SECONDS: usize = 3600;
/// Distinct destinations remembered at most (the pusher sends 10,000).
const MAX_DISTINCT: usize = 100_000;
/// The fake adverts' addresses: 127.66.0.0/16.
pub const FAKE_PREFIX: [u8; 2] = [127, 66];

#[derive(Default)]
struct Tally {
    attempts: u64,
    /// Connections to an address outside 127.66/16 (not ours: counted, not measured).
    other: u64,
    seen: HashSet<SocketAddr>,
    /// Per second since `started`: attempts, and fake addresses dialled for the first time.
    per_second: Vec<u64>,
    new_per_second: Vec<u64>,
}

pub struct Sinkhole {
    listener: tokio::net::TcpListener,
    port: u16,
    started: Instant,
    tally: Mutex<Tally>,
}

/// What the sinkhole saw, in the status file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SinkholeReport {
    pub port: u16,
    /// Connections accepted to fake addresses (a node's retries count again).
    pub attempts: u64,
    /// Connections to other addresses on the port.
    pub other: u64,
    /// Distinct fake addresses dialled.
    pub distinct: u64,
    /// Per second since the attacker started.
    pub per_second: Vec<u64>,
    pub new_per_second: Vec<u64>,
}

impl Sinkhole {
    pub async fn bind() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
        let port = listener.local_addr()?.port();
        Ok(Self {
            listener,
            port,
            started: Instant::now(),
            tally: Mutex::new(Tally::default()),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Accepts and counts until aborted; a failed accept (out of descriptors) is retried.
    pub async fn run(&self) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    if let Ok(to) = stream.local_addr() {
                        self.count(to);
                    }
                    drop(stream);
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    }

    fn count(&self, to: SocketAddr) {
        let second = (self.started.elapsed().as_secs() as usize).min(MAX_SECONDS - 1);
        let Ok(mut t) = self.tally.lock() else {
            return;
        };
        if !is_fake(to.ip()) {
            t.other += 1;
            return;
        }
        t.attempts += 1;
        bump(&mut t.per_second, second);
        if t.seen.len() < MAX_DISTINCT && t.seen.insert(to) {
            bump(&mut t.new_per_second, second);
        }
    }

    pub fn report(&self) -> SinkholeReport {
        let Ok(t) = self.tally.lock() else {
            return SinkholeReport::default();
        };
        SinkholeReport {
            port: self.port,
            attempts: t.attempts,
            other: t.other,
            distinct: t.seen.len() as u64,
            per_second: t.per_second.clone(),
            new_per_second: t.new_per_second.clone(),
        }
    }
}

fn bump(v: &mut Vec<u64>, i: usize) {
    if v.len() <= i {
        v.resize(i + 1, 0);
    }
    v[i] += 1;
}

pub fn is_fake(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[..2] == FAKE_PREFIX)
}

/// The most `values` add up to in any `window` consecutive entries (e.g. dials in any minute).
pub fn max_window(values: &[u64], window: usize) -> u64 {
    if values.is_empty() || window == 0 {
        return 0;
    }
    let w = window.min(values.len());
    let mut sum: u64 = values[..w].iter().sum();
    let mut best = sum;
    for i in w..values.len() {
        sum = sum + values[i] - values[i - w];
        best = best.max(sum);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_fake_addresses() {
        assert_eq!(max_window(&[1, 5, 2, 0, 7], 2), 7);
        assert_eq!(max_window(&[1, 5, 2], 60), 8);
        assert_eq!(max_window(&[], 60), 0);
        assert!(is_fake("127.66.1.2".parse().unwrap()));
        assert!(!is_fake("127.0.0.1".parse().unwrap()));
    }

    #[tokio::test]
    async fn a_dial_to_a_fake_loopback_address_lands_in_the_sinkhole() {
        let hole = std::sync::Arc::new(Sinkhole::bind().await.unwrap());
        let port = hole.port();
        let running = hole.clone();
        let task = tokio::spawn(async move { running.run().await });
        for ip in ["127.66.1.1", "127.66.1.2", "127.66.1.2", "127.0.0.1"] {
            let _ = tokio::net::TcpStream::connect((ip, port)).await.unwrap();
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while hole.report().attempts + hole.report().other < 4 && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        task.abort();
        let r = hole.report();
        assert_eq!((r.attempts, r.distinct, r.other), (3, 2, 1), "{r:?}");
    }
}
