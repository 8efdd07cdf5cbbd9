//! `sorcha.peer.transaction.TransactionDistribution`: announcements from Sorcha-style peers,
//! and serving bodies, whole or in 64 KiB chunks.
//!
//! Limits: a `NotifyTransaction` counts against its peer's announcement rate (over it: the call
//! is refused) and announced-transaction rate (over it: answered `will_request = false`, as is
//! a body the node would never fetch, larger than `max_transaction_size`); a pull against its
//! pull rate and pulls in flight; bodies sent wait for the node-wide upload budget.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use sorcha_peer_core::model::{PeerId, TxHash};
use tonic::{Request, Response, Status};

use super::handle_error;
use crate::handle::{LookupError, NodeHandle};
use crate::store::queue::SharedQueue;
use crate::store::transactions::StoredTx;
use crate::telemetry::Metrics;
use crate::transport::limits::upload::UploadBudget;
use crate::transport::limits::{LimitKind, Limiter, PeerKey};
use crate::transport::outbound::CHUNK_SIZE;
use crate::transport::tls::caller_of;
use crate::wire::proto::transaction::transaction_distribution_server::TransactionDistribution;
use crate::wire::proto::transaction::*;
use crate::wire::wire_len;
use crate::wire::{TxName, from_notification};

/// The gRPC metadata key naming the calling peer of a `NotifyTransaction`: its
/// `sender_peer_id` is the transaction's origin (as Sorcha's C# peers fill it), and the pull
/// goes to whoever called. A caller without it (a C# peer) is taken to be the origin.
pub const CALLER_HEADER: &str = "sorcha-peer-id";

pub struct TransactionService {
    node: NodeHandle,
    queue: SharedQueue,
    limiter: Arc<Limiter>,
    upload: Arc<UploadBudget>,
    /// Announced bodies larger than this are never fetched (`will_request = false`).
    max_transaction_size: u64,
}

impl TransactionService {
    pub fn new(
        node: NodeHandle,
        queue: SharedQueue,
        (limiter, upload): (Arc<Limiter>, Arc<UploadBudget>),
        max_transaction_size: u32,
    ) -> Self {
        Self {
            node,
            queue,
            limiter,
            upload,
            max_transaction_size: u64::from(max_transaction_size),
        }
    }

    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    pub fn upload(&self) -> &Arc<UploadBudget> {
        &self.upload
    }

    /// Whether the node would ever fetch an announced body of `size` bytes (the core ignores
    /// announcements outside 1..=max_transaction_size).
    fn fetchable(&self, size: i64) -> bool {
        u64::try_from(size).is_ok_and(|size| (1..=self.max_transaction_size).contains(&size))
    }

    /// A peer pulled `hash`; if it was waiting in the offline queue, it has now left the node.
    fn confirm(&self, hash: TxHash) {
        self.queue.confirm_later(hash);
    }

    /// The transaction a request names, by whole hash (Sorcha's peers) or by id (ours).
    fn lookup(&self, request: &TransactionRequest) -> Result<Option<StoredTx>, Status> {
        self.node
            .find_transaction(&request.transaction_hash)
            .map_err(lookup_status)
    }

    /// Whether the caller (its connection's key, or the id it speaks for) is banned: what it
    /// announces is not fetched.
    fn is_banned(&self, key: Option<&PeerKey>, from: &PeerId) -> bool {
        let by_key = key.is_some_and(|key| match key {
            PeerKey::Id(id) => self.node.is_banned_id(id),
            PeerKey::Addr(ip) => self.node.is_banned_ip(*ip),
        });
        by_key || self.node.is_banned_id(from)
    }

    /// The answer to one id of a `GOSSIP_FETCH` (named in binary): as [`Self::answer`], but a
    /// found body goes without its hash, which the fetch answer leaves out
    /// ([`crate::wire::to_fetch_answer`]), so no name is turned into text and back per body.
    pub fn answer_named(&self, named: &TxName) -> Result<TransactionResponse, Status> {
        let found = self.node.find_named(named).map_err(lookup_status)?;
        Ok(self.response(found, false, || named.to_string()))
    }

    /// Sorcha's answer to a pull: the body, or `found = false` for an unknown hash. The
    /// caller counts it, as it goes (unary, or in a stream message).
    pub fn answer(&self, request: &TransactionRequest) -> Result<TransactionResponse, Status> {
        let found = self.lookup(request)?;
        Ok(self.response(found, true, || request.transaction_hash.clone()))
    }

    /// A pull's answer: the body found (confirmed out of the offline queue, with its hash
    /// written out if `with_hash`), or `found = false` naming what was `asked`.
    fn response(
        &self,
        found: Option<StoredTx>,
        with_hash: bool,
        asked: impl FnOnce() -> String,
    ) -> TransactionResponse {
        match found {
            Some(tx) => {
                self.confirm(tx.hash);
                TransactionResponse {
                    transaction_hash: if with_hash {
                        tx.hash.to_string()
                    } else {
                        String::new()
                    },
                    transaction_data: tx.body.to_vec(),
                    found: true,
                }
            }
            None => TransactionResponse {
                transaction_hash: asked(),
                transaction_data: Vec::new(),
                found: false,
            },
        }
    }
}

/// A lookup's failure as the status a pull is answered with.
fn lookup_status(e: LookupError) -> Status {
    match e {
        LookupError::Name(e) => Status::invalid_argument(format!("transaction_hash: {e}")),
        LookupError::Store(e) => Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl TransactionDistribution for TransactionService {
    async fn notify_transaction(
        &self,
        request: Request<TransactionNotification>,
    ) -> Result<Response<NotificationAck>, Status> {
        // The id the connection proved wins; else what our nodes say in the metadata.
        let proven = caller_of(&request).proven().cloned();
        let caller: Option<PeerId> = proven.or_else(|| {
            request
                .metadata()
                .get(CALLER_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        });
        let key = PeerKey::of_request(&request);
        let notification = request.into_inner();
        let metrics = self.node.metrics();
        let bytes = wire_len(&notification);
        metrics.record_received("notify", bytes);
        self.limiter
            .admit(key.as_ref(), LimitKind::Announcements, 1, bytes)
            .await?;
        let (origin, entry) = from_notification(&notification)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let over = self
            .limiter
            .check(key.as_ref(), LimitKind::AnnouncedTransactions, 1)
            .is_err();
        let from = caller.unwrap_or_else(|| origin.clone());
        let banned = self.is_banned(key.as_ref(), &from);
        if over || banned || !self.fetchable(notification.transaction_size) {
            // Neither fetched nor passed on: say so, so the sender does not wait for a pull.
            tracing::debug!(hash = %notification.transaction_hash, size = notification.transaction_size, over, banned, "notification not taken");
            return Ok(Response::new(NotificationAck {
                already_known: false,
                will_request: false,
            }));
        }
        if let (Some(hash), Ok(mut origins)) = (entry.hash, self.node.origins().lock()) {
            origins.note(hash, origin.clone());
        }
        tracing::debug!(caller = %from, %origin, hash = %notification.transaction_hash, "notified");
        let already_known = self.node.notify(from, entry).await.map_err(handle_error)?;
        Ok(Response::new(NotificationAck {
            already_known,
            will_request: !already_known,
        }))
    }

    /// Sorcha's contract answers an unknown hash with `found = false`, not an error.
    async fn get_transaction(
        &self,
        request: Request<TransactionRequest>,
    ) -> Result<Response<TransactionResponse>, Status> {
        let key = PeerKey::of_request(&request);
        let request = request.into_inner();
        let metrics = self.node.metrics();
        let bytes = wire_len(&request);
        metrics.record_received("fetch", bytes);
        self.limiter.receive(key.as_ref(), bytes).await?;
        let _pull = self.limiter.pull(key.as_ref())?;
        let answer = self.answer(&request)?;
        let bytes = wire_len(&answer);
        if answer.found {
            self.upload.spend(bytes).await;
        }
        metrics.record_sent("body", bytes);
        Ok(Response::new(answer))
    }

    type StreamTransactionStream =
        Pin<Box<dyn Stream<Item = Result<TransactionChunk, Status>> + Send>>;

    async fn stream_transaction(
        &self,
        request: Request<TransactionRequest>,
    ) -> Result<Response<Self::StreamTransactionStream>, Status> {
        let key = PeerKey::of_request(&request);
        let request = request.into_inner();
        let metrics = self.node.metrics().clone();
        let bytes = wire_len(&request);
        metrics.record_received("fetch", bytes);
        self.limiter.receive(key.as_ref(), bytes).await?;
        // In flight until the last chunk is sent (the guard goes with the stream).
        let pull = self.limiter.pull(key.as_ref())?;
        let Some(tx) = self.lookup(&request)? else {
            return Err(Status::not_found(format!(
                "transaction {} is not known",
                request.transaction_hash
            )));
        };
        self.confirm(tx.hash);
        let upload = self.upload.clone();
        let chunks = chunks(tx.hash, tx.body, metrics).then(move |chunk| {
            let upload = upload.clone();
            let _in_flight = &pull;
            async move {
                if let Ok(chunk) = &chunk {
                    upload.spend(chunk.chunk_data.len() as u64).await;
                }
                chunk
            }
        });
        Ok(Response::new(Box::pin(chunks)))
    }
}

/// The body in 64 KiB chunks, each cut (and counted as sent) when it is sent (no second copy
/// of the body).
fn chunks(
    hash: TxHash,
    body: Arc<[u8]>,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = Result<TransactionChunk, Status>> + Send {
    let total = body.len().div_ceil(CHUNK_SIZE).max(1);
    let total_chunks = i32::try_from(total).unwrap_or(i32::MAX);
    let hash = hash.to_string();
    futures::stream::iter((0..total).map(move |i| {
        let start = i * CHUNK_SIZE;
        let end = (start + CHUNK_SIZE).min(body.len());
        let chunk = TransactionChunk {
            transaction_hash: hash.clone(),
            chunk_index: i32::try_from(i).unwrap_or(i32::MAX),
            total_chunks,
            chunk_data: body[start..end].to_vec(),
        };
        metrics.record_sent("body", wire_len(&chunk));
        Ok(chunk)
    }))
}
