//! The nouns of the protocol: peer ids, transaction hashes, timestamps, peers and their
//! capabilities. Everything a peer sends is validated on its way into these types, so the rest
//! of the core can trust them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest peer id accepted from a peer or the config. Our own ids are 40 characters; Sorcha's
/// C# nodes use GUIDs (36) or operator-chosen names, so 128 leaves room without letting a peer
/// make us store kilobytes per entry.
pub const MAX_PEER_ID_LEN: usize = 128;

/// Longest host name accepted in an address (RFC 1035 limit for a full domain name).
pub const MAX_HOST_LEN: usize = 253;

/// Bytes of the SHA-256 of the public key that make a derived peer id (160 bits, 40 hex digits):
/// long enough that finding a second key with the same id is out of reach.
const DERIVED_ID_BYTES: usize = 20;

/// Why a value from a peer or an operator was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// A peer id was empty, too long or had characters outside `[A-Za-z0-9._:-]`.
    #[error(
        "invalid peer id {0:?}: expected 1 to {MAX_PEER_ID_LEN} characters of A-Z a-z 0-9 . _ : -"
    )]
    PeerId(String),
    /// A transaction hash was not 64 hex digits.
    #[error("invalid transaction hash {0:?}: expected 64 hex digits (SHA-256)")]
    TxHash(String),
    /// A transaction id was neither 32 hex digits (an id) nor 64 (a whole hash).
    #[error("invalid transaction id {0:?}: expected 32 hex digits (an id) or 64 (a SHA-256 hash)")]
    TxId(String),
    /// An address was neither an IP address nor a valid host name.
    #[error("invalid address {0:?}: expected an IP address or a host name")]
    Address(String),
    /// An address that cannot be dialled (0.0.0.0, ::, multicast, broadcast).
    #[error("address {0} cannot be dialled (unspecified, multicast or broadcast)")]
    UndialableAddress(String),
    /// A port outside 1..=65535.
    #[error("invalid port {0}: expected 1 to 65535")]
    Port(i64),
    /// A timestamp before the Unix epoch.
    #[error("invalid timestamp {0}: expected seconds or milliseconds since the Unix epoch")]
    Timestamp(i64),
}

/// A peer's identity: lowercase hex derived from its public key, or an operator-chosen name
/// (Sorcha networks may name their nodes).
///
/// Ids key most of the core's maps, so they are compared all the time: each keeps its first
/// [`HEAD_BYTES`] bytes beside the text, as big-endian numbers padded with zeros (no id has a
/// zero byte), so ids up to that long (derived ones are) compare without reading their texts.
/// Reading the texts (a cache miss each) was a quarter of a 10,000-node simulation.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PeerId {
    head: [u64; HEAD_BYTES / 8],
    text: String,
}

/// Bytes of an id kept in [`PeerId`]'s head: a derived id's length.
const HEAD_BYTES: usize = DERIVED_ID_BYTES * 2;

/// The order of the ids' texts, byte by byte, a prefix first. Equal heads of two ids no
/// longer than the head are equal ids: a shorter one would have a zero where the other has not.
impl Ord for PeerId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.head.cmp(&other.head).then_with(|| {
            if self.text.len().max(other.text.len()) <= HEAD_BYTES {
                std::cmp::Ordering::Equal
            } else {
                self.text.cmp(&other.text)
            }
        })
    }
}

impl PartialEq for PeerId {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for PeerId {}

impl PartialOrd for PeerId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// As the text's hash: `head` is a function of it.
impl std::hash::Hash for PeerId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PeerId").field(&self.text).finish()
    }
}

impl PeerId {
    /// An id of `text`, which is valid.
    fn new(text: String) -> Self {
        let mut bytes = [0u8; HEAD_BYTES];
        let len = text.len().min(HEAD_BYTES);
        bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
        let mut head = [0u64; HEAD_BYTES / 8];
        for (word, chunk) in head.iter_mut().zip(bytes.chunks_exact(8)) {
            *word = u64::from_be_bytes(chunk.try_into().expect("eight bytes"));
        }
        Self { head, text }
    }

    /// The id of the node holding the key whose SubjectPublicKeyInfo DER is `public_key_der`.
    pub fn from_public_key(public_key_der: &[u8]) -> Self {
        let digest = Sha256::digest(public_key_der);
        Self::new(hex::encode(&digest[..DERIVED_ID_BYTES]))
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this id is among the `percent` % of ids that are relays (FNV-1a of its text,
    /// modulo 100, below `percent`; 0 picks none): how every node tells who is a relay
    /// without a message (`GossipConfig::relay_percent`). A deployment would advertise the
    /// role instead; the hash stands in for it in the simulator.
    pub fn in_relay_share(&self, percent: u32) -> bool {
        if percent == 0 {
            return false;
        }
        let hash = self.text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        hash % 100 < u64::from(percent)
    }

    /// Whether this id has the form of an id derived from a key (lowercase hex of
    /// `DERIVED_ID_BYTES` bytes), so a certificate can prove it. A name an operator gave
    /// (`node_id`, Sorcha's `node_...`) cannot be proven by any certificate.
    pub fn is_key_derived(&self) -> bool {
        self.text.len() == DERIVED_ID_BYTES * 2
            && self
                .text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

impl FromStr for PeerId {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
        if s.is_empty() || s.len() > MAX_PEER_ID_LEN || !s.chars().all(valid_char) {
            return Err(ModelError::PeerId(truncated(s)));
        }
        Ok(Self::new(s.to_owned()))
    }
}

impl TryFrom<String> for PeerId {
    type Error = ModelError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PeerId> for String {
    fn from(id: PeerId) -> Self {
        id.text
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// SHA-256 of a transaction's bytes. Written as lowercase hex on the wire; upper case is
/// accepted on input.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TxHash([u8; 32]);

impl TxHash {
    /// The hash of `body`, as every node must compute it.
    pub fn of(body: &[u8]) -> Self {
        Self(Sha256::digest(body).into())
    }

    /// A hash from its 32 raw bytes (as a peer or the store holds it).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The transaction's id: the first half of this hash.
    pub fn id(&self) -> TxId {
        let mut id = [0u8; TxId::LEN];
        id.copy_from_slice(&self.0[..TxId::LEN]);
        TxId(id)
    }
}

impl FromStr for TxHash {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut bytes).is_err() {
            return Err(ModelError::TxHash(truncated(s)));
        }
        Ok(Self(bytes))
    }
}

impl TryFrom<String> for TxHash {
    type Error = ModelError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TxHash> for String {
    fn from(hash: TxHash) -> Self {
        hash.to_string()
    }
}

impl fmt::Display for TxHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

/// Writes up to 32 bytes as lowercase hex without a heap allocation: hashes are formatted for
/// every event and subscriber of every transaction (`hex::encode`'s `String`, built a char at
/// a time, was 1 % of a node's CPU in `peer-lab run throughput`, session 11).
fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let bytes = &bytes[..bytes.len().min(32)];
    let mut buf = [0u8; 64];
    let out = &mut buf[..2 * bytes.len()];
    hex::encode_to_slice(bytes, out).map_err(|_| fmt::Error)?;
    f.write_str(std::str::from_utf8(out).map_err(|_| fmt::Error)?)
}

impl fmt::Debug for TxHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxHash({self})")
    }
}

/// What our peers gossip and pull a transaction by: the first 16 bytes of its SHA-256. Half
/// the bytes of the hash in every announcement, digest and pull; forging a second body with
/// the same id still takes ~2^128 work, and a fetched body is checked against it. Sorcha's C#
/// peers know only whole hashes, so the core keeps the whole hash wherever one is known.
///
/// A departure from DESIGN.md's content check ("the SHA-256 of the body must equal the
/// announced hash"): between sorcha-peer nodes what is announced is the id, so the check is
/// that the SHA-256 starts with it (a body from a peer that announced the whole hash, or
/// pushed with it, must still match it whole). It takes 16 bytes off each announcement and pull: at 10,000 simulated nodes 682 ->
/// 561 bytes per node per transaction, the difference between missing and meeting the
/// simulator's < 600 B goal (`crates/sim/README.md`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TxId([u8; TxId::LEN]);

impl TxId {
    /// Bytes of an id.
    pub const LEN: usize = 16;

    pub const fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }
}

impl From<TxHash> for TxId {
    fn from(hash: TxHash) -> Self {
        hash.id()
    }
}

/// An id is 32 hex digits; a whole hash (64) is taken as its id, so a caller may name a
/// transaction either way.
impl FromStr for TxId {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 64 {
            return s
                .parse::<TxHash>()
                .map(|h| h.id())
                .map_err(|_| ModelError::TxId(truncated(s)));
        }
        let mut bytes = [0u8; Self::LEN];
        if s.len() != 2 * Self::LEN || hex::decode_to_slice(s, &mut bytes).is_err() {
            return Err(ModelError::TxId(truncated(s)));
        }
        Ok(Self(bytes))
    }
}

impl TryFrom<String> for TxId {
    type Error = ModelError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TxId> for String {
    fn from(id: TxId) -> Self {
        id.to_string()
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxId({self})")
    }
}

/// Milliseconds since the Unix epoch. The core never reads a clock: the runtime (or the
/// simulator) passes `now` in as one of these.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

/// Wire values below this are taken as seconds: 10^11 seconds is the year 5138, while 10^11
/// milliseconds is March 1973, before any ledger existed.
const SECONDS_CUTOFF: i64 = 100_000_000_000;

impl Timestamp {
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Reads a wire timestamp that may be seconds or milliseconds (Sorcha sends both).
    pub fn from_wire(value: i64) -> Result<Self, ModelError> {
        match value {
            v if v < 0 => Err(ModelError::Timestamp(v)),
            v if v < SECONDS_CUTOFF => Ok(Self(v as u64 * 1000)),
            v => Ok(Self(v as u64)),
        }
    }

    /// Milliseconds, as this node sends them where the wire does not say otherwise (and as
    /// Sorcha's C# peers read heartbeats).
    pub fn to_wire(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    /// Whole seconds, for the fields Sorcha's C# peers read with `FromUnixTimeSeconds`
    /// (`TransactionNotification.timestamp`, `PingResponse.timestamp`, `PeerInfo.last_seen`).
    pub fn to_wire_secs(self) -> i64 {
        i64::try_from(self.0 / 1000).unwrap_or(i64::MAX)
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// How a peer can be reached, best first (see the communication layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// The bidirectional `PeerCommunication.Stream`.
    GrpcStream,
    /// Unary gRPC calls.
    Grpc,
    /// The JSON REST fallback on the HTTP port.
    Rest,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::GrpcStream, Protocol::Grpc, Protocol::Rest];

    /// The name used on the wire and in Sorcha's configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::GrpcStream => "GrpcStream",
            Protocol::Grpc => "Grpc",
            Protocol::Rest => "Rest",
        }
    }

    /// Parses a wire name, case-insensitively; `None` for names this node does not speak.
    pub fn from_wire(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(name))
    }
}

/// What a peer says it can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCapabilities {
    pub supports_streaming: bool,
    pub supports_transaction_distribution: bool,
    /// Largest transaction body the peer accepts, in bytes.
    pub max_transaction_size: u32,
}

/// A peer's liveness as the wire reports it (`sorcha.peer.discovery.PeerStatus`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerStatus {
    #[default]
    Unknown,
    Online,
    Offline,
    Busy,
}

/// This node's own health: how many healthy peers it has against `min_healthy_peers`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// At least `min_healthy_peers` healthy peers.
    Online,
    /// Some healthy peers, fewer than `min_healthy_peers`.
    Degraded,
    /// No healthy peer.
    #[default]
    Offline,
}

impl NodeState {
    pub fn from_healthy(healthy: usize, min_healthy: usize) -> Self {
        match healthy {
            0 => NodeState::Offline,
            n if n >= min_healthy => NodeState::Online,
            _ => NodeState::Degraded,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Online => "online",
            NodeState::Degraded => "degraded",
            NodeState::Offline => "offline",
        }
    }
}

/// A peer as a remote node describes it (a validated `PeerInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAdvert {
    pub peer_id: PeerId,
    /// IP address or host name, without the port.
    pub address: String,
    pub port: u16,
    pub supported_protocols: Vec<Protocol>,
    pub capabilities: PeerCapabilities,
    pub last_seen: Timestamp,
    pub is_seed_node: bool,
}

/// Everything this node keeps about one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    pub peer_id: PeerId,
    pub address: String,
    pub port: u16,
    pub supported_protocols: Vec<Protocol>,
    pub capabilities: PeerCapabilities,
    pub status: PeerStatus,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// Consecutive failed contacts; reset by any success.
    pub failure_count: u32,
    /// Last measured round-trip time.
    pub latency: Option<Duration>,
    /// Configured as a bootstrap node (or advertised as a seed).
    pub is_bootstrap: bool,
    /// Refuse and ignore this peer until then.
    pub banned_until: Option<Timestamp>,
    /// It proved this id on an authenticated (TLS) connection: from then on only such a
    /// connection may speak for it (see [`Caller`]).
    pub verified: bool,
}

impl PeerNode {
    /// A peer first heard of at `now` through `advert`.
    pub fn from_advert(advert: PeerAdvert, now: Timestamp) -> Self {
        Self {
            peer_id: advert.peer_id,
            address: advert.address,
            port: advert.port,
            supported_protocols: advert.supported_protocols,
            capabilities: advert.capabilities,
            status: PeerStatus::Unknown,
            first_seen: now,
            last_seen: advert.last_seen.min(now),
            failure_count: 0,
            latency: None,
            is_bootstrap: advert.is_seed_node,
            banned_until: None,
            verified: false,
        }
    }

    pub fn is_banned(&self, now: Timestamp) -> bool {
        self.banned_until.is_some_and(|until| until > now)
    }

    /// The advert this node passes on to others about the peer.
    pub fn advert(&self) -> PeerAdvert {
        PeerAdvert {
            peer_id: self.peer_id.clone(),
            address: self.address.clone(),
            port: self.port,
            supported_protocols: self.supported_protocols.clone(),
            capabilities: self.capabilities,
            last_seen: self.last_seen,
            is_seed_node: self.is_bootstrap,
        }
    }
}

/// Checks a dialable address from a peer or the config: an IP address that is not
/// unspecified, multicast or broadcast, or a syntactically valid host name. Brackets around
/// IPv6 addresses are accepted and removed.
pub fn validate_address(raw: &str) -> Result<String, ModelError> {
    let host = raw
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(raw);
    if let Ok(ip) = host.parse::<IpAddr>() {
        let undialable = ip.is_unspecified()
            || ip.is_multicast()
            || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
        if undialable {
            return Err(ModelError::UndialableAddress(ip.to_string()));
        }
        return Ok(ip.to_string());
    }
    if is_host_name(host) {
        return Ok(host.to_ascii_lowercase());
    }
    Err(ModelError::Address(truncated(raw)))
}

/// RFC 1123 host name: dot-separated labels of 1 to 63 letters, digits and inner hyphens.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        // All-numeric names would be mistyped IPv4 addresses such as 10.0.0.256.
        && !host.split('.').all(|label| label.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks a port from the wire.
pub fn validate_port(port: i64) -> Result<u16, ModelError> {
    match u16::try_from(port) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ModelError::Port(port)),
    }
}

/// Bounds what an error message repeats of a peer's input.
fn truncated(s: &str) -> String {
    const SHOWN: usize = 80;
    match s.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_of_relays_is_about_the_percent_asked_and_zero_picks_none() {
        let id = |k: usize| -> PeerId { format!("node-{k}").parse().expect("valid id") };
        let picked = (0..1000).filter(|&k| id(k).in_relay_share(30)).count();
        assert!((230..370).contains(&picked), "{picked} of 1000");
        assert!((0..1000).all(|k| !id(k).in_relay_share(0)));
    }

    #[test]
    fn hashes_and_ids_print_as_lowercase_hex() {
        let hash = TxHash::of(b"any body");
        assert_eq!(hash.to_string(), hex::encode(hash.as_bytes()));
        assert_eq!(hash.id().to_string(), hex::encode(hash.id().as_bytes()));
        assert_eq!(hash.to_string().parse::<TxHash>().ok(), Some(hash));
    }

    #[test]
    fn peer_ids_sort_as_their_texts() {
        let texts = [
            "a",
            "ab",
            "abc",
            "node0000000000000",
            "node00000000000000",
            "node0000000000001",
            "node00001234------",
            "node00001235",
            "0123456789abcdef",
            "0123456789abcdef0",
            "0123456789abcdeg",
            "Z",
            "z.z",
            "fake-1-2",
            "phantom-3-4",
        ];
        let ids: Vec<PeerId> = texts.iter().map(|t| t.parse().expect("valid")).collect();
        for (a, ta) in ids.iter().zip(texts) {
            for (b, tb) in ids.iter().zip(texts) {
                assert_eq!(a.cmp(b), ta.cmp(tb), "{ta} vs {tb}");
                assert_eq!(a == b, ta == tb);
            }
        }
        assert_eq!(format!("{:?}", ids[0]), "PeerId(\"a\")");
    }

    #[test]
    fn derived_peer_id_is_stable_lowercase_hex() {
        let a = PeerId::from_public_key(b"some public key");
        let b = PeerId::from_public_key(b"some public key");
        assert_eq!(a, b);
        assert_eq!(a.as_str().len(), 40);
        assert!(
            a.as_str()
                .chars()
                .all(|c| matches!(c, '0'..='9' | 'a'..='f'))
        );
        assert_ne!(a, PeerId::from_public_key(b"another key"));
    }

    #[test]
    fn peer_id_rejects_bad_input() {
        for bad in [
            "",
            "has space",
            "semi;colon",
            &"x".repeat(MAX_PEER_ID_LEN + 1),
        ] {
            assert!(bad.parse::<PeerId>().is_err(), "{bad:?} accepted");
        }
        for good in ["node-1", "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "a.b_c:d"] {
            assert_eq!(good.parse::<PeerId>().unwrap().as_str(), good);
        }
    }

    #[test]
    fn tx_hash_round_trips_as_lowercase_hex() {
        let hash = TxHash::of(b"abc");
        assert_eq!(
            hash.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let upper = hash.to_string().to_uppercase();
        assert_eq!(upper.parse::<TxHash>().unwrap(), hash);
        assert!("abc".parse::<TxHash>().is_err());
        assert!("zz".repeat(32).parse::<TxHash>().is_err());
    }

    #[test]
    fn tx_id_is_the_first_half_of_the_hash_and_parses_from_either() {
        let hash = TxHash::of(b"abc");
        let id = hash.id();
        assert_eq!(id.to_string(), "ba7816bf8f01cfea414140de5dae2223");
        assert_eq!(id.as_bytes()[..], hash.as_bytes()[..16]);
        assert_eq!(id.to_string().parse::<TxId>().unwrap(), id);
        assert_eq!(hash.to_string().parse::<TxId>().unwrap(), id);
        assert_eq!(id.to_string().to_uppercase().parse::<TxId>().unwrap(), id);
        for bad in [
            "",
            "abc",
            &"zz".repeat(16),
            &"a".repeat(48),
            &"g".repeat(64),
        ] {
            let err = bad.parse::<TxId>().expect_err(bad);
            assert!(err.to_string().contains("transaction id"), "{err}");
        }
    }

    #[test]
    fn wire_timestamps_accept_seconds_and_millis() {
        let secs = 1_764_000_000;
        assert_eq!(
            Timestamp::from_wire(secs).unwrap().as_millis(),
            1_764_000_000_000
        );
        assert_eq!(
            Timestamp::from_wire(secs * 1000).unwrap().as_millis(),
            1_764_000_000_000
        );
        assert_eq!(Timestamp::from_wire(0).unwrap().as_millis(), 0);
        assert!(Timestamp::from_wire(-1).is_err());
    }

    #[test]
    fn addresses_are_validated() {
        assert_eq!(validate_address("10.0.0.1").unwrap(), "10.0.0.1");
        assert_eq!(validate_address("[::1]").unwrap(), "::1");
        assert_eq!(
            validate_address("Peer-1.Example.org").unwrap(),
            "peer-1.example.org"
        );
        for bad in [
            "",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "255.255.255.255",
            "10.0.0.256",
            "a b",
            "-x.org",
        ] {
            assert!(validate_address(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_port(0).is_err());
        assert!(validate_port(65536).is_err());
        assert_eq!(validate_port(5001).unwrap(), 5001);
    }

    #[test]
    fn node_state_follows_healthy_count() {
        assert_eq!(NodeState::from_healthy(0, 5), NodeState::Offline);
        assert_eq!(NodeState::from_healthy(4, 5), NodeState::Degraded);
        assert_eq!(NodeState::from_healthy(5, 5), NodeState::Online);
    }

    #[test]
    fn protocol_names_round_trip() {
        for p in Protocol::ALL {
            assert_eq!(Protocol::from_wire(p.as_str()), Some(p));
        }
        assert_eq!(
            Protocol::from_wire("grpcstream"),
            Some(Protocol::GrpcStream)
        );
        assert_eq!(Protocol::from_wire("carrier-pigeon"), None);
    }
}

/// Who sent a request, as far as the transport proved it. A peer id in a message is a claim;
/// only a TLS connection whose certificate carries the key the id derives from proves it (and
/// only ids of that form, see [`PeerId::is_key_derived`], can be proven at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The connection's certificate proved this id.
    Proven(PeerId),
    /// Plaintext, or TLS without a client certificate: whatever it says is a claim. `ip` is
    /// the connection's remote address, when known (bans of unverified peers key on it).
    Unproven { ip: Option<String> },
}

impl Caller {
    /// A caller the transport knows nothing about.
    pub const UNKNOWN: Caller = Caller::Unproven { ip: None };

    pub fn proven(&self) -> Option<&PeerId> {
        match self {
            Caller::Proven(id) => Some(id),
            Caller::Unproven { .. } => None,
        }
    }
}
