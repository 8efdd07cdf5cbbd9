//! The flooder: registers with every honest node as a peer whose server is ours, then
//! announces made-up hashes at `rate` per second over all of them. A fifth of the entries go
//! one by one (`NotifyTransaction`, as Sorcha's peers announce), the rest in one
//! `GOSSIP_ANNOUNCE` per tick (`SendMessage`, our nodes' own path). Each target has its own
//! task that waits for its tick's calls before the next: a node that slows down slows its
//! flood, and nothing queues without bound. It registers again every few seconds, so a node
//! that forgot it (or banned it and let it go) is asked again.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use sorcha_peer::wire::proto::communication::peer_communication_client::PeerCommunicationClient;
use sorcha_peer::wire::proto::communication::{
    AnnounceEntry, GossipAnnounce, MessageType, PeerMessage,
};
use sorcha_peer::wire::proto::discovery::peer_discovery_client::PeerDiscoveryClient;
use sorcha_peer::wire::proto::discovery::{PeerCapabilities, PeerInfo, RegisterPeerRequest};
use sorcha_peer::wire::proto::transaction::TransactionNotification;
use sorcha_peer::wire::proto::transaction::transaction_distribution_client::TransactionDistributionClient;
use tonic::transport::Channel;

use super::{Counts, Shared, liar, noise, now_ms};

/// One tick of announcements per target.
const TICK: Duration = Duration::from_millis(50);
/// Registering again this often.
const REREGISTER: Duration = Duration::from_secs(2);
/// Every this many entries, one goes alone as a `NotifyTransaction`.
const SINGLE_EVERY: u64 = 5;
/// Deadline of each call: a node that does not answer must not stall the flood.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The metadata key our nodes name themselves with on `NotifyTransaction`.
const CALLER_HEADER: &str = "sorcha-peer-id";

/// Floods every target; returns when every target's task ends (never, unless aborted).
pub async fn run(shared: Arc<Shared>, targets: Vec<String>, server: String, rate: u64) {
    let per_target = rate.div_ceil(targets.len().max(1) as u64);
    let mut tasks = tokio::task::JoinSet::new();
    for (t, target) in targets.into_iter().enumerate() {
        let (shared, server) = (shared.clone(), server.clone());
        tasks.spawn(async move { flood_one(shared, target, server, per_target, t as u64).await });
    }
    while tasks.join_next().await.is_some() {}
}

/// One target: register, then a tick of announcements every [`TICK`].
async fn flood_one(shared: Arc<Shared>, target: String, server: String, rate: u64, t: u64) {
    let Some(channel) = super::channel(&shared, &target, CALL_TIMEOUT) else {
        return;
    };
    let per_tick = (rate * TICK.as_millis() as u64).div_ceil(1000).max(1);
    let mut next_key = t << 40;
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut registered_at: Option<tokio::time::Instant> = None;
    loop {
        ticks.tick().await;
        if registered_at.is_none_or(|at| at.elapsed() >= REREGISTER) {
            register(&shared, channel.clone(), &server).await;
            registered_at = Some(tokio::time::Instant::now());
        }
        let keys = next_key..next_key + per_tick;
        next_key += per_tick;
        announce(&shared, &channel, keys).await;
    }
}

/// Our PeerInfo: our server, unary gRPC only (so nodes pull with `GetTransaction`).
fn own_info(shared: &Shared, server: &str) -> PeerInfo {
    let (address, port) = server.rsplit_once(':').unwrap_or(("127.0.0.1", "0"));
    PeerInfo {
        peer_id: shared.peer_id.clone(),
        address: address.to_owned(),
        port: port.parse().unwrap_or(0),
        supported_protocols: vec!["Grpc".into()],
        last_seen: now_ms(),
        capabilities: Some(PeerCapabilities {
            supports_streaming: false,
            supports_transaction_distribution: true,
            max_transaction_size: 10 * 1024 * 1024,
        }),
        advertised_registers: Vec::new(),
        is_seed_node: false,
    }
}

/// Registers us (our server's address) with the node behind `channel`.
pub async fn register(shared: &Shared, channel: Channel, server: &str) {
    let request = RegisterPeerRequest {
        peer_info: Some(own_info(shared, server)),
    };
    let counts = &shared.counts;
    match PeerDiscoveryClient::new(channel)
        .register_peer(request)
        .await
    {
        Ok(r) if r.get_ref().success => Counts::add(&counts.registered, 1),
        Ok(_) => Counts::add(&counts.register_refused, 1),
        Err(status) => {
            Counts::add(&counts.register_refused, 1);
            counts.error(&status);
        }
    }
}

/// A made-up hash for key `k`, as 64 hex digits.
fn fake_hash(k: u64) -> String {
    hex::encode(noise(k))
}

/// The entries `keys` to one target: every [`SINGLE_EVERY`]th alone, the rest in one batch.
async fn announce(shared: &Shared, channel: &Channel, keys: std::ops::Range<u64>) {
    let (singles, batched): (Vec<u64>, Vec<u64>) = keys.partition(|k| k % SINGLE_EVERY == 0);
    let notifies = singles
        .into_iter()
        .map(|k| notify(shared, channel.clone(), k));
    let batch = send_batch(shared, channel.clone(), batched);
    futures::join!(futures::future::join_all(notifies), batch);
}

async fn notify(shared: &Shared, channel: Channel, k: u64) {
    let notification = TransactionNotification {
        transaction_hash: fake_hash(k),
        sender_peer_id: shared.peer_id.clone(),
        timestamp: now_ms() / 1000,
        transaction_size: liar::BODY_SIZE as i64,
        register_id: String::new(),
        hop_count: 0,
    };
    let mut request = tonic::Request::new(notification);
    if let Ok(value) = shared.peer_id.parse() {
        request.metadata_mut().insert(CALLER_HEADER, value);
    }
    let counts = &shared.counts;
    match TransactionDistributionClient::new(channel)
        .notify_transaction(request)
        .await
    {
        Ok(ack) => {
            Counts::add(&counts.notified, 1);
            let wanted = ack.get_ref().will_request;
            Counts::add(
                if wanted {
                    &counts.will_request
                } else {
                    &counts.will_not_request
                },
                1,
            );
        }
        Err(status) => counts.error(&status),
    }
}

async fn send_batch(shared: &Shared, channel: Channel, keys: Vec<u64>) {
    if keys.is_empty() {
        return;
    }
    let entries: Vec<AnnounceEntry> = keys
        .iter()
        .map(|k| AnnounceEntry {
            transaction_hash: String::new(),
            transaction_size: liar::BODY_SIZE as i64,
            register_id: String::new(),
            hop_count: 0,
            hash: noise(*k).to_vec(),
        })
        .collect();
    let n = entries.len() as u64;
    let message = PeerMessage {
        sender_peer_id: shared.peer_id.clone(),
        recipient_peer_id: String::new(),
        message_type: MessageType::GossipAnnounce as i32,
        payload: GossipAnnounce { entries }.encode_to_vec(),
        timestamp: now_ms(),
    };
    let counts = &shared.counts;
    match PeerCommunicationClient::new(channel)
        .send_message(message)
        .await
    {
        Ok(ack) if ack.get_ref().received => {
            Counts::add(&counts.batches_sent, 1);
            Counts::add(&counts.batch_entries, n);
        }
        Ok(_) => {}
        Err(status) => counts.error(&status),
    }
}
