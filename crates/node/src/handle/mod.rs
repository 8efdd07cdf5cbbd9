//! [`NodeHandle`]: how the listeners talk to the actor. Every call is a command over one
//! bounded channel, answered on a oneshot; a full channel is refused at once (and counted)
//! rather than queued without bound. The actor (`runtime::actor`) serves the commands; this
//! module sits below it and below the listeners that send them, so neither imports the other.
//! `views.rs`: how a peer looks in the admin API ([`PeerView`]); `origins.rs`: the origin of
//! each transaction Sorcha peers told us of, shared with the link workers that forward it;
//! `bans.rs`: the bans in force, shared so the transport can refuse banned peers at the door.

pub mod bans;
pub mod origins;
mod views;

use std::sync::{Arc, Mutex};

use serde::Serialize;
use sorcha_peer_core::gossip::{AnnounceEntry, GossipMessage, SubmitError};
use sorcha_peer_core::membership::{HeartbeatOutcome, Pong, Refusal, RegisterOutcome};
use sorcha_peer_core::model::{
    Caller, ModelError, NodeState, PeerAdvert, PeerId, Timestamp, TxHash, TxId,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::address::{AddressReport, AddressSource, NatState};
use crate::registers::SharedRegisters;
use crate::store::durable::{DurableError, TxDb};
use crate::store::transactions::{StoredTx, TxStore};
use crate::telemetry::{EventLog, Metrics};

pub use views::PeerView;

/// Commands waiting for the actor at most. A burst beyond this is refused (and counted) rather
/// than queued: a caller gets a clear "busy" at once instead of an unbounded wait.
pub const COMMAND_QUEUE_CAPACITY: usize = 1024;

/// New-transaction notices buffered per local subscriber; one that falls further behind
/// misses the oldest (counted) and can catch up through `GET /api/v1/transactions`.
pub const DELIVERY_CAPACITY: usize = 4096;

/// The node's state as `/api/v1/status` and `sorcha-peer status` show it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub peer_id: PeerId,
    pub state: NodeState,
    pub peers_known: usize,
    pub peers_active: usize,
    /// The address peers are told to reach us at; `None` until discovery has run once.
    pub external_address: Option<String>,
    /// How `external_address` was found: override, interface, stun, http, internal_fallback.
    pub address_source: Option<AddressSource>,
    /// no_nat, behind_nat, behind_restrictive_nat or unknown.
    pub nat: Option<NatState>,
    pub queue_size: u64,
    pub version: &'static str,
    /// `mtls`, `mixed` or `plaintext` (`security.mode`).
    pub security_mode: &'static str,
    /// SHA-256 of the certificate the peer port presents; `None` in plaintext mode.
    pub certificate_fingerprint: Option<String>,
}

pub(crate) enum Command {
    Register {
        advert: PeerAdvert,
        caller: Caller,
        reply: oneshot::Sender<Result<RegisterOutcome, Refusal>>,
    },
    Heartbeat {
        peer_id: PeerId,
        caller: Caller,
        reply: oneshot::Sender<HeartbeatOutcome>,
    },
    PeerList {
        requester: Option<PeerId>,
        caller: Caller,
        max: usize,
        reply: oneshot::Sender<(Vec<PeerAdvert>, usize)>,
    },
    Exchange {
        from: PeerId,
        adverts: Vec<PeerAdvert>,
        max: usize,
        caller: Caller,
        reply: oneshot::Sender<Result<Vec<PeerAdvert>, Refusal>>,
    },
    Ping {
        from: Option<PeerId>,
        caller: Caller,
        reply: oneshot::Sender<Result<Pong, Refusal>>,
    },
    /// A peer's going-away (`PEER_LEAVING`).
    Leaving {
        from: PeerId,
        caller: Caller,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    /// Our own going-away, to every active peer; the reply resolves once they were told (or
    /// could not be, within `timeout`): how many took it.
    SayLeaving {
        timeout: std::time::Duration,
        reply: oneshot::Sender<tokio::task::JoinHandle<usize>>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerView>>,
    },
    Ban {
        peer_id: PeerId,
        until: Option<Timestamp>,
        reply: oneshot::Sender<bool>,
    },
    Remove {
        peer_id: PeerId,
        reply: oneshot::Sender<bool>,
    },
    SetAddress {
        report: Box<AddressReport>,
    },
    Submit {
        body: Vec<u8>,
        register_id: Option<String>,
        reply: oneshot::Sender<Result<Submitted, SubmitError>>,
    },
    /// Offline-queue entries, already durable, handed to gossip in one command.
    SubmitQueued {
        entries: Vec<(Vec<u8>, Option<String>)>,
        reply: oneshot::Sender<usize>,
    },
    Gossip {
        from: PeerId,
        message: GossipMessage,
    },
    /// A peer went past a limit or broke the protocol where only the transport sees it.
    Offence {
        peer_id: PeerId,
        offence: sorcha_peer_core::score::Offence,
    },
    /// The same, by a caller known only by its address (no proven id).
    AddressOffence {
        ip: std::net::IpAddr,
        offence: sorcha_peer_core::score::Offence,
    },
    Notify {
        from: PeerId,
        entry: AnnounceEntry,
        reply: oneshot::Sender<bool>,
    },
}

/// The answer to a local submission.
#[derive(Debug, Clone, Serialize)]
pub struct Submitted {
    pub hash: String,
    /// False when the transaction was known already.
    pub new: bool,
    /// Healthy active peers it is being announced to (0: kept until peers appear); absent
    /// when it was known already, since nothing is announced again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub announced_to: Option<usize>,
}

/// Why a transaction could not be looked up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    /// The name is neither a transaction id nor a hash.
    #[error("{0}")]
    Name(#[from] ModelError),
    /// The durable store failed.
    #[error("{0}")]
    Store(#[from] DurableError),
}

/// A new transaction, as local subscribers hear of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivered {
    pub hash: String,
    pub register_id: Option<String>,
    pub size: u64,
    /// When this node took it: microseconds since the Unix epoch on its wall clock (so a
    /// subscriber can time the delivery itself, not its own reading of the stream).
    pub at_us: u64,
    /// The peer it came from; `None` when submitted here.
    pub from: Option<String>,
    /// How it came: `submitted`, `pushed`, `pulled` or `repaired` (pulled after a digest).
    pub how: &'static str,
    /// How far it travelled: 0 when submitted here, 1 from its origin.
    pub hops: u32,
}

/// Why a call to the actor got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The command queue is full.
    #[error("node is saturated: its command queue ({COMMAND_QUEUE_CAPACITY}) is full; retry later")]
    Busy,
    /// The actor has stopped.
    #[error("node is shutting down")]
    Stopped,
}

/// A cheap, cloneable way to ask the node something.
#[derive(Clone)]
pub struct NodeHandle {
    pub(super) tx: mpsc::Sender<Command>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) peer_id: PeerId,
    pub(super) transactions: Arc<Mutex<TxStore>>,
    pub(super) db: TxDb,
    pub(super) deliveries: broadcast::Sender<Delivered>,
    pub(super) state: watch::Receiver<NodeState>,
    pub(super) registers: SharedRegisters,
    pub(super) origins: origins::SharedOrigins,
    pub(super) events: Arc<EventLog>,
    /// The bans in force, for reads without a round trip.
    pub(super) bans: bans::SharedBans,
    /// Raised once shutdown begins, so long-lived calls (peers' streams, SSE subscribers) end
    /// themselves and the servers' graceful shutdown has nothing left to wait for.
    pub(super) stopping: Arc<watch::Sender<bool>>,
}

impl NodeHandle {
    /// The node's state as of its latest input, without a round trip.
    pub fn state(&self) -> watch::Receiver<NodeState> {
        self.state.clone()
    }

    /// Tells every long-lived call to end: the node is shutting down.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once [`begin_shutdown`](Self::begin_shutdown) was called.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static + use<> {
        let mut rx = self.stopping.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Our own id, without a round trip to the actor (it never changes).
    pub fn peer_id(&self) -> &PeerId {
        &self.peer_id
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The registers each peer advertises, and ours.
    pub fn registers(&self) -> &SharedRegisters {
        &self.registers
    }

    /// The origins of the transactions Sorcha peers told us of.
    pub fn origins(&self) -> &origins::SharedOrigins {
        &self.origins
    }

    /// The node's event log, to record into and read from.
    pub fn events(&self) -> &Arc<EventLog> {
        &self.events
    }

    /// `caller`: what the transport proved about who sent the call (every membership call
    /// carries it; the core believes an id only from its own authenticated connection).
    pub async fn register(
        &self,
        advert: PeerAdvert,
        caller: Caller,
    ) -> Result<Result<RegisterOutcome, Refusal>, HandleError> {
        self.call(|reply| Command::Register {
            advert,
            caller,
            reply,
        })
        .await
    }

    pub async fn heartbeat(
        &self,
        peer_id: PeerId,
        caller: Caller,
    ) -> Result<HeartbeatOutcome, HandleError> {
        self.call(|reply| Command::Heartbeat {
            peer_id,
            caller,
            reply,
        })
        .await
    }

    /// Up to `max` peers for `requester`, and how many this node knows in all.
    pub async fn peer_list(
        &self,
        requester: Option<PeerId>,
        caller: Caller,
        max: usize,
    ) -> Result<(Vec<PeerAdvert>, usize), HandleError> {
        self.call(|reply| Command::PeerList {
            requester,
            caller,
            max,
            reply,
        })
        .await
    }

    pub async fn exchange(
        &self,
        from: PeerId,
        caller: Caller,
        adverts: Vec<PeerAdvert>,
        max: usize,
    ) -> Result<Result<Vec<PeerAdvert>, Refusal>, HandleError> {
        self.call(|reply| Command::Exchange {
            from,
            caller,
            adverts,
            max,
            reply,
        })
        .await
    }

    pub async fn ping(
        &self,
        from: Option<PeerId>,
        caller: Caller,
    ) -> Result<Result<Pong, Refusal>, HandleError> {
        self.call(|reply| Command::Ping {
            from,
            caller,
            reply,
        })
        .await
    }

    pub async fn status(&self) -> Result<Status, HandleError> {
        self.call(|reply| Command::Status { reply }).await
    }

    /// Every known peer, with the registers it advertises.
    pub async fn peers(&self) -> Result<Vec<PeerView>, HandleError> {
        let mut views = self.call(|reply| Command::Peers { reply }).await?;
        if let Ok(book) = self.registers.lock() {
            for view in &mut views {
                if let Ok(id) = view.peer_id.parse::<PeerId>() {
                    view.registers = book.of(&id).to_vec();
                }
            }
        }
        Ok(views)
    }

    /// Bans `peer_id` until `until`, or lifts its ban with `None`. False if the ban list is full.
    pub async fn ban(
        &self,
        peer_id: PeerId,
        until: Option<Timestamp>,
    ) -> Result<bool, HandleError> {
        self.call(|reply| Command::Ban {
            peer_id,
            until,
            reply,
        })
        .await
    }

    /// Forgets `peer_id`; false if it was not known.
    pub async fn remove(&self, peer_id: PeerId) -> Result<bool, HandleError> {
        self.call(|reply| Command::Remove { peer_id, reply }).await
    }

    /// A transaction submitted on this node.
    pub async fn submit(
        &self,
        body: Vec<u8>,
        register_id: Option<String>,
    ) -> Result<Result<Submitted, SubmitError>, HandleError> {
        use tracing::Instrument as _;
        let span = tracing::debug_span!(
            "submit",
            size = body.len(),
            hash = tracing::field::Empty,
            new = tracing::field::Empty
        );
        let submitted = self
            .call(|reply| Command::Submit {
                body,
                register_id,
                reply,
            })
            .instrument(span.clone())
            .await;
        if let Ok(Ok(s)) = &submitted {
            span.record("hash", tracing::field::display(&s.hash));
            span.record("new", s.new);
        }
        submitted
    }

    /// `from` said it is shutting down; refused when `caller` may not speak for it.
    pub async fn leaving(
        &self,
        from: PeerId,
        caller: Caller,
    ) -> Result<Result<(), Refusal>, HandleError> {
        self.call(|reply| Command::Leaving {
            from,
            caller,
            reply,
        })
        .await
    }

    /// Tells every active peer that this node is shutting down, waiting at most `timeout`;
    /// how many took it (0 if the actor is gone).
    pub async fn say_leaving(&self, timeout: std::time::Duration) -> usize {
        let Ok(sending) = self
            .call(|reply| Command::SayLeaving { timeout, reply })
            .await
        else {
            return 0;
        };
        sending.await.unwrap_or(0)
    }

    /// Offline-queue entries (bodies and register ids) for gossip, in one round trip; how
    /// many were new to it.
    pub async fn submit_queued(
        &self,
        entries: Vec<(Vec<u8>, Option<String>)>,
    ) -> Result<usize, HandleError> {
        self.call(|reply| Command::SubmitQueued { entries, reply })
            .await
    }

    /// A gossip message from a peer; refused (and counted) when the node is saturated.
    pub fn gossip(&self, from: PeerId, message: GossipMessage) -> Result<(), HandleError> {
        self.send(Command::Gossip { from, message })
    }

    /// Tells the peer score that `peer_id` offended (a limit exceeded, a malformed call);
    /// never waits: refused (counted) when the actor is saturated.
    pub fn note_offence(
        &self,
        peer_id: PeerId,
        offence: sorcha_peer_core::score::Offence,
    ) -> Result<(), HandleError> {
        self.send(Command::Offence { peer_id, offence })
    }

    /// [`note_offence`](Self::note_offence) for a caller that proved no id: its address is
    /// scored (and banned below the threshold).
    pub fn note_address_offence(
        &self,
        ip: std::net::IpAddr,
        offence: sorcha_peer_core::score::Offence,
    ) -> Result<(), HandleError> {
        self.send(Command::AddressOffence { ip, offence })
    }

    /// Whether `id` is banned now (by the operator or the peer score), without a round trip.
    pub fn is_banned_id(&self, id: &PeerId) -> bool {
        let now = crate::clock::now();
        self.bans
            .read()
            .is_ok_and(|book| book.of_id(id, now).is_some())
    }

    /// Whether calls from `ip` are refused now (an unverified peer's automatic ban).
    pub fn is_banned_ip(&self, ip: std::net::IpAddr) -> bool {
        let now = crate::clock::now();
        self.bans
            .read()
            .is_ok_and(|book| book.of_ip(&ip, now).is_some())
    }

    /// A Sorcha-style notification; answers whether the hash was known already.
    pub async fn notify(&self, from: PeerId, entry: AnnounceEntry) -> Result<bool, HandleError> {
        self.call(|reply| Command::Notify { from, entry, reply })
            .await
    }

    /// The memory cache of bodies (listings; reads go through [`find_transaction`]).
    ///
    /// [`find_transaction`]: Self::find_transaction
    pub fn transactions(&self) -> &Arc<Mutex<TxStore>> {
        &self.transactions
    }

    /// The durable store.
    pub fn db(&self) -> &TxDb {
        &self.db
    }

    /// The one lookup every read path uses: the transaction `name`d (its id, or its whole
    /// hash, which must then match) whether it is cached, queued for a peer or only on disk.
    /// The memory cache answers first; a miss is one indexed read of the store.
    pub fn find_transaction(&self, name: &str) -> Result<Option<StoredTx>, LookupError> {
        let (id, hash) = crate::store::transactions::parse_name(name)?;
        self.find_by_id(id, hash)
    }

    /// [`find_transaction`] for a name already read in binary (a `GOSSIP_FETCH`'s), so a pull
    /// turns no name into text and back.
    ///
    /// [`find_transaction`]: Self::find_transaction
    pub fn find_named(&self, named: &crate::wire::TxName) -> Result<Option<StoredTx>, LookupError> {
        self.find_by_id(named.id(), named.hash())
    }

    fn find_by_id(&self, id: TxId, hash: Option<TxHash>) -> Result<Option<StoredTx>, LookupError> {
        let cached = self
            .transactions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .filter(|tx| hash.is_none_or(|h| h == tx.hash));
        if cached.is_some() {
            return Ok(cached);
        }
        Ok(self.db.find(&id, hash.as_ref())?)
    }

    /// Every new transaction from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Delivered> {
        self.deliveries.subscribe()
    }

    /// Hands the actor a new result of address discovery.
    pub fn set_address(&self, report: AddressReport) -> Result<(), HandleError> {
        self.send(Command::SetAddress {
            report: Box::new(report),
        })
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, HandleError> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply))?;
        answer.await.map_err(|_| HandleError::Stopped)
    }

    fn send(&self, command: Command) -> Result<(), HandleError> {
        self.tx.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.metrics.commands_refused_total.add(1, &[]);
                let detail = format!("{COMMAND_QUEUE_CAPACITY} commands waiting; request refused");
                self.events.limit_hit("command_queue", None, &detail);
                HandleError::Busy
            }
            mpsc::error::TrySendError::Closed(_) => HandleError::Stopped,
        })
    }
}
