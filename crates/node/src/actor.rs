//! The one task that owns the core [`Node`]. Every listener talks to it through a cloneable
//! [`NodeHandle`] over a bounded channel; nothing else touches the node's state, so there are no
//! locks around protocol state and the order of inputs is the order they were received.
//!
//! Shutdown: the actor keeps answering until the last handle is dropped (the listeners drop
//! theirs once their in-flight requests are done), so no request is cut off mid-way.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sorcha_peer_core::model::{NodeState, PeerAdvert, PeerId, Timestamp};
use sorcha_peer_core::node::{HeartbeatOutcome, Node, NodeEvent, RegisterError};
use tokio::sync::{mpsc, oneshot};

use crate::address::{AddressReport, AddressSource, NatState};
use crate::metrics::Metrics;

/// Commands waiting for the actor at most. A burst beyond this is refused (and counted) rather
/// than queued: a caller gets a clear "busy" at once instead of an unbounded wait.
pub const COMMAND_QUEUE_CAPACITY: usize = 1024;

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
}

enum Command {
    Register {
        advert: PeerAdvert,
        reply: oneshot::Sender<Result<(), RegisterError>>,
    },
    Heartbeat {
        peer_id: PeerId,
        reply: oneshot::Sender<HeartbeatOutcome>,
    },
    PeerList {
        requester: Option<PeerId>,
        max: usize,
        reply: oneshot::Sender<Vec<PeerAdvert>>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    SetAddress {
        report: Box<AddressReport>,
    },
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
    tx: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
    peer_id: PeerId,
}

impl NodeHandle {
    /// Our own id, without a round trip to the actor (it never changes).
    pub fn peer_id(&self) -> &PeerId {
        &self.peer_id
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub async fn register(
        &self,
        advert: PeerAdvert,
    ) -> Result<Result<(), RegisterError>, HandleError> {
        self.call(|reply| Command::Register { advert, reply }).await
    }

    pub async fn heartbeat(&self, peer_id: PeerId) -> Result<HeartbeatOutcome, HandleError> {
        self.call(|reply| Command::Heartbeat { peer_id, reply })
            .await
    }

    pub async fn peer_list(
        &self,
        requester: Option<PeerId>,
        max: usize,
    ) -> Result<Vec<PeerAdvert>, HandleError> {
        self.call(|reply| Command::PeerList {
            requester,
            max,
            reply,
        })
        .await
    }

    pub async fn status(&self) -> Result<Status, HandleError> {
        self.call(|reply| Command::Status { reply }).await
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
                HandleError::Busy
            }
            mpsc::error::TrySendError::Closed(_) => HandleError::Stopped,
        })
    }
}

/// The owner of the core node.
pub struct Actor {
    node: Node,
    rx: mpsc::Receiver<Command>,
    metrics: Arc<Metrics>,
    /// The latest result of address discovery.
    address: Option<AddressReport>,
    /// Counters of the core already reported to the metrics, to add only the difference.
    reported: sorcha_peer_core::node::NodeStats,
}

impl Actor {
    pub fn new(node: Node, metrics: Arc<Metrics>) -> (Self, NodeHandle) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
        let handle = NodeHandle {
            tx,
            metrics: metrics.clone(),
            peer_id: node.peer_id().clone(),
        };
        metrics.record_state(node.state());
        let actor = Self {
            node,
            rx,
            metrics,
            address: None,
            reported: Default::default(),
        };
        (actor, handle)
    }

    /// Runs until every handle is dropped.
    pub async fn run(mut self) {
        while let Some(command) = self.rx.recv().await {
            self.handle(command, now());
            self.drain_events();
        }
        tracing::debug!("node actor stopped: no handles left");
    }

    fn handle(&mut self, command: Command, now: Timestamp) {
        // A dropped reply channel means the caller gave up (timeout, disconnect): nothing to do.
        match command {
            Command::Register { advert, reply } => {
                let _ = reply.send(self.node.handle_register(advert, now));
            }
            Command::Heartbeat { peer_id, reply } => {
                let _ = reply.send(self.node.handle_heartbeat(&peer_id, now));
            }
            Command::PeerList {
                requester,
                max,
                reply,
            } => {
                let _ = reply.send(self.node.peer_list(requester.as_ref(), max, now));
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status(now));
            }
            Command::SetAddress { report } => self.set_address(*report),
        }
    }

    fn status(&self, now: Timestamp) -> Status {
        Status {
            peer_id: self.node.peer_id().clone(),
            state: self.node.state(),
            peers_known: self.node.peers().count(),
            peers_active: self.node.healthy_count(now),
            external_address: self
                .address
                .as_ref()
                .map(|a| a.external_address.to_string()),
            address_source: self.address.as_ref().map(|a| a.source),
            nat: self.address.as_ref().map(|a| a.nat),
            queue_size: 0,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn set_address(&mut self, report: AddressReport) {
        let changed = self.address.as_ref().is_none_or(|old| {
            old.external_address != report.external_address || old.port != report.port
        });
        if changed {
            tracing::info!(
                address = %report.external_address,
                port = report.port,
                source = ?report.source,
                nat = ?report.nat,
                "advertised address"
            );
            // Telling peers about a change rides on the next registration and heartbeats of
            // membership, which read the advertised address from here.
        }
        if let Some(old) = &self.address {
            self.metrics.record_address(old, 0);
        }
        self.metrics.record_address(&report, 1);
        self.address = Some(report);
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.node.poll_event() {
            match event {
                NodeEvent::PeerRegistered { peer_id, new } => {
                    tracing::info!(peer = %peer_id, new, "peer registered");
                }
                NodeEvent::StateChanged { from, to } => {
                    tracing::info!(from = from.as_str(), to = to.as_str(), "node state changed");
                    self.metrics.record_state(to);
                }
            }
        }
        let now = now();
        self.metrics
            .peer_count
            .record(self.node.peers().count() as i64, &[]);
        self.metrics
            .peer_count_active
            .record(self.node.healthy_count(now) as i64, &[]);
        let stats = self.node.stats().clone();
        let refused = stats.registrations_refused - self.reported.registrations_refused;
        let dropped = stats.events_dropped - self.reported.events_dropped;
        self.metrics.registrations_refused_total.add(refused, &[]);
        self.metrics.events_dropped_total.add(dropped, &[]);
        self.reported = stats;
    }
}

/// The wall clock, read only here and handed to the core as an input.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Timestamp::from_millis(ms)
}
