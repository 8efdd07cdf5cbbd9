//! The `[limits]` section: what one peer may ask of the node, and how many connections the two
//! ports hold. Rates are per peer: per verified id when its connection proved one, else per
//! remote address (an unverified peer can make new ids for free, not new addresses).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Membership calls (register, heartbeat, peer list, exchange, ping) per second per peer.
    pub membership_per_second: u32,
    /// Announcement calls or messages (NotifyTransaction, GOSSIP_ANNOUNCE, ...) per second per peer.
    pub announcements_per_second: u32,
    /// Transaction ids announced per second per peer (an announcement may carry many).
    pub announced_transactions_per_second: u32,
    /// Pulls (GetTransaction, StreamTransaction, GOSSIP_FETCH) per second per peer.
    pub pulls_per_second: u32,
    /// Pulls served to one peer at the same time.
    pub pulls_in_flight: u32,
    /// Bytes per second received from one peer; a peer slightly over waits, far over is refused.
    pub received_bytes_per_second: u64,
    /// New connections per remote address per minute, on each port.
    pub connections_per_address_per_minute: u32,
    /// Connections open at once on each port (peer port and HTTP port each).
    pub max_connections: u32,
    /// Connections open at once from one remote address, on each port.
    pub max_connections_per_address: u32,
    /// Loopback addresses are exempt from the per-address connection cap and rate: the
    /// operator's own tools and a lab of many nodes on one host connect from there. The total
    /// cap still holds.
    pub loopback_exempt: bool,
    /// A client must send a request's headers within this, and its first request within this of
    /// connecting (slow-loris clients are closed): HTTP/1.1 by hyper, HTTP/2 read off the frames.
    #[serde(with = "super::duration")]
    pub header_timeout: Duration,
    /// A connection that carried no bytes either way for this long is closed.
    #[serde(with = "super::duration")]
    pub idle_timeout: Duration,
    /// Node-wide budget for transaction bodies sent to peers, shared between them in turn (64 KiB
    /// at a time). 0: unlimited. Announcements and membership are never held by it.
    pub upload_bytes_per_second: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            // An honest peer sends a heartbeat every 10 s and a discovery round every few
            // minutes: well under 1 per second. 20 leaves room for restarts and bursts of
            // re-registration, and still caps a flooder at a trickle.
            membership_per_second: 20,
            // The three rates below are sized so that an honest peer at this node's own
            // target rates (an offline queue drained at 20,000 tx/s, issue 17) never meets
            // them; the first defaults (500 / 5,000 / 1,000) cut a queue drain to one peer to
            // ~520 tx/s. What they stop is a flood; lying and junk are the score's job.
            // Our links batch announcements (one message per batch); Sorcha's C# peers send
            // one NotifyTransaction per transaction: 5,000 calls/s is a C# peer at the
            // network throughput target.
            announcements_per_second: 5_000,
            // Twice the 20,000 tx/s queue drain, so a drain with retries stays under it.
            announced_transactions_per_second: 40_000,
            // Counted per hash (a GOSSIP_FETCH carries up to 64): as many as can be announced.
            pulls_per_second: 40_000,
            // Bitcoin Core keeps at most 100 transaction requests in flight per peer
            // (MAX_PEER_TX_REQUEST_IN_FLIGHT).
            pulls_in_flight: 100,
            // 64 MiB/s: six maximum-size (10 MiB) bodies a second from one peer, far above a
            // gossip share, below what one peer needs to saturate a 1 Gbit/s link.
            received_bytes_per_second: 64 * 1024 * 1024,
            // One a second on average, bursting to 60: a peer reconnecting after failures does
            // a few; a process looping on connect is cut off.
            connections_per_address_per_minute: 60,
            // Peers keep one pooled connection each (active set ~8, inbound cap 32), the HTTP
            // port serves operators and the REST fallback: 512 is ample and keeps file
            // descriptors (default soft limit 1,024) for the stores and dials.
            max_connections: 512,
            // A lab runs many nodes on one address (loopback); 64 fits 32 of them, each with
            // a gRPC and a REST connection, and still stops one address filling the port.
            max_connections_per_address: 64,
            // CLI calls, dashboards and test harnesses open a connection per request; a
            // cluster on one host shares the address.
            loopback_exempt: true,
            // The usual web-server figure (nginx's client_header_timeout is 60 s; slow-loris
            // mitigations use 10-20 s): a request's headers are one packet.
            header_timeout: Duration::from_secs(10),
            // Twice the 60 s most HTTP clients keep an idle connection; our peers' HTTP/2
            // keep-alive pings (every 30 s) keep their pooled connections open.
            idle_timeout: Duration::from_secs(120),
            // Unlimited: the operator names a budget when the link is metered or shared.
            upload_bytes_per_second: 0,
        }
    }
}
